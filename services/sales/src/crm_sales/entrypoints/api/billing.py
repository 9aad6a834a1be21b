"""/products, /quotes, /invoices (products and price book, quotes, invoices and payments)."""

from __future__ import annotations

from fastapi import APIRouter

products_router = APIRouter(prefix="/products", tags=["products"])
quotes_router = APIRouter(prefix="/quotes", tags=["quotes"])
invoices_router = APIRouter(prefix="/invoices", tags=["invoices"])
