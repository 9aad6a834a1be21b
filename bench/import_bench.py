"""Bulk CSV import of contacts next to raw COPY of the same rows into the same events table.

The import is the real thing: ``crm-sales import contacts FILE --json`` in a subprocess, against
a fresh sales database on the bench's PostgreSQL, so that its peak RSS (``wait4``) is the
importer's own. Its rows/s is the importer's own clock (reading the file to the last commit).

The baseline reads the same CSV file and COPYs the same rows into the ``events`` table of
another fresh database on the same server: the same columns and a payload JSON of the same shape
and size (what the importer's ``crm.sales.contact.created`` carries), but no validation, no
duplicate guard and no read model. It commits every ``batch`` rows, as the importer does. A
second figure gives one COPY of all rows in one transaction, the ceiling of the server.

Peak RSS stands next to the peak RSS of the same command on a file a tenth of the size: memory
must not grow with the file.
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import Figure, median
from crm_runtime import db

BATCH = 1000  # the importer's default rows per transaction
HEADER = [
    "first_name",
    "last_name",
    "email",
    "phone",
    "title",
    "tags",
    "address.city",
    "address.country",
]
EVENT_COLUMNS = [
    "stream_id",
    "stream_type",
    "version",
    "event_id",
    "event_type",
    "schema_version",
    "subject",
    "payload",
    "metadata",
    "occurred_at",
]
_FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Frances"]
_LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Allen"]
_PLACES = [("London", "GB"), ("Paris", "FR"), ("Berlin", "DE"), ("Madrid", "ES"), ("Rome", "IT")]
_DOMAINS = ["example.com", "example.org", "mail.example.net", "corp.example"]
_TITLES = ["Engineer", "CTO", "Buyer", "Head of Operations", ""]


def write_csv(path: Path, rows: int, seed: int = 7) -> None:
    """Synthetic contacts (example domains; no real person), every e-mail distinct."""
    rnd = random.Random(seed)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(HEADER)
        for i in range(rows):
            first, last = rnd.choice(_FIRST), rnd.choice(_LAST)
            city, country = rnd.choice(_PLACES)
            out.writerow(
                [
                    first,
                    last,
                    f"{first}.{last}.{i}@{rnd.choice(_DOMAINS)}",
                    f"+44 20 7946 {rnd.randrange(10_000):04d}",
                    rnd.choice(_TITLES),
                    "customer;vip" if i % 7 == 0 else "customer",
                    city,
                    country,
                ]
            )


async def _fresh_database(server_url: str, name: str) -> str:
    conn = await asyncpg.connect(db.with_database(server_url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = db.with_database(server_url, name)
    await db.migrate_url(url, ["crm_runtime", "crm_sales"])
    return url


def _import(url: str, path: Path, batch: int) -> tuple[dict[str, Any], float]:
    """Run the CLI import; its JSON report and its peak RSS in MiB."""
    env = {**os.environ, "SALES_DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "crm_sales.cli", "import", "contacts", str(path)]
    cmd += ["--json", "--owner", "bench", "--batch-size", str(batch)]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"crm-sales import exited with {proc.returncode}")
    report: dict[str, Any] = json.loads(text)
    return report, usage.ru_maxrss / 1024  # Linux: KiB


def _event_rows(path: Path, meta: str) -> Iterator[tuple[Any, ...]]:
    """The events table rows of the file's contacts, built the plain way: no checks at all."""
    with path.open(newline="") as f:
        reader = csv.reader(f)
        next(reader)
        for first, last, email, phone, title, tags, city, country in reader:
            contact_id, customer_id = str(uuid.uuid4()), str(uuid.uuid4())
            details = {
                "first_name": first,
                "last_name": last,
                "emails": [email.lower()],
                "phones": [phone],
                "title": title or None,
                "account_id": None,
                "address": {
                    "street": None,
                    "city": city,
                    "region": None,
                    "postal_code": None,
                    "country": country,
                },
                "region": None,
                "industry": None,
                "social_profiles": None,
                "tags": tags.split(";"),
                "custom_fields": None,
            }
            payload = {
                "contact_id": contact_id,
                "customer_id": customer_id,
                "details": details,
                "owner_id": "bench",
                "team_id": None,
                "lead_id": None,
            }
            yield (
                f"contact-{contact_id}",
                "contact",
                1,
                uuid.uuid4(),
                "crm.sales.contact.created",
                1,
                customer_id,
                json.dumps(payload),
                meta,
                datetime.now(UTC),
            )


async def _copy(url: str, path: Path, batch: int | None) -> float:
    """Rows/s of COPY into events: ``batch`` rows per transaction, or all in one (None)."""
    conn = await asyncpg.connect(url)
    meta = json.dumps({"actor": "bench", "correlation_id": "bench-copy"})
    try:
        start = time.perf_counter()
        rows = _event_rows(path, meta)
        count = 0
        if batch is None:
            async with conn.transaction():
                await conn.copy_records_to_table("events", records=rows, columns=EVENT_COLUMNS)
            count = int(await conn.fetchval("SELECT count(*) FROM events"))
        else:
            while chunk := [r for _, r in zip(range(batch), rows, strict=False)]:
                async with conn.transaction():
                    await conn.copy_records_to_table("events", records=chunk, columns=EVENT_COLUMNS)
                count += len(chunk)
        return count / (time.perf_counter() - start)
    finally:
        await conn.close()


async def run(url: str, *, smoke: bool) -> list[Figure]:
    """``url``: the bench's PostgreSQL server (any database); fresh databases are made on it."""
    rows = 5_000 if smoke else 100_000
    rounds = 1 if smoke else 3
    with tempfile.TemporaryDirectory(prefix="crm-import-bench-") as tmp:
        big, small = Path(tmp) / "contacts.csv", Path(tmp) / "contacts-tenth.csv"
        write_csv(big, rows)
        write_csv(small, rows // 10, seed=8)
        imported, batched, whole, rss = [], [], [], []
        for _ in range(rounds):  # interleaved, so drift hits all alike
            report, peak = _import(await _fresh_database(url, "bench_import"), big, BATCH)
            if report["imported"] != rows:
                raise RuntimeError(f"the import took {report['imported']} of {rows} rows")
            imported.append(float(report["rows_per_second"]))
            rss.append(peak)
            batched.append(await _copy(await _fresh_database(url, "bench_copy"), big, BATCH))
            whole.append(await _copy(await _fresh_database(url, "bench_copy"), big, None))
        _, small_peak = _import(await _fresh_database(url, "bench_import"), small, BATCH)
        conn = await asyncpg.connect(db.with_database(url, "postgres"))
        try:
            for name in ("bench_import", "bench_copy"):
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
    how = f"{rows:,} contacts, median of {rounds}; fresh databases; fsync on"
    return [
        Figure(
            name=f"bulk import, {rows:,} contacts (crm-sales import)",
            value=median(imported),
            unit="rows/s",
            baseline_name=f"raw COPY of the same rows into events, {BATCH:,} rows/transaction",
            baseline=median(batched),
            goal=">= 0.5x COPY",
            samples=imported,
            baseline_samples=batched,
            notes=f"{how}; the import also validates, guards duplicates and writes the read "
            f"model, {BATCH:,} rows/transaction",
        ),
        Figure(
            name=f"bulk import, {rows:,} contacts, vs one COPY",
            value=median(imported),
            unit="rows/s",
            baseline_name="raw COPY of the same rows into events, one transaction",
            baseline=median(whole),
            samples=imported,
            baseline_samples=whole,
            notes=f"{how}; the server's ceiling for the event rows alone",
        ),
        Figure(
            name=f"bulk import, {rows:,} contacts, peak RSS",
            value=max(rss),
            unit="MiB",
            baseline_name=f"same command, {rows // 10:,} rows",
            baseline=small_peak,
            # In the smoke run the small file is less than the batches in flight: no goal.
            goal=None if smoke else "flat in file size (<= 1.2x)",
            samples=rss,
            baseline_samples=[small_peak],
            notes="the importer process's own peak (wait4 ru_maxrss), largest of the rounds",
        ),
    ]
