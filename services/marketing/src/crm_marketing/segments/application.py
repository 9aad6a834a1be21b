"""Command handlers for segments: define, change, archive, evaluate, static members."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crm_events.schemas.marketing_segments import SegmentKind
from crm_marketing.segments import adapters, rules
from crm_marketing.segments.compiler import bind, compile_rule
from crm_marketing.segments.domain import Segment
from crm_marketing.segments.membership import Evaluation, evaluate_segment, record_changes
from crm_runtime.db import Conn
from crm_runtime.errors import Conflict, CrmError, DomainError, InvalidInput, NotFound
from crm_runtime.eventstore import EventStore, Metadata
from crm_runtime.repository import Repository, check_version

MAX_MEMBERS_PER_REQUEST = 100_000


class InvalidRule(CrmError):
    """A rule that does not parse or make sense: 422 naming the position (or path) and why."""

    status = 422
    title = "Unprocessable Content"

    def __init__(self, error: rules.RuleError, field: str = "rule") -> None:
        super().__init__(f"{field}: {error.describe()}", errors=[error.as_problem(field)])


def load_rule(raw: str | dict[str, Any], field: str = "rule") -> rules.Rule:
    try:
        return rules.load(raw)
    except rules.RuleError as exc:
        raise InvalidRule(exc, field) from None


@dataclass(frozen=True)
class DefineSegment:
    name: str
    kind: SegmentKind
    rule: rules.Rule | None
    description: str | None = None


@dataclass(frozen=True)
class ChangeSegment:
    segment_id: str
    name: str | None = None
    description: str | None = None
    description_given: bool = False
    rule: rules.Rule | None = None
    expected_version: int | None = None


class SegmentHandlers:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.segments = Repository(store, Segment)

    async def _locked_row(self, conn: Conn, segment_id: str) -> dict[str, Any]:
        row = await adapters.get(conn, segment_id, lock=True)
        if row is None:
            raise NotFound(f"segment {segment_id} does not exist")
        return row

    async def _check_name(self, conn: Conn, name: str, segment_id: str | None = None) -> None:
        # One writer per name at a time, so two concurrent creates cannot both pass.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(lower($1), 20))", name)
        taken = await adapters.name_taken(conn, name, segment_id)
        if taken is not None:
            raise Conflict(
                f"an active segment is already named {name!r}: {taken}",
                existing_id=taken,
                existing=f"/segments/{taken}",
            )

    async def define(
        self, conn: Conn, cmd: DefineSegment, meta: Metadata, now: datetime
    ) -> tuple[Segment, Evaluation | None]:
        await self._check_name(conn, cmd.name)
        segment = Segment.define(
            str(uuid.uuid4()),
            name=cmd.name,
            kind=cmd.kind,
            rule=cmd.rule,
            description=cmd.description,
        )
        await self.segments.save(conn, segment, meta)
        await adapters.upsert(conn, segment, now, meta.actor)
        evaluation = None
        if segment.kind == "dynamic":
            row = await self._locked_row(conn, segment.id)
            evaluation = await evaluate_segment(conn, self.store, row, now=now, metadata=meta)
        return segment, evaluation

    async def change(
        self, conn: Conn, cmd: ChangeSegment, meta: Metadata, now: datetime
    ) -> tuple[Segment, Evaluation | None]:
        row = await self._locked_row(conn, cmd.segment_id)
        segment = await self.segments.load(cmd.segment_id, conn=conn)
        check_version(cmd.expected_version, segment.version)
        name = cmd.name if cmd.name is not None else segment.name
        if name.lower() != segment.name.lower():
            await self._check_name(conn, name, segment.id)
        description = cmd.description if cmd.description_given else segment.description
        rule_changed = segment.change(name=name, description=description, rule=cmd.rule)
        await self.segments.save(conn, segment, meta)
        await adapters.upsert(conn, segment, now, meta.actor)
        evaluation = None
        if rule_changed:
            row = await self._locked_row(conn, segment.id)
            evaluation = await evaluate_segment(conn, self.store, row, now=now, metadata=meta)
        return segment, evaluation

    async def archive(
        self, conn: Conn, segment_id: str, expected: int | None, meta: Metadata, now: datetime
    ) -> Segment:
        await self._locked_row(conn, segment_id)
        segment = await self.segments.load(segment_id, conn=conn)
        check_version(expected, segment.version)
        using = await conn.fetchrow(
            "SELECT campaign_id, status FROM campaigns WHERE segment_id = $1"
            " AND status IN ('scheduled', 'sending') ORDER BY created_at, campaign_id LIMIT 1",
            segment_id,
        )
        if using is not None:
            raise Conflict(
                f"segment {segment_id} is used by {using['status']} campaign"
                f" {using['campaign_id']}; cancel it first",
                campaign_id=using["campaign_id"],
                campaign=f"/campaigns/{using['campaign_id']}",
            )
        segment.archive()
        await self.segments.save(conn, segment, meta)
        await adapters.upsert(conn, segment, now, meta.actor)
        return segment

    async def evaluate(
        self, conn: Conn, segment_id: str, meta: Metadata, now: datetime
    ) -> Evaluation:
        row = await self._locked_row(conn, segment_id)
        if row["status"] != "active":
            raise DomainError(f"segment {segment_id} is archived")
        if row["kind"] != "dynamic":
            raise DomainError("a static segment has no rule to evaluate")
        return await evaluate_segment(conn, self.store, row, now=now, metadata=meta)

    async def _static(self, conn: Conn, segment_id: str) -> dict[str, Any]:
        row = await self._locked_row(conn, segment_id)
        segment = await self.segments.load(segment_id, conn=conn)
        segment.ensure_static()
        return row

    async def add_members(
        self,
        conn: Conn,
        segment_id: str,
        customer_ids: list[str],
        meta: Metadata,
        now: datetime,
        *,
        reason: str = "added",
        field: str = "customer_ids",
    ) -> Evaluation:
        row = await self._static(conn, segment_id)
        ids = sorted(set(customer_ids))
        if len(ids) > MAX_MEMBERS_PER_REQUEST:
            raise InvalidInput(field, f"at most {MAX_MEMBERS_PER_REQUEST} ids per request")
        unknown = await adapters.unknown_customers(conn, ids)
        if unknown:
            shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise InvalidInput(field, f"{len(unknown)} unknown customer id(s): {shown}")
        rows = await conn.fetch(
            "INSERT INTO segment_members (segment_id, customer_id, since)"
            " SELECT $1, x, $3 FROM unnest($2::text[]) x"
            " ON CONFLICT (segment_id, customer_id) DO NOTHING RETURNING customer_id",
            segment_id,
            ids,
            now,
        )
        entered = sorted(r["customer_id"] for r in rows)
        return await record_changes(
            conn, self.store, row, entered, [], now=now, metadata=meta, entered_reason=reason
        )

    async def remove_members(
        self, conn: Conn, segment_id: str, customer_ids: list[str], meta: Metadata, now: datetime
    ) -> Evaluation:
        row = await self._static(conn, segment_id)
        rows = await conn.fetch(
            "DELETE FROM segment_members WHERE segment_id = $1 AND customer_id = ANY($2::text[])"
            " RETURNING customer_id",
            segment_id,
            sorted(set(customer_ids)),
        )
        left = sorted(r["customer_id"] for r in rows)
        return await record_changes(
            conn, self.store, row, [], left, now=now, metadata=meta, left_reason="removed"
        )


async def preview_count(
    conn: Conn, rule: rules.Rule, now: datetime, sample: int = 0
) -> tuple[int, list[str]]:
    """How many customers ``rule`` holds for now (and the first ``sample`` ids), nothing saved."""
    compiled = compile_rule(rule, now)
    params = bind(compiled)
    count = await conn.fetchval(f"SELECT count(*) FROM ({compiled.sql}) s", *params)
    ids: list[str] = []
    if sample:
        rows = await conn.fetch(
            f"SELECT customer_id FROM ({compiled.sql}) s ORDER BY customer_id"
            f" LIMIT ${len(params) + 1}",
            *params,
            sample,
        )
        ids = [r["customer_id"] for r in rows]
    return int(count), ids
