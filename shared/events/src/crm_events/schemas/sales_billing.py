"""Sales context events for products, quotes, invoices and payments (``crm.sales.*``)."""

from __future__ import annotations
