"""Times on the command line and on the screen.

`--since 1d` style durations (s, m, h, d; combined as in `1h30m`) become the ISO 8601 UTC timestamp that
long ago; ISO timestamps with a zone are passed to the API as they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(?:\d+[smhd])+")
_PART = re.compile(r"(\d+)([smhd])")


def parse_duration(text: str) -> timedelta | None:
    """`90s`, `15m`, `2h`, `1d`, `1h30m` -> a timedelta; None when `text` is not a duration."""
    text = text.strip().lower()
    if not _DURATION.fullmatch(text):
        return None
    return timedelta(seconds=sum(int(n) * UNITS[unit] for n, unit in _PART.findall(text)))


def to_timestamp(text: str, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> str:
    """A `--since`/`--until` value as the API wants it. Raises ValueError with a message for the user."""
    duration = parse_duration(text)
    if duration is not None:
        return (now() - duration).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        stamp = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration like 30m, 12h, 1d nor an ISO 8601 timestamp "
                         "like 2026-11-25T00:00:00Z") from None
    if stamp.tzinfo is None:
        raise ValueError(f"{text!r} needs a time zone (add Z for UTC)")
    return text.strip()


def parse_time(value: str | None) -> datetime | None:
    """An API timestamp, or None when there is none or it cannot be read."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def short_time(value: str | None) -> str:
    """`2026-11-25 20:33:05Z` from an API timestamp (UTC, to the second)."""
    stamp = parse_time(value)
    if stamp is None:
        return value or "-"
    return stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def clock_time(value: str | None) -> str:
    """`20:33:05.985` from an API timestamp (UTC): the timeline's column."""
    stamp = parse_time(value)
    if stamp is None:
        return value or "-"
    return stamp.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]


def seconds(value: float | None) -> str:
    """`3.1s`, `2m05s`, `1h02m`: a duration for people."""
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    whole = round(value)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
