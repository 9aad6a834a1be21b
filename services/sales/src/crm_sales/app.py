"""Composition root of the sales service: its settings, routers and migrations."""

from __future__ import annotations

from fastapi import FastAPI

from crm_runtime.http.app import create_service_app
from crm_runtime.settings import Settings
from crm_sales.application.identity import run_identity_desk
from crm_sales.entrypoints.api import billing, deals, directory, imports, leads, work
from crm_sales.jobs import run_scheduler


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings.for_service("sales"),
        title="CRM Sales",
        description="Leads, contacts, accounts, deals and pipeline, quotes, invoices and payments. "
        "Every change is a `crm.sales.*` event.",
        routers=[
            leads.router,
            directory.contacts_router,
            directory.accounts_router,
            directory.fields_router,
            deals.pipelines_router,
            deals.deals_router,
            deals.rates_router,
            billing.products_router,
            billing.quotes_router,
            billing.invoices_router,
            imports.imports_router,
            work.reps_router,
            work.rules_router,
            work.activities_router,
            work.tasks_router,
        ],
        migrations=["crm_sales"],
        background=[run_scheduler, run_identity_desk],
        feed_roles=("analyst", "sales_manager"),
    )
