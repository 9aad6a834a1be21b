"""Query parameters the analytics routes share."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import Depends, Query

from crm_runtime.errors import InvalidInput
from crm_runtime.http.params import Instant


def _as_of(
    as_of: Annotated[
        Instant | None,
        Query(description="answer as things stood at this time (from the event history)"),
    ] = None,
) -> datetime | None:
    if as_of is not None and as_of.tzinfo is None:
        return as_of.replace(tzinfo=UTC)  # a time without an offset is UTC
    return as_of


AsOf = Annotated[datetime | None, Depends(_as_of)]


YEARS = (2000, 2100)  # the years a forecast covers (``year=``), and so an as_of that stands in
MONTHS = (1970, 2199)  # the years of a month series (``until=YYYY-MM``)


def year_of(year: int | None, as_of: datetime | None) -> int:
    """The year asked for, else as_of's (else this year's), within :data:`YEARS`."""
    if year is not None:
        return year
    if as_of is None:
        return datetime.now(UTC).year
    if not YEARS[0] <= as_of.year <= YEARS[1]:
        raise InvalidInput(
            "as_of", f"stands in for the year here: it must fall in {YEARS[0]}-{YEARS[1]}"
        )
    return as_of.year


def month_of(as_of: datetime | None) -> date:
    """The first day of as_of's month (else this month's), within :data:`MONTHS`."""
    day = (as_of or datetime.now(UTC)).date().replace(day=1)
    if not MONTHS[0] <= day.year <= MONTHS[1]:
        raise InvalidInput(
            "as_of", f"stands in for the month here: it must fall in {MONTHS[0]}-{MONTHS[1]}"
        )
    return day
