"""Fixtures of the service-desk tests: the app over a fresh database, and callers with roles."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

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
