"""Fixtures of the sales tests: the app over a fresh database, and callers with roles."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from crm_runtime.settings import Settings
from crm_runtime.testing import ApiCaller
from crm_sales.app import create_app


@pytest.fixture
async def sales_app(
    fresh_db: Callable[..., Any], settings_for: Callable[..., Settings]
) -> AsyncIterator[FastAPI]:
    """The app, started (its database migrated); ``app.state.ctx.pool`` reaches the database."""
    url = await fresh_db("crm_sales")
    app = create_app(
        settings_for("sales", database_url=url, scheduler_enabled=False, consumers_enabled=False)
    )
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def sales(sales_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=sales_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sales") as c:
        yield c


@pytest.fixture
def as_user(sales: httpx.AsyncClient, token: Callable[..., str]) -> Callable[..., ApiCaller]:
    def make(*roles: str, user: str = "u-test", team: str | None = None) -> ApiCaller:
        return ApiCaller(sales, token(*roles, user=user, team=team))

    return make
