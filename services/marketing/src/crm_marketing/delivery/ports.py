"""What campaigns, tracking and triggers use from the audience, segments and templates parts.

One place that names those interfaces (agreed between the parts of the service), so the rest of
this package depends on these functions only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from crm_runtime.db import Conn
from crm_runtime.errors import Conflict, NotFound
from crm_runtime.eventstore import EventStore, Metadata


class Rendered(Protocol):
    """A rendered template: e-mail uses subject/html/text, SMS text, push title/body."""

    @property
    def subject(self) -> str | None: ...
    @property
    def html(self) -> str | None: ...
    @property
    def text(self) -> str | None: ...
    @property
    def title(self) -> str | None: ...
    @property
    def body(self) -> str | None: ...


async def segment_members(conn: Conn, segment_id: str) -> list[str]:
    from crm_marketing.segments import api

    return list(await api.members(conn, segment_id))


async def segment_status(conn: Conn, segment_id: str, *, lock: bool = False) -> str | None:
    """``active`` / ``archived``, or None (no such segment). ``lock``: hold it (FOR SHARE) so
    it cannot be archived until the caller's transaction ends."""
    status = await conn.fetchval(
        "SELECT status FROM segments WHERE segment_id = $1" + (" FOR SHARE" if lock else ""),
        segment_id,
    )
    return None if status is None else str(status)


async def template_status(conn: Conn, template_id: str) -> tuple[str, str] | None:
    """``(channel, status)`` of a template, or None (no such template)."""
    from crm_marketing.templates import api

    return await api.template_status(conn, template_id)


async def render(
    conn: Conn, template_id: str, channel: str, variables: dict[str, object]
) -> Rendered:
    from crm_marketing.templates import api

    rendered: Any = await api.render(conn, template_id, channel, variables)
    return rendered  # type: ignore[no-any-return]


Renderer = Callable[[dict[str, object]], Rendered]


async def current_template(conn: Conn, template_id: str, channel: str) -> tuple[int, str]:
    """``(revision, status)`` of a template now. NotFound (no such template), Conflict (a
    template of another channel)."""
    from crm_marketing.templates import adapters

    row = await adapters.get(conn, template_id)
    if row is None:
        raise NotFound(f"template {template_id} does not exist")
    if row["channel"] != channel:
        raise Conflict(f"template {template_id} is a {row['channel']} template, not {channel}")
    return int(row["revision"]), str(row["status"])


async def template_renderer(
    conn: Conn, template_id: str, channel: str, revision: int | None = None
) -> Renderer:
    """Load a template's revision (None: the current one) once and render it for many
    recipients (what ``render`` does per call). NotFound / Conflict as ``render``."""
    from crm_marketing.templates import adapters, api

    row = (
        await adapters.get(conn, template_id)
        if revision is None
        else await adapters.get_revision(conn, template_id, revision)
    )
    if row is None:
        what = f"template {template_id}" + (f" revision {revision}" if revision else "")
        raise NotFound(f"{what} does not exist")
    if row["channel"] != channel:
        raise Conflict(f"template {template_id} is a {row['channel']} template, not {channel}")
    rev, kind, content = int(row["revision"]), row["channel"], row["content"]

    def render_one(variables: dict[str, object]) -> Rendered:
        return api.render_content(template_id, rev, kind, content, variables)

    return render_one


async def profile_variables_many(
    conn: Conn, customer_ids: Sequence[str]
) -> dict[str, dict[str, object]]:
    """``profile_variables`` of many customers in two queries (a campaign batch).

    Builds the same dictionary as the audience's ``profile_variables``; a customer id that
    stands for another (merged, converted) goes through that function itself.
    """
    from crm_marketing.audience.domain import ATTRIBUTES

    ids = list(dict.fromkeys(customer_ids))
    aliased = {
        r["alias_id"]
        for r in await conn.fetch(
            "SELECT DISTINCT alias_id FROM profile_aliases WHERE alias_id = ANY($1::text[])", ids
        )
    }
    rows = {
        r["customer_id"]: r
        for r in await conn.fetch(
            "SELECT * FROM profiles WHERE customer_id = ANY($1::text[])",
            [i for i in ids if i not in aliased],
        )
    }
    out: dict[str, dict[str, object]] = {}
    for cid in ids:
        if cid in aliased:
            out[cid] = await profile_variables(conn, cid)
            continue
        values: dict[str, object] = {"customer_id": cid, **dict.fromkeys(ATTRIBUTES)}
        row = rows.get(cid)
        if row is not None:
            for k in ATTRIBUTES:
                value = row[k]
                values[k] = value.strip() if isinstance(value, str) else value
        names = [n for n in (values["first_name"], values["last_name"]) if n]
        values["full_name"] = " ".join(str(n) for n in names) or None
        out[cid] = values
    return out


async def profile_variables(conn: Conn, customer_id: str) -> dict[str, object]:
    from crm_marketing.audience import api

    return dict(await api.profile_variables(conn, customer_id))


async def contact_point(conn: Conn, customer_id: str, channel: str) -> str | None:
    from crm_marketing.audience import api

    found = await api.contact_point(conn, customer_id, channel)
    return None if found is None else str(found)


async def withdraw_consent(
    conn: Conn,
    store: EventStore,
    customer_id: str,
    channel: str,
    *,
    reason: str,
    metadata: Metadata,
) -> bool:
    from crm_marketing.audience import api

    return bool(
        await api.withdraw_consent(
            conn, store, customer_id, channel, reason=reason, metadata=metadata
        )
    )


async def identify_visitor(
    conn: Conn, store: EventStore, *, visitor_id: str, customer_id: str, metadata: Metadata
) -> None:
    from crm_marketing.audience import api

    await api.identify_visitor(
        conn,
        store,
        visitor_id=visitor_id,
        customer_id=customer_id,
        metadata=metadata,
        via="email_click",
    )
