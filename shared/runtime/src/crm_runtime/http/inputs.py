"""Checks of what clients send that every service shares: required text and plausible dates.

The request models compose these annotations instead of repeating the checks, so a failure is
the usual 422 problem naming the field (:mod:`crm_runtime.http.problems`), with one reason per
check wherever it fails, and nothing is recorded. No reason repeats the value sent.

* **Required short text** (a name, title, subject, label, tag, reason, description, an id): add
  :data:`NotBlank` after the field's constraints (``Annotated[str, Field(...), NotBlank]``). It is
  stored **trimmed** of leading and trailing whitespace, refused when nothing visible is left
  (empty, whitespace or invisible characters such as a zero-width space only: :func:`is_blank`),
  also where the field itself may be left out, and length limits count the trimmed text.
  :data:`Name`, :data:`Label` and :data:`Tag` are the common ones; :data:`OneLine` refuses a line
  break inside (text that becomes a header, a page title, a document's heading).
* **Free text that must not be empty** (a reply, a note, a message, a template's body) is a body
  whose leading spaces or trailing newline may matter: :data:`BodyNotBlank` refuses it when blank
  and keeps it as sent.
* **Dates and times** a client sends must fall on the calendar a CRM uses, :data:`EARLIEST` to
  :data:`LATEST` (a time by its day in UTC): :data:`ClientDate`, :data:`ClientTime`,
  :data:`ClientAwareTime`. A time something *happened* may in addition be at most
  :data:`CLOCK_SKEW` ahead of now: :data:`HappenedAt` (by this host's clock; the rule itself is
  :func:`ahead_of_clock`, which takes the clock). A visitor's browser time (website activity)
  is not refused but replaced by the service: see crm_marketing.web.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from crm_runtime.http.params import AwareInstant, Instant

# --- text ---------------------------------------------------------------------------------------

BLANK_REASON = "must not be blank: empty, or only whitespace or invisible characters"
ONE_LINE_REASON = "must be one line, without line breaks or control characters"
_INVISIBLE = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})  # controls, format characters, spaces
_BREAKS = frozenset({"Cc", "Zl", "Zp"})  # controls (tab, CR, LF...), line and paragraph breaks


def is_blank(value: str) -> bool:
    """Whether ``value`` shows nothing: empty, whitespace or invisible characters only (controls,
    format characters such as the zero-width space, spaces of any width)."""
    return all(c.isspace() or unicodedata.category(c) in _INVISIBLE for c in value)


def trimmed_not_blank(value: Any) -> Any:
    """``value`` without its leading and trailing whitespace; a validation error when it shows
    nothing (:func:`is_blank`).

    A *before* validator, so that the field's length limits count the trimmed text: put it after
    the field's constraints in ``Annotated``. Other types pass through to the type's own check
    (a number is still "not a valid string")."""
    if isinstance(value, str):
        value = value.strip()
        if is_blank(value):
            raise PydanticCustomError("blank", BLANK_REASON)
    return value


def not_blank(value: str) -> str:
    """``value``, unchanged, unless it shows nothing (:func:`is_blank`)."""
    if is_blank(value):
        raise PydanticCustomError("blank", BLANK_REASON)
    return value


def one_line(value: str) -> str:
    """``value`` unless it holds a line break or another control character."""
    if any(unicodedata.category(c) in _BREAKS for c in value):
        raise PydanticCustomError("multi_line", ONE_LINE_REASON)
    return value


NotBlank = BeforeValidator(trimmed_not_blank)
"""Required short text: stored trimmed, refused when blank. After the field's constraints:
``Annotated[str, Field(min_length=1, max_length=...), NotBlank]``."""

BodyNotBlank = AfterValidator(not_blank)
"""Free text that must not be empty: refused when blank, kept as sent (not trimmed)."""

OneLine = AfterValidator(one_line)
"""With :data:`NotBlank`: no line break or control character inside the (trimmed) text."""

Name = Annotated[str, Field(min_length=1, max_length=200), NotBlank]
"""A name, title or subject (of a lead, deal, segment, campaign, queue, calendar...)."""

Label = Annotated[str, Field(min_length=1, max_length=100), NotBlank]
"""A short label something carries (a product, region, tier, skill or product line)."""

Tag = Annotated[str, Field(min_length=1, max_length=50), NotBlank]
"""A tag (of a contact, an account, an article)."""


# --- dates and times ----------------------------------------------------------------------------

EARLIEST = date(1900, 1, 1)
LATEST = date(2200, 12, 31)
CLOCK_SKEW = timedelta(days=1)
CALENDAR_REASON = f"must be between {EARLIEST} and {LATEST} (for a time: its day in UTC)"
AHEAD_REASON = (
    "must not be more than 1 day ahead of now: it already happened"
    " (a day of clock difference is allowed)"
)


def _day_of(value: date) -> date | None:
    """The day a date or time falls on (in UTC, for a time with an offset); None when that day
    is outside what ``date`` can hold."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.date()
        try:
            return value.astimezone(UTC).date()
        except OverflowError:
            return None
    return value


def on_calendar(value: date) -> date:
    """``value`` (a day, or a time by its day in UTC) if it is from :data:`EARLIEST` to
    :data:`LATEST`."""
    day = _day_of(value)
    if day is None or not EARLIEST <= day <= LATEST:
        raise PydanticCustomError("implausible_date", CALENDAR_REASON)
    return value


def ahead_of_clock(value: datetime, now: datetime) -> str | None:
    """Why ``value``, a time something happened, cannot be (more than :data:`CLOCK_SKEW` after
    ``now``, the service's clock), or None. A time without an offset is read as UTC."""
    at = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return AHEAD_REASON if at > now + CLOCK_SKEW else None


def _happened(value: datetime) -> datetime:
    if ahead_of_clock(value, datetime.now(UTC)):
        raise PydanticCustomError("time_ahead", AHEAD_REASON)
    return value


ClientDate = Annotated[date, AfterValidator(on_calendar)]
"""A day a client sends (a close date, a quote's validity, a holiday): 1900-01-01 to
2200-12-31."""

ClientTime = Annotated[Instant, AfterValidator(on_calendar)]
"""A time a client sends (``as_of``, a due time): its UTC day from 1900-01-01 to 2200-12-31."""

ClientAwareTime = Annotated[AwareInstant, AfterValidator(on_calendar)]
"""As :data:`ClientTime`, and the time must carry its offset (a send time, a receipt)."""

HappenedAt = Annotated[Instant, AfterValidator(on_calendar), AfterValidator(_happened)]
"""When something happened (an activity): as :data:`ClientTime`, and at most
:data:`CLOCK_SKEW` ahead of this host's clock."""
