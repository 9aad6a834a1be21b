"""Website activity on the timeline, summarised per visit (not one row per page view).

A visit is one visitor's activity with no gap of ``VISIT_GAP``; events arriving out of order
extend a visit at either end, and an event that bridges two visits merges them. A visit shows
on the customer's timeline as one touchpoint ("Website visit: 4 pages, 2 products viewed
(phones), 1 search") once the visitor is known — from the event itself, or when
``crm.marketing.visitor.identified`` joins the visitor's earlier, anonymous visits to the
customer. The touchpoint's id is derived from the visit's, so it is rewritten as the visit grows.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from crm_events import CloudEvent
from crm_runtime.db import Conn

WEB_PREFIX = "crm.marketing.web."
IDENTIFIED = "crm.marketing.visitor.identified"
VISIT_GAP = timedelta(minutes=30)
VISIT_TYPE = "crm.marketing.web.visit"  # the touchpoint's type (a summary, not an event)
COUNTER = {
    "crm.marketing.web.page_viewed": "pages",
    "crm.marketing.web.product_viewed": "products",
    "crm.marketing.web.searched": "searches",
    "crm.marketing.web.added_to_cart": "carts",
}
_NS = uuid.UUID("6f0a7c1e-3b8d-4f5e-9a2c-1d4e5f6a7b8c")


def touchpoint_id(visit_id: str) -> uuid.UUID:
    return uuid.uuid5(_NS, visit_id)


def summary(v: dict[str, Any]) -> str:
    parts = []
    if v["pages"]:
        parts.append(f"{v['pages']} page{'s' if v['pages'] != 1 else ''}")
    if v["products"]:
        what = f"{v['products']} product{'s' if v['products'] != 1 else ''} viewed"
        if v["categories"]:
            what += f" ({', '.join(v['categories'][:3])})"
        parts.append(what)
    if v["searches"]:
        parts.append(f"{v['searches']} search{'es' if v['searches'] != 1 else ''}")
    if v["carts"]:
        parts.append(f"{v['carts']} added to cart")
    minutes = int((v["ended_at"] - v["started_at"]).total_seconds() // 60)
    length = f" over {minutes} min" if minutes else ""
    return "Website visit: " + (", ".join(parts) or "activity") + length


async def apply_web(conn: Conn, event: CloudEvent) -> None:
    d, at = event.data, event.time
    visitor = d["visitor_id"]
    rows = await conn.fetch(
        "SELECT * FROM web_visits WHERE visitor_id = $1 AND started_at - $3::interval <= $2"
        " AND ended_at + $3::interval >= $2 ORDER BY started_at, visit_id FOR UPDATE",
        visitor,
        at,
        VISIT_GAP,
    )
    customer = d.get("customer_id") or event.subject
    if not rows:
        visit_id = f"{visitor}@{event.id}"
        await conn.execute(
            "INSERT INTO web_visits (visit_id, visitor_id, customer_id, started_at, ended_at)"
            " VALUES ($1, $2, $3, $4, $4)",
            visit_id,
            visitor,
            customer,
            at,
        )
    else:
        visit_id = rows[0]["visit_id"]
        for other in rows[1:]:  # this event bridges visits: they are one
            await conn.execute(
                """
                UPDATE web_visits v SET started_at = LEAST(v.started_at, o.started_at),
                    ended_at = GREATEST(v.ended_at, o.ended_at), pages = v.pages + o.pages,
                    products = v.products + o.products, searches = v.searches + o.searches,
                    carts = v.carts + o.carts,
                    categories = ARRAY(SELECT DISTINCT unnest(v.categories || o.categories)
                                       ORDER BY 1),
                    customer_id = COALESCE(v.customer_id, o.customer_id)
                FROM web_visits o WHERE v.visit_id = $1 AND o.visit_id = $2
                """,
                visit_id,
                other["visit_id"],
            )
            await conn.execute("DELETE FROM web_visits WHERE visit_id = $1", other["visit_id"])
            await conn.execute(
                "DELETE FROM timeline WHERE event_id = $1", touchpoint_id(other["visit_id"])
            )
    column = COUNTER[event.type]  # a fixed column name from the map above
    category = d.get("category")
    await conn.execute(
        f"""
        UPDATE web_visits SET {column} = {column} + 1,
            started_at = LEAST(started_at, $2), ended_at = GREATEST(ended_at, $2),
            last_url = CASE WHEN $2 >= ended_at THEN COALESCE($3, last_url) ELSE last_url END,
            categories = CASE WHEN $4::text IS NULL OR $4 = ANY(categories) THEN categories
                              ELSE ARRAY(SELECT unnest(categories || $4::text) ORDER BY 1) END,
            customer_id = COALESCE(customer_id, $5)
        WHERE visit_id = $1
        """,
        visit_id,
        at,
        d.get("url"),
        category,
        customer,
    )
    await write_touchpoint(conn, visit_id)


async def identify(conn: Conn, event: CloudEvent) -> None:
    """The visitor is a customer: their visits so far join the customer's timeline."""
    d = event.data
    ids = await conn.fetch(
        "UPDATE web_visits SET customer_id = $2 WHERE visitor_id = $1 AND customer_id IS NULL"
        " RETURNING visit_id",
        d["visitor_id"],
        d["customer_id"],
    )
    for r in ids:
        await write_touchpoint(conn, r["visit_id"])


def touchpoint_data(v: Any) -> dict[str, Any]:
    """A visit's timeline entry data (``v``: a ``web_visits`` row, as a Record or a dict)."""
    return {
        "visit_id": v["visit_id"],
        "visitor_id": v["visitor_id"],
        "started_at": v["started_at"].isoformat(),
        "ended_at": v["ended_at"].isoformat(),
        "pages": v["pages"],
        "products": v["products"],
        "searches": v["searches"],
        "carts": v["carts"],
        "categories": list(v["categories"]),
        "last_url": v["last_url"],
    }


async def write_touchpoint(conn: Conn, visit_id: str) -> None:
    v = await conn.fetchrow("SELECT * FROM web_visits WHERE visit_id = $1", visit_id)
    if v is None or v["customer_id"] is None:
        return
    data = touchpoint_data(v)
    await conn.execute(
        """
        INSERT INTO timeline (event_id, customer_id, occurred_at, context, event_type, summary,
                              stream_id, stream_version, link, data)
        VALUES ($1, $2, $3, 'marketing', $4, $5, $6, 1, NULL, $7::jsonb)
        ON CONFLICT (event_id) DO UPDATE SET customer_id = EXCLUDED.customer_id,
            occurred_at = EXCLUDED.occurred_at, summary = EXCLUDED.summary,
            data = EXCLUDED.data
        """,
        touchpoint_id(visit_id),
        v["customer_id"],
        v["started_at"],
        VISIT_TYPE,
        summary(dict(v)),
        f"visit-{visit_id}",
        json.dumps(data),
    )
