"""Composition root of the service-desk service (a skeleton for now: health, metrics, feed)."""

from __future__ import annotations

from fastapi import FastAPI

from crm_runtime.http.app import create_service_app
from crm_runtime.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings.for_service("service-desk"),
        title="CRM Service Desk",
        description="Tickets, routing, SLAs and escalation, CSAT and the knowledge base. "
        "Every change is a `crm.service.*` event.",
        routers=[],
        migrations=["crm_service_desk"],
        feed_roles=("analyst", "service_manager"),
    )
