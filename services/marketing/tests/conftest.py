"""Fixtures of the marketing tests: the app over a fresh database, and callers with roles."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from crm_marketing.app import create_app
from crm_runtime.settings import Settings
from crm_runtime.testing import ApiCaller


@pytest.fixture
async def marketing(
    fresh_db: Callable[..., Any], settings_for: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    url = await fresh_db("crm_runtime.people", "crm_marketing")
    app = create_app(
        settings_for(
            "marketing", database_url=url, scheduler_enabled=False, consumers_enabled=False
        )
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://marketing") as c:
            yield c


@pytest.fixture
def marketing_user(
    marketing: httpx.AsyncClient, token: Callable[..., str]
) -> Callable[..., ApiCaller]:
    def make(*roles: str, user: str = "u-test", team: str | None = None) -> ApiCaller:
        return ApiCaller(marketing, token(*roles, user=user, team=team))

    return make
