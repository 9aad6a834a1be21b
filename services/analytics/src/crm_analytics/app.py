"""Composition root of the analytics query API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute

from crm_analytics import lag
from crm_analytics.entrypoints import charts_api, insights_api, sales_api, timeline_api
from crm_runtime.http.app import create_service_app
from crm_runtime.settings import Settings

# The service's own routes (the runtime adds the probes, /metrics and the /events feed).
ROUTERS: list[APIRouter] = [
    timeline_api.router,
    sales_api.router,
    charts_api.router,
    insights_api.service_router,
    insights_api.marketing_router,
    insights_api.retention_router,
]


def create_app(settings: Settings | None = None) -> FastAPI:
    app = create_service_app(
        settings or Settings.for_service("analytics"),
        title="CRM Analytics",
        description="The customer timeline every department sees, and the analytical CRM.",
        routers=ROUTERS,
        migrations=["crm_analytics"],
        background=[lag.run],
    )
    _keep_example_nulls(app)
    return app


def _keep_example_nulls(app: FastAPI) -> None:
    """FastAPI writes the OpenAPI document without null values, the examples' nulls included
    (``"as_of": null`` would vanish, and the example no longer fit its model): put each route's
    200 example back as the route declares it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        spec = build()  # FastAPI's, cached: the examples are put back in place, each time
        for route in (r for router in ROUTERS for r in router.routes):
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            content = route.responses.get(200, {}).get("content", {}).get("application/json")
            if not content or "example" not in content:
                continue
            example = jsonable_encoder(content["example"])  # nulls kept
            for method in route.methods or ():
                op = spec["paths"][route.path_format][method.lower()]
                op["responses"]["200"]["content"]["application/json"]["example"] = example
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
