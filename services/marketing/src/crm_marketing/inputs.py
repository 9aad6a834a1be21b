"""Checks of what clients send, kept in one place: the request models of the service's APIs
(audience, website forms and activity, segments, templates, campaigns, triggers) and the public
form check compose these instead of repeating them.

- Required text (a name, a label, a subject, a category) must show something: empty, only
  whitespace or only invisible characters is refused, a 422 naming the field. The value is
  checked, not changed.
- Times a client sends (``as_of``, a campaign's ``send_at``, when a website event happened) must
  fall in the years 1900 to 2200: nothing marketing keeps is older or that far ahead, so such a
  value is a mistake (a wrong century, a swapped field) to report, not a time to compute with.
  A time something *happened* may be at most :data:`CLOCK_SKEW` ahead of the service's clock
  (:func:`ahead_of_clock`, called where the clock is known).
- E-mail addresses and phone numbers must have their shape (:func:`is_email`,
  :func:`is_phone`); a time zone must be a known IANA name; a band such as an age band
  (``25-34``) goes from the lower number to the higher.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from crm_runtime.http.params import AwareInstant, Instant

EARLIEST_YEAR = 1900
LATEST_YEAR = 2200
YEARS = f"between {EARLIEST_YEAR} and {LATEST_YEAR}"
CLOCK_SKEW = timedelta(days=1)
_INVISIBLE = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})  # controls, format characters, spaces


# --- text ---------------------------------------------------------------------------------------


def is_blank(value: str) -> bool:
    """Whether ``value`` shows nothing (empty, whitespace, invisible characters only)."""
    return all(c.isspace() or unicodedata.category(c) in _INVISIBLE for c in value)


def not_blank(value: str) -> str:
    """``value`` unless it shows nothing (empty, whitespace, invisible characters only)."""
    if is_blank(value):
        raise PydanticCustomError("blank", "must not be blank (empty or only whitespace)")
    return value


NotBlank = AfterValidator(not_blank)
"""Add to the annotation of any required text field (with its length limits)."""

Name = Annotated[str, Field(min_length=1, max_length=200), NotBlank]
"""The name of something a marketer keeps (a segment, template, campaign, form, trigger...)."""


# --- times --------------------------------------------------------------------------------------


def plausible_year(value: date) -> date:
    """``value`` (a day or a time) if its year is between 1900 and 2200."""
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise PydanticCustomError(
            "implausible_time",
            "must be {range} (got the year {year})",
            {"range": YEARS, "year": value.year},
        )
    return value


ClientTime = Annotated[Instant, AfterValidator(plausible_year)]
"""A time a client sends (``as_of``, when a website event happened): storable, 1900 to 2200."""

ClientAwareTime = Annotated[AwareInstant, AfterValidator(plausible_year)]
"""As :data:`ClientTime`, and the time must carry its offset (``send_at``)."""


def ahead_of_clock(value: datetime, now: datetime) -> str | None:
    """Why ``value``, a time something happened, cannot be (more than :data:`CLOCK_SKEW` after
    ``now``, the service's clock), or None. A time without an offset is read as UTC."""
    at = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if at > now + CLOCK_SKEW:
        return (
            "must not be more than 1 day ahead of the server's clock: it already happened"
            " (a day of clock difference is allowed)"
        )
    return None


# --- contact points -----------------------------------------------------------------------------

_SPECIALS = r"\s\x00-\x1f\x7f()<>\[\]:;@\\,\"."
_LOCAL = re.compile(rf"[^{_SPECIALS}]+(?:\.[^{_SPECIALS}]+)*")  # dot-atom (RFC 5322), UTF-8 too
_LABEL = re.compile(r"[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?")  # a host name label (IDN too)
EMAIL_REASON = "is not an e-mail address"
PHONE_REASON = "is not a phone number"
_PHONE = re.compile(r"\+?[0-9 ()./-]{5,30}")
MIN_PHONE_DIGITS = 5
MAX_PHONE_DIGITS = 18  # E.164's 15, an international prefix 00 and a trunk (0)


def is_email(value: str) -> bool:
    """Whether ``value`` has the shape of an e-mail address: ``local@domain.tld`` with a local
    part of at most 64 characters without spaces, specials or stray dots, a domain of host name
    labels (letters, digits, inner hyphens) and a top-level domain of at least two characters
    that is not a number; at most 254 characters."""
    if len(value) > 254 or value.count("@") != 1:
        return False
    local, domain = value.split("@")
    if len(local) > 64 or not _LOCAL.fullmatch(local):
        return False
    labels = domain.split(".")
    return (
        len(labels) >= 2
        and all(_LABEL.fullmatch(label) for label in labels)
        and len(labels[-1]) >= 2
        and not labels[-1].isdigit()
    )


def is_phone(value: str) -> bool:
    """Whether ``value`` has the shape of a phone number: digits with spaces, brackets, dots,
    slashes or hyphens between them, an optional leading ``+``, and 5 to 18 digits."""
    if not _PHONE.fullmatch(value):
        return False
    return MIN_PHONE_DIGITS <= sum(c.isdigit() for c in value) <= MAX_PHONE_DIGITS


# --- profile attributes -------------------------------------------------------------------------


def known_zone(value: str) -> str:
    """``value`` if it names an IANA time zone (``Europe/Berlin``)."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise PydanticCustomError(
            "unknown_time_zone", "is not a known IANA time zone (such as Europe/Berlin)"
        ) from None
    return value


def ordered_band(value: str) -> str:
    """``value`` unless it is a band ``low-high`` whose low number is above the high one."""
    low, dash, high = value.partition("-")
    if dash and low.isdigit() and high.isdigit() and int(low) > int(high):
        raise PydanticCustomError(
            "band_order", "must go from the lower number to the higher (such as 25-34)"
        )
    return value


TimeZoneName = Annotated[str, Field(max_length=64), AfterValidator(known_zone)]
"""An IANA time zone name, such as Europe/Berlin."""

OrderedBand = AfterValidator(ordered_band)
"""Add to a band's annotation (an age band, a company size) after its pattern."""
