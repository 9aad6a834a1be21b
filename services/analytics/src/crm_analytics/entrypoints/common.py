"""Query parameters the analytics routes share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Query

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
