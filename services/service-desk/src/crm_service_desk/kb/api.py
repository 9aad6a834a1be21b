"""/kb (knowledge base), /tickets/{id}/suggested-articles and /kb/public (no token).

Who may do what: service agents, service managers and admins write (articles, categories,
links, feedback links) and read drafts, archived articles, revisions and history; every other
role reads published articles only. Without a token, ``/kb/public`` reads and searches published
articles and takes feedback through a signed link.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from crm_runtime.context import ServiceContext
from crm_runtime.db import Conn
from crm_runtime.errors import Conflict, Forbidden, InvalidInput, NotFound
from crm_runtime.eventstore import Metadata, StoredEvent
from crm_runtime.http.app import CtxDep
from crm_runtime.http.auth import ROLES, Principal, require
from crm_runtime.http.commands import (
    CommandResult,
    etag,
    expected_version,
    metadata_for,
    run_command,
)
from crm_runtime.http.inputs import ClientTime
from crm_runtime.http.pagination import decode_cursor, encode_cursor
from crm_runtime.http.ratelimit import limit_per_client
from crm_runtime.logs import correlation_id
from crm_service_desk.config import DeskSettings
from crm_service_desk.kb import tokens, views
from crm_service_desk.kb.domain import Article, Category, Revision, Voter, normalise_language
from crm_service_desk.kb.handlers import KbHandlers
from crm_service_desk.kb.schemas import (
    ArchiveIn,
    ArticleCreate,
    ArticleOut,
    ArticlePage,
    ArticlePatch,
    ArticleSummary,
    CategoryCreate,
    CategoryOut,
    CategoryPage,
    CategoryPatch,
    FeedbackIn,
    FeedbackLinkIn,
    FeedbackLinkOut,
    FeedbackOut,
    HistoryEntry,
    LinkIn,
    LinkOut,
    LinkPage,
    PublicArticle,
    PublicFeedbackIn,
    PublishIn,
    RevisionOut,
    SearchHit,
    SearchPage,
    State,
)

STAFF = ("service_agent", "service_manager")
CLOCK = "kb_clock"  # ctx.extras key: a callable returning the current time (tests)

Staff = Annotated[Principal, Depends(require(*STAFF))]
Reader = Annotated[Principal, Depends(require(*sorted(ROLES)))]
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", description="retry-safe creation")
]
IfMatch = Annotated[
    str | None, Header(alias="If-Match", description="the ETag (version) your change is based on")
]
AsOf = Annotated[
    ClientTime | None, Query(description="ISO 8601 time with zone: the record as it was then")
]
Limit = Annotated[int, Query(ge=1, le=100)]
LanguageQ = Annotated[
    str | None,
    Query(
        pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$",
        description="only articles in this language ('pt' takes pt-BR too)",
    ),
]
SearchText = Annotated[
    str,
    Query(
        min_length=1,
        max_length=500,
        description='search-box syntax: words (all must match), "a phrase", or, -word',
    ),
]

router = APIRouter(prefix="/kb", tags=["knowledge base"])
tickets_router = APIRouter(prefix="/tickets", tags=["knowledge base"])
# Public (no token): a flood from one client is cut off at 300 requests a minute per process.
public_router = APIRouter(
    prefix="/kb/public",
    tags=["knowledge base (public)"],
    dependencies=[Depends(limit_per_client(300))],
    responses={429: {"description": "too many requests from this client; see Retry-After"}},
)

PUBLIC = Principal("kb-public", frozenset())


def is_staff(user: Principal) -> bool:
    return user.has(*STAFF)


def _handlers(ctx: ServiceContext) -> KbHandlers:
    clock = ctx.extras.get(CLOCK)
    return KbHandlers(ctx.store, clock) if callable(clock) else KbHandlers(ctx.store)


def _history(events: list[StoredEvent]) -> list[HistoryEntry]:
    return [
        HistoryEntry(
            version=e.version,
            event_id=str(e.event_id),
            type=e.type,
            schema_version=e.schema_version,
            occurred_at=e.occurred_at,
            recorded_at=e.recorded_at,
            actor=e.metadata.get("actor"),
            correlation_id=e.metadata.get("correlation_id"),
            data=e.data,
        )
        for e in events
    ]


def _language(value: str | None, field: str = "language") -> str | None:
    return None if value is None else normalise_language(value, field)


# --- categories -----------------------------------------------------------------------------


def category_out(c: Category) -> dict[str, Any]:
    return CategoryOut(
        id=c.id, name=c.name, description=c.description, parent_id=c.parent_id, version=c.version
    ).model_dump(mode="json")


async def _category(
    handlers: KbHandlers,
    category_id: str,
    *,
    as_of: datetime | None = None,
    conn: Conn | None = None,
) -> Category:
    try:
        return await handlers.categories.load(category_id, as_of=as_of, conn=conn)
    except NotFound:
        when = f" as of {as_of}" if as_of else ""
        raise NotFound(f"category {category_id} does not exist{when}") from None


def _category_result(c: Category, status: int = 200) -> CommandResult:
    headers = {"ETag": etag(c.version), "Location": f"/kb/categories/{c.id}"}
    return CommandResult(status, category_out(c), headers)


@router.post(
    "/categories",
    status_code=201,
    response_model=CategoryOut,
    summary="Create a category (optionally inside another)",
    responses={409: {"description": "a category of that name exists at that level"}},
)
async def create_category(
    body: CategoryCreate, ctx: CtxDep, user: Staff, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    handlers = _handlers(ctx)

    async def command(conn: Conn) -> CommandResult:
        c = await handlers.create_category(
            conn, body.name, body.description, body.parent_id, metadata_for(user)
        )
        return _category_result(c, 201)

    return await run_command(ctx, user, idempotency_key, body.model_dump(mode="json"), command)


@router.get(
    "/categories",
    response_model=CategoryPage,
    summary="All categories by name, with how many articles you can read in each",
)
async def list_categories(ctx: CtxDep, user: Reader) -> CategoryPage:
    async with ctx.pool.acquire() as conn:
        rows = await views.list_categories(conn, published_only=not is_staff(user))
    return CategoryPage(
        items=[
            CategoryOut(
                id=r["category_id"],
                name=r["name"],
                description=r["description"],
                parent_id=r["parent_id"],
                version=r["version"],
                article_count=r["article_count"],
            )
            for r in rows
        ]
    )


@router.get("/categories/{category_id}", response_model=CategoryOut, summary="Read a category")
async def get_category(
    category_id: str, ctx: CtxDep, user: Reader, response: Response, as_of: AsOf = None
) -> dict[str, Any]:
    c = await _category(_handlers(ctx), category_id, as_of=as_of)
    response.headers["ETag"] = etag(c.version)
    return category_out(c)


@router.get(
    "/categories/{category_id}/history",
    response_model=list[HistoryEntry],
    summary="A category's events",
)
async def category_history(category_id: str, ctx: CtxDep, user: Staff) -> list[HistoryEntry]:
    handlers = _handlers(ctx)
    await _category(handlers, category_id)
    return _history(await handlers.categories.history(category_id))


@router.patch(
    "/categories/{category_id}",
    response_model=CategoryOut,
    summary="Rename a category, change its description or move it",
    responses={409: {"description": "the new name is taken at that level"}},
)
async def patch_category(
    category_id: str, body: CategoryPatch, ctx: CtxDep, user: Staff, if_match: IfMatch = None
) -> JSONResponse:
    handlers = _handlers(ctx)
    values = body.model_dump(exclude_unset=True)

    async def command(conn: Conn) -> CommandResult:
        c = await _category(handlers, category_id, conn=conn)
        c = await handlers.update_category(
            conn, c, values, metadata_for(user), expected_version(if_match)
        )
        return _category_result(c)

    return await run_command(ctx, user, None, None, command)


# --- articles -------------------------------------------------------------------------------


async def _article(
    handlers: KbHandlers,
    article_id: str,
    user: Principal,
    *,
    as_of: datetime | None = None,
    conn: Conn | None = None,
) -> Article:
    """The article; for anyone but staff a draft or archived one does not exist (``as_of``: it
    must be published both then and now)."""
    when = f" as of {as_of}" if as_of else ""
    try:
        a = await handlers.articles.load(article_id, as_of=as_of, conn=conn)
    except NotFound:
        raise NotFound(f"article {article_id} does not exist{when}") from None
    if not is_staff(user) and a.state != "published":
        raise NotFound(f"article {article_id} does not exist{when}")
    if not is_staff(user) and as_of is not None:
        # a look into the past shows only what is still published now: an article taken down
        # (archived) since then stays down for everyone but staff
        now = await handlers.articles.load(article_id, conn=conn)
        if now.state != "published":
            raise NotFound(f"article {article_id} does not exist{when}")
    return a


def article_out(a: Article, shown: Revision, counts: dict[str, Any] | None) -> dict[str, Any]:
    return ArticleOut(
        id=a.id,
        state=a.state,
        revision=shown.number,
        title=shown.title,
        body=shown.body,
        category_id=shown.category_id,
        language=shown.language,
        tags=list(shown.tags),
        latest_revision=a.latest_revision,
        published_revision=a.published_revision,
        has_unpublished_changes=a.has_unpublished_changes,
        archive_reason=a.archive_reason,
        helpful_count=counts["helpful_count"] if counts else None,
        not_helpful_count=counts["not_helpful_count"] if counts else None,
        version=a.version,
    ).model_dump(mode="json")


async def _article_result(conn: Conn, a: Article, status: int = 200) -> CommandResult:
    counts = await views.article_row(conn, a.id)
    headers = {"ETag": etag(a.version), "Location": f"/kb/articles/{a.id}"}
    return CommandResult(status, article_out(a, a.latest, counts), headers)


@router.post(
    "/articles",
    status_code=201,
    response_model=ArticleOut,
    summary="Write an article: its revision 1, a draft unless `publish` is true",
)
async def create_article(
    body: ArticleCreate, ctx: CtxDep, user: Staff, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    handlers = _handlers(ctx)
    values = body.model_dump(exclude={"publish"})

    async def command(conn: Conn) -> CommandResult:
        a = await handlers.create_article(conn, values, metadata_for(user), publish=body.publish)
        return await _article_result(conn, a, 201)

    return await run_command(ctx, user, idempotency_key, body.model_dump(mode="json"), command)


def _after_time(cursor: str | None) -> tuple[datetime, str] | None:
    after = decode_cursor(cursor)
    if after is None:
        return None
    try:
        return datetime.fromisoformat(str(after["t"])), str(after["id"])
    except (KeyError, ValueError):
        raise InvalidInput("cursor", "is not a cursor returned by this list") from None


async def _categories_filter(conn: Conn, category_id: str | None) -> list[str] | None:
    return None if category_id is None else await views.category_descendants(conn, category_id)


def _states(user: Principal, state: State | None, *, default: tuple[str, ...]) -> list[str]:
    if not is_staff(user):
        if state not in (None, "published"):
            raise Forbidden("only service staff see draft and archived articles")
        return ["published"]
    return [state] if state else list(default)


@router.get(
    "/articles",
    response_model=ArticlePage,
    summary="List articles, newest first",
    description="Staff see drafts and published articles (`state=archived` for the archive); "
    "everyone else published ones. `category_id` takes its subcategories too.",
)
async def list_articles(
    ctx: CtxDep,
    user: Reader,
    state: State | None = None,
    category_id: str | None = None,
    language: LanguageQ = None,
    tag: str | None = Query(default=None, max_length=50),
    cursor: str | None = None,
    limit: Limit = 50,
) -> ArticlePage:
    states = _states(user, state, default=("draft", "published"))
    after = _after_time(cursor)
    async with ctx.pool.acquire() as conn:
        rows = await views.list_articles(
            conn,
            limit=limit + 1,
            after=after,
            states=states,
            category_ids=await _categories_filter(conn, category_id),
            language=_language(language),
            tag=tag,
        )
    items = [
        ArticleSummary(
            id=r["article_id"],
            state=r["state"],
            title=r["title"],
            category_id=r["category_id"],
            language=r["language"],
            tags=list(r["tags"]),
            latest_revision=r["latest_revision"],
            published_revision=r["published_revision"],
            helpful_count=r["helpful_count"],
            not_helpful_count=r["not_helpful_count"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            version=r["version"],
        )
        for r in rows[:limit]
    ]
    nxt = None
    if len(rows) > limit:
        last = rows[limit - 1]
        nxt = encode_cursor({"t": last["created_at"].isoformat(), "id": last["article_id"]})
    return ArticlePage(items=items, next_cursor=nxt)


def _hits(rows: list[dict[str, Any]]) -> list[SearchHit]:
    return [
        SearchHit(
            id=r["article_id"],
            state=r["state"],
            title=r["title"],
            snippet=r["snippet"],
            category_id=r["category_id"],
            language=r["language"],
            tags=list(r["tags"]),
            rank=r["rank"],
            published_revision=r["published_revision"],
            helpful_count=r["helpful_count"],
            not_helpful_count=r["not_helpful_count"],
            updated_at=r["updated_at"],
        )
        for r in rows
    ]


async def _search(
    ctx: ServiceContext,
    q: str,
    *,
    states: list[str],
    language: str | None,
    category_id: str | None,
    tag: str | None,
    cursor: str | None,
    limit: int,
) -> SearchPage:
    if not q.strip():
        raise InvalidInput("q", "must contain a word to search for")
    after = None
    if (c := decode_cursor(cursor)) is not None:
        try:
            after = views.SearchAfter(float(c["r"]), str(c["id"]))
        except (KeyError, TypeError, ValueError):
            raise InvalidInput("cursor", "is not a cursor returned by this search") from None
    async with ctx.pool.acquire() as conn:
        rows = await views.search(
            conn,
            q,
            limit=limit + 1,
            after=after,
            states=states,
            category_ids=await _categories_filter(conn, category_id),
            language=_language(language),
            tag=tag,
        )
    nxt = None
    if len(rows) > limit:
        last = rows[limit - 1]
        nxt = encode_cursor({"r": last["rank"], "id": last["article_id"]})
    return SearchPage(items=_hits(rows[:limit]), next_cursor=nxt)


@router.get(
    "/search",
    response_model=SearchPage,
    summary="Full-text search, best match first",
    description="PostgreSQL text search in each article's language (stemming; 'simple' for "
    "languages without a configuration). Ranked by `ts_rank_cd`: a word in the title weighs "
    "more than in the body. Archived articles are never found; drafts only by staff asking "
    "`include_drafts=true`. Published articles are found by their published revision.",
)
async def search_articles(
    ctx: CtxDep,
    user: Reader,
    q: SearchText,
    language: LanguageQ = None,
    category_id: str | None = None,
    tag: str | None = Query(default=None, max_length=50),
    include_drafts: bool = False,
    cursor: str | None = None,
    limit: Limit = 20,
) -> SearchPage:
    if include_drafts and not is_staff(user):
        raise Forbidden("only service staff search drafts")
    states = ["published", "draft"] if include_drafts else ["published"]
    return await _search(
        ctx,
        q,
        states=states,
        language=language,
        category_id=category_id,
        tag=tag,
        cursor=cursor,
        limit=limit,
    )


async def _suggest(
    conn: Conn, text: str, language: str | None, limit: int, exclude: list[str]
) -> list[SearchHit]:
    rows = await views.search(
        conn, text, mode="any", limit=limit, language=language, exclude=exclude
    )
    if not rows and language is not None:  # nothing in the ticket's language: any language
        rows = await views.search(conn, text, mode="any", limit=limit, exclude=exclude)
    return _hits(rows)


@router.get(
    "/suggestions",
    response_model=SearchPage,
    summary="Published articles that may answer a text (e.g. a customer's message)",
    description="Matches any of the text's words (its first 64 distinct ones), ranked by "
    "`ts_rank_cd`: articles sharing more words, and in their titles, come first.",
)
async def suggestions(
    ctx: CtxDep,
    user: Reader,
    text: Annotated[str, Query(min_length=1, max_length=20_000)],
    language: LanguageQ = None,
    limit: Annotated[int, Query(ge=1, le=20)] = 5,
) -> SearchPage:
    async with ctx.pool.acquire() as conn:
        return SearchPage(items=await _suggest(conn, text, _language(language), limit, []))


@router.get("/articles/{article_id}", response_model=ArticleOut, summary="Read an article")
async def get_article(
    article_id: str, ctx: CtxDep, user: Reader, response: Response, as_of: AsOf = None
) -> dict[str, Any]:
    """Staff see the latest revision (drafts too); everyone else the published one."""
    a = await _article(_handlers(ctx), article_id, user, as_of=as_of)
    shown = a.latest if is_staff(user) else a.published
    assert shown is not None
    counts = None
    if as_of is None:
        async with ctx.pool.acquire() as conn:
            counts = await views.article_row(conn, article_id)
    response.headers["ETag"] = etag(a.version)
    return article_out(a, shown, counts)


@router.get(
    "/articles/{article_id}/history",
    response_model=list[HistoryEntry],
    summary="An article's events (every revision, publication, archiving)",
)
async def article_history(article_id: str, ctx: CtxDep, user: Staff) -> list[HistoryEntry]:
    handlers = _handlers(ctx)
    await _article(handlers, article_id, user)
    return _history(await handlers.articles.history(article_id))


@router.get(
    "/articles/{article_id}/revisions",
    response_model=list[RevisionOut],
    summary="An article's revisions, oldest first",
)
async def list_revisions(
    article_id: str, ctx: CtxDep, user: Staff, as_of: AsOf = None
) -> list[RevisionOut]:
    a = await _article(_handlers(ctx), article_id, user, as_of=as_of)
    async with ctx.pool.acquire() as conn:
        meta = await views.revision_times(conn, article_id)
    return [
        RevisionOut(
            revision=r.number,
            title=r.title,
            category_id=r.category_id,
            language=r.language,
            tags=list(r.tags),
            note=r.note,
            author=meta.get(r.number, (None, None))[1],
            created_at=meta[r.number][0],
            published=r.number == a.published_revision,
        )
        for r in sorted(a.revisions.values(), key=lambda r: r.number)
    ]


@router.get(
    "/articles/{article_id}/revisions/{revision}",
    response_model=ArticleOut,
    summary="One revision of an article",
)
async def get_revision(
    article_id: str, revision: int, ctx: CtxDep, user: Staff, response: Response
) -> dict[str, Any]:
    a = await _article(_handlers(ctx), article_id, user)
    if revision not in a.revisions:
        raise NotFound(f"article {article_id} has no revision {revision}")
    response.headers["ETag"] = etag(a.version)
    return article_out(a, a.revisions[revision], None)


@router.patch(
    "/articles/{article_id}",
    response_model=ArticleOut,
    summary="Edit an article: the fields sent make a new revision",
    description="The published revision stays what readers see until the new one is "
    "published (`publish: true`, or POST .../publish). Sending only unchanged values makes "
    "no revision.",
    responses={409: {"description": "the article is archived"}},
)
async def patch_article(
    article_id: str, body: ArticlePatch, ctx: CtxDep, user: Staff, if_match: IfMatch = None
) -> JSONResponse:
    handlers = _handlers(ctx)
    values = body.model_dump(exclude_unset=True, exclude={"note", "publish"})
    for required in ("title", "body", "language", "tags"):
        if required in values and values[required] is None:
            raise InvalidInput(required, "cannot be cleared")

    async def command(conn: Conn) -> CommandResult:
        a = await _article(handlers, article_id, user, conn=conn)
        a = await handlers.revise_article(
            conn,
            a,
            values,
            body.note,
            metadata_for(user),
            expected_version(if_match),
            publish=body.publish,
        )
        return await _article_result(conn, a)

    return await run_command(ctx, user, None, None, command)


@router.post(
    "/articles/{article_id}/publish",
    response_model=ArticleOut,
    summary="Publish a revision (default the latest; an older one rolls back)",
    responses={409: {"description": "archived, or that revision is already published"}},
)
async def publish_article(
    article_id: str,
    ctx: CtxDep,
    user: Staff,
    body: PublishIn | None = None,
    if_match: IfMatch = None,
) -> JSONResponse:
    handlers = _handlers(ctx)

    async def command(conn: Conn) -> CommandResult:
        a = await _article(handlers, article_id, user, conn=conn)
        a = await handlers.publish(
            conn, a, body.revision if body else None, metadata_for(user), expected_version(if_match)
        )
        return await _article_result(conn, a)

    return await run_command(ctx, user, None, None, command)


@router.post(
    "/articles/{article_id}/archive",
    response_model=ArticleOut,
    summary="Take an article down: only staff can read it; never found by search",
    responses={409: {"description": "already archived"}},
)
async def archive_article(
    article_id: str,
    ctx: CtxDep,
    user: Staff,
    body: ArchiveIn | None = None,
    if_match: IfMatch = None,
) -> JSONResponse:
    handlers = _handlers(ctx)

    async def command(conn: Conn) -> CommandResult:
        a = await _article(handlers, article_id, user, conn=conn)
        a = await handlers.archive(
            conn, a, body.reason if body else None, metadata_for(user), expected_version(if_match)
        )
        return await _article_result(conn, a)

    return await run_command(ctx, user, None, None, command)


@router.post(
    "/articles/{article_id}/restore",
    response_model=ArticleOut,
    summary="Bring an archived article back as a draft",
    responses={409: {"description": "not archived"}},
)
async def restore_article(
    article_id: str, ctx: CtxDep, user: Staff, if_match: IfMatch = None
) -> JSONResponse:
    handlers = _handlers(ctx)

    async def command(conn: Conn) -> CommandResult:
        a = await _article(handlers, article_id, user, conn=conn)
        a = await handlers.restore(conn, a, metadata_for(user), expected_version(if_match))
        return await _article_result(conn, a)

    return await run_command(ctx, user, None, None, command)


# --- links ------------------------------------------------------------------------------------


def _link_out(r: dict[str, Any]) -> LinkOut:
    return LinkOut(
        article_id=r["article_id"],
        ticket_id=r["ticket_id"],
        revision=r["revision"],
        linked_by=r["linked_by"],
        linked_at=r["linked_at"],
        title=r.get("title"),
        state=r.get("state"),
    )


@router.post(
    "/articles/{article_id}/links",
    status_code=201,
    response_model=LinkOut,
    summary="Link a published article to a ticket",
    responses={
        404: {"description": "no such article or ticket"},
        409: {"description": "already linked, or the article is not published"},
    },
)
async def link_article(
    article_id: str,
    body: LinkIn,
    ctx: CtxDep,
    user: Staff,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    handlers = _handlers(ctx)

    async def command(conn: Conn) -> CommandResult:
        a = await _article(handlers, article_id, user, conn=conn)
        await handlers.link(conn, a, body.ticket_id, metadata_for(user))
        rows = await views.links_of_ticket(conn, body.ticket_id)
        row = next(r for r in rows if r["article_id"] == article_id)
        location = f"/kb/articles/{article_id}/links/{body.ticket_id}"
        return CommandResult(201, _link_out(row), {"Location": location})

    fingerprint = {"article_id": article_id, **body.model_dump(mode="json")}
    return await run_command(ctx, user, idempotency_key, fingerprint, command)


@router.delete(
    "/articles/{article_id}/links/{ticket_id}",
    status_code=204,
    summary="Remove the link between an article and a ticket",
    responses={404: {"description": "not linked"}},
)
async def unlink_article(article_id: str, ticket_id: str, ctx: CtxDep, user: Staff) -> Response:
    handlers = _handlers(ctx)
    async with ctx.pool.acquire() as conn, conn.transaction():
        await handlers.unlink(conn, article_id, ticket_id, metadata_for(user))
    return Response(status_code=204)


@router.get(
    "/articles/{article_id}/links",
    response_model=LinkPage,
    summary="The tickets an article is linked to, oldest link first",
)
async def article_links(
    article_id: str,
    ctx: CtxDep,
    user: Reader,
    cursor: str | None = None,
    limit: Limit = 50,
) -> LinkPage:
    await _article(_handlers(ctx), article_id, user)
    after = _after_time(cursor)
    async with ctx.pool.acquire() as conn:
        rows = await views.links_of_article_page(conn, article_id, limit=limit + 1, after=after)
    nxt = None
    if len(rows) > limit:
        last = rows[limit - 1]
        nxt = encode_cursor({"t": last["linked_at"].isoformat(), "id": last["ticket_id"]})
    return LinkPage(items=[_link_out(r) for r in rows[:limit]], next_cursor=nxt)


@tickets_router.get(
    "/{ticket_id}/kb-articles",
    response_model=list[LinkOut],
    summary="The knowledge-base articles linked to a ticket, in the order they were linked",
)
async def ticket_links(ticket_id: str, ctx: CtxDep, user: Reader) -> list[LinkOut]:
    async with ctx.pool.acquire() as conn:
        if await views.ticket(conn, ticket_id) is None:
            raise NotFound(f"ticket {ticket_id} does not exist")
        rows = await views.links_of_ticket(conn, ticket_id)
    return [_link_out(r) for r in rows]


async def _ticket_text(ctx: ServiceContext, ticket_id: str) -> str:
    """The ticket's subject and the description it was opened with (its opened event)."""
    for e in await ctx.store.read_stream(f"ticket-{ticket_id}"):
        if e.type == "crm.service.ticket.opened":
            return str(e.data.get("description") or "")
    return ""


@tickets_router.get(
    "/{ticket_id}/suggested-articles",
    response_model=SearchPage,
    summary="Published articles that may answer a ticket, from its subject and description",
    description="In the ticket's language when it has articles in it, else in any. Articles "
    "already linked to the ticket are left out.",
)
async def ticket_suggestions(
    ticket_id: str,
    ctx: CtxDep,
    user: Reader,
    limit: Annotated[int, Query(ge=1, le=20)] = 5,
) -> SearchPage:
    async with ctx.pool.acquire() as conn:
        ticket = await views.ticket(conn, ticket_id)
        if ticket is None:
            raise NotFound(f"ticket {ticket_id} does not exist")
        linked = [r["article_id"] for r in await views.links_of_ticket(conn, ticket_id)]
        text = f"{ticket.subject}\n{await _ticket_text(ctx, ticket_id)}"
        try:
            language = _language(ticket.language)
        except InvalidInput:
            language = None
        return SearchPage(items=await _suggest(conn, text, language, limit, linked))


# --- feedback -------------------------------------------------------------------------------


def _feedback_result(r: Any) -> CommandResult:
    return CommandResult(
        201,
        FeedbackOut(
            article_id=r.article_id,
            helped=r.helped,
            revision=r.revision,
            helpful_count=r.helpful_count,
            not_helpful_count=r.not_helpful_count,
        ),
    )


@router.post(
    "/articles/{article_id}/feedback",
    status_code=201,
    response_model=FeedbackOut,
    summary="Say whether a published article helped (yours, or a customer's by staff)",
    description="Counted once per user, or once per customer when staff give `customer_id`.",
    responses={409: {"description": "feedback already given, or the article is not published"}},
)
async def give_feedback(
    article_id: str,
    body: FeedbackIn,
    ctx: CtxDep,
    user: Reader,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    if body.customer_id is not None and not is_staff(user):
        raise Forbidden("only service staff record a customer's feedback")
    voter = (
        Voter("customer", body.customer_id, body.customer_id)
        if body.customer_id
        else Voter("user", user.user_id)
    )
    handlers = _handlers(ctx)

    async def command(conn: Conn) -> CommandResult:
        a = await _article(handlers, article_id, user, conn=conn)
        result = await handlers.give_feedback(
            conn,
            a,
            voter,
            body.helped,
            channel="api",
            ticket_id=body.ticket_id,
            comment=body.comment,
            meta=metadata_for(user),
        )
        return _feedback_result(result)

    fingerprint = {"article_id": article_id, **body.model_dump(mode="json")}
    return await run_command(ctx, user, idempotency_key, fingerprint, command)


def _desk(request: Request) -> DeskSettings:
    """The app's service-desk settings (``app.state.desk``), else from the environment."""
    desk = getattr(request.app.state, "desk", None)
    return desk if isinstance(desk, DeskSettings) else DeskSettings()


Desk = Annotated[DeskSettings, Depends(_desk)]


def _link_secret(ctx: ServiceContext, desk: DeskSettings) -> str:
    return desk.link_secret or ctx.settings.jwt_secret


@router.post(
    "/articles/{article_id}/feedback-links",
    status_code=201,
    response_model=FeedbackLinkOut,
    summary="A signed link a customer uses to say whether the article helped (no account)",
    responses={409: {"description": "the article is not published"}},
)
async def feedback_link(
    article_id: str, body: FeedbackLinkIn, ctx: CtxDep, user: Staff, desk: Desk
) -> FeedbackLinkOut:
    handlers = _handlers(ctx)
    async with ctx.pool.acquire() as conn:
        a = await _article(handlers, article_id, user, conn=conn)
        if a.state != "published":
            raise Conflict("feedback links are only made for a published article")
        customer_id = body.customer_id
        if customer_id is None and body.ticket_id is not None:
            customer_id = await handlers.ticket_customer(conn, body.ticket_id)
    expires = handlers.now() + timedelta(days=body.valid_days)
    token = tokens.sign(
        _link_secret(ctx, desk),
        article_id,
        customer_id=customer_id,
        ticket_id=body.ticket_id,
        expires_at=expires,
    )
    base = desk.public_base_url.rstrip("/")
    return FeedbackLinkOut(
        token=token,
        expires_at=expires.replace(microsecond=0),
        url=f"{base}/kb/public/articles/{article_id}/feedback",
    )


# --- public (no token) ----------------------------------------------------------------------


@public_router.get(
    "/articles/{article_id}",
    response_model=PublicArticle,
    summary="Read a published article (no token needed)",
)
async def public_article(article_id: str, ctx: CtxDep) -> PublicArticle:
    a = await _article(_handlers(ctx), article_id, PUBLIC)
    shown = a.published
    assert shown is not None
    async with ctx.pool.acquire() as conn:
        row = await views.article_row(conn, article_id)
    return PublicArticle(
        id=a.id,
        revision=shown.number,
        title=shown.title,
        body=shown.body,
        category_id=shown.category_id,
        language=shown.language,
        tags=list(shown.tags),
        published_at=row["published_at"] if row else None,
    )


@public_router.get(
    "/search",
    response_model=SearchPage,
    summary="Search published articles (no token needed)",
)
async def public_search(
    ctx: CtxDep,
    q: SearchText,
    language: LanguageQ = None,
    category_id: str | None = None,
    cursor: str | None = None,
    limit: Limit = 20,
) -> SearchPage:
    return await _search(
        ctx,
        q,
        states=["published"],
        language=language,
        category_id=category_id,
        tag=None,
        cursor=cursor,
        limit=limit,
    )


@public_router.post(
    "/articles/{article_id}/feedback",
    status_code=201,
    response_model=FeedbackOut,
    summary="A customer says whether the article helped, with the token of a feedback link",
    description="Counted once per customer the link names, else once per link.",
    responses={409: {"description": "feedback already given through this link or customer"}},
)
async def public_feedback(
    article_id: str, body: PublicFeedbackIn, ctx: CtxDep, desk: Desk
) -> JSONResponse:
    handlers = _handlers(ctx)
    claims = tokens.verify(_link_secret(ctx, desk), body.token, article_id, handlers.now())
    kind: Literal["customer", "token"] = "customer" if claims.customer_id else "token"
    voter = Voter(kind, claims.customer_id or claims.nonce, claims.customer_id)

    async def command(conn: Conn) -> CommandResult:
        a = await _article(handlers, article_id, PUBLIC, conn=conn)
        result = await handlers.give_feedback(
            conn,
            a,
            voter,
            body.helped,
            channel="signed_link",
            ticket_id=claims.ticket_id,
            comment=body.comment,
            meta=Metadata(actor=None, correlation_id=correlation_id.get()),
        )
        return _feedback_result(result)

    return await run_command(ctx, PUBLIC, None, None, command)


ROUTERS = [router, tickets_router, public_router]
