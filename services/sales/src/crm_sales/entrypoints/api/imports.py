"""/imports: CSV upload of contacts and leads."""

from __future__ import annotations

from fastapi import APIRouter

imports_router = APIRouter(prefix="/imports", tags=["import"])
