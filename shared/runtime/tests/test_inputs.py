"""The input checks every service shares (``crm_runtime.http.inputs``): required short text is
trimmed and refused when nothing visible is left, bodies are refused when blank but kept as
sent, one-line text has no break inside, dates and times fall from 1900-01-01 to 2200-12-31 (a
time by its UTC day) and a time something happened is at most a day ahead; each check with one
reason, which never repeats the value sent."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from crm_runtime.http import problems
from crm_runtime.http.inputs import (
    AHEAD_REASON,
    BLANK_REASON,
    CALENDAR_REASON,
    CLOCK_SKEW,
    ONE_LINE_REASON,
    BodyNotBlank,
    ClientAwareTime,
    ClientDate,
    ClientTime,
    HappenedAt,
    Label,
    Name,
    NotBlank,
    OneLine,
    Tag,
    ahead_of_clock,
    is_blank,
)

# empty; spaces, a tab and line breaks; a no-break, an ideographic and a zero-width space; a
# line separator; a byte order mark and a soft hyphen (format characters)
BLANKS = (
    "",
    "   ",
    " \t\r\n ",
    "\u00a0",
    "\u3000",
    "\u200b",
    "\u00a0\u200b ",
    "\u2028",
    "\ufeff\u00ad",
)
Short = Annotated[str, Field(min_length=1, max_length=5), NotBlank]
Body = Annotated[str, Field(min_length=1, max_length=50), BodyNotBlank]
Subject = Annotated[str, Field(min_length=1, max_length=20), NotBlank, OneLine]


def reason(adapter: TypeAdapter[Any], value: Any) -> str:
    """The one reason ``value`` is refused for."""
    with pytest.raises(ValidationError) as caught:
        adapter.validate_python(value)
    (error,) = caught.value.errors()
    return str(error["msg"])


# --- text ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", BLANKS)
def test_blank_is_nothing_visible(value: str) -> None:
    assert is_blank(value)


@pytest.mark.parametrize("value", ["a", " a ", "\u200ba", "-", "0", "\u00e9"])
def test_text_with_something_visible_is_not_blank(value: str) -> None:
    assert not is_blank(value)


@pytest.mark.parametrize("value", BLANKS)
def test_required_short_text_that_shows_nothing_is_refused_with_one_reason(value: str) -> None:
    assert reason(TypeAdapter(Short), value) == BLANK_REASON
    assert reason(TypeAdapter(Name), value) == BLANK_REASON


def test_required_short_text_is_stored_trimmed_and_its_limit_counts_the_trimmed_text() -> None:
    short = TypeAdapter(Short)
    assert short.validate_python("  Ada \n") == "Ada"
    assert short.validate_python("\u00a0Ada\u3000") == "Ada"
    assert short.validate_python(" \t" + "x" * 5 + "\n ") == "x" * 5  # 9 sent, 5 kept
    assert "at most 5 characters" in reason(short, " " + "x" * 6 + " ")
    # inner spaces stay
    assert short.validate_python(" a  b ") == "a  b"


def test_common_short_text_types_have_their_limits_and_trim() -> None:
    for kind, limit in ((Name, 200), (Label, 100), (Tag, 50)):
        adapter = TypeAdapter(kind)
        assert adapter.validate_python("  " + "x" * limit + "  ") == "x" * limit
        assert f"at most {limit} characters" in reason(adapter, "x" * (limit + 1))
        assert reason(adapter, " \u200b ") == BLANK_REASON


def test_required_short_text_of_another_type_keeps_the_types_reason() -> None:
    assert reason(TypeAdapter(Short), 12) == "Input should be a valid string"


class Patch(BaseModel):
    name: Name | None = None
    tags: list[Tag] = []


def test_optional_and_listed_short_text_is_checked_and_trimmed_too() -> None:
    assert Patch.model_validate({}).name is None
    assert Patch.model_validate({"name": None}).name is None
    assert Patch.model_validate({"name": " Ada ", "tags": [" vip"]}) == Patch(
        name="Ada", tags=["vip"]
    )
    with pytest.raises(ValidationError) as caught:
        Patch.model_validate({"name": "  ", "tags": ["vip", "\u200b"]})
    errors = [(e["loc"], e["msg"]) for e in caught.value.errors()]
    assert errors == [(("name",), BLANK_REASON), (("tags", 1), BLANK_REASON)]


@pytest.mark.parametrize("value", BLANKS)
def test_a_blank_body_is_refused_with_the_same_reason(value: str) -> None:
    body = TypeAdapter(Body)
    if value:
        assert reason(body, value) == BLANK_REASON
    else:  # empty: the length limit speaks first
        assert "at least 1 character" in reason(body, value)


def test_a_body_is_kept_as_sent() -> None:
    body = TypeAdapter(Body)
    assert body.validate_python("  indented\n\ncode\n") == "  indented\n\ncode\n"
    assert "at most 50 characters" in reason(body, " " * 45 + "x" * 6)  # whitespace counts


@pytest.mark.parametrize("value", ["Checkout\nfails", "Checkout\r fails", "a\tb", "a\u2028b"])
def test_one_line_text_with_a_break_or_control_character_inside_is_refused(value: str) -> None:
    assert reason(TypeAdapter(Subject), value) == ONE_LINE_REASON


def test_one_line_text_is_trimmed_first() -> None:
    subject = TypeAdapter(Subject)
    assert subject.validate_python(" Checkout fails\r\n") == "Checkout fails"
    assert reason(subject, "\n") == BLANK_REASON


# --- dates and times ----------------------------------------------------------------------------


def test_a_day_must_be_on_the_calendar_bounds_included() -> None:
    days = TypeAdapter(ClientDate)
    assert days.validate_python("1900-01-01") == date(1900, 1, 1)
    assert days.validate_python("2200-12-31") == date(2200, 12, 31)
    for day in ("1899-12-31", "2201-01-01", "0001-01-01", "9999-12-31"):
        assert reason(days, day) == CALENDAR_REASON


def test_a_time_counts_by_its_day_in_utc() -> None:
    times = TypeAdapter(ClientTime)
    for ok in ("1900-01-01T00:00:00Z", "2200-12-31T23:59:59Z", "1899-12-31T20:00:00-05:00"):
        assert times.validate_python(ok).year in (1899, 1900, 2200)
    for wrong in (
        "1899-12-31T23:59:59Z",
        "2201-01-01T00:00:00Z",
        "2200-12-31T23:00:00-05:00",  # 2201-01-01 in UTC
        "1900-01-01T00:30:00+01:00",  # 1899-12-31 in UTC
        "0100-01-01T00:00:00Z",
    ):
        assert reason(times, wrong) == CALENDAR_REASON, wrong
    # without an offset: its own day
    assert times.validate_python("2200-12-31T23:00:00") == datetime(2200, 12, 31, 23)
    assert reason(times, "1899-12-31T23:00:00") == CALENDAR_REASON


def test_a_time_that_cannot_be_shifted_to_utc_keeps_its_storage_reason() -> None:
    times = TypeAdapter(ClientTime)
    assert "out of range" in reason(times, "0001-01-01T00:00:00+14:00")


def test_an_aware_time_must_carry_its_offset_and_be_on_the_calendar() -> None:
    aware = TypeAdapter(ClientAwareTime)
    assert aware.validate_python("2030-01-01T09:00:00+01:00").utcoffset() == timedelta(hours=1)
    assert "timezone" in reason(aware, "2030-01-01T09:00:00")
    assert reason(aware, "2300-04-01T09:00:00Z") == CALENDAR_REASON


def test_a_time_something_happened_is_at_most_a_day_ahead_of_now() -> None:
    happened = TypeAdapter(HappenedAt)
    now = datetime.now(UTC)
    assert happened.validate_python(now - timedelta(days=3000))
    skewed = now + timedelta(hours=20)  # a clock a little fast: taken
    assert happened.validate_python(skewed) == skewed
    local = (now + timedelta(hours=20)).astimezone(timezone(timedelta(hours=-9)))
    assert happened.validate_python(local) == local
    assert reason(happened, now + CLOCK_SKEW + timedelta(minutes=5)) == AHEAD_REASON
    assert reason(happened, (now + timedelta(days=2)).replace(tzinfo=None)) == AHEAD_REASON
    # off the calendar: the calendar's reason
    assert reason(happened, "1899-12-31T12:00:00Z") == CALENDAR_REASON
    assert reason(happened, "2300-01-01T12:00:00Z") == CALENDAR_REASON


def test_ahead_of_clock_checks_against_the_clock_given() -> None:
    now = datetime(2026, 5, 4, 10, tzinfo=UTC)
    assert ahead_of_clock(now + CLOCK_SKEW, now) is None
    assert ahead_of_clock(now - timedelta(days=400), now) is None
    assert ahead_of_clock(now + CLOCK_SKEW + timedelta(seconds=1), now) == AHEAD_REASON
    # without an offset: read as UTC
    assert ahead_of_clock(datetime(2026, 5, 5, 10), now) is None
    assert ahead_of_clock(datetime(2026, 5, 5, 10, 1), now) == AHEAD_REASON


def test_no_reason_repeats_the_value_sent() -> None:
    for text in (BLANK_REASON, ONE_LINE_REASON, CALENDAR_REASON, AHEAD_REASON):
        assert "{" not in text
    assert "2201" not in reason(TypeAdapter(ClientDate), "2201-01-01")
    assert "1850" not in reason(TypeAdapter(ClientTime), "1850-06-01T00:00:00Z")
    assert "Ada" not in reason(TypeAdapter(Subject), "Ada\nLovelace")


# --- as a request sees them ---------------------------------------------------------------------


class Ticket(BaseModel):
    subject: Subject
    body: Body
    due: ClientDate | None = None


def make_app(stored: list[Ticket]) -> FastAPI:
    app = FastAPI()
    problems.install(app)

    @app.post("/tickets")
    async def create(ticket: Ticket) -> dict[str, str]:
        stored.append(ticket)
        return {"subject": ticket.subject, "body": ticket.body}

    return app


async def test_a_request_gets_a_422_problem_naming_each_field_and_nothing_happens() -> None:
    stored: list[Ticket] = []
    transport = httpx.ASGITransport(app=make_app(stored))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.post(
            "/tickets", json={"subject": "\u200b ", "body": " \n", "due": "2201-01-01"}
        )
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        errors = {e["field"]: e["reason"] for e in r.json()["errors"]}
        assert errors == {"subject": BLANK_REASON, "body": BLANK_REASON, "due": CALENDAR_REASON}
        assert stored == []

        r = await client.post("/tickets", json={"subject": " Printer ", "body": "  Jammed.\n"})
        assert r.status_code == 200, r.text
        assert r.json() == {"subject": "Printer", "body": "  Jammed.\n"}
