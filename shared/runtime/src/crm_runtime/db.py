"""PostgreSQL access: connection pools, per-service databases and ordered SQL migrations."""

from __future__ import annotations

import contextlib
import logging
from contextvars import ContextVar, Token
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    from crm_runtime.unit_of_work import CommandConnection

    Conn = (
        asyncpg.Connection[asyncpg.Record]
        | PoolConnectionProxy[asyncpg.Record]
        | CommandConnection  # what commands get (crm_runtime.http.commands.run_command)
    )
else:
    Conn = asyncpg.Connection  # what callers pass: a connection, or a pool's proxy of one

log = logging.getLogger(__name__)

MIGRATION_LOCK = 7_364_001  # advisory lock id: one migrator at a time per database


def with_database(server_url: str, database: str) -> str:
    """The same server URL pointed at another database (keeps host, socket query and user)."""
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def ensure_database(server_url: str, database: str) -> None:
    """Create ``database`` on the server if it does not exist yet (idempotent, race-safe)."""
    conn = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # a concurrent creator won
                await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


# The server pid of a connection about to go back to the pool whose session is as the pool
# handed it out (set by the command path: crm_runtime.http.commands). Its reset query (a round
# trip: unlock advisory locks, close cursors, UNLISTEN, RESET ALL) then has nothing to undo.
_SESSION_UNCHANGED: ContextVar[int | None] = ContextVar("crm_session_unchanged", default=None)


def session_unchanged(conn: Conn) -> Token[int | None]:
    """Vouch that ``conn`` changed no session state (no SET, LISTEN, session lock, cursor):
    releasing it skips the reset query. Reset the returned token once it is released."""
    return _SESSION_UNCHANGED.set(conn.get_server_pid())


def reset_session_unchanged(token: Token[int | None]) -> None:
    _SESSION_UNCHANGED.reset(token)


async def _reset(conn: asyncpg.Connection) -> None:
    # asyncpg has already rolled back an open transaction and dropped listener callbacks.
    if _SESSION_UNCHANGED.get() == conn.get_server_pid():
        return
    query = conn.get_reset_query()
    if query:
        await conn.execute(query)


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    # jsonb stays text on the wire both ways: callers json.dumps/json.loads explicitly.
    pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, reset=_reset)
    if pool is None:  # pragma: no cover - asyncpg types it as optional
        raise RuntimeError("could not create the connection pool")
    return pool


def package_migrations(package: str) -> list[tuple[str, str]]:
    """``(name, sql)`` of every ``migrations/*.sql`` file shipped in ``package``, in name order."""
    root = resources.files(package).joinpath("migrations")
    if not root.is_dir():
        return []
    files = sorted((f.name, f.read_text()) for f in root.iterdir() if f.name.endswith(".sql"))
    return files


async def migrate(conn: asyncpg.Connection, migrations: list[tuple[str, str]]) -> list[str]:
    """Apply, in order and once each, the migrations not yet recorded. Returns what was applied."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, sql in migrations:
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied.append(name)
            log.info("migration applied", extra={"migration": name})
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied


async def migrate_url(url: str, packages: list[str]) -> list[str]:
    migrations: list[tuple[str, str]] = []
    for pkg in packages:
        migrations.extend((f"{pkg}:{name}", sql) for name, sql in package_migrations(pkg))
    conn = await asyncpg.connect(url)
    try:
        return await migrate(conn, migrations)
    finally:
        await conn.close()


Record = dict[str, Any]
