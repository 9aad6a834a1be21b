"""The ``leads`` read model: upserted from a Lead in the transaction that saves its events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from crm_runtime.db import Conn
from crm_sales.domain.lead import Lead


async def upsert(conn: Conn, lead: Lead, at: datetime) -> None:
    await conn.execute(
        """
        INSERT INTO leads (lead_id, customer_id, name, email, company, source, status, score,
                           owner_id, version, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)
        ON CONFLICT (lead_id) DO UPDATE SET
            name = EXCLUDED.name, email = EXCLUDED.email, company = EXCLUDED.company,
            status = EXCLUDED.status, score = EXCLUDED.score, owner_id = EXCLUDED.owner_id,
            version = EXCLUDED.version, updated_at = EXCLUDED.updated_at
        """,
        lead.id,
        lead.customer_id,
        lead.name,
        lead.email,
        lead.company,
        lead.source,
        lead.status,
        lead.score,
        lead.owner_id,
        lead.version,
        at,
    )


async def list_leads(
    conn: Conn,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    status: str | None,
    source: str | None,
    owner_id: str | None,
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """
        SELECT lead_id, customer_id, name, email, company, source, status, score, owner_id,
               version, created_at, updated_at
        FROM leads
        WHERE ($1::timestamptz IS NULL OR (created_at, lead_id) < ($1, $2))
          AND ($3::text IS NULL OR status = $3)
          AND ($4::text IS NULL OR source = $4)
          AND ($5::text IS NULL OR owner_id = $5)
        ORDER BY created_at DESC, lead_id DESC
        LIMIT $6
        """,
        after[0] if after else None,
        after[1] if after else None,
        status,
        source,
        owner_id,
        limit,
    )
    return [dict(r) for r in rows]
