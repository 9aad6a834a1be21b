"""Keyset-paged lists of read-model rows the caller may see, newest first (one for all tables)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from crm_runtime.db import Conn

# table -> (key column, owner column, what ?q= looks in, merged records hidden)
TABLES: dict[str, tuple[str, str, tuple[str, ...], bool]] = {
    "contacts": (
        "contact_id",
        "owner_id",
        # the name, any e-mail address, any phone number (as written)
        ("display_name", "details->>'emails'", "details->>'phones'"),
        True,
    ),
    "accounts": ("account_id", "owner_id", ("name", "domain"), True),
    "deals": ("deal_id", "owner_id", ("name",), False),
    "activities": ("activity_id", "owner_id", (), False),
    "tasks": ("task_id", "assignee_id", (), False),
}


def like_pattern(text: str) -> str:
    """``%text%`` for LIKE, the text's own ``%``, ``_`` and backslash taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_visible(
    conn: Conn,
    table: str,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    see_all: bool,
    user_id: str,
    team: str | None,
    filters: dict[str, Any],
    search: str | None = None,
    unassigned: bool = False,
) -> list[dict[str, Any]]:
    """Rows after the cursor that the caller owns, its team holds, or all with ``see_all``;
    ``unassigned``: also the rows nobody owns and no team holds (a manager's to hand out, as
    ``access.can_read`` says).

    Filters are equality on a column, except ``tag`` (in the tags array) and ``due_before``.
    """
    key, owner, searched, hide_merged = TABLES[table]
    params: list[Any] = [after[0] if after else None, after[1] if after else None]
    params += [see_all, user_id, team, unassigned]
    where = [
        f"($1::timestamptz IS NULL OR (created_at, {key}) < ($1, $2))",
        f"($3::bool OR {owner} = $4 OR ($5::text IS NOT NULL AND team_id = $5)"
        f" OR ($6::bool AND {owner} IS NULL AND team_id IS NULL))",
    ]
    for column, value in filters.items():
        if value is None:
            continue
        params.append(value)
        if column == "tag":
            where.append(f"${len(params)} = ANY(tags)")
        elif column == "due_before":
            where.append(f"due_at < ${len(params)}")
        else:
            where.append(f"{column} = ${len(params)}")
    if hide_merged:
        where.append("merged_into IS NULL")
    if search and searched:
        params.append(like_pattern(search.lower()))
        n = len(params)
        where.append("(" + " OR ".join(f"lower({c}) LIKE ${n}" for c in searched) + ")")
    params.append(limit)
    rows = await conn.fetch(
        f"SELECT * FROM {table} WHERE {' AND '.join(where)}"
        f" ORDER BY created_at DESC, {key} DESC LIMIT ${len(params)}",
        *params,
    )
    return [dict(r) for r in rows]
