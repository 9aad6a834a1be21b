"""Flood protection for public endpoints (no user token): a per-client limit kept in memory.

Each replica counts its own clients in fixed one-minute windows; the client is a keyed hash of
its address (no address is kept). It bounds the work a flood can cause on one process — the
endpoints with business effects (web forms, the portal) keep their shared limits in PostgreSQL.
Over the limit: 429 problem+json with ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Awaitable, Callable

from fastapi import Request

from crm_runtime.errors import TooManyRequests

WINDOW_SECONDS = 60.0
MAX_CLIENTS = 100_000  # past this many buckets in one window, the oldest window is dropped


class MemoryLimiter:
    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._window = -1
        self._hits: dict[bytes, int] = {}

    def hit(self, client: str) -> int | None:
        """Count a request; None within the limit, else the seconds until the window ends."""
        now = self.clock()
        window = int(now // WINDOW_SECONDS)
        if window != self._window or len(self._hits) > MAX_CLIENTS:
            self._window, self._hits = window, {}
        key = hashlib.blake2b(client.encode(), digest_size=16).digest()
        n = self._hits.get(key, 0) + 1
        self._hits[key] = n
        if n <= self.per_minute:
            return None
        return max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))


def client_address(request: Request, trust_forwarded_for: bool = False) -> str:
    if trust_forwarded_for and (forwarded := request.headers.get("x-forwarded-for")):
        return forwarded.split(",")[0].strip()
    return request.client.host if request.client else "unknown"


def limit_per_client(
    per_minute: int, *, trust_forwarded_for: bool = False
) -> Callable[[Request], Awaitable[None]]:
    """A router dependency: at most ``per_minute`` requests per client address and minute."""
    limiter = MemoryLimiter(per_minute)

    async def check(request: Request) -> None:
        wait = limiter.hit(client_address(request, trust_forwarded_for))
        if wait is not None:
            raise TooManyRequests(wait)

    return check
