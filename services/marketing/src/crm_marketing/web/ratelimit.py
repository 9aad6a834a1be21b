"""Fixed-window rate limits in PostgreSQL, shared by every replica of the service.

A bucket is (site key, endpoint, client); the client part is a keyed hash of the IP address, so
no address is stored. One row per bucket: its current minute and the hits in it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from datetime import datetime, timedelta

from crm_runtime.db import Conn

WINDOW = timedelta(minutes=1)


def bucket(secret: str, site_key_id: str, endpoint: str, client_ip: str) -> str:
    client = hmac.new(secret.encode(), client_ip.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{site_key_id}:{endpoint}:{client}"


async def hit(conn: Conn, key: str, limit: int, now: datetime) -> int | None:
    """Count one request; None if within the limit, else the seconds until the window ends."""
    window = now.replace(second=0, microsecond=0)
    hits = await conn.fetchval(
        "INSERT INTO rate_limits (bucket, window_start, hits) VALUES ($1, $2, 1)"
        " ON CONFLICT (bucket) DO UPDATE SET"
        " hits = CASE WHEN rate_limits.window_start = EXCLUDED.window_start"
        "   THEN rate_limits.hits + 1 ELSE 1 END,"
        " window_start = EXCLUDED.window_start"
        " RETURNING hits",
        key,
        window,
    )
    if int(hits) <= limit:
        return None
    return max(1, math.ceil((window + WINDOW - now).total_seconds()))


async def purge(conn: Conn, now: datetime) -> int:
    """Drop buckets whose window ended (keeps the table as small as the active clients)."""
    status = await conn.execute("DELETE FROM rate_limits WHERE window_start < $1", now - WINDOW)
    return int(status.split()[-1])
