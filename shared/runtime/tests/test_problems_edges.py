"""Edge errors as problems: a bug's 500 carries the correlation id it asks to quote; text that
PostgreSQL cannot store (NUL) is a 422 that changed nothing; 422 titles are RFC 9110's."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from crm_runtime.http import problems
from crm_runtime.http.app import CorrelationMiddleware


def make_app(pool: asyncpg.Pool | None = None) -> FastAPI:
    app = FastAPI()
    problems.install(app)
    app.add_middleware(CorrelationMiddleware)

    @app.get("/bug")
    async def bug() -> None:
        raise RuntimeError("a bug")

    @app.post("/notes")
    async def note(text: str) -> dict[str, str]:
        assert pool is not None
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO notes (text) VALUES ('before')")
            await conn.execute("INSERT INTO notes (text) VALUES ($1)", text)
        return {"ok": "yes"}

    return app


async def test_a_bug_answers_500_with_the_correlation_id_it_asks_for() -> None:
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get("/bug", headers={"X-Correlation-ID": "req-12345678"})
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["correlation_id"] == r.headers["X-Correlation-ID"] == "req-12345678"


@pytest.mark.integration
async def test_a_nul_character_is_a_422_and_changes_nothing(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE notes (text text NOT NULL)")
    transport = httpx.ASGITransport(app=make_app(pool))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.post("/notes", params={"text": "a\x00b"})
        missing = await c.post("/notes")
    assert r.status_code == 422, r.text
    assert r.json()["title"] == "Unprocessable Content" == missing.json()["title"]
    assert "NUL" in r.json()["errors"][0]["reason"]
    assert await pool.fetchval("SELECT count(*) FROM notes") == 0  # the transaction rolled back
