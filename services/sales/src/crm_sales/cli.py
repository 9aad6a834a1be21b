"""`crm-sales`: sales administration from the command line. Today: bulk CSV import.

    crm-sales import contacts FILE.csv [--owner ID] [--team ID] [--batch-size N] [--json]
    crm-sales import leads FILE.csv [--owner ID] [--team ID] [--batch-size N] [--json]

The import runs in this process against the sales database, configured as for the service
(``DATABASE_URL``, or ``SALES_DATABASE_URL``); it records the same events the API records, and
the outbox relay publishes them. Progress goes to stderr (a bar on a terminal, plain lines
otherwise), the report to stdout (``--json``: as JSON).

Exit codes: 0 every row was imported; 1 some rows were not (errors or duplicates, listed with
their line numbers) or the header is unusable; 2 usage error (bad arguments, unreadable file, no
database configured); 3 the database failed or could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from crm_sales.application.importer import ImportReport

# platformdirs (via pgserver) warns when XDG_RUNTIME_DIR is unset, as in containers; harmless.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

USAGE_ERROR = 2
DATABASE_ERROR = 3
SHOWN_ISSUES = 50  # issues printed by the human report (all of them with --json)


class ProgressBar:
    """Rows done of a total, with the rate. A redrawn bar on a terminal; plain lines (one per
    tenth of the way) when the stream is a file or a pipe. No dependency."""

    def __init__(
        self,
        stream: TextIO,
        total: int | None,
        *,
        label: str,
        width: int = 30,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.total = total
        self.label = label
        self.width = width
        self.tty = stream.isatty() if tty is None else tty
        self.clock = clock
        self.started = clock()
        self._drawn = -1.0  # when the bar was last drawn
        self._step = 0  # tenths reported (plain lines)

    def _rate(self, done: int) -> float:
        elapsed = self.clock() - self.started
        return done / elapsed if elapsed > 0 else 0.0

    def _numbers(self, done: int) -> str:
        rate = self._rate(done)
        if self.total:
            text = f"{done:,}/{self.total:,} rows {min(done / self.total, 1.0):4.0%}"
        else:
            text = f"{done:,} rows"
        text += f"  {rate:,.0f} rows/s"
        if self.total and rate > 0 and done < self.total:
            text += f"  ETA {_duration((self.total - done) / rate)}"
        return text

    def update(self, done: int) -> None:
        now = self.clock()
        if self.tty:
            if now - self._drawn < 0.1:
                return
            self._drawn = now
            filled = int(self.width * min(done / self.total, 1.0)) if self.total else 0
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r{self.label} [{bar}] {self._numbers(done)}\x1b[K")
            self.stream.flush()
            return
        if self.total:
            step = int(10 * min(done / self.total, 1.0))
            if step <= self._step:
                return
            self._step = step
        elif now - self._drawn < 10:
            return
        self._drawn = now
        self.stream.write(f"{self.label}: {self._numbers(done)}\n")
        self.stream.flush()

    def finish(self, done: int) -> None:
        self.total = done  # the count of lines was an estimate (quoted line breaks)
        if self.tty:
            self._drawn = -1.0
            self.update(done)
            self.stream.write("\n")
        elif self._step < 10:
            self._step = 9
            self.update(done)
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 60}:{seconds % 60:02d}"


def count_rows(path: Path) -> int:
    """Data rows in a CSV file, estimated by its line breaks (fast; no parsing)."""
    lines, last = 0, b"\n"
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":
        lines += 1
    return max(lines - 1, 0)


def render(report: ImportReport, kind: str) -> str:
    """The human report: counts, then the errors and duplicates with their line numbers."""
    noun = kind if report.imported != 1 else kind[:-1]
    out = [
        f"Imported {report.imported:,} of {report.rows:,} {noun} in {report.seconds:.1f} s"
        f" ({report.rows_per_second:,.0f} rows/s)."
    ]
    if report.aborted:
        out[0] = "Nothing was imported: the header is not usable."
    if report.rejected:
        out.append(f"Rejected {report.rejected:,} row(s) with errors:")
    elif report.errors:
        out.append("Errors:")
    for e in report.errors[:SHOWN_ISSUES]:
        where = f"{e.field}: " if e.field else ""
        out.append(f"  line {e.line}: {where}{e.reason}")
    if report.duplicated:
        out.append(f"Skipped {report.duplicated:,} duplicate(s):")
    for d in report.duplicates[:SHOWN_ISSUES]:
        what = d.email or "the same row (no e-mail)"
        origin = f", imported from line {d.first_line}" if d.first_line else ""
        out.append(f"  line {d.line}: {what} exists: {d.existing}{origin}")
    listed = len(report.errors) + len(report.duplicates)
    shown = min(len(report.errors), SHOWN_ISSUES) + min(len(report.duplicates), SHOWN_ISSUES)
    hidden = report.rejected + report.duplicated - shown
    if hidden > 0 and not report.aborted:
        note = f"  ... and {hidden:,} more"
        if listed > shown:
            note += " (--json lists them"
            note += f", up to {report.max_issues:,})" if report.issues_truncated else ")"
        out.append(note)
    return "\n".join(out)


async def _run_import(args: argparse.Namespace) -> int:
    import asyncpg

    from crm_runtime.context import MissingDatabase, open_context
    from crm_runtime.eventstore import Metadata
    from crm_runtime.logs import configure_logging
    from crm_runtime.settings import Settings
    from crm_sales.application.importer import import_csv

    settings = Settings.for_service("sales")
    configure_logging("sales-cli", "WARNING")
    total = count_rows(args.file)
    try:
        ctx = await open_context(settings, ["crm_sales"], pool_size=args.writers + 1)
    except MissingDatabase as exc:
        print(f"crm-sales: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"crm-sales: cannot reach the database: {exc}", file=sys.stderr)
        return DATABASE_ERROR
    # A long-lived batch process: freeze what is loaded so that the collector stops re-scanning
    # it on every collection while rows stream through (objects of rows are never frozen).
    gc.collect()
    gc.freeze()
    bar = ProgressBar(sys.stderr, total, label=f"importing {args.kind}")
    meta = Metadata(actor=args.actor, correlation_id=f"import-{uuid.uuid4()}")
    try:
        with args.file.open("rb") as f:
            report = await import_csv(
                ctx.pool,
                ctx.store,
                args.kind,
                f,
                meta=meta,
                owner_id=args.owner,
                team_id=args.team,
                batch_size=args.batch_size,
                writers=args.writers,
                max_issues=args.max_issues,
                progress=lambda r: bar.update(r.done),
            )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The database failed mid-way; the batches committed before stay imported.
        logging.getLogger(__name__).error("import failed", extra={"error": type(exc).__name__})
        print(f"crm-sales: the import failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return DATABASE_ERROR
    finally:
        gc.unfreeze()
        await ctx.close()
    bar.finish(report.done)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(render(report, args.kind))
    return 0 if report.complete else 1


def _positive(limit: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 1 <= value <= limit:
            raise argparse.ArgumentTypeError(f"must be 1 to {limit:,}")
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    from crm_sales.application import importer

    p = argparse.ArgumentParser(prog="crm-sales", description="Sales administration.")
    sub = p.add_subparsers(dest="command", required=True)
    imp = sub.add_parser(
        "import",
        help="import contacts or leads from a CSV file",
        description="Import a CSV file (UTF-8, header on line 1). Contacts: first_name, "
        "last_name (required), email, phone, title, account_id, region, industry, tags, "
        "social_profiles (lists separated by ';'), address.street|city|region|postal_code|"
        "country, custom.<key>. Leads: name (required), email, phone, company, source_detail, "
        "region, product_line (leads without --owner are routed by the assignment rules).",
    )
    imp.add_argument("kind", choices=["contacts", "leads"])
    imp.add_argument("file", type=Path, help="the CSV file")
    imp.add_argument("--owner", default=None, help="owner (user id) of every imported record")
    imp.add_argument("--team", default=None, help="team of every imported record")
    imp.add_argument("--actor", default="crm-sales-cli", help="user id recorded as the actor")
    imp.add_argument(
        "--batch-size",
        type=_positive(importer.MAX_BATCH_SIZE),
        default=importer.DEFAULT_BATCH_SIZE,
        help=f"rows per transaction (default {importer.DEFAULT_BATCH_SIZE:,})",
    )
    imp.add_argument(
        "--writers",
        type=_positive(importer.MAX_WRITERS),
        default=importer.DEFAULT_WRITERS,
        help=f"connections writing at once (default {importer.DEFAULT_WRITERS})",
    )
    imp.add_argument(
        "--max-errors",
        dest="max_issues",
        type=_positive(10_000_000),
        default=importer.DEFAULT_MAX_ISSUES,
        help=f"errors and duplicates kept in the report (default {importer.DEFAULT_MAX_ISSUES:,})",
    )
    imp.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits with 2 on a usage error
    if args.command == "import":
        if not args.file.is_file():
            print(f"crm-sales: {args.file}: no such file", file=sys.stderr)
            return USAGE_ERROR
        try:
            with args.file.open("rb"):
                pass
        except OSError as exc:
            print(f"crm-sales: {args.file}: {exc.strerror}", file=sys.stderr)
            return USAGE_ERROR
        return asyncio.run(_run_import(args))
    return USAGE_ERROR  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
