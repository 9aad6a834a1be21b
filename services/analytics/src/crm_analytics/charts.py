"""Chart-ready series of the sales analytics: ``{"title", "x": {"label", "unit"}, "y": {"label",
"unit"}, "series": [{"name", "points": [[x, y], ...]}]}``. Amounts are in major units of the base
currency; rates are shares between 0 and 1 (null where there is nothing to divide)."""

from __future__ import annotations

from typing import Any

from crm_analytics.timeline import MINOR_DIGITS

Point = list[Any]


def chart(
    title: str,
    x: tuple[str, str | None],
    y: tuple[str, str | None],
    series: list[tuple[str, list[Point]]],
) -> dict[str, Any]:
    return {
        "title": title,
        "x": {"label": x[0], "unit": x[1]},
        "y": {"label": y[0], "unit": y[1]},
        "series": [{"name": name, "points": points} for name, points in series],
    }


def major(amount_minor: int, currency: str) -> float:
    digits = MINOR_DIGITS.get(currency, 2)
    return round(amount_minor / float(10**digits), digits)


def pipeline_by_stage(rows: list[dict[str, Any]], currency: str) -> dict[str, Any]:
    return chart(
        "Open pipeline by stage",
        ("stage", None),
        ("amount", currency),
        [
            ("amount", [[r["key"], major(r["amount_base_minor"], currency)] for r in rows]),
            ("weighted", [[r["key"], major(r["weighted_base_minor"], currency)] for r in rows]),
        ],
    )


def forecast(year: int, quarters: list[dict[str, Any]], currency: str) -> dict[str, Any]:
    def points(field: str) -> list[Point]:
        return [[q["quarter"][-2:], major(q[field], currency)] for q in quarters]

    return chart(
        f"Forecast {year} against {year - 1}",
        ("quarter", None),
        ("amount", currency),
        [
            (f"{year} forecast", points("forecast_base_minor")),
            (f"{year} won", points("won_base_minor")),
            (f"{year - 1} won", points("last_year_won_base_minor")),
        ],
    )


def win_rate(months: list[dict[str, Any]]) -> dict[str, Any]:
    return chart(
        "Win rate by month of closing",
        ("month", None),
        ("win rate", "ratio"),
        [("win rate", [[m["month"], m["win_rate"]] for m in months])],
    )


def stage_conversion(pipeline_id: str, stages: list[dict[str, Any]]) -> dict[str, Any]:
    return chart(
        f"Stage conversion ({pipeline_id})",
        ("stage", None),
        ("conversion", "ratio"),
        [("conversion", [[s["stage"], s["conversion"]] for s in stages])],
    )
