"""The /segments resource: define (rule or static list), preview, read, history, change,
archive, evaluate, members (list, add, remove, CSV import) and a streamed CSV export."""

from __future__ import annotations

import csv
import email.message
import email.parser
import email.policy
import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, PlainValidator
from pydantic_core import PydanticCustomError

from crm_marketing.access import Marketer
from crm_marketing.api_common import (
    HistoryEntry,
    IdempotencyKey,
    IfMatch,
    after_of,
    history,
    next_cursor,
)
from crm_marketing.segments import adapters, rules
from crm_marketing.segments.application import (
    ChangeSegment,
    DefineSegment,
    SegmentHandlers,
    load_rule,
    preview_count,
)
from crm_marketing.segments.domain import Segment
from crm_marketing.segments.membership import Evaluation
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
from crm_runtime.http.inputs import ClientTime, Name, NotBlank
from crm_runtime.http.pagination import Page, decode_cursor, encode_cursor
from crm_runtime.http.problems import problem

router = APIRouter(prefix="/segments", tags=["segments"])

_JSON_KINDS = ((bool, "a boolean"), (int, "a number"), (float, "a number"), (list, "an array"))


def _rule_input(value: object) -> str | dict[str, Any]:
    """A rule as text or as a JSON object, checked as one type so that an error names the field
    ``rule`` (pydantic's union would report one error per member: ``rule.str``,
    ``rule.dict[str,any]``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return value
    kind = next((name for t, name in _JSON_KINDS if isinstance(value, t)), type(value).__name__)
    raise PydanticCustomError(
        "rule_type",
        "must be the rule as text (a string) or in its JSON form (a JSON object), not {kind}",
        {"kind": kind},
    )


RuleInput = Annotated[
    str | dict[str, Any],
    PlainValidator(_rule_input, json_schema_input_type=str | dict[str, Any]),
    Field(
        description='the rule, as text (`country in [DE, AT] and product_view(category="phones")'
        " >= 3 within 7d and not purchased`) or in its JSON form",
    ),
]
MAX_IMPORT_BYTES = 5_000_000

_EXAMPLE_RULE = (
    'country in [DE, AT] and product_view(category="phones") >= 3 within 7d and not purchased'
)


class SegmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: str | None = Field(default=None, max_length=2000)
    kind: Literal["dynamic", "static"] = "dynamic"
    rule: RuleInput | None = Field(default=None, json_schema_extra={"examples": [_EXAMPLE_RULE]})


class SegmentPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: str | None = Field(default=None, max_length=2000)
    rule: RuleInput | None = None


class RuleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: RuleInput
    sample: int = Field(default=0, ge=0, le=100, description="also return this many member ids")


class RulePreview(BaseModel):
    rule: dict[str, Any]
    rule_text: str
    has_window: bool
    count: int
    sample: list[str]
    evaluated_at: datetime


class EvaluationOut(BaseModel):
    entered: int
    left: int
    member_count: int


class SegmentPublic(BaseModel):
    id: str
    name: str
    description: str | None
    kind: Literal["dynamic", "static"]
    status: Literal["active", "archived"]
    rule: dict[str, Any] | None
    rule_text: str | None
    has_window: bool
    member_count: int | None = Field(description="current members (None for a past state)")
    evaluated_at: datetime | None = None
    version: int
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_evaluation: EvaluationOut | None = None


class MembersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_ids: list[Annotated[str, Field(min_length=1, max_length=100), NotBlank]] = Field(
        min_length=1, max_length=10_000
    )


class Member(BaseModel):
    customer_id: str
    since: datetime


def _public(
    segment: Segment, row: dict[str, Any] | None, evaluation: Evaluation | None = None
) -> SegmentPublic:
    rule = segment.rule
    return SegmentPublic(
        id=segment.id,
        name=segment.name,
        description=segment.description,
        kind=segment.kind,
        status="archived" if segment.archived else "active",
        rule=segment.rule_json,
        rule_text=segment.rule_text,
        has_window=rule is not None and rules.has_window(rule),
        member_count=row["member_count"] if row else None,
        evaluated_at=row["evaluated_at"] if row else None,
        version=segment.version,
        created_at=row["created_at"] if row else None,
        updated_at=row["updated_at"] if row else None,
        last_evaluation=EvaluationOut(
            entered=evaluation.entered, left=evaluation.left, member_count=evaluation.member_count
        )
        if evaluation
        else None,
    )


async def _respond(
    conn: Conn, segment: Segment, evaluation: Evaluation | None, status: int = 200
) -> CommandResult:
    row = await adapters.get(conn, segment.id)
    return CommandResult(
        status,
        _public(segment, row, evaluation),
        {"ETag": etag(segment.version), "Location": f"/segments/{segment.id}"},
    )


def _now() -> datetime:
    return datetime.now(UTC)


@router.post(
    "",
    status_code=201,
    response_model=SegmentPublic,
    summary="Define a segment (dynamic: evaluated at once; static: add members afterwards)",
    responses={
        409: {"description": "an active segment already has this name"},
        422: {"description": "invalid field; a rule error names its offset/line/column or path"},
    },
)
async def create_segment(
    body: SegmentCreate, ctx: CtxDep, user: Marketer, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    rule = load_rule(body.rule) if body.rule is not None else None
    if body.kind == "dynamic" and rule is None:
        raise InvalidInput("rule", "a dynamic segment needs a rule")
    if body.kind == "static" and rule is not None:
        raise InvalidInput("rule", "a static segment has no rule; add members to it instead")
    cmd = DefineSegment(name=body.name, kind=body.kind, rule=rule, description=body.description)
    handlers = SegmentHandlers(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        segment, evaluation = await handlers.define(conn, cmd, metadata_for(user), _now())
        return await _respond(conn, segment, evaluation, 201)

    return await run_command(ctx, user, idempotency_key, body.model_dump(mode="json"), command)


@router.post(
    "/preview",
    response_model=RulePreview,
    summary="Parse a rule and count its members now, without saving anything",
)
async def preview(body: RuleBody, ctx: CtxDep, user: Marketer) -> RulePreview:
    rule = load_rule(body.rule)
    now = _now()
    async with ctx.pool.acquire() as conn:
        count, sample = await preview_count(conn, rule, now, body.sample)
    return RulePreview(
        rule=rules.to_json(rule),
        rule_text=rules.to_text(rule),
        has_window=rules.has_window(rule),
        count=count,
        sample=sample,
        evaluated_at=now,
    )


@router.get("", response_model=Page[SegmentPublic], summary="List segments, newest first")
async def list_segments(
    ctx: CtxDep,
    user: Marketer,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    kind: Literal["dynamic", "static"] | None = None,
    status: Literal["active", "archived"] | None = None,
    q: Annotated[str | None, Query(max_length=200, description="name contains")] = None,
) -> Page[SegmentPublic]:
    async with ctx.pool.acquire() as conn:
        rows = await adapters.list_segments(
            conn, limit=limit + 1, after=after_of(cursor), kind=kind, status=status, q=q
        )
    items = [
        SegmentPublic(
            id=r["segment_id"],
            name=r["name"],
            description=r["description"],
            kind=r["kind"],
            status=r["status"],
            rule=r["rule"],
            rule_text=r["rule_text"],
            has_window=r["has_window"],
            member_count=r["member_count"],
            evaluated_at=r["evaluated_at"],
            version=r["version"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
        )
        for r in rows[:limit]
    ]
    return Page[SegmentPublic](
        items=items, next_cursor=next_cursor(rows, limit, "created_at", "segment_id")
    )


@router.get(
    "/{segment_id}",
    response_model=SegmentPublic,
    summary="Read a segment (optionally as of a time)",
)
async def get_segment(
    segment_id: str,
    ctx: CtxDep,
    user: Marketer,
    response: Response,
    as_of: Annotated[ClientTime | None, Query(description="ISO 8601 time with zone")] = None,
) -> SegmentPublic:
    segment = await SegmentHandlers(ctx.store).segments.load(segment_id, as_of=as_of)
    row = None
    if as_of is None:
        async with ctx.pool.acquire() as conn:
            row = await adapters.get(conn, segment_id)
    response.headers["ETag"] = etag(segment.version)
    return _public(segment, row)


@router.get(
    "/{segment_id}/history", response_model=list[HistoryEntry], summary="A segment's events"
)
async def segment_history(segment_id: str, ctx: CtxDep, user: Marketer) -> list[HistoryEntry]:
    return history(await SegmentHandlers(ctx.store).segments.history(segment_id))


@router.patch(
    "/{segment_id}",
    response_model=SegmentPublic,
    summary="Rename, re-describe or change the rule (membership is re-evaluated at once)",
    responses={409: {"description": "archived, name taken, or a rule on a static segment"}},
)
async def patch_segment(
    segment_id: str, body: SegmentPatch, ctx: CtxDep, user: Marketer, if_match: IfMatch = None
) -> JSONResponse:
    cmd = ChangeSegment(
        segment_id=segment_id,
        name=body.name,
        description=body.description,
        description_given="description" in body.model_fields_set,
        rule=load_rule(body.rule) if body.rule is not None else None,
        expected_version=expected_version(if_match),
    )
    handlers = SegmentHandlers(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        segment, evaluation = await handlers.change(conn, cmd, metadata_for(user), _now())
        return await _respond(conn, segment, evaluation)

    return await run_command(ctx, user, None, None, command)


@router.post("/{segment_id}/archive", response_model=SegmentPublic, summary="Archive a segment")
async def archive_segment(
    segment_id: str, ctx: CtxDep, user: Marketer, if_match: IfMatch = None
) -> JSONResponse:
    handlers = SegmentHandlers(ctx.store)
    expected = expected_version(if_match)

    async def command(conn: Conn) -> CommandResult:
        segment = await handlers.archive(conn, segment_id, expected, metadata_for(user), _now())
        return await _respond(conn, segment, None)

    return await run_command(ctx, user, None, None, command)


@router.post(
    "/{segment_id}/evaluate",
    response_model=EvaluationOut,
    summary="Re-evaluate a dynamic segment over every customer now",
)
async def evaluate(segment_id: str, ctx: CtxDep, user: Marketer) -> EvaluationOut:
    async with ctx.pool.acquire() as conn, conn.transaction():
        done = await SegmentHandlers(ctx.store).evaluate(
            conn, segment_id, metadata_for(user), _now()
        )
    return EvaluationOut(entered=done.entered, left=done.left, member_count=done.member_count)


async def _existing(conn: Conn, segment_id: str) -> dict[str, Any]:
    row = await adapters.get(conn, segment_id)
    if row is None:
        raise NotFound(f"segment {segment_id} does not exist")
    return row


@router.get(
    "/{segment_id}/members",
    response_model=Page[Member],
    summary="The segment's members, by customer id (cursor paginated)",
)
async def list_members(
    segment_id: str,
    ctx: CtxDep,
    user: Marketer,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Page[Member]:
    after = decode_cursor(cursor)
    after_id = after.get("c") if after else None
    if after is not None and not isinstance(after_id, str):
        raise InvalidInput("cursor", "is not a cursor returned by this list")
    async with ctx.pool.acquire() as conn:
        await _existing(conn, segment_id)
        rows = await adapters.member_page(conn, segment_id, after=after_id, limit=limit + 1)
    items = [Member(**r) for r in rows[:limit]]
    more = encode_cursor({"c": items[-1].customer_id}) if len(rows) > limit else None
    return Page[Member](items=items, next_cursor=more)


@router.post(
    "/{segment_id}/members",
    response_model=EvaluationOut,
    summary="Add customers to a static segment (ids already in it are left as they are)",
    responses={409: {"description": "the segment is dynamic or archived"}},
)
async def add_members(
    segment_id: str, body: MembersIn, ctx: CtxDep, user: Marketer
) -> JSONResponse:
    handlers = SegmentHandlers(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        done = await handlers.add_members(
            conn, segment_id, body.customer_ids, metadata_for(user), _now()
        )
        return CommandResult(
            200, EvaluationOut(entered=done.entered, left=0, member_count=done.member_count)
        )

    return await run_command(ctx, user, None, None, command)


@router.post(
    "/{segment_id}/members/remove",
    response_model=EvaluationOut,
    summary="Remove customers from a static segment",
    responses={409: {"description": "the segment is dynamic or archived"}},
)
async def remove_members(
    segment_id: str, body: MembersIn, ctx: CtxDep, user: Marketer
) -> JSONResponse:
    handlers = SegmentHandlers(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        done = await handlers.remove_members(
            conn, segment_id, body.customer_ids, metadata_for(user), _now()
        )
        return CommandResult(
            200, EvaluationOut(entered=0, left=done.left, member_count=done.member_count)
        )

    return await run_command(ctx, user, None, None, command)


@router.delete(
    "/{segment_id}/members/{customer_id}",
    status_code=204,
    summary="Remove one customer from a static segment",
)
async def remove_member(segment_id: str, customer_id: str, ctx: CtxDep, user: Marketer) -> Response:
    async with ctx.pool.acquire() as conn, conn.transaction():
        await SegmentHandlers(ctx.store).remove_members(
            conn, segment_id, [customer_id], metadata_for(user), _now()
        )
    return Response(status_code=204)


def _multipart_file(raw: bytes, content_type: str) -> bytes:
    """The file of a ``multipart/form-data`` body (RFC 7578; as ``curl -F file=@members.csv``
    and browser forms send it): the part named ``file``, else the one part with a filename,
    else the only part. InvalidInput (field ``file``) when there is no such single part."""
    header = email.message.Message()
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise InvalidInput("file", "the multipart body names no boundary in its Content-Type")
    # every delimiter line starts a line (CRLF as RFC 2046 says; a bare LF is tolerated)
    chunks = re.split(rb"\r?\n--" + re.escape(boundary.encode("latin-1")), b"\r\n" + raw)
    parts: list[tuple[str | None, str | None, bytes]] = []
    for chunk in chunks[1:]:  # chunks[0] is the preamble
        if chunk.startswith(b"--"):  # the close delimiter
            break
        _, _, chunk = chunk.partition(b"\n")  # the rest of the delimiter line
        found = re.search(rb"\r?\n\r?\n", b"\r\n" + chunk)
        if found is None:
            continue
        head, content = chunk[: max(found.start() - 2, 0)], chunk[found.end() - 2 :]
        headers = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            head + b"\r\n\r\n", headersonly=True
        )
        name = headers.get_param("name", header="content-disposition")
        parts.append(
            (name if isinstance(name, str) else None, headers.get_filename(), bytes(content))
        )
    named = [p for p in parts if p[0] == "file"]
    files = named or [p for p in parts if p[1] is not None] or (parts if len(parts) == 1 else [])
    if len(files) != 1:
        raise InvalidInput(
            "file",
            "send one CSV file, e.g. as the part `file` (curl -F file=@members.csv), "
            f"not {len(files) or 'no'} file parts",
        )
    return files[0][2]


def _csv_body(raw: bytes, content_type: str) -> bytes:
    """The CSV a request carries: the body itself, or the file of a multipart upload."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        return _multipart_file(raw, content_type)
    return raw


def _ids_from_csv(raw: bytes) -> list[str]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("body", "the CSV is not UTF-8") from None
    ids: list[str] = []
    for n, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not row[0].strip():
            continue
        value = row[0].strip()
        if n == 1 and value.lower() in ("customer_id", "id", "customer"):
            continue  # a header
        if len(value) > 100:
            raise InvalidInput("body", f"line {n}: a customer id is at most 100 characters")
        ids.append(value)
    if not ids:
        raise InvalidInput("body", "the CSV holds no customer ids (one per line, first column)")
    return ids


@router.post(
    "/{segment_id}/members/import",
    response_model=EvaluationOut,
    summary="Add customers to a static segment from a CSV (customer ids in the first column)",
    openapi_extra={
        "requestBody": {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
            },
            "required": True,
        }
    },
    responses={
        413: {"description": "larger than 5 MB"},
        415: {"description": "a JSON body (send the CSV as text/csv or a multipart upload)"},
    },
    max_body_size=MAX_IMPORT_BYTES,  # the import's own limit (the API's is 4 MiB)
)
async def import_members(
    segment_id: str, request: Request, ctx: CtxDep, user: Marketer
) -> JSONResponse:
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return problem(
            415,
            "send the CSV file as the body with Content-Type: text/csv (curl --data-binary"
            " @members.csv -H 'Content-Type: text/csv'), or as a multipart/form-data file upload"
            " (curl -F file=@members.csv); JSON lists of ids go to POST"
            " /segments/{id}/members",
        )
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > MAX_IMPORT_BYTES:
            return problem(413, f"the CSV is larger than {MAX_IMPORT_BYTES} bytes")
    ids = _ids_from_csv(_csv_body(bytes(raw), content_type))
    handlers = SegmentHandlers(ctx.store)

    async def command(conn: Conn) -> CommandResult:
        done = await handlers.add_members(
            conn, segment_id, ids, metadata_for(user), _now(), reason="imported", field="body"
        )
        return CommandResult(
            200, EvaluationOut(entered=done.entered, left=0, member_count=done.member_count)
        )

    return await run_command(ctx, user, None, None, command)


def _cell(value: str | None) -> str:
    """No formula injection in spreadsheets: a leading =, +, -, @ is quoted with a '."""
    if value is None:
        return ""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@router.get(
    "/{segment_id}/export.csv",
    summary="The members as CSV (customer id, e-mail, first and last name, country), streamed",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def export_members(segment_id: str, ctx: CtxDep, user: Marketer) -> StreamingResponse:
    async with ctx.pool.acquire() as conn:
        await _existing(conn, segment_id)

    async def body() -> AsyncIterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(adapters.EXPORT_COLUMNS)
        yield buffer.getvalue().encode()
        async for rows in adapters.export_rows(ctx.pool, segment_id):
            buffer.seek(0)
            buffer.truncate()
            writer.writerows([_cell(v) for v in r] for r in rows)
            yield buffer.getvalue().encode()

    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="segment-{segment_id}.csv"'},
    )
