"""How far a resync got, and how long the rest should take under the CRM's request rate.

The engine reports ``(entity, records done, records counted)`` per entity; the adapter counts its
requests. :class:`ResyncEstimate` turns both into one line an operator can read: records and
requests so far, and the time left. Under a rate limit the time left is the requests still needed
(extrapolated from requests per record so far) divided by the configured rate; without one, or
when the work itself is slower, it is the time per record so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class ResyncEstimate:
    """Progress of one resync across its entities."""

    rate_per_second: float  # the configured request rate (0: unlimited)
    clock: Callable[[], float] = time.monotonic
    done: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int | None] = field(default_factory=dict)
    requests: int = 0
    _started: float | None = None
    _requests_at_start: int | None = None

    def update(self, entity: str, done: int, total: int | None, requests_made: int) -> None:
        """Record the engine's report for ``entity`` and the adapter's request counter."""
        if self._started is None:
            self._started = self.clock()
            self._requests_at_start = requests_made
        self.done[entity] = done
        if total is not None or entity not in self.totals:
            self.totals[entity] = total
        self.requests = requests_made - (self._requests_at_start or 0)

    @property
    def records(self) -> int:
        """Records fetched so far, all entities."""
        return sum(self.done.values())

    @property
    def total(self) -> int | None:
        """Records to fetch, all entities, once every one is counted."""
        if not self.totals or any(t is None for t in self.totals.values()):
            return None
        return sum(t or 0 for t in self.totals.values())

    def seconds_left(self) -> float | None:
        """Estimated seconds to the end, or None while there is nothing to extrapolate from."""
        total = self.total
        done = self.records
        if total is None or done <= 0 or self._started is None:
            return None
        left = max(0, total - done)
        by_time = (self.clock() - self._started) / done * left
        if self.rate_per_second <= 0 or self.requests <= 0:
            return by_time
        by_rate = self.requests / done * left / self.rate_per_second
        return max(by_time, by_rate)

    def describe(self) -> str:
        """``"12,500/170,000 records · 6 requests · about 1 min 20 s left"``."""
        total = self.total
        counted = f"{self.records:,}/{total:,}" if total is not None else f"{self.records:,}"
        text = f"{counted} records · {self.requests:,} requests"
        left = self.seconds_left()
        if left is not None:
            text += f" · about {format_duration(left)} left"
        return text


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"3 min 05 s"``, ``"1 h 02 min"``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
