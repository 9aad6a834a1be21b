"""Fixtures shared by every test package: the real PostgreSQL and broker, fresh databases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import pytest

from crm_runtime import db
from crm_runtime.http.auth import mint_token
from crm_runtime.settings import Settings
from crm_runtime.testing import kafka_broker, postgres_server, unique_name


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def kafka() -> Iterator[tuple[str, bool]]:
    with kafka_broker() as broker:
        yield broker


@pytest.fixture
async def fresh_db(pg_server: str) -> Callable[..., Any]:
    """Create a new, migrated database; returns its URL. Unique per test: no truncation needed."""

    async def make(*packages: str) -> str:
        name = unique_name("t")
        await db.ensure_database(pg_server, name)
        url = db.with_database(pg_server, name)
        await db.migrate_url(url, ["crm_runtime", *packages])
        return url

    return make


@pytest.fixture
async def pool(fresh_db: Callable[..., Any]) -> AsyncIterator[asyncpg.Pool]:
    url = await fresh_db()
    p = await db.create_pool(url, max_size=20)
    yield p
    await p.close()


@pytest.fixture
def settings_for(pg_server: str, kafka: tuple[str, bool]) -> Callable[..., Settings]:
    def make(service: str, database_url: str | None = None, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "service_name": service,
            "crm_env": "test",
            "database_url": pg_server,
            "kafka_bootstrap_servers": kafka[0],
            "kafka_embedded": kafka[1],
            "kafka_partitions": 3,
            "relay_history_check_interval": 1.0,
            "relay_poll_interval": 0.2,
        }
        if database_url:
            values["service_database_url"] = database_url
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def token() -> Callable[..., str]:
    def make(*roles: str, user: str = "u-test", team: str | None = None) -> str:
        return mint_token(Settings().jwt_secret, user, list(roles), team=team)

    return make
