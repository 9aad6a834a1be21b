"""CommandRoute answers exactly as FastAPI's own handler does (the same app with plain APIRoutes
is the reference), without FastAPI's dependency solver; routes it cannot take fall back."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi import routing as fastapi_routing
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from crm_runtime.http import problems
from crm_runtime.http.app import CorrelationMiddleware, CtxDep, new_correlation_id
from crm_runtime.http.auth import Authenticator, Principal, mint_token, require
from crm_runtime.http.routing import CommandRoute
from crm_runtime.settings import Settings

SECRET = Settings().jwt_secret


class Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=10)
    count: int = 0
    email: EmailStr | None = None


Rep = Annotated[Principal, Depends(require("sales_rep"))]


async def _generator_dependency() -> Any:  # a dependency with yield: FastAPI's way only
    yield "x"


def make_app(route_class: type[APIRoute]) -> FastAPI:
    router = APIRouter(prefix="/things", route_class=route_class)

    @router.post("/{thing_id}", status_code=201)
    async def create(
        thing_id: str,
        body: Thing,
        ctx: CtxDep,
        user: Rep,
        key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
        if_match: Annotated[str | None, Header()] = None,
        tags: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI copies it
        limit: Annotated[int, Query(ge=1, le=5)] = 2,
    ) -> JSONResponse:
        return JSONResponse(
            {
                "id": thing_id,
                "body": body.model_dump(),
                "user": user.user_id,
                "key": key,
                "if_match": if_match,
                "tags": tags,
                "limit": limit,
                "ctx": ctx.name,
            },
            status_code=201,
        )

    @router.post("/{thing_id}/ping", dependencies=[Depends(require("sales_manager"))])
    async def ping(thing_id: str) -> JSONResponse:
        return JSONResponse({"pong": thing_id})

    @router.post("/{thing_id}/pair")
    async def pair(thing_id: str, a: Thing, b: Thing) -> JSONResponse:  # an embedded body
        return JSONResponse({"a": a.name, "b": b.name})

    @router.post("/{thing_id}/raw")
    async def raw(thing_id: str, request: Request) -> JSONResponse:
        return JSONResponse({"path": request.url.path, "body": (await request.body()).decode()})

    @router.post("/{thing_id}/with-response")
    async def with_response(thing_id: str, response: Response) -> JSONResponse:
        return JSONResponse({"id": thing_id})

    @router.post("/{thing_id}/model")
    async def model(thing_id: str, body: Thing) -> Thing:
        return body

    @router.post("/{thing_id}/generator")
    async def generator(
        thing_id: str, g: Annotated[Any, Depends(_generator_dependency)]
    ) -> JSONResponse:
        return JSONResponse({"g": g})

    app = FastAPI()
    problems.install(app)
    app.add_middleware(CorrelationMiddleware)
    app.include_router(router)
    app.state.ctx = SimpleNamespace(name="ctx", auth=Authenticator(Settings()))
    return app


def token(*roles: str) -> str:
    return mint_token(SECRET, "u-1", list(roles))


REP = {"Authorization": f"Bearer {token('sales_rep')}"}
CASES: list[tuple[str, dict[str, Any]]] = [
    ("/things/a1", {"json": {"name": "ok"}, "headers": REP}),
    (
        "/things/a1?tags=x&tags=y&limit=3",
        {
            "json": {"name": "ok", "count": 3},
            "headers": {**REP, "Idempotency-Key": "k", "If-Match": '"2"'},
        },
    ),
    ("/things/a1", {"json": {"name": "ok"}}),  # 401
    ("/things/a1", {"json": {"name": "ok"}, "headers": {"Authorization": "Basic abc"}}),
    ("/things/a1", {"json": {"name": "ok"}, "headers": {"Authorization": "Bearer not.a.jwt"}}),
    (
        "/things/a1",
        {"json": {"name": "ok"}, "headers": {"Authorization": f"Bearer {token('marketer')}"}},
    ),
    ("/things/a1", {"content": b'{"name": ', "headers": {"content-type": "application/json"}}),
    ("/things/a1", {"headers": REP}),  # no body
    ("/things/a1", {"json": {"name": "", "count": "many", "email": "no", "x": 1}, "headers": REP}),
    ("/things/a1", {"json": [1, 2], "headers": REP}),
    ("/things/a1", {"json": None, "headers": REP}),
    ("/things/a1?limit=9", {"json": {"name": "ok"}, "headers": REP}),
    ("/things/a1?limit=no", {"json": {"name": "x" * 11}, "headers": REP}),
    (
        "/things/a1",
        {"content": b'{"name": "ok"}', "headers": {**REP, "content-type": "text/plain"}},
    ),
    ("/things/a1", {"content": b'{"name": "ok"}', "headers": REP}),  # no content type
    (
        "/things/a1",
        {
            "content": b'{"name": "ok"}',
            "headers": {**REP, "content-type": "application/merge-patch+json; charset=utf-8"},
        },
    ),
    (
        "/things/a1",
        {"content": b'{"name": "\xff"}', "headers": {**REP, "content-type": "application/json"}},
    ),
    ("/things/a1/ping", {"headers": REP}),  # route-level dependency: 403
    ("/things/a1/ping", {"headers": {"Authorization": f"Bearer {token('sales_manager')}"}}),
    ("/things/a1/pair", {"json": {"a": {"name": "x"}, "b": {"name": "y"}}}),
    ("/things/a1/pair", {"json": {"a": {"name": ""}}}),
    ("/things/a1/raw", {"content": b"plain text"}),
    ("/things/a1/with-response", {}),
    ("/things/a1/model", {"json": {"name": "ok"}}),
    ("/things/a1/generator", {}),
]


@pytest.fixture
def solver_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the requests that went through FastAPI's dependency solver."""
    calls: list[str] = []
    original = fastapi_routing.solve_dependencies

    async def counting(**kwargs: Any) -> Any:
        calls.append(kwargs["request"].url.path)
        return await original(**kwargs)

    monkeypatch.setattr(fastapi_routing, "solve_dependencies", counting)
    return calls


async def _answers(app: FastAPI) -> list[tuple[int, str, Any]]:
    out = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        for url, kw in CASES:
            r = await c.post(url, **kw)
            body = r.json()
            if isinstance(body, dict):
                body.pop("correlation_id", None)
            out.append((r.status_code, r.headers["content-type"], body))
    return out


async def test_answers_match_fastapis_own_handler_case_by_case(solver_calls: list[str]) -> None:
    reference = await _answers(make_app(APIRoute))
    assert len(solver_calls) > 0
    solver_calls.clear()
    fast = await _answers(make_app(CommandRoute))
    for (url, _), want, got in zip(CASES, reference, fast, strict=True):
        assert got == want, url
    statuses = [s for s, _, _ in fast]
    assert statuses[:6] == [201, 201, 401, 401, 401, 403]
    assert {401, 403, 422, 400, 201, 200} <= set(statuses)
    # Only the routes it cannot take went through the solver.
    assert set(solver_calls) == {
        "/things/a1/with-response",
        "/things/a1/model",
        "/things/a1/generator",
    }


async def test_malformed_json_is_a_422_before_authentication() -> None:
    transport = httpx.ASGITransport(app=make_app(CommandRoute))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.post("/things/a1", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["reason"].startswith("not valid JSON")


async def test_dependency_overrides_take_fastapis_way(solver_calls: list[str]) -> None:
    app = make_app(CommandRoute)
    dependency = Rep.__metadata__[0].dependency

    async def someone() -> Principal:
        return Principal("stand-in", frozenset({"sales_rep"}))

    app.dependency_overrides[dependency] = someone
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.post("/things/a1", json={"name": "ok"})
    assert r.status_code == 201, r.text
    assert r.json()["user"] == "stand-in"
    assert solver_calls == ["/things/a1"]


async def test_correlation_id_is_kept_or_minted_once() -> None:
    transport = httpx.ASGITransport(app=make_app(CommandRoute))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        given = await c.post(
            "/things/a1", json={"name": "ok"}, headers={**REP, "X-Correlation-ID": "c-1"}
        )
        minted = await c.post("/things/a1", json={"name": "ok"}, headers=REP)
        unauthorised = await c.post("/things/a1", json={"name": "ok"})
    assert given.headers.get_list("x-correlation-id") == ["c-1"]
    assert len(minted.headers.get_list("x-correlation-id")) == 1
    assert unauthorised.json()["correlation_id"] == unauthorised.headers["x-correlation-id"]


def test_minted_correlation_ids_are_version_4_uuids() -> None:
    import uuid

    ids = {new_correlation_id() for _ in range(1000)}
    assert len(ids) == 1000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
