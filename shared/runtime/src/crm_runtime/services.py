"""The platform's services: what `crm up`, `crm serve` and `crm relay` start (by import path)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from crm_runtime.settings import DEFAULT_PORTS


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    context: str
    app_factory: str  # "module:function" returning a FastAPI app
    migrations: str  # package whose migrations/*.sql the service applies
    relays: bool  # does it record events of its own?

    @property
    def port(self) -> int:
        return DEFAULT_PORTS[self.name]

    def load_factory(self) -> Any:
        module, _, attr = self.app_factory.partition(":")
        return getattr(importlib.import_module(module), attr)


SERVICES: dict[str, ServiceSpec] = {
    s.name: s
    for s in (
        ServiceSpec("sales", "sales", "crm_sales.app:create_app", "crm_sales", True),
        ServiceSpec(
            "marketing", "marketing", "crm_marketing.app:create_app", "crm_marketing", True
        ),
        ServiceSpec(
            "service-desk", "service", "crm_service_desk.app:create_app", "crm_service_desk", True
        ),
        ServiceSpec(
            "analytics", "analytics", "crm_analytics.app:create_app", "crm_analytics", False
        ),
    )
}
