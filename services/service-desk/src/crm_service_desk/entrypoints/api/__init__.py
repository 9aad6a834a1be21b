"""Service-desk entrypoints api package."""
