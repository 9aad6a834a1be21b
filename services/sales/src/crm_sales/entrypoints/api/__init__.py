"""Sales HTTP API: one router per resource."""
