"""Whether every part of the daemon is still making progress: the watchdog's eyes.

Each lane (the CRM lane, the push lane, the services lane, the API's server loop) owns a
:class:`Heartbeat`. A lane marks the work it does (:meth:`Heartbeat.working`) and beats whenever
it gets somewhere inside it (a loop turn, an HTTP request sent, a file uploaded). Waiting idle for
work is not hanging; being inside a piece of work with no beat for longer than the lane's
deadline is, and so is a lane thread that has died.

The daemon's main loop asks :meth:`Liveness.hung` before every watchdog ping: while every lane is
well it pings systemd; once one is hung it says so once (the journal, ``STATUS=``, ``/healthz``)
and stops pinging, so that systemd's ``WatchdogSec=`` restarts the daemon.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

__all__ = ["DEADLINES", "Heartbeat", "Hung", "Liveness"]

#: Seconds a lane may spend inside one piece of work without a beat (the defaults of the
#: ``[watchdog]`` settings). Generous: a CRM request may wait out Bitrix24's operating-time pause
#: (up to 10 minutes), an upload of a 500 MB video over a slow line takes minutes; the API loop
#: answers a ping within a second when it is well.
DEADLINES: Final = {
    "crm": 900.0, "push": 900.0, "services": 300.0, "documents": 900.0, "api": 60.0
}


@dataclass(frozen=True)
class Hung:
    """A lane that stopped making progress: ``why`` in plain words."""

    lane: str
    why: str


class Heartbeat:
    """One lane's signs of life. ``beat`` is cheap (one float store) and thread-safe."""

    def __init__(
        self,
        name: str,
        deadline: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.deadline = deadline
        self._clock = clock
        self.last_beat = clock()
        self.busy_with: str | None = None
        self.thread: threading.Thread | None = None

    def beat(self) -> None:
        """The lane got somewhere."""
        self.last_beat = self._clock()

    @contextlib.contextmanager
    def working(self, what: str) -> Iterator[None]:
        """Inside ``what`` the lane must beat at least every ``deadline`` seconds."""
        self.busy_with = what
        self.beat()
        try:
            yield
        finally:
            self.busy_with = None
            self.beat()

    def check(self) -> Hung | None:
        """None while the lane is well."""
        if self.thread is not None and not self.thread.is_alive():
            return Hung(self.name, f"the {self.name} lane's thread has ended")
        busy = self.busy_with
        silent = self._clock() - self.last_beat
        if busy is not None and silent > self.deadline:
            return Hung(
                self.name,
                f"the {self.name} lane has made no progress in {busy} for {silent:.0f} s "
                f"(deadline {self.deadline:.0f} s)",
            )
        return None


class Liveness:
    """The heartbeats of every lane of one daemon."""

    def __init__(
        self,
        deadlines: dict[str, float] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._deadlines = {**DEADLINES, **(deadlines or {})}
        self._clock = clock
        self._beats: dict[str, Heartbeat] = {}

    def heartbeat(self, name: str, deadline: float | None = None) -> Heartbeat:
        """The heartbeat of lane ``name`` (made on first use; its deadline from the daemon's
        settings, else :data:`DEADLINES`)."""
        if name not in self._beats:
            self._beats[name] = Heartbeat(
                name,
                self._deadlines.get(name, 300.0) if deadline is None else deadline,
                clock=self._clock,
            )
        return self._beats[name]

    def hung(self) -> list[Hung]:
        """Every lane that is not well now."""
        return [h for h in (beat.check() for beat in self._beats.values()) if h is not None]

    def report(self) -> dict[str, str]:
        """``{lane: "ok" | why it is hung}`` for ``/healthz``."""
        hung = {h.lane: h.why for h in self.hung()}
        return {name: hung.get(name, "ok") for name in self._beats}
