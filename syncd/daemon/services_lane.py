"""The daemon's lane for the public services and housekeeping: Omniva's list refresh, the
retention job (every store purged to its ``[retention]`` window, the VIES answers included), and
flushing the VIES lookup counters.

It has its own thread and cache connection and runs with or without a CRM, so neither a long CRM
resync nor a slow Omniva download holds up the other, and retention runs in every deployment.
Each job keeps its own health (``syncd status``) through :class:`~syncd.daemon.jobs.Job`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from syncd.config import Settings
from syncd.core.clock import utc_now
from syncd.daemon.jobs import Job
from syncd.daemon.liveness import DEADLINES, Heartbeat
from syncd.engines.omniva import refresh_locations
from syncd.engines.retention import purge_all
from syncd.engines.vat import VatService
from syncd.runtime import build_omniva_client, open_cache, retention_options
from syncd.state import omniva as omniva_store
from syncd.state.db import close as close_cache

log = logging.getLogger(__name__)

COUNTS_FLUSH_SECONDS = 60.0


@dataclass
class _Scheduled:
    job: Job
    every_seconds: float
    due_at: float  # time.monotonic()


class ServicesLane:
    """Runs the Omniva refresh and the retention job on their intervals, on one thread."""

    def __init__(
        self,
        settings: Settings,
        stop: threading.Event,
        vat: VatService | None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.settings = settings
        self.stop = stop
        self.vat = vat
        self.heartbeat = heartbeat or Heartbeat("services", DEADLINES["services"])
        self.conn: sqlite3.Connection | None = None
        self._omniva_client = build_omniva_client(settings) if settings.omniva.enabled else None
        self.jobs: dict[str, Job] = {}
        self._schedule: list[_Scheduled] = []
        if self._omniva_client is not None:
            self._add(
                Job("omniva", self._refresh_omniva, base_backoff=60.0, max_backoff=3600.0),
                settings.omniva.interval_hours * 3600.0,
            )
        self._retention = retention_options(settings)
        self._add(
            Job("retention", self._purge_stores, base_backoff=30.0, max_backoff=900.0),
            self._retention.purge_interval.total_seconds(),
        )
        self._thread = threading.Thread(target=self._loop, name="services-lane", daemon=True)
        self.heartbeat.thread = self._thread

    def _add(self, job: Job, every_seconds: float) -> None:
        self.jobs[job.name] = job
        self._schedule.append(_Scheduled(job, every_seconds, due_at=0.0))

    def start(self) -> None:
        self._thread.start()

    def shutdown(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the jobs -----------------------------------------------------------------------------

    def _refresh_omniva(self) -> str:
        assert self.conn is not None and self._omniva_client is not None
        report = refresh_locations(
            self.conn,
            self._omniva_client,
            max_shrink_share=self.settings.omniva.max_shrink_share,
            now=utc_now(),
        )
        return report.summary()

    def _purge_stores(self) -> str | None:
        assert self.conn is not None
        return purge_all(self.conn, self._retention, now=utc_now()).summary()

    # -- the loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        self.conn = open_cache(self.settings)
        self._delay_fresh_omniva_check(self.conn)
        last_flush = time.monotonic()
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                for entry in self._schedule:
                    if now >= entry.due_at and entry.job.ready():
                        self._run(entry.job, self.conn)
                        entry.due_at = time.monotonic() + entry.every_seconds
                if self.vat is not None and now - last_flush >= COUNTS_FLUSH_SECONDS:
                    self._guarded(self.vat.flush_counts, "flushing VIES lookup counters")
                    last_flush = now
                self.stop.wait(self._idle_seconds())
        finally:
            if self.vat is not None:
                self._guarded(self.vat.flush_counts, "flushing VIES lookup counters")
            if self._omniva_client is not None:
                self._omniva_client.close()
            close_cache(self.conn)

    def _run(self, job: Job, conn: sqlite3.Connection) -> None:
        with self.heartbeat.working(job.name):
            job.run(conn)
        if job.last_result and job.state == "ok":
            log.info("%s", job.last_result)

    def _idle_seconds(self) -> float:
        now = time.monotonic()
        waits = [COUNTS_FLUSH_SECONDS]
        for entry in self._schedule:
            due = max(entry.due_at, entry.job.backoff_until)
            waits.append(due - now)
        return max(0.05, min(waits))

    def _delay_fresh_omniva_check(self, conn: sqlite3.Connection) -> None:
        """After a restart, do not download a list that was checked within its interval."""
        state = omniva_store.list_state(conn)
        if state.checked_at is None or state.record_count == 0:
            return
        age = (utc_now() - state.checked_at).total_seconds()
        for entry in self._schedule:
            if entry.job.name == "omniva" and 0 <= age < entry.every_seconds:
                entry.due_at = time.monotonic() + entry.every_seconds - age

    @staticmethod
    def _guarded(action: Callable[[], object], what: str) -> None:
        try:
            action()
        except sqlite3.Error as error:  # counters are best effort; the next flush retries
            log.warning("%s failed: %s", what, error)
