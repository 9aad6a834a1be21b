"""Command handlers: rep profiles, assignment rules and routing, activities and tasks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal, TypeVar

from crm_events.schemas.sales import About, AssignmentRule
from crm_runtime.aggregate import Aggregate
from crm_runtime.db import Conn
from crm_runtime.errors import InvalidInput, NotFound
from crm_runtime.eventstore import EventStore, Metadata
from crm_runtime.repository import Repository, check_version
from crm_sales.adapters import work_view
from crm_sales.domain.account import Account
from crm_sales.domain.assignment import RULES_ID, AssignmentRules, Decision, Rep, route
from crm_sales.domain.contact import Contact
from crm_sales.domain.deal import Deal
from crm_sales.domain.work import Activity, Task

A = TypeVar("A", bound=Aggregate)


def _now() -> datetime:
    return datetime.now(UTC)


class Router:
    """Decides who gets a new lead or deal, from the rules and the reps' profiles and load."""

    def __init__(self, store: EventStore) -> None:
        self.rules = Repository(store, AssignmentRules)

    async def current_rules(self, conn: Conn) -> AssignmentRules:
        try:
            return await self.rules.load(RULES_ID, conn=conn)
        except NotFound:
            return AssignmentRules(RULES_ID)

    async def decide(
        self,
        conn: Conn,
        kind: Literal["lead", "deal"],
        region: str | None,
        product_line: str | None,
    ) -> Decision | None:
        rules = await self.current_rules(conn)
        if not rules.rules:
            return None
        decision = route(
            rules.rules,
            kind,
            region,
            product_line,
            await work_view.candidates(conn),
            await work_view.open_work(conn),
            await work_view.last_chosen(conn),
        )
        if decision is not None:
            await work_view.remember_choice(conn, decision.rule_id, decision.owner_id)
        return decision

    async def set_rules(
        self, conn: Conn, rules: list[AssignmentRule], meta: Metadata, expected: int | None
    ) -> AssignmentRules:
        current = await self.current_rules(conn)
        check_version(expected, current.version)
        current.replace(rules)
        if current.pending:
            await self.rules.save(conn, current, meta)
        return current


class RepHandlers:
    def __init__(self, store: EventStore) -> None:
        self.reps = Repository(store, Rep)

    async def load_or_new(self, conn: Conn, user_id: str) -> Rep:
        try:
            return await self.reps.load(user_id, conn=conn)
        except NotFound:
            return Rep(user_id)

    async def set_profile(
        self,
        conn: Conn,
        user_id: str,
        meta: Metadata,
        *,
        email: str | None,
        team_id: str | None,
        regions: list[str],
        product_lines: list[str],
        expected: int | None,
    ) -> Rep:
        rep = await self.load_or_new(conn, user_id)
        check_version(expected, rep.version)
        rep.set_profile(email=email, team_id=team_id, regions=regions, product_lines=product_lines)
        if rep.pending:
            await self.reps.save(conn, rep, meta)
            await work_view.upsert_rep(conn, rep, _now())
        return rep

    async def set_availability(
        self, conn: Conn, user_id: str, available: bool, reason: str | None, meta: Metadata
    ) -> Rep:
        rep = await self.load_or_new(conn, user_id)
        rep.set_availability(available, reason)
        if rep.pending:
            await self.reps.save(conn, rep, meta)
            await work_view.upsert_rep(conn, rep, _now())
        return rep


class WorkHandlers:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.activities = Repository(store, Activity)
        self.tasks = Repository(store, Task)
        self.contacts = Repository(store, Contact)
        self.accounts = Repository(store, Account)
        self.deals = Repository(store, Deal)

    async def resolve(
        self, conn: Conn, about: About
    ) -> tuple[About, str, list[Contact | Account | Deal]]:
        """Check the records exist; fill in the account; return the customer id it is about.

        The customer on the timeline is the person if one is named, else the deal's, else the
        account's.
        """
        records: list[Contact | Account | Deal] = []
        account_id = about.account_id
        customer: str | None = None
        if about.account_id:
            account = await self._load(self.accounts, about.account_id, "account_id", conn)
            records.append(account)
            customer = account.customer_id
        if about.deal_id:
            deal = await self._load(self.deals, about.deal_id, "deal_id", conn)
            records.append(deal)
            customer = deal.customer_id
            account_id = account_id or deal.account_id
        if about.contact_id:
            contact = await self._load(self.contacts, about.contact_id, "contact_id", conn)
            records.append(contact)
            customer = contact.customer_id
            account_id = account_id or contact.details.get("account_id")
        if customer is None:
            raise InvalidInput("about", "name a contact_id, an account_id or a deal_id")
        filled = About(contact_id=about.contact_id, account_id=account_id, deal_id=about.deal_id)
        return filled, customer, records

    async def _load(self, repo: Repository[A], ident: str, field: str, conn: Conn) -> A:
        try:
            return await repo.load(ident, conn=conn)
        except NotFound:
            raise InvalidInput(f"about.{field}", f"{ident} does not exist") from None

    async def log_activity(
        self,
        conn: Conn,
        meta: Metadata,
        *,
        about: About,
        customer_id: str,
        kind: Literal["call", "meeting", "email", "note"],
        subject: str,
        occurred_at: datetime,
        body: str | None,
        duration_minutes: int | None,
        direction: str | None,
        outcome: str | None,
        owner_id: str,
        team_id: str | None,
    ) -> Activity:
        activity = Activity.log(
            str(uuid.uuid4()),
            kind=kind,
            subject=subject,
            occurred_at=occurred_at,
            about=about,
            customer_id=customer_id,
            body=body,
            duration_minutes=duration_minutes,
            direction=direction,
            outcome=outcome,
            owner_id=owner_id,
            team_id=team_id,
        )
        await self.activities.save(conn, activity, meta)
        await work_view.insert_activity(conn, activity, _now())
        return activity

    async def create_task(self, conn: Conn, task: Task, meta: Metadata) -> Task:
        await self.tasks.save(conn, task, meta)
        await work_view.upsert_task(conn, task, _now())
        return task

    async def save_task(self, conn: Conn, task: Task, meta: Metadata) -> Task:
        if task.pending:
            await self.tasks.save(conn, task, meta)
            await work_view.upsert_task(conn, task, _now())
        return task
