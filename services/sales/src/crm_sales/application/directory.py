"""Command handlers for contacts and accounts: create with duplicate check, update, reassign,
merge and undo a merge. Each runs in the caller's transaction; read models and duplicate guards
are written in it, so a 409 leaves nothing behind."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Generic, TypeVar

from crm_events.schemas.sales import AccountDetails, ContactDetails
from crm_runtime.db import Conn
from crm_runtime.errors import Conflict, NotFound
from crm_runtime.eventstore import EventStore, Metadata
from crm_runtime.repository import Repository, check_version
from crm_sales.adapters import directory
from crm_sales.domain.account import Account, normalise_domain
from crm_sales.domain.contact import Contact, normalise_email
from crm_sales.domain.custom_fields import CustomFields, Entity
from crm_sales.domain.party import Party


def _now() -> datetime:
    return datetime.now(UTC)


async def custom_fields(store: EventStore, conn: Conn, entity: Entity) -> CustomFields:
    """The custom field definitions of contacts or accounts (none defined: an empty set)."""
    try:
        return await Repository(store, CustomFields).load(entity, conn=conn)
    except NotFound:
        return CustomFields(entity)


P = TypeVar("P", bound=Party)


class PartyHandlers(Generic[P]):
    """Reassign, merge and undo, the same for contacts and accounts; subclasses say how their
    read model and duplicate guard are written."""

    repo: Repository[P]

    async def write_model(self, conn: Conn, record: P) -> None:
        raise NotImplementedError

    async def sync_guard(self, conn: Conn, record: P) -> None:
        raise NotImplementedError

    async def reassign(
        self,
        conn: Conn,
        record: P,
        owner_id: str | None,
        team_id: str | None,
        meta: Metadata,
        expected: int | None,
    ) -> P:
        check_version(expected, record.version)
        record.reassign(owner_id, team_id)
        if record.pending:
            await self.repo.save(conn, record, meta)
            await self.write_model(conn, record)
        return record

    async def merge(self, conn: Conn, survivor: P, merged: P, meta: Metadata) -> tuple[P, str]:
        merge_id = str(uuid.uuid4())
        survivor.merge(merged, merge_id)
        await self.repo.save(conn, survivor, meta)
        await self.repo.save(conn, merged, meta)
        await self.write_model(conn, merged)  # first: its guarded values now resolve
        await self.write_model(conn, survivor)
        await self.sync_guard(conn, survivor)
        return survivor, merge_id

    async def undo_merge(
        self, conn: Conn, survivor: P, merge_id: str, meta: Metadata
    ) -> tuple[P, P]:
        merged_id = survivor.undo_check(merge_id)
        merged = await self.repo.load(merged_id, conn=conn)
        survivor.undo_merge(merged, merge_id)
        await self.repo.save(conn, survivor, meta)
        await self.repo.save(conn, merged, meta)
        for record in (survivor, merged):
            await self.write_model(conn, record)
            await self.sync_guard(conn, record)
        return survivor, merged


class ContactHandlers(PartyHandlers[Contact]):
    async def write_model(self, conn: Conn, record: Contact) -> None:
        await directory.upsert_contact(conn, record, _now())

    async def sync_guard(self, conn: Conn, record: Contact) -> None:
        await directory.sync_emails(conn, record)

    def __init__(self, store: EventStore) -> None:
        self.contacts = Repository(store, Contact)
        self.repo = self.contacts

    async def create(
        self,
        conn: Conn,
        details: ContactDetails,
        meta: Metadata,
        *,
        owner_id: str | None,
        team_id: str | None,
        customer_id: str | None = None,
        lead_id: str | None = None,
    ) -> Contact:
        (await custom_fields(self.contacts.store, conn, "contact")).check(details.custom_fields)
        emails = [normalise_email(e) for e in details.emails or []]
        existing = await directory.find_contact_by_emails(conn, emails)
        if existing is not None:
            raise directory.duplicate_contact(existing)
        contact = Contact.create(
            str(uuid.uuid4()),
            customer_id or str(uuid.uuid4()),
            details,
            owner_id=owner_id,
            team_id=team_id,
            lead_id=lead_id,
        )
        await self.contacts.save(conn, contact, meta)
        await directory.upsert_contact(conn, contact, _now())
        await directory.sync_emails(conn, contact)
        return contact

    async def update(
        self,
        conn: Conn,
        contact_id: str,
        values: ContactDetails,
        fields: list[str],
        meta: Metadata,
        expected: int | None,
        authorize: Callable[[Contact], None] | None = None,
    ) -> Contact:
        contact = await self.contacts.load(contact_id, conn=conn)
        if authorize is not None:  # on the state this transaction changes, not an earlier read
            authorize(contact)
        check_version(expected, contact.version)
        if "custom_fields" in fields:
            defs = await custom_fields(self.contacts.store, conn, "contact")
            defs.check(values.custom_fields)
        if contact.update(values, fields):
            await self.contacts.save(conn, contact, meta)
            await directory.upsert_contact(conn, contact, _now())
            await directory.sync_emails(conn, contact)
        return contact


class AccountHandlers(PartyHandlers[Account]):
    async def write_model(self, conn: Conn, record: Account) -> None:
        await directory.upsert_account(conn, record, _now())

    async def sync_guard(self, conn: Conn, record: Account) -> None:
        await directory.sync_domain(conn, record)

    def __init__(self, store: EventStore) -> None:
        self.accounts = Repository(store, Account)
        self.repo = self.accounts

    async def create(
        self,
        conn: Conn,
        details: AccountDetails,
        meta: Metadata,
        *,
        owner_id: str | None,
        team_id: str | None,
        lead_id: str | None = None,
    ) -> Account:
        (await custom_fields(self.accounts.store, conn, "account")).check(details.custom_fields)
        domain = normalise_domain(details.domain) if details.domain else None
        existing = await directory.find_account_by_domain(conn, domain)
        if existing is not None:
            raise directory.duplicate_account(existing)
        account = Account.create(
            str(uuid.uuid4()),
            str(uuid.uuid4()),
            details,
            owner_id=owner_id,
            team_id=team_id,
            lead_id=lead_id,
        )
        await self.accounts.save(conn, account, meta)
        await directory.upsert_account(conn, account, _now())
        await directory.sync_domain(conn, account)
        return account

    async def update(
        self,
        conn: Conn,
        account_id: str,
        values: AccountDetails,
        fields: list[str],
        meta: Metadata,
        expected: int | None,
        authorize: Callable[[Account], None] | None = None,
    ) -> Account:
        account = await self.accounts.load(account_id, conn=conn)
        if authorize is not None:
            authorize(account)
        check_version(expected, account.version)
        if "custom_fields" in fields:
            defs = await custom_fields(self.accounts.store, conn, "account")
            defs.check(values.custom_fields)
        if account.update(values, fields):
            await self.accounts.save(conn, account, meta)
            await directory.upsert_account(conn, account, _now())
            await directory.sync_domain(conn, account)
        return account


def ensure_not_merged(record: Contact | Account) -> None:
    if record.merged_into:
        raise Conflict(
            f"{record.kind} {record.id} was merged into {record.merged_into}",
            survivor_id=record.merged_into,
        )
