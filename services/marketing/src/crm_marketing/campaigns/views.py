"""The campaigns read model and the per-recipient results (plain SQL)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from crm_marketing.campaigns.domain import Campaign
from crm_runtime.db import Conn

SENT_STATES = ("sent", "delivered", "opened", "clicked", "unsubscribed")


async def upsert(conn: Conn, c: Campaign, now: datetime, created_by: str | None = None) -> None:
    await conn.execute(
        """
        INSERT INTO campaigns (campaign_id, name, template_id, segment_id, channel, status, send_at,
                               members, version, created_by, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)
        ON CONFLICT (campaign_id) DO UPDATE SET
            name = EXCLUDED.name, status = EXCLUDED.status, send_at = EXCLUDED.send_at,
            members = EXCLUDED.members, version = EXCLUDED.version,
            updated_at = EXCLUDED.updated_at,
            started_at = CASE WHEN EXCLUDED.status = 'sending' AND campaigns.started_at IS NULL
                              THEN EXCLUDED.updated_at ELSE campaigns.started_at END,
            finished_at = CASE WHEN EXCLUDED.status IN ('sent', 'cancelled')
                               THEN EXCLUDED.updated_at ELSE campaigns.finished_at END
        """,
        c.id,
        c.name,
        c.template_id,
        c.segment_id,
        c.channel,
        c.status,
        c.send_at,
        c.members,
        c.version,
        created_by,
        now,
    )


async def get(conn: Conn, campaign_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM campaigns WHERE campaign_id = $1", campaign_id)
    return None if row is None else dict(row)


async def results(conn: Conn, campaign_id: str) -> dict[str, Any]:
    """Counts per status (each message counted once, at its furthest status), the funnel
    (a clicked message was also delivered and opened) and open/click rates."""
    rows = await conn.fetch(
        """
        SELECT status, skip_reason, count(*) AS n,
               count(*) FILTER (WHERE opened_at IS NOT NULL) AS opened,
               count(*) FILTER (WHERE clicked_at IS NOT NULL) AS clicked,
               count(*) FILTER (WHERE delivered_at IS NOT NULL) AS delivered,
               count(*) FILTER (WHERE unsubscribed_at IS NOT NULL) AS unsubscribed
        FROM messages WHERE campaign_id = $1 GROUP BY status, skip_reason
        """,
        campaign_id,
    )
    by_status: dict[str, int] = {}
    skipped: dict[str, int] = {}
    funnel = {"sent": 0, "delivered": 0, "opened": 0, "clicked": 0, "unsubscribed": 0}
    bounced = 0
    for r in rows:
        n = int(r["n"])
        by_status[r["status"]] = by_status.get(r["status"], 0) + n
        if r["status"] == "skipped":
            skipped[r["skip_reason"] or "unknown"] = skipped.get(r["skip_reason"], 0) + n
        if r["status"] == "bounced":
            bounced += n
        if r["status"] in SENT_STATES:
            funnel["sent"] += n
            for k in ("delivered", "opened", "clicked", "unsubscribed"):
                funnel[k] += int(r[k])
    reached = funnel["sent"]
    return {
        "recipients": sum(by_status.values()),
        "by_status": by_status,
        "skipped": skipped,
        "sent": funnel["sent"] + bounced,
        "delivered": funnel["delivered"],
        "bounced": bounced,
        "opened": funnel["opened"],
        "clicked": funnel["clicked"],
        "unsubscribed": funnel["unsubscribed"],
        "open_rate": rate(funnel["opened"], reached),
        "click_rate": rate(funnel["clicked"], reached),
        "click_to_open_rate": rate(funnel["clicked"], funnel["opened"]),
    }


def rate(part: int, whole: int) -> float | None:
    """``part / whole`` to 4 places; None when there is nothing to divide by (not 0.0)."""
    return round(part / whole, 4) if whole else None


async def deferred(conn: Conn, campaign_id: str, now: datetime) -> tuple[int, datetime | None]:
    """Queued recipients not yet due at ``now`` (quiet hours, or a retry's back-off) and the
    earliest time one of them becomes due."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, min(due_at) AS next FROM messages"
        " WHERE campaign_id = $1 AND status = 'queued' AND due_at > $2",
        campaign_id,
        now,
    )
    return (0, None) if row is None else (int(row["n"]), row["next"])
