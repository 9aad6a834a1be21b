"""The in-memory per-client limit of public endpoints: counts per window, 429 with Retry-After."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, Depends, FastAPI

from crm_runtime.http import problems
from crm_runtime.http.ratelimit import MemoryLimiter, limit_per_client


def test_a_client_over_its_limit_waits_for_the_next_window() -> None:
    now = [120.0]
    limiter = MemoryLimiter(3, clock=lambda: now[0])
    assert [limiter.hit("203.0.113.1") for _ in range(3)] == [None, None, None]
    now[0] = 135.5
    assert limiter.hit("203.0.113.1") == 45  # the window ends at 180
    assert limiter.hit("203.0.113.2") is None  # another client has its own count
    now[0] = 180.0
    assert limiter.hit("203.0.113.1") is None  # a new window


async def test_a_flood_gets_429_problem_with_retry_after() -> None:
    app = FastAPI()
    problems.install(app)
    router = APIRouter(dependencies=[Depends(limit_per_client(2))])

    @router.get("/ping")
    async def ping() -> dict[str, str]:
        return {"ok": "yes"}

    app.include_router(router)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.1", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert [(await c.get("/ping")).status_code for _ in range(2)] == [200, 200]
        r = await c.get("/ping")
    assert r.status_code == 429
    assert r.headers["content-type"].startswith("application/problem+json")
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert r.json()["retry_after"] == int(r.headers["Retry-After"])
