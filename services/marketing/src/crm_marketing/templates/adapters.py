"""SQL of the template read model (templates, template_revisions)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from crm_marketing.templates.domain import Template
from crm_runtime.db import Conn

_COLUMNS = (
    "template_id, name, channel, status, revision, content, version, created_by, created_at,"
    " updated_at"
)


def _row(r: asyncpg.Record | None) -> dict[str, Any] | None:
    if r is None:
        return None
    out = dict(r)
    if isinstance(out.get("content"), str):
        out["content"] = json.loads(out["content"])
    return out


async def upsert(conn: Conn, template: Template, now: datetime, actor: str | None) -> None:
    content = json.dumps(template.content.model_dump(mode="json"))
    await conn.execute(
        """
        INSERT INTO templates (template_id, name, channel, status, revision, content, version,
                               created_by, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $9)
        ON CONFLICT (template_id) DO UPDATE SET
            name = EXCLUDED.name, status = EXCLUDED.status, revision = EXCLUDED.revision,
            content = EXCLUDED.content, version = EXCLUDED.version,
            updated_at = EXCLUDED.updated_at
        """,
        template.id,
        template.name,
        template.channel,
        "archived" if template.archived else "active",
        template.revision,
        content,
        template.version,
        actor,
        now,
    )
    await conn.execute(
        "INSERT INTO template_revisions (template_id, revision, name, content, created_by,"
        " created_at) VALUES ($1, $2, $3, $4::jsonb, $5, $6) ON CONFLICT DO NOTHING",
        template.id,
        template.revision,
        template.name,
        content,
        actor,
        now,
    )


async def get(conn: Conn, template_id: str) -> dict[str, Any] | None:
    return _row(
        await conn.fetchrow(f"SELECT {_COLUMNS} FROM templates WHERE template_id = $1", template_id)
    )


async def get_revision(conn: Conn, template_id: str, revision: int) -> dict[str, Any] | None:
    return _row(
        await conn.fetchrow(
            "SELECT r.template_id, r.name, t.channel, t.status, r.revision, r.content,"
            " r.created_by, r.created_at FROM template_revisions r"
            " JOIN templates t USING (template_id) WHERE r.template_id = $1 AND r.revision = $2",
            template_id,
            revision,
        )
    )


async def revisions(conn: Conn, template_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT template_id, revision, name, content, created_by, created_at"
        " FROM template_revisions WHERE template_id = $1 ORDER BY revision DESC",
        template_id,
    )
    return [r for r in (_row(x) for x in rows) if r is not None]


async def list_templates(
    conn: Conn,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    channel: str | None,
    status: str | None,
    q: str | None,
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM templates
        WHERE ($1::timestamptz IS NULL OR (created_at, template_id) < ($1, $2))
          AND ($3::text IS NULL OR channel = $3)
          AND ($4::text IS NULL OR status = $4)
          AND ($5::text IS NULL OR strpos(lower(name), lower($5)) > 0)
        ORDER BY created_at DESC, template_id DESC LIMIT $6
        """,
        after[0] if after else None,
        after[1] if after else None,
        channel,
        status,
        q,
        limit,
    )
    return [r for r in (_row(x) for x in rows) if r is not None]
