"""Read models of the knowledge base (plain SQL), written in the command's transaction.

Search is PostgreSQL full-text search: ``kb_articles.search`` is a stored tsvector (title with
weight A, body with weight B) under the article's own text-search configuration, with a GIN
index. A search builds one query per configuration in use (``websearch_to_tsquery``, or an OR
of the words for suggestions) and matches each article with the query of its configuration;
results are ranked with ``ts_rank_cd`` (cover density; A counts 1.0, B 0.4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from crm_runtime.db import Conn
from crm_runtime.errors import Conflict
from crm_service_desk.kb.domain import Article, Category, ts_config_for

QueryMode = Literal["web", "any"]
# Snippets mark the matched words with Markdown bold, ``**word**``. So that a mark is always a
# match, the body's own bold is left out first: a ``**`` at a word's edge (after a non-word
# character and before a non-space one, or the other way round), as in ``**Note:**``. A ``**``
# inside a word or between spaces is text and stays: ``2**3``, ``2 ** 3``. ts_headline marks
# with two control characters (taken out of the body first) that become ``**`` at the end; one
# right beside a ``**`` the body kept (``2**3`` when ``3`` matched) takes its place, so no mark
# is doubled (``2**3**``, never ``2****3**``).
_MARK_START, _MARK_STOP = "\x01", "\x02"
_BOLD_EDGE = r"(?<![[:alnum:]])\*\*(?=[^[:space:]])|(?<=[^[:space:]])\*\*(?![[:alnum:]])"
SNIPPET_OPTIONS = (
    f'StartSel="{_MARK_START}", StopSel="{_MARK_STOP}", MaxWords=35, MinWords=12, MaxFragments=2'
)


def snippet_sql(config: str, body: str, query: str) -> str:
    """The SQL expression of a body's snippet (see above), from SQL expressions of the text
    search configuration, the body and the tsquery."""
    marks = f"{_MARK_START}{_MARK_STOP}"
    text = f"regexp_replace(translate({body}, '{marks}', ''), '{_BOLD_EDGE}', '', 'g')"
    headline = f"ts_headline({config}, {text}, {query}, '{SNIPPET_OPTIONS}')"
    for old, new in (
        (f"**{_MARK_START}", _MARK_START),
        (f"{_MARK_STOP}**", _MARK_STOP),
        (_MARK_START, "**"),
        (_MARK_STOP, "**"),
    ):
        headline = f"replace({headline}, '{old}', '{new}')"
    return headline


# --- categories -----------------------------------------------------------------------------


async def upsert_category(conn: Conn, c: Category, at: datetime) -> None:
    existing = await conn.fetchval(
        "SELECT category_id FROM kb_categories WHERE coalesce(parent_id, '') = coalesce($1, '')"
        " AND lower(name) = lower($2) AND category_id <> $3",
        c.parent_id,
        c.name,
        c.id,
    )
    if existing is not None:
        raise Conflict(
            f"a category named {c.name!r} already exists here",
            existing=f"/kb/categories/{existing}",
        )
    await conn.execute(
        """
        INSERT INTO kb_categories (category_id, name, description, parent_id, created_at,
                                   updated_at, version)
        VALUES ($1, $2, $3, $4, $5, $5, $6)
        ON CONFLICT (category_id) DO UPDATE SET name = EXCLUDED.name,
            description = EXCLUDED.description, parent_id = EXCLUDED.parent_id,
            updated_at = EXCLUDED.updated_at, version = EXCLUDED.version
        """,
        c.id,
        c.name,
        c.description,
        c.parent_id,
        at,
        c.version,
    )


async def category_exists(conn: Conn, category_id: str) -> bool:
    return bool(
        await conn.fetchval("SELECT 1 FROM kb_categories WHERE category_id = $1", category_id)
    )


async def category_ancestors(conn: Conn, category_id: str) -> list[str]:
    """``category_id`` and its parents, nearest first (stops at a cycle)."""
    rows = await conn.fetch(
        """
        WITH RECURSIVE up(category_id, parent_id, depth) AS (
            SELECT category_id, parent_id, 0 FROM kb_categories WHERE category_id = $1
            UNION ALL
            SELECT c.category_id, c.parent_id, up.depth + 1
            FROM kb_categories c JOIN up ON c.category_id = up.parent_id
            WHERE up.depth < 50
        )
        SELECT category_id FROM up ORDER BY depth
        """,
        category_id,
    )
    return [r["category_id"] for r in rows]


async def list_categories(conn: Conn, *, published_only: bool) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """
        SELECT c.*, count(a.article_id) AS article_count
        FROM kb_categories c
        LEFT JOIN kb_articles a ON a.category_id = c.category_id
            AND (a.state = 'published' OR (NOT $1::bool AND a.state = 'draft'))
        GROUP BY c.category_id
        ORDER BY lower(c.name), c.category_id
        """,
        published_only,
    )
    return [dict(r) for r in rows]


# --- articles -------------------------------------------------------------------------------


async def upsert_article(conn: Conn, a: Article, at: datetime) -> None:
    """Write the article's row; a new text-search configuration joins kb_search_configs."""
    shown = a.presented
    config = ts_config_for(shown.language)
    row = await conn.fetchrow(
        """
        INSERT INTO kb_articles (article_id, state, title, body, category_id, language, ts_config,
            tags, latest_revision, published_revision, published_at, created_at, updated_at,
            version)
        VALUES ($1, $2, $3, $4, $5, $6,
            coalesce((SELECT oid::regconfig FROM pg_ts_config WHERE cfgname = $7),
                     'simple'::regconfig),
            $8, $9, $10, CASE WHEN $2 = 'published' THEN $11::timestamptz END, $11, $11, $12)
        ON CONFLICT (article_id) DO UPDATE SET state = EXCLUDED.state, title = EXCLUDED.title,
            body = EXCLUDED.body, category_id = EXCLUDED.category_id,
            language = EXCLUDED.language, ts_config = EXCLUDED.ts_config, tags = EXCLUDED.tags,
            latest_revision = EXCLUDED.latest_revision,
            published_revision = EXCLUDED.published_revision,
            published_at = CASE
                WHEN EXCLUDED.state <> 'published' THEN NULL
                WHEN kb_articles.published_revision IS DISTINCT FROM EXCLUDED.published_revision
                    OR kb_articles.state <> 'published' THEN EXCLUDED.updated_at
                ELSE kb_articles.published_at END,
            updated_at = EXCLUDED.updated_at, version = EXCLUDED.version
        RETURNING ts_config
        """,
        a.id,
        a.state,
        shown.title,
        shown.body,
        shown.category_id,
        shown.language,
        config,
        list(shown.tags),
        a.latest_revision,
        a.published_revision,
        at,
        a.version,
    )
    assert row is not None
    await conn.execute(
        "INSERT INTO kb_search_configs (ts_config) VALUES ($1::regconfig) ON CONFLICT DO NOTHING",
        str(row["ts_config"]),
    )


async def insert_revision(
    conn: Conn, a: Article, number: int, author: str | None, at: datetime
) -> None:
    r = a.revisions[number]
    await conn.execute(
        """
        INSERT INTO kb_article_revisions (article_id, revision, title, body, category_id,
            language, tags, note, author, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        """,
        a.id,
        number,
        r.title,
        r.body,
        r.category_id,
        r.language,
        list(r.tags),
        r.note,
        author,
        at,
    )


async def revisions(conn: Conn, article_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT revision, title, category_id, language, tags, note, author, created_at"
        " FROM kb_article_revisions WHERE article_id = $1 ORDER BY revision",
        article_id,
    )
    return [dict(r) for r in rows]


async def revision_times(conn: Conn, article_id: str) -> dict[int, tuple[datetime, str | None]]:
    rows = await conn.fetch(
        "SELECT revision, created_at, author FROM kb_article_revisions WHERE article_id = $1",
        article_id,
    )
    return {r["revision"]: (r["created_at"], r["author"]) for r in rows}


async def article_row(conn: Conn, article_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT article_id, state, title, body, category_id, language, tags, latest_revision,"
        " published_revision, published_at, helpful_count, not_helpful_count, created_at,"
        " updated_at, version FROM kb_articles WHERE article_id = $1",
        article_id,
    )
    return dict(row) if row else None


LIST_COLUMNS = (
    "article_id, state, title, category_id, language, tags, latest_revision, published_revision,"
    " published_at, helpful_count, not_helpful_count, created_at, updated_at, version"
)


def _filters(
    params: list[Any],
    *,
    states: Sequence[str],
    category_ids: Sequence[str] | None,
    language: str | None,
    tag: str | None,
    alias: str = "",
) -> list[str]:
    p = f"{alias}." if alias else ""
    params.append(list(states))
    where = [f"{p}state = ANY(${len(params)}::text[])"]
    if category_ids is not None:
        params.append(list(category_ids))
        where.append(f"{p}category_id = ANY(${len(params)}::text[])")
    if language:
        params.append(language)
        n = len(params)
        # "pt" finds pt and pt-BR; "pt-BR" only pt-BR.
        where.append(f"({p}language = ${n} OR split_part({p}language, '-', 1) = ${n})")
    if tag:
        params.append(tag.strip().lower())
        where.append(f"${len(params)} = ANY({p}tags)")
    return where


async def list_articles(
    conn: Conn,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    states: Sequence[str],
    category_ids: Sequence[str] | None,
    language: str | None,
    tag: str | None,
) -> list[dict[str, Any]]:
    params: list[Any] = [after[0] if after else None, after[1] if after else None]
    where = ["($1::timestamptz IS NULL OR (created_at, article_id) < ($1, $2))"]
    where += _filters(params, states=states, category_ids=category_ids, language=language, tag=tag)
    params.append(limit)
    rows = await conn.fetch(
        f"SELECT {LIST_COLUMNS} FROM kb_articles WHERE {' AND '.join(where)}"
        f" ORDER BY created_at DESC, article_id DESC LIMIT ${len(params)}",
        *params,
    )
    return [dict(r) for r in rows]


@dataclass(frozen=True)
class SearchAfter:
    rank: float
    article_id: str


def search_sql(
    text: str,
    *,
    mode: QueryMode = "web",
    limit: int,
    after: SearchAfter | None = None,
    states: Sequence[str] = ("published",),
    category_ids: Sequence[str] | None = None,
    language: str | None = None,
    tag: str | None = None,
    exclude: Sequence[str] = (),
    snippets: bool = True,
) -> tuple[str, list[Any]]:
    """The statement and parameters of a search: articles matching ``text``, best first
    (rank, then id), after the cursor.

    ``mode="web"``: the search-box syntax of ``websearch_to_tsquery`` (all words, "phrases",
    ``or``, ``-word``); ``mode="any"``: any of the words (suggestions for a ticket's text).
    ``language`` narrows to articles in it and to its configuration alone.
    """
    params: list[Any] = [text, ts_config_for(language) if language else None]
    to_query = (
        "websearch_to_tsquery(c.ts_config, $1)"
        if mode == "web"
        else "kb_any_tsquery(c.ts_config, $1)"
    )
    where = _filters(
        params,
        states=states,
        category_ids=category_ids,
        language=language,
        tag=tag,
        alias="a",
    )
    if exclude:
        params.append(list(exclude))
        where.append(f"NOT (a.article_id = ANY(${len(params)}::text[]))")
    page_where = ""
    if after is not None:
        params += [after.rank, after.article_id]
        r, i = len(params) - 1, len(params)
        page_where = f"WHERE h.rank < ${r} OR (h.rank = ${r} AND h.article_id > ${i})"
    params.append(limit)
    # The marks are Markdown's bold; the body's own bold is left out (see snippet_sql), so
    # "When **payment** fails" is not marked as "When ****payment****", and 2**3 stays.
    snippet = snippet_sql("h.ts_config", "a.body", "h.query") if snippets else "NULL::text"
    # One probe per configuration (LATERAL + OFFSET 0 keep it a nested loop, so each probe can
    # use the GIN index); bodies are read for the snippets of the page only.
    sql = f"""
        WITH q AS MATERIALIZED (
            SELECT c.ts_config, {to_query} AS query
            FROM kb_search_configs c
            WHERE $2::text IS NULL OR c.ts_config::text = $2::text
        ), h AS (
            SELECT m.* FROM q CROSS JOIN LATERAL (
                SELECT a.article_id, a.ts_config, q.query,
                       ts_rank_cd(a.search, q.query)::float8 AS rank
                FROM kb_articles a
                WHERE a.ts_config = q.ts_config AND a.search @@ q.query
                  AND {" AND ".join(where)}
                OFFSET 0
            ) m
        ), page AS (
            SELECT * FROM h
            {page_where}
            ORDER BY h.rank DESC, h.article_id
            LIMIT ${len(params)}
        )
        SELECT a.article_id, a.state, a.title, a.category_id, a.language, a.tags,
               a.published_revision, a.latest_revision, a.helpful_count, a.not_helpful_count,
               a.updated_at, a.version, h.rank, {snippet} AS snippet
        FROM page h JOIN kb_articles a ON a.article_id = h.article_id
        ORDER BY h.rank DESC, h.article_id
    """
    return sql, params


async def search(conn: Conn, text: str, **options: Any) -> list[dict[str, Any]]:
    """Run ``search_sql(text, **options)``."""
    sql, params = search_sql(text, **options)
    return [dict(r) for r in await conn.fetch(sql, *params)]


# --- links and feedback ---------------------------------------------------------------------


async def insert_link(
    conn: Conn, article_id: str, ticket_id: str, revision: int, by: str | None, at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO kb_links (article_id, ticket_id, revision, linked_by, linked_at)"
        " VALUES ($1, $2, $3, $4, $5)",
        article_id,
        ticket_id,
        revision,
        by,
        at,
    )


async def delete_link(conn: Conn, article_id: str, ticket_id: str) -> None:
    await conn.execute(
        "DELETE FROM kb_links WHERE article_id = $1 AND ticket_id = $2", article_id, ticket_id
    )


async def links_of_ticket(conn: Conn, ticket_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """
        SELECT l.article_id, l.ticket_id, l.revision, l.linked_by, l.linked_at,
               a.title, a.state
        FROM kb_links l JOIN kb_articles a USING (article_id)
        WHERE l.ticket_id = $1 ORDER BY l.linked_at, l.article_id
        """,
        ticket_id,
    )
    return [dict(r) for r in rows]


async def insert_feedback(
    conn: Conn,
    *,
    article_id: str,
    voter: str,
    helped: bool,
    revision: int,
    channel: str,
    customer_id: str | None,
    ticket_id: str | None,
    comment: str | None,
    at: datetime,
) -> tuple[int, int]:
    """Record one voter's feedback and count it; returns (helpful, not helpful)."""
    await conn.execute(
        """
        INSERT INTO kb_feedback (article_id, voter, helped, revision, channel, customer_id,
                                 ticket_id, comment, given_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        """,
        article_id,
        voter,
        helped,
        revision,
        channel,
        customer_id,
        ticket_id,
        comment,
        at,
    )
    row = await conn.fetchrow(
        """
        UPDATE kb_articles SET helpful_count = helpful_count + (CASE WHEN $2 THEN 1 ELSE 0 END),
            not_helpful_count = not_helpful_count + (CASE WHEN $2 THEN 0 ELSE 1 END)
        WHERE article_id = $1 RETURNING helpful_count, not_helpful_count
        """,
        article_id,
        helped,
    )
    assert row is not None
    return int(row["helpful_count"]), int(row["not_helpful_count"])


# --- tickets (SD-A's read model) ------------------------------------------------------------


@dataclass(frozen=True)
class TicketRef:
    ticket_id: str
    customer_id: str | None
    subject: str
    language: str | None


async def ticket(conn: Conn, ticket_id: str) -> TicketRef | None:
    """The ticket's customer, subject and language from the ``tickets`` read model."""
    row = await conn.fetchrow(
        "SELECT ticket_id, customer_id, subject, language FROM tickets WHERE ticket_id = $1",
        ticket_id,
    )
    if row is None:
        return None
    return TicketRef(row["ticket_id"], row["customer_id"], row["subject"], row["language"])


async def category_descendants(conn: Conn, category_id: str) -> list[str]:
    """``category_id`` and every category below it."""
    rows = await conn.fetch(
        """
        WITH RECURSIVE down(category_id, depth) AS (
            SELECT category_id, 0 FROM kb_categories WHERE category_id = $1
            UNION ALL
            SELECT c.category_id, down.depth + 1
            FROM kb_categories c JOIN down ON c.parent_id = down.category_id
            WHERE down.depth < 50
        )
        SELECT DISTINCT category_id FROM down
        """,
        category_id,
    )
    return [r["category_id"] for r in rows]


async def links_of_article_page(
    conn: Conn, article_id: str, *, limit: int, after: tuple[datetime, str] | None
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """
        SELECT article_id, ticket_id, revision, linked_by, linked_at FROM kb_links
        WHERE article_id = $1 AND ($2::timestamptz IS NULL OR (linked_at, ticket_id) > ($2, $3))
        ORDER BY linked_at, ticket_id LIMIT $4
        """,
        article_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [dict(r) for r in rows]
