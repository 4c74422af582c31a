"""The SharePoint lane: mirrors each configured document library on its interval.

Its own thread, cache connection and Graph connector (with its own event loop and connections),
so Graph's throttling never delays the CRM lanes and a CRM resync never delays the documents.
Each library is its own :class:`~syncd.daemon.jobs.Job` (``documents:<name>`` in ``status``):
a library that answers 403 stops alone while the others go on.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import time

from syncd.core.clock import utc_now
from syncd.core.errors import FatalError, SyncdError
from syncd.daemon.jobs import Job
from syncd.daemon.lane import Lane
from syncd.engines.documents import DocumentMirror
from syncd.runtime import build_document_source, open_cache
from syncd.state import control, documents
from syncd.state.db import close as close_cache

log = logging.getLogger(__name__)


class DocumentsLane(Lane):
    """Runs every library's delta on ``sharepoint.interval_seconds``, and operators' resyncs."""

    name = "documents"

    def _setup(self) -> None:
        # operators' resyncs (``syncd --resync documents``); None ends the loop
        self._orders: queue.Queue[control.ControlRequest | None] = queue.Queue()
        self.mirror: DocumentMirror | None = None
        self.conn: sqlite3.Connection | None = None
        self.jobs: dict[str, Job] = {
            library.name: Job(
                f"documents:{library.name}",
                lambda name=library.name: self._run_library(name),  # type: ignore[misc]
                base_backoff=30.0,
                max_backoff=3600.0,
            )
            for library in self.settings.sharepoint.libraries
        }
        self._due: dict[str, float] = dict.fromkeys(self.jobs, 0.0)
        self.pending: set[int] = set()

    def submit(self, request: control.ControlRequest) -> None:
        """Queue an operator's resync; the lane picks it up within a second."""
        self.pending.add(request.id)
        self._orders.put(request)

    def shutdown(self, timeout: float) -> bool:
        self._orders.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the thread ---------------------------------------------------------------------------

    def _loop(self) -> None:
        conn = open_cache(self.settings)
        self.conn = conn
        try:
            source = build_document_source(
                self.settings,
                stop=self.stop,
                budget=self.budget,
                priority="mirror",
                on_request=self.heartbeat.beat,
                name="documents-graph",
            )
        except SyncdError as error:  # the credential or the SharePoint extra
            log.error("SharePoint lane cannot start: %s", error)
            for name, job in self.jobs.items():
                job.give_up(error)
                job.save(conn)
                self._record(conn, name, job)
            close_cache(conn)
            return
        try:
            self.mirror = DocumentMirror(conn, source, self.settings.sharepoint, stop=self.stop)
            self.mirror.configure()
            self._serve(conn)
        finally:
            source.close()
            close_cache(conn)

    def _serve(self, conn: sqlite3.Connection) -> None:
        """Run each library when it is due (and not backing off), and operators' resyncs as
        they come, until stopped."""
        interval = self.settings.sharepoint.interval_seconds
        while not self.stop.is_set():
            for name, job in self.jobs.items():
                if self.stop.is_set():
                    break
                if time.monotonic() >= self._due[name] and job.ready():
                    with self.heartbeat.working(f"document library {name}"):
                        job.run(conn)
                    self._record(conn, name, job)
                    self._due[name] = time.monotonic() + interval
            # The next library due, counting a failing one's backoff; stopped ones never are.
            upcoming = [
                max(self._due[name], job.backoff_until)
                for name, job in self.jobs.items()
                if not job.stopped
            ]
            wait = max(0.05, min(upcoming) - time.monotonic()) if upcoming else None
            try:
                request = self._orders.get(timeout=wait)
            except queue.Empty:
                continue
            if request is None:
                break
            self._resync(conn, request)

    def _run_library(self, name: str) -> str:
        assert self.mirror is not None
        return self.mirror.run(name).summary()

    def _record(self, conn: sqlite3.Connection, name: str, job: Job) -> None:
        documents.record_health(
            conn,
            name,
            health="ok" if job.state == "ok" else job.state,
            error=job.last_error if job.state != "ok" else None,
            now=utc_now(),
        )

    def _resync(self, conn: sqlite3.Connection, request: control.ControlRequest) -> None:
        assert self.mirror is not None
        names = [request.record_id] if request.record_id else list(self.jobs)
        done = 0
        reports = []
        try:
            for name in names:
                if name not in self.jobs:
                    raise FatalError(f"no document library called {name!r} is configured")
                self.mirror.progress = lambda _lib, _pages, items, before=done: (
                    control.report_progress(conn, request.id, before + items, None)
                )
                with self.heartbeat.working(f"resyncing document library {name}"):
                    report = self.mirror.run(name, full=True)
                done += report.item_count
                reports.append(report.summary())
                job = self.jobs[name]
                job.record_success()
                job.save(conn)
                self._record(conn, name, job)
                self._due[name] = time.monotonic() + self.settings.sharepoint.interval_seconds
        except Exception as error:
            control.finish(
                conn, request.id, ok=False, message=str(error) or type(error).__name__,
                now=utc_now(),
            )
            log.warning("resync request #%d failed: %s", request.id, error)
        else:
            control.finish(conn, request.id, ok=True, message="; ".join(reports), now=utc_now())
            log.info("resync request #%d done: %s", request.id, "; ".join(reports))
        finally:
            self.mirror.progress = None
            self.pending.discard(request.id)

