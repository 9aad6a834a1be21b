"""Cross-sell and upsell: association rules between the products of won deals (hand-computed
and property-checked), and the rules and per-customer suggestions over the API."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from fractions import Fraction
from typing import Any

import httpx
import pytest
from an_helpers import ev, feed, line, lost, opened, won
from hypothesis import given
from hypothesis import strategies as st

from crm_analytics.app import create_app
from crm_analytics.crosssell import association_rules, suggest
from crm_runtime.settings import Settings

BASKETS = [{"A", "B"}, {"A", "B", "C"}, {"A", "C"}, {"B"}, {"A"}]
# N = 5; A in 4, B in 3, C in 2; AB 2, AC 2, BC 1


def test_rules_by_hand() -> None:
    rules = association_rules(BASKETS)
    got = {(r.antecedent, r.consequent): (r.support, r.confidence, r.lift) for r in rules}
    F = Fraction
    assert got == {
        ("A", "B"): (F(2, 5), F(2, 4), F(5, 6)),  # 0.5 / (3/5)
        ("B", "A"): (F(2, 5), F(2, 3), F(5, 6)),  # (2/3) / (4/5)
        ("A", "C"): (F(2, 5), F(2, 4), F(5, 4)),  # 0.5 / (2/5)
        ("C", "A"): (F(2, 5), F(1), F(5, 4)),
        ("B", "C"): (F(1, 5), F(1, 3), F(5, 6)),
        ("C", "B"): (F(1, 5), F(1, 2), F(5, 6)),
    }
    strict = association_rules(BASKETS, min_support=F(3, 10), min_confidence=F(1, 2))
    assert [(r.antecedent, r.consequent) for r in strict] == [
        ("C", "A"),  # confidence 1
        ("B", "A"),  # 2/3
        ("A", "C"),  # 1/2, lift 1.25
        ("A", "B"),  # 1/2, lift 0.83
    ]
    assert strict[0].as_dict({"A": "Seats"}) == {
        "antecedent": "C", "antecedent_name": None, "consequent": "A",
        "consequent_name": "Seats", "deals": 2, "support": 0.4, "confidence": 1.0, "lift": 1.25,
    }  # fmt: skip
    assert association_rules([]) == [] and association_rules([set(), {"A"}]) == []


def test_suggestions_exclude_what_is_owned() -> None:
    rules = association_rules(BASKETS)
    assert [(s.product_id, s.because) for s in suggest({"C"}, rules)] == [
        ("A", ("C",)),  # C -> A, confidence 1
        ("B", ("C",)),  # C -> B, confidence 1/2
    ]
    assert [s.product_id for s in suggest({"A"}, rules)] == ["C", "B"]  # same confidence, lift
    both = suggest({"B", "C"}, rules)
    assert [(s.product_id, s.because, s.confidence) for s in both] == [
        ("A", ("C", "B"), Fraction(1))
    ]
    assert suggest({"A", "B", "C"}, rules) == [] and suggest(set(), rules) == []


@given(st.lists(st.sets(st.sampled_from("ABCDEF"), max_size=4), max_size=25))
def test_rule_properties(baskets: list[set[str]]) -> None:
    rules = association_rules(baskets)
    n = sum(1 for b in baskets if b)
    by_pair = {(r.antecedent, r.consequent): r for r in rules}
    for r in rules:
        both = sum(1 for b in baskets if {r.antecedent, r.consequent} <= b)
        assert r.support == Fraction(both, n)  # support is what counting gives
        assert 0 < r.confidence <= 1
        assert r.confidence == Fraction(both, sum(1 for b in baskets if r.antecedent in b))
        mirror = by_pair[(r.consequent, r.antecedent)]
        assert r.lift == mirror.lift and r.support == mirror.support  # symmetric for pairs
    pairs = {(a, b) for s in baskets for a in s for b in s if a != b}
    assert set(by_pair) == pairs
    cut = association_rules(baskets, Fraction(1, 4), Fraction(1, 2))
    assert all(r.support >= Fraction(1, 4) and r.confidence >= Fraction(1, 2) for r in cut)
    assert {(r.antecedent, r.consequent) for r in cut} == {
        k for k, r in by_pair.items() if r.support >= Fraction(1, 4) and r.confidence >= 0.5
    }


@pytest.fixture
async def analytics(
    fresh_db: Callable[..., Any], settings_for: Callable[..., Settings]
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    url = await fresh_db("crm_analytics")
    app = create_app(settings_for("analytics", database_url=url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as c:
            yield c, app.state.ctx


@pytest.mark.integration
async def test_rules_and_suggestions_over_the_api(
    analytics: tuple[httpx.AsyncClient, Any], token: Callable[..., str]
) -> None:
    client, ctx = analytics
    p, q, r, s, x, y = (str(uuid.uuid4()) for _ in range(6))
    products = [["a", "b"], ["a", "b", "c"], ["a", "c"], ["b"], ["a"]]
    owners = [p, q, r, y, s]  # y is merged into x below
    records = [
        ev("crm.sales.contact.created", x, "2026-01-01T00:00:00",
           {"contact_id": "kx", "customer_id": x, "details": {"last_name": "X"},
            "owner_id": "alice"}),
    ]  # fmt: skip
    for i, (items, owner) in enumerate(zip(products, owners, strict=True)):
        deal = f"W{i}"
        lines = [line(item) for item in items] + [{"name": "Travel", "quantity": 1,
                                                    "unit_price_minor": 500}]  # fmt: skip
        day = f"2026-02-{10 + i:02d}T00:00:00"
        records += [opened(deal, owner, "2026-02-01T00:00:00", lines=lines), won(deal, owner, day)]
    records += [
        opened("OPEN", x, "2026-02-01T00:00:00", lines=[line("c")]),  # open: not owned
        opened("LOST", x, "2026-02-01T00:00:00", lines=[line("a")]),
        lost("LOST", x, "2026-02-02T00:00:00"),  # lost: not owned
        ev("crm.sales.contact.merged", x, "2026-03-01T00:00:00",
           {"contact_id": "kx", "customer_id": x, "merged_id": "ky", "merged_customer_id": y,
            "merge_id": "m1", "absorbed": {}, "absorbed_fields": []}),
    ]  # fmt: skip
    await feed(ctx.pool, records, batch=4)
    h = {"Authorization": f"Bearer {token('analyst')}"}
    body = (
        await client.get(
            "/analytics/sales/cross-sell/rules",
            params={"min_support": "0.3", "min_confidence": "0.5"},
            headers=h,
        )
    ).json()
    assert body["baskets"] == 5
    got_rules = [
        (u["antecedent"], u["consequent"], u["confidence"], u["lift"]) for u in body["rules"]
    ]
    assert got_rules == [
        ("c", "a", 1.0, 1.25), ("b", "a", 0.6667, 0.8333), ("a", "c", 0.5, 1.25),
        ("a", "b", 0.5, 0.8333),
    ]  # fmt: skip
    assert body["rules"][0]["consequent_name"] == "A" and body["rules"][0]["support"] == 0.4
    early = await client.get(
        "/analytics/sales/cross-sell/rules",
        params={"as_of": "2026-02-12T12:00:00Z", "min_support": "0"},
        headers=h,
    )
    assert early.json()["baskets"] == 3  # W3 and W4 were not won yet
    bad = await client.get(
        "/analytics/sales/cross-sell/rules", params={"min_support": 2}, headers=h
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "min_support"

    # x owns b through y (merged into x); suggestions read y as x
    alice = {"Authorization": f"Bearer {token('sales_rep', user='alice')}"}
    for ask in (x, y):
        got = (await client.get(f"/customers/{ask}/suggestions", headers=alice)).json()
        assert got["customer_id"] == x and got["owned"] == ["b"]
        assert [(s["product_id"], s["confidence"], s["because"]) for s in got["suggestions"]] == [
            ("a", 0.6667, ["b"]),
            ("c", 0.3333, ["b"]),
        ]
        assert got["suggestions"][0]["name"] == "A"
    tight = await client.get(
        f"/customers/{x}/suggestions", params={"min_confidence": "0.5"}, headers=alice
    )
    assert [s["product_id"] for s in tight.json()["suggestions"]] == ["a"]
    bob = {"Authorization": f"Bearer {token('sales_rep', user='bob')}"}
    assert (await client.get(f"/customers/{x}/suggestions", headers=bob)).status_code == 403
