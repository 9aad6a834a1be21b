"""A command's unit of work: one transaction, begun at its first statement, and the relay wake-up.

Two costs of the obvious ``async with pool.acquire() as conn, conn.transaction():`` are avoided
here without giving up a guarantee:

- Round trips. ``BEGIN`` and ``COMMIT`` are a round trip each. A command whose only database
  work is one write (capturing a lead: the event and its read-model row in one statement, see
  ``EventStore.append(..., also=..., final=True)``) needs neither: PostgreSQL runs a single
  statement atomically. :class:`CommandConnection` therefore sends ``BEGIN`` just before the
  first statement, and lets a *final* write that comes before any other statement run alone.
  Every other statement runs inside the one transaction, exactly as before.
- The commit-time ``NOTIFY``. The event store's trigger sends ``pg_notify('crm_events')`` so the
  outbox relay wakes up. PostgreSQL serialises every committing transaction that has sent a
  notification (it holds a cluster-wide lock from pre-commit until the commit record is flushed),
  so commits that notify cannot share a WAL flush: with fsync on, concurrent commands then queue
  one flush each. Appends made through a :class:`CommandConnection` set ``crm.events_notify =
  'deferred'`` for their transaction (the trigger then stays quiet) and, once the transaction has
  committed, :class:`CommitNotifier` sends one ``NOTIFY`` for all the commits of the last few
  milliseconds. The notification was never durable and only wakes the relay, which also polls
  (``RELAY_POLL_INTERVAL``): nothing committed can be missed, at worst it is relayed a poll later
  if this process dies between its commit and the wake-up.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy
    from asyncpg.transaction import Transaction

    RawConn = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "crm_events"
NOTIFY_SETTING = "crm.events_notify"  # 'deferred': the events_notify trigger does not notify
_NOTIFY_SQL = "SELECT pg_notify('" + NOTIFY_CHANNEL + "', '')"


class CommitNotifier:
    """Wakes the event store's listeners (the outbox relay) after commands have committed.

    ``committed()`` is cheap and never waits: the first call after a quiet spell sends a
    ``NOTIFY`` at once; calls while one is on its way, or within ``interval`` seconds after it,
    are folded into one more. So a lone command wakes the relay right away, and a busy API sends
    at most about one notification per ``interval`` instead of one per command.

    It keeps a connection of its own (not one of the pool's: no reset round trip per
    notification), with ``synchronous_commit`` off: a notification carries nothing durable (the
    events it announces are committed and flushed already), so it need not wait for a WAL flush.
    """

    def __init__(self, url: str, *, interval: float = 0.005) -> None:
        self.url = url
        self.interval = interval
        self._conn: asyncpg.Connection | None = None
        self._pending = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def committed(self) -> None:
        """A transaction that appended events (with the trigger's NOTIFY deferred) committed."""
        self._pending = True
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._pending and not self._closed:
                self._pending = False
                try:
                    if self._conn is None or self._conn.is_closed():
                        self._conn = await asyncpg.connect(
                            self.url, server_settings={"synchronous_commit": "off"}
                        )
                    await self._conn.execute(_NOTIFY_SQL)
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                    # The relay polls as well; it finds the events a poll later.
                    log.warning("relay wake-up failed", extra={"error": type(exc).__name__})
                    await self._drop()
                await asyncio.sleep(self.interval)
        finally:
            self._task = None

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        """Send what is still pending, then stop and close the connection."""
        task = self._task
        if task is not None:
            await task
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


class CommandConnection:
    """The connection a command runs on; use as ``async with CommandConnection(conn, n) as c``.

    The transaction begins right before the first statement (so a command that fails its checks
    before touching the database costs no round trip) and commits when the block ends without
    an exception; otherwise it rolls back. Statements go through the usual asyncpg methods
    (``execute``, ``fetch``, ``fetchval``, ``fetchrow``, ``executemany``, ``transaction`` for
    a savepoint, ``copy_records_to_table``). :meth:`fetch_final` runs the command's last statement;
    before any other statement it runs alone, without ``BEGIN``/``COMMIT``, and nothing may follow.
    """

    def __init__(self, conn: RawConn, notifier: CommitNotifier | None = None) -> None:
        self._conn = conn
        self.notifier = notifier
        self._tx: Transaction | None = None
        self._finished = False  # a final statement ran on its own, or the block has ended
        self.appended = False  # events were appended with the trigger's NOTIFY deferred

    @property
    def connection(self) -> RawConn:
        """The underlying connection (no transaction is begun by touching it)."""
        return self._conn

    async def __aenter__(self) -> CommandConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tx, self._tx, self._finished = self._tx, None, True
        if tx is not None:
            if exc_type is not None:
                await tx.rollback()
                return
            await tx.commit()
        if exc_type is None and self.appended and self.notifier is not None:
            self.notifier.committed()

    async def begin(self) -> None:
        """Begin the transaction now, if it has not begun yet."""
        if self._tx is None:
            if self._finished:
                raise RuntimeError(
                    "the command already ended with a final statement; nothing may follow it"
                )
            tx = self._conn.transaction()
            await tx.start()
            self._tx = tx

    async def fetch_final(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """The command's last statement: alone and atomic if nothing ran before it."""
        if self._tx is not None:
            return await self._conn.fetch(query, *args)
        if self._finished:
            raise RuntimeError("the command already ended with a final statement")
        rows = await self._conn.fetch(query, *args)
        self._finished = True
        return rows

    # The asyncpg methods handlers use, each beginning the transaction first. Keyword arguments
    # (timeout=, column=, record_class=) pass through unchanged.
    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        await self.begin()
        return await self._conn.execute(query, *args, **kwargs)

    async def executemany(self, command: str, args: Any, **kwargs: Any) -> None:
        await self.begin()
        await self._conn.executemany(command, args, **kwargs)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list[asyncpg.Record]:
        await self.begin()
        return await self._conn.fetch(query, *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        await self.begin()
        return await self._conn.fetchval(query, *args, **kwargs)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        await self.begin()
        return await self._conn.fetchrow(query, *args, **kwargs)

    async def copy_records_to_table(self, table_name: str, **kwargs: Any) -> str:
        await self.begin()
        return await self._conn.copy_records_to_table(table_name, **kwargs)

    def transaction(self, **kwargs: Any) -> _Savepoint:
        """A savepoint inside the command's transaction (which begins first if need be)."""
        return _Savepoint(self, kwargs)

    def is_in_transaction(self) -> bool:
        return self._tx is not None

    def __getattr__(self, name: str) -> Any:
        # Anything else would reach the server outside the transaction: refuse rather than guess.
        raise AttributeError(
            f"CommandConnection has no {name!r}; use .connection inside an explicit transaction"
        )


class _Savepoint:
    """``conn.transaction()`` on a command's connection: a savepoint in its transaction (used
    as ``async with``, or with start/commit/rollback like asyncpg's Transaction)."""

    def __init__(self, owner: CommandConnection, kwargs: dict[str, Any]) -> None:
        self.owner = owner
        self.kwargs = kwargs
        self._tx: Transaction | None = None

    async def _savepoint(self) -> Transaction:
        await self.owner.begin()
        self._tx = self.owner.connection.transaction(**self.kwargs)
        return self._tx

    async def start(self) -> None:
        await (await self._savepoint()).start()

    async def commit(self) -> None:
        assert self._tx is not None
        await self._tx.commit()

    async def rollback(self) -> None:
        assert self._tx is not None
        await self._tx.rollback()

    async def __aenter__(self) -> None:
        await (await self._savepoint()).__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tx is not None
        await self._tx.__aexit__(exc_type, exc, tb)
