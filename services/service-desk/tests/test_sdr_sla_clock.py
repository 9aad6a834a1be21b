"""The SLA clock: business time, pauses while waiting on the customer, episodes, signals.

Hypothesis drives random sequences of status transitions and first responses, observed at
random instants: elapsed business time is never negative and never goes down, and each target
of each episode warns at most once and breaches at most once (exactly once if it ran over).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from crm_events.schemas.service_routing import SlaPolicySet, WorkingHours
from crm_service_desk.domain.calendar import BusinessCalendar
from crm_service_desk.domain.sla import (
    Fired,
    Measurement,
    SlaTracker,
    Span,
    TicketTimeline,
    due_at,
    measure,
    resolution_episodes,
    signals,
)

T0 = datetime(2026, 11, 23, 9, tzinfo=UTC)  # a Monday
OFFICE = BusinessCalendar.of(
    "UTC",
    [
        WorkingHours(weekday=d, intervals=[("09:00", "17:00")])
        for d in ("mon", "tue", "wed", "thu", "fri")
    ],
)
ALWAYS = BusinessCalendar.always()
POLICY = SlaPolicySet(
    priority="high",
    calendar_id="office",
    first_response_minutes=60,
    resolution_minutes=480,
    at_risk_percent=80,
)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def by_target(ms: list[Measurement]) -> dict[tuple[str, int], Measurement]:
    return {(m.target, m.episode): m for m in ms}


def test_waiting_on_customer_pauses_both_clocks() -> None:
    timeline = TicketTimeline(
        created_at=at(0),
        spans=(
            Span("new", at(0), at(30)),
            Span("waiting_on_customer", at(30), at(90)),
            Span("in_progress", at(90)),
        ),
    )
    during = by_target(measure(timeline, ALWAYS, at(60)))
    assert during[("first_response", 1)].elapsed_minutes == 30
    assert during[("first_response", 1)].paused
    after = by_target(measure(timeline, ALWAYS, at(120)))
    assert after[("first_response", 1)].elapsed_minutes == 60  # 30 before + 30 after the pause
    assert after[("resolution", 1)].elapsed_minutes == 60
    assert not after[("resolution", 1)].paused


def test_first_response_stops_the_first_response_clock_only() -> None:
    timeline = TicketTimeline(
        created_at=at(0), spans=(Span("in_progress", at(0)),), first_response_at=at(20)
    )
    m = by_target(measure(timeline, ALWAYS, at(200)))
    assert m[("first_response", 1)].elapsed_minutes == 20
    assert m[("first_response", 1)].stopped_at == at(20)
    assert m[("resolution", 1)].elapsed_minutes == 200 and m[("resolution", 1)].running


def test_business_hours_only_count_working_time() -> None:
    friday_4pm = datetime(2026, 11, 27, 16, tzinfo=UTC)
    timeline = TicketTimeline(created_at=friday_4pm, spans=(Span("new", friday_4pm),))
    monday_10am = datetime(2026, 11, 30, 10, tzinfo=UTC)
    m = by_target(measure(timeline, OFFICE, monday_10am))
    assert m[("first_response", 1)].elapsed_minutes == 120
    assert due_at(m[("resolution", 1)], 480, OFFICE, monday_10am) == datetime(
        2026, 11, 30, 16, tzinfo=UTC
    )


def test_due_at_of_a_breached_target_is_when_it_ran_over_not_now() -> None:
    # 1-minute first response opened at 0: due at 1, however late the breach is noticed
    fresh = TicketTimeline(created_at=at(0), spans=(Span("new", at(0)),))
    for now in (at(1.5), at(2.5), at(600)):
        m = by_target(measure(fresh, ALWAYS, now))[("first_response", 1)]
        assert m.elapsed_minutes > 1
        assert due_at(m, 1, ALWAYS, now) == at(1)
    # waiting on the customer before the breach moves the deadline by the pause; a pause after
    # the breach (paused now) does not
    waited = TicketTimeline(
        created_at=at(0),
        spans=(
            Span("new", at(0), at(0.5)),
            Span("waiting_on_customer", at(0.5), at(10)),
            Span("in_progress", at(10), at(30)),
            Span("waiting_on_customer", at(30)),
        ),
    )
    m = by_target(measure(waited, ALWAYS, at(40)))[("first_response", 1)]
    assert m.paused and m.elapsed_minutes == 20.5
    assert due_at(m, 1, ALWAYS, at(40)) == at(10.5)
    # business hours: opened Friday 16:50, a 30-minute target runs over on Monday at 09:20
    friday = datetime(2026, 11, 27, 16, 50, tzinfo=UTC)
    monday_11am = datetime(2026, 11, 30, 11, tzinfo=UTC)
    office = TicketTimeline(created_at=friday, spans=(Span("new", friday),))
    m = by_target(measure(office, OFFICE, monday_11am))[("first_response", 1)]
    assert m.elapsed_minutes == 130
    assert due_at(m, 30, OFFICE, monday_11am) == datetime(2026, 11, 30, 9, 20, tzinfo=UTC)
    # not breached yet: still the projection from now
    m = by_target(measure(fresh, ALWAYS, at(0.25)))[("first_response", 1)]
    assert due_at(m, 1, ALWAYS, at(0.25)) == at(1)


def test_reopening_starts_a_new_resolution_episode() -> None:
    timeline = TicketTimeline(
        created_at=at(0),
        spans=(
            Span("new", at(0), at(10)),
            Span("resolved", at(10), at(50)),
            Span("closed", at(50), at(100)),
            Span("in_progress", at(100)),
        ),
        first_response_at=at(5),
    )
    assert resolution_episodes(timeline) == [(at(0), at(10)), (at(100), None)]
    m = by_target(measure(timeline, ALWAYS, at(130)))
    assert m[("resolution", 1)].elapsed_minutes == 10 and m[("resolution", 1)].stopped_at == at(10)
    assert m[("resolution", 2)].elapsed_minutes == 30 and m[("resolution", 2)].running


def test_signals_fire_once_and_a_late_stop_still_breaches() -> None:
    fired = Fired()
    running = Measurement("first_response", 1, at(0), None, False, 50)
    assert signals(running, 60, 80, fired) == ["at_risk"]
    fired.at_risk = True
    assert signals(running, 60, 80, fired) == []
    late = Measurement("first_response", 1, at(0), at(70), False, 70)
    assert signals(late, 60, 80, fired) == ["breached"]
    fired.breached = True
    assert signals(late, 60, 80, fired) == []
    # stopped in time: never a warning afterwards
    assert signals(Measurement("resolution", 1, at(0), at(5), False, 450), 480, 80, Fired()) == []


# --- property: random histories ---------------------------------------------------------------

OPEN = ("new", "assigned", "in_progress")
ACTIONS = ("work", "wait", "resolve", "close", "reopen", "respond", "merge", "observe")


@dataclass
class Sim:
    """Builds status spans from transitions, as SD-A's ticket_status_spans does."""

    spans: list[Span]
    status: str = "new"
    first_response_at: datetime | None = None

    def move(self, status: str, now: datetime) -> None:
        if status == self.status:
            return
        last = self.spans[-1]
        self.spans[-1] = Span(last.status, last.start, now)
        self.spans.append(Span(status, now))
        self.status = status

    def timeline(self) -> TicketTimeline:
        return TicketTimeline(T0, tuple(self.spans), self.first_response_at)


def step(sim: Sim, action: str, now: datetime) -> None:
    closed = sim.status in ("resolved", "closed", "merged")
    if action == "work" and not closed:
        sim.move("in_progress", now)
    elif action == "wait" and not closed:
        sim.move("waiting_on_customer", now)
    elif action == "resolve" and not closed:
        sim.move("resolved", now)
    elif action == "close" and sim.status == "resolved":
        sim.move("closed", now)
    elif action == "reopen" and sim.status in ("resolved", "closed"):
        sim.move("in_progress", now)
    elif action == "respond" and sim.first_response_at is None and not closed:
        sim.first_response_at = now
    elif action == "merge" and not closed:
        sim.move("merged", now)


histories = st.lists(
    st.tuples(st.sampled_from(ACTIONS), st.floats(min_value=0, max_value=900, allow_nan=False)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(histories, st.sampled_from([OFFICE, ALWAYS]))
def test_elapsed_never_negative_never_decreases_and_each_signal_fires_at_most_once(
    history: list[tuple[str, float]], calendar: BusinessCalendar
) -> None:
    sim = Sim(spans=[Span("new", T0)])
    tracker = SlaTracker(POLICY)
    last: dict[tuple[str, int], float] = {}
    fired: list[tuple[str, str, int]] = []
    now = T0
    for action, gap in history:
        now += timedelta(minutes=gap)
        step(sim, action, now)
        ms = measure(sim.timeline(), calendar, now)
        for m in ms:
            assert m.elapsed_minutes >= 0
            key = (m.target, m.episode)
            assert m.elapsed_minutes >= last.get(key, 0.0) - 1e-9
            last[key] = m.elapsed_minutes
            assert m.elapsed_minutes <= (now - m.started_at).total_seconds() / 60 + 1e-6
            goal = 60 if m.target == "first_response" else 480
            if m.stopped_at is None and m.elapsed_minutes >= goal:
                # a breached target was due when its elapsed time reached the target
                due = due_at(m, goal, calendar, now)
                assert due is not None and m.started_at <= due <= now
                then = by_target(measure(sim.timeline(), calendar, due))[key]
                assert abs(then.elapsed_minutes - goal) < 1e-6
        fired.extend(tracker.observe(ms))
    # at most once per signal, target and episode
    assert len(fired) == len(set(fired))
    for _, target, episode in fired:  # a warning never follows its episode's breach
        warned, breached = ("at_risk", target, episode), ("breached", target, episode)
        if warned in fired and breached in fired:
            assert fired.index(warned) < fired.index(breached)
    # a breach fired exactly for the targets that ran over
    over = {k for k, v in last.items() if v >= (60 if k[0] == "first_response" else 480)}
    assert {(t, e) for s, t, e in fired if s == "breached"} == over
    # episodes are numbered 1.. in order, one more per reopening
    reopenings = sum(
        1
        for a, b in zip(sim.spans, sim.spans[1:], strict=False)
        if a.status in ("resolved", "closed") and b.status in (*OPEN, "waiting_on_customer")
    )
    assert len(resolution_episodes(sim.timeline())) == 1 + reopenings
