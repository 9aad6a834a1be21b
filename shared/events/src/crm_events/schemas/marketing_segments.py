"""Event payloads of part of a context (filled as the context is built)."""

from __future__ import annotations
