"""Event payload schemas, one module per context or part of one. Importing registers them."""

from crm_events.schemas import (  # noqa: F401
    identity,
    marketing,
    marketing_campaigns,
    marketing_segments,
    sales,
    sales_billing,
    service,
    service_kb,
    service_routing,
)
