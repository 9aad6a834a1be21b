"""What the campaign, delivery and trigger routers share: roles, plus the marketing-wide
headers, history shape and cursors (``crm_marketing.api_common``).

Permissions (issue 4 §8): marketers (and admins) manage campaigns and triggers; every role
with a token reads campaigns and their results, nothing else of marketing.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from crm_marketing.api_common import (
    HistoryEntry,
    IdempotencyKey,
    IfMatch,
    after_of,
    history,
    next_cursor,
)
from crm_runtime.http.auth import ROLES, Principal, require

Marketer = Annotated[Principal, Depends(require("marketer"))]
AnyRole = Annotated[Principal, Depends(require(*sorted(ROLES)))]

__all__ = [
    "AnyRole",
    "HistoryEntry",
    "IdempotencyKey",
    "IfMatch",
    "Marketer",
    "after_of",
    "history",
    "next_cursor",
]
