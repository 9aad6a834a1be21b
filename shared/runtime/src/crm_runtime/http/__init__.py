"""The HTTP skeleton every service uses (FastAPI)."""
