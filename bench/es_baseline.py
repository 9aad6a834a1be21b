"""The `eventsourcing` library (PyPI, PostgreSQL persistence module) as a baseline: one
aggregate saved per command, on the same PostgreSQL server, at concurrency 1 and 16 (threads:
the library is synchronous). Run in a subprocess so its environment-driven configuration stays
apart from ours:

    python -m bench.es_baseline <postgres-url> <commands> <concurrency>   -> prints events/s
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit


def configure(url: str, pool_size: int) -> None:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]  # a unix socket directory
    os.environ.update(
        {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parts.path.lstrip("/") or "postgres",
            "POSTGRES_HOST": host,
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": parts.username or "postgres",
            "POSTGRES_PASSWORD": parts.password or "",
            "POSTGRES_POOL_SIZE": str(pool_size),
            "POSTGRES_MAX_OVERFLOW": "0",
            "CREATE_TABLE": "true",
        }
    )


def main(argv: list[str]) -> int:
    url, n, concurrency = argv[0], int(argv[1]), int(argv[2])
    configure(url, max(concurrency, 1))
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Lead(Aggregate):
        @event("Captured")
        def __init__(self, customer_id: str, name: str, source: str) -> None:
            self.customer_id = customer_id
            self.name = name
            self.source = source

    class Leads(Application[Any]):
        def capture(self, i: int) -> None:
            self.save(Lead(customer_id=f"c-{i}", name="Bench Person", source="manual"))

    app = Leads()
    for i in range(min(50, n)):  # warm-up: connections, table, prepared statements
        app.capture(i)
    start = time.perf_counter()
    if concurrency <= 1:
        for i in range(n):
            app.capture(i)
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(app.capture, range(n)))
    print(n / (time.perf_counter() - start))
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
