"""One person, three arrival paths, one customer (design §5, docs/identity.md).

The whole platform in one process over the real broker: sales, marketing, the service desk and
analytics, each with its own database, relays publishing their events, the sales identity desk
and the people directories consuming them, the analytics worker building the timeline, real SMTP
into the mail catcher and real SMTP into the service desk's inbound endpoint.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import aiosmtplib
import httpx
import pytest

from crm_analytics.app import create_app as create_analytics
from crm_marketing.app import create_app as create_marketing
from crm_runtime import people
from crm_runtime.context import ServiceContext
from crm_runtime.embedded import free_port
from crm_runtime.mailcatcher import MailCatcher
from crm_runtime.relay import OutboxRelay
from crm_runtime.settings import Settings
from crm_runtime.testing import ApiCaller, kafka_broker, unique_name
from crm_sales.app import create_app as create_sales
from crm_service_desk.app import create_app as create_desk
from crm_service_desk.config import DeskSettings

pytestmark = pytest.mark.integration

ORIGIN = "https://shop.example.com"
SUPPORT = "support@desk.example.com"
T = TypeVar("T")


@dataclass
class Platform:
    sales: ApiCaller
    marketer: ApiCaller
    public: httpx.AsyncClient
    desk: ApiCaller
    analytics: ApiCaller
    contexts: dict[str, ServiceContext]
    smtp_port: int
    mail: MailCatcher
    desk_client: httpx.AsyncClient
    agent: ApiCaller

    async def email_support(self, sender: str, subject: str, body: str) -> None:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = sender, SUPPORT, subject
        msg.set_content(body)
        await aiosmtplib.send(msg, hostname="127.0.0.1", port=self.smtp_port)

    async def mail_to(self, address: str, count: int) -> list[Any]:
        async def caught() -> list[Any]:
            found = [self.mail.store.get(m.id) for m in self.mail.store.list(to=address)]
            return found if len(found) >= count else []

        return await eventually(caught, f"{count} mail(s) to {address}", timeout=30)

    async def known(self, service: str, email: str) -> str | None:
        async with self.contexts[service].pool.acquire() as conn:
            return await people.known(conn, email)

    async def timeline(self, customer: str) -> tuple[str, list[dict[str, Any]]]:
        r = await self.analytics.get(f"/customers/{customer}/timeline", params={"limit": 200})
        if r.status_code == 404:  # nothing about them has reached analytics yet
            return customer, []
        assert r.status_code == 200, r.text
        return r.headers["X-Customer-Id"], r.json()["items"]


async def eventually(probe: Callable[[], Awaitable[T]], what: str, timeout: float = 180.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = await probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)


@pytest.fixture(scope="module")
def kafka() -> Iterator[tuple[str, bool]]:
    """A broker of this module's own, away from the history and consumer groups other tests
    leave on the shared one. On the shared broker the three-paths test timed out in 2 of 4 full
    runs (ada's ticket never reached the timeline; the cause is not found), never alone."""
    with kafka_broker() as broker:
        yield broker


@pytest.fixture
async def platform(
    fresh_db: Callable[..., Any],
    settings_for: Callable[..., Settings],
    kafka: tuple[str, bool],
    token: Callable[..., str],
    tmp_path: Path,
) -> AsyncIterator[Platform]:
    async with MailCatcher(tmp_path / "mail") as mail:
        smtp = f"smtp://127.0.0.1:{mail.smtp_port}"
        dbs = {
            "sales": await fresh_db("crm_sales"),
            "marketing": await fresh_db(people.MIGRATIONS, "crm_marketing"),
            "service-desk": await fresh_db(people.MIGRATIONS, "crm_service_desk"),
            "analytics": await fresh_db("crm_analytics"),
        }
        common = {"scheduler_enabled": False, "smtp_url": smtp}
        inbound_port = free_port()
        apps = {
            "sales": create_sales(settings_for("sales", database_url=dbs["sales"], **common)),
            "marketing": create_marketing(
                settings_for("marketing", database_url=dbs["marketing"], **common)
            ),
            "service-desk": create_desk(
                settings_for("service-desk", database_url=dbs["service-desk"], **common),
                DeskSettings(
                    support_address=SUPPORT,
                    inbound_smtp_enabled=True,
                    inbound_smtp_port=inbound_port,
                    acknowledge_new_tickets=False,
                ),
            ),
            "analytics": create_analytics(
                settings_for("analytics", database_url=dbs["analytics"], consumers_enabled=False)
            ),
        }
        env = {
            **os.environ,
            "ANALYTICS_DATABASE_URL": dbs["analytics"],
            "KAFKA_BOOTSTRAP_SERVERS": kafka[0],
            "KAFKA_EMBEDDED": str(kafka[1]).lower(),
            "KAFKA_PARTITIONS": "3",
            "ANALYTICS_APP_ID": unique_name("analytics"),
            "LOG_LEVEL": "WARNING",
        }
        worker = subprocess.Popen(
            [sys.executable, "-m", "crm_runtime.cli", "analytics-worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stop = asyncio.Event()
        relays: list[asyncio.Task[None]] = []
        try:
            async with (
                apps["sales"].router.lifespan_context(apps["sales"]),
                apps["marketing"].router.lifespan_context(apps["marketing"]),
                apps["service-desk"].router.lifespan_context(apps["service-desk"]),
                apps["analytics"].router.lifespan_context(apps["analytics"]),
            ):
                contexts = {name: app.state.ctx for name, app in apps.items()}
                for name, context in (
                    ("sales", "sales"),
                    ("marketing", "marketing"),
                    ("service-desk", "service"),
                ):
                    ctx = contexts[name]
                    relay = OutboxRelay(ctx.pool, ctx.store, ctx.settings, context)
                    relays.append(asyncio.create_task(relay.run(stop)))
                clients = {
                    name: httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=app, client=("198.51.100.9", 4000)),
                        base_url=f"http://{name}",
                    )
                    for name, app in apps.items()
                }
                try:
                    yield Platform(
                        sales=ApiCaller(clients["sales"], token("sales_manager", user="mgr")),
                        marketer=ApiCaller(clients["marketing"], token("marketer", user="mia")),
                        public=clients["marketing"],
                        desk=ApiCaller(clients["service-desk"], token("service_manager")),
                        analytics=ApiCaller(clients["analytics"], token("analyst")),
                        contexts=contexts,
                        smtp_port=inbound_port,
                        mail=mail,
                        desk_client=clients["service-desk"],
                        agent=ApiCaller(
                            clients["service-desk"], token("service_agent", user="ann")
                        ),
                    )
                finally:
                    stop.set()
                    await asyncio.gather(*relays, return_exceptions=True)
                    for c in clients.values():
                        await c.aclose()
        finally:
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()


async def web_form(p: Platform) -> tuple[str, str]:
    r = await p.marketer.post(
        "/site-keys",
        json={"name": "shop", "allowed_origins": [ORIGIN], "rate_limit_per_minute": 1000},
    )
    assert r.status_code == 201, r.text
    key = r.json()["site_key_id"]
    r = await p.marketer.post(
        "/forms",
        json={
            "site_key_id": key,
            "name": "Demo request",
            "fields": [
                {
                    "name": "email",
                    "label": "E-mail",
                    "type": "email",
                    "required": True,
                    "maps_to": "email",
                },
                {"name": "first_name", "label": "First name", "maps_to": "first_name"},
                {"name": "last_name", "label": "Last name", "maps_to": "last_name"},
            ],
        },
    )
    assert r.status_code == 201, r.text
    return key, r.json()["form_id"]


async def submit(p: Platform, key: str, form: str, **body: str) -> None:
    r = await p.public.post(
        f"/public/forms/{form}/submissions",
        params={"key": key},
        json=body,
        headers={"Origin": ORIGIN},
    )
    assert r.status_code == 202, r.text


async def test_three_arrival_paths_end_as_one_customer_each(platform: Platform) -> None:
    p = platform
    key, form = await web_form(p)

    # 1. Web form first: marketing mints an id, sales captures a web lead with it.
    await submit(
        p,
        key,
        form,
        email="ada@example.com",
        first_name="Ada",
        last_name="Lovelace",
        utm_source="newsletter",
        utm_campaign="spring",
    )
    ada = await eventually(lambda: p.known("marketing", "ada@example.com"), "ada minted")

    async def ada_lead() -> Any:
        items = (await p.sales.get("/leads", params={"source": "web_form"})).json()["items"]
        return [i for i in items if i["customer_id"] == ada]

    [lead] = await eventually(ada_lead, "the web lead in sales")
    assert lead["email"] == "ada@example.com"
    converted = await p.sales.post(f"/leads/{lead['id']}/convert", json={"create_account": False})
    assert converted.status_code in (200, 201), converted.text
    assert converted.json()["customer_id"] == ada
    # ... and her support e-mail lands on the same customer.
    await eventually(lambda: p.known("service-desk", "ada@example.com"), "ada known to the desk")
    await p.email_support("Ada Lovelace <ada@example.com>", "Engine stalls", "It stops at 3.")

    # 2. A sales call first: the contact's customer id is used by marketing and the desk.
    bea = (
        await p.sales.post(
            "/contacts",
            json={"first_name": "Bea", "last_name": "Byte", "emails": ["bea@example.com"]},
        )
    ).json()["customer_id"]
    await eventually(lambda: p.known("marketing", "bea@example.com"), "bea known to marketing")
    await eventually(lambda: p.known("service-desk", "bea@example.com"), "bea known to the desk")
    await submit(p, key, form, email="bea@example.com", first_name="Bea")
    await p.email_support("bea@example.com", "Invoice question", "Which VAT rate?")

    # 3. A support e-mail first: the desk mints an id; sales makes it a contact.
    await p.email_support("Carol <carol@example.com>", "Broken", "Nothing works.")
    carol = await eventually(lambda: p.known("service-desk", "carol@example.com"), "carol")

    async def carol_contact() -> Any:
        items = (await p.sales.get("/contacts")).json()["items"]
        return [i for i in items if i["customer_id"] == carol]

    await eventually(carol_contact, "carol's contact in sales")
    await eventually(lambda: p.known("marketing", "carol@example.com"), "carol in marketing")
    await submit(p, key, form, email="carol@example.com", first_name="Carol")

    # Each person is one customer on the timeline, with every context's touchpoints.
    wanted = {
        ("marketing", "crm.marketing.form.submitted"),
        ("service", "crm.service.ticket.opened"),
        ("sales", "crm.sales.contact.created"),
    }

    last_seen: dict[str, Any] = {}

    async def touchpoints(customer: str) -> Any:
        root, items = await p.timeline(customer)
        seen = {(i["context"], i["type"]) for i in items}
        last_seen[customer] = sorted(seen)
        return (root, seen) if wanted <= seen else None

    seen: dict[str, set[tuple[str, str]]] = {}
    names = {ada: "ada", bea: "bea", carol: "carol"}
    for customer in (ada, bea, carol):
        try:
            root, seen[customer] = await eventually(
                lambda c=customer: touchpoints(c),  # type: ignore[misc]
                f"every context's touchpoints on {names[customer]}'s timeline",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; seen: {last_seen.get(customer)}") from None
        assert root == customer
    assert {
        ("marketing", "crm.marketing.person.sighted"),
        ("sales", "crm.sales.lead.captured"),
        ("sales", "crm.sales.lead.converted"),
    } <= seen[ada]
    assert not any(t.endswith("person.sighted") for _, t in seen[bea])  # known from the start
    assert ("service", "crm.service.person.sighted") in seen[carol]
    # nobody was created twice: three people, two contacts made by hand or from a ticket, one lead
    contacts = (await p.sales.get("/contacts")).json()["items"]
    assert sorted(c["customer_id"] for c in contacts) == sorted([ada, bea, carol])
    leads = (await p.sales.get("/leads")).json()["items"]
    assert [x["customer_id"] for x in leads] == [ada]


async def test_two_contexts_minting_for_one_address_converge(platform: Platform) -> None:
    p = platform
    key, form = await web_form(p)
    # Both contexts meet dave before either hears from sales: two provisional ids.
    await asyncio.gather(
        submit(p, key, form, email="dave@example.com", first_name="Dave"),
        p.email_support("dave@example.com", "Help", "Please"),
    )
    m = await eventually(lambda: p.known("marketing", "dave@example.com"), "dave in marketing")
    s = await eventually(lambda: p.known("service-desk", "dave@example.com"), "dave at the desk")

    async def one_root() -> Any:
        root_m, items_m = await p.timeline(m)
        root_s, _ = await p.timeline(s)
        contexts = {i["context"] for i in items_m}
        return root_m if root_m == root_s and {"marketing", "service"} <= contexts else None

    root = await eventually(one_root, "one customer for both ids")
    assert root in (m, s)

    # the directories follow sales' answer too
    async def directories_agree() -> bool:
        return (
            (await p.known("marketing", "dave@example.com"))
            == (await p.known("service-desk", "dave@example.com"))
            == root
        )

    await eventually(directories_agree, "both directories on one id")


async def test_a_support_mail_answered_resolved_and_rated_is_on_the_customer_timeline(
    platform: Platform,
) -> None:
    """Issue 5 (a): e-mail → ticket → routed → answered (the reply reaches the customer's
    mailbox) → resolved → rated; every step on the timeline every department sees."""
    from crm_events.schemas.service_routing import RoutingRule
    from crm_runtime.eventstore import Metadata
    from crm_service_desk.application import routing

    p = platform
    ctx, meta = p.contexts["service-desk"], Metadata(actor="setup")
    async with ctx.pool.acquire() as conn, conn.transaction():
        await routing.QueueHandlers(ctx.store).set(
            conn, "printers", meta, name="Printers", description=None, active=True, expected=None
        )
        await routing.AgentHandlers(ctx.store).set_profile(
            conn, "ann", meta, email="ann@desk.example.com", display_name=None,
            skills=[], languages=[], queues=["printers"], active=True, expected=None,
        )  # fmt: skip
        await routing.set_rules(
            conn, ctx.store, [RoutingRule(rule_id="all", queue_id="printers")], None, meta, None
        )
    await p.email_support("Linus <linus@example.com>", "Printer on fire", "It smokes.")
    linus = await eventually(lambda: p.known("service-desk", "linus@example.com"), "linus")

    async def ticket() -> Any:
        items = (await p.desk.get("/tickets")).json()["items"]
        return items[0] if items and items[0]["assignee_id"] == "ann" else None

    t = await eventually(ticket, "the ticket routed to ann")
    r = await p.agent.post(f"/tickets/{t['id']}/replies", json={"body": "Unplug it, please."})
    assert r.status_code == 200, r.text
    [answer] = [m for m in await p.mail_to("linus@example.com", 1) if "Unplug it" in m.text]
    assert f"[#{t['id']}]" in answer.subject
    r = await p.agent.post(f"/tickets/{t['id']}/resolve", json={"resolution": "Unplugged"})
    assert r.status_code == 200, r.text
    mails = await p.mail_to("linus@example.com", 2)
    [survey] = [m for m in mails if "/survey/" in (m.text or "")]
    token = survey.text.split("/survey/")[1].split()[0].strip(".,)>")
    rated = await p.desk_client.post(f"/survey/{token}", json={"score": 4, "comment": "Quick"})
    assert rated.status_code == 201, rated.text

    steps = [
        "crm.service.ticket.opened",
        "crm.service.ticket.assigned",
        "crm.service.ticket.replied",
        "crm.service.ticket.resolved",
        "crm.service.ticket.rated",
    ]

    async def on_timeline() -> Any:
        _, items = await p.timeline(linus)
        types = [i["type"] for i in items if i["context"] == "service"]
        return items if all(s in types for s in steps) else None

    items = await eventually(on_timeline, "every step of the ticket on the timeline")
    service = [i for i in items if i["type"] in steps]
    assert [i["type"] for i in service] == steps  # in time order
    assert all(i["link"] == f"service:/tickets/{t['id']}" for i in service)
    assert service[-1]["summary"] == "Rated the support 4/5"
    # the service desk's sighting made linus a contact in sales, on the same timeline
    assert any(i["type"] == "crm.sales.contact.created" for i in items)

    async def settled() -> Any:  # the 360's projections run just after the timeline's
        view = (await p.analytics.get(f"/customers/{linus}")).json()
        return view if view.get("open_tickets") == 0 else None

    view = await eventually(settled, "the 360 without open tickets")
    assert view["kind"] == "contact"
