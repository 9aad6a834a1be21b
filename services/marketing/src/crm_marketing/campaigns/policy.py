"""Pure sending policies: the per-customer frequency cap and quiet hours (no I/O here)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@dataclass(frozen=True)
class FrequencyCap:
    """At most ``limit`` marketing messages per customer in any rolling ``window`` (0: no cap)."""

    limit: int
    window: timedelta

    def allows(self, recent: int) -> bool:
        """May one more go out, given ``recent`` messages counted in the window up to now?"""
        return self.limit <= 0 or recent < self.limit

    def count(self, sent_at: Iterable[datetime], now: datetime) -> int:
        start = now - self.window
        return sum(1 for t in sent_at if start < t <= now)


@dataclass(frozen=True)
class QuietHours:
    """No messages between ``start`` and ``end`` local time (wrapping past midnight if start > end).

    ``start == end`` or either unset: no quiet hours.
    """

    start: time | None
    end: time | None
    default_zone: str = "UTC"

    def zone(self, name: str | None) -> ZoneInfo:
        for candidate in (name, self.default_zone):
            if candidate:
                try:
                    return ZoneInfo(candidate)
                except (ZoneInfoNotFoundError, ValueError):
                    continue
        return ZoneInfo("UTC")

    def defer_until(self, now: datetime, zone_name: str | None) -> datetime | None:
        """The end of the quiet period ``now`` falls in (UTC), or None when sending is fine."""
        if self.start is None or self.end is None or self.start == self.end:
            return None
        zone = self.zone(zone_name)
        local = now.astimezone(zone)
        t = local.time().replace(tzinfo=None)
        if self.start < self.end:  # e.g. 12:00-14:00 the same day
            if not (self.start <= t < self.end):
                return None
            end_day = local.date()
        else:  # e.g. 21:00-08:00 across midnight
            if self.end <= t < self.start:
                return None
            end_day = local.date() if t < self.end else local.date() + timedelta(days=1)
        end = datetime.combine(end_day, self.end, tzinfo=zone)
        # A wall time that does not exist (DST gap) round-trips through UTC to a real one.
        end_utc = end.astimezone(UTC)
        return end_utc if end_utc > now else now

    def next_allowed(self, now: datetime, zone_name: str | None) -> datetime:
        return self.defer_until(now, zone_name) or now
