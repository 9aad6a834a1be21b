"""Service-desk application package."""
