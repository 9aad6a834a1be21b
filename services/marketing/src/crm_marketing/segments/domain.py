"""The Segment aggregate: a named audience, dynamic (a rule) or static (a list). No I/O.

Membership is not part of the aggregate (it can be 100,000 customers): it is kept in the
``segment_members`` table with its own stream of entered/left events (see application).
"""

from __future__ import annotations

from typing import Any

from crm_events.schemas.marketing_segments import (
    SegmentArchived,
    SegmentCreated,
    SegmentKind,
    SegmentRuleChanged,
    SegmentUpdated,
)
from crm_marketing.segments import rules
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import DomainError


class Segment(Aggregate):
    stream_type = "segment"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.name = ""
        self.description: str | None = None
        self.kind: SegmentKind = "dynamic"
        self.rule_json: dict[str, Any] | None = None
        self.rule_text: str | None = None
        self.archived = False

    @property
    def rule(self) -> rules.Rule | None:
        return None if self.rule_json is None else rules.from_json(self.rule_json)

    @classmethod
    def define(
        cls,
        segment_id: str,
        *,
        name: str,
        kind: SegmentKind,
        rule: rules.Rule | None,
        description: str | None = None,
    ) -> Segment:
        if kind == "dynamic" and rule is None:
            raise DomainError("a dynamic segment needs a rule")
        if kind == "static" and rule is not None:
            raise DomainError("a static segment has no rule: add members to it instead")
        segment = cls(segment_id)
        segment.record(
            SegmentCreated(
                segment_id=segment_id,
                name=name,
                description=description,
                kind=kind,
                rule=rules.to_json(rule) if rule is not None else None,
                rule_text=rules.to_text(rule) if rule is not None else None,
            )
        )
        return segment

    def _ensure_active(self) -> None:
        if self.archived:
            raise DomainError(f"segment {self.id} is archived")

    def change(self, *, name: str, description: str | None, rule: rules.Rule | None) -> bool:
        """Rename / re-describe / re-rule; returns True when the rule changed."""
        self._ensure_active()
        if (name, description) != (self.name, self.description):
            self.record(SegmentUpdated(segment_id=self.id, name=name, description=description))
        if rule is None:
            return False
        if self.kind == "static":
            raise DomainError("a static segment has no rule: add or remove members instead")
        as_json = rules.to_json(rule)
        if as_json == self.rule_json:
            return False
        self.record(
            SegmentRuleChanged(segment_id=self.id, rule=as_json, rule_text=rules.to_text(rule))
        )
        return True

    def ensure_static(self) -> None:
        self._ensure_active()
        if self.kind != "static":
            raise DomainError("members of a dynamic segment follow its rule; change the rule")

    def archive(self) -> None:
        self._ensure_active()
        self.record(SegmentArchived(segment_id=self.id))

    @applies(SegmentCreated)
    def _created(self, e: SegmentCreated) -> None:
        self.name = e.name
        self.description = e.description
        self.kind = e.kind
        self.rule_json = e.rule
        self.rule_text = e.rule_text

    @applies(SegmentUpdated)
    def _updated(self, e: SegmentUpdated) -> None:
        self.name = e.name
        self.description = e.description

    @applies(SegmentRuleChanged)
    def _rule_changed(self, e: SegmentRuleChanged) -> None:
        self.rule_json = e.rule
        self.rule_text = e.rule_text

    @applies(SegmentArchived)
    def _archived(self, _: SegmentArchived) -> None:
        self.archived = True
