"""Marketer API of the website integration: site keys, forms, submissions, activity."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from crm_events.schemas.marketing import FormConsent, FormField
from crm_marketing.access import Marketer
from crm_marketing.api_common import (
    HistoryEntry,
    IdempotencyKey,
    IfMatch,
    after_of,
    history,
    next_cursor,
)
from crm_marketing.audience.routes import ActivityOut, activity_out
from crm_marketing.web.application import WebAdmin
from crm_marketing.web.domain import Form, SiteKey
from crm_runtime.db import Conn
from crm_runtime.http.app import CtxDep
from crm_runtime.http.commands import (
    CommandResult,
    etag,
    expected_version,
    metadata_for,
    run_command,
)
from crm_runtime.http.inputs import ClientTime, Name, NotBlank
from crm_runtime.http.pagination import Page
from crm_runtime.repository import Repository

keys_router = APIRouter(prefix="/site-keys", tags=["website"])
forms_router = APIRouter(prefix="/forms", tags=["website"])
activity_router = APIRouter(prefix="/web", tags=["website"])

Origin = Annotated[str, Field(min_length=8, max_length=300)]


class FormFieldIn(FormField):
    """A form field as a client sends it (the event's ``FormField``, its label and choices
    checked)."""

    label: Annotated[str, Field(min_length=1, max_length=200), NotBlank]
    choices: list[Annotated[str, Field(min_length=1, max_length=200), NotBlank]] = []


class FormConsentIn(FormConsent):
    """A consent checkbox as a client sends it (the event's ``FormConsent``, label checked)."""

    label: Annotated[str, Field(min_length=1, max_length=500), NotBlank]


def _fields(fields: list[FormFieldIn] | None) -> list[FormField] | None:
    return None if fields is None else [FormField(**f.model_dump()) for f in fields]


def _consents(consents: list[FormConsentIn] | None) -> list[FormConsent] | None:
    return None if consents is None else [FormConsent(**c.model_dump()) for c in consents]


class SiteKeyIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "shop",
                    "allowed_origins": ["https://shop.example.com"],
                    "rate_limit_per_minute": 120,
                }
            ]
        },
    )
    name: Name
    allowed_origins: list[Origin] = Field(min_length=1, max_length=50)
    rate_limit_per_minute: int = Field(default=120, ge=1, le=100_000)


class SiteKeyPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    allowed_origins: list[Origin] | None = Field(default=None, min_length=1, max_length=50)
    rate_limit_per_minute: int | None = Field(default=None, ge=1, le=100_000)


class RevokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=200)


class SiteKeyOut(BaseModel):
    site_key_id: str = Field(description="the public key a site's script sends as ?key=")
    name: str
    allowed_origins: list[str]
    rate_limit_per_minute: int
    revoked: bool
    version: int

    @classmethod
    def of(cls, k: SiteKey) -> SiteKeyOut:
        return cls(
            site_key_id=k.id,
            name=k.name,
            allowed_origins=k.allowed_origins,
            rate_limit_per_minute=k.rate_limit_per_minute,
            revoked=k.revoked,
            version=k.version,
        )


class FormIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "site_key_id": "pk_…",
                    "name": "Newsletter",
                    "fields": [
                        {
                            "name": "email",
                            "label": "E-mail",
                            "type": "email",
                            "required": True,
                            "maps_to": "email",
                        },
                        {"name": "first_name", "label": "First name", "maps_to": "first_name"},
                    ],
                    "consents": [
                        {"field": "newsletter", "channel": "email", "label": "Send me news"}
                    ],
                }
            ]
        },
    )
    site_key_id: str = Field(min_length=1, max_length=100)
    name: Name
    fields: list[FormFieldIn] = Field(min_length=1, max_length=50)
    consents: list[FormConsentIn] = Field(default=[], max_length=3)
    honeypot_field: str = Field(default="website", pattern=r"^[a-z][a-z0-9_]{0,39}$")


class FormPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    fields: list[FormFieldIn] | None = Field(default=None, min_length=1, max_length=50)
    consents: list[FormConsentIn] | None = Field(default=None, max_length=3)
    honeypot_field: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,39}$")


class FormOut(BaseModel):
    form_id: str
    site_key_id: str
    name: str
    fields: list[FormField]
    consents: list[FormConsent]
    honeypot_field: str
    archived: bool
    version: int
    submit_url: str = Field(description="where the site posts (add ?key=<site key>)")

    @classmethod
    def of(cls, f: Form) -> FormOut:
        return cls(
            form_id=f.id,
            site_key_id=f.site_key_id,
            name=f.name,
            fields=f.fields,
            consents=f.consents,
            honeypot_field=f.honeypot_field,
            archived=f.archived,
            version=f.version,
            submit_url=f"/public/forms/{f.id}/submissions",
        )


class FormSummary(BaseModel):
    form_id: str
    site_key_id: str
    name: str
    archived: bool
    created_at: datetime


class SubmissionOut(BaseModel):
    submission_id: str
    customer_id: str
    visitor_id: str | None
    new_person: bool
    submitted_at: datetime


def _key_result(k: SiteKey, status: int = 200) -> CommandResult:
    return CommandResult(
        status, SiteKeyOut.of(k), {"ETag": etag(k.version), "Location": f"/site-keys/{k.id}"}
    )


def _form_result(f: Form, status: int = 200) -> CommandResult:
    return CommandResult(
        status, FormOut.of(f), {"ETag": etag(f.version), "Location": f"/forms/{f.id}"}
    )


# --- site keys ----------------------------------------------------------------------------------


@keys_router.post("", status_code=201, response_model=SiteKeyOut, summary="Create a site key")
async def create_key(
    body: SiteKeyIn, ctx: CtxDep, user: Marketer, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    admin = WebAdmin(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        key = await admin.create_key(
            conn, body.name, body.allowed_origins, body.rate_limit_per_minute, metadata_for(user)
        )
        return _key_result(key, 201)

    return await run_command(ctx, user, idempotency_key, body.model_dump(), command)


@keys_router.get("", response_model=Page[SiteKeyOut], summary="List site keys, newest first")
async def list_keys(
    ctx: CtxDep,
    user: Marketer,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    revoked: bool | None = None,
) -> Page[SiteKeyOut]:
    after = after_of(cursor)
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM site_keys WHERE ($1::timestamptz IS NULL OR (created_at, site_key_id)"
            " < ($1, $2)) AND ($3::bool IS NULL OR revoked = $3)"
            " ORDER BY created_at DESC, site_key_id DESC LIMIT $4",
            after[0] if after else None,
            after[1] if after else None,
            revoked,
            limit + 1,
        )
    found = [dict(r) for r in rows]
    return Page(
        items=[
            SiteKeyOut(
                **{k: r[k] for k in SiteKeyOut.model_fields if k != "allowed_origins"},
                allowed_origins=list(r["allowed_origins"]),
            )
            for r in found[:limit]
        ],
        next_cursor=next_cursor(found, limit, "created_at", "site_key_id"),
    )


@keys_router.get("/{site_key_id}", response_model=SiteKeyOut, summary="A site key")
async def get_key(
    site_key_id: str, ctx: CtxDep, user: Marketer, as_of: ClientTime | None = None
) -> JSONResponse:
    key = await Repository(ctx.store, SiteKey).load(site_key_id, as_of=as_of)
    return JSONResponse(SiteKeyOut.of(key).model_dump(), headers={"ETag": etag(key.version)})


@keys_router.get("/{site_key_id}/history", response_model=list[HistoryEntry], summary="Its events")
async def key_history(site_key_id: str, ctx: CtxDep, user: Marketer) -> list[HistoryEntry]:
    return history(await Repository(ctx.store, SiteKey).history(site_key_id))


@keys_router.patch("/{site_key_id}", response_model=SiteKeyOut, summary="Change a site key")
async def patch_key(
    site_key_id: str, body: SiteKeyPatch, ctx: CtxDep, user: Marketer, if_match: IfMatch = None
) -> JSONResponse:
    admin = WebAdmin(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        key = await admin.change_key(
            conn,
            site_key_id,
            metadata_for(user),
            expected_version=expected_version(if_match),
            name=body.name,
            origins=body.allowed_origins,
            rate=body.rate_limit_per_minute,
        )
        return _key_result(key)

    return await run_command(ctx, user, None, None, command)


@keys_router.post(
    "/{site_key_id}/revoke", response_model=SiteKeyOut, summary="Revoke: it admits nothing more"
)
async def revoke_key(
    site_key_id: str, body: RevokeIn, ctx: CtxDep, user: Marketer, if_match: IfMatch = None
) -> JSONResponse:
    admin = WebAdmin(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        key = await admin.change_key(
            conn,
            site_key_id,
            metadata_for(user),
            expected_version=expected_version(if_match),
            revoke=True,
            reason=body.reason,
        )
        return _key_result(key)

    return await run_command(ctx, user, None, None, command)


# --- forms --------------------------------------------------------------------------------------


@forms_router.post("", status_code=201, response_model=FormOut, summary="Define a web form")
async def create_form(
    body: FormIn, ctx: CtxDep, user: Marketer, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    admin = WebAdmin(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        form = await admin.create_form(
            conn,
            body.site_key_id,
            body.name,
            _fields(body.fields) or [],
            _consents(body.consents) or [],
            body.honeypot_field,
            metadata_for(user),
        )
        return _form_result(form, 201)

    return await run_command(ctx, user, idempotency_key, body.model_dump(mode="json"), command)


@forms_router.get("", response_model=Page[FormSummary], summary="List forms, newest first")
async def list_forms(
    ctx: CtxDep,
    user: Marketer,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    site_key_id: str | None = None,
    archived: bool | None = None,
) -> Page[FormSummary]:
    after = after_of(cursor)
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM forms WHERE ($1::timestamptz IS NULL OR (created_at, form_id)"
            " < ($1, $2)) AND ($3::text IS NULL OR site_key_id = $3)"
            " AND ($4::bool IS NULL OR archived = $4)"
            " ORDER BY created_at DESC, form_id DESC LIMIT $5",
            after[0] if after else None,
            after[1] if after else None,
            site_key_id,
            archived,
            limit + 1,
        )
    found = [dict(r) for r in rows]
    return Page(
        items=[FormSummary(**{k: r[k] for k in FormSummary.model_fields}) for r in found[:limit]],
        next_cursor=next_cursor(found, limit, "created_at", "form_id"),
    )


@forms_router.get("/{form_id}", response_model=FormOut, summary="A form (also as of a time)")
async def get_form(
    form_id: str, ctx: CtxDep, user: Marketer, as_of: ClientTime | None = None
) -> JSONResponse:
    form = await Repository(ctx.store, Form).load(form_id, as_of=as_of)
    return JSONResponse(
        FormOut.of(form).model_dump(mode="json"), headers={"ETag": etag(form.version)}
    )


@forms_router.get("/{form_id}/history", response_model=list[HistoryEntry], summary="Its events")
async def form_history(form_id: str, ctx: CtxDep, user: Marketer) -> list[HistoryEntry]:
    return history(await Repository(ctx.store, Form).history(form_id))


@forms_router.patch("/{form_id}", response_model=FormOut, summary="Change a form")
async def patch_form(
    form_id: str, body: FormPatch, ctx: CtxDep, user: Marketer, if_match: IfMatch = None
) -> JSONResponse:
    admin = WebAdmin(ctx.store)
    changes: dict[str, Any] = {
        "name": body.name,
        "fields": _fields(body.fields),
        "consents": _consents(body.consents),
        "honeypot_field": body.honeypot_field,
    }

    async def command(conn: Conn) -> CommandResult:
        form = await admin.change_form(
            conn,
            form_id,
            metadata_for(user),
            expected_version=expected_version(if_match),
            **changes,
        )
        return _form_result(form)

    return await run_command(ctx, user, None, None, command)


@forms_router.post("/{form_id}/archive", response_model=FormOut, summary="Stop taking submissions")
async def archive_form(
    form_id: str, ctx: CtxDep, user: Marketer, if_match: IfMatch = None
) -> JSONResponse:
    admin = WebAdmin(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        form = await admin.change_form(
            conn,
            form_id,
            metadata_for(user),
            expected_version=expected_version(if_match),
            archive=True,
        )
        return _form_result(form)

    return await run_command(ctx, user, None, None, command)


@forms_router.get(
    "/{form_id}/submissions", response_model=Page[SubmissionOut], summary="Its submissions"
)
async def list_submissions(
    form_id: str,
    ctx: CtxDep,
    user: Marketer,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Page[SubmissionOut]:
    after = after_of(cursor)
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM form_submissions WHERE form_id = $1 AND ($2::timestamptz IS NULL"
            " OR (submitted_at, submission_id) < ($2, $3))"
            " ORDER BY submitted_at DESC, submission_id DESC LIMIT $4",
            form_id,
            after[0] if after else None,
            after[1] if after else None,
            limit + 1,
        )
    found = [dict(r) for r in rows]
    return Page(
        items=[
            SubmissionOut(**{k: r[k] for k in SubmissionOut.model_fields}) for r in found[:limit]
        ],
        next_cursor=next_cursor(found, limit, "submitted_at", "submission_id"),
    )


# --- activity -----------------------------------------------------------------------------------


@activity_router.get(
    "/activity", response_model=Page[ActivityOut], summary="Website activity, newest first"
)
async def list_activity(
    ctx: CtxDep,
    user: Marketer,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    visitor_id: str | None = None,
    customer_id: str | None = None,
    kind: Literal["page_view", "product_view", "search", "add_to_cart"] | None = None,
    category: str | None = None,
    identified: bool | None = Query(default=None, description="only (un)identified visitors"),
) -> Page[ActivityOut]:
    after = after_of(cursor)
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM web_activity WHERE"
            " ($1::timestamptz IS NULL OR (occurred_at, event_id::text) < ($1, $2))"
            " AND ($3::text IS NULL OR visitor_id = $3) AND ($4::text IS NULL OR customer_id = $4)"
            " AND ($5::text IS NULL OR kind = $5) AND ($6::text IS NULL OR category = $6)"
            " AND ($7::bool IS NULL OR (customer_id IS NOT NULL) = $7)"
            " ORDER BY occurred_at DESC, event_id::text DESC LIMIT $8",
            after[0] if after else None,
            after[1] if after else None,
            visitor_id,
            customer_id,
            kind,
            category,
            identified,
            limit + 1,
        )
    found = [dict(r) for r in rows]
    return Page(
        items=[activity_out(r) for r in found[:limit]],
        next_cursor=next_cursor(found, limit, "occurred_at", "event_id"),
    )
