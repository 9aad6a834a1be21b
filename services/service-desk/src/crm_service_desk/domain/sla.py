"""SLA policies and the SLA clock (pure: no I/O).

A ticket's status history is a list of spans (status, start, end). Two targets are measured:

- **first response**: from the ticket's creation until its first public reply (or until it is
  resolved, closed or merged without one). One episode per ticket.
- **resolution**: from the creation until the ticket is resolved/closed/merged. Reopening a
  resolved or closed ticket starts a new episode (2, 3, ...) from the reopening.

Elapsed time is business time (the policy's calendar) outside the spans in which the ticket waits
on the customer. Each target of each episode warns (``at_risk``) at most once, when the elapsed
time reaches the policy's at-risk share while the clock still runs, and breaches at most once,
when it reaches the target — also if that is only noticed after the clock stopped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from crm_events.schemas.service_routing import SlaAtRiskFlagged, SlaBreached, SlaPolicySet
from crm_runtime.aggregate import Aggregate, applies
from crm_service_desk.domain.calendar import BusinessCalendar

Target = Literal["first_response", "resolution"]
Signal = Literal["at_risk", "breached"]
PRIORITIES = ("low", "normal", "high", "urgent")
PAUSED = frozenset({"waiting_on_customer"})
DONE = frozenset({"resolved", "closed"})  # a later open status is a reopening
STOPPED = DONE | {"merged"}


class SlaPolicy(Aggregate):
    """The SLA targets of one priority (stream ``sla_policy-<priority>``)."""

    stream_type = "sla_policy"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.policy: SlaPolicySet | None = None

    def set(
        self,
        *,
        calendar_id: str,
        first_response_minutes: int,
        resolution_minutes: int,
        at_risk_percent: int,
    ) -> None:
        event = SlaPolicySet(
            priority=self.id,  # a priority (checked by the API)
            calendar_id=calendar_id,
            first_response_minutes=first_response_minutes,
            resolution_minutes=resolution_minutes,
            at_risk_percent=at_risk_percent,
        )
        if event != self.policy:
            self.record(event)

    @applies(SlaPolicySet)
    def _set(self, e: SlaPolicySet) -> None:
        self.policy = e


@dataclass(frozen=True)
class Span:
    status: str
    start: datetime
    end: datetime | None = None


@dataclass(frozen=True)
class TicketTimeline:
    """What the SLA clock needs to know about a ticket."""

    created_at: datetime
    spans: tuple[Span, ...]
    first_response_at: datetime | None = None


@dataclass(frozen=True)
class Measurement:
    target: Target
    episode: int
    started_at: datetime
    stopped_at: datetime | None
    paused: bool
    elapsed_minutes: float
    # the waiting-on-customer spans that overlap the measured time (an open one ends at ``now``)
    pauses: tuple[tuple[datetime, datetime], ...] = ()

    @property
    def running(self) -> bool:
        return self.stopped_at is None and not self.paused


def _pauses(spans: Iterable[Span], until: datetime) -> list[tuple[datetime, datetime]]:
    return [(s.start, s.end or until) for s in spans if s.status in PAUSED]


def _running_parts(
    start: datetime, end: datetime, pauses: Sequence[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    """The parts of ``[start, end)`` outside the pauses, in order."""
    if end <= start:
        return []
    cuts = sorted((max(a, start), min(b, end)) for a, b in pauses if b > start and a < end)
    parts: list[tuple[datetime, datetime]] = []
    cursor = start
    for a, b in cuts:
        if a > cursor:
            parts.append((cursor, a))
        cursor = max(cursor, b)
    if end > cursor:
        parts.append((cursor, end))
    return parts


def _overlapping(
    pauses: Sequence[tuple[datetime, datetime]], start: datetime, end: datetime
) -> tuple[tuple[datetime, datetime], ...]:
    return tuple((a, b) for a, b in pauses if b > start and a < end)


def elapsed_minutes(
    calendar: BusinessCalendar,
    start: datetime,
    end: datetime,
    pauses: Sequence[tuple[datetime, datetime]],
) -> float:
    """Business minutes in ``[start, end)`` outside the pauses (never negative)."""
    total = 0.0
    for a, b in _running_parts(start, end, pauses):
        total += calendar.business_seconds(a, b)
    return total / 60.0


def _status_at(spans: Sequence[Span], moment: datetime) -> str | None:
    current = None
    for s in spans:
        if s.start <= moment and (s.end is None or moment < s.end):
            current = s.status
    return current


def resolution_episodes(
    timeline: TicketTimeline,
) -> list[tuple[datetime, datetime | None]]:
    """``(start, stop)`` of each resolution episode, oldest first."""
    spans = sorted(timeline.spans, key=lambda s: s.start)
    episodes: list[tuple[datetime, datetime | None]] = []
    start: datetime | None = timeline.created_at
    previous: str | None = None
    for s in spans:
        if s.status in STOPPED:
            if start is not None:
                episodes.append((start, max(s.start, start)))
                start = None
        elif previous in DONE and start is None:
            start = s.start
        previous = s.status
    if start is not None:
        episodes.append((start, None))
    return episodes


def measure(
    timeline: TicketTimeline, calendar: BusinessCalendar, now: datetime
) -> list[Measurement]:
    """The first-response measurement and one per resolution episode, at ``now``."""
    spans = sorted(timeline.spans, key=lambda s: s.start)
    pauses = _pauses(spans, now)
    paused_now = _status_at(spans, now) in PAUSED
    out: list[Measurement] = []

    stop = timeline.first_response_at
    if stop is None:
        stop = next((s.start for s in spans if s.status in STOPPED), None)
    if stop is not None:
        stop = max(stop, timeline.created_at)
    first_end = min(stop or now, now)
    out.append(
        Measurement(
            target="first_response",
            episode=1,
            started_at=timeline.created_at,
            stopped_at=stop,
            paused=stop is None and paused_now,
            elapsed_minutes=elapsed_minutes(calendar, timeline.created_at, first_end, pauses),
            pauses=_overlapping(pauses, timeline.created_at, first_end),
        )
    )
    for number, (start, end) in enumerate(resolution_episodes(timeline), start=1):
        until = min(end or now, now)
        out.append(
            Measurement(
                target="resolution",
                episode=number,
                started_at=start,
                stopped_at=end,
                paused=end is None and paused_now,
                elapsed_minutes=elapsed_minutes(calendar, start, until, pauses),
                pauses=_overlapping(pauses, start, until),
            )
        )
    return out


def target_minutes(policy: SlaPolicySet, target: Target) -> int:
    return (
        policy.first_response_minutes if target == "first_response" else policy.resolution_minutes
    )


@dataclass
class Fired:
    """What a target's episode has already signalled (kept in the SLA state table)."""

    at_risk: bool = False
    breached: bool = False


def signals(m: Measurement, target: int, at_risk_percent: int, fired: Fired) -> list[Signal]:
    """The signals ``m`` newly raises, given what already fired. Each fires at most once."""
    if m.elapsed_minutes >= target:
        return [] if fired.breached else ["breached"]
    if (
        m.stopped_at is None
        and not fired.at_risk
        and not fired.breached
        and m.elapsed_minutes * 100 >= target * at_risk_percent
    ):
        return ["at_risk"]
    return []


def due_at(
    m: Measurement, target: int, calendar: BusinessCalendar, now: datetime
) -> datetime | None:
    """When the target is due: the instant its business time outside the pauses reaches
    ``target`` minutes from ``m.started_at``. Already breached: that instant in the past (it
    stays put on later observations). Not yet: projected from ``now``, as if the clock keeps
    running. None: the clock stopped (or the deadline is beyond the calendar's horizon)."""
    if m.stopped_at is not None:
        return None
    if m.elapsed_minutes < target:
        return calendar.add_business_minutes(now, target - m.elapsed_minutes)
    remaining = target * 60.0  # business seconds still to run when each running part starts
    for a, b in _running_parts(m.started_at, now, m.pauses):
        seconds = calendar.business_seconds(a, b)
        if seconds >= remaining - 1e-6:  # (the same sums as elapsed_minutes, up to rounding)
            return calendar.add_business_minutes(a, min(remaining, seconds) / 60.0)
        remaining -= seconds
    return now  # not reached: elapsed_minutes counts the same parts


@dataclass
class SlaTracker:
    """Signals over successive observations of one ticket (the job keeps this state in rows)."""

    policy: SlaPolicySet
    fired: dict[tuple[Target, int], Fired] = field(default_factory=dict)

    def observe(self, measurements: Iterable[Measurement]) -> list[tuple[Signal, Target, int]]:
        out: list[tuple[Signal, Target, int]] = []
        for m in measurements:
            state = self.fired.setdefault((m.target, m.episode), Fired())
            for s in signals(
                m, target_minutes(self.policy, m.target), self.policy.at_risk_percent, state
            ):
                if s == "breached":
                    state.breached = True
                else:
                    state.at_risk = True
                out.append((s, m.target, m.episode))
        return out


class TicketSla(Aggregate):
    """The SLA signals of one ticket (``sla-<ticket id>``): the authority on what fired."""

    stream_type = "sla"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.fired: dict[tuple[str, int], Fired] = {}

    def state(self, target: str, episode: int) -> Fired:
        return self.fired.get((target, episode), Fired())

    def flag(self, event: SlaAtRiskFlagged | SlaBreached) -> bool:
        """Record the signal unless it already fired for its target and episode."""
        state = self.state(event.target, event.episode)
        if isinstance(event, SlaBreached) and state.breached:
            return False
        if isinstance(event, SlaAtRiskFlagged) and (state.at_risk or state.breached):
            return False
        self.record(event)
        return True

    @applies(SlaAtRiskFlagged)
    def _at_risk(self, e: SlaAtRiskFlagged) -> None:
        self.fired.setdefault((e.target, e.episode), Fired()).at_risk = True

    @applies(SlaBreached)
    def _breached(self, e: SlaBreached) -> None:
        self.fired.setdefault((e.target, e.episode), Fired()).breached = True
