"""Read models of deals (list, board) and the exchange-rate table."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from crm_runtime.db import Conn
from crm_sales.domain.deal import Deal


async def upsert(conn: Conn, d: Deal, at: datetime) -> None:
    await conn.execute(
        """
        INSERT INTO deals (deal_id, customer_id, name, pipeline_id, stage, status, probability,
                           amount_minor, currency, amount_base, expected_close, owner_id,
                           team_id, account_id, contact_id, version, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17)
        ON CONFLICT (deal_id) DO UPDATE SET
            name = EXCLUDED.name, stage = EXCLUDED.stage, status = EXCLUDED.status,
            probability = EXCLUDED.probability, amount_minor = EXCLUDED.amount_minor,
            currency = EXCLUDED.currency, amount_base = EXCLUDED.amount_base,
            expected_close = EXCLUDED.expected_close, owner_id = EXCLUDED.owner_id,
            team_id = EXCLUDED.team_id, version = EXCLUDED.version,
            updated_at = EXCLUDED.updated_at
        """,
        d.id,
        d.customer_id,
        d.name,
        d.pipeline_id,
        d.stage,
        d.status,
        d.probability,
        d.amount_minor,
        d.currency,
        d.amount_in_base(),
        d.expected_close,
        d.owner_id,
        d.team_id,
        d.account_id,
        d.contact_id,
        d.version,
        at,
    )


async def open_stages(conn: Conn, pipeline_id: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT DISTINCT stage FROM deals WHERE pipeline_id = $1 AND status = 'open'", pipeline_id
    )
    return {r["stage"] for r in rows}


async def board(
    conn: Conn, pipeline_id: str, *, see_all: bool, user_id: str, team: str | None
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """
        SELECT stage, count(*) AS deals, sum(amount_base) AS amount_base,
               sum(amount_base * probability / 100.0) AS weighted_base
        FROM deals
        WHERE pipeline_id = $1
          AND ($2::bool OR owner_id = $3 OR ($4::text IS NOT NULL AND team_id = $4))
        GROUP BY stage
        """,
        pipeline_id,
        see_all,
        user_id,
        team,
    )
    return [dict(r) for r in rows]


async def set_rate(conn: Conn, currency: str, base: str, rate: Decimal, at: datetime) -> None:
    await conn.execute(
        "INSERT INTO exchange_rates (currency, base_currency, rate, set_at) VALUES ($1,$2,$3,$4)"
        " ON CONFLICT (currency) DO UPDATE SET base_currency = EXCLUDED.base_currency,"
        " rate = EXCLUDED.rate, set_at = EXCLUDED.set_at",
        currency,
        base,
        rate,
        at,
    )


async def rate(conn: Conn, currency: str, base: str) -> Decimal | None:
    if currency == base:
        return Decimal(1)
    value = await conn.fetchval(
        "SELECT rate FROM exchange_rates WHERE currency = $1 AND base_currency = $2",
        currency,
        base,
    )
    return Decimal(value) if value is not None else None


async def rates(conn: Conn) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch("SELECT * FROM exchange_rates ORDER BY currency")]
