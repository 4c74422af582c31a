"""Tallinn wall-clock formatting and ISO 8601 parsing for the fake Bitrix24.

Bitrix24 renders every timestamp as ISO 8601 with the portal's UTC offset. The fake uses
Tallinn's rules (EET ``+02:00`` in winter, EEST ``+03:00`` in summer, switching on the EU dates)
computed directly, so formatting does not depend on the host's tz database.
"""

from __future__ import annotations

import calendar
import functools
import re
import time
from bisect import bisect_right
from datetime import UTC, datetime, timedelta, timezone

_HOUR = 3600
_DAY = 86400


def _last_sunday_0100_utc(year: int, month: int) -> int:
    """Epoch of 01:00 UTC on the last Sunday of ``month`` (the EU switch-over instant)."""
    last_day = calendar.monthrange(year, month)[1]
    weekday = calendar.weekday(year, month, last_day)  # Monday == 0, Sunday == 6
    day = last_day - (weekday + 1) % 7
    return calendar.timegm((year, month, day, 1, 0, 0, 0, 0, 0))


# Alternating DST start/end instants: an odd bisect position means summer time.
_TRANSITIONS: list[int] = [
    instant
    for year in range(1900, 2200)
    for instant in (_last_sunday_0100_utc(year, 3), _last_sunday_0100_utc(year, 10))
]
_day_names: dict[int, str] = {}


def tallinn_offset(epoch: float) -> int:
    """Tallinn's UTC offset in seconds at ``epoch`` (EU rules applied to every year)."""
    return 3 * _HOUR if bisect_right(_TRANSITIONS, epoch) % 2 else 2 * _HOUR


_CLOCK_MINUTES = [f"T{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]
_CLOCK_SECONDS = [f"{sec:02d}" for sec in range(60)]
_SUFFIX = {2 * _HOUR: "+02:00", 3 * _HOUR: "+03:00"}


def format_ts(epoch: float) -> str:
    """Format an epoch as Bitrix24 does, e.g. ``2026-11-21T12:00:00+02:00``."""
    whole = int(epoch)
    offset = 3 * _HOUR if bisect_right(_TRANSITIONS, whole) % 2 else 2 * _HOUR
    day, seconds = divmod(whole + offset, _DAY)
    name = _day_names.get(day)
    if name is None:
        name = time.strftime("%Y-%m-%d", time.gmtime(day * _DAY))
        _day_names[day] = name
    minute, second = divmod(seconds, 60)
    return name + _CLOCK_MINUTES[minute] + _CLOCK_SECONDS[second] + _SUFFIX[offset]


@functools.cache
def format_date(year: int, month: int, day: int) -> str:
    """A calendar date the way Bitrix24 returns ``date`` fields: UTC midnight in local time,
    as in the reference ``1985-03-14T03:00:00+03:00``."""
    midnight_utc = calendar.timegm((year, month, day, 0, 0, 0, 0, 0, 0))
    offset = tallinn_offset(midnight_utc)
    hours = offset // _HOUR
    return f"{year:04d}-{month:02d}-{day:02d}T0{hours}:00:00+0{hours}:00"


_instant_cache: dict[str, float] = {}
_LOST_PLUS = re.compile(r"(?<=\d) (\d{2}:?\d{2})$")
_CACHE_LIMIT = 2_000_000


def parse_instant(text: str) -> float:
    """Parse an ISO 8601 timestamp (any offset; naive means Tallinn) or ``DD.MM.YYYY[ HH:MM:SS]``
    to an epoch. Raises ``ValueError`` when the text is not a timestamp.

    Results are cached by string, so repeated filter scans over stored timestamps are cheap.
    """
    cached = _instant_cache.get(text)
    if cached is not None:
        return cached
    value = _parse_uncached(text)
    if len(_instant_cache) >= _CACHE_LIMIT:
        _instant_cache.clear()
    _instant_cache[text] = value
    return value


def _parse_uncached(text: str) -> float:
    stripped = _LOST_PLUS.sub(r"+\1", text.strip())  # "+03:00" sent unescaped in a query
    try:
        parsed = datetime.fromisoformat(stripped)
    except ValueError:
        parsed = _parse_russian_style(stripped)
    if parsed.tzinfo is None:
        guess = parsed.replace(tzinfo=UTC).timestamp() - 2 * _HOUR
        parsed = parsed.replace(tzinfo=timezone(timedelta(seconds=tallinn_offset(guess))))
    return parsed.timestamp()


def _parse_russian_style(text: str) -> datetime:
    for pattern in ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y"):
        try:
            return datetime.strptime(text, pattern)
        except ValueError:
            continue
    raise ValueError(f"not a timestamp: {text!r}")


class FakeClock:
    """Real time plus an adjustable offset: the fake portal's own idea of "now"."""

    def __init__(self, offset_seconds: float = 0.0) -> None:
        self.offset_seconds = offset_seconds

    def now(self) -> float:
        """Current fake time as an epoch."""
        return time.time() + self.offset_seconds

    def now_iso(self, skew_seconds: float = 0.0) -> str:
        """Current fake time (plus an optional skew) formatted as Bitrix24 does."""
        return format_ts(self.now() + skew_seconds)
