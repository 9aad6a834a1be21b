"""The checks every sales request body shares: required text, currency codes and dates.

Each check lives here once, as a pydantic validator; the body models compose it into their own
types (``Annotated[str, Field(max_length=...), NOT_BLANK]``), so a failure is the usual 422
problem naming the field (``crm_runtime.http.problems``) and nothing is recorded.

* **Required text** (names, titles, subjects, tags, labels, product and line names, units and
  descriptions) is stored **trimmed** of leading and trailing whitespace; text that is empty
  once trimmed is refused, also where the field itself may be left out. Length limits count the
  trimmed text. Free text (notes, bodies, messages, outcomes) is kept as sent.
* **Currencies** must be ISO 4217 codes of a currency (fund codes such as CLF or UYI included;
  XXX, XTS, precious metals, SDR and bond units refused).
* **Dates** must fall on the calendar a CRM uses (:data:`EARLIEST` to :data:`LATEST`); a time
  something *happened* (an activity's ``occurred_at``) may be at most :data:`CLOCK_SKEW` ahead.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from crm_events.money import is_currency
from crm_runtime.http.params import AwareInstant, Instant

# --- text ---------------------------------------------------------------------------------------


def trimmed_not_blank(value: Any) -> Any:
    """Text without its leading and trailing whitespace; a 422 when nothing else is left.

    A *before* validator: put it after the field's constraints in ``Annotated`` so that it runs
    first and the length limits count the trimmed text. Other types pass through to the type's
    own check (a number is still "not a valid string")."""
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise PydanticCustomError("blank", "must not be empty or only whitespace")
    return value


NOT_BLANK = BeforeValidator(trimmed_not_blank)
"""Required text: trimmed, and refused when blank. ``Annotated[str, Field(...), NOT_BLANK]``."""

Name = Annotated[str, Field(min_length=1, max_length=200), NOT_BLANK]
"""A name, title or subject (of a lead, contact, account, deal, task, activity…)."""

Reason = Annotated[str, Field(min_length=1, max_length=1000), NOT_BLANK]
"""Why something was turned down (a lead's disqualification)."""


# --- currencies ---------------------------------------------------------------------------------

CURRENCY_REASON = "is not an ISO 4217 currency code (such as EUR, USD or JPY)"


def _known_currency(code: str) -> str:
    if not is_currency(code):
        raise PydanticCustomError("currency_unknown", CURRENCY_REASON)
    return code


Currency = Annotated[
    str, Field(pattern=r"^[A-Z]{3}$", examples=["EUR"]), AfterValidator(_known_currency)
]
"""An ISO 4217 currency code, e.g. EUR."""


# --- dates --------------------------------------------------------------------------------------

EARLIEST = date(1900, 1, 1)
LATEST = date(2200, 12, 31)
CLOCK_SKEW = timedelta(days=1)
CALENDAR = f"between {EARLIEST} and {LATEST}"


def _day_of(value: date) -> date:
    """The day a date or time falls on (in UTC, for a time with an offset)."""
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo is not None else value).date()
    return value


def _on_calendar(value: date) -> date:
    day = _day_of(value)
    if not EARLIEST <= day <= LATEST:
        where = " (in UTC)" if isinstance(value, datetime) else ""
        raise PydanticCustomError(
            "date_implausible", "must be {calendar}{where}", {"calendar": CALENDAR, "where": where}
        )
    return value


def _happened(value: datetime) -> datetime:
    """Something that already happened: on the calendar, and not later than the clock skew
    allows. A time without an offset is left to the caller, which refuses it."""
    if _day_of(value) < EARLIEST or (
        value.tzinfo is not None and value > datetime.now(UTC) + CLOCK_SKEW
    ):
        raise PydanticCustomError(
            "time_implausible",
            "must be between {earliest} and 1 day from now (it already happened; a day of "
            "clock difference is allowed)",
            {"earliest": str(EARLIEST)},
        )
    return value


CalendarDate = Annotated[date, AfterValidator(_on_calendar)]
"""A date to plan by (a close date, a quote's validity): 1900-01-01 to 2200-12-31."""

CalendarTime = Annotated[Instant, AfterValidator(_on_calendar)]
"""A time to plan by (a task's due time): its UTC day from 1900-01-01 to 2200-12-31."""

CalendarAwareTime = Annotated[AwareInstant, AfterValidator(_on_calendar)]
"""As :data:`CalendarTime`, with its offset (a payment's receipt; the future is the domain's
to refuse)."""

HappenedAt = Annotated[Instant, AfterValidator(_happened)]
"""When something happened (an activity): from 1900-01-01 to one day ahead of now."""
