"""The composition root a service process builds once: settings, pool, event store, auth."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from crm_runtime import db
from crm_runtime.eventstore import EventStore
from crm_runtime.http.auth import Authenticator
from crm_runtime.settings import Settings

RUNTIME_MIGRATIONS = "crm_runtime"


class MissingDatabase(RuntimeError):
    pass


def database_url(settings: Settings) -> str:
    if settings.service_database_url:
        return settings.service_database_url
    server = settings.database_url or _running_embedded()
    if not server:
        raise MissingDatabase(
            "DATABASE_URL is not set: start the platform with `make up` (embedded PostgreSQL) "
            "and run this beside it, or set DATABASE_URL=postgresql://user:pass@host:5432/postgres"
        )
    return db.with_database(server, settings.database_name)


def _running_embedded() -> str | None:
    """The embedded server a `make up` in this directory is running (``.crm/database_url``)."""
    path = Path(os.environ.get("CRM_HOME", ".crm")) / "database_url"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


@dataclass
class ServiceContext:
    settings: Settings
    pool: asyncpg.Pool
    store: EventStore
    auth: Authenticator
    extras: dict[str, object] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return self.store.source

    async def close(self) -> None:
        await self.pool.close()


async def open_context(
    settings: Settings, migration_packages: list[str], *, pool_size: int = 10
) -> ServiceContext:
    """Create the service's database if needed, migrate it and open a pool."""
    url = database_url(settings)
    if settings.database_url and not settings.service_database_url:
        await db.ensure_database(settings.database_url, settings.database_name)
    await db.migrate_url(url, [RUNTIME_MIGRATIONS, *migration_packages])
    pool = await db.create_pool(url, max_size=pool_size)
    store = EventStore(pool, source=f"/crm/{settings.service_name}")
    return ServiceContext(settings, pool, store, Authenticator(settings))
