"""The mirror engine: brings the cache to the CRM's state, one atomic cycle at a time.

* Incremental cycle: list what changed since each entity's cursor (minus an overlap window
  against clock skew), then apply companies, contacts and devices together with their cursors in
  one short write transaction. Readers see all of a cycle or none of it.
* Full resync: list everything page by page into staging tables, committing each page with its
  resume point (a crash resumes after the last committed page), then swap the staged rows in with
  one transaction that also applies deletions and moves the cursors.
* Sweep: list every ID cheaply and diff against the cache to find deletions (and records the cache
  misses). A proportional delete guard holds suspicious mass deletions for an operator.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from syncd.connectors.crm.base import CRMAdapter, DeletionDetection, DeletionEvents, Page
from syncd.core.clock import iso, utc_now
from syncd.core.entities import ENTITY_ORDER, Entity
from syncd.core.errors import SyncdError
from syncd.engines.mapworker import MappedBatch, MappingWorker, map_batch, resolve
from syncd.mappings.loader import MappingSet
from syncd.state import suppressions
from syncd.state.cache import CacheStore, DataQualitySummary, RunCounts
from syncd.state.db import write_transaction

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int | None], None]
MAP_PIPELINE_DEPTH = 2  # pages being mapped in the worker while one commits


class StopRequested(SyncdError):
    """Shutdown was requested; committed work stays, uncommitted work is rolled back."""


class TooManyChangesError(SyncdError):
    """An incremental cycle met more changes than it holds in memory; a full resync follows."""


@dataclass(frozen=True)
class MirrorOptions:
    """Tunables of the engine (from the ``[crm]`` and ``[mirror]`` settings)."""

    overlap_seconds: float = 300.0
    delete_guard_share: float = 0.10
    delete_guard_min: int = 5
    max_incremental_records: int = 20_000
    sweep_repair_limit: int = 500
    # Full-resync listings at least this long are mapped in a worker process (see mapworker).
    map_worker_threshold: int = 5000


@dataclass
class CycleReport:
    """What a cycle did, per entity."""

    kind: str
    run_id: int | None = None
    upserted: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    fetched: dict[str, int] = field(default_factory=dict)
    data_as_of: datetime | None = None  # the CRM's clock when the listing started
    requests: int | None = None  # requests sent to the CRM (a batch counts once)

    def totals(self) -> RunCounts:
        return RunCounts(
            upserted=sum(self.upserted.values()),
            deleted=sum(self.deleted.values()),
            quarantined=sum(self.quarantined.values()),
            held_deletes=sum(self.held.values()),
        )

    def summary(self) -> str:
        t = self.totals()
        text = (
            f"{self.kind}: fetched {sum(self.fetched.values())}, changed {t.upserted}, "
            f"deleted {t.deleted}, quarantined {t.quarantined}, held deletes {t.held_deletes}"
        )
        return text if self.requests is None else f"{text}, {self.requests} requests"


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


class Prefetcher:
    """Fetch the next pages in a background thread while the caller applies this one.

    Network waits release the GIL, so fetching and applying overlap; at most ``depth`` pages
    wait in memory. An error in the fetcher is raised to the caller, in page order. When the
    caller stops early, the fetcher stops after its current request. ``waited`` adds up the
    seconds the caller spent waiting for a page (the rest of its time is applying).
    """

    def __init__(self, depth: int = 2) -> None:
        self.depth = depth
        self.waited = 0.0

    def __call__(self, pages: Iterator[Page]) -> Iterator[Page]:
        handoff: queue.Queue[object] = queue.Queue(maxsize=self.depth)
        abandoned = threading.Event()

        def put(item: object) -> bool:
            while not abandoned.is_set():
                try:
                    handoff.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for page in pages:
                    if not put(page):
                        return
                put(_DONE)
            except BaseException as error:  # handed to the consumer, raised there
                put(_Failed(error))

        threading.Thread(target=produce, name="crm-prefetch", daemon=True).start()
        try:
            while True:
                started = time.perf_counter()
                item = handoff.get()
                self.waited += time.perf_counter() - started
                if item is _DONE:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item  # type: ignore[misc]
        finally:
            abandoned.set()


class MirrorEngine:
    """Runs mirror cycles of one adapter into one cache connection."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        adapter: CRMAdapter,
        mappings: MappingSet,
        options: MirrorOptions | None = None,
        *,
        stop: threading.Event | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.conn = conn
        self.store = CacheStore(conn)
        self.adapter = adapter
        self.mappings = mappings
        self.options = options or MirrorOptions()
        self.stop = stop or threading.Event()
        self.progress = progress
        self.prefetcher = Prefetcher()
        self._announced_resume: list[Entity] | None = None

    # -- the scheduled job --------------------------------------------------------------------

    def run_cycle(self) -> CycleReport:
        """One scheduled mirror cycle: finish a pending full resync, start one for entities never
        synced, or else run an incremental cycle (falling back to a full resync when it meets
        more changes than it holds in memory)."""
        pending = self.pending_resync()
        if pending:
            # Said once per interrupted resync, not at every cycle that retries a failing one.
            level = logging.DEBUG if self._announced_resume == pending else logging.INFO
            log.log(level, "resuming the interrupted full resync of %s", ", ".join(pending))
            self._announced_resume = pending
            report = self.run_full(pending, resume=True)
            self._announced_resume = None
            return report
        unsynced = [e for e in ENTITY_ORDER if self.store.cursor(e) is None]
        if unsynced:
            return self.run_full(unsynced)
        try:
            return self.run_incremental()
        except TooManyChangesError:
            log.warning(
                "more than %d changes since the last cycle; running a full resync",
                self.options.max_incremental_records,
            )
            return self.run_full(ENTITY_ORDER)

    def pending_resync(self) -> list[Entity]:
        """Entities of an interrupted full resync, in fetch order."""
        progress = self.store.resync_progress()
        return [e for e in ENTITY_ORDER if e.value in progress]

    # -- incremental --------------------------------------------------------------------------

    def run_incremental(self) -> CycleReport:
        report = CycleReport("incremental")
        started = utc_now()
        requests_before = self.adapter.requests_made
        events = self._read_deletion_events()
        fetched: dict[Entity, MappedBatch] = {}
        server_times: dict[Entity, datetime] = {}
        total = 0
        for entity in ENTITY_ORDER:
            cursor = self.store.cursor(entity)
            since = cursor - timedelta(seconds=self.options.overlap_seconds) if cursor else None
            changed = fetched[entity] = MappedBatch()
            for page in self.adapter.list_changed(entity, since):
                self._check_stop()
                if page.server_time is not None:
                    server_times.setdefault(entity, page.server_time)
                changed.extend(map_batch(self.mappings, entity.value, page.records))
                total += len(page.records)
                if self.progress:
                    self.progress(entity.value, len(changed), None)
                if total > self.options.max_incremental_records:
                    raise TooManyChangesError(f"{total} changed records")
            report.fetched[entity] = len(changed)
            log.debug(
                "%d %s changed since %s",
                report.fetched[entity],
                entity.value,
                iso(since) if since else "the beginning",
            )
        now = utc_now()
        lifted: dict[str, int] = {}
        with write_transaction(self.conn):
            run_id = self.store.start_run(
                "incremental", ENTITY_ORDER, started_at=started, now=now
            )
            for entity in reversed(ENTITY_ORDER):  # children first, then parents
                gone = events.deleted.get(entity, set())
                report.deleted[entity] = self.store.delete(entity, sorted(gone))
                lifted[entity] = suppressions.lift_ids(self.conn, entity, gone)
            for entity in ENTITY_ORDER:
                self._apply_mapped(entity, fetched[entity], report, run_id=run_id, now=now)
                if entity in server_times:
                    self.store.set_cursor(entity, server_times[entity], now=now)
            report.data_as_of = self._data_as_of(server_times.values())
            report.run_id = run_id
            report.requests = self.adapter.requests_made - requests_before
            self.store.finish_run(
                run_id, report.totals(), data_as_of=report.data_as_of,
                details=self._details(report), requests=report.requests,
            )
        if events.ack_token:
            self.adapter.acknowledge_deletions(events.ack_token)
        _log_lifted(lifted)
        log.info("%s (run #%s)", report.summary(), report.run_id)
        return report

    def _read_deletion_events(self) -> DeletionEvents:
        if DeletionDetection.EVENTS not in self.adapter.capabilities.deletion_detection:
            return DeletionEvents()
        return self.adapter.read_deletions()

    # -- full resync --------------------------------------------------------------------------

    def run_full(self, entities: Iterable[Entity], *, resume: bool = False) -> CycleReport:
        """A full resync of ``entities`` through staging; resumes a pending one when asked."""
        wanted = [e for e in ENTITY_ORDER if e in set(entities)]
        report = CycleReport("full")
        requests_before = self.adapter.requests_made
        progress = self.store.resync_progress()
        if not (resume and progress and set(progress) == {e.value for e in wanted}):
            with write_transaction(self.conn):
                self.store.begin_resync(wanted, now=utc_now())
            progress = self.store.resync_progress()
        # Counted up front, so that progress (and its estimate of the time left) covers every
        # entity from the start.
        totals: dict[Entity, int] = {}
        for entity in wanted:
            staged = progress[entity.value]
            totals[entity] = staged.records if staged.complete else self.adapter.count(entity)
            if self.progress:
                self.progress(entity.value, staged.records, totals[entity])
        worker: MappingWorker | None = None
        try:
            for entity in wanted:
                staged = progress[entity.value]
                if staged.complete:
                    continue
                total = totals[entity]
                if worker is None and total - staged.records >= self.options.map_worker_threshold:
                    log.info(
                        "full resync: mapping in a worker process (%s: %d records to go)",
                        entity.value,
                        total - staged.records,
                    )
                    worker = MappingWorker(self.mappings)
                self._stage_listing(
                    entity,
                    resume_after=staged.resume_after,
                    already=staged.records,
                    total=total,
                    worker=worker,
                )
        finally:
            if worker is not None:
                worker.close()
        report.requests = self.adapter.requests_made - requests_before
        return self._swap_in(wanted, report)

    def _stage_listing(
        self,
        entity: Entity,
        *,
        resume_after: str | None,
        already: int,
        total: int,
        worker: MappingWorker | None,
    ) -> None:
        """Stage every page of ``entity``, each committed with its resume point, in order.

        With a ``worker`` the next pages are mapped in its process while this one commits.
        """
        done = already
        in_flight: deque[tuple[Page, Future[MappedBatch] | MappedBatch]] = deque()
        for page in self.prefetcher(self.adapter.list_changed(entity, None, resume_after)):
            self._check_stop()
            mapped = (
                worker.submit(entity.value, page.records)
                if worker
                else map_batch(self.mappings, entity.value, page.records)
            )
            in_flight.append((page, mapped))
            while len(in_flight) > (MAP_PIPELINE_DEPTH if worker else 0):
                done = self._commit_page(entity, *in_flight.popleft(), done=done, total=total)
        while in_flight:
            self._check_stop()
            done = self._commit_page(entity, *in_flight.popleft(), done=done, total=total)

    def _commit_page(
        self,
        entity: Entity,
        page: Page,
        mapped: Future[MappedBatch] | MappedBatch,
        *,
        done: int,
        total: int,
    ) -> int:
        batch = resolve(mapped)
        now = utc_now()
        with write_transaction(self.conn):
            self.store.stage_rows("stage", entity, batch.rows)
            self._quarantine(entity, batch.rejects, now)
            # Logged once per message when the resync is swapped in, not per page.
            self._record_data_quality(entity, batch, now)
            self.store.save_progress(
                entity,
                resume_after=page.resume_after,
                server_time=page.server_time,
                records=len(page.records),
                complete=page.resume_after is None,
            )
        done += len(page.records)
        log.debug(
            "staged %d %s (%d quarantined), next after ID %s",
            len(batch.rows),
            entity.value,
            len(batch.rejects),
            page.resume_after or "-",
        )
        if self.progress:
            self.progress(entity.value, done, total)
        return done

    def _swap_in(self, entities: list[Entity], report: CycleReport) -> CycleReport:
        progress = self.store.resync_progress()
        now = utc_now()
        started_at = min(progress[e.value].started_at for e in entities)
        server_times = {
            e: server_time
            for e in entities
            if (server_time := progress[e.value].server_time) is not None
        }
        data_quality: list[DataQualitySummary] = []
        lifted: dict[str, int] = {}
        with write_transaction(self.conn):
            run_id = self.store.start_run("full", entities, started_at=started_at, now=now)
            for entity in reversed(entities):
                missing = self.store.ids_missing_from_stage(entity)
                self._apply_deletions(entity, missing, report, now=now, truncated=None)
            for entity in entities:
                report.fetched[entity] = self.store.staged_count("stage", entity)
                report.upserted[entity] = self.store.merge("stage", entity, run_id=run_id, now=now)
                lifted[entity] = suppressions.lift_after_full_listing(self.conn, entity)
                self.store.forget_quarantine_not_seen_since(entity, started_at)
                report.quarantined[entity] = self.store.quarantine_counts().get(entity, 0)
                # Recorded as the pages were staged; what the listing did not meet is gone.
                self.store.forget_data_quality_not_seen_since(entity, started_at)
                data_quality += self.store.data_quality_summary(entity)
                if entity in server_times:
                    self.store.set_cursor(entity, server_times[entity], now=now)
            report.run_id = run_id
            report.data_as_of = self._data_as_of(server_times.values())
            self.store.finish_run(
                run_id, report.totals(), data_as_of=report.data_as_of,
                details=self._details(report), requests=report.requests,
            )
            self.store.end_resync()
        for summary in data_quality:
            _log_data_quality(summary.records, summary.entity, summary.message)
        _log_lifted(lifted)
        log.info("%s (run #%s)", report.summary(), report.run_id)
        return report

    # -- deletion sweep -----------------------------------------------------------------------

    def sweep(self) -> CycleReport:
        """Find deletions by listing every ID; also fetch records the cache is missing."""
        report = CycleReport("sweep")
        started = utc_now()
        requests_before = self.adapter.requests_made
        listed: dict[Entity, set[str]] = {}
        truncated: dict[Entity, str | None] = {}
        for entity in ENTITY_ORDER:
            expected = self.adapter.count(entity)
            ids: set[str] = set()
            for batch in self.adapter.list_ids(entity):
                self._check_stop()
                ids.update(batch)
                if self.progress:
                    self.progress(entity.value, len(ids), expected)
            listed[entity] = ids
            report.fetched[entity] = len(ids)
            tolerance = max(5, int(expected * 0.01))
            truncated[entity] = (
                f"listing truncated: {len(ids)} IDs listed of {expected} counted"
                if len(ids) < expected - tolerance
                else None
            )
        repairs = self._fetch_missing(listed)
        now = utc_now()
        lifted: dict[str, int] = {}
        with write_transaction(self.conn):
            run_id = self.store.start_run("sweep", ENTITY_ORDER, started_at=started, now=now)
            for entity in reversed(ENTITY_ORDER):
                gone = sorted(self.store.live_ids(entity) - listed[entity])
                self._apply_deletions(entity, gone, report, now=now, truncated=truncated[entity])
                if truncated[entity] is None:  # only a complete listing says what the CRM lost
                    lifted[entity] = suppressions.lift_unlisted(self.conn, entity, listed[entity])
            for entity in ENTITY_ORDER:
                self._apply_mapped(entity, repairs[entity], report, run_id=run_id, now=now)
            report.run_id = run_id
            report.requests = self.adapter.requests_made - requests_before
            self.store.finish_run(
                run_id, report.totals(), data_as_of=None, details=self._details(report),
                requests=report.requests,
            )
        _log_lifted(lifted)
        log.info("%s (run #%s)", report.summary(), report.run_id)
        return report

    def _fetch_missing(self, listed: dict[Entity, set[str]]) -> dict[Entity, MappedBatch]:
        repairs: dict[Entity, MappedBatch] = {}
        for entity in ENTITY_ORDER:
            quarantined = self.store.quarantined_ids(entity)
            candidates = listed[entity] - self.store.live_ids(entity) - quarantined
            # Erased subjects the CRM still has are not missing: the mirror keeps them out.
            candidates -= suppressions.suppressed_ids(self.conn, entity, candidates)
            missing = sorted(
                candidates,
                key=lambda i: int(i) if i.isdigit() else 0,
            )
            missing = missing[: self.options.sweep_repair_limit]
            repairs[entity] = MappedBatch()
            if missing:
                log.info(
                    "sweep found %d %s missing from the cache; fetching them",
                    len(missing),
                    entity.value,
                )
                raws = self.adapter.get_records(entity, missing)
                repairs[entity] = map_batch(self.mappings, entity.value, raws)
        return repairs

    def _apply_deletions(
        self,
        entity: Entity,
        gone: Sequence[str],
        report: CycleReport,
        *,
        now: datetime,
        truncated: str | None,
    ) -> None:
        """Delete ``gone`` unless the delete guard holds them (then they wait for an operator)."""
        live = self.store.count(entity)
        limit = max(self.options.delete_guard_min, self.options.delete_guard_share * live)
        reason = truncated
        if reason is None and len(gone) > limit:
            reason = (
                f"{len(gone)} of {live} {entity.value} would be deleted, over the guard "
                f"({self.options.delete_guard_share:.0%}, at least "
                f"{self.options.delete_guard_min})"
            )
        if gone and reason is not None:
            self.store.hold_deletes(entity, gone, reason, now=now)
            report.held[entity] = len(gone)
            log.warning(
                "delete guard: holding %d %s deletions: %s", len(gone), entity.value, reason
            )
            return
        self.store.clear_held_deletes(entity)
        report.deleted[entity] = report.deleted.get(entity, 0) + self.store.delete(entity, gone)

    # -- one record ---------------------------------------------------------------------------

    def resync_record(self, entity: Entity, crm_id: str) -> CycleReport:
        """Re-fetch one record; if the CRM no longer has it, remove it from the cache."""
        report = CycleReport("record")
        requests_before = self.adapter.requests_made
        raws = self.adapter.get_records(entity, [crm_id])
        report.requests = self.adapter.requests_made - requests_before
        mapped = map_batch(self.mappings, entity.value, raws)
        report.fetched[entity] = len(raws)
        now = utc_now()
        with write_transaction(self.conn):
            run_id = self.store.start_run("record", [entity], started_at=now, now=now)
            self._apply_mapped(entity, mapped, report, run_id=run_id, now=now)
            if not raws:
                report.deleted[entity] = self.store.delete(entity, [crm_id])
                _log_lifted({entity: suppressions.lift_ids(self.conn, entity, [crm_id])})
            report.run_id = run_id
            self.store.finish_run(
                run_id, report.totals(), data_as_of=None, details=self._details(report),
                requests=report.requests,
            )
        log.info("%s %s %s (run #%s)", report.summary(), entity.value, crm_id, report.run_id)
        return report

    # -- helpers ------------------------------------------------------------------------------

    def _apply_mapped(
        self, entity: Entity, batch: MappedBatch, report: CycleReport, *, run_id: int,
        now: datetime,
    ) -> None:
        """Merge mapped rows into the live table, quarantine the rejects and record the
        data-quality warnings (inside the caller's transaction, through the connection's scratch
        table); logs one line per distinct warning."""
        self.store.ensure_scratch()
        self.store.clear_staging("scratch", entity)
        self.store.stage_rows("scratch", entity, batch.rows)
        report.upserted[entity] = self.store.merge("scratch", entity, run_id=run_id, now=now)
        self.store.clear_staging("scratch", entity)
        report.quarantined[entity] = self._quarantine(entity, batch.rejects, now)
        self._record_data_quality(entity, batch, now)
        records_per_message = Counter(message for _, message in set(batch.warnings))
        for message, records in sorted(records_per_message.items()):
            _log_data_quality(records, entity.value, message)

    def _quarantine(
        self, entity: Entity, rejects: Sequence[tuple[str, str]], now: datetime
    ) -> int:
        for crm_id, reason in rejects:
            self.store.quarantine(entity, crm_id, reason, now=now)
        if rejects:
            log.warning(
                "quarantined %d %s record(s) that do not fit the mapping",
                len(rejects),
                entity.value,
            )
        return len(rejects)

    def _record_data_quality(self, entity: Entity, batch: MappedBatch, now: datetime) -> None:
        """Store the batch's data-quality warnings; its records' other warnings are forgotten
        (a record applied again without a warning no longer has it)."""
        if batch.warnings or batch.rows:
            self.store.record_data_quality(
                entity, (row[0] for row in batch.rows), batch.warnings, now=now
            )

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise StopRequested("stop requested")

    @staticmethod
    def _data_as_of(times: Iterable[datetime]) -> datetime | None:
        values = list(times)
        return min(values) if values else None

    @staticmethod
    def _details(report: CycleReport) -> dict[str, dict[str, int]]:
        details: dict[str, dict[str, int]] = {}
        for name in ("fetched", "upserted", "deleted", "quarantined", "held"):
            for entity, value in getattr(report, name).items():
                details.setdefault(str(entity), {})[name] = value
        return details


def _log_data_quality(records: int, entity: str, message: str) -> None:
    """One warning line for one data-quality message: how many records of ``entity`` carry it
    (the message names no value; no record IDs are logged)."""
    log.warning("data quality: %d %s: %s", records, entity, message)


def _log_lifted(lifted: dict[str, int]) -> None:
    """One line per entity whose erased records' suppressions the CRM's deletions lifted (a
    count; suppressions never name anyone)."""
    for entity, count in lifted.items():
        if count:
            log.info(
                "lifted the suppression of %d erased %s: the CRM no longer has them",
                count,
                entity,
            )


def apply_held_deletes(conn: sqlite3.Connection, entity: Entity) -> int:
    """Apply the held deletions of ``entity`` (an operator's explicit decision; local only)."""
    store = CacheStore(conn)
    now = utc_now()
    with write_transaction(conn):
        ids = store.held_deletes(entity)
        run_id = store.start_run("held_deletes", [entity], started_at=now, now=now)
        deleted = store.delete(entity, ids)
        store.clear_held_deletes(entity)
        store.finish_run(
            run_id,
            RunCounts(deleted=deleted),
            data_as_of=None,
            details={entity.value: {"deleted": deleted}},
        )
    return deleted
