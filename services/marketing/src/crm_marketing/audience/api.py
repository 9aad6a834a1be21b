"""What the rest of marketing uses of the audience (segments, templates, campaigns, triggers).

Tables (read freely): ``profiles``, ``consents``, ``push_devices``, ``purchases``,
``web_activity``, ``visitors`` — see migrations 0001-0003.

Nothing may be sent without consent: ``contact_point`` is the only way to an address, and it
answers only for a granted channel.
"""

from __future__ import annotations

from typing import Literal

from crm_events.schemas.marketing import VisitorIdentified
from crm_marketing.audience.domain import ATTRIBUTES
from crm_marketing.audience.profiles import Profiles, canonical, lock
from crm_runtime.db import Conn
from crm_runtime.eventstore import EventStore, Metadata, NewEvent

Channel = Literal["email", "sms", "push"]

SMS_ADDRESS_OF_PROFILE = "regexp_replace(p.phone, '[^0-9+]', '', 'g')"
"""SQL: the profile ``p``'s phone as SMS consent records it (``domain.phone_key``)."""

_CONSENTED = {
    "email": (
        "SELECT p.email FROM profiles p JOIN consents c ON c.customer_id = p.customer_id"
        " AND c.channel = 'email' AND c.status = 'granted'"
        " WHERE p.customer_id = $1 AND p.email IS NOT NULL"
        " AND (c.address IS NULL OR c.address = lower(p.email))"
    ),
    "sms": (
        "SELECT p.phone FROM profiles p JOIN consents c ON c.customer_id = p.customer_id"
        " AND c.channel = 'sms' AND c.status = 'granted'"
        " WHERE p.customer_id = $1 AND p.phone IS NOT NULL"
        f" AND c.address = {SMS_ADDRESS_OF_PROFILE}"
    ),
    "push": (
        "SELECT d.token FROM push_devices d JOIN consents c ON c.customer_id = d.customer_id"
        " AND c.channel = 'push' AND c.status = 'granted'"
        " WHERE d.customer_id = $1 ORDER BY d.registered_at DESC, d.token LIMIT 1"
    ),
}


async def contact_point(conn: Conn, customer_id: str, channel: str) -> str | None:
    """The e-mail address, phone number or newest push token — only if the channel is granted
    (for e-mail: for the address that was confirmed; for SMS: for the number it was given for)."""
    query = _CONSENTED.get(channel)
    if query is None:
        raise ValueError(f"unknown channel {channel!r}")
    cid = await canonical(conn, customer_id)
    found = await conn.fetchval(query, cid)
    return None if found is None else str(found)


async def has_consent(conn: Conn, customer_id: str, channel: str) -> bool:
    """Consent for the channel is granted (e-mail, SMS: for the current address, number)."""
    if channel not in _CONSENTED:
        raise ValueError(f"unknown channel {channel!r}")
    cid = await canonical(conn, customer_id)
    if channel in ("email", "sms"):
        return await contact_point(conn, cid, channel) is not None
    status = await conn.fetchval(
        "SELECT status FROM consents WHERE customer_id = $1 AND channel = $2", cid, channel
    )
    return bool(status == "granted")


async def withdraw_consent(
    conn: Conn,
    store: EventStore,
    customer_id: str,
    channel: str,
    *,
    reason: str,
    metadata: Metadata,
    source: str | None = None,
) -> bool:
    """Withdraw consent (an unsubscribe link, a bounce policy). False if there was none.

    A customer without a profile has nothing to withdraw (False) — callers answer the same
    either way, so nothing reveals whether someone is known.
    """
    if channel not in _CONSENTED:
        raise ValueError(f"unknown channel {channel!r}")
    profiles = Profiles(store)
    cid = await canonical(conn, customer_id)
    await lock(conn, cid)
    profile = await profiles.get(conn, cid)
    if not profile.exists or profile.merged_into is not None:
        return False
    if not profile.withdraw(channel, reason, source):  # type: ignore[arg-type]
        return False
    await profiles.save(conn, profile, metadata)
    return True


async def profile_variables(conn: Conn, customer_id: str) -> dict[str, object]:
    """Personalisation variables of a customer for templates (empty values are None).

    Keys: customer_id, first_name, last_name, full_name, email, phone, company, country, city,
    language, age_band, industry, company_size, timezone.
    """
    cid = await canonical(conn, customer_id)
    row = await conn.fetchrow("SELECT * FROM profiles WHERE customer_id = $1", cid)
    out: dict[str, object] = {"customer_id": cid, **dict.fromkeys(ATTRIBUTES)}
    if row is not None:
        for k in ATTRIBUTES:
            value = row[k]
            out[k] = value.strip() if isinstance(value, str) else value
    names = [n for n in (out["first_name"], out["last_name"]) if n]
    out["full_name"] = " ".join(str(n) for n in names) or None
    return out


VARIABLES: tuple[str, ...] = ("customer_id", *ATTRIBUTES, "full_name")
"""The names ``profile_variables`` returns."""


async def identify_visitor(
    conn: Conn,
    store: EventStore,
    *,
    visitor_id: str,
    customer_id: str,
    metadata: Metadata,
    via: Literal["form", "email_click"] = "form",
) -> int:
    """Link an anonymous visitor to a customer; their earlier anonymous activity joins them.

    Records ``crm.marketing.visitor.identified`` unless nothing changes. Later activity of the
    visitor carries the customer id. Returns how many earlier activity rows were joined.

    An e-mail click never re-links a visitor already identified as another customer (a
    forwarded mail clicked in someone else's browser says nothing about who browses there).
    """
    cid = await canonical(conn, customer_id)
    # Exclusive against the shared lock activity ingestion takes: no row slips in between.
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"visitor:{visitor_id}"
    )
    before = await conn.fetchval(
        "SELECT customer_id FROM visitors WHERE visitor_id = $1", visitor_id
    )
    if before is not None and via == "email_click" and await canonical(conn, str(before)) != cid:
        return 0
    status = await conn.execute(
        "UPDATE web_activity SET customer_id = $2 WHERE visitor_id = $1 AND customer_id IS NULL",
        visitor_id,
        cid,
    )
    joined = int(status.split()[-1])
    if before == cid and joined == 0:
        return 0
    await conn.execute(
        "INSERT INTO visitors (visitor_id, customer_id, identified_at) VALUES ($1, $2, now())"
        " ON CONFLICT (visitor_id) DO UPDATE SET customer_id = EXCLUDED.customer_id,"
        " identified_at = EXCLUDED.identified_at",
        visitor_id,
        cid,
    )
    stream = f"visitor-{visitor_id}"
    version = await store.stream_version(stream, conn)
    payload = VisitorIdentified(
        visitor_id=visitor_id, customer_id=cid, via=via, joined_activity=joined
    )
    await store.append(
        conn,
        stream,
        "visitor",
        version,
        [
            NewEvent(
                type="crm.marketing.visitor.identified",
                data=payload.model_dump(mode="json"),
                subject=cid,
            )
        ],
        metadata,
    )
    return joined


async def customer_of_visitor(conn: Conn, visitor_id: str) -> str | None:
    found = await conn.fetchval(
        "SELECT customer_id FROM visitors WHERE visitor_id = $1", visitor_id
    )
    return None if found is None else await canonical(conn, str(found))
