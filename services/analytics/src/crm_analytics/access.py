"""Who reads what in analytics.

- Analytics (``/analytics/...``): analysts and managers (sales_manager, service_manager; admin);
  marketing analytics also marketers (the marketing department's own figures).
- A customer's timeline, 360 view, churn risk and suggestions — the collaborative CRM every
  department sees: analysts, managers, marketers and service agents for every customer (their
  work is not owned per customer), and sales reps for the customers they own (the owner of the
  customer's profile in ``customers``; for merged customers, the profile the 360 shows).
  Every other role and case: 403.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Depends

from crm_runtime.db import Conn
from crm_runtime.errors import Forbidden
from crm_runtime.http.auth import Principal, require

ANALYSTS = ("analyst", "sales_manager", "service_manager")  # and admin, always
DEPARTMENTS = (*ANALYSTS, "marketer", "service_agent")  # read every customer's timeline

AnalyticsReader = Annotated[Principal, Depends(require(*ANALYSTS))]
CustomerReader = Annotated[Principal, Depends(require(*DEPARTMENTS, "sales_rep"))]

_RANK = {"contact": 0, "account": 1, "lead": 2}


def main_profile(people: Sequence[Any], root: str) -> Any:
    """The profile that speaks for a customer: the standing id's, a contact's over a lead's."""
    return min(people, key=lambda p: (p["customer_id"] != root, _RANK.get(p["kind"], 3)))


async def check_customer(conn: Conn, user: Principal, root: str, ids: list[str]) -> None:
    """Raise Forbidden unless ``user`` may read this customer (``ids``: it and its merged ids)."""
    if user.has(*DEPARTMENTS):
        return
    people = await conn.fetch(
        "SELECT customer_id, kind, owner_id FROM customers WHERE customer_id = ANY($1::text[])",
        ids,
    )
    if not people or main_profile(people, root)["owner_id"] != user.user_id:
        raise Forbidden("a sales rep reads only the customers they own")
