"""Bitrix24's operating-time limit: each REST method's server execution time, per webhook,
summed over a sliding window of ten one-minute buckets.

When a method's charged time in the window exceeds the limit (480 s per 10 minutes on the
cloud), calls to that method answer HTTP 429 ``OPERATION_TIME_LIMIT`` until enough old buckets
have left the window; ``time.operating_reset_at`` says when the oldest charged bucket leaves.
The fake charges ``measured duration × scale + cost_per_call`` per call, so a test can make a
cheap in-memory call cost as much as a slow real one (or cost a fixed amount with ``scale=0``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from .envelope import ApiError
from .faults import API_ERROR_FAULTS

BUCKETS = 10  # the window is made of this many equal buckets (one minute each by default)
# errors meaning no method ran, so nothing is charged
NOT_CHARGED = frozenset({"ERROR_METHOD_NOT_FOUND", "ERROR_BATCH_METHOD_NOT_ALLOWED"})


class OperatingBudget:
    """Per-method execution-time accounting over a sliding window of ``BUCKETS`` buckets.

    ``clock`` gives epoch seconds (inject one to move time in tests). Thread-safe.
    """

    def __init__(
        self,
        limit_seconds: float = 480.0,
        window_seconds: float = 600.0,
        cost_per_call: float = 0.0,
        scale: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.limit_seconds = limit_seconds
        self.window_seconds = window_seconds
        self.cost_per_call = cost_per_call
        self.scale = scale
        self.clock = clock
        self._buckets: dict[str, dict[int, float]] = {}  # method → bucket number → seconds
        self._lock = threading.Lock()

    @property
    def bucket_seconds(self) -> float:
        """The length of one bucket (a tenth of the window)."""
        return self.window_seconds / BUCKETS

    def cost(self, seconds: float) -> float:
        """What one call that ran ``seconds`` is charged."""
        return max(0.0, seconds) * self.scale + self.cost_per_call

    def charge(self, method: str, seconds: float) -> float:
        """Charge one call of ``method`` that ran ``seconds``; returns the charged cost."""
        charged = self.cost(seconds)
        with self._lock:
            buckets = self._live(method.lower())
            bucket = self._bucket_now()
            buckets[bucket] = buckets.get(bucket, 0.0) + charged
        return charged

    def used(self, method: str) -> float:
        """Seconds charged to ``method`` within the window."""
        with self._lock:
            return sum(self._live(method.lower()).values())

    def reset_at(self, method: str) -> int:
        """Epoch (rounded up) when the oldest charged bucket of ``method`` leaves the window;
        a window's length from now when nothing is charged."""
        with self._lock:
            buckets = self._live(method.lower())
            if not buckets:
                return math.ceil(self.clock() + self.window_seconds)
            return math.ceil((min(buckets) + BUCKETS) * self.bucket_seconds)

    def blocked(self, method: str) -> bool:
        """Whether ``method`` is over the limit (its calls are refused)."""
        return self.used(method) > self.limit_seconds

    def time_fields(self, method: str) -> dict[str, Any]:
        """``{"operating_reset_at", "operating"}`` of ``method`` for a ``time`` block."""
        return {"operating_reset_at": self.reset_at(method), "operating": self.used(method)}

    def usage(self) -> dict[str, float]:
        """Seconds charged within the window, by method (methods with no charge left out)."""
        with self._lock:
            methods = list(self._buckets)
            totals = {method: sum(self._live(method).values()) for method in methods}
        return {method: total for method, total in sorted(totals.items()) if total > 0}

    def reset(self) -> None:
        """Forget every charge."""
        with self._lock:
            self._buckets.clear()

    def _bucket_now(self) -> int:
        return math.floor(self.clock() / self.bucket_seconds)

    def _live(self, method: str) -> dict[int, float]:
        """The method's buckets, after dropping those that have left the window (lock held)."""
        buckets = self._buckets.setdefault(method, {})
        oldest = self._bucket_now() - BUCKETS + 1
        for bucket in [bucket for bucket in buckets if bucket < oldest]:
            del buckets[bucket]
        return buckets


def operation_time_limit() -> ApiError:
    """The 429 refusal of a method over its operating-time budget."""
    return ApiError(*API_ERROR_FAULTS["operation_time_limit"])
