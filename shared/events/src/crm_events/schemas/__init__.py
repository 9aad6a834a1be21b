"""Event payload schemas, one module per context (sales in two). Importing registers them."""

from crm_events.schemas import sales, sales_billing  # noqa: F401
