"""Sales entrypoints: the HTTP API and the process commands."""
