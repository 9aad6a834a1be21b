"""Composition root of the analytics query API."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

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
    return create_service_app(
        settings or Settings.for_service("analytics"),
        title="CRM Analytics",
        description="The customer timeline every department sees, and the analytical CRM.",
        routers=ROUTERS,
        migrations=["crm_analytics"],
        background=[lag.run],
    )
