"""Command handlers for pipelines, deals and exchange rates."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from crm_events.schemas.sales import DealLine, ExchangeRateSet, Stage
from crm_runtime.db import Conn
from crm_runtime.errors import ConcurrencyError, InvalidInput, NotFound
from crm_runtime.eventstore import EventStore, Metadata, NewEvent
from crm_runtime.repository import Repository, check_version
from crm_sales.adapters import deal_view
from crm_sales.application.directory import ensure_not_merged
from crm_sales.application.work import Router
from crm_sales.domain.account import Account
from crm_sales.domain.contact import Contact
from crm_sales.domain.deal import Deal, Terms
from crm_sales.domain.pipeline import DEFAULT_PIPELINE_ID, DEFAULT_STAGES, Pipeline
from crm_sales.domain.product import Product


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LineRequest:
    """A deal line as asked for: a product of the price book, or a named line with a price."""

    quantity: int
    product_id: str | None = None
    name: str | None = None
    unit_price_minor: int | None = None


@dataclass(frozen=True)
class Parties:
    """Who a new deal is for: the customer on the timeline, and the region for routing."""

    customer_id: str
    region: str | None


class DealHandlers:
    def __init__(self, store: EventStore, base_currency: str) -> None:
        self.store = store
        self.base_currency = base_currency
        self.deals = Repository(store, Deal)
        self.pipelines = Repository(store, Pipeline)

    async def parties(
        self,
        conn: Conn,
        contact_id: str | None,
        account_id: str | None,
        authorize: Callable[[Contact | Account], None],
    ) -> Parties:
        """The deal's customer: the contact (a person) if named, else the account."""
        if contact_id is None and account_id is None:
            raise InvalidInput("contact_id", "a deal needs a contact_id or an account_id")
        customer_id: str | None = None
        region: str | None = None
        for field, ident, repo in (
            ("account_id", account_id, Repository(self.store, Account)),
            ("contact_id", contact_id, Repository(self.store, Contact)),
        ):
            if ident is None:
                continue
            try:
                record = await repo.load(ident, conn=conn)
            except NotFound:
                raise InvalidInput(field, f"{field[:-3]} {ident} does not exist") from None
            ensure_not_merged(record)
            authorize(record)
            customer_id = record.customer_id  # the contact, when both are named
            region = record.details.get("region") or region
        assert customer_id is not None
        return Parties(customer_id, region)

    async def priced_lines(
        self, conn: Conn, items: list[LineRequest], currency: str
    ) -> list[DealLine]:
        """Lines checked against the price book: a product must exist and be active; name and
        unit price default to the product's (its price in the deal currency)."""
        products = Repository(self.store, Product)
        out = []
        for i, item in enumerate(items):
            name, price = item.name, item.unit_price_minor
            if item.product_id is not None:
                try:
                    product = await products.load(item.product_id, conn=conn)
                except NotFound:
                    raise InvalidInput(
                        f"lines.{i}.product_id", f"no product {item.product_id}"
                    ) from None
                if not product.active:
                    raise InvalidInput(f"lines.{i}.product_id", "the product is not active")
                name = name or product.name
                if price is None:
                    price = product.prices.get(currency)
                    if price is None:
                        raise InvalidInput(
                            f"lines.{i}.unit_price_minor",
                            f"the product has no {currency} price; give one",
                        )
            if name is None:
                raise InvalidInput(f"lines.{i}.name", "a line without a product needs a name")
            if price is None:
                raise InvalidInput(
                    f"lines.{i}.unit_price_minor", "a line without a product needs a price"
                )
            out.append(
                DealLine(
                    product_id=item.product_id,
                    name=name,
                    quantity=item.quantity,
                    unit_price_minor=price,
                )
            )
        return out

    async def pipeline(self, conn: Conn, pipeline_id: str | None) -> Pipeline:
        """Load a pipeline; the default one is defined the first time anyone needs it."""
        pid = pipeline_id or DEFAULT_PIPELINE_ID
        try:
            return await self.pipelines.load(pid, conn=conn)
        except NotFound:
            if pid != DEFAULT_PIPELINE_ID:
                raise NotFound(f"pipeline {pid} does not exist") from None
        pipeline = Pipeline.define(DEFAULT_PIPELINE_ID, "Sales pipeline", DEFAULT_STAGES)
        try:
            async with conn.transaction():  # a savepoint: a concurrent definer may win
                await self.pipelines.save(conn, pipeline, Metadata(actor="system"))
        except ConcurrencyError:
            return await self.pipelines.load(pid, conn=conn)
        return pipeline

    async def define_pipeline(
        self, conn: Conn, name: str, stages: list[Stage], meta: Metadata
    ) -> Pipeline:
        pipeline = Pipeline.define(str(uuid.uuid4()), name, stages)
        await self.pipelines.save(conn, pipeline, meta)
        return pipeline

    async def change_stages(
        self,
        conn: Conn,
        pipeline_id: str,
        stages: list[Stage],
        meta: Metadata,
        expected: int | None,
    ) -> Pipeline:
        pipeline = await self.pipeline(conn, pipeline_id)
        check_version(expected, pipeline.version)
        pipeline.change_stages(stages, await deal_view.open_stages(conn, pipeline.id))
        await self.pipelines.save(conn, pipeline, meta)
        return pipeline

    async def exchange_rate(self, conn: Conn, currency: str, field: str = "currency") -> str:
        rate = await deal_view.rate(conn, currency, self.base_currency)
        if rate is None:
            raise InvalidInput(
                field,
                f"no exchange rate from {currency} to {self.base_currency}; "
                f"set one with PUT /exchange-rates/{currency}",
            )
        return str(rate)

    async def open(
        self,
        conn: Conn,
        meta: Metadata,
        *,
        customer_id: str,
        name: str,
        amount_minor: int,
        currency: str,
        expected_close: date | None,
        lines: list[DealLine],
        pipeline_id: str | None,
        stage: str | None,
        owner_id: str | None,
        team_id: str | None,
        account_id: str | None = None,
        contact_id: str | None = None,
        lead_id: str | None = None,
        source: str | None = None,
        region: str | None = None,
        product_line: str | None = None,
    ) -> Deal:
        pipeline = await self.pipeline(conn, pipeline_id)
        rate = await self.exchange_rate(conn, currency)
        deal = Deal.open(
            str(uuid.uuid4()),
            customer_id,
            pipeline,
            Terms(name, amount_minor, currency, rate, expected_close, lines),
            base_currency=self.base_currency,
            stage=stage,
            owner_id=owner_id,
            team_id=team_id,
            account_id=account_id,
            contact_id=contact_id,
            lead_id=lead_id,
            source=source,
        )
        if owner_id is None:  # nobody took it: the assignment rules route it
            decision = await Router(self.store).decide(conn, "deal", region, product_line)
            if decision is not None:
                deal.assign(decision)
        await self.deals.save(conn, deal, meta)
        await deal_view.upsert(conn, deal, _now())
        return deal

    async def move(
        self,
        conn: Conn,
        deal: Deal,
        stage: str,
        reason: str | None,
        meta: Metadata,
        expected: int | None,
    ) -> Deal:
        check_version(expected, deal.version)
        deal.move(await self.pipeline(conn, deal.pipeline_id), stage, reason)
        await self.deals.save(conn, deal, meta)
        await deal_view.upsert(conn, deal, _now())
        return deal

    async def change_terms(
        self, conn: Conn, deal: Deal, terms: Terms, meta: Metadata, expected: int | None
    ) -> Deal:
        check_version(expected, deal.version)
        if terms.currency != deal.currency:
            terms = Terms(
                terms.name,
                terms.amount_minor,
                terms.currency,
                await self.exchange_rate(conn, terms.currency),
                terms.expected_close,
                terms.lines,
            )
        if deal.change_terms(terms):
            await self.deals.save(conn, deal, meta)
            await deal_view.upsert(conn, deal, _now())
        return deal

    async def reassign(
        self,
        conn: Conn,
        deal: Deal,
        owner_id: str | None,
        team_id: str | None,
        meta: Metadata,
        expected: int | None,
    ) -> Deal:
        check_version(expected, deal.version)
        deal.reassign(owner_id, team_id)
        if deal.pending:
            await self.deals.save(conn, deal, meta)
            await deal_view.upsert(conn, deal, _now())
        return deal

    async def set_rate(self, conn: Conn, currency: str, rate: Decimal, meta: Metadata) -> None:
        if currency == self.base_currency:
            raise InvalidInput("currency", f"{currency} is the base currency; its rate is 1")
        stream = f"fx-{currency}"
        version = await self.store.stream_version(stream, conn=conn)
        event = ExchangeRateSet(currency=currency, base_currency=self.base_currency, rate=str(rate))
        await self.store.append(
            conn,
            stream,
            "fx",
            version,
            [NewEvent(type="crm.sales.exchange_rate.set", data=event.model_dump(mode="json"))],
            meta,
        )
        await deal_view.set_rate(conn, currency, self.base_currency, rate, _now())
