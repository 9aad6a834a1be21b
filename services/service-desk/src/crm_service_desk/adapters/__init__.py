"""Service-desk adapters package."""
