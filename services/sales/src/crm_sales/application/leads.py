"""Command handlers for leads."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from crm_events.schemas.sales import LeadSource
from crm_runtime.db import Conn
from crm_runtime.eventstore import EventStore, Metadata
from crm_runtime.repository import Repository, check_version
from crm_sales.adapters import lead_view
from crm_sales.domain.lead import Lead


@dataclass(frozen=True)
class CaptureLead:
    name: str
    source: LeadSource
    email: str | None = None
    phone: str | None = None
    company: str | None = None
    source_detail: str | None = None
    owner_id: str | None = None


@dataclass(frozen=True)
class QualifyLead:
    lead_id: str
    score: int
    notes: str | None = None
    expected_version: int | None = None


@dataclass(frozen=True)
class DisqualifyLead:
    lead_id: str
    reason: str
    expected_version: int | None = None


class LeadHandlers:
    def __init__(self, store: EventStore) -> None:
        self.leads = Repository(store, Lead)

    async def capture(self, conn: Conn, cmd: CaptureLead, meta: Metadata) -> Lead:
        # The customer id is minted here: sales is the system of record for customers.
        lead = Lead.capture(
            str(uuid.uuid4()),
            str(uuid.uuid4()),
            name=cmd.name,
            source=cmd.source,
            email=cmd.email,
            phone=cmd.phone,
            company=cmd.company,
            source_detail=cmd.source_detail,
            owner_id=cmd.owner_id,
        )
        await self.leads.save(conn, lead, meta)
        await lead_view.upsert(conn, lead, datetime.now(UTC))
        return lead

    async def qualify(self, conn: Conn, cmd: QualifyLead, meta: Metadata) -> Lead:
        lead = await self.leads.load(cmd.lead_id, conn=conn)
        check_version(cmd.expected_version, lead.version)
        lead.qualify(cmd.score, cmd.notes)
        await self.leads.save(conn, lead, meta)
        await lead_view.upsert(conn, lead, datetime.now(UTC))
        return lead

    async def disqualify(self, conn: Conn, cmd: DisqualifyLead, meta: Metadata) -> Lead:
        lead = await self.leads.load(cmd.lead_id, conn=conn)
        check_version(cmd.expected_version, lead.version)
        lead.disqualify(cmd.reason)
        await self.leads.save(conn, lead, meta)
        await lead_view.upsert(conn, lead, datetime.now(UTC))
        return lead
