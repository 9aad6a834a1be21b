"""The reference evaluator: a rule over one customer's rows, in plain Python.

It defines the rule language's meaning; the SQL compiler (:mod:`.compiler`) must agree with it
(a hypothesis test checks both on random data). Text comparisons are case-insensitive
(``lower`` on both sides), except ``page_view(url=)``, a case-sensitive prefix. A missing
demographic value equals nothing (so ``country != DE`` holds for an unknown country).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from crm_marketing.segments.rules import (
    And,
    Behaviour,
    Consent,
    FieldEquals,
    FieldIn,
    Not,
    Or,
    Rule,
)


@dataclass
class CustomerFacts:
    """What a rule can look at for one customer (rows as dicts, columns as in the tables)."""

    profile: Mapping[str, Any]
    activity: Sequence[Mapping[str, Any]] = field(default_factory=list)  # web_activity rows
    purchases: Sequence[Mapping[str, Any]] = field(default_factory=list)
    consents: Mapping[str, str] = field(default_factory=dict)  # channel -> status


def _lower(value: Any) -> str | None:
    return None if value is None else str(value).lower()


def _row_matches(b: Behaviour, row: Mapping[str, Any], now: datetime) -> bool:
    if b.action != "purchased" and row.get("kind") != b.action:
        return False
    for key, want in b.where:
        if key == "url":
            url = row.get("url")
            if url is None or not str(url).startswith(want):
                return False
        elif key == "query":
            query = _lower(row.get("query"))
            if query is None or want.lower() not in query:
                return False
        else:
            column = "product_id" if key == "product" else "category"
            if _lower(row.get(column)) != want.lower():
                return False
    if b.within is not None:
        return bool(row["occurred_at"] > now - timedelta(hours=b.within.hours))
    return True


def count_matching(b: Behaviour, facts: CustomerFacts, now: datetime) -> int:
    rows: Iterable[Mapping[str, Any]] = (
        facts.purchases if b.action == "purchased" else facts.activity
    )
    return sum(1 for r in rows if _row_matches(b, r, now))


def _compare(n: int, op: str, k: int) -> bool:
    if op == "=":
        return n == k
    if op == "!=":
        return n != k
    if op == ">":
        return n > k
    if op == ">=":
        return n >= k
    if op == "<":
        return n < k
    return n <= k


def evaluate(rule: Rule, facts: CustomerFacts, now: datetime) -> bool:
    if isinstance(rule, And):
        return all(evaluate(i, facts, now) for i in rule.items)
    if isinstance(rule, Or):
        return any(evaluate(i, facts, now) for i in rule.items)
    if isinstance(rule, Not):
        return not evaluate(rule.item, facts, now)
    if isinstance(rule, FieldEquals):
        value = _lower(facts.profile.get(rule.field))
        equal = value is not None and value == rule.value.lower()
        return equal if rule.op == "=" else not equal
    if isinstance(rule, FieldIn):
        value = _lower(facts.profile.get(rule.field))
        inside = value is not None and value in {v.lower() for v in rule.values}
        return not inside if rule.negated else inside
    if isinstance(rule, Behaviour):
        return _compare(count_matching(rule, facts, now), rule.op, rule.count)
    assert isinstance(rule, Consent)
    return facts.consents.get(rule.channel) == "granted"
