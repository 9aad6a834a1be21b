"""Cross-sell and upsell: association rules between the products of won deals.

A basket is one won deal: the set of product ids on its lines (lines without a product id are
not counted; won deals without any product are no basket). For products A and B, with N baskets:

- support(A -> B)    = baskets holding A and B / N
- confidence(A -> B) = baskets holding A and B / baskets holding A
- lift(A -> B)       = confidence(A -> B) / (baskets holding B / N)   (symmetric in A and B)

A customer's suggestions are the consequents of the rules whose antecedent they own (a product
on one of their won deals, over every id merged into them) and whose consequent they do not own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from itertools import combinations
from typing import Any

from crm_analytics.sales import valid_at
from crm_runtime.db import Conn


@dataclass(frozen=True)
class Rule:
    antecedent: str
    consequent: str
    together: int  # baskets holding both
    antecedent_count: int
    consequent_count: int
    baskets: int

    @property
    def support(self) -> Fraction:
        return Fraction(self.together, self.baskets)

    @property
    def confidence(self) -> Fraction:
        return Fraction(self.together, self.antecedent_count)

    @property
    def lift(self) -> Fraction:
        return self.confidence / Fraction(self.consequent_count, self.baskets)

    def as_dict(self, names: dict[str, str] | None = None) -> dict[str, Any]:
        names = names or {}
        return {
            "antecedent": self.antecedent,
            "antecedent_name": names.get(self.antecedent),
            "consequent": self.consequent,
            "consequent_name": names.get(self.consequent),
            "deals": self.together,
            "support": round(float(self.support), 4),
            "confidence": round(float(self.confidence), 4),
            "lift": round(float(self.lift), 4),
        }


def association_rules(
    baskets: Iterable[Iterable[str]],
    min_support: Fraction = Fraction(0),
    min_confidence: Fraction = Fraction(0),
) -> list[Rule]:
    """Every rule A -> B between two products with at least the given support and confidence,
    the most confident first (then lift, support, and the product ids)."""
    sets = [s for s in (frozenset(b) for b in baskets) if s]
    n = len(sets)
    items: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    for s in sets:
        items.update(s)
        pairs.update(combinations(sorted(s), 2))
    rules = []
    for (a, b), together in pairs.items():
        if Fraction(together, n) < min_support:
            continue
        for x, y in ((a, b), (b, a)):
            rule = Rule(x, y, together, items[x], items[y], n)
            if rule.confidence >= min_confidence:
                rules.append(rule)
    rules.sort(key=lambda r: (-r.confidence, -r.lift, -r.support, r.antecedent, r.consequent))
    return rules


@dataclass(frozen=True)
class Suggestion:
    product_id: str
    confidence: Fraction
    lift: Fraction
    support: Fraction
    because: tuple[str, ...]  # the owned products whose rules point here, best first


def suggest(owned: set[str], rules: Iterable[Rule]) -> list[Suggestion]:
    """Products the owner of ``owned`` lacks, by their best rule from an owned product."""
    found: dict[str, list[Rule]] = {}
    for r in rules:
        if r.antecedent in owned and r.consequent not in owned:
            found.setdefault(r.consequent, []).append(r)
    out = []
    for product, hits in found.items():
        hits.sort(key=lambda r: (-r.confidence, -r.lift, r.antecedent))
        best = hits[0]
        out.append(
            Suggestion(
                product, best.confidence, best.lift, best.support, tuple(h.antecedent for h in hits)
            )
        )
    out.sort(key=lambda s: (-s.confidence, -s.lift, s.product_id))
    return out


# --- reading the baskets ---------------------------------------------------------------------


async def won_baskets(conn: Conn, as_of: datetime | None = None) -> list[list[str]]:
    args: list[Any] = []
    rows = await conn.fetch(
        f"""
        SELECT f.deal_id, array_agg(DISTINCT l.product_id) AS products
        FROM deal_versions f
             CROSS JOIN LATERAL jsonb_to_recordset(f.lines) AS l(product_id text)
        WHERE {valid_at("f", as_of, args)} AND f.status = 'won' AND l.product_id IS NOT NULL
        GROUP BY f.deal_id
        """,
        *args,
    )
    return [list(r["products"]) for r in rows]


async def product_names(conn: Conn) -> dict[str, str]:
    """The name each product last had on a deal line."""
    rows = await conn.fetch(
        """
        SELECT DISTINCT ON (l.product_id) l.product_id, l.name
        FROM deal_versions f
             CROSS JOIN LATERAL jsonb_to_recordset(f.lines) AS l(product_id text, name text)
        WHERE l.product_id IS NOT NULL
        ORDER BY l.product_id, f.valid_from DESC
        """
    )
    return {r["product_id"]: r["name"] for r in rows}


async def owned_products(conn: Conn, customer_ids: list[str]) -> set[str]:
    """Products on the won deals of these customer ids (today)."""
    rows = await conn.fetch(
        """
        SELECT DISTINCT l.product_id
        FROM deal_versions f
             CROSS JOIN LATERAL jsonb_to_recordset(f.lines) AS l(product_id text)
        WHERE f.valid_to IS NULL AND f.status = 'won' AND f.customer_id = ANY($1::text[])
          AND l.product_id IS NOT NULL
        """,
        customer_ids,
    )
    return {r["product_id"] for r in rows}
