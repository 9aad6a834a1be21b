"""Composition root of the marketing service: its settings, routers, consumers and jobs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from crm_marketing.audience.routes import router as audience_router
from crm_marketing.audience.sales_feed import run_audience_consumer
from crm_marketing.campaigns.api import router as campaigns_router
from crm_marketing.delivery.api import router as delivery_router
from crm_marketing.jobs import run_scheduler, run_sender
from crm_marketing.segments.membership import run_segment_tailer
from crm_marketing.segments.routes import router as segments_router
from crm_marketing.templates.routes import router as templates_router
from crm_marketing.tracking.api import router as tracking_router
from crm_marketing.triggers.api import router as triggers_router
from crm_marketing.web import public as web_public
from crm_marketing.web import routes as web_routes
from crm_runtime import people
from crm_runtime.http.app import create_service_app
from crm_runtime.settings import Settings

# Routes that take no user token (websites, mail recipients): see _document_tokenless.
TOKENLESS = (web_public.router, tracking_router)


def create_app(settings: Settings | None = None) -> FastAPI:
    app = create_service_app(
        settings or Settings.for_service("marketing"),
        title="CRM Marketing",
        description="Audience, consent, segments, campaigns, templates, web activity and triggers. "
        "Every change is a `crm.marketing.*` event.",
        routers=[
            audience_router,
            web_routes.keys_router,
            web_routes.forms_router,
            web_routes.activity_router,
            web_public.router,
            segments_router,
            templates_router,
            campaigns_router,
            delivery_router,
            tracking_router,
            triggers_router,
        ],
        migrations=[people.MIGRATIONS, "crm_marketing"],
        background=[
            people.run_directory,
            run_audience_consumer,
            run_segment_tailer,
            run_scheduler,
            run_sender,
        ],
        feed_roles=("analyst", "marketer"),
    )
    _document_tokenless(app, TOKENLESS)
    return app


def _document_tokenless(app: FastAPI, routers: tuple[APIRouter, ...]) -> None:
    """The app-wide responses (crm_runtime) promise every operation a 401 (no valid token) and a
    403 (missing role). The routes of ``routers`` take no token: their operations in the OpenAPI
    document lose the 401, and the 403 unless the route declares its own (a site key's origin).
    """
    declared = {
        (route.path_format, method.lower()): {str(code) for code in route.responses}
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for path, operations in schema.get("paths", {}).items():
                for method, operation in operations.items():
                    own = declared.get((path, method))
                    if own is None or not isinstance(operation, dict):
                        continue
                    for code in ("401", "403"):
                        if code not in own:
                            operation.get("responses", {}).pop(code, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
