"""Injected failures of the fake Graph: what each kind answers, and the thread-safe registry
that decides which request a fault hits.

A fault matches a request when its ``path`` glob (fnmatch, case-sensitive, on the URL path
without the query, raw or percent-decoded) matches, or it has none, and its ``drive_id`` is the
request's drive, or it has none. A fault without ``path`` only hits Graph API calls
(``/v1.0/…``) and downloads (``/_download/…``), never the login endpoint or the control API; a
``path`` can aim at the login endpoint (``*/oauth2/v2.0/token``). Each matching request first
uses up the fault's ``after``; then the fault fires ``times`` times (None: forever).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Final

# kind → (status, Graph error code, message)
STATUS_FAULTS: Final[dict[str, tuple[int, str, str]]] = {
    "throttle": (
        429, "TooManyRequests",
        "Too many requests. The request has been throttled. Please retry after the time "
        "specified in the Retry-After header.",
    ),
    "unavailable": (
        503, "serviceNotAvailable",
        "The service is temporarily unavailable. Please retry after the time specified in the "
        "Retry-After header.",
    ),
    "gateway_timeout": (504, "gatewayTimeout", "The operation has timed out."),
    "token_expired": (
        401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired."
    ),
    "forbidden": (403, "accessDenied", "Access denied"),
    "not_found": (404, "itemNotFound", "The resource could not be found."),
    "resync": (
        410, "resyncRequired",
        "Resync required. Replace any local items with the server's version (including "
        "deletes) if you're sure that the service was up to date with your local changes when "
        "you last sync'd. Upload any local changes that the server doesn't know about.",
    ),
}
RETRY_AFTER_KINDS: Final = frozenset({"throttle", "unavailable"})
TRANSPORT_FAULTS: Final = frozenset({"drop", "truncate", "html"})
PAGE_FAULTS: Final = frozenset({"repeat_item"})  # taken by the delta page builder
FAULT_KINDS: Final = frozenset({*STATUS_FAULTS, *TRANSPORT_FAULTS, *PAGE_FAULTS, "slow"})
API_PREFIXES: Final = ("/v1.0/", "/_download/")


@dataclass
class Fault:
    """One armed fault."""

    kind: str
    times: int | None = 1
    after: int = 0
    path: str | None = None
    drive_id: str | None = None
    retry_after: float | None = None
    delay: float | None = None
    fired: int = 0

    def matches(self, paths: tuple[str, ...], drive_id: str | None) -> bool:
        """Whether this fault applies to a request of ``paths`` (raw, decoded) and drive."""
        if self.drive_id is not None and self.drive_id != drive_id:
            return False
        if self.path is None:
            return paths[0].startswith(API_PREFIXES)
        return any(fnmatchcase(path, self.path) for path in paths)

    def retry_after_header(self) -> dict[str, str]:
        """``Retry-After`` (whole seconds, at least 1 when the kind has one by default)."""
        if self.retry_after is None:
            return {"Retry-After": "1"} if self.kind in RETRY_AFTER_KINDS else {}
        value = self.retry_after
        return {"Retry-After": str(int(value)) if float(value).is_integer() else str(value)}

    def to_json(self) -> dict[str, object]:
        """For the control API."""
        return {
            "kind": self.kind, "times": self.times, "after": self.after, "path": self.path,
            "drive_id": self.drive_id, "retry_after": self.retry_after, "delay": self.delay,
            "fired": self.fired,
        }


class FaultRegistry:
    """The armed faults; consulted once per request."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(
        self,
        kind: str,
        *,
        times: int | None = 1,
        after: int = 0,
        path: str | None = None,
        drive_id: str | None = None,
        retry_after: float | None = None,
        delay: float | None = None,
    ) -> Fault:
        """Arm a fault (see the package docs for the kinds)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if kind == "slow" and delay is None:
            raise ValueError("a 'slow' fault needs delay=<seconds>")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None: forever)")
        fault = Fault(kind, times, after, path, drive_id, retry_after, delay)
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

    def take(
        self, paths: tuple[str, ...], drive_id: str | None, *, page: bool = False
    ) -> Fault | None:
        """The fault that fires for this request, if any, using up one of its ``times``.

        ``page`` picks the delta-page kinds (``repeat_item``) instead of the request kinds.
        """
        chosen: Fault | None = None
        with self._lock:
            for fault in self._faults:
                if (fault.kind in PAGE_FAULTS) != page or not fault.matches(paths, drive_id):
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
