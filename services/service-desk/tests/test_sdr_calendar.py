"""Business-hours calendars: working time between instants, and its inverse (unit + hypothesis)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_events.schemas.service_routing import Holiday, WorkingHours
from crm_service_desk.domain.calendar import BusinessCalendar, CalendarError

WEEK = [
    WorkingHours(weekday=d, intervals=[("09:00", "17:00")])
    for d in ("mon", "tue", "wed", "thu", "fri")
]
BERLIN = BusinessCalendar.of(
    "Europe/Berlin", WEEK, [Holiday(day=date(2026, 12, 25), name="Christmas")]
)
SPLIT = BusinessCalendar.of(
    "America/New_York",
    [
        WorkingHours(weekday="mon", intervals=[("13:00", "17:00"), ("08:00", "12:00")]),
        WorkingHours(weekday="sat", intervals=[("00:00", "24:00")]),
    ],
)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_working_time_follows_the_local_zone_weekends_and_holidays() -> None:
    # Monday 2026-11-23, Berlin is UTC+1 in winter: 09:00-17:00 local = 08:00-16:00 UTC
    assert BERLIN.business_minutes(utc(2026, 11, 23, 7), utc(2026, 11, 23, 9)) == 60
    assert BERLIN.business_minutes(utc(2026, 11, 23, 0), utc(2026, 11, 24, 0)) == 8 * 60
    # Friday 12:00 local to Monday 12:00 local: 5 h Friday + 3 h Monday
    assert BERLIN.business_minutes(utc(2026, 11, 27, 11), utc(2026, 11, 30, 11)) == 8 * 60
    # Christmas (Friday) is a holiday
    assert BERLIN.business_minutes(utc(2026, 12, 25, 0), utc(2026, 12, 26, 0)) == 0
    # summer time: UTC+2, 09:00 local = 07:00 UTC
    assert BERLIN.business_minutes(utc(2026, 7, 6, 6), utc(2026, 7, 6, 8)) == 60
    assert BERLIN.business_minutes(utc(2026, 11, 23, 9), utc(2026, 11, 23, 9)) == 0
    assert BERLIN.business_minutes(utc(2026, 11, 23, 10), utc(2026, 11, 23, 9)) == 0


def test_split_days_and_whole_days() -> None:
    monday = datetime(2026, 11, 23, tzinfo=UTC)
    assert SPLIT.business_minutes(monday, monday + timedelta(days=1)) == 8 * 60
    saturday = datetime(2026, 11, 28, 12, tzinfo=UTC)
    assert SPLIT.business_minutes(saturday, saturday + timedelta(hours=3)) == 180


def test_add_business_minutes_skips_nights_weekends_and_holidays() -> None:
    friday_late = utc(2026, 11, 27, 15)  # 16:00 Berlin, one working hour left
    assert BERLIN.add_business_minutes(friday_late, 120) == utc(2026, 11, 30, 9)  # Mon 10:00
    assert BERLIN.add_business_minutes(utc(2026, 12, 24, 15), 90) == utc(2026, 12, 28, 8, 30)
    assert BERLIN.add_business_minutes(friday_late, 0) == friday_late
    assert BusinessCalendar.always().add_business_minutes(friday_late, 60) == utc(2026, 11, 27, 16)


@pytest.mark.parametrize(
    ("hours", "field"),
    [
        ([], "hours"),
        ([WorkingHours(weekday="mon", intervals=[("09:00", "08:00")])], "hours.0.intervals.0"),
        ([WorkingHours(weekday="mon", intervals=[("9:00", "10:00")])], "hours.0.intervals.0"),
        ([WorkingHours(weekday="mon", intervals=[("09:00", "24:01")])], "hours.0.intervals.0"),
        (
            [WorkingHours(weekday="mon", intervals=[("09:00", "12:00"), ("11:00", "13:00")])],
            "hours.0.intervals",
        ),
        (
            [
                WorkingHours(weekday="mon", intervals=[("09:00", "12:00")]),
                WorkingHours(weekday="mon", intervals=[("13:00", "14:00")]),
            ],
            "hours.1.weekday",
        ),
    ],
)
def test_bad_calendars_name_the_field(hours: list[WorkingHours], field: str) -> None:
    with pytest.raises(CalendarError) as err:
        BusinessCalendar.of("UTC", hours)
    assert err.value.field == field


def test_unknown_zone() -> None:
    with pytest.raises(CalendarError) as err:
        BusinessCalendar.of("Mars/Olympus", WEEK)
    assert err.value.field == "timezone"


instants = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)
calendars = st.sampled_from([BERLIN, SPLIT, BusinessCalendar.always()])


@settings(max_examples=200, deadline=None)
@given(calendars, instants, instants, instants)
def test_business_time_is_non_negative_monotone_and_additive(
    cal: BusinessCalendar, a: datetime, b: datetime, c: datetime
) -> None:
    x, y, z = sorted((a, b, c))
    xy, yz, xz = cal.business_minutes(x, y), cal.business_minutes(y, z), cal.business_minutes(x, z)
    assert xy >= 0 and yz >= 0
    assert xz >= xy and xz >= yz  # monotone in both ends
    assert abs(xz - (xy + yz)) < 1e-6  # additive (these zones' DST changes fall outside hours)
    assert xz <= (z - x).total_seconds() / 60 + 1e-6  # never more than wall time


@settings(max_examples=200, deadline=None)
@given(calendars, instants, st.floats(min_value=0, max_value=20_000, allow_nan=False))
def test_add_business_minutes_inverts_business_minutes(
    cal: BusinessCalendar, start: datetime, minutes: float
) -> None:
    end = cal.add_business_minutes(start, minutes)
    assert end is not None and end >= start
    assert abs(cal.business_minutes(start, end) - minutes) < 1e-3
