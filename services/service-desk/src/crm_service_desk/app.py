"""Composition root of the service desk: its settings, routers, inbound mail and jobs."""

from __future__ import annotations

from fastapi import FastAPI

from crm_runtime import people
from crm_runtime.http.app import create_service_app
from crm_runtime.settings import Settings
from crm_service_desk import inbound, jobs
from crm_service_desk.config import DeskSettings
from crm_service_desk.entrypoints.api import agents as agents_api
from crm_service_desk.entrypoints.api import portal, tickets, views
from crm_service_desk.entrypoints.api import routing as routing_api
from crm_service_desk.entrypoints.api import sla as sla_api
from crm_service_desk.kb.api import ROUTERS as KB_ROUTERS


def create_app(settings: Settings | None = None, desk: DeskSettings | None = None) -> FastAPI:
    desk = desk or DeskSettings()
    app = create_service_app(
        settings or Settings.for_service("service-desk"),
        title="CRM Service Desk",
        description="Tickets, routing, SLAs and escalation, CSAT and the knowledge base. "
        "Every change is a `crm.service.*` event.",
        routers=[
            tickets.router,
            portal.portal_router,
            portal.customer_router,
            views.router,
            *KB_ROUTERS,
            agents_api.agents_router,
            agents_api.queues_router,
            routing_api.router,
            sla_api.router,
        ],
        migrations=[people.MIGRATIONS, "crm_service_desk"],
        background=[people.run_directory, inbound.background(desk), jobs.background(desk)],
        feed_roles=("analyst", "service_manager"),
    )
    app.state.desk = desk
    return app
