"""Injected faults: what the fake answers instead of the truth, for which requests, how often."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from syncd.connectors.vies.errors import FAULTS as VIES_FAULTS

from .soap import XML_TYPE

# Transport-level kinds; every VIES fault string (INVALID_INPUT, MS_UNAVAILABLE…) is a kind too.
TRANSPORT_KINDS = frozenset(
    {"slow", "http_500", "invalid_xml", "html", "redirect", "truncated", "drop", "raw"}
)
# Well-formed answers that are wrong: the echo names another member state (``echo_country``) or
# another number (``echo_number``), or checkVatApprox leaves ``requestIdentifier`` empty
# (``no_consultation``).
ANSWER_KINDS = frozenset({"echo_country", "echo_number", "no_consultation"})
FAULT_KINDS = frozenset(VIES_FAULTS) | TRANSPORT_KINDS | ANSWER_KINDS


@dataclass
class InjectedFault:
    """One injected fault.

    ``country``/``number`` narrow it (``number`` with or without the country prefix); ``times``
    is how many more requests it hits (None: unlimited). ``delay`` is for ``slow``; ``status``,
    ``body``, ``content_type`` and extra ``headers`` are the exact answer of ``raw``.
    """

    kind: str
    country: str | None = None
    number: str | None = None
    times: int | None = None
    delay: float = 0.0
    status: int = 200
    body: bytes = b""
    content_type: str = XML_TYPE
    headers: dict[str, str] = field(default_factory=dict)

    def matches(self, country_code: str, vat_number: str) -> bool:
        """Whether this fault applies to a request about ``country_code`` + ``vat_number``."""
        if self.country is not None and self.country.upper() != country_code.upper():
            return False
        if self.number is None:
            return True
        wanted = self.number.replace(" ", "").upper()
        number = vat_number.upper()
        return wanted in (number, country_code.upper() + number)

    def to_json(self) -> dict[str, Any]:
        """The fault as the control API lists it."""
        out = asdict(self)
        out["body"] = self.body.decode("utf-8", "replace")
        return out


class FaultRegistry:
    """Thread-safe list of injected faults; the oldest matching one wins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[InjectedFault] = []

    def add(
        self,
        kind: str,
        *,
        country: str | None = None,
        number: str | None = None,
        times: int | None = None,
        delay: float = 0.0,
        status: int = 200,
        body: bytes | str = b"",
        content_type: str = XML_TYPE,
        headers: dict[str, str] | None = None,
    ) -> InjectedFault:
        """Inject a fault (see :class:`InjectedFault`); ValueError for an unknown kind."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(FAULT_KINDS)}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or omitted for unlimited)")
        raw = body.encode() if isinstance(body, str) else bytes(body)
        injected = InjectedFault(
            kind,
            country,
            number,
            times,
            float(delay),
            int(status),
            raw,
            content_type,
            dict(headers or {}),
        )
        with self._lock:
            self._faults.append(injected)
        return injected

    def take(self, country_code: str, vat_number: str) -> InjectedFault | None:
        """The fault for this request, if any, counting one use of it."""
        with self._lock:
            for index, injected in enumerate(self._faults):
                if not injected.matches(country_code, vat_number):
                    continue
                if injected.times is not None:
                    injected.times -= 1
                    if injected.times == 0:
                        del self._faults[index]
                return injected
        return None

    def clear(self) -> None:
        """Remove every injected fault."""
        with self._lock:
            self._faults.clear()

    def list(self) -> list[InjectedFault]:
        """Copies of the faults still armed."""
        with self._lock:
            return [replace(f, headers=dict(f.headers)) for f in self._faults]
