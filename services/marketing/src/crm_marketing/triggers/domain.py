"""The Trigger aggregate, and the pure rule of qualifying episodes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from crm_events.schemas.marketing_campaigns import (
    TriggerChanged,
    TriggerDefined,
    TriggerPaused,
    TriggerResumed,
    TriggerRule,
)
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import DomainError


class Trigger(Aggregate):
    stream_type = "trigger"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.name = ""
        self.rule: TriggerRule | None = None
        self.active = False

    @classmethod
    def define(cls, trigger_id: str, name: str, rule: TriggerRule) -> Trigger:
        trigger = cls(trigger_id)
        trigger.record(TriggerDefined(trigger_id=trigger_id, name=name, rule=rule))
        return trigger

    def change(self, name: str, rule: TriggerRule) -> bool:
        if name == self.name and rule == self.rule:
            return False
        self.record(TriggerChanged(trigger_id=self.id, name=name, rule=rule))
        return True

    def pause(self) -> None:
        if not self.active:
            raise DomainError("the trigger is paused already")
        self.record(TriggerPaused(trigger_id=self.id))

    def resume(self) -> None:
        if self.active:
            raise DomainError("the trigger is active already")
        self.record(TriggerResumed(trigger_id=self.id))

    @applies(TriggerDefined)
    def _defined(self, e: TriggerDefined) -> None:
        self.name, self.rule, self.active = e.name, e.rule, True

    @applies(TriggerChanged)
    def _changed(self, e: TriggerChanged) -> None:
        self.name, self.rule = e.name, e.rule

    @applies(TriggerPaused)
    def _paused(self, e: TriggerPaused) -> None:
        self.active = False

    @applies(TriggerResumed)
    def _resumed(self, e: TriggerResumed) -> None:
        self.active = True


Step = Literal["start", "end", "stay"]


@dataclass(frozen=True)
class Episode:
    """What to do with a (trigger, customer) given its behaviour now."""

    step: Step
    fire: bool = False
    end_reason: str | None = None


def decide(
    rule: TriggerRule,
    *,
    views: int,
    purchased: bool,
    episode_open: bool,
    last_fired_at: datetime | None,
    now: datetime,
) -> Episode:
    """An episode starts when the customer comes to qualify (≥ k views in the window and no
    purchase) and lasts while they do; it fires once, at its start, unless the trigger's
    cooldown since the last firing for this customer has not passed."""
    blocked = purchased and rule.require_no_purchase
    qualifies = views >= rule.min_views and not blocked
    if qualifies and not episode_open:
        cooled = last_fired_at is None or now - last_fired_at >= timedelta(
            seconds=rule.cooldown_seconds
        )
        return Episode("start", fire=cooled)
    if not qualifies and episode_open:
        return Episode("end", end_reason="purchased" if blocked else "below_threshold")
    return Episode("stay")
