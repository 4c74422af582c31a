"""A client-side request budget shared by every lane that talks to one rate-limited upstream.

Bitrix24 lets a webhook send about 2 requests/s with a burst of 50 (a leaky bucket; beyond it the
portal answers 503 ``QUERY_LIMIT_EXCEEDED``). The mirror and push lanes each have their own HTTP
client but share that one limit, so without coordination a full resync takes the whole rate and
a service request queues behind it. :class:`RequestBudget` is a token bucket both clients draw
from: push takes any token as soon as one exists; the mirror leaves ``reserve`` tokens for push
and yields while a push caller waits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

from syncd.core.errors import RetriableError

Priority = Literal["push", "mirror"]

# The longest single condition wait: bounds how late a waiter notices ``stop`` when nobody calls
# :meth:`RequestBudget.wake`. Waits are otherwise sized from the refill rate.
_MAX_WAIT_SECONDS = 1.0


class RequestBudget:
    """A thread-safe token bucket: refills at ``rate_per_second`` up to ``burst``, starting full.

    ``rate_per_second <= 0`` disables it (every acquire returns at once).
    """

    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        reserve: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if not 0 <= reserve < burst:
            raise ValueError("reserve must be at least 0 and less than burst")
        self.rate = float(rate_per_second)
        self.burst = burst
        self.reserve = reserve
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._cond = threading.Condition()
        self._push_waiting = 0
        self.granted: dict[str, int] = {"push": 0, "mirror": 0}

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def available(self) -> float:
        """Tokens in the bucket now (for tests and status)."""
        with self._cond:
            self._refill()
            return self._tokens

    def acquire(self, priority: Priority, stop: threading.Event) -> None:
        """Take one token, waiting for the refill when none is free to this priority.

        Raises :class:`RetriableError` if ``stop`` is set before a token is granted.
        """
        if self.unlimited:
            return
        if priority not in ("push", "mirror"):
            raise ValueError(f"unknown priority {priority!r}")
        with self._cond:
            if priority == "push":
                self._push_waiting += 1
            try:
                while True:
                    if stop.is_set():
                        raise RetriableError("request budget: interrupted by shutdown")
                    self._refill()
                    floor = 1.0 if priority == "push" else self.reserve + 1.0
                    if self._tokens >= floor and (priority == "push" or not self._push_waiting):
                        self._tokens -= 1.0
                        self.granted[priority] += 1
                        return
                    # Until the bucket holds ``floor`` tokens; a mirror held back only by a
                    # waiting push is woken by that push's notify.
                    missing = max(floor - self._tokens, 0.0)
                    timeout = missing / self.rate if missing > 0 else _MAX_WAIT_SECONDS
                    self._cond.wait(min(max(timeout, 0.001), _MAX_WAIT_SECONDS))
            finally:
                if priority == "push":
                    self._push_waiting -= 1
                    # A mirror caller may have been held back only by this push.
                    self._cond.notify_all()

    def wake(self) -> None:
        """Wake every waiter so it re-checks ``stop`` (call after setting a stop event)."""
        with self._cond:
            self._cond.notify_all()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._stamp = now
