"""Command handlers for leads."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from crm_events.schemas.sales import AccountDetails, ContactDetails, LeadSource
from crm_runtime.db import Conn
from crm_runtime.errors import Conflict
from crm_runtime.eventstore import EventStore, Metadata
from crm_runtime.repository import Repository, check_version
from crm_sales.adapters import lead_view
from crm_sales.adapters.directory import find_contact_by_emails
from crm_sales.application.deals import DealHandlers
from crm_sales.application.directory import AccountHandlers, ContactHandlers, ensure_not_merged
from crm_sales.application.work import Router
from crm_sales.domain.account import Account
from crm_sales.domain.contact import Contact
from crm_sales.domain.deal import Deal
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
    team_id: str | None = None
    region: str | None = None
    product_line: str | None = None
    attribution: dict[str, str] | None = None
    customer_id: str | None = None  # given by another context (§5)


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


Authorize = Callable[[Lead], None]


class LeadHandlers:
    def __init__(self, store: EventStore) -> None:
        self.leads = Repository(store, Lead)
        self.router = Router(store)

    async def save(self, conn: Conn, lead: Lead, meta: Metadata, *, final: bool = False) -> None:
        """The lead's new events and its read-model row, in one statement."""
        row = lead_view.upsert_write(lead, datetime.now(UTC), lead.version_after_save)
        await self.leads.save(conn, lead, meta, also=[row], final=final)

    async def _load(self, conn: Conn, lead_id: str, authorize: Authorize | None) -> Lead:
        """The lead as this transaction reads it; ``authorize`` checks the caller against that
        state (not an earlier read: a command run again after a lost race sees a new owner)."""
        lead = await self.leads.load(lead_id, conn=conn)
        if authorize is not None:
            authorize(lead)
        return lead

    async def capture(
        self, conn: Conn, cmd: CaptureLead, meta: Metadata, *, final: bool = False
    ) -> Lead:
        """``final``: nothing follows on ``conn`` (a new lead without checks: one statement)."""
        if cmd.email:
            await self.check_duplicate(conn, cmd.email.strip().lower())
        # The customer id is minted here (sales is the system of record for customers), unless
        # another context already minted a provisional one for this person (docs/identity.md).
        lead = Lead.capture(
            str(uuid.uuid4()),
            cmd.customer_id or str(uuid.uuid4()),
            name=cmd.name,
            source=cmd.source,
            email=cmd.email,
            phone=cmd.phone,
            company=cmd.company,
            source_detail=cmd.source_detail,
            owner_id=cmd.owner_id,
            team_id=cmd.team_id,
            region=cmd.region,
            product_line=cmd.product_line,
            attribution=cmd.attribution,
        )
        if cmd.owner_id is None:  # nobody took it: the assignment rules route it
            decision = await self.router.decide(conn, "lead", cmd.region, cmd.product_line)
            if decision is not None:
                lead.assign(
                    decision.owner_id, decision.team_id, decision.rule_id, decision.strategy
                )
        await self.save(conn, lead, meta, final=final)
        return lead

    async def qualify(
        self, conn: Conn, cmd: QualifyLead, meta: Metadata, authorize: Authorize | None = None
    ) -> Lead:
        lead = await self._load(conn, cmd.lead_id, authorize)
        check_version(cmd.expected_version, lead.version)
        lead.qualify(cmd.score, cmd.notes)
        await self.save(conn, lead, meta)
        return lead

    async def check_duplicate(self, conn: Conn, email: str) -> None:
        """An open lead or a contact with this e-mail already exists: 409 naming it."""
        # Serialise captures of one address so two concurrent ones cannot both pass.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", email)
        lead_id = await conn.fetchval(
            "SELECT lead_id FROM leads WHERE email = $1 AND status IN ('new', 'qualified')"
            " ORDER BY created_at LIMIT 1",
            email,
        )
        if lead_id is not None:
            raise Conflict(
                f"an open lead with this e-mail already exists: {lead_id}",
                existing_id=lead_id,
                existing=f"/leads/{lead_id}",
            )
        contact_id = await find_contact_by_emails(conn, [email])
        if contact_id is not None:
            raise Conflict(
                f"this e-mail belongs to contact {contact_id}; log an activity or open a deal",
                existing_id=contact_id,
                existing=f"/contacts/{contact_id}",
            )

    async def assign(
        self,
        conn: Conn,
        lead_id: str,
        owner_id: str | None,
        team_id: str | None,
        meta: Metadata,
        expected: int | None,
        authorize: Authorize | None = None,
    ) -> Lead:
        lead = await self._load(conn, lead_id, authorize)
        check_version(expected, lead.version)
        if team_id is None and owner_id is not None:  # the rep's team, from its profile
            team_id = await conn.fetchval("SELECT team_id FROM reps WHERE user_id = $1", owner_id)
        lead.assign(owner_id, team_id)
        if lead.pending:
            await self.save(conn, lead, meta)
        return lead

    async def disqualify(
        self, conn: Conn, cmd: DisqualifyLead, meta: Metadata, authorize: Authorize | None = None
    ) -> Lead:
        lead = await self._load(conn, cmd.lead_id, authorize)
        check_version(cmd.expected_version, lead.version)
        lead.disqualify(cmd.reason)
        await self.save(conn, lead, meta)
        return lead


@dataclass(frozen=True)
class DealSpec:
    name: str | None
    amount_minor: int
    currency: str
    pipeline_id: str | None = None
    stage: str | None = None
    expected_close: date | None = None


@dataclass(frozen=True)
class ConvertLead:
    lead_id: str
    expected_version: int | None = None
    contact_id: str | None = None  # attach to this existing contact instead of creating one
    account_id: str | None = None  # attach to this existing account
    account_name: str | None = None  # create an account (default: the lead's company)
    account_domain: str | None = None
    create_account: bool = True
    deal: DealSpec | None = None
    owner_id: str | None = None
    team_id: str | None = None


@dataclass(frozen=True)
class Conversion:
    lead: Lead
    contact: Contact
    account: Account | None
    deal: Deal | None


def split_name(name: str) -> tuple[str | None, str]:
    parts = name.strip().rsplit(" ", 1)
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


async def convert_lead(
    conn: Conn,
    cmd: ConvertLead,
    meta: Metadata,
    *,
    leads: LeadHandlers,
    contacts: ContactHandlers,
    accounts: AccountHandlers,
    deals: DealHandlers,
    authorize: Authorize | None = None,
) -> Conversion:
    """Lead -> contact + account + deal in one transaction: all of it is saved, or none."""
    lead = await leads._load(conn, cmd.lead_id, authorize)
    check_version(cmd.expected_version, lead.version)
    lead.ensure_convertible()  # before anything is created
    owner = cmd.owner_id or lead.owner_id
    account: Account | None = None
    if cmd.account_id:
        account = await accounts.accounts.load(cmd.account_id, conn=conn)
        ensure_not_merged(account)
    elif cmd.create_account and (cmd.account_name or lead.company):
        account = await accounts.create(
            conn,
            AccountDetails(name=cmd.account_name or lead.company, domain=cmd.account_domain),
            meta,
            owner_id=owner,
            team_id=cmd.team_id,
            lead_id=lead.id,
        )
    if cmd.contact_id:
        contact = await contacts.contacts.load(cmd.contact_id, conn=conn)
        ensure_not_merged(contact)
    else:
        first, last = split_name(lead.name)
        contact = await contacts.create(
            conn,
            ContactDetails(
                first_name=first,
                last_name=last,
                emails=[lead.email] if lead.email else [],
                phones=[lead.phone] if lead.phone else [],
                account_id=account.id if account else None,
            ),
            meta,
            owner_id=owner,
            team_id=cmd.team_id,
            customer_id=lead.customer_id,  # the customer keeps the id the lead gave it
            lead_id=lead.id,
        )
    deal: Deal | None = None
    if cmd.deal is not None:
        deal = await deals.open(
            conn,
            meta,
            customer_id=contact.customer_id,
            name=cmd.deal.name or f"{account.name if account else lead.name} deal",
            amount_minor=cmd.deal.amount_minor,
            currency=cmd.deal.currency,
            expected_close=cmd.deal.expected_close,
            lines=[],
            pipeline_id=cmd.deal.pipeline_id,
            stage=cmd.deal.stage,
            owner_id=owner,
            team_id=cmd.team_id,
            account_id=account.id if account else None,
            contact_id=contact.id,
            lead_id=lead.id,
            source=lead.source,
        )
    lead.convert(
        customer_id=contact.customer_id,
        contact_id=contact.id,
        account_id=account.id if account else None,
        deal_id=deal.id if deal else None,
    )
    await leads.save(conn, lead, meta)
    return Conversion(lead, contact, account, deal)
