"""Unit tests of the pure parts: frequency cap, quiet hours, tracking tokens, link rewriting,
trigger episodes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta

from hypothesis import given
from hypothesis import strategies as st

from crm_events.schemas.marketing_campaigns import TriggerRule
from crm_marketing.campaigns.policy import FrequencyCap, QuietHours
from crm_marketing.delivery.messages import advanced
from crm_marketing.tracking import tokens
from crm_marketing.tracking.links import LinkTable, add_pixel, rewrite_html, rewrite_text
from crm_marketing.triggers.domain import decide

KEY = b"k" * 32
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


# --- frequency cap ----------------------------------------------------------------------------


def test_frequency_cap_counts_a_rolling_window() -> None:
    cap = FrequencyCap(limit=2, window=timedelta(days=7))
    sent = [T0 - timedelta(days=8), T0 - timedelta(days=6), T0 - timedelta(hours=1)]
    assert cap.count(sent, T0) == 2
    assert not cap.allows(cap.count(sent, T0))
    assert cap.allows(cap.count(sent, T0 + timedelta(days=1, minutes=1)))  # one aged out
    assert FrequencyCap(0, timedelta(days=1)).allows(10_000)  # 0: no cap


@given(
    limit=st.integers(min_value=1, max_value=5),
    gaps=st.lists(st.integers(min_value=0, max_value=72), min_size=1, max_size=40),
)
def test_frequency_cap_never_lets_more_than_the_limit_into_any_window(
    limit: int, gaps: list[int]
) -> None:
    """Greedy sending under the cap: in every window ending at a send, at most `limit` sends."""
    cap = FrequencyCap(limit=limit, window=timedelta(hours=24))
    sent: list[datetime] = []
    now = T0
    for gap in gaps:
        now += timedelta(hours=gap)
        if cap.allows(cap.count(sent, now)):
            sent.append(now)
    for t in sent:
        assert cap.count(sent, t) <= limit


# --- quiet hours ------------------------------------------------------------------------------


def test_quiet_hours_across_midnight_defer_to_the_local_morning() -> None:
    quiet = QuietHours(time(21, 0), time(8, 0), "UTC")
    berlin_late = datetime(2026, 3, 10, 21, 30, tzinfo=UTC)  # 22:30 in Berlin (CET)
    assert quiet.defer_until(berlin_late, "Europe/Berlin") == datetime(
        2026, 3, 11, 7, 0, tzinfo=UTC
    )
    early = datetime(2026, 3, 11, 5, 0, tzinfo=UTC)  # 06:00 in Berlin
    assert quiet.defer_until(early, "Europe/Berlin") == datetime(2026, 3, 11, 7, 0, tzinfo=UTC)
    assert quiet.defer_until(datetime(2026, 3, 11, 12, 0, tzinfo=UTC), "Europe/Berlin") is None
    # no zone, or an unknown one: the default
    assert quiet.defer_until(berlin_late, None) == datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
    assert quiet.defer_until(berlin_late, "Mars/Olympus") == datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
    # New York at 21:30 UTC is 17:30 local (EDT from March 8, 2026): fine
    assert quiet.defer_until(berlin_late, "America/New_York") is None


def test_quiet_hours_within_a_day_and_none() -> None:
    lunch = QuietHours(time(12, 0), time(14, 0))
    assert lunch.defer_until(T0, "UTC") == T0.replace(hour=14)
    assert lunch.defer_until(T0.replace(hour=14), "UTC") is None
    assert QuietHours(None, None).defer_until(T0, "UTC") is None
    assert QuietHours(time(9, 0), time(9, 0)).defer_until(T0, "UTC") is None


def test_quiet_hours_end_on_a_dst_change_day() -> None:
    # Europe/Berlin springs forward on 2026-03-29 at 02:00 -> 03:00; quiet 01:00-02:30 ends in
    # the gap: the deferred time is a real instant after now.
    quiet = QuietHours(time(1, 0), time(2, 30))
    now = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # 01:30 CET
    until = quiet.defer_until(now, "Europe/Berlin")
    assert until is not None and until > now and until <= datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


@given(
    minutes=st.integers(min_value=0, max_value=60 * 24 * 366),
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", None]),
)
def test_quiet_hours_defer_to_a_time_that_is_not_quiet(minutes: int, zone: str | None) -> None:
    quiet = QuietHours(time(21, 0), time(8, 0), "Europe/Paris")
    now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    until = quiet.defer_until(now, zone)
    if until is not None:
        assert now <= until <= now + timedelta(hours=11, minutes=1)
        assert quiet.defer_until(until, zone) is None


# --- tokens -----------------------------------------------------------------------------------


def test_tokens_round_trip_and_bind_their_kind() -> None:
    mid = uuid.uuid4()
    token = tokens.sign(KEY, "c", mid, 7)
    assert tokens.verify(KEY, "c", token) == (mid, 7)
    assert tokens.verify(KEY, "o", token) is None  # a click token is no open token
    assert tokens.verify(b"x" * 32, "c", token) is None  # another key
    assert tokens.verify(KEY, "c", token + "A") is None
    assert tokens.verify(KEY, "c", "") is None
    assert tokens.verify(KEY, "c", "%%%") is None
    assert tokens.verify(KEY, "c", "A" * 500) is None


@given(
    index=st.integers(min_value=0, max_value=65535),
    position=st.integers(min_value=0, max_value=41),
    bit=st.integers(min_value=0, max_value=5),
)
def test_any_tampered_token_is_refused(index: int, position: int, bit: int) -> None:
    mid = uuid.UUID(int=12345)
    token = tokens.sign(KEY, "c", mid, index)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    pos = position % len(token)
    flipped = alphabet[alphabet.index(token[pos]) ^ (1 << bit)]
    tampered = token[:pos] + flipped + token[pos + 1 :]
    found = tokens.verify(KEY, "c", tampered)
    # the last character carries 2 padding bits: flipping those leaves the bytes as they were
    assert found is None or found == (mid, index)


# --- links ------------------------------------------------------------------------------------


def test_links_are_rewritten_once_per_url_and_ours_are_left_alone() -> None:
    links = LinkTable(keep=lambda url: not url.startswith("https://crm/t/"))
    html = (
        '<p><a href="https://shop.example/p?a=1&amp;b=2">Shop</a> '
        "<a class='x' href='https://shop.example/help'>Help</a> "
        '<a href="mailto:hi@shop.example">Mail</a> <a href="https://crm/t/u/tok">Unsub</a> '
        '<a href="https://shop.example/p?a=1&b=2">Again</a></p></body>'
    )
    out = rewrite_html(html, links, lambda i: f"https://crm/t/c/{i}")
    assert links.urls == ["https://shop.example/p?a=1&b=2", "https://shop.example/help"]
    assert out.count("https://crm/t/c/0") == 2 and "https://crm/t/c/1" in out
    assert "mailto:hi@shop.example" in out and "https://crm/t/u/tok" in out
    text = rewrite_text(
        "See https://shop.example/help. Or https://new.example/x", links, lambda i: f"<{i}>"
    )
    assert text == "See <1>. Or <2>"
    assert links.urls[2] == "https://new.example/x"
    assert add_pixel(out, "https://crm/t/o/x.gif").endswith('style="display:none"></body>')
    assert add_pixel("<p>hi</p>", "P").startswith("<p>hi</p><img")


def test_status_only_moves_forward() -> None:
    assert advanced("sent", "opened") == "opened"
    assert advanced("clicked", "opened") == "clicked"
    assert advanced("bounced", "opened") == "bounced"


# --- trigger episodes -------------------------------------------------------------------------


RULE = TriggerRule(
    category="phones",
    min_views=3,
    within_seconds=7 * 86400,
    template_id="t",
    channel="email",
    cooldown_seconds=86400,
)


def test_an_episode_starts_once_and_ends_when_the_customer_buys_or_stops() -> None:
    start = decide(RULE, views=3, purchased=False, episode_open=False, last_fired_at=None, now=T0)
    assert start.step == "start" and start.fire
    assert (
        decide(RULE, views=9, purchased=False, episode_open=True, last_fired_at=T0, now=T0).step
        == "stay"
    )
    bought = decide(RULE, views=9, purchased=True, episode_open=True, last_fired_at=T0, now=T0)
    assert bought.step == "end" and bought.end_reason == "purchased"
    faded = decide(RULE, views=2, purchased=False, episode_open=True, last_fired_at=T0, now=T0)
    assert faded.step == "end" and faded.end_reason == "below_threshold"
    assert (
        decide(RULE, views=2, purchased=False, episode_open=False, last_fired_at=None, now=T0).step
        == "stay"
    )


def test_a_new_episode_within_the_cooldown_does_not_fire() -> None:
    soon = decide(
        RULE,
        views=3,
        purchased=False,
        episode_open=False,
        last_fired_at=T0,
        now=T0 + timedelta(hours=2),
    )
    assert soon.step == "start" and not soon.fire
    later = decide(
        RULE,
        views=3,
        purchased=False,
        episode_open=False,
        last_fired_at=T0,
        now=T0 + timedelta(days=2),
    )
    assert later.fire
