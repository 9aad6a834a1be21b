"""Read models of contacts and accounts, and the duplicate guards (normalised e-mail, domain).

Written in the transaction that saves the aggregate's events, so a duplicate aborts the command
and nothing is stored.
"""

from __future__ import annotations

import json
from datetime import datetime

from crm_runtime.db import Conn
from crm_runtime.errors import Conflict
from crm_sales.domain.account import Account
from crm_sales.domain.contact import Contact


async def _resolve(conn: Conn, table: str, record_id: str) -> str:
    """Follow merge pointers to the record that stands today."""
    key = "contact_id" if table == "contacts" else "account_id"
    for _ in range(10):
        nxt = await conn.fetchval(
            f"SELECT merged_into FROM {table} WHERE {key} = $1",
            record_id,
        )
        if nxt is None:
            break
        record_id = str(nxt)
    return record_id


async def _merged_into(conn: Conn, table: str, record_id: str, survivor: str) -> bool:
    return await _resolve(conn, table, record_id) == survivor


async def _holder(conn: Conn, table: str, record_id: str, value: str) -> str | None:
    """Who holds an e-mail today: the contact, or the survivor it was merged into — but only if
    that survivor still has it (a survivor may drop an address it took over)."""
    survivor = await _resolve(conn, table, record_id)
    if survivor == record_id:
        return survivor
    held = await conn.fetchval(
        "SELECT details->'emails' ? $2 FROM contacts WHERE contact_id = $1", survivor, value
    )
    return survivor if held else None


async def find_contact_by_emails(conn: Conn, emails: list[str]) -> str | None:
    if not emails:
        return None
    rows = await conn.fetch(
        "SELECT email, contact_id FROM contact_emails WHERE email = ANY($1::text[])", emails
    )
    for r in rows:
        holder = await _holder(conn, "contacts", r["contact_id"], r["email"])
        if holder is not None:
            return holder
    return None


async def find_account_by_domain(conn: Conn, domain: str | None) -> str | None:
    if not domain:
        return None
    row = await conn.fetchval("SELECT account_id FROM account_domains WHERE domain = $1", domain)
    # a merged account's domain still names the same company: it resolves to the survivor
    return await _resolve(conn, "accounts", str(row)) if row is not None else None


def duplicate_contact(existing: str) -> Conflict:
    return Conflict(
        f"a contact with this e-mail already exists: {existing}",
        existing_id=existing,
        existing=f"/contacts/{existing}",
    )


def duplicate_account(existing: str) -> Conflict:
    return Conflict(
        f"an account with this domain already exists: {existing}",
        existing_id=existing,
        existing=f"/accounts/{existing}",
    )


async def sync_emails(conn: Conn, contact: Contact) -> None:
    """Make the e-mail guard hold the contact's current e-mails; another's is a 409.

    A merged contact keeps its rows (they resolve to the survivor), so an undo needs no moves.
    """
    emails = contact.emails
    await conn.execute(
        "DELETE FROM contact_emails WHERE contact_id = $1 AND NOT (email = ANY($2::text[]))",
        contact.id,
        emails,
    )
    for email in emails:
        owner = await conn.fetchval(
            "INSERT INTO contact_emails (email, contact_id) VALUES ($1, $2)"
            " ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email RETURNING contact_id",
            email,
            contact.id,
        )
        if owner != contact.id and not await _merged_into(conn, "contacts", owner, contact.id):
            holder = await _holder(conn, "contacts", str(owner), email)
            if holder is not None:
                raise duplicate_contact(holder)
            # held by a merged record whose survivor dropped it since: free to take
            await conn.execute(
                "UPDATE contact_emails SET contact_id = $2 WHERE email = $1", email, contact.id
            )


async def sync_domain(conn: Conn, account: Account) -> None:
    domain = account.details.get("domain")
    await conn.execute(
        "DELETE FROM account_domains WHERE account_id = $1 AND domain IS DISTINCT FROM $2",
        account.id,
        domain,
    )
    if not domain:
        return
    owner = await conn.fetchval(
        "INSERT INTO account_domains (domain, account_id) VALUES ($1, $2)"
        " ON CONFLICT (domain) DO UPDATE SET domain = EXCLUDED.domain RETURNING account_id",
        domain,
        account.id,
    )
    if owner != account.id and not await _merged_into(conn, "accounts", owner, account.id):
        raise duplicate_account(await _resolve(conn, "accounts", str(owner)))


async def upsert_contact(conn: Conn, c: Contact, at: datetime) -> None:
    await conn.execute(
        """
        INSERT INTO contacts (contact_id, customer_id, display_name, email, account_id, owner_id,
                              team_id, tags, merged_into, details, version, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $12)
        ON CONFLICT (contact_id) DO UPDATE SET
            display_name = EXCLUDED.display_name, email = EXCLUDED.email,
            account_id = EXCLUDED.account_id, owner_id = EXCLUDED.owner_id,
            team_id = EXCLUDED.team_id, tags = EXCLUDED.tags, merged_into = EXCLUDED.merged_into,
            details = EXCLUDED.details, version = EXCLUDED.version,
            updated_at = EXCLUDED.updated_at
        """,
        c.id,
        c.customer_id,
        c.display_name,
        c.emails[0] if c.emails else None,
        c.details.get("account_id"),
        c.owner_id,
        c.team_id,
        list(c.details.get("tags") or []),
        c.merged_into,
        json.dumps(c.details),
        c.version,
        at,
    )


async def upsert_account(conn: Conn, a: Account, at: datetime) -> None:
    await conn.execute(
        """
        INSERT INTO accounts (account_id, customer_id, name, domain, tier, owner_id, team_id,
                              tags, merged_into, details, version, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $12)
        ON CONFLICT (account_id) DO UPDATE SET
            name = EXCLUDED.name, domain = EXCLUDED.domain, tier = EXCLUDED.tier,
            owner_id = EXCLUDED.owner_id, team_id = EXCLUDED.team_id, tags = EXCLUDED.tags,
            merged_into = EXCLUDED.merged_into, details = EXCLUDED.details,
            version = EXCLUDED.version, updated_at = EXCLUDED.updated_at
        """,
        a.id,
        a.customer_id,
        a.name,
        a.details.get("domain"),
        a.tier,
        a.owner_id,
        a.team_id,
        list(a.details.get("tags") or []),
        a.merged_into,
        json.dumps(a.details),
        a.version,
        at,
    )
