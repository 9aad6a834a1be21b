"""Composition root of the marketing service (a skeleton for now: health, metrics, event feed)."""

from __future__ import annotations

from fastapi import FastAPI

from crm_runtime.http.app import create_service_app
from crm_runtime.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings.for_service("marketing"),
        title="CRM Marketing",
        description="Audience, consent, segments, campaigns, templates, web activity and triggers. "
        "Every change is a `crm.marketing.*` event.",
        routers=[],
        migrations=["crm_marketing"],
        feed_roles=("analyst", "marketer"),
    )
