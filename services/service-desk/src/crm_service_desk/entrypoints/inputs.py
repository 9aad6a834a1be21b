"""Checks of what clients send, kept in one place: the request models of the service's APIs
(tickets, the portal and customer links, agents and queues, SLAs, the knowledge base) compose
these annotations instead of repeating the checks.

- Required text (a subject, a title, a name, a message) must show something: empty, only
  whitespace or only invisible characters is refused, a 422 naming the field. The value is
  checked, not changed.
- Times and days a client sends must fall in the years 1900 to 2200: nothing the service desk
  keeps (tickets, calendars, articles) is older or that far ahead, so such a value is a mistake
  (a wrong century, a swapped field) to report, not a time to compute with.
"""

from __future__ import annotations

import unicodedata
from datetime import date
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from crm_runtime.http.params import Instant

EARLIEST_YEAR = 1900
LATEST_YEAR = 2200
YEARS = f"between {EARLIEST_YEAR} and {LATEST_YEAR}"
_INVISIBLE = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})  # controls, format characters, spaces


def not_blank(value: str) -> str:
    """``value`` unless it shows nothing (empty, whitespace, invisible characters only)."""
    if all(c.isspace() or unicodedata.category(c) in _INVISIBLE for c in value):
        raise PydanticCustomError("blank", "must not be blank (empty or only whitespace)")
    return value


def one_line(value: str) -> str:
    """``value`` unless it holds a line break or another control character (a subject or a
    title can become a mail header or a page title)."""
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in value):
        raise PydanticCustomError(
            "multi_line", "must be one line, without line breaks or control characters"
        )
    return value


def plausible_year(value: date) -> date:
    """``value`` (a day or a time) if its year is between 1900 and 2200."""
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise PydanticCustomError(
            "implausible_time",
            "must be {range} (got the year {year})",
            {"range": YEARS, "year": value.year},
        )
    return value


NotBlank = AfterValidator(not_blank)
"""Add to the annotation of any required text field (with its length limits)."""

OneLine = AfterValidator(one_line)

Label = Annotated[str, Field(min_length=1, max_length=100), NotBlank]
"""A short name a ticket or an agent carries (product, region, tier, skill)."""

ClientTime = Annotated[Instant, AfterValidator(plausible_year)]
"""A time a client sends (``as_of``, an interval's ends): storable, and in 1900 to 2200."""

ClientDay = Annotated[date, AfterValidator(plausible_year)]
"""A calendar day a client sends (a holiday), in 1900 to 2200."""
