"""The ``leads`` read model: upserted from a Lead in the transaction that saves its events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from crm_runtime.db import Conn
from crm_runtime.eventstore import Write
from crm_sales.domain.lead import Lead

_UPSERT = """
INSERT INTO leads (lead_id, customer_id, name, email, company, source, status, score,
                   owner_id, version, created_at, updated_at, team_id, region,
                   product_line)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14)
ON CONFLICT (lead_id) DO UPDATE SET
    name = EXCLUDED.name, email = EXCLUDED.email, company = EXCLUDED.company,
    status = EXCLUDED.status, score = EXCLUDED.score, owner_id = EXCLUDED.owner_id,
    team_id = EXCLUDED.team_id, version = EXCLUDED.version,
    updated_at = EXCLUDED.updated_at
"""


def upsert_write(lead: Lead, at: datetime, version: int) -> Write:
    """The lead's row at ``version``, to send with the append that brings it there."""
    return Write(
        _UPSERT,
        (
            lead.id,
            lead.customer_id,
            lead.name,
            lead.email,
            lead.company,
            lead.source,
            lead.status,
            lead.score,
            lead.owner_id,
            version,
            at,
            lead.team_id,
            lead.region,
            lead.product_line,
        ),
    )


async def upsert(conn: Conn, lead: Lead, at: datetime) -> None:
    w = upsert_write(lead, at, lead.version)
    await conn.execute(w.sql, *w.args)


async def list_leads(
    conn: Conn,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    status: str | None,
    source: str | None,
    owner_id: str | None,
    see_all: bool = True,
    user_id: str = "",
    team: str | None = None,
    unassigned_visible: bool = False,
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """
        SELECT lead_id, customer_id, name, email, company, source, status, score, owner_id,
               team_id, region, product_line, version, created_at, updated_at
        FROM leads
        WHERE ($1::timestamptz IS NULL OR (created_at, lead_id) < ($1, $2))
          AND ($3::text IS NULL OR status = $3)
          AND ($4::text IS NULL OR source = $4)
          AND ($5::text IS NULL OR owner_id = $5)
          AND ($7::bool OR owner_id = $8 OR ($9::text IS NOT NULL AND team_id = $9)
               OR ($10::bool AND owner_id IS NULL AND team_id IS NULL))
        ORDER BY created_at DESC, lead_id DESC
        LIMIT $6
        """,
        after[0] if after else None,
        after[1] if after else None,
        status,
        source,
        owner_id,
        limit,
        see_all,
        user_id,
        team,
        unassigned_visible,
    )
    return [dict(r) for r in rows]
