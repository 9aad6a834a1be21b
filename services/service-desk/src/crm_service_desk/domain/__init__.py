"""Service-desk domain package."""
