"""The /templates resource: create, list, read (as of), history, revise, archive, revisions,
the allowed variables, and preview with a sample customer or sample values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from crm_events.schemas.marketing_segments import TemplateContent
from crm_marketing.access import Marketer
from crm_marketing.api_common import (
    HistoryEntry,
    IdempotencyKey,
    IfMatch,
    after_of,
    history,
    next_cursor,
)
from crm_marketing.templates import adapters
from crm_marketing.templates.api import RenderedMessage, render_content
from crm_marketing.templates.application import (
    CreateTemplate,
    ReviseTemplate,
    TemplateHandlers,
)
from crm_marketing.templates.domain import Template
from crm_marketing.templates.rendering import SAMPLE, VARIABLES
from crm_runtime.db import Conn
from crm_runtime.errors import InvalidInput, NotFound
from crm_runtime.http.app import CtxDep
from crm_runtime.http.commands import (
    CommandResult,
    etag,
    expected_version,
    metadata_for,
    run_command,
)
from crm_runtime.http.inputs import ClientTime, Name
from crm_runtime.http.pagination import Page

router = APIRouter(prefix="/templates", tags=["templates"])

Source = Annotated[str | None, Field(default=None, max_length=200_000)]


class ContentIn(BaseModel):
    """Jinja2 source per part. E-mail: subject, html (autoescaped), optional text (derived
    from the HTML when absent); SMS: text; push: title, body."""

    model_config = ConfigDict(extra="forbid")

    subject: Source = None
    html: Source = None
    text: Source = None
    title: Source = None
    body: Source = None

    def to_content(self) -> TemplateContent:
        return TemplateContent(**self.model_dump())


class TemplateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    channel: Literal["email", "sms", "push"]
    content: ContentIn


class TemplatePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    content: ContentIn | None = None


class TemplatePublic(BaseModel):
    id: str
    name: str
    channel: Literal["email", "sms", "push"]
    status: Literal["active", "archived"]
    revision: int
    content: dict[str, str | None]
    version: int
    created_at: datetime | None = None
    updated_at: datetime | None = None


class RevisionOut(BaseModel):
    revision: int
    name: str
    content: dict[str, str | None]
    created_by: str | None
    created_at: datetime


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str | None = Field(
        default=None, max_length=100, description="render with this customer's profile"
    )
    variables: dict[str, str | None] = Field(
        default_factory=dict,
        description="values to use (over the customer's, or over the built-in sample values);"
        " full_name follows first_name/last_name given here unless it is given too",
    )
    revision: int | None = Field(default=None, ge=1, description="default: the current one")


class PreviewOut(BaseModel):
    template_id: str
    revision: int
    channel: Literal["email", "sms", "push"]
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    title: str | None = None
    body: str | None = None
    sms_encoding: str | None = None
    sms_segments: int | None = None
    warnings: list[str] = Field(default_factory=list)
    variables: dict[str, Any]

    @classmethod
    def of(cls, r: RenderedMessage, variables: dict[str, Any]) -> PreviewOut:
        return cls(
            template_id=r.template_id,
            revision=r.revision,
            channel=r.channel,
            subject=r.subject,
            html=r.html,
            text=r.text,
            title=r.title,
            body=r.body,
            sms_encoding=r.sms_encoding,
            sms_segments=r.sms_segments,
            warnings=list(r.warnings),
            variables=variables,
        )


class VariableOut(BaseModel):
    name: str
    description: str
    sample: str


def _public(t: Template, row: dict[str, Any] | None) -> TemplatePublic:
    return TemplatePublic(
        id=t.id,
        name=t.name,
        channel=t.channel,
        status="archived" if t.archived else "active",
        revision=t.revision,
        content=t.content.model_dump(),
        version=t.version,
        created_at=row["created_at"] if row else None,
        updated_at=row["updated_at"] if row else None,
    )


async def _respond(conn: Conn, t: Template, status: int = 200) -> CommandResult:
    row = await adapters.get(conn, t.id)
    return CommandResult(
        status, _public(t, row), {"ETag": etag(t.version), "Location": f"/templates/{t.id}"}
    )


def _now() -> datetime:
    return datetime.now(UTC)


@router.get(
    "/variables",
    response_model=list[VariableOut],
    summary="The personalisation variables a template may use",
)
async def variables(user: Marketer) -> list[VariableOut]:
    return [VariableOut(name=k, description=v, sample=SAMPLE[k]) for k, v in VARIABLES.items()]


@router.post(
    "",
    status_code=201,
    response_model=TemplatePublic,
    summary="Create a template (checked now: syntax, variables, safety, channel limits)",
    responses={422: {"description": "names content.<part> and why (e.g. an unknown variable)"}},
)
async def create_template(
    body: TemplateCreate, ctx: CtxDep, user: Marketer, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    cmd = CreateTemplate(name=body.name, channel=body.channel, content=body.content.to_content())
    handlers = TemplateHandlers(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        return await _respond(
            conn, await handlers.create(conn, cmd, metadata_for(user), _now()), 201
        )

    return await run_command(ctx, user, idempotency_key, body.model_dump(mode="json"), command)


@router.get("", response_model=Page[TemplatePublic], summary="List templates, newest first")
async def list_templates(
    ctx: CtxDep,
    user: Marketer,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    channel: Literal["email", "sms", "push"] | None = None,
    status: Literal["active", "archived"] | None = None,
    q: Annotated[str | None, Query(max_length=200, description="name contains")] = None,
) -> Page[TemplatePublic]:
    async with ctx.pool.acquire() as conn:
        rows = await adapters.list_templates(
            conn, limit=limit + 1, after=after_of(cursor), channel=channel, status=status, q=q
        )
    items = [
        TemplatePublic(
            id=r["template_id"],
            name=r["name"],
            channel=r["channel"],
            status=r["status"],
            revision=r["revision"],
            content=r["content"],
            version=r["version"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
        )
        for r in rows[:limit]
    ]
    return Page[TemplatePublic](
        items=items, next_cursor=next_cursor(rows, limit, "created_at", "template_id")
    )


@router.get(
    "/{template_id}",
    response_model=TemplatePublic,
    summary="Read a template (optionally as of a time)",
)
async def get_template(
    template_id: str,
    ctx: CtxDep,
    user: Marketer,
    response: Response,
    as_of: Annotated[ClientTime | None, Query(description="ISO 8601 time with zone")] = None,
) -> TemplatePublic:
    template = await TemplateHandlers(ctx.store).templates.load(template_id, as_of=as_of)
    row = None
    if as_of is None:
        async with ctx.pool.acquire() as conn:
            row = await adapters.get(conn, template_id)
    response.headers["ETag"] = etag(template.version)
    return _public(template, row)


@router.get(
    "/{template_id}/history", response_model=list[HistoryEntry], summary="A template's events"
)
async def template_history(template_id: str, ctx: CtxDep, user: Marketer) -> list[HistoryEntry]:
    return history(await TemplateHandlers(ctx.store).templates.history(template_id))


@router.patch(
    "/{template_id}",
    response_model=TemplatePublic,
    summary="Revise a template (new content or name makes a new revision)",
    responses={409: {"description": "archived"}, 412: {"description": "stale If-Match"}},
)
async def patch_template(
    template_id: str, body: TemplatePatch, ctx: CtxDep, user: Marketer, if_match: IfMatch = None
) -> JSONResponse:
    cmd = ReviseTemplate(
        template_id=template_id,
        name=body.name,
        content=body.content.to_content() if body.content is not None else None,
        expected_version=expected_version(if_match),
    )
    handlers = TemplateHandlers(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        return await _respond(conn, await handlers.revise(conn, cmd, metadata_for(user), _now()))

    return await run_command(ctx, user, None, None, command)


@router.post("/{template_id}/archive", response_model=TemplatePublic, summary="Archive a template")
async def archive_template(
    template_id: str, ctx: CtxDep, user: Marketer, if_match: IfMatch = None
) -> JSONResponse:
    handlers = TemplateHandlers(ctx.store)
    expected = expected_version(if_match)

    async def command(conn: Conn) -> CommandResult:
        t = await handlers.archive(conn, template_id, expected, metadata_for(user), _now())
        return await _respond(conn, t)

    return await run_command(ctx, user, None, None, command)


@router.get(
    "/{template_id}/revisions",
    response_model=list[RevisionOut],
    summary="Every revision of a template, newest first",
)
async def list_revisions(template_id: str, ctx: CtxDep, user: Marketer) -> list[RevisionOut]:
    async with ctx.pool.acquire() as conn:
        if await adapters.get(conn, template_id) is None:
            raise NotFound(f"template {template_id} does not exist")
        rows = await adapters.revisions(conn, template_id)
    return [
        RevisionOut(
            revision=r["revision"],
            name=r["name"],
            content=r["content"],
            created_by=r["created_by"],
            created_at=r["created_at"],
        )
        for r in rows
    ]


@router.post(
    "/{template_id}/preview",
    response_model=PreviewOut,
    summary="Render with a customer's profile or sample values (nothing is sent or saved)",
    responses={
        404: {"description": "no such template, revision or customer"},
        422: {"description": "an unknown variable, or the rendering breaks a limit"},
    },
)
async def preview(template_id: str, body: PreviewIn, ctx: CtxDep, user: Marketer) -> PreviewOut:
    unknown = sorted(body.variables.keys() - VARIABLES.keys())
    if unknown:
        raise InvalidInput(f"variables.{unknown[0]}", "is not a template variable")
    async with ctx.pool.acquire() as conn:
        row = (
            await adapters.get(conn, template_id)
            if body.revision is None
            else await adapters.get_revision(conn, template_id, body.revision)
        )
        if row is None:
            what = f"template {template_id}" + (
                f" revision {body.revision}" if body.revision else ""
            )
            raise NotFound(f"{what} does not exist")
        values: dict[str, Any] = dict(SAMPLE)
        if body.customer_id is not None:
            from crm_marketing.audience.api import profile_variables

            found = await profile_variables(conn, body.customer_id)
            exists = await conn.fetchval(
                "SELECT true FROM profiles WHERE customer_id = $1", found["customer_id"]
            )
            if not exists:
                raise NotFound(f"customer {body.customer_id} has no marketing profile")
            values.update({k: v for k, v in found.items() if k in VARIABLES})
        values.update(body.variables)
    if "full_name" not in body.variables and body.variables.keys() & {"first_name", "last_name"}:
        # derived as for a profile (audience.api.profile_variables): it follows the overrides
        names = [str(values[k]) for k in ("first_name", "last_name") if values.get(k)]
        values["full_name"] = " ".join(names) or None
    rendered = render_content(template_id, row["revision"], row["channel"], row["content"], values)
    return PreviewOut.of(rendered, values)
