"""The checks only sales' request bodies need: currency codes and a disqualification reason.

Required text, names, tags and dates are checked as every service checks them
(:mod:`crm_runtime.http.inputs`: trimmed, refused when blank, dates from 1900-01-01 to
2200-12-31); this module adds what is sales' own, a failure being the same 422 problem naming
the field.

* **Currencies** must be ISO 4217 codes of a currency (fund codes such as CLF or UYI included;
  XXX, XTS, precious metals, SDR and bond units refused).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from crm_events.money import is_currency
from crm_runtime.http.inputs import NotBlank

Reason = Annotated[str, Field(min_length=1, max_length=1000), NotBlank]
"""Why something was turned down (a lead's disqualification): trimmed, refused when blank."""


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
