"""FastAPI app factory: lifespan, correlation ids, problems, health, metrics and the event feed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crm_runtime import heap, kafka
from crm_runtime.context import ServiceContext, database_url, open_context
from crm_runtime.eventstore import Checkpoint
from crm_runtime.http import docs, problems
from crm_runtime.http.auth import require
from crm_runtime.http.correlation import CID_HEADER, correlation_id_of
from crm_runtime.http.correlation import new_correlation_id as new_correlation_id
from crm_runtime.logs import configure_logging, correlation_id
from crm_runtime.settings import Settings
from crm_runtime.unit_of_work import CommitNotifier

log = logging.getLogger(__name__)

REQUESTS = Counter("crm_http_requests_total", "HTTP requests", ["route", "method", "status"])
LATENCY = Histogram("crm_http_request_seconds", "HTTP request latency", ["route", "method"])

BackgroundTask = Callable[[ServiceContext, asyncio.Event], Coroutine[Any, Any, None]]


async def get_ctx(request: Request) -> ServiceContext:
    ctx: ServiceContext = request.app.state.ctx
    return ctx


CtxDep = Annotated[ServiceContext, Depends(get_ctx)]


class FeedEvent(BaseModel):
    position: int
    checkpoint: str
    recorded_at: datetime
    event: dict[str, Any]


class FeedPage(BaseModel):
    items: list[FeedEvent]
    next_after: str
    has_more: bool


class _RouteMetrics:
    """The metric children of one (route, method): looked up once, not on every request."""

    __slots__ = ("latency", "requests")

    def __init__(self, template: str, method: str) -> None:
        self.latency = LATENCY.labels(template, method)
        self.requests: dict[int, Any] = {}

    def count(self, template: str, method: str, status: int) -> None:
        child = self.requests.get(status)
        if child is None:
            child = self.requests[status] = REQUESTS.labels(template, method, str(status))
        child.inc()


_ROUTE_METRICS: dict[tuple[str, str], _RouteMetrics] = {}


class CorrelationMiddleware:
    """Pure ASGI middleware: correlation id in and out, request metrics by route template.

    (Starlette's BaseHTTPMiddleware costs a task group and memory streams per request; this one
    also reads the raw header list and keeps the metric children it has used.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = correlation_id_of(scope)
        token = correlation_id.set(cid)
        started = time.perf_counter()
        code = 500
        response_started = False
        cid_header = (CID_HEADER, cid.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal code, response_started
            if message["type"] == "http.response.start":
                code, response_started = message["status"], True
                headers = [h for h in message.get("headers", ()) if h[0].lower() != CID_HEADER]
                headers.append(cid_header)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # A bug escaped the app: answer here, while the correlation id is still set, so the
            # 500 and its log line carry it (Starlette's outer handler runs after it is reset).
            if response_started:
                raise
            await problems.unexpected(exc)(scope, receive, send_with_id)
        finally:
            correlation_id.reset(token)
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            method = scope["method"]
            metrics = _ROUTE_METRICS.get((template, method))
            if metrics is None:
                metrics = _ROUTE_METRICS[(template, method)] = _RouteMetrics(template, method)
            metrics.count(template, method, code)
            metrics.latency.observe(time.perf_counter() - started)


class BrokerProbe:
    """Caches the broker's reachability for a few seconds so probes stay cheap."""

    def __init__(self, settings: Settings, ttl: float = 5.0) -> None:
        self.settings = settings
        self.ttl = ttl
        self._checked = 0.0
        self._ok = False
        self._lock = asyncio.Lock()

    async def ok(self) -> bool:
        async with self._lock:
            if time.monotonic() - self._checked > self.ttl:
                self._ok = await kafka.broker_reachable(self.settings)
                self._checked = time.monotonic()
            return self._ok


MAX_BODY_BYTES = 4 * 1024 * 1024  # a JSON command is a few KiB; imports set their own limit


class ServiceApp(FastAPI):
    """A service's FastAPI application: every error answer a problem, the body limit's too."""

    def build_middleware_stack(self) -> ASGIApp:
        return problems.BodyLimitProblems(super().build_middleware_stack())


def create_service_app(
    settings: Settings,
    *,
    title: str,
    description: str,
    routers: list[APIRouter],
    migrations: list[str],
    background: list[BackgroundTask] | None = None,
    feed_roles: tuple[str, ...] = ("analyst",),
    max_body_size: int = MAX_BODY_BYTES,
) -> FastAPI:
    """``background``: loops that run beside the API (each gets the context and a stop event;
    it returns when the event is set) — started after migrations, stopped before the pool closes.
    ``max_body_size``: a larger request body is refused (413) before it is read; a route that
    takes more (a file import) sets its own ``max_body_size``."""
    configure_logging(settings.service_name, settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = await open_context(settings, migrations)
        # Commands wake the relay after they commit, many commits to one NOTIFY (unit_of_work).
        notifier = ctx.store.notifier = CommitNotifier(database_url(settings))
        app.state.ctx = ctx
        app.state.broker = BrokerProbe(settings)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(run(ctx, stop)) for run in background or []]
        log.info("service started", extra={"port": settings.port})
        heap.settle()
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await notifier.close()
            await ctx.close()

    app = ServiceApp(
        title=title,
        description=description,
        version="0.1.0",
        max_body_size=max_body_size,
        lifespan=lifespan,
        # FastAPI's pages load their scripts from the internet: /docs is served with local
        # assets below (crm_runtime.http.docs), and ReDoc, which has no local copy, is off.
        docs_url=None,
        redoc_url=None,
        # FastAPI otherwise asks OpenTelemetry on every request whether a provider has been set
        # (environment lookups, ~5% of a create-lead's CPU); we have Prometheus metrics.
        telemetry={
            "tracing": settings.otel_tracing,
            "metrics": settings.otel_tracing,
            "logs": False,
        },
        responses={  # every operation may answer these, as RFC 9457 problems
            401: {"description": "no valid bearer token (problem+json)"},
            403: {"description": "the caller lacks the role or may not touch this record"},
            422: {"description": "invalid input: `errors` names each field and the reason"},
        },
    )
    problems.install(app)

    app.add_middleware(CorrelationMiddleware)

    health = APIRouter(tags=["operations"])

    @health.get("/health/live", summary="The process is up")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @health.get("/health/ready", summary="The database and the broker answer")
    async def ready(request: Request) -> JSONResponse:
        ctx: ServiceContext | None = getattr(request.app.state, "ctx", None)
        checks: dict[str, str] = {}
        try:
            assert ctx is not None
            async with ctx.pool.acquire(timeout=3) as conn:
                await conn.fetchval("SELECT 1", timeout=3)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unavailable: {type(exc).__name__}"
        checks["broker"] = "ok" if await request.app.state.broker.ok() else "unavailable"
        healthy = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ok" if healthy else "unavailable", "checks": checks},
            status_code=200 if healthy else 503,
        )

    @health.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    feed = APIRouter(tags=["events"])

    @feed.get(
        "/events",
        summary="The service's events in commit order, for catch-up and rebuilds",
        response_model=FeedPage,
        dependencies=[Depends(require(*feed_roles))],
    )
    async def events(
        ctx: CtxDep,
        after: Annotated[
            str | None, Query(description="checkpoint from the previous page's next_after")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    ) -> FeedPage:
        start = Checkpoint.parse(after)
        batch = await ctx.store.read_committed(start, limit)
        return FeedPage(
            items=[
                FeedEvent(
                    position=e.position,
                    checkpoint=str(e.checkpoint),
                    recorded_at=e.recorded_at,
                    event=e.to_cloud_event(ctx.source).model_dump(mode="json"),
                )
                for e in batch
            ],
            next_after=str(batch[-1].checkpoint if batch else start),
            has_more=len(batch) == limit,
        )

    # The service's own routes first: each request is matched against the routes in order,
    # and probes and the feed are the rare ones.
    for router in routers:
        app.include_router(router)
    app.include_router(health)
    app.include_router(feed)
    docs.install(app)
    _keep_example_nulls(app)
    return app


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """The app's operations, in the routers it includes too (FastAPI 0.165 keeps an included
    router as one route of the app)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _api_routes(included.routes)


def _keep_example_nulls(app: FastAPI) -> None:
    """FastAPI writes the OpenAPI document without null values, the nulls of the responses'
    examples included (``"as_of": null`` would vanish, and the example no longer fit its
    model): put each declared JSON example back as the route declares it. (The services
    include their routers without a prefix of their own, so a route's path is its path in the
    document; an operation not found there is left as FastAPI wrote it.)"""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        spec = build()  # FastAPI's, cached: the examples are put back in place, each time
        for route in _api_routes(app.routes):
            if not route.include_in_schema:
                continue
            for status, response in route.responses.items():
                content = response.get("content", {}).get("application/json", {})
                if "example" not in content:
                    continue
                example = jsonable_encoder(content["example"])  # nulls kept
                for method in route.methods or ():
                    op = spec["paths"].get(route.path_format, {}).get(method.lower())
                    written = (op or {}).get("responses", {}).get(str(status), {})
                    target = written.get("content", {}).get("application/json")
                    if target is not None:
                        target["example"] = example
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
