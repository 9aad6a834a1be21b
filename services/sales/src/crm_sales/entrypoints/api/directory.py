"""/contacts and /accounts: create (duplicates are a 409 naming the existing record), read (also
as of a time), history, list, change field by field, reassign, merge and undo a merge."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from crm_events.schemas.sales import CustomFieldDefinition, CustomFieldType
from crm_runtime.db import Conn
from crm_runtime.errors import Forbidden, InvalidInput, NotFound
from crm_runtime.http.app import CtxDep
from crm_runtime.http.auth import Principal
from crm_runtime.http.commands import (
    CommandResult,
    etag,
    expected_version,
    metadata_for,
    run_command,
)
from crm_runtime.http.inputs import NotBlank
from crm_runtime.http.pagination import Page
from crm_runtime.http.params import Instant
from crm_runtime.http.routing import CommandRoute
from crm_runtime.repository import Repository
from crm_sales import access
from crm_sales.adapters import listing
from crm_sales.application.directory import AccountHandlers, ContactHandlers, custom_fields
from crm_sales.domain.account import Account
from crm_sales.domain.contact import Contact
from crm_sales.domain.custom_fields import CustomFields
from crm_sales.entrypoints.api.common import (
    DirectoryReader,
    IdempotencyKey,
    IfMatch,
    Manager,
    SalesUser,
    after_of,
    history,
    list_item,
    next_cursor,
)
from crm_sales.entrypoints.api.schemas import (
    AccountCreate,
    AccountFields,
    AccountPublic,
    ContactCreate,
    ContactFields,
    ContactPublic,
    HistoryEntry,
    MergeRequest,
    MergeResult,
    Reassign,
    UndoResult,
)

CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "a duplicate (names the existing record) or a merged record"}
}
contacts_router = APIRouter(prefix="/contacts", tags=["contacts"], route_class=CommandRoute)
accounts_router = APIRouter(prefix="/accounts", tags=["accounts"], route_class=CommandRoute)


def contact_out(c: Contact) -> dict[str, Any]:
    body = ContactPublic.model_validate(
        {
            **c.details,
            "id": c.id,
            "customer_id": c.customer_id,
            "owner_id": c.owner_id,
            "team_id": c.team_id,
            "merged_into": c.merged_into,
            "active_merges": sorted(c.merges),
            "version": c.version,
            "display_name": c.display_name,
            "lead_id": c.lead_id,
        }
    )
    return body.model_dump(mode="json")


def account_out(a: Account) -> dict[str, Any]:
    body = AccountPublic.model_validate(
        {
            **a.details,
            "id": a.id,
            "customer_id": a.customer_id,
            "owner_id": a.owner_id,
            "team_id": a.team_id,
            "merged_into": a.merged_into,
            "active_merges": sorted(a.merges),
            "version": a.version,
            "lead_id": a.lead_id,
        }
    )
    return body.model_dump(mode="json")


def _result(body: dict[str, Any], version: int, location: str, status: int = 200) -> CommandResult:
    return CommandResult(status, body, {"ETag": etag(version), "Location": location})


def _owner_for_new(user: Principal, owner_id: str | None) -> str | None:
    if owner_id is not None and not user.has("sales_manager") and owner_id != user.user_id:
        raise Forbidden("a sales rep creates records for itself; ask a manager to assign")
    return owner_id if owner_id is not None else user.user_id


# --- contacts -------------------------------------------------------------------------------


@contacts_router.post(
    "",
    status_code=201,
    response_model=ContactPublic,
    summary="Create a contact",
    responses=CONFLICT,
)
async def create_contact(
    body: ContactCreate, ctx: CtxDep, user: SalesUser, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    owner = _owner_for_new(user, body.owner_id)
    details = ContactFields.model_validate(body.model_dump(exclude={"owner_id"})).details()
    handlers = ContactHandlers(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        c = await handlers.create(
            conn, details, metadata_for(user), owner_id=owner, team_id=user.team
        )
        return _result(contact_out(c), c.version, f"/contacts/{c.id}", 201)

    return await run_command(ctx, user, idempotency_key, body.model_dump(mode="json"), command)


@contacts_router.get("", response_model=Page[dict[str, Any]], summary="List contacts")
async def list_contacts(
    ctx: CtxDep,
    user: DirectoryReader,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    q: Annotated[
        str | None,
        Query(max_length=100, description="in the name, an e-mail address or a phone number"),
    ] = None,
    tag: str | None = None,
    account_id: str | None = None,
    owner_id: str | None = None,
) -> Page[dict[str, Any]]:
    async with ctx.pool.acquire() as conn:
        rows = await listing.list_visible(
            conn,
            "contacts",
            limit=limit + 1,
            after=after_of(cursor),
            see_all=access.sees_all(user, "contact"),
            unassigned="sales_manager" in user.roles,
            user_id=user.user_id,
            team=user.team,
            filters={"tag": tag, "account_id": account_id, "owner_id": owner_id},
            search=q,
        )
    items = [_row(r, "contact_id") for r in rows[:limit]]
    return Page[dict[str, Any]](items=items, next_cursor=next_cursor(rows, limit, "contact_id"))


def _row(r: dict[str, Any], key: str) -> dict[str, Any]:
    out = list_item(r, key)
    details = out["details"]
    out["details"] = json.loads(details) if isinstance(details, str) else details
    return out


# --- accounts -------------------------------------------------------------------------------


@accounts_router.post(
    "",
    status_code=201,
    response_model=AccountPublic,
    summary="Create an account",
    responses=CONFLICT,
)
async def create_account(
    body: AccountCreate, ctx: CtxDep, user: SalesUser, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    owner = _owner_for_new(user, body.owner_id)
    details = AccountFields.model_validate(body.model_dump(exclude={"owner_id"})).details()
    handlers = AccountHandlers(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        a = await handlers.create(
            conn, details, metadata_for(user), owner_id=owner, team_id=user.team
        )
        return _result(account_out(a), a.version, f"/accounts/{a.id}", 201)

    return await run_command(ctx, user, idempotency_key, body.model_dump(mode="json"), command)


@accounts_router.get("", response_model=Page[dict[str, Any]], summary="List accounts")
async def list_accounts(
    ctx: CtxDep,
    user: DirectoryReader,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    q: Annotated[str | None, Query(max_length=100, description="in the name or the domain")] = None,
    tag: str | None = None,
    tier: str | None = None,
    owner_id: str | None = None,
) -> Page[dict[str, Any]]:
    async with ctx.pool.acquire() as conn:
        rows = await listing.list_visible(
            conn,
            "accounts",
            limit=limit + 1,
            after=after_of(cursor),
            see_all=access.sees_all(user, "account"),
            unassigned="sales_manager" in user.roles,
            user_id=user.user_id,
            team=user.team,
            filters={"tag": tag, "tier": tier, "owner_id": owner_id},
            search=q,
        )
    items = [_row(r, "account_id") for r in rows[:limit]]
    return Page[dict[str, Any]](items=items, next_cursor=next_cursor(rows, limit, "account_id"))


# --- read, history, change, reassign, merge, undo: the same for contacts and accounts ----------


def _party_routes(
    router: APIRouter,
    kind: Literal["contact", "account"],
    handlers_of: Callable[[Any], Any],  # ContactHandlers or AccountHandlers
    out: Callable[[Any], dict[str, Any]],
    fields_model: type[ContactFields] | type[AccountFields],
    public_model: type[ContactPublic] | type[AccountPublic],
    required: str,
) -> None:
    plural = f"{kind}s"

    async def load(handlers: Any, record_id: str, as_of: datetime | None = None) -> Any:
        try:
            return await handlers.repo.load(record_id, as_of=as_of)
        except NotFound:
            when = f" as of {as_of}" if as_of else ""
            raise NotFound(f"{kind} {record_id} does not exist{when}") from None

    def may_change(user: Principal, record: Any) -> None:
        access.check_change(user, kind, record.owner_id, record.team_id)

    async def read(
        record_id: str,
        ctx: CtxDep,
        user: DirectoryReader,
        response: Response,
        as_of: Annotated[Instant | None, Query(description="ISO 8601 time with zone")] = None,
    ) -> dict[str, Any]:
        record = await load(handlers_of(ctx.store), record_id, as_of)
        access.check_read(user, kind, record.owner_id, record.team_id)
        response.headers["ETag"] = etag(record.version)
        return out(record)

    async def events(record_id: str, ctx: CtxDep, user: DirectoryReader) -> list[HistoryEntry]:
        handlers = handlers_of(ctx.store)
        record = await load(handlers, record_id)
        access.check_read(user, kind, record.owner_id, record.team_id)
        return history(await handlers.repo.history(record_id))

    async def change(
        record_id: str, body: Any, ctx: CtxDep, user: SalesUser, if_match: IfMatch = None
    ) -> JSONResponse:
        handlers = handlers_of(ctx.store)
        may_change(user, await load(handlers, record_id))
        fields = sorted(body.model_fields_set)
        if required in fields and getattr(body, required) is None:
            raise InvalidInput(required, f"a {kind} needs a {required.replace('_', ' ')}")

        async def command(conn: Conn) -> CommandResult:
            updated = await handlers.update(
                conn,
                record_id,
                body.details(),
                fields,
                metadata_for(user),
                expected_version(if_match),
                authorize=lambda r: may_change(user, r),
            )
            return _result(out(updated), updated.version, f"/{plural}/{record_id}")

        return await run_command(ctx, user, None, None, command)

    change.__annotations__["body"] = fields_model  # a real class: FastAPI reads the body from it

    async def reassign(
        record_id: str, body: Reassign, ctx: CtxDep, user: SalesUser, if_match: IfMatch = None
    ) -> JSONResponse:
        handlers = handlers_of(ctx.store)

        async def command(conn: Conn) -> CommandResult:
            record = await handlers.repo.load(record_id, conn=conn)
            may_change(user, record)
            team = body.team_id if body.team_id is not None else record.team_id
            record = await handlers.reassign(
                conn, record, body.owner_id, team, metadata_for(user), expected_version(if_match)
            )
            return _result(out(record), record.version, f"/{plural}/{record_id}")

        return await run_command(ctx, user, None, None, command)

    async def merge(
        record_id: str, body: MergeRequest, ctx: CtxDep, user: SalesUser
    ) -> JSONResponse:
        handlers = handlers_of(ctx.store)

        async def command(conn: Conn) -> CommandResult:
            survivor = await handlers.repo.load(record_id, conn=conn)
            try:
                merged = await handlers.repo.load(body.merged_id, conn=conn)
            except NotFound:
                raise NotFound(f"{kind} {body.merged_id} does not exist") from None
            for record in (survivor, merged):
                may_change(user, record)
            survivor, merge_id = await handlers.merge(conn, survivor, merged, metadata_for(user))
            return CommandResult(
                200,
                {"merge_id": merge_id, "survivor": out(survivor)},
                {"ETag": etag(survivor.version)},
            )

        return await run_command(ctx, user, None, None, command)

    async def undo(record_id: str, merge_id: str, ctx: CtxDep, user: SalesUser) -> JSONResponse:
        handlers = handlers_of(ctx.store)

        async def command(conn: Conn) -> CommandResult:
            survivor = await handlers.repo.load(record_id, conn=conn)
            may_change(user, survivor)
            survivor, restored = await handlers.undo_merge(
                conn, survivor, merge_id, metadata_for(user)
            )
            return CommandResult(200, {"survivor": out(survivor), "restored": out(restored)})

        return await run_command(ctx, user, None, None, command)

    router.add_api_route(
        "/{record_id}", read, methods=["GET"], response_model=public_model,
        summary=f"Read a {kind} (optionally as of a time)", name=f"get_{kind}",
    )  # fmt: skip
    router.add_api_route(
        "/{record_id}/history", events, methods=["GET"], response_model=list[HistoryEntry],
        summary=f"A {kind}'s events", name=f"{kind}_history",
    )  # fmt: skip
    router.add_api_route(
        "/{record_id}", change, methods=["PATCH"], response_model=public_model,
        summary=f"Change {kind} fields (only those sent; null clears)", name=f"patch_{kind}",
        responses={**CONFLICT, 412: {"description": "stale If-Match"}},
    )  # fmt: skip
    router.add_api_route(
        "/{record_id}/reassign", reassign, methods=["POST"], response_model=public_model,
        summary=f"Give the {kind} to another owner", name=f"reassign_{kind}",
    )  # fmt: skip
    router.add_api_route(
        "/{record_id}/merge", merge, methods=["POST"], response_model=MergeResult,
        summary=f"Merge another {kind} into this one (the one in the path survives)",
        name=f"merge_{plural}", responses=CONFLICT,
    )  # fmt: skip
    router.add_api_route(
        "/{record_id}/merges/{merge_id}/undo", undo, methods=["POST"], response_model=UndoResult,
        summary=f"Undo a merge: both {plural} come back, with what happened since",
        name=f"undo_{kind}_merge", responses=CONFLICT,
    )  # fmt: skip


_party_routes(
    contacts_router, "contact", ContactHandlers, contact_out, ContactFields, ContactPublic,
    "last_name",
)  # fmt: skip
_party_routes(
    accounts_router, "account", AccountHandlers, account_out, AccountFields, AccountPublic, "name"
)


# --- custom field definitions ---------------------------------------------------------------

fields_router = APIRouter(prefix="/custom-fields", tags=["custom fields"], route_class=CommandRoute)


FieldText = Annotated[str, Field(min_length=1, max_length=100), NotBlank]


class FieldIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"label": "Plan", "type": "choice", "choices": ["free", "pro", "enterprise"]},
                {"label": "Employees", "type": "integer"},
            ]
        },
    )

    label: FieldText
    type: CustomFieldType
    choices: list[FieldText] = Field(default_factory=list, max_length=200)


def _fields_out(defs: CustomFields) -> dict[str, Any]:
    return {
        "entity": defs.entity,
        "fields": [f.model_dump() for f in sorted(defs.fields.values(), key=lambda f: f.key)],
        "version": defs.version,
    }


@fields_router.get("/{entity}", summary="The custom fields of contacts or accounts")
async def list_fields(
    entity: Literal["contact", "account"], ctx: CtxDep, user: DirectoryReader
) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        return _fields_out(await custom_fields(ctx.store, conn, entity))


@fields_router.put(
    "/{entity}/{key}",
    summary="Define (or redefine) a typed custom field; values are checked against it",
)
async def put_field(
    entity: Literal["contact", "account"],
    key: Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,49}$")],
    body: FieldIn,
    ctx: CtxDep,
    user: Manager,
) -> JSONResponse:
    async def command(conn: Conn) -> CommandResult:
        defs = await custom_fields(ctx.store, conn, entity)
        defs.define(CustomFieldDefinition(key=key, **body.model_dump()))
        if defs.pending:
            await Repository(ctx.store, CustomFields).save(conn, defs, metadata_for(user))
        return CommandResult(200, _fields_out(defs), {"ETag": etag(defs.version)})

    return await run_command(ctx, user, None, None, command)


@fields_router.delete("/{entity}/{key}", summary="Remove a custom field definition")
async def delete_field(
    entity: Literal["contact", "account"], key: str, ctx: CtxDep, user: Manager
) -> JSONResponse:
    async def command(conn: Conn) -> CommandResult:
        defs = await custom_fields(ctx.store, conn, entity)
        defs.remove(key)
        await Repository(ctx.store, CustomFields).save(conn, defs, metadata_for(user))
        return CommandResult(200, _fields_out(defs), {"ETag": etag(defs.version)})

    return await run_command(ctx, user, None, None, command)
