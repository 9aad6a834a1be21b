"""The checks only marketing's requests need: the shapes of e-mail addresses and phone numbers
(:func:`is_email`, :func:`is_phone`, used by the public form check), IANA time zone names and
bands such as an age band (``25-34``, from the lower number to the higher).

Required text, names and times are checked as every service checks them
(:mod:`crm_runtime.http.inputs`: text trimmed and refused when blank, times from 1900-01-01 to
2200-12-31, a website event at most a day ahead of the service's clock); a failure here is the
same 422 problem naming the field.
"""

from __future__ import annotations

import re
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

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
