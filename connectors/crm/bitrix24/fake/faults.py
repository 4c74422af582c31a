"""Injected failures and the leaky-bucket rate limit of the fake Bitrix24."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from fnmatch import fnmatchcase

from .envelope import ApiError

# kind → (HTTP status, error code, description): faults answered with a Bitrix24 error body
API_ERROR_FAULTS: dict[str, tuple[int, str, str]] = {
    "query_limit": (503, "QUERY_LIMIT_EXCEEDED", "Too many requests"),
    "operation_time_limit": (
        429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit."
    ),
    "internal_error": (500, "INTERNAL_SERVER_ERROR", "Internal server error"),
    "auth_error": (401, "NO_AUTH_FOUND", "Wrong authorization data"),
}
# faults that break the HTTP exchange itself
TRANSPORT_FAULTS = frozenset(
    {"html_error", "drop", "drop_after_processing", "malformed_json", "truncated_json"}
)
FAULT_KINDS = frozenset({*API_ERROR_FAULTS, *TRANSPORT_FAULTS, "slow"})


@dataclass
class Fault:
    """One armed fault: fires on up to ``times`` matching requests (None = forever) after
    letting ``after`` matching requests through."""

    kind: str
    times: int | None = 1
    method: str | None = None  # exact method name or fnmatch glob; None matches every method
    after: int = 0
    retry_after: float | None = None
    delay: float | None = None
    fired: int = 0

    def matches(self, method: str) -> bool:
        """Whether this fault applies to ``method``."""
        return self.method is None or fnmatchcase(method, self.method.lower())

    def api_error(self) -> ApiError:
        """The error answer of an API-error kind."""
        status, code, description = API_ERROR_FAULTS[self.kind]
        return ApiError(status, code, description)

    def headers(self) -> dict[str, str]:
        """Extra response headers (``Retry-After`` when configured)."""
        if self.retry_after is None:
            return {}
        value = self.retry_after
        return {"Retry-After": str(int(value)) if float(value).is_integer() else str(value)}


class FaultRegistry:
    """Thread-safe list of armed faults, consulted once per request (and per batch command)."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(
        self,
        kind: str,
        times: int | None = 1,
        method: str | None = None,
        after: int = 0,
        retry_after: float | None = None,
        delay: float | None = None,
    ) -> Fault:
        """Arm a fault; see the module docs of ``syncd.connectors.crm.bitrix24.fake`` for the
        kinds."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if kind == "slow" and delay is None:
            raise ValueError("a 'slow' fault needs delay=<seconds>")
        fault = Fault(kind, times, method, after, retry_after, delay)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._faults.clear()

    @property
    def pending(self) -> list[Fault]:
        """The faults still armed."""
        with self._lock:
            return list(self._faults)

    def take(self, method: str, in_batch: bool = False) -> Fault | None:
        """The fault that fires for this request, if any, consuming one of its ``times``.

        Every matching fault still in its ``after`` phase counts the request. Inside a batch
        only faults naming a method that ``batch`` itself does not match apply, so a fault
        aimed at ``crm.contact.list`` also hits that command when it travels in a batch.
        """
        method = method.lower()
        chosen: Fault | None = None
        with self._lock:
            for fault in self._faults:
                if not fault.matches(method):
                    continue
                if in_batch and (fault.method is None or fault.matches("batch")):
                    continue
                if fault.after > 0:
                    fault.after -= 1
                elif chosen is None:
                    chosen = fault
            if chosen is not None:
                chosen.fired += 1
                if chosen.times is not None:
                    chosen.times -= 1
                    if chosen.times <= 0:
                        self._faults.remove(chosen)
        return chosen


class LeakyBucket:
    """Bitrix24's request limiter: each request adds 1, the level drains ``drain`` per second,
    and a request that would lift the level above ``burst`` is refused."""

    def __init__(self, burst: float, drain: float) -> None:
        self.burst = burst
        self.drain = drain
        self._level = 0.0
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def admit(self) -> bool:
        """Account one request; False when it must be refused with QUERY_LIMIT_EXCEEDED."""
        with self._lock:
            now = time.monotonic()
            self._level = max(0.0, self._level - (now - self._last) * self.drain)
            self._last = now
            if self._level + 1 > self.burst:
                return False
            self._level += 1
            return True
