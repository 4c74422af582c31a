"""``syncd run``: the long-running daemon.

The main thread runs the ``schedule`` loop, answers signals, pets the systemd watchdog and hands
due work to the CRM lane: one worker thread that runs mirror cycles, sweeps, full resyncs and
operator-requested resyncs one at a time (they share the cache's write side and the CRM's rate
limits). The outbox push, the public services (Omniva, retention) and the local HTTP API
have threads of their own, so none of them waits on a resync.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import schedule

from syncd.api.app import ApiServer, make_app
from syncd.api.documents import DocumentDownloads
from syncd.api.sources import CachedLocations, DaemonHealth
from syncd.config import Settings
from syncd.core.clock import utc_now
from syncd.core.entities import Entity
from syncd.core.errors import ConfigError
from syncd.daemon.documents_lane import DocumentsLane
from syncd.daemon.jobs import Job
from syncd.daemon.lane import Lane
from syncd.daemon.liveness import Liveness
from syncd.daemon.lock import ProcessLock
from syncd.daemon.sdnotify import Notifier
from syncd.daemon.services_lane import ServicesLane
from syncd.engines.mirror import MirrorEngine
from syncd.engines.progress import ResyncEstimate
from syncd.engines.push import OutboxDelivery, wait_for_outbox_change
from syncd.engines.spool import MIB
from syncd.runtime import (
    build_budget,
    build_document_budget,
    build_engine,
    build_intake,
    build_pusher,
    build_vat_service,
    open_cache,
    push_options,
)
from syncd.state import audit, control, health, outbox
from syncd.state.db import ThreadConnections
from syncd.state.db import close as close_cache

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 6.0
API_SWITCH_INTERVAL_SECONDS = 0.001
CONTROL_POLL_SECONDS = 0.5


@dataclass
class _Task:
    name: str
    run: Callable[[sqlite3.Connection, MirrorEngine], None]


class CrmLane(Lane):
    """A worker thread that owns its own cache connection and engine, running one task at a
    time; a task already queued or running is not queued twice."""

    name = "crm"

    def _setup(self) -> None:
        self._queue: queue.Queue[_Task | None] = queue.Queue()
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self.busy_with: str | None = None
        self.engine: MirrorEngine | None = None
        self.conn: sqlite3.Connection | None = None
        self.ready = threading.Event()
        self.failed_to_start: BaseException | None = None

    def submit(self, task: _Task) -> bool:
        with self._lock:
            if task.name in self._pending:
                return False
            self._pending.add(task.name)
        self._queue.put(task)
        return True

    def queued(self, name: str) -> bool:
        with self._lock:
            return name in self._pending

    def request_stop(self) -> None:
        self._queue.put(None)

    def shutdown(self, timeout: float) -> bool:
        self.request_stop()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        try:
            self.conn = open_cache(self.settings)
            self.engine = build_engine(
                self.settings,
                self.conn,
                stop=self.stop,
                budget=self.budget,
                on_request=self.heartbeat.beat,
            )
        except BaseException as error:  # reported by the main thread
            self.failed_to_start = error
            self.ready.set()
            return
        self.ready.set()
        while True:
            task = self._queue.get()
            if task is None or self.stop.is_set():
                break
            self.busy_with = task.name
            try:
                with self.heartbeat.working(task.name):
                    task.run(self.conn, self.engine)
            finally:
                self.busy_with = None
                with self._lock:
                    self._pending.discard(task.name)
        self.engine.adapter.close()
        close_cache(self.conn)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PushLane(Lane):
    """The outbox's own thread: its own cache connection and CRM client, so a full resync on the
    CRM lane never delays a service request. It drains due requests, then sleeps until the
    portal commits something (``PRAGMA data_version``) or the next retry is due."""

    name = "push"
    SPOOL_SWEEP_EVERY_SECONDS = 3600.0
    MAX_IDLE_SECONDS = 5.0  # re-check retry_wait rows at least this often

    def _setup(self) -> None:
        self.job = Job("push", self._drain)
        self.delivery: OutboxDelivery | None = None

    def shutdown(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _drain(self) -> str | None:
        assert self.delivery is not None
        delivered = 0
        while not self.stop.is_set() and self.delivery.deliver_next() is not None:
            delivered += 1
            self.heartbeat.beat()
        return f"push: {delivered} attempt(s)" if delivered else None

    def _loop(self) -> None:
        conn = open_cache(self.settings)
        pusher = build_pusher(
            self.settings, stop=self.stop, budget=self.budget, on_request=self.heartbeat.beat
        )
        self.delivery = OutboxDelivery(conn, pusher, push_options(self.settings))
        released = outbox.release_dead_leases(
            conn, host=os.uname().nodename, is_alive=_process_alive, now=utc_now()
        )
        if released:
            log.info("%d service request(s) interrupted by the previous run resume now", released)
        self.delivery.options.spool.mkdir(parents=True, exist_ok=True)
        intake = build_intake(self.settings, lambda: conn)
        # What the requests hold is forgotten by the services lane's retention job; the spool's
        # abandoned uploads are swept here, where the spool is known to be in use.
        last_sweep = 0.0
        try:
            while not self.stop.is_set():
                with self.heartbeat.working("delivering service requests"):
                    self.job.run(conn)
                if time.monotonic() - last_sweep > self.SPOOL_SWEEP_EVERY_SECONDS:
                    removed = intake.sweep_orphans()
                    if removed:
                        log.info("removed %d abandoned upload(s) from the spool", removed)
                    last_sweep = time.monotonic()
                idle = self.MAX_IDLE_SECONDS
                if not self.job.ready():
                    idle = max(0.2, min(idle, self.job.backoff_until - time.monotonic()))
                wait_for_outbox_change(conn, self.stop, idle)
        finally:
            pusher.close()
            close_cache(conn)


class Daemon:
    """Wires jobs to the scheduler and runs until SIGTERM/SIGINT."""

    def __init__(self, settings: Settings, *, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.notifier = notifier or Notifier.from_env()
        self.stop = threading.Event()
        self.liveness = Liveness(settings.watchdog.deadlines())
        # Without [crm] url the daemon serves VIES, Omniva and the API only: no CRM lanes.
        self.crm_enabled = settings.crm_configured
        # One CRM request budget for the process: the mirror and push lanes share the CRM's
        # rate limit, and push goes first (crm.push_reserve).
        self.budget = build_budget(settings) if self.crm_enabled else None
        self.lane: CrmLane | None = None
        self.push: PushLane | None = None
        if self.crm_enabled:
            self.lane = CrmLane(
                settings, self.stop, self.budget, self.liveness.heartbeat("crm")
            )
            self.push = PushLane(
                settings, self.stop, self.budget, self.liveness.heartbeat("push")
            )
        self.vat = build_vat_service(settings, stop=self.stop) if settings.api.enabled else None
        self.services = ServicesLane(
            settings, self.stop, self.vat, self.liveness.heartbeat("services")
        )
        # SharePoint: its own lane, and a per-tenant Graph budget it shares with the API's
        # downloads. Nothing of msgraph or azure is imported unless it is configured.
        self.documents: DocumentsLane | None = None
        self.document_budget = None
        if settings.sharepoint.configured:
            self.document_budget = build_document_budget(settings)
            self.documents = DocumentsLane(
                settings, self.stop, self.document_budget, self.liveness.heartbeat("documents")
            )
        self._hung_reported = False
        self.api: ApiServer | None = None
        self._downloads: DocumentDownloads | None = None
        self._api_connections = ThreadConnections(lambda: open_cache(settings))
        self.jobs = {
            "mirror": Job("mirror", self._mirror_cycle),
            "sweep": Job("sweep", self._sweep),
            "full_resync": Job("full_resync", self._full_resync),
        }
        self.scheduler = schedule.Scheduler()
        self._engine: MirrorEngine | None = None

    # -- work run on the lane -----------------------------------------------------------------

    def _mirror_cycle(self) -> str:
        assert self._engine is not None
        return self._engine.run_cycle().summary()

    def _sweep(self) -> str:
        assert self._engine is not None
        return self._engine.sweep().summary()

    def _full_resync(self) -> str:
        assert self._engine is not None
        return self._engine.run_full(list(Entity)).summary()

    def _job_task(self, job: Job) -> _Task:
        def run(conn: sqlite3.Connection, engine: MirrorEngine) -> None:
            self._engine = engine
            job.run(conn)  # the engine logs each cycle's summary itself
            self._update_status()

        return _Task(job.name, run)

    def _control_task(self, request: control.ControlRequest) -> _Task:
        def run(conn: sqlite3.Connection, engine: MirrorEngine) -> None:
            estimate = ResyncEstimate(self.settings.crm.requests_per_second)

            def progress(entity: str, done: int, total: int | None) -> None:
                estimate.update(entity, done, total, engine.adapter.requests_made)
                control.report_progress(
                    conn, request.id, estimate.records, estimate.total,
                    requests=estimate.requests, eta_seconds=estimate.seconds_left(),
                )

            engine.progress = progress
            entity = Entity(request.entity) if request.entity != "all" else None
            try:
                if request.record_id and entity is not None:
                    report = engine.resync_record(entity, request.record_id)
                else:
                    report = engine.run_full([entity] if entity else list(Entity))
            except Exception as error:
                control.finish(
                    conn,
                    request.id,
                    ok=False,
                    message=str(error) or type(error).__name__,
                    now=utc_now(),
                )
                log.warning("resync request #%d failed: %s", request.id, error)
            else:
                control.finish(conn, request.id, ok=True, message=report.summary(), now=utc_now())
                log.info("resync request #%d done: %s", request.id, report.summary())
            finally:
                engine.progress = None

        return _Task(f"control-{request.id}", run)

    # -- main thread --------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        lock = ProcessLock(self.settings.state.cache_path.parent, "daemon")
        lock.acquire()
        try:
            return self._run_locked()
        finally:
            lock.release()

    def _run_locked(self) -> int:
        conn = open_cache(self.settings)
        requeued = control.fail_abandoned(conn)
        if requeued:
            log.info(
                "%d resync request(s) left running by a previous daemon were re-queued", requeued
            )
        if self.crm_enabled:
            # Before the API takes requests: whatever a killed predecessor left half-filed in
            # the spool (a draft, or files whose row never committed) belongs to no request.
            removed = build_intake(self.settings, lambda: conn).sweep_orphans(older_than=0)
            if removed:
                log.info("removed %d upload(s) a previous run left unfinished", removed)
        previous = health.load(conn, "watchdog")
        if previous is not None and previous.state != "ok":
            self._record_watchdog(conn, None)  # a new process: its lanes start afresh
        self._install_signal_handlers()
        self._start_api()  # first: a port already taken stops start-up before any work begins
        if self.lane is not None and self.push is not None:
            self.lane.start()
            self.lane.ready.wait()
            if self.lane.failed_to_start is not None:
                raise self.lane.failed_to_start
            self.push.start()
        self.services.start()
        if self.documents is not None:
            self.documents.start()
        self._schedule_jobs()
        audit.record(conn, "daemon.start", details={"pid_user": audit.os_user()})
        self.notifier.ready(
            "syncd running; first mirror cycle started"
            if self.crm_enabled
            else f"syncd running without a CRM ([crm.{self.settings.crm.vendor}] not set): "
            "VIES, Omniva and the API only"
        )
        if self.api is not None:
            log.info("local API listening on %s", self.api.address)
        log.info(
            "syncd daemon ready (cache %s%s)",
            self.settings.state.cache_path,
            "" if self.crm_enabled else "; no CRM configured: mirror and service requests off",
        )
        # Everything loaded so far lives as long as the process: move it out of the garbage
        # collector's way, so full collections (which stall the API's threads) stay short.
        gc.collect()
        gc.freeze()
        # The API hands each request between waitress's threads; with the default 5 ms GIL
        # switch interval a busy thread makes every handoff wait up to 5 ms.
        sys.setswitchinterval(API_SWITCH_INTERVAL_SECONDS)
        self._submit(self.jobs["mirror"])
        watchdog_every = self.notifier.watchdog_interval()
        last_watchdog = 0.0
        api_beat = self.liveness.heartbeat("api") if self.api is not None else None
        if self.api is not None and api_beat is not None:
            api_beat.thread = self.api.thread
            api_beat.busy_with = "its server loop"  # always: a loop that stops answering hangs
        while not self.stop.is_set():
            self.scheduler.run_pending()
            self._poll_control(conn)
            if self.api is not None and api_beat is not None:
                self.api.ping(api_beat.beat)
            now = time.monotonic()
            if watchdog_every and now - last_watchdog >= watchdog_every and self._all_alive(conn):
                self.notifier.watchdog()
                last_watchdog = now
            idle = self.scheduler.idle_seconds
            self.stop.wait(min(CONTROL_POLL_SECONDS, idle if idle and idle > 0 else 0.05))
        self.notifier.stopping()
        for budget in (self.budget, self.document_budget):
            if budget is not None:
                budget.wake()  # a lane waiting for a request token sees the stop at once
        log.info("stopping (waiting up to %.0fs for the running task)", STOP_GRACE_SECONDS)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        if self.lane is not None:
            self.lane.request_stop()  # the lanes wind down at once, within one grace period
        if self.api is not None:
            self.api.stop(max(0.0, deadline - time.monotonic()))
        stopped = [
            lane.shutdown(max(0.0, deadline - time.monotonic()))
            for lane in (self.push, self.services, self.documents, self.lane)
            if lane is not None
        ]
        if self.vat is not None:
            self.vat.close()
        if self._downloads is not None:
            self._downloads.close()
        self._api_connections.close_all()
        close_cache(conn)
        if not all(stopped):
            # A lane is still inside a network call. Its uncommitted SQLite work rolls back when
            # the process ends, and an interrupted delivery is resumed by the next start.
            log.warning("a task did not stop within %.0fs; exiting anyway", STOP_GRACE_SECONDS)
            logging.shutdown()
            os._exit(0)
        return 0

    def _start_api(self) -> None:
        if not self.settings.api.enabled or self.vat is None:
            return
        # waitress buffers a request body over 512 KiB in a temporary file before syncd reads
        # it: keep those next to the spool (whose free space the door checks), not in /tmp,
        # which may be a small tmpfs in memory.
        body_buffers = self.settings.state.directory / "tmp"
        body_buffers.mkdir(mode=0o700, exist_ok=True)
        tempfile.tempdir = str(body_buffers)
        from syncd.api.metrics import MetricsSource  # prometheus_client: only when the API runs

        api = self.settings.api
        max_upload_bytes = api.max_upload_mb * MIB
        intake = (
            build_intake(self.settings, self._api_connections.get, api=True)
            if self.crm_enabled
            else None
        )
        downloads = None
        if self.settings.sharepoint.configured:
            # The Graph connector behind it is built on the first download (msgraph loads in
            # seconds); it shares the tenant's request budget with the documents lane.
            downloads = DocumentDownloads.from_config(
                self.settings,
                self._api_connections.get,
                stop=self.stop,
                budget=self.document_budget,
                # a download holds an API thread for its whole transfer: leave some for the rest
                max_concurrent=max(1, self.settings.api.threads - 2),
            )
        self._downloads = downloads
        app = make_app(
            self.vat,
            CachedLocations(self._api_connections),
            DaemonHealth(self._api_connections, lanes=self.liveness.report),
            metrics=MetricsSource(self._api_connections.get, retention=self.settings.retention),
            service_requests=intake,
            max_upload_bytes=max_upload_bytes,
            documents=downloads,
        )
        self.api = ApiServer(
            app,
            listen=api.listen,
            threads=api.threads,
            max_request_bytes=max(api.max_request_bytes, max_upload_bytes),
            channel_timeout=api.request_timeout_seconds,
            unix_socket_mode=int(api.unix_socket_mode, 8),
        )
        try:
            self.api.start()
        except OSError as error:
            self.api = None
            raise ConfigError(
                f"api.listen: cannot listen on {api.listen}: {error.strerror or error}"
            ) from None

    def _all_alive(self, conn: sqlite3.Connection) -> bool:
        """Whether every lane is making progress; says so once when one stops (journal,
        ``STATUS=``, the ``watchdog`` row ``syncd status`` shows), and once when all are well
        again. The watchdog is not pinged meanwhile, so systemd restarts syncd."""
        hung = self.liveness.hung()
        if hung and not self._hung_reported:
            for lane in hung:
                log.error("%s; no more watchdog pings: systemd will restart syncd", lane.why)
            self.notifier.status("HUNG: " + "; ".join(lane.why for lane in hung))
            self._record_watchdog(conn, "; ".join(lane.why for lane in hung))
            self._hung_reported = True
        elif not hung and self._hung_reported:
            log.warning("every lane is making progress again")
            self._hung_reported = False
            self._record_watchdog(conn, None)
            self._update_status()
        return not hung

    @staticmethod
    def _record_watchdog(conn: sqlite3.Connection, problem: str | None) -> None:
        """The ``watchdog`` row of job_health: failing with ``problem``, or ok again (keeping
        the last problem for the record)."""
        now = utc_now()
        try:
            previous = health.load(conn, "watchdog")
            health.save(
                conn,
                health.JobHealth(
                    job="watchdog",
                    state="ok" if problem is None else "failing",
                    last_success_at=now if problem is None else (
                        previous.last_success_at if previous else None),
                    last_error_at=now if problem else (
                        previous.last_error_at if previous else None),
                    last_error=problem or (previous.last_error if previous else None),
                    consecutive_failures=0 if problem is None else 1,
                    next_run_at=None,
                    updated_at=now,
                ),
            )
        except sqlite3.Error as error:  # a hung lane may hold the write lock; the journal has it
            log.warning("could not record the watchdog's state: %s", error)

    def _schedule_jobs(self) -> None:
        if not self.crm_enabled:
            return
        # schedule draws jittered intervals with randint, so they are whole seconds/minutes.
        m = self.settings.mirror
        low = max(1, round(m.interval_seconds - m.jitter_seconds))
        high = max(low, round(m.interval_seconds + m.jitter_seconds))
        self.scheduler.every(low).to(high).seconds.do(self._submit, self.jobs["mirror"])
        sweep = max(1, round(m.sweep_interval_seconds))
        self.scheduler.every(sweep).seconds.do(self._submit, self.jobs["sweep"])
        if m.full_resync_interval_hours > 0:
            minutes = max(1, round(m.full_resync_interval_hours * 60))
            self.scheduler.every(minutes).minutes.do(self._submit, self.jobs["full_resync"])

    def _submit(self, job: Job) -> None:
        if self.lane is not None and job.ready():
            self.lane.submit(self._job_task(job))

    def _poll_control(self, conn: sqlite3.Connection) -> None:
        if self.lane is None and self.documents is None:  # `syncd --resync` refuses first
            return
        # A plain read first: the main loop must not queue for the write lock every half
        # second (it would sit in SQLite's busy wait while a lane writes, deaf to signals).
        if not control.has_pending(conn):
            return
        running = control.running_ids(conn)
        if self.lane is not None and any(self.lane.queued(f"control-{i}") for i in running):
            return
        if self.documents is not None and self.documents.pending & set(running):
            return
        request = control.claim_pending(conn, now=utc_now())
        if request is not None and request.entity == "documents":
            if self.documents is None:
                control.finish(
                    conn, request.id, ok=False, now=utc_now(),
                    message="SharePoint is not configured in this daemon",
                )
                return
            log.info(
                "resync request #%d (documents%s) from %s accepted",
                request.id,
                f" library {request.record_id}" if request.record_id else "",
                request.requested_by,
            )
            self.documents.submit(request)
            return
        if request is None:
            return
        if self.lane is None:
            control.finish(
                conn, request.id, ok=False, now=utc_now(),
                message="no CRM is configured in this daemon",
            )
            return
        if request is not None:
            log.info(
                "resync request #%d (%s%s) from %s accepted",
                request.id,
                request.entity,
                f" record {request.record_id}" if request.record_id else "",
                request.requested_by,
            )
            self.lane.submit(self._control_task(request))

    def _update_status(self) -> None:
        crm_jobs = (*self.jobs.values(), self.push.job) if self.push is not None else ()
        document_jobs = self.documents.jobs.values() if self.documents is not None else ()
        jobs = (*crm_jobs, *self.services.jobs.values(), *document_jobs)
        parts = [f"{job.name} {job.state}" for job in jobs]
        self.notifier.status("; ".join(parts))

    def _install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s", signal.Signals(signum).name)
            self.stop.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
