"""Test and benchmark stack: testcontainers if a Docker engine answers, else the embedded one."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crm_runtime.embedded import EmbeddedBroker, EmbeddedPostgres, free_port

log = logging.getLogger(__name__)


def docker_available() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server URL (database ``postgres``), private to this run."""
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as pg:
            yield pg.get_connection_url()
        return
    with tempfile.TemporaryDirectory(prefix="crm-pg-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "data", keep=False).start()
        try:
            yield server.url
        finally:
            server.stop()


@contextlib.contextmanager
def kafka_broker() -> Iterator[tuple[str, bool]]:
    """``(bootstrap servers, embedded?)`` of a broker private to this run."""
    if docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server(), False
        return
    broker = EmbeddedBroker(free_port()).start()
    try:
        yield broker.bootstrap, True
    finally:
        broker.stop()


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


class ApiCaller:
    """An HTTP client acting as one user (bearer token): ``await alice.post("/contacts", ...)``.

    Used by the service tests; takes any httpx.AsyncClient (ASGI transport or a real server).
    """

    def __init__(self, client: Any, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    async def request(
        self, method: str, url: str, *, headers: dict[str, str] | None = None, **kw: Any
    ) -> Any:
        return await self.client.request(
            method, url, headers={**self.headers, **(headers or {})}, **kw
        )

    async def get(self, url: str, **kw: Any) -> Any:
        return await self.request("GET", url, **kw)

    async def post(self, url: str, **kw: Any) -> Any:
        return await self.request("POST", url, **kw)

    async def patch(self, url: str, **kw: Any) -> Any:
        return await self.request("PATCH", url, **kw)

    async def put(self, url: str, **kw: Any) -> Any:
        return await self.request("PUT", url, **kw)


def assert_refused(response: Any, field: str, why: str) -> None:
    """The answer is a 422 problem naming ``field`` (only it) with ``why`` in its reason."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    errors = response.json()["errors"]
    assert [e["field"] for e in errors] == [field], errors
    assert why in errors[0]["reason"], errors
