"""Every analytics projection, in the order the worker and the rebuild apply them, and the tables
they own (every table the crm_analytics migrations create)."""

from __future__ import annotations

import re

from crm_analytics.customers import CustomerProfileProjection
from crm_analytics.marketing import MarketingAnalyticsProjection
from crm_analytics.sales import SalesAnalyticsProjection
from crm_analytics.service import ServiceAnalyticsProjection
from crm_analytics.timeline import TimelineProjection
from crm_runtime.consumer import Projection
from crm_runtime.db import Conn, package_migrations


def all_projections() -> list[Projection]:
    """A new projection joins this list (the worker and `crm analytics rebuild` both read it)."""
    return [
        TimelineProjection(),
        CustomerProfileProjection(),
        SalesAnalyticsProjection(),
        ServiceAnalyticsProjection(),
        MarketingAnalyticsProjection(),
    ]


_CREATED = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([a-z_][a-z0-9_]*)", re.I)


async def projection_tables(conn: Conn) -> list[str]:
    """The tables the analytics migrations created that exist now (views and dropped tables
    excluded), in name order."""
    names = {
        m.group(1).lower()
        for _, sql in package_migrations("crm_analytics")
        for m in _CREATED.finditer(sql)
    }
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' AND c.relname = ANY($1::text[])"
        " AND pg_table_is_visible(c.oid) ORDER BY c.relname",
        sorted(names),
    )
    return [r["relname"] for r in rows]
