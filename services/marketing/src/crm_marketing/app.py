"""Composition root of the marketing service: its settings, routers, consumers and jobs."""

from __future__ import annotations

from fastapi import FastAPI

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


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
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
