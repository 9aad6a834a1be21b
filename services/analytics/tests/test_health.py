"""The customer health score: explainable, bounded, and moved by what the docstring says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from crm_analytics.customers import health

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def test_recent_touch_and_a_won_deal() -> None:
    h = health(
        NOW, NOW - timedelta(days=3), open_deals=1, won_deals=1, lost_deals=0, overdue_invoices=0
    )
    assert h.score == 100 and len(h.reasons) == 3


def test_silence_and_overdue_money_pull_it_down() -> None:
    h = health(NOW, None, open_deals=0, won_deals=0, lost_deals=2, overdue_invoices=1)
    assert h.score == 0  # 60 - 30 - 10 - 20
    assert "never touched (-30)" in h.reasons
    assert any("overdue" in r for r in h.reasons)


@given(
    days=st.one_of(st.none(), st.integers(0, 2000)),
    open_deals=st.integers(0, 5),
    won=st.integers(0, 5),
    lost=st.integers(0, 5),
    overdue=st.integers(0, 10),
)
def test_always_between_0_and_100(
    days: int | None, open_deals: int, won: int, lost: int, overdue: int
) -> None:
    last = None if days is None else NOW - timedelta(days=days)
    h = health(NOW, last, open_deals, won, lost, overdue)
    assert 0 <= h.score <= 100 and h.reasons
    if overdue:
        better = health(NOW, last, open_deals, won, lost, 0)
        assert better.score >= h.score


def test_links_name_the_source_record() -> None:
    import uuid

    from crm_analytics.timeline import link
    from crm_events import CloudEvent

    def event(stream: str) -> CloudEvent:
        return CloudEvent(
            id=uuid.uuid4(), source="/crm/sales", type="crm.sales.activity.logged", time=NOW,
            streamid=stream, streamversion=1, schemaversion=1, data={},
        )  # fmt: skip

    assert link(event("activity-42")) == "sales:/activities/42"
    assert link(event("deal-7")) == "sales:/deals/7"
