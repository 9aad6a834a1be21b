"""Event payload schemas, one module per bounded context. Importing registers them."""

from crm_events.schemas import sales  # noqa: F401
