"""Business-hours calendars: a time zone, working intervals per weekday and holidays (pure).

Working intervals are local wall-clock times (``09:00`` to ``17:30``; ``24:00`` ends the day), so
a calendar follows its zone's daylight-saving changes. ``business_minutes(start, end)`` is the
working time inside ``[start, end)``; ``add_business_minutes`` is its inverse. Both take and
return aware datetimes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crm_events.schemas.service_routing import CalendarSet, Holiday, WorkingHours
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import InvalidInput

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY = 24 * 60
MAX_DAYS_AHEAD = 3700  # add_business_minutes gives up (None) beyond ~10 years

Minutes = tuple[int, int]


class CalendarError(ValueError):
    """A calendar definition that cannot be used; ``field`` names the part that is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def as_input_error(self) -> InvalidInput:
        return InvalidInput(self.field, self.reason)


def parse_clock(text: str, field: str) -> int:
    """``HH:MM`` (00:00 to 24:00) as minutes after midnight."""
    hh, sep, mm = text.partition(":")
    if not (sep and hh.isdigit() and mm.isdigit() and len(hh) == 2 and len(mm) == 2):
        raise CalendarError(field, f"{text!r} is not a time HH:MM")
    minutes = int(hh) * 60 + int(mm)
    if int(mm) >= 60 or minutes > DAY:
        raise CalendarError(field, f"{text!r} is not a time between 00:00 and 24:00")
    return minutes


def format_clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def zone(name: str, field: str = "timezone") -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CalendarError(field, f"{name!r} is not an IANA time zone name") from None


def week_from(
    hours: Sequence[WorkingHours], field: str = "hours"
) -> tuple[tuple[Minutes, ...], ...]:
    """Seven tuples (Monday first) of sorted, non-overlapping ``(start, end)`` minute intervals."""
    week: list[list[Minutes]] = [[] for _ in WEEKDAYS]
    seen: set[str] = set()
    for i, day in enumerate(hours):
        if day.weekday in seen:
            raise CalendarError(f"{field}.{i}.weekday", f"{day.weekday} is listed twice")
        seen.add(day.weekday)
        intervals: list[Minutes] = []
        for j, (a, b) in enumerate(day.intervals):
            where = f"{field}.{i}.intervals.{j}"
            start, end = parse_clock(a, where), parse_clock(b, where)
            if start >= end:
                raise CalendarError(where, f"starts at {a}, not before its end {b}")
            intervals.append((start, end))
        intervals.sort()
        for (_, end1), (start2, _) in pairwise(intervals):
            if start2 < end1:
                raise CalendarError(f"{field}.{i}.intervals", "intervals overlap")
        week[WEEKDAYS.index(day.weekday)] = intervals
    if not any(week):
        raise CalendarError(field, "a calendar needs some working time in the week")
    return tuple(tuple(d) for d in week)


@dataclass(frozen=True)
class BusinessCalendar:
    tz: ZoneInfo
    week: tuple[tuple[Minutes, ...], ...]
    holidays: frozenset[date] = frozenset()

    @classmethod
    def of(
        cls, timezone: str, hours: Sequence[WorkingHours], holidays: Sequence[Holiday] = ()
    ) -> BusinessCalendar:
        return cls(zone(timezone), week_from(hours), frozenset(h.day for h in holidays))

    @classmethod
    def always(cls) -> BusinessCalendar:
        """Round the clock, every day (the fallback when a policy names no usable calendar)."""
        return cls(ZoneInfo("UTC"), tuple(((0, DAY),) for _ in WEEKDAYS))

    def _local_day(self, moment: datetime) -> date:
        return moment.astimezone(self.tz).date()

    def _at(self, day: date, minutes: int) -> datetime:
        wall = datetime.combine(day, time(), tzinfo=self.tz) + timedelta(minutes=minutes)
        return wall.astimezone(UTC)

    def intervals_on(self, day: date) -> Iterator[tuple[datetime, datetime]]:
        """The working intervals of a local day, as UTC instants."""
        if day in self.holidays:
            return
        for start, end in self.week[day.weekday()]:
            yield self._at(day, start), self._at(day, end)

    def business_seconds(self, start: datetime, end: datetime) -> float:
        """Working seconds inside ``[start, end)``; 0 when ``end <= start``."""
        if end <= start:
            return 0.0
        total = 0.0
        day = self._local_day(start) - timedelta(days=1)
        last = self._local_day(end) + timedelta(days=1)
        while day <= last:
            for a, b in self.intervals_on(day):
                lo, hi = max(a, start), min(b, end)
                if hi > lo:
                    total += (hi - lo).total_seconds()
            day += timedelta(days=1)
        return total

    def business_minutes(self, start: datetime, end: datetime) -> float:
        return self.business_seconds(start, end) / 60.0

    def add_business_minutes(self, start: datetime, minutes: float) -> datetime | None:
        """The instant when ``minutes`` of working time after ``start`` have passed."""
        remaining = timedelta(minutes=max(minutes, 0.0))
        if remaining == timedelta(0):
            return start
        day = self._local_day(start) - timedelta(days=1)
        for _ in range(MAX_DAYS_AHEAD):
            for a, b in self.intervals_on(day):
                lo = max(a, start)
                if b <= lo:
                    continue
                if b - lo >= remaining:
                    return lo + remaining
                remaining -= b - lo
            day += timedelta(days=1)
        return None


class Calendar(Aggregate):
    """A named business-hours calendar (stream ``calendar-<id>``)."""

    stream_type = "calendar"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.definition: CalendarSet | None = None

    def set(
        self, *, name: str, timezone: str, hours: list[WorkingHours], holidays: list[Holiday]
    ) -> None:
        BusinessCalendar.of(timezone, hours, holidays)  # validates
        days = sorted({h.day: h for h in holidays}.values(), key=lambda h: h.day)
        ordered = sorted(hours, key=lambda h: WEEKDAYS.index(h.weekday))
        event = CalendarSet(
            calendar_id=self.id, name=name, timezone=timezone, hours=ordered, holidays=days
        )
        if event != self.definition:
            self.record(event)

    @property
    def business(self) -> BusinessCalendar:
        assert self.definition is not None
        d = self.definition
        return BusinessCalendar.of(d.timezone, d.hours, d.holidays)

    @applies(CalendarSet)
    def _set(self, e: CalendarSet) -> None:
        self.definition = e
