"""Service skeleton: settings that refuse a default secret, JWT (HS256 and RS256 via JWKS),
correlation ids, problem responses, port checks and the token CLI."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import BaseModel, ValidationError

from crm_marketing.app import create_app
from crm_runtime.cli import main as crm
from crm_runtime.embedded import PortInUse, require_port
from crm_runtime.http.auth import mint_token
from crm_runtime.settings import DEV_JWT_SECRET, Settings


def test_production_refuses_the_default_secret() -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        Settings(crm_env="production")
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        Settings(crm_env="production", jwt_secret="short")
    assert Settings(crm_env="production", jwt_secret="x" * 40).jwt_secret == "x" * 40
    assert Settings(crm_env="production", jwt_jwks_url="http://idp/jwks").jwt_jwks_url
    assert Settings().jwt_secret == DEV_JWT_SECRET  # development keeps working out of the box


def test_idempotent_producer_is_off_only_for_the_embedded_broker() -> None:
    assert Settings().producer_idempotence is True
    assert Settings(kafka_embedded=True).producer_idempotence is False
    assert Settings(kafka_embedded=True, kafka_idempotence=True).producer_idempotence is True


def test_port_in_use_gets_a_clear_message() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(
            PortInUse, match=rf"port {port} \(sales API\) is already in use.*SALES_PORT"
        ):
            require_port(port, "sales API", "SALES_PORT")


def test_token_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert crm(["token", "--role", "sales_rep", "--user", "alice", "--team", "north"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), DEV_JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["roles"] == ["sales_rep"]
    assert claims["team"] == "north"
    assert crm(["token", "--role", "wizard", "--user", "x"]) == 2
    assert "unknown roles" in capsys.readouterr().err


async def feed(c: httpx.AsyncClient, token: str) -> httpx.Response:
    return await c.get("/events", headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
async def app_client(
    fresh_db: Callable[..., Any], settings_for: Callable[..., Settings]
) -> AsyncIterator[Callable[..., Any]]:
    """Start the marketing skeleton with the given settings overrides."""
    clients: list[tuple[Any, httpx.AsyncClient]] = []

    async def make(**overrides: Any) -> httpx.AsyncClient:
        url = await fresh_db("crm_marketing")
        app = create_app(settings_for("marketing", database_url=url, **overrides))
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m")
        clients.append((lifespan, client))
        return client

    yield make
    for lifespan, client in clients:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.mark.integration
async def test_correlation_id_problem_404_and_expired_token(
    app_client: Callable[..., Any],
) -> None:
    c = await app_client()
    r = await c.get("/nowhere", headers={"X-Correlation-ID": "abc-123"})
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["x-correlation-id"] == "abc-123"
    assert r.json()["correlation_id"] == "abc-123"
    generated = (await c.get("/health/live", headers={"X-Correlation-ID": "bad id\n"})).headers
    assert generated["x-correlation-id"] != "bad id\n"
    expired = mint_token(DEV_JWT_SECRET, "u", ["analyst"], ttl=-10)
    r = await c.get("/events", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401
    assert "expired" in r.json()["detail"]
    forged = mint_token("another-secret-of-sufficient-length-1234", "u", ["admin"])
    assert (
        await c.get("/events", headers={"Authorization": f"Bearer {forged}"})
    ).status_code == 401


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, Any]]:
    """An OIDC-style JWKS endpoint on loopback serving one RSA public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/jwks", key
    server.shutdown()


@pytest.mark.integration
async def test_rs256_tokens_via_jwks(
    app_client: Callable[..., Any], jwks_server: tuple[str, Any]
) -> None:
    url, key = jwks_server
    c = await app_client(jwt_jwks_url=url, jwt_audience="crm", jwt_issuer="https://idp.test")
    now = int(time.time())
    claims = {"sub": "u1", "roles": ["analyst"], "aud": "crm", "iss": "https://idp.test"}
    good = jwt.encode({**claims, "exp": now + 60}, key, algorithm="RS256", headers={"kid": "k1"})
    r = await c.get("/events", headers={"Authorization": f"Bearer {good}"})
    assert r.status_code == 200, r.text
    wrong_aud = jwt.encode(
        {**claims, "aud": "other", "exp": now + 60}, key, algorithm="RS256", headers={"kid": "k1"}
    )
    assert (
        await c.get("/events", headers={"Authorization": f"Bearer {wrong_aud}"})
    ).status_code == 401
    hs = mint_token(DEV_JWT_SECRET, "u1", ["analyst"])  # the dev secret is not accepted here
    assert (await feed(c, hs)).status_code == 401
    marketer = jwt.encode(
        {**claims, "roles": ["marketer"], "exp": now + 60},
        key,
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    assert (
        await c.get("/events", headers={"Authorization": f"Bearer {marketer}"})
    ).status_code == 200
    none_role = jwt.encode(
        {**claims, "roles": [], "exp": now + 60}, key, algorithm="RS256", headers={"kid": "k1"}
    )
    assert (
        await c.get("/events", headers={"Authorization": f"Bearer {none_role}"})
    ).status_code == 403


def test_tools_find_the_database_of_a_running_make_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm_runtime.context import MissingDatabase, database_url

    monkeypatch.setenv("CRM_HOME", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("SALES_DATABASE_URL", raising=False)
    settings = Settings.for_service("sales")
    with pytest.raises(MissingDatabase, match="make up"):
        database_url(settings)
    (tmp_path / "database_url").write_text("postgresql://postgres:@/postgres?host=/x/pg\n")
    assert database_url(settings) == "postgresql://postgres:@/crm_sales?host=/x/pg"


class _NameBody(BaseModel):
    name: str


async def test_malformed_json_is_a_422_on_the_body() -> None:
    from fastapi import FastAPI

    from crm_runtime.http.problems import install

    app = FastAPI()
    install(app)

    @app.post("/x")
    async def x(body: _NameBody) -> dict[str, str]:
        return {"name": body.name}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/x", content=b'{"name": ', headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    [error] = r.json()["errors"]
    assert error["field"] == "body"
    assert error["reason"] == "not valid JSON (at character 9): Expecting value"


@pytest.mark.integration
async def test_background_tasks_run_beside_the_api_and_stop_with_it(
    fresh_db: Callable[..., Any], settings_for: Callable[..., Settings]
) -> None:
    import asyncio

    from crm_runtime.context import ServiceContext
    from crm_runtime.http.app import create_service_app

    seen: list[str] = []

    async def loop(ctx: ServiceContext, stop: asyncio.Event) -> None:
        seen.append(f"started with {ctx.settings.service_name}")
        await stop.wait()
        seen.append("stopped")

    url = await fresh_db("crm_marketing")
    app = create_service_app(
        settings_for("marketing", database_url=url),
        title="t",
        description="d",
        routers=[],
        migrations=[],
        background=[loop],
    )
    async with app.router.lifespan_context(app):
        await asyncio.sleep(0.05)
        assert seen == ["started with marketing"]
    assert seen == ["started with marketing", "stopped"]


def test_logged_database_errors_leave_out_the_values_postgresql_quotes() -> None:
    import asyncpg

    from crm_runtime.logs import JsonFormatter

    def logged(exc: BaseException) -> str:
        try:
            try:
                raise exc
            except asyncpg.PostgresError as inner:
                raise RuntimeError("while saving the task") from inner
        except RuntimeError:
            record = logging.LogRecord("x", logging.ERROR, "f", 1, "unhandled error", None, None)
            record.exc_info = sys.exc_info()
        return JsonFormatter("sales").format(record)

    not_null = asyncpg.exceptions.NotNullViolationError.new(
        {
            "S": "ERROR",
            "C": "23502",
            "M": 'null value in column "priority" of relation "tasks"',
            "D": "Failing row contains (t-1, Call Ada at ada@example.com, null).",
            "t": "tasks",
            "c": "priority",
        }
    )
    bad_input = asyncpg.exceptions.InvalidTextRepresentationError.new(
        {"S": "ERROR", "C": "22P02", "M": 'invalid input syntax for type uuid: "ada@example.com"'}
    )
    for exc in (not_null, bad_input):
        line = logged(exc)
        doc = json.loads(line)
        assert "ada@example.com" not in line and "Call Ada" not in line
        assert "Traceback" in doc["exc"] and "while saving the task" in doc["exc"]
        assert type(exc).__qualname__ in doc["exc"] and "withheld" in doc["exc"]
    assert "table_name=tasks column_name=priority" in logged(not_null)


def test_logged_tracebacks_keep_causes_and_groups_but_no_quoted_values() -> None:
    import asyncpg
    from pydantic import BaseModel as Model

    from crm_runtime.logs import format_exception

    class Lead(Model):
        age: int

    # asyncpg raises DataError from the ValueError that quotes the argument (a value, never in
    # the source lines a traceback shows)
    value = "ada@" + "example.com"
    try:
        try:
            raise ValueError(f"invalid UUID {value!r}: length must be between 32..36")
        except ValueError as inner:
            raise asyncpg.exceptions.DataError(
                f"invalid input for query argument $1: {value!r}"
            ) from inner
    except asyncpg.PostgresError as e:
        chained = format_exception(e)
    assert value not in chained and chained.count("Traceback") == 2
    assert "builtins.ValueError: (text withheld" in chained and "DataError" in chained

    try:
        Lead(age=value)  # type: ignore[arg-type]
    except ValueError as e:
        invalid = format_exception(e)
    assert value not in invalid and "age: Input should be a valid integer" in invalid

    def fails() -> None:
        raise KeyError("the member's own")

    try:
        try:
            fails()
        except KeyError as member:
            raise ExceptionGroup("tasks failed", [member]) from None
    except ExceptionGroup as e:
        grouped = format_exception(e)
    assert "1 of 1" in grouped and "in fails" in grouped and "the member's own" in grouped


async def test_opentelemetry_is_asked_per_request_only_when_tracing_is_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry import trace

    from crm_runtime.http.app import create_service_app

    asked: list[int] = []
    real = trace.get_tracer_provider

    def counting() -> Any:
        asked.append(1)
        return real()

    monkeypatch.setattr(trace, "get_tracer_provider", counting)
    for tracing, expect_asked in ((False, False), (True, True)):
        asked.clear()
        settings = Settings(service_name="marketing", otel_tracing=tracing)
        app = create_service_app(settings, title="t", description="d", routers=[], migrations=[])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            for _ in range(3):
                assert (await c.get("/health/live")).status_code == 200
        assert bool(asked) is expect_asked
        # FastAPI's own exception log records carry error messages: never on.
        assert app._telemetry["logs"] is False


def test_logged_fastapi_validation_errors_leave_out_the_values() -> None:
    """A response that fails its model is logged as an unhandled error: FastAPI's error quotes
    the record's values (an e-mail address, say); the log keeps where and why, not what."""
    from fastapi.exceptions import RequestValidationError, ResponseValidationError

    from crm_runtime.logs import format_exception

    detail = [{"type": "blank", "loc": ("response", "email"), "msg": "bad", "input": "ada@x.io"}]
    for kind in (ResponseValidationError, RequestValidationError):
        try:
            raise kind(detail)
        except kind as e:
            logged = format_exception(e)
        assert "ada@x.io" not in logged, logged
        assert "response.email: bad" in logged
