"""/imports: CSV upload of contacts and leads.

The body is the CSV file itself (``Content-Type: text/csv``), streamed to a spooled temporary
file (memory up to 1 MiB, then disk) with a size limit, then imported in batches by
``crm_sales.application.importer`` (the same validation, events and duplicate guard as
POST /contacts and POST /leads). A processed file answers 200 with the report, whatever it found:
the rows imported, and every rejected row and duplicate with its line number (header = line 1).
A header that cannot be used (unknown or missing columns) is a 422 and nothing is imported.
"""

from __future__ import annotations

import tempfile
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from crm_runtime.errors import Forbidden
from crm_runtime.http.app import CtxDep
from crm_runtime.http.auth import Principal
from crm_runtime.http.commands import metadata_for
from crm_runtime.http.problems import problem
from crm_sales.application.importer import Kind, import_csv
from crm_sales.entrypoints.api.common import SalesUser

imports_router = APIRouter(prefix="/imports", tags=["import"])

MAX_UPLOAD_BYTES = 32 * 1024 * 1024  # about 200,000 contact rows
_IN_MEMORY = 1024 * 1024  # the spooled file moves to disk beyond this
CSV_MEDIA_TYPES = frozenset({"text/csv", "application/csv", "text/plain"})


class RowErrorOut(BaseModel):
    line: int = Field(description="line of the file (the header is line 1)")
    field: str = Field(description="the column at fault; empty: the whole row")
    reason: str


class DuplicateOut(BaseModel):
    line: int
    email: str | None = Field(description="the e-mail that matched; null: an identical row")
    existing_id: str = Field(description="the record that exists already")
    existing: str = Field(description="its path: /contacts/{id} or /leads/{id}")
    first_line: int | None = Field(
        description="the line of this file the existing record was imported from, if it was"
    )


class ImportReportOut(BaseModel):
    kind: Literal["contacts", "leads"]
    rows: int = Field(description="data rows read (blank lines are skipped)")
    imported: int
    rejected: int = Field(description="rows with errors (none of them was imported)")
    duplicated: int = Field(description="rows skipped as duplicates")
    complete: bool = Field(description="every row was imported")
    aborted: bool = Field(description="the header was unusable; nothing was read")
    errors: list[RowErrorOut]
    duplicates: list[DuplicateOut]
    issues_truncated: bool = Field(description="more than 10,000 errors and duplicates")
    seconds: float
    rows_per_second: float


_CONTACTS_CSV = (
    "first_name,last_name,email,phone,title,tags,address.city,address.country\n"
    "Ada,Lovelace,ada@example.com,+44 20 7946 0000,CTO,vip;newsletter,London,GB\n"
    "Grace,,grace@example,+1 555 0100,,,,\n"
)
_LEADS_CSV = (
    "name,email,phone,company,source_detail,region\n"
    "Ada Lovelace,ada@example.com,+44 20 7946 0000,Analytical Engines Ltd,fair-2026,EMEA\n"
    "Alan Turing,,,,,\n"
)
_REPORT_EXAMPLE = {
    "kind": "contacts",
    "rows": 2,
    "imported": 1,
    "rejected": 1,
    "duplicated": 0,
    "complete": False,
    "aborted": False,
    "errors": [
        {"line": 3, "field": "last_name", "reason": "required; the cell is empty"},
        {
            "line": 3,
            "field": "email",
            "reason": "value is not a valid email address: The part after the @-sign is not "
            "valid. It should have a period.",
        },
    ],
    "duplicates": [],
    "issues_truncated": False,
    "seconds": 0.012,
    "rows_per_second": 166.7,
}


def _openapi(example: str, columns: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": f"The CSV file, UTF-8, header on line 1. Columns: {columns}",
            "content": {
                "text/csv": {
                    "schema": {"type": "string", "format": "binary"},
                    "example": example,
                }
            },
        }
    }


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file was processed: the report (rows imported, errors, duplicates)",
        "content": {"application/json": {"example": _REPORT_EXAMPLE}},
    },
    413: {"description": f"the file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB"},
    415: {"description": "not a CSV body (send the file as the body, Content-Type: text/csv)"},
    422: {"description": "the header is unusable (unknown or missing columns): nothing imported"},
}


def _owner(user: Principal, owner_id: str | None, default: str | None) -> str | None:
    if owner_id is not None and not user.has("sales_manager") and owner_id != user.user_id:
        raise Forbidden("a sales rep imports records for itself; ask a manager to assign")
    return owner_id if owner_id is not None else default


def _refusal(request: Request) -> JSONResponse | None:
    """The problem response for a body that is not a CSV file or is too large, if it is."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in CSV_MEDIA_TYPES:
        return problem(
            415,
            "send the CSV file as the request body with Content-Type: text/csv "
            "(e.g. curl --data-binary @contacts.csv -H 'Content-Type: text/csv' ...)",
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        return _too_large()
    return None


def _too_large() -> JSONResponse:
    return problem(413, f"the file is larger than {MAX_UPLOAD_BYTES:,} bytes; split it into parts")


async def _spool(request: Request, into: tempfile.SpooledTemporaryFile[bytes]) -> bool:
    """Copy the body into ``into``; False if it is larger than the limit."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_UPLOAD_BYTES:
            return False
        into.write(chunk)
    into.seek(0)
    return True


async def _import(
    request: Request,
    ctx: CtxDep,
    user: Principal,
    kind: Kind,
    owner_id: str | None,
    team_id: str | None,
) -> JSONResponse:
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    with tempfile.SpooledTemporaryFile(max_size=_IN_MEMORY) as spooled:
        if not await _spool(request, spooled):
            return _too_large()
        report = await import_csv(
            ctx.pool,
            ctx.store,
            kind,
            spooled,
            meta=metadata_for(user),
            owner_id=owner_id,
            team_id=team_id,
        )
    body = ImportReportOut.model_validate(report.as_dict()).model_dump(mode="json")
    if report.aborted:
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in body["errors"])
        return problem(422, f"the header is not usable: {detail}", errors=body["errors"])
    return JSONResponse(body)


OwnerQuery = Annotated[
    str | None,
    Query(max_length=100, description="owner of every imported record (managers; reps: self)"),
]


@imports_router.post(
    "/contacts",
    max_body_size=MAX_UPLOAD_BYTES,  # the import's own limit (the API's is 4 MiB)
    response_model=ImportReportOut,
    summary="Import contacts from a CSV file",
    description="Every row is checked as POST /contacts checks a body; good rows are imported "
    "(in batches of 1,000 per transaction), bad rows and duplicates (by e-mail, within the file "
    "and against existing contacts; rows without e-mail by their whole content) are reported "
    "with their line numbers. Importing the same file again imports nothing new. Lists (email, "
    "phone, tags, social_profiles) are separated by ';'. Owner: the caller unless a manager "
    "names one; team: the caller's.",
    responses=_RESPONSES,
    openapi_extra=_openapi(
        _CONTACTS_CSV,
        "first_name, last_name (required), email, phone, title, account_id, region, industry, "
        "tags, social_profiles, address.street|city|region|postal_code|country, custom.<key>",
    ),
)
async def import_contacts(
    request: Request, ctx: CtxDep, user: SalesUser, owner_id: OwnerQuery = None
) -> JSONResponse:
    owner = _owner(user, owner_id, user.user_id)
    return await _import(request, ctx, user, "contacts", owner, user.team)


@imports_router.post(
    "/leads",
    max_body_size=MAX_UPLOAD_BYTES,  # the import's own limit (the API's is 4 MiB)
    response_model=ImportReportOut,
    summary="Import leads from a CSV file",
    description="Every row is checked as POST /leads checks a body and captured with source "
    "`import`; bad rows and duplicates (an open lead or a contact with the e-mail, or an earlier "
    "row of the file; rows without e-mail by their whole content) are reported with their line "
    "numbers. "
    "Owner: a rep's own leads; a manager's are routed by the assignment rules unless it names "
    "an owner; team: the caller's.",
    responses=_RESPONSES,
    openapi_extra=_openapi(_LEADS_CSV, "name (required), email, phone, company, source_detail"),
)
async def import_leads(
    request: Request, ctx: CtxDep, user: SalesUser, owner_id: OwnerQuery = None
) -> JSONResponse:
    default = None if user.has("sales_manager") else user.user_id
    owner = _owner(user, owner_id, default)
    return await _import(request, ctx, user, "leads", owner, user.team)
