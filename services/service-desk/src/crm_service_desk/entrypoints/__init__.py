"""Service-desk entrypoints package."""
