"""Chart-ready series: shape and values of pipeline by stage, forecast against last year, win
rate per month and stage conversion (now and as of a past time)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from an_helpers import feed, lost, moved, opened, won

from crm_analytics.app import create_app
from crm_runtime.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def analytics(
    fresh_db: Callable[..., Any], settings_for: Callable[..., Settings]
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    url = await fresh_db("crm_analytics")
    app = create_app(settings_for("analytics", database_url=url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as c:
            yield c, app.state.ctx


def axis(label: str, unit: str | None) -> dict[str, Any]:
    return {"label": label, "unit": unit}


async def test_chart_series(
    analytics: tuple[httpx.AsyncClient, Any], token: Callable[..., str]
) -> None:
    client, ctx = analytics
    a = str(uuid.uuid4())
    await feed(
        ctx.pool,
        [
            opened("L1", a, "2025-01-05T00:00:00"),
            moved("L1", a, "2025-02-10T00:00:00", "identified", "won", 100),
            won("L1", a, "2025-02-10T00:00:00"),
            opened("D1", a, "2026-01-10T00:00:00", amount_minor=50_000),
            moved("D1", a, "2026-01-20T00:00:00", "identified", "demo", 60),
            moved("D1", a, "2026-02-01T00:00:00", "demo", "won", 100),
            won("D1", a, "2026-02-01T00:00:00", 50_000),
            opened(
                "D2",
                a,
                "2026-01-12T00:00:00",
                stage="requirements",
                probability=40,
                currency="USD",
                exchange_rate="0.9",
                expected_close="2026-03-15",
            ),
            opened("D3", a, "2026-01-15T00:00:00"),
            moved("D3", a, "2026-02-05T00:00:00", "identified", "lost", 0),
            lost("D3", a, "2026-02-05T00:00:00"),
            opened("D4", a, "2026-03-01T00:00:00"),
            lost("D4", a, "2026-03-20T00:00:00"),  # lost straight from its first stage
        ],
    )
    h = {"Authorization": f"Bearer {token('sales_manager')}"}

    async def chart(name: str, **params: Any) -> Any:
        r = await client.get(f"/analytics/charts/{name}", params=params, headers=h)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"title", "x", "y", "series"}
        assert all(set(s) == {"name", "points"} for s in body["series"])
        assert all(len(p) == 2 for s in body["series"] for p in s["points"])
        return body

    assert await chart("pipeline-by-stage") == {
        "title": "Open pipeline by stage",
        "x": axis("stage", None),
        "y": axis("amount", "EUR"),
        "series": [
            {"name": "amount", "points": [["requirements", 900.0]]},  # 100,000 USD cents x 0.9
            {"name": "weighted", "points": [["requirements", 360.0]]},
        ],
    }
    then = await chart("pipeline-by-stage", as_of="2026-01-25T00:00:00Z")
    assert then["series"][0]["points"] == [
        ["demo", 500.0], ["identified", 1000.0], ["requirements", 900.0],
    ]  # fmt: skip

    f = await chart("forecast", year=2026)
    assert (f["title"], f["x"], f["y"]) == (
        "Forecast 2026 against 2025",
        axis("quarter", None),
        axis("amount", "EUR"),
    )
    assert f["series"] == [
        {"name": "2026 forecast", "points": [["Q1", 860.0], ["Q2", 0.0], ["Q3", 0.0], ["Q4", 0.0]]},
        {"name": "2026 won", "points": [["Q1", 500.0], ["Q2", 0.0], ["Q3", 0.0], ["Q4", 0.0]]},
        {"name": "2025 won", "points": [["Q1", 1000.0], ["Q2", 0.0], ["Q3", 0.0], ["Q4", 0.0]]},
    ]

    wr = await chart("win-rate", until="2026-03", months=3)
    assert (wr["x"], wr["y"]) == (axis("month", None), axis("win rate", "ratio"))
    assert wr["series"] == [
        {"name": "win rate", "points": [["2026-01", None], ["2026-02", 0.5], ["2026-03", 0.0]]}
    ]
    last_year = await chart("win-rate", until="2025-02", months=2)
    assert last_year["series"][0]["points"] == [["2025-01", None], ["2025-02", 1.0]]
    early_feb = await chart("win-rate", as_of="2026-02-03T00:00:00Z", months=2)
    assert early_feb["series"][0]["points"] == [["2026-01", None], ["2026-02", 1.0]]
    bad = await client.get("/analytics/charts/win-rate", params={"until": "2026-13"}, headers=h)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "until"
    # an as_of that stands in for the year or the month must fall in their range (was a 500)
    for path, at in [
        ("forecast", "9999-12-31T23:59:59Z"),
        ("forecast", "0001-01-01T00:00:00Z"),
        ("win-rate", "0001-01-01T00:00:00Z"),
        ("win-rate", "9999-12-31T00:00:00Z"),
    ]:
        r = await client.get(f"/analytics/charts/{path}", params={"as_of": at}, headers=h)
        assert r.status_code == 422, (path, at, r.text)
        assert [e["field"] for e in r.json()["errors"]] == ["as_of"]
    given = await client.get(
        "/analytics/sales/forecast", params={"as_of": "9999-12-31T23:59:59Z"}, headers=h
    )
    assert given.status_code == 422 and "2000-2100" in given.json()["errors"][0]["reason"]
    assert (await chart("forecast", as_of="9999-12-31T23:59:59Z", year=2026))["series"]

    conv = await chart("stage-conversion")
    assert (conv["title"], conv["y"]) == ("Stage conversion (default)", axis("conversion", "ratio"))
    assert conv["series"] == [
        {
            "name": "conversion",
            "points": [
                ["identified", 0.5],  # 2 of 4 moved on; a move to lost is no conversion
                ["requirements", 0.0],
                ["demo", 1.0],
                ["lost", None],  # closing stages convert to nothing
                ["won", None],
            ],
        }
    ]
