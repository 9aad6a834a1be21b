"""The role x endpoint matrix of the analytics API: analysts and managers read analytics (and
marketers marketing's); every department reads every customer's timeline and 360 view, sales
reps only those of the customers they own; everything else is 403 (and 401 without a token)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from an_helpers import ev, feed, opened

from crm_analytics.app import create_app
from crm_runtime.settings import Settings

pytestmark = pytest.mark.integration

CALLERS: dict[str, tuple[str, str]] = {
    "owner": ("sales_rep", "alice"),
    "other_rep": ("sales_rep", "bob"),
    "sales_manager": ("sales_manager", "meg"),
    "service_manager": ("service_manager", "sue"),
    "admin": ("admin", "root"),
    "analyst": ("analyst", "ann"),
    "marketer": ("marketer", "mark"),
    "service_agent": ("service_agent", "sam"),
}
READERS = {"sales_manager", "service_manager", "admin", "analyst"}
MARKETING = READERS | {"marketer"}
DEPARTMENTS = READERS | {"marketer", "service_agent"}  # every customer's timeline
OWN = DEPARTMENTS | {"owner"}  # alice's customer
BOBS = DEPARTMENTS | {"other_rep"}  # bob's customer
REPS_OWN = {"owner", "other_rep"}

MATRIX: list[tuple[str, set[str]]] = [
    ("/analytics/sales/pipeline", READERS),
    ("/analytics/sales/pipeline?group_by=owner&as_of=2026-01-01T00:00:00Z", READERS),
    ("/analytics/sales/forecast", READERS),
    ("/analytics/sales/win-rate", READERS),
    ("/analytics/sales/stages", READERS),
    ("/analytics/sales/coverage", READERS),
    ("/analytics/sales/cross-sell/rules", READERS),
    ("/analytics/charts/pipeline-by-stage", READERS),
    ("/analytics/charts/forecast", READERS),
    ("/analytics/charts/win-rate", READERS),
    ("/analytics/charts/stage-conversion", READERS),
    ("/customers/{mine}/timeline", OWN),
    ("/customers/{mine}", OWN),
    ("/customers/{mine}?as_of=2026-06-01T00:00:00Z", OWN),
    ("/customers/{mine}/suggestions", OWN),
    ("/customers/{alias}/timeline", OWN),  # bob's, merged into alice's: alice's customer now
    ("/customers/{alias}", OWN),
    ("/customers/{theirs}/timeline", BOBS),
    ("/customers/{theirs}", BOBS),
    ("/customers/{theirs}/suggestions", BOBS),
    ("/customers/{unknown}/timeline", DEPARTMENTS),  # nobody owns it: not a rep's
    ("/customers/{mine}/churn-risk", OWN),
    ("/customers/{theirs}/churn-risk", BOBS),
    ("/analytics/service/ticket-spikes", READERS),
    ("/analytics/service/response-times", READERS),
    ("/analytics/service/sla", READERS),
    ("/analytics/service/csat", READERS),
    ("/analytics/marketing/campaigns/unknown-c1/funnel", MARKETING),
    ("/analytics/marketing/open-rates", MARKETING),
    ("/analytics/marketing/leads-by-source", MARKETING),
    ("/analytics/customers/at-risk", READERS | REPS_OWN),  # a rep: its own customers
]


@pytest.fixture
async def client(
    fresh_db: Callable[..., Any], settings_for: Callable[..., Settings]
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    url = await fresh_db("crm_analytics")
    app = create_app(settings_for("analytics", database_url=url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as c:
            yield c, app.state.ctx


async def test_role_endpoint_matrix(
    client: tuple[httpx.AsyncClient, Any], token: Callable[..., str]
) -> None:
    http, ctx = client
    ids = {k: str(uuid.uuid4()) for k in ("mine", "alias", "theirs", "unknown")}

    def contact(key: str, owner: str) -> Any:
        c = ids[key]
        data = {"contact_id": key, "customer_id": c, "details": {"last_name": key},
                "owner_id": owner}  # fmt: skip
        return ev("crm.sales.contact.created", c, "2026-01-01T00:00:00", data)

    await feed(
        ctx.pool,
        [
            contact("mine", "alice"),
            contact("alias", "bob"),  # bob's until merged into alice's contact
            contact("theirs", "bob"),
            opened("D1", ids["mine"], "2026-01-02T00:00:00"),
            ev(
                "crm.sales.contact.merged",
                ids["mine"],
                "2026-02-01T00:00:00",
                {
                    "contact_id": "mine",
                    "customer_id": ids["mine"],
                    "merged_id": "alias",
                    "merged_customer_id": ids["alias"],
                    "merge_id": "m1",
                    "absorbed": {},
                    "absorbed_fields": [],
                },
            ),
        ],
    )
    wrong: list[str] = []
    for template, allowed in MATRIX:
        path = template.format(**ids)
        for name, (role, user) in CALLERS.items():
            r = await http.get(path, headers={"Authorization": f"Bearer {token(role, user=user)}"})
            ok = r.status_code not in (401, 403)
            if ok != (name in allowed):
                wrong.append(f"GET {template} as {name}: {r.status_code}")
            if ok and r.status_code >= 400 and "unknown" not in template:
                wrong.append(f"GET {template} as {name}: {r.status_code} {r.text[:200]}")
        if (await http.get(path)).status_code != 401:
            wrong.append(f"GET {template} without a token: not 401")
    assert wrong == [], "\n".join(wrong)
    analyst = {"Authorization": f"Bearer {token('analyst')}"}
    assert (await http.get(f"/customers/{ids['unknown']}", headers=analyst)).status_code == 404
