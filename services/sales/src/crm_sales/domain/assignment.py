"""Rep profiles, assignment rules, and the routing decision (pure: no I/O).

Routing takes the rules in order; the first rule that matches the record (region, product line;
an unset criterion matches anything) and has at least one available rep who covers it wins.
Its strategy picks the rep: ``least_open`` — fewest open leads + deals, ties by user id;
``round_robin`` — the next rep after the one this rule chose last, in user-id order.
A rep marked unavailable gets nothing new. No match: the record stays unassigned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from crm_events.schemas.sales import (
    AssignmentRule,
    AssignmentRulesSet,
    RepAvailabilityChanged,
    RepProfileSet,
)
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import DomainError

RULES_ID = "global"


class Rep(Aggregate):
    stream_type = "rep"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.email: str | None = None
        self.team_id: str | None = None
        self.regions: list[str] = []
        self.product_lines: list[str] = []
        self.available = True
        self.unavailable_reason: str | None = None

    def set_profile(
        self,
        *,
        email: str | None,
        team_id: str | None,
        regions: list[str],
        product_lines: list[str],
    ) -> None:
        new = (email, team_id, sorted(set(regions)), sorted(set(product_lines)))
        if self.exists and new == (self.email, self.team_id, self.regions, self.product_lines):
            return
        self.record(
            RepProfileSet(
                user_id=self.id,
                email=new[0],
                team_id=new[1],
                regions=new[2],
                product_lines=new[3],
            )
        )

    def set_availability(self, available: bool, reason: str | None) -> None:
        if not self.exists:
            raise DomainError(f"rep {self.id} has no profile yet; set one first")
        if available != self.available:
            self.record(RepAvailabilityChanged(user_id=self.id, available=available, reason=reason))

    @applies(RepProfileSet)
    def _profile(self, e: RepProfileSet) -> None:
        self.email = e.email
        self.team_id = e.team_id
        self.regions = list(e.regions)
        self.product_lines = list(e.product_lines)

    @applies(RepAvailabilityChanged)
    def _availability(self, e: RepAvailabilityChanged) -> None:
        self.available = e.available
        self.unavailable_reason = e.reason


class AssignmentRules(Aggregate):
    stream_type = "assignment_rules"

    def __init__(self, aggregate_id: str = RULES_ID) -> None:
        super().__init__(aggregate_id)
        self.rules: list[AssignmentRule] = []

    def replace(self, rules: list[AssignmentRule]) -> None:
        ids = [r.rule_id for r in rules]
        if len(set(ids)) != len(ids):
            raise DomainError("rule ids must be unique")
        if rules != self.rules or not self.exists:
            self.record(AssignmentRulesSet(rules=rules))

    @applies(AssignmentRulesSet)
    def _set(self, e: AssignmentRulesSet) -> None:
        self.rules = list(e.rules)


@dataclass(frozen=True)
class Candidate:
    user_id: str
    team_id: str | None
    regions: tuple[str, ...]
    product_lines: tuple[str, ...]
    available: bool


@dataclass(frozen=True)
class Decision:
    owner_id: str
    team_id: str | None
    rule_id: str
    strategy: str


def _norm(value: str | None) -> str | None:
    return value.strip().lower() if value else None


def covers(rule: AssignmentRule, rep: Candidate) -> bool:
    if not rep.available:
        return False
    if rule.team_id is not None and rep.team_id != rule.team_id:
        return False
    if rule.region is not None and _norm(rule.region) not in {_norm(r) for r in rep.regions}:
        return False
    return rule.product_line is None or _norm(rule.product_line) in {
        _norm(p) for p in rep.product_lines
    }


def matches(rule: AssignmentRule, region: str | None, product_line: str | None) -> bool:
    if rule.region is not None and _norm(rule.region) != _norm(region):
        return False
    return rule.product_line is None or _norm(rule.product_line) == _norm(product_line)


def route(
    rules: Sequence[AssignmentRule],
    kind: Literal["lead", "deal"],
    region: str | None,
    product_line: str | None,
    reps: Sequence[Candidate],
    open_work: Mapping[str, int],
    last_chosen: Mapping[str, str],
) -> Decision | None:
    for rule in rules:
        if kind not in rule.applies_to or not matches(rule, region, product_line):
            continue
        pool = sorted((r for r in reps if covers(rule, r)), key=lambda r: r.user_id)
        if not pool:
            continue
        if rule.strategy == "round_robin":
            last = last_chosen.get(rule.rule_id)
            after = [r for r in pool if last is None or r.user_id > last]
            chosen = (after or pool)[0]
        else:
            chosen = min(pool, key=lambda r: (open_work.get(r.user_id, 0), r.user_id))
        return Decision(chosen.user_id, chosen.team_id, rule.rule_id, rule.strategy)
    return None
