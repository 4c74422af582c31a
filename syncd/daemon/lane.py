"""The base of the daemon's worker lanes: each has its own thread, stop event and heartbeat."""

from __future__ import annotations

import threading
from typing import ClassVar

from syncd.config import Settings
from syncd.connectors.budget import RequestBudget
from syncd.daemon.liveness import DEADLINES, Heartbeat


class Lane:
    """What each CRM-facing lane has: the settings, the stop event, the request budget it
    shares with the other lane, a heartbeat the watchdog reads, and its own thread running
    ``_loop``."""

    name: ClassVar[str]

    def __init__(
        self,
        settings: Settings,
        stop: threading.Event,
        budget: RequestBudget | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.settings = settings
        self.stop = stop
        self.budget = budget
        self.heartbeat = heartbeat or Heartbeat(self.name, DEADLINES[self.name])
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-lane", daemon=True)
        self.heartbeat.thread = self._thread
        self._setup()

    def start(self) -> None:
        self._thread.start()

    def _setup(self) -> None:
        """The lane's own state, made at construction (before its thread starts)."""

    def _loop(self) -> None:
        raise NotImplementedError
