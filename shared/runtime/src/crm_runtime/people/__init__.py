"""The local directory of sales' people, for the contexts that meet people by e-mail (design §5).

Sales owns customer ids. Marketing and the service desk keep this directory from sales' events:
which customer an e-mail address is, and which ids stand for another (a provisional id sales has
identified, a lead converted into a contact, a merge). When nobody knows an address, the context
mints a provisional customer id (``resolve_or_mint``) and records a ``person.sighted`` event in the
same transaction (``record_sighting``); sales answers with a lead, a contact or
``crm.sales.customer.identified``, and this directory follows. See docs/identity.md.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Literal

from crm_events import CloudEvent, EventPayload, context_topic
from crm_events.schemas.identity import MarketingPersonSighted, ServicePersonSighted
from crm_runtime.context import ServiceContext
from crm_runtime.db import Conn
from crm_runtime.eventstore import EventStore, Metadata, NewEvent

MIGRATIONS = "crm_runtime.people"
MAX_LINK_DEPTH = 20


def normalise(email: str) -> str:
    return email.strip().lower()


async def canonical(conn: Conn, customer_id: str) -> str:
    """The customer id that ``customer_id`` stands for now (follows links; itself if none)."""
    current = customer_id
    for _ in range(MAX_LINK_DEPTH):
        nxt = await conn.fetchval(
            "SELECT customer_id FROM people_links WHERE alias_id = $1 ORDER BY link_id LIMIT 1",
            current,
        )
        if nxt is None or nxt == current:
            return current
        current = str(nxt)
    return current


async def known(conn: Conn, email: str) -> str | None:
    """The (canonical) customer id of an address, or None when nobody knows it."""
    cid = await conn.fetchval("SELECT customer_id FROM people WHERE email = $1", normalise(email))
    return None if cid is None else await canonical(conn, str(cid))


async def resolve_or_mint(conn: Conn, email: str) -> tuple[str, bool]:
    """The customer id of ``email``; mints a provisional one when unknown (``minted=True``).

    Concurrent callers for one unknown address get one id: the insert decides.
    """
    if (cid := await known(conn, email)) is not None:
        return cid, False
    fresh = str(uuid.uuid4())
    row = await conn.fetchrow(
        "INSERT INTO people (email, customer_id, provisional) VALUES ($1, $2, true)"
        " ON CONFLICT (email) DO NOTHING RETURNING customer_id",
        normalise(email),
        fresh,
    )
    if row is not None:
        return fresh, True
    again = await known(conn, email)
    assert again is not None
    return again, False


SIGHTED = {"marketing": MarketingPersonSighted, "service": ServicePersonSighted}


async def record_sighting(
    conn: Conn,
    store: EventStore,
    *,
    context: Literal["marketing", "service"],
    customer_id: str,
    email: str,
    sighted_as: Literal["prospect", "customer"],
    metadata: Metadata,
    first_name: str | None = None,
    last_name: str | None = None,
    company: str | None = None,
    phone: str | None = None,
    source_detail: str | None = None,
    attribution: dict[str, str] | None = None,
) -> None:
    """Append ``crm.<context>.person.sighted`` for a minted id, in the caller's transaction."""
    model = SIGHTED[context]
    payload = model(
        customer_id=customer_id,
        email=normalise(email),
        first_name=first_name,
        last_name=last_name,
        company=company,
        phone=phone,
        sighted_as=sighted_as,
        source_detail=source_detail,
        attribution=attribution,
    )
    type_ = f"crm.{context}.person.sighted"
    await store.append(
        conn,
        f"person-{customer_id}",
        "person",
        0,
        [
            NewEvent(
                type=type_,
                schema_version=1,
                data=payload.model_dump(mode="json"),
                subject=customer_id,
            )
        ],
        metadata,
    )


# --- keeping the directory from sales' events --------------------------------------------------

WATCHED = frozenset(
    {
        "crm.sales.lead.captured",
        "crm.sales.lead.converted",
        "crm.sales.contact.created",
        "crm.sales.contact.updated",
        "crm.sales.contact.merged",
        "crm.sales.contact.merge_undone",
        "crm.sales.customer.identified",
    }
)


async def _claim(conn: Conn, emails: list[str], customer_id: str, *, override: bool) -> None:
    """Point addresses at a customer. ``override``: a contact's address wins over a lead's."""
    for email in emails:
        if override:
            await conn.execute(
                "INSERT INTO people (email, customer_id, provisional) VALUES ($1, $2, false)"
                " ON CONFLICT (email) DO UPDATE SET customer_id = EXCLUDED.customer_id,"
                " provisional = false, updated_at = now()",
                normalise(email),
                customer_id,
            )
        else:
            await conn.execute(
                "INSERT INTO people (email, customer_id, provisional) VALUES ($1, $2, false)"
                " ON CONFLICT (email) DO UPDATE SET provisional = false, updated_at = now()"
                " WHERE people.customer_id = EXCLUDED.customer_id",
                normalise(email),
                customer_id,
            )


async def _link(conn: Conn, link_id: str, alias: str, customer: str) -> None:
    if alias == customer:
        return
    await conn.execute(
        "INSERT INTO people_links (link_id, alias_id, customer_id) VALUES ($1, $2, $3)"
        " ON CONFLICT (link_id) DO NOTHING",
        link_id,
        alias,
        customer,
    )


async def apply_sales_event(conn: Conn, event_type: str, d: dict[str, Any]) -> None:
    """Fold one sales event into the directory (idempotent on its own, too)."""
    if event_type == "crm.sales.lead.captured":
        if d.get("email"):
            await _claim(conn, [d["email"]], d["customer_id"], override=False)
    elif event_type == "crm.sales.contact.created":
        await conn.execute(
            "INSERT INTO people_contacts (contact_id, customer_id) VALUES ($1, $2)"
            " ON CONFLICT (contact_id) DO NOTHING",
            d["contact_id"],
            d["customer_id"],
        )
        await _claim(conn, d["details"].get("emails") or [], d["customer_id"], override=True)
    elif event_type == "crm.sales.contact.updated":
        emails = (d.get("values") or {}).get("emails") or []
        cid = await conn.fetchval(
            "SELECT customer_id FROM people_contacts WHERE contact_id = $1", d["contact_id"]
        )
        if cid is not None and "emails" in d.get("changed", []):
            await _claim(conn, emails, str(cid), override=True)
    elif event_type == "crm.sales.lead.converted":
        await _link(conn, f"lead:{d['lead_id']}", d["lead_customer_id"], d["customer_id"])
    elif event_type == "crm.sales.contact.merged":
        await _link(conn, d["merge_id"], d["merged_customer_id"], d["customer_id"])
    elif event_type == "crm.sales.contact.merge_undone":
        await conn.execute("DELETE FROM people_links WHERE link_id = $1", d["merge_id"])
    elif event_type == "crm.sales.customer.identified":
        await _link(conn, f"identified:{d['alias_id']}", d["alias_id"], d["customer_id"])


class PeopleDirectory:
    """The projection that keeps ``people`` from ``crm.sales.events`` (one per service)."""

    def __init__(self, service: str) -> None:
        self.name = f"{service}.people"

    def handles(self, event_type: str) -> bool:
        return event_type in WATCHED

    async def apply(self, conn: Conn, event: CloudEvent, payload: EventPayload) -> None:
        await apply_sales_event(conn, event.type, payload.model_dump(mode="json"))


async def run_directory(ctx: ServiceContext, stop: asyncio.Event) -> None:
    """Background task: consume sales' events into the directory (``CONSUMERS_ENABLED``)."""
    if not ctx.settings.consumers_enabled:
        return
    from crm_runtime.consumer import KafkaConsumerRunner

    runner = KafkaConsumerRunner(
        ctx.settings,
        ctx.pool,
        PeopleDirectory(ctx.settings.service_name),
        [context_topic("sales")],
    )
    await runner.run(stop)
