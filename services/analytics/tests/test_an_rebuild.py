"""`crm analytics rebuild`: the state rebuilt from Kafka, and from the services' event feeds,
equals the state the projections built incrementally; the rebuild and the worker exclude each
other through the advisory lock."""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from an_helpers import feed, snapshot

from crm_analytics.rebuild import (
    REBUILD_LOCK,
    FeedSettings,
    FeedSource,
    KafkaSource,
    Progress,
    RebuildRefused,
    choose_source,
    kafka_holds_full_history,
    rebuild,
    worker_turn,
)
from crm_events import CloudEvent
from crm_runtime import db
from crm_runtime import kafka as kafka_clients
from crm_runtime.consumer import ConsumedRecord
from crm_runtime.eventstore import Checkpoint, EventStore, Metadata, NewEvent
from crm_runtime.http.app import create_service_app
from crm_runtime.settings import Settings
from crm_runtime.testing import ApiCaller
from crm_sales.app import create_app as create_sales_app

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def running(app: Any, token: str) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://svc",
            headers={"Authorization": f"Bearer {token}"},
        ) as client,
    ):
        yield client, app.state.ctx


async def sighted(store: EventStore, pool: asyncpg.Pool, context: str, customer: str) -> None:
    event = NewEvent(
        f"crm.{context}.person.sighted",
        {"customer_id": customer, "email": f"{uuid.uuid4().hex[:8]}@example.org",
         "first_name": "P", "sighted_as": "customer", "source_detail": "test"},
        subject=customer,
    )  # fmt: skip
    async with pool.acquire() as conn, conn.transaction():
        await store.append(conn, f"person-{uuid.uuid4()}", "person", 0, [event], Metadata())


async def scenario(sales: ApiCaller, stores: dict[str, Any]) -> None:
    """Real sales commands (products, contacts, accounts, deals with lines, stage moves, wins and
    losses, reassignments, new terms), with marketing and service sightings in between."""
    products = []
    for sku, price in (("SEAT", 12_000), ("SETUP", 50_000), ("SUPPORT", 20_000)):
        r = await sales.post(
            "/products",
            json={"sku": sku, "name": sku.title(), "tax_rate": "19", "prices": {"EUR": price}},
        )
        assert r.status_code == 201, r.text
        products.append(r.json()["id"])
    seat, setup, support = products
    contacts = []
    for name in ("Ada", "Brian", "Carol", "Dan"):
        r = await sales.post("/contacts", json={"last_name": name, "owner_id": "meg"})
        assert r.status_code == 201, r.text
        contacts.append(r.json())
    account = (await sales.post("/accounts", json={"name": "Engines", "owner_id": "meg"})).json()
    await stores["marketing"](contacts[0]["customer_id"])
    baskets = [
        (contacts[0], [(seat, 10), (setup, 1)], "won"),
        (contacts[1], [(seat, 5), (support, 1)], "won"),
        (contacts[2], [(setup, 1)], "lost"),
        (contacts[3], [(seat, 2), (setup, 1), (support, 1)], "won"),
        (contacts[0], [(support, 2)], "open"),
    ]
    for i, (contact, lines, outcome) in enumerate(baskets):
        body = {
            "name": f"deal {i}",
            "contact_id": contact["id"],
            "currency": "EUR",
            "owner_id": "meg",
            "lines": [{"product_id": p, "quantity": q} for p, q in lines],
        }
        r = await sales.post("/deals", json=body)
        assert r.status_code == 201, r.text
        deal = r.json()["id"]
        for stage in ("qualified", "demo"):
            assert (await sales.post(f"/deals/{deal}/stage", json={"stage": stage})).is_success
        if i == 1:
            await stores["service"](contact["customer_id"])
            r = await sales.patch(f"/deals/{deal}", json={"lines": [{"product_id": seat,
                                                                      "quantity": 7}]})  # fmt: skip
            assert r.status_code == 200, r.text
        if outcome == "won":
            assert (await sales.post(f"/deals/{deal}/stage", json={"stage": "won"})).is_success
        elif outcome == "lost":
            move = {"stage": "lost", "reason": "budget"}
            assert (await sales.post(f"/deals/{deal}/stage", json=move)).is_success
        else:
            r = await sales.post(f"/deals/{deal}/reassign", json={"owner_id": "bob"})
            assert r.status_code == 200, r.text
    body = {"name": "account deal", "currency": "EUR", "account_id": account["id"]}
    r = await sales.post("/deals", json=body)
    assert r.status_code == 201, r.text
    await stores["marketing"](str(uuid.uuid4()))  # someone sales never heard of


def records_of(events: list[Any], context: str, source: str) -> list[tuple[Any, ConsumedRecord]]:
    out = []
    for e in events:
        k = e.to_cloud_event(source).to_kafka()
        record = ConsumedRecord(f"crm.{context}.events", 0, e.position, k.key, k.value, k.headers)
        out.append((e.occurred_at, record))
    return out


async def test_rebuilt_state_equals_the_incremental_state(
    fresh_db: Callable[..., Any],
    settings_for: Callable[..., Settings],
    token: Callable[..., str],
) -> None:
    analyst = token("analyst", user="rebuild-test")
    apps = {
        "sales": create_sales_app(
            settings_for(
                "sales",
                database_url=await fresh_db(),
                scheduler_enabled=False,
                consumers_enabled=False,
            )
        ),
        # the event feed is the runtime's (identical in every service): the marketing and
        # service-desk apps here are that feed over their own event stores
        "marketing": create_service_app(
            settings_for("marketing", database_url=await fresh_db()),
            title="marketing",
            description="feed",
            routers=[],
            migrations=[],
        ),
        "service": create_service_app(
            settings_for("service-desk", database_url=await fresh_db()),
            title="service",
            description="feed",
            routers=[],
            migrations=[],
        ),
    }
    analytics_url = await fresh_db("crm_analytics")
    pool = await db.create_pool(analytics_url, max_size=6)
    settings = settings_for("analytics", database_url=analytics_url)
    async with contextlib.AsyncExitStack() as stack:
        clients: dict[str, httpx.AsyncClient] = {}
        ctxs: dict[str, Any] = {}
        for context, app in apps.items():
            clients[context], ctxs[context] = await stack.enter_async_context(running(app, analyst))
        meg = ApiCaller(clients["sales"], token("sales_manager", user="meg", team="emea"))

        def sight(context: str) -> Callable[[str], Any]:
            return lambda c: sighted(ctxs[context].store, ctxs[context].pool, context, c)

        await scenario(meg, {c: sight(c) for c in ("marketing", "service")})

        # what the worker would have built, applying the events as they happened
        stored = {c: await ctxs[c].store.read_committed(Checkpoint(), 10_000) for c in ctxs}
        timed = [
            pair for c, events in stored.items() for pair in records_of(events, c, ctxs[c].source)
        ]
        timed.sort(key=lambda p: p[0])
        assert len(timed) > 30
        await feed(pool, [r for _, r in timed], batch=5)
        async with pool.acquire() as conn:
            incremental = await snapshot(conn)
        assert len(incremental["deal_versions"]) > 20 and incremental["timeline"]

        # Kafka: private topics (the session's broker is shared), written as the relay would
        topics = {c: f"an.{uuid.uuid4().hex[:8]}.{c}.events" for c in ctxs}
        admin = kafka_clients.admin(settings)
        await admin.start()
        try:
            await kafka_clients.ensure_topics(admin, list(topics.values()), 3, 1)
        finally:
            await admin.close()
        producer = kafka_clients.producer(settings)
        await producer.start()
        try:
            for c, events in stored.items():
                for e in events:
                    k = e.to_cloud_event(ctxs[c].source).to_kafka()
                    await producer.send_and_wait(
                        topics[c], value=k.value, key=k.key, headers=k.headers
                    )
        finally:
            await producer.stop()
        assert await kafka_holds_full_history(settings, topics.values())
        source = await choose_source(settings, "auto", FeedSettings(), topics)
        assert isinstance(source, KafkaSource)
        out = io.StringIO()
        result = await rebuild(pool, source, progress=Progress(write=out.write), batch_size=50)
        assert result.source == "kafka" and result.records == len(timed)
        assert f"{len(timed):,}/{len(timed):,} events (100%)" in out.getvalue()
        async with pool.acquire() as conn:
            assert await snapshot(conn) == incremental

        # the feeds: every service's GET /events, paged, with the analyst token
        result = await rebuild(
            pool, FeedSource(clients, page=7), progress=Progress(write=io.StringIO().write)
        )
        assert result.source == "feed" and result.records == len(timed)
        assert result.outcomes["analytics.timeline"] == {"applied": len(timed)}
        async with pool.acquire() as conn:
            assert await snapshot(conn) == incremental

        # a topic that is not there (or lost its start): the feeds
        missing = {**topics, "service": f"an.{uuid.uuid4().hex[:8]}.missing"}
        fallback = await choose_source(settings, "auto", FeedSettings(), missing)
        assert isinstance(fallback, FeedSource) and set(fallback.clients) == set(ctxs)
        for client in fallback.clients.values():
            await client.aclose()
    await pool.close()


class HeldSource:
    """A source that yields one event and then waits until released."""

    name = "held"
    total: int | None = 1

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[list[AsyncIterator[list[ConsumedRecord]]]]:
        async def stream() -> AsyncIterator[list[ConsumedRecord]]:
            self.started.set()
            await self.release.wait()
            k = CloudEvent(
                id=uuid.uuid4(), source="/crm/sales", type="crm.sales.deal.lost",
                time="2026-01-01T00:00:00Z", subject="c", streamid="deal-x", streamversion=1,
                schemaversion=1, data={"deal_id": "x", "stage": "lost", "reason": "r"},
            ).to_kafka()  # fmt: skip
            yield [ConsumedRecord("crm.sales.events", 0, 0, k.key, k.value, k.headers)]

        yield [stream()]


async def test_rebuild_and_worker_exclude_each_other(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:  # the pool fixture's database has the runtime's tables
        await db.migrate(conn, [(f"crm_analytics:{n}", sql) for n, sql in
                                db.package_migrations("crm_analytics")])  # fmt: skip
    quiet = Progress(write=io.StringIO().write)
    # a worker batch in flight: the rebuild waits for it, then refuses
    async with worker_turn(pool):
        with pytest.raises(RebuildRefused, match="stop the analytics worker"):
            await rebuild(pool, HeldSource(), progress=quiet, wait=0.3)
    # a rebuild in progress: a worker batch waits
    held = HeldSource()
    task = asyncio.create_task(rebuild(pool, held, progress=quiet))
    await asyncio.wait_for(held.started.wait(), 10)
    probe = await pool.acquire()
    try:
        await probe.execute("SET lock_timeout = '300ms'")
        with pytest.raises(asyncpg.LockNotAvailableError):
            await probe.execute("SELECT pg_advisory_lock_shared($1)", REBUILD_LOCK)
        with pytest.raises(RebuildRefused):  # and a second rebuild refuses
            await rebuild(pool, HeldSource(), progress=quiet, wait=0.3)
        held.release.set()
        result = await asyncio.wait_for(task, 10)
        assert result.outcomes["analytics.sales"] == {"applied": 1}
        await probe.execute("SELECT pg_advisory_lock_shared($1)", REBUILD_LOCK)  # free again
        await probe.execute("SELECT pg_advisory_unlock_shared($1)", REBUILD_LOCK)
        await probe.execute("RESET lock_timeout")
    finally:
        await pool.release(probe)


def test_the_cli_command() -> None:
    from crm_runtime.cli import build_parser

    args = build_parser().parse_args(["analytics", "rebuild", "--source", "feed"])
    assert (args.source, args.batch_size) == ("feed", 500)
    assert args.func.__name__ == "_cmd_analytics"
    assert build_parser().parse_args(["analytics", "rebuild"]).source == "auto"
