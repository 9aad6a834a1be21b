"""The embedded PostgreSQL's own log file keeps no value a client's failing statement quoted."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from crm_runtime.embedded import EmbeddedPostgres

pytestmark = pytest.mark.integration


async def test_errors_of_client_statements_leave_no_values_in_the_server_log(
    tmp_path: Path,
) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg", keep=False).start()
    try:
        conn = await asyncpg.connect(pg.url)
        try:
            await conn.execute("CREATE TABLE people (email text UNIQUE CHECK (email <> ''))")
            await conn.execute("INSERT INTO people VALUES ('ada@example.com')")
            failing = [
                ("SELECT $1::text::uuid", ("grace@example.com",)),  # quoted in the message
                ("INSERT INTO people VALUES ($1)", ("ada@example.com",)),  # Key (email)=(...)
                ("SELECT 1/0 WHERE $1 <> ''", ("alan@example.com",)),
            ]
            for sql, args in failing:
                with pytest.raises(asyncpg.PostgresError):
                    await conn.execute(sql, *args)
        finally:
            await conn.close()
        log = (tmp_path / "pg" / "log").read_text()
    finally:
        pg.stop()
    assert "ready to accept connections" in log  # the server's own events are still logged
    assert "example.com" not in log
