"""Edge errors as problems: a bug's 500 carries the correlation id it asks to quote; text that
PostgreSQL cannot store (NUL) is a 422 that changed nothing; so is a time that cannot be shifted
to UTC (a 422 naming the field where the type says so); 422 titles are RFC 9110's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, TypeAdapter, ValidationError

from crm_runtime.http import problems
from crm_runtime.http.app import CorrelationMiddleware
from crm_runtime.http.params import RANGE, Instant


class Thing(BaseModel):
    name: str


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

    @app.get("/as-of")
    async def as_of(at: Annotated[Instant | None, Query()] = None) -> dict[str, str | None]:
        return {"at": at.astimezone(UTC).isoformat() if at else None}

    @app.post("/events")
    async def event(at: datetime) -> dict[str, str]:  # a plain datetime: no check of its own
        assert pool is not None
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO notes (text) VALUES ('before')")
            await conn.execute("INSERT INTO stamps (at) VALUES ($1)", at)
        return {"ok": "yes"}

    @app.post("/things")
    async def thing(body: Thing) -> dict[str, str]:
        return {"name": body.name}

    @app.get("/wrong-type")
    async def wrong_type() -> None:  # a bug: a text passed for an integer
        assert pool is not None
        await pool.fetchval("SELECT $1::int", "seven")

    return app


@pytest.mark.parametrize(
    ("content_type", "why"),
    [
        ("text/plain", "not text/plain"),
        ("application/x-www-form-urlencoded", "not application/x-www-form-urlencoded"),
        ("Text/Plain; charset=utf-8", "not text/plain"),
        (None, "no Content-Type was given"),
    ],
)
async def test_a_json_body_sent_as_another_type_is_a_415_saying_so(
    content_type: str | None, why: str
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.post("/things", content=b'{"name": "x"}', headers=headers)
    assert r.status_code == 415, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["detail"] == (
        f"the request body must be JSON (Content-Type: application/json): {why}"
    )


async def test_json_types_are_read_and_a_bad_shape_or_no_body_stays_422() -> None:
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        for content_type in ("application/json", "application/merge-patch+json"):
            headers = {"content-type": content_type}
            r = await c.post("/things", content=b'{"name": "x"}', headers=headers)
            assert r.json() == {"name": "x"}, (content_type, r.text)
        wrong = await c.post("/things", json={"title": "x"})
        nothing = await c.post("/things")
    assert wrong.status_code == 422
    assert [e["field"] for e in wrong.json()["errors"]] == ["name"]
    assert nothing.status_code == 422
    assert nothing.json()["errors"][0]["reason"] == "Field required"


EDGES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"]


@pytest.mark.parametrize("value", EDGES)
def test_an_instant_that_cannot_be_shifted_to_utc_is_refused(value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(Instant).validate_python(value)
    error = caught.value.errors()[0]
    assert error["type"] == "time_out_of_range"
    assert error["msg"] == f"is out of range: a time must fall {RANGE}"


@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00", "9999-12-31T23:59:59+00:00"]
)
def test_an_instant_at_the_ends_of_the_range_is_kept(value: str) -> None:
    assert TypeAdapter(Instant).validate_python(value) == datetime.fromisoformat(value)


async def test_an_out_of_range_time_in_a_query_is_a_422_naming_it() -> None:
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        bad = [await c.get("/as-of", params={"at": v}) for v in EDGES]
        good = await c.get("/as-of", params={"at": "2026-01-01T12:00:00+14:00"})
    for r in bad:
        assert r.status_code == 422, r.text
        assert r.json()["errors"] == [
            {
                "field": "at",
                "in": "query",
                "reason": f"is out of range: a time must fall {RANGE}",
            }
        ]
    assert good.json() == {"at": "2025-12-31T22:00:00+00:00"}


@pytest.mark.integration
async def test_a_time_that_fails_in_the_driver_is_a_422_and_changes_nothing(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE notes (text text NOT NULL)")
        await conn.execute("CREATE TABLE stamps (at timestamptz NOT NULL)")
    transport = httpx.ASGITransport(app=make_app(pool))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.post("/events", params={"at": EDGES[0]})
        ok = await c.post("/events", params={"at": "2026-01-01T00:00:00Z"})
        bug = await c.get("/wrong-type")
    assert bug.status_code == 500  # a driver error that is no overflow stays a bug
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "out of the range" in r.json()["errors"][0]["reason"]
    assert ok.status_code == 200
    assert await pool.fetchval("SELECT count(*) FROM notes") == 1  # only the good request's
    assert await pool.fetchval("SELECT count(*) FROM stamps") == 1


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


def limited_app() -> problems.BodyLimitProblems:
    app = FastAPI(max_body_size=1000)
    problems.install(app)

    @app.post("/things")
    async def thing(body: Thing) -> dict[str, str]:
        return {"name": body.name}

    @app.get("/plain")
    async def plain() -> PlainTextResponse:
        return PlainTextResponse("Content Too Large?", status_code=413)

    return problems.BodyLimitProblems(app)


async def test_a_body_over_the_limit_is_a_413_problem_declared_or_streamed() -> None:
    big = b'{"name": "' + b"x" * 5000 + b'"}'

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 500):
            yield big[i : i + 500]

    json_type = {"content-type": "application/json"}
    transport = httpx.ASGITransport(app=limited_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        declared = await c.post("/things", content=big, headers=json_type)
        streamed = await c.post("/things", content=chunks(), headers=json_type)
        small = await c.post("/things", json={"name": "x"})
        other = await c.get("/plain")
    for r in (declared, streamed):
        assert r.status_code == 413
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"] == (
            "the request body is larger than this endpoint takes (1,000 bytes)"
        )
    assert small.json() == {"name": "x"}
    assert other.text == "Content Too Large?"  # only the body limit's own answer is replaced


async def test_the_body_limits_413_carries_a_correlation_id_in_header_and_body() -> None:
    # The limit answers a declared Content-Length before the correlation middleware runs.
    big = b'{"name": "' + b"x" * 5000 + b'"}'
    json_type = {"content-type": "application/json"}
    transport = httpx.ASGITransport(app=limited_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        fresh = await c.post("/things", content=big, headers=json_type)
        given = await c.post(
            "/things", content=big, headers={**json_type, "X-Correlation-ID": "client-42"}
        )
        bad = await c.post("/things", content=big, headers={**json_type, "X-Correlation-ID": "a b"})
    assert fresh.status_code == given.status_code == bad.status_code == 413
    assert fresh.headers["x-correlation-id"] == fresh.json()["correlation_id"]
    assert len(fresh.json()["correlation_id"]) == 36
    assert given.headers["x-correlation-id"] == given.json()["correlation_id"] == "client-42"
    assert bad.headers["x-correlation-id"] == bad.json()["correlation_id"] != "a b"
