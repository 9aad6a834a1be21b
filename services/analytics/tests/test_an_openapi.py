"""The analytics API's OpenAPI document describes what each endpoint answers: every GET of the
service's own routes declares a 200 schema with named properties (nothing left as an empty
``{}``) and an example that fits it, and a real answer of each endpoint, on a history that
reaches every branch, validates against the declared model with nothing left over."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from an_helpers import feed
from fastapi.routing import APIRoute
from pydantic import TypeAdapter
from test_an_bulk import T0, ev

from crm_analytics.app import ROUTERS, create_app
from crm_analytics.samples import _example, history
from crm_runtime.consumer import ConsumedRecord
from crm_runtime.settings import Settings

# T0 (test_an_bulk's, which ev() counts from): the extras' first day; the stories are 2025's


def analytics_routes() -> list[APIRoute]:
    """The GET routes of the service's own routers (not the runtime's probes, metrics, feed)."""
    return [
        r
        for router in ROUTERS
        for r in router.routes
        if isinstance(r, APIRoute) and "GET" in (r.methods or ()) and r.include_in_schema
    ]


def declared_model(route: APIRoute) -> Any:
    """The model a route declares for its 200 answer: its response_model, or (where the route
    serialises by itself) the model its ``responses`` name for 200."""
    if route.response_model is not None:
        return route.response_model
    return route.responses[200]["model"]


def example_of(route: APIRoute) -> Any:
    return route.responses[200]["content"]["application/json"]["example"]


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


def _untyped(spec: dict[str, Any], schema: Any, path: str, seen: set[str]) -> Iterator[str]:
    """Every place under ``schema`` that says nothing about its value (``{}``)."""
    if not isinstance(schema, dict):
        return
    ref = schema.get("$ref")
    if ref is not None:
        if ref not in seen:
            seen.add(ref)
            yield from _untyped(spec, _resolve(spec, schema), path, seen)
        return
    keys = set(schema) - {"title", "description", "examples", "default"}
    if not keys:
        yield path or "<root>"
    for name, sub in (schema.get("properties") or {}).items():
        yield from _untyped(spec, sub, f"{path}.{name}", seen)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for i, sub in enumerate(schema.get(key) or []):
            yield from _untyped(spec, sub, f"{path}[{key}{i}]", seen)
    if isinstance(schema.get("items"), dict):
        yield from _untyped(spec, schema["items"], f"{path}[]", seen)


def test_every_analytics_get_declares_a_typed_200_schema_with_an_example() -> None:
    app = create_app()
    spec = app.openapi()
    routes = analytics_routes()
    # every operation of the service's own paths is among the routes checked below
    own = {p for p in spec["paths"] if p.startswith(("/customers/", "/analytics/"))}
    assert own == {r.path_format for r in routes}
    problems: list[str] = []
    for route in routes:
        op = spec["paths"][route.path_format]["get"]
        content = op["responses"]["200"]["content"]["application/json"]
        schema = _resolve(spec, content["schema"])
        if schema.get("type") != "object" or not schema.get("properties"):
            problems.append(f"{route.path}: 200 schema without named properties")
        problems += [
            f"{route.path}: untyped {p}" for p in _untyped(spec, content["schema"], "", set())
        ]
        # the example shown in the document, nulls included, is one the declared model accepts
        if "example" not in content:
            problems.append(f"{route.path}: no example")
        else:
            assert content["example"] == example_of(route), route.path
            TypeAdapter(declared_model(route)).validate_python(content["example"])
        # every parameter says what it is for
        problems += [
            f"{route.path}: parameter {p['name']} without a description"
            for p in op.get("parameters", [])
            if not p.get("description")
        ]
    assert not problems, "\n".join(problems)


# --- a real answer of every endpoint ------------------------------------------------------------


_ids = itertools.count(1)


def rec(
    type_: str, subject: str | None, minutes: float, stream: str, **data: Any
) -> ConsumedRecord:
    """A record built from the type's contract example, at T0 + ``minutes`` (ids in sequence:
    the same history gives the same answers, run after run)."""
    r = ev(type_, subject, minutes, stream, id_=uuid.UUID(int=next(_ids), version=4), **data)
    k = r.to_kafka()
    return ConsumedRecord(f"crm.{type_.split('.')[1]}.events", 0, 0, k.key, k.value, k.headers)


DAY = 24 * 60


def _lines(*products: str) -> list[dict[str, Any]]:
    return [
        {"product_id": p, "name": p.title(), "quantity": 2, "unit_price_minor": 10_000}
        for p in products
    ]


def extras() -> list[ConsumedRecord]:
    """What the sample stories do not reach: baskets of several products, an open deal in
    another currency, a merge, an overdue invoice, a ticket spike, an open complaint, a breach,
    a trigger's message, bounces, unsubscribes and leads qualified and disqualified."""
    acc, k1, k2 = "acc-x", "con-x1", "con-x2"
    out = [
        rec("crm.sales.account.created", acc, 0, f"account-{acc}", customer_id=acc,
            owner_id="olga"),
        rec("crm.sales.contact.created", k1, 0, f"contact-{k1}", customer_id=k1, owner_id="bob",
            details={**_example("crm.sales.contact.created")[1]["details"], "last_name": "One"}),
        rec("crm.sales.contact.created", k2, 1, f"contact-{k2}", customer_id=k2, owner_id=None,
            details={**_example("crm.sales.contact.created")[1]["details"], "last_name": "Two"}),
        rec("crm.sales.contact.merged", k1, 2, f"contact-{k1}", customer_id=k1,
            merged_customer_id=k2, merge_id="m-x"),
        rec("crm.sales.activity.logged", k1, 3, f"activity-{k1}", customer_id=k1,
            occurred_at=(T0 + timedelta(minutes=3)).isoformat()),
        rec("crm.sales.invoice.issued", acc, 4, "invoice-i-x", invoice_id="i-x", customer_id=acc),
        rec("crm.sales.invoice.overdue", acc, 40 * DAY, "invoice-i-x", invoice_id="i-x"),
    ]  # fmt: skip
    baskets = [("seat", "setup"), ("seat", "support"), ("seat", "setup", "support"), ("seat",)]
    for i, products in enumerate(baskets):
        deal, who = f"dx{i}", (acc, k1, k2, acc)[i]
        out += [
            rec("crm.sales.deal.opened", who, 10 + i, f"deal-{deal}", deal_id=deal,
                customer_id=who, currency="EUR", exchange_rate="1", base_currency="EUR",
                amount_minor=20_000 * len(products), lines=_lines(*products),
                expected_close="2026-05-31"),
            rec("crm.sales.deal.stage_changed", who, 5 * DAY + i, f"deal-{deal}", deal_id=deal,
                from_stage="identified", to_stage="demo", probability=60),
            rec("crm.sales.deal.won", who, 20 * DAY + i, f"deal-{deal}", deal_id=deal,
                currency="EUR", amount_minor=20_000 * len(products)),
        ]  # fmt: skip
    out += [
        rec("crm.sales.deal.opened", acc, 30, "deal-dx-open", deal_id="dx-open", customer_id=acc,
            currency="USD", exchange_rate="0.9", base_currency="EUR", amount_minor=500_000,
            lines=_lines("seat", "support"), expected_close="2026-06-30", owner_id=None),
        rec("crm.sales.deal.opened", k1, 31, "deal-dx-lost", deal_id="dx-lost", customer_id=k1,
            lines=[]),
        rec("crm.sales.deal.lost", k1, 9 * DAY, "deal-dx-lost", deal_id="dx-lost"),
    ]  # fmt: skip
    # tickets: one router ticket a day, then a spike of them; a complaint without a product
    for day in range(35):
        out.append(rec("crm.service.ticket.opened", acc, day * DAY + 60, f"ticket-r{day}",
                       ticket_id=f"r{day}", customer_id=acc, product="router", kind="incident",
                       priority="normal", product_return=None))  # fmt: skip
    for i in range(8):
        out.append(rec("crm.service.ticket.opened", acc, 34 * DAY + 120 + i, f"ticket-s{i}",
                       ticket_id=f"s{i}", customer_id=acc, product="router", kind="incident",
                       priority="high", product_return=None))  # fmt: skip
    out += [
        rec("crm.service.ticket.opened", k1, 30 * DAY, "ticket-c1", ticket_id="c1",
            customer_id=k1, product=None, kind="complaint", priority="urgent",
            product_return=None),
        rec("crm.service.ticket.assigned", k1, 30 * DAY + 5, "ticket-c1", ticket_id="c1",
            assignee_id="agent-a", queue_id="q", from_status="new", to_status="assigned"),
        rec("crm.service.ticket.replied", k1, 30 * DAY + 90, "ticket-c1", ticket_id="c1"),
        rec("crm.service.sla.breached", k1, 30 * DAY + 600, "ticket-c1", ticket_id="c1",
            target="resolution", episode=1),
        rec("crm.service.ticket.assigned", acc, 60 + 5, "ticket-r0", ticket_id="r0",
            assignee_id="agent-a", queue_id="q", from_status="new", to_status="assigned"),
        rec("crm.service.ticket.replied", acc, 60 + 30, "ticket-r0", ticket_id="r0"),
        rec("crm.service.ticket.resolved", acc, 60 + 300, "ticket-r0", ticket_id="r0"),
        rec("crm.service.ticket.rated", acc, 60 + 400, "ticket-r0", ticket_id="r0", score=4),
        rec("crm.service.ticket.resolved", acc, DAY + 120, "ticket-r1", ticket_id="r1"),
        rec("crm.service.ticket.rated", acc, DAY + 200, "ticket-r1", ticket_id="r1", score=2),
    ]  # fmt: skip
    # marketing: a campaign's e-mails (bounced, opened, clicked, unsubscribed) and a trigger's
    for i in range(6):
        who, m = (k1, acc, k2)[i % 3], f"mx{i}"
        out.append(rec("crm.marketing.message.sent", who, 100 + i, f"message-{m}",
                       message_id=m, customer_id=who, campaign_id="camp-x", trigger_id=None,
                       template_id=f"tpl-{i % 2}"))  # fmt: skip
    out += [
        rec("crm.marketing.message.bounced", k2, 110, "message-mx5", message_id="mx5",
            customer_id=k2, campaign_id="camp-x", trigger_id=None),
        rec("crm.marketing.message.opened", k1, 120, "message-mx0", message_id="mx0",
            customer_id=k1, campaign_id="camp-x", trigger_id=None),
        rec("crm.marketing.message.clicked", k1, 130, "message-mx0", message_id="mx0",
            customer_id=k1, campaign_id="camp-x", trigger_id=None),
        rec("crm.marketing.message.unsubscribed", acc, 140, "message-mx1", message_id="mx1",
            customer_id=acc, campaign_id="camp-x", trigger_id=None),
        rec("crm.marketing.message.sent", k1, 150, "message-tx", message_id="tx", customer_id=k1,
            campaign_id=None, trigger_id="trg-1", template_id="tpl-t", channel="sms"),
        rec("crm.sales.lead.captured", "lead-x", 200, "lead-lx", lead_id="lx",
            customer_id="lead-x", source="campaign", owner_id=None,
            attribution={"utm_campaign": "camp-x"}),
        rec("crm.sales.lead.qualified", "lead-x", 300, "lead-lx", lead_id="lx"),
        rec("crm.sales.lead.captured", "lead-y", 210, "lead-ly", lead_id="ly",
            customer_id="lead-y", source="referral", owner_id=None, attribution=None),
        rec("crm.sales.lead.disqualified", "lead-y", 310, "lead-ly", lead_id="ly"),
    ]  # fmt: skip
    return out


def sample_records() -> list[ConsumedRecord]:
    stories = [
        ConsumedRecord(f"crm.{e.context}.events", 0, 0, r.key, r.value, r.headers)
        for e in history(28 * 30)
        for r in (e.record(),)
    ]
    return stories + extras()


PERIOD = {"start": "2026-03-20", "end": "2026-04-05", "min_count": 3, "baseline_days": 7}
# Every analytics GET with the parameters that reach its branches: (path, query) pairs.
CALLS: list[tuple[str, dict[str, Any]]] = [
    ("/customers/con-x2/timeline", {"limit": 3}),
    (
        "/customers/con-x1/timeline",
        {"context": ["sales", "service"], "since": "2026-03-01T00:00:00Z"},
    ),
    ("/customers/con-x2", {}),
    ("/customers/acc-x", {"as_of": "2026-03-20T00:00:00Z"}),
    ("/customers/acc-x/suggestions", {"min_support": "0.001"}),
    ("/customers/con-x1/churn-risk", {}),
    ("/analytics/sales/pipeline", {}),
    ("/analytics/sales/pipeline", {"group_by": "owner", "as_of": "2026-03-10T00:00:00Z"}),
    ("/analytics/sales/pipeline", {"group_by": "region"}),
    ("/analytics/sales/pipeline", {"group_by": "pipeline"}),
    ("/analytics/sales/forecast", {"year": 2026}),
    ("/analytics/sales/forecast", {"year": 2025, "product_id": "seat", "drop_threshold": "0.5"}),
    ("/analytics/sales/forecast", {"as_of": "2026-03-15T00:00:00Z"}),
    ("/analytics/sales/win-rate", {}),
    (
        "/analytics/sales/win-rate",
        {"since": "2026-01-01T00:00:00Z", "as_of": "2026-04-01T00:00:00Z"},
    ),
    ("/analytics/sales/stages", {}),
    ("/analytics/sales/stages", {"as_of": "2025-06-01T00:00:00Z"}),
    ("/analytics/sales/coverage", {"untouched_days": 30}),
    ("/analytics/sales/coverage", {"as_of": "2026-03-05T00:00:00Z"}),
    ("/analytics/sales/cross-sell/rules", {"min_support": "0.001", "limit": 5}),
    ("/analytics/charts/pipeline-by-stage", {}),
    ("/analytics/charts/forecast", {"year": 2026}),
    ("/analytics/charts/win-rate", {"until": "2026-04", "months": 18}),
    ("/analytics/charts/stage-conversion", {"as_of": "2026-04-01T00:00:00Z"}),
    ("/analytics/service/ticket-spikes", PERIOD),
    ("/analytics/service/ticket-spikes", {**PERIOD, "product": "router"}),
    ("/analytics/service/response-times", {}),
    ("/analytics/service/response-times", {"priority": "urgent"}),
    ("/analytics/service/response-times", {"since": "2030-01-01T00:00:00Z"}),
    ("/analytics/service/sla", {}),
    ("/analytics/service/sla", {"since": "2030-01-01T00:00:00Z"}),
    ("/analytics/service/csat", {}),
    ("/analytics/service/csat", {"by": "product", "interval": "quarter"}),
    ("/analytics/marketing/campaigns/camp-x/funnel", {"window_days": 60}),
    ("/analytics/marketing/campaigns/00000000-0000-4000-8000-000000000003/funnel", {}),
    ("/analytics/marketing/open-rates", {"min_sent": 1}),
    ("/analytics/marketing/leads-by-source", {}),
    ("/analytics/customers/at-risk", {"min_score": 0, "limit": 50}),
]


@pytest.fixture
async def loaded(
    fresh_db: Callable[..., Any], settings_for: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    url = await fresh_db("crm_analytics")
    app = create_app(settings_for("analytics", database_url=url))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as c,
    ):
        await feed(app.state.ctx.pool, sample_records(), batch=200)
        yield c


@pytest.mark.integration
async def test_every_endpoint_answers_what_its_model_declares(
    loaded: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    client = loaded
    h = {"Authorization": f"Bearer {token('admin', user='root')}"}
    routes = {r.path_format: r for r in analytics_routes()}
    called: set[str] = set()
    for path, params in CALLS:
        r = await client.get(path, params=params, headers=h)
        assert r.status_code == 200, (path, r.text)
        route = next(route for route in routes.values() if route.path_regex.match(path))
        called.add(route.path_format)
        body = r.json()
        adapter = TypeAdapter(declared_model(route))
        assert adapter.json_schema().get("properties"), f"{path}: no model declared"
        value = adapter.validate_python(body)
        # nothing undeclared, nothing missing: the model gives back exactly the answer
        assert adapter.dump_python(value, mode="json", exclude_unset=True) == body, path
    assert called == set(routes), set(routes) - called  # a new endpoint needs a call above
