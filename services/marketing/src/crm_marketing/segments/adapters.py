"""SQL of the segment read model (segments, segment_members) and the members export."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg

from crm_marketing.segments import rules
from crm_marketing.segments.domain import Segment
from crm_runtime.db import Conn

_SEGMENT_COLUMNS = (
    "segment_id, name, description, kind, rule, rule_text, has_window, status, version,"
    " membership_version, member_count, evaluated_at, created_by, created_at, updated_at"
)


def row(r: asyncpg.Record | None) -> dict[str, Any] | None:
    if r is None:
        return None
    out = dict(r)
    if isinstance(out.get("rule"), str):
        out["rule"] = json.loads(out["rule"])
    return out


async def upsert(conn: Conn, segment: Segment, now: datetime, actor: str | None) -> None:
    rule = segment.rule
    await conn.execute(
        """
        INSERT INTO segments (segment_id, name, description, kind, rule, rule_text, has_window,
                              status, version, created_by, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11, $11)
        ON CONFLICT (segment_id) DO UPDATE SET
            name = EXCLUDED.name, description = EXCLUDED.description, rule = EXCLUDED.rule,
            rule_text = EXCLUDED.rule_text, has_window = EXCLUDED.has_window,
            status = EXCLUDED.status, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at
        """,
        segment.id,
        segment.name,
        segment.description,
        segment.kind,
        json.dumps(segment.rule_json) if segment.rule_json is not None else None,
        segment.rule_text,
        rule is not None and rules.has_window(rule),
        "archived" if segment.archived else "active",
        segment.version,
        actor,
        now,
    )


async def get(conn: Conn, segment_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    q = f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE segment_id = $1"
    return row(await conn.fetchrow(q + (" FOR UPDATE" if lock else ""), segment_id))


async def name_taken(conn: Conn, name: str, except_id: str | None = None) -> str | None:
    found = await conn.fetchval(
        "SELECT segment_id FROM segments WHERE lower(name) = lower($1) AND status = 'active'"
        " AND segment_id IS DISTINCT FROM $2",
        name,
        except_id,
    )
    return None if found is None else str(found)


async def list_segments(
    conn: Conn,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    kind: str | None,
    status: str | None,
    q: str | None,
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"""
        SELECT {_SEGMENT_COLUMNS} FROM segments
        WHERE ($1::timestamptz IS NULL OR (created_at, segment_id) < ($1, $2))
          AND ($3::text IS NULL OR kind = $3)
          AND ($4::text IS NULL OR status = $4)
          AND ($5::text IS NULL OR strpos(lower(name), lower($5)) > 0)
        ORDER BY created_at DESC, segment_id DESC LIMIT $6
        """,
        after[0] if after else None,
        after[1] if after else None,
        kind,
        status,
        q,
        limit,
    )
    return [r for r in (row(x) for x in rows) if r is not None]


async def member_page(
    conn: Conn, segment_id: str, *, after: str | None, limit: int
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT customer_id, since FROM segment_members WHERE segment_id = $1"
        " AND ($2::text IS NULL OR customer_id > $2) ORDER BY customer_id LIMIT $3",
        segment_id,
        after,
        limit,
    )
    return [dict(r) for r in rows]


async def member_ids(conn: Conn, segment_id: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT customer_id FROM segment_members WHERE segment_id = $1 ORDER BY customer_id",
        segment_id,
    )
    return [r["customer_id"] for r in rows]


async def unknown_customers(conn: Conn, customer_ids: list[str]) -> list[str]:
    rows = await conn.fetch(
        "SELECT x FROM unnest($1::text[]) x"
        " WHERE NOT EXISTS (SELECT 1 FROM profiles p WHERE p.customer_id = x) ORDER BY x",
        customer_ids,
    )
    return [r["x"] for r in rows]


EXPORT_COLUMNS = ("customer_id", "email", "first_name", "last_name", "country")


async def export_rows(
    pool: asyncpg.Pool, segment_id: str, batch: int = 2000
) -> AsyncIterator[list[tuple[str | None, ...]]]:
    """The members with what a marketer sees of them, in batches, from a server-side cursor."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        cursor = conn.cursor(
            "SELECT m.customer_id, p.email, p.first_name, p.last_name, p.country::text"
            " FROM segment_members m LEFT JOIN profiles p ON p.customer_id = m.customer_id"
            " WHERE m.segment_id = $1 ORDER BY m.customer_id",
            segment_id,
            prefetch=batch,
        )
        rows: list[tuple[str | None, ...]] = []
        async for r in cursor:
            rows.append(tuple(r))
            if len(rows) >= batch:
                yield rows
                rows = []
        if rows:
            yield rows
