"""Fixtures of the service-desk tests: the app over a fresh database, callers with roles, and
the two stacks (sd_support's desk, sdr_support's routing-and-SLA stack)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sd_support import Desk, desk_stack
from sdr_support import Stack, sdr_stack

from crm_runtime.settings import Settings
from crm_runtime.testing import ApiCaller
from crm_service_desk.app import create_app


@pytest.fixture
async def service_desk(
    fresh_db: Callable[..., Any], settings_for: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    url = await fresh_db("crm_runtime.people", "crm_service_desk")
    app = create_app(
        settings_for(
            "service-desk", database_url=url, scheduler_enabled=False, consumers_enabled=False
        )
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service-desk") as c:
            yield c


@pytest.fixture
def service_desk_user(
    service_desk: httpx.AsyncClient, token: Callable[..., str]
) -> Callable[..., ApiCaller]:
    def make(*roles: str, user: str = "u-test", team: str | None = None) -> ApiCaller:
        return ApiCaller(service_desk, token(*roles, user=user, team=team))

    return make


@pytest.fixture
async def sd(
    tmp_path: Path,
    fresh_db: Callable[..., Any],
    settings_for: Callable[..., Settings],
    token: Callable[..., str],
) -> AsyncIterator[Desk]:
    async with desk_stack(tmp_path, fresh_db, settings_for, token) as desk:
        yield desk


@pytest.fixture
async def stack(
    tmp_path: Path,
    fresh_db: Callable[..., Any],
    settings_for: Callable[..., Settings],
    token: Callable[..., str],
) -> AsyncIterator[Stack]:
    async with sdr_stack(tmp_path, fresh_db, settings_for, token) as s:
        yield s
