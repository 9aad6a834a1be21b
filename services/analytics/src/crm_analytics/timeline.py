"""The customer-timeline projection: every event with a subject becomes one touchpoint row."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from crm_events import CloudEvent, EventPayload, registry
from crm_runtime.db import Conn

Summariser = Callable[[dict[str, Any]], str]

# Type-specific wording; any other registered type falls back to its schema's one-line summary,
# so new event types appear on the timeline without touching this module.
SUMMARIES: dict[str, Summariser] = {
    "crm.sales.lead.captured": lambda d: (
        f"Lead captured from {d['source'].replace('_', ' ')}"
        + (f" ({d['company']})" if d.get("company") else "")
    ),
    "crm.sales.lead.qualified": lambda d: f"Lead qualified with score {d['score']}",
    "crm.sales.lead.disqualified": lambda d: f"Lead disqualified: {d['reason']}",
}


def summarise(event: CloudEvent) -> str:
    fn = SUMMARIES.get(event.type)
    if fn is not None:
        return fn(event.data)
    spec = next((s for s in registry.specs() if s.type == event.type), None)
    return spec.summary.rstrip(".") if spec and spec.summary else event.type


def link(event: CloudEvent) -> str | None:
    """Where the source record lives: the owning service and the resource path."""
    kind, _, ident = event.streamid.partition("-")
    if not ident:
        return None
    return f"{event.context}:/{kind}s/{ident}"


class TimelineProjection:
    name = "analytics.timeline"

    def handles(self, event_type: str) -> bool:
        return registry.knows(event_type)

    async def apply(self, conn: Conn, event: CloudEvent, payload: EventPayload) -> None:
        if not event.subject:
            return  # not about a customer
        await conn.execute(
            """
            INSERT INTO timeline (event_id, customer_id, occurred_at, context, event_type,
                                  summary, stream_id, stream_version, link, data)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)
            ON CONFLICT (event_id) DO NOTHING
            """,
            event.id,
            event.subject,
            event.time,
            event.context,
            event.type,
            summarise(event),
            event.streamid,
            event.streamversion,
            link(event),
            json.dumps(payload.model_dump(mode="json")),
        )
