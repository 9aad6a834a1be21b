"""Types for times that come in from a request (query parameters and bodies).

PostgreSQL stores any time Python's ``datetime`` can hold, but asyncpg shifts a time with an
offset to UTC before it sends it, and ``0001-01-01T00:00:00+14:00`` or
``9999-12-31T23:59:59-12:00`` then falls outside what ``datetime`` can hold. Such a time is
refused where it comes in, with the field and the reason (422), instead of failing later.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime
from pydantic_core import PydanticCustomError

RANGE = "between 0001-01-01 and 9999-12-31 in UTC"


def storable_time(value: datetime) -> datetime:
    """``value`` if it can be shifted to UTC (and so stored); a validation error otherwise."""
    if value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise PydanticCustomError(
                "time_out_of_range", "is out of range: a time must fall {range}", {"range": RANGE}
            ) from None
    return value


Instant = Annotated[datetime, AfterValidator(storable_time)]
"""A ``datetime`` from a request that can be stored: use it for every time a client sends."""

AwareInstant = Annotated[AwareDatetime, AfterValidator(storable_time)]
"""As :data:`Instant`, and the time must carry its offset."""
