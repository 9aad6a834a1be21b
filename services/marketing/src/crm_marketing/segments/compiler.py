"""Compile a rule into one SQL query over the audience tables (profiles, web_activity,
purchases, consents) that returns the customer ids it holds for.

Set-based: "at least once" / "never" become EXISTS / NOT EXISTS (semi- and anti-joins), other
counts a grouped ``IN (... GROUP BY customer_id HAVING count(*) ...)`` that the planner hashes
once; so a full evaluation scans each table once per behaviour test, and an incremental one
(``candidates``) only touches the given customers' rows (indexed by customer id).
Every value is a bind parameter; names, operators and numbers come from the parsed rule's fixed
vocabulary. Meaning: exactly that of :mod:`.evaluate` (tests check they agree).
"""

from __future__ import annotations

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

_FIELD_COLUMNS = {
    "country": "country",
    "city": "city",
    "language": "language",
    "age_band": "age_band",
    "industry": "industry",
    "company_size": "company_size",
}


@dataclass(frozen=True)
class Compiled:
    """``sql`` selects ``customer_id``; with ``candidates``, ``$1`` is a ``text[]`` of ids."""

    sql: str
    params: list[Any]
    candidates: bool


@dataclass
class _Builder:
    now: datetime
    candidates: bool
    params: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.candidates:
            self.params.append(None)  # $1: the candidate ids, set by the caller

    def param(self, value: Any, cast: str) -> str:
        self.params.append(value)
        return f"${len(self.params)}::{cast}"

    def expr(self, rule: Rule) -> str:
        if isinstance(rule, And | Or):
            word = " AND " if isinstance(rule, And) else " OR "
            return "(" + word.join(self.expr(i) for i in rule.items) + ")"
        if isinstance(rule, Not):
            return f"(NOT {self.expr(rule.item)})"
        if isinstance(rule, FieldEquals):
            col = f"p.{_FIELD_COLUMNS[rule.field]}"
            test = f"coalesce(lower({col}) = lower({self.param(rule.value, 'text')}), false)"
            return test if rule.op == "=" else f"(NOT {test})"
        if isinstance(rule, FieldIn):
            col = f"p.{_FIELD_COLUMNS[rule.field]}"
            values = self.param(list(rule.values), "text[]")
            test = (
                f"coalesce(lower({col}) = ANY(ARRAY(SELECT lower(v) FROM unnest({values}) v)),"
                " false)"
            )
            return f"(NOT {test})" if rule.negated else test
        if isinstance(rule, Behaviour):
            return self.behaviour(rule)
        assert isinstance(rule, Consent)
        channel = self.param(rule.channel, "text")
        return (
            "EXISTS (SELECT 1 FROM consents c WHERE c.customer_id = p.customer_id"
            f" AND c.channel = {channel} AND c.status = 'granted')"
        )

    def behaviour(self, b: Behaviour) -> str:
        purchased = b.action == "purchased"
        t = "u" if purchased else "w"
        table = "purchases" if purchased else "web_activity"
        tests: list[str] = [] if purchased else [f"{t}.kind = '{b.action}'"]
        for key, want in b.where:
            value = self.param(want, "text")
            if key == "url":
                tests.append(f"starts_with({t}.url, {value})")
            elif key == "query":
                tests.append(f"strpos(lower({t}.query), lower({value})) > 0")
            else:
                # Case-insensitive; the exact test first lets the planner use the column's
                # statistics (lower() alone is estimated blind, which picks worse plans).
                column = f"{t}.{'product_id' if key == 'product' else 'category'}"
                tests.append(f"({column} = {value} OR lower({column}) = lower({value}))")
        if b.within is not None:
            since = self.now - timedelta(hours=b.within.hours)
            tests.append(f"{t}.occurred_at > {self.param(since, 'timestamptz')}")
        if self.candidates:
            tests.append(f"{t}.customer_id = ANY($1::text[])")
        condition = " AND ".join(tests) or "true"
        op, k = b.op, int(b.count)
        zero_holds = _holds(0, op, k)
        # "at least once" and "never": a semi-/anti-join, no counting.
        if (op, k) in ((">=", 1), (">", 0), ("!=", 0), ("=", 0), ("<", 1), ("<=", 0)):
            exists = (
                f"EXISTS (SELECT 1 FROM {table} {t} WHERE {t}.customer_id = p.customer_id"
                f" AND {condition})"
            )
            return f"(NOT {exists})" if zero_holds else exists
        # Otherwise count per customer once (hashed): customers without rows have count 0,
        # so when 0 satisfies the test, the customers it holds for are those NOT among the
        # ones with rows that fail it.
        having = f"count(*) {op} {k}" if not zero_holds else f"NOT (count(*) {op} {k})"
        grouped = (
            f"p.customer_id IN (SELECT {t}.customer_id FROM {table} {t}"
            f" WHERE {t}.customer_id IS NOT NULL AND {condition}"
            f" GROUP BY {t}.customer_id HAVING {having})"
        )
        return f"(NOT {grouped})" if zero_holds else grouped


def _holds(n: int, op: str, k: int) -> bool:
    return {
        "=": n == k,
        "!=": n != k,
        ">": n > k,
        ">=": n >= k,
        "<": n < k,
        "<=": n <= k,
    }[op]


def compile_rule(rule: Rule, now: datetime, *, candidates: bool = False) -> Compiled:
    """One ``SELECT p.customer_id ...`` for the customers ``rule`` holds for at ``now``."""
    b = _Builder(now, candidates)
    condition = b.expr(rule)
    where = f"p.customer_id = ANY($1::text[]) AND {condition}" if candidates else condition
    sql = f"SELECT p.customer_id FROM profiles p WHERE {where}"
    return Compiled(sql, b.params, candidates)


def bind(compiled: Compiled, candidate_ids: list[str] | None = None) -> list[Any]:
    """The parameters to run ``compiled.sql`` with."""
    if compiled.candidates:
        if candidate_ids is None:
            raise ValueError("this query was compiled for candidate ids; pass them")
        return [candidate_ids, *compiled.params[1:]]
    return list(compiled.params)
