"""The retention job: every store purged to its window, each in its own short transaction.

:func:`purge_all` runs the purges of :mod:`syncd.state.retention` in turn with ``now`` minus
each store's window as the cutoff, then deletes the spool files of dead requests whose details
it forgot. A store that fails (the database busy past its timeout, a spool file that cannot be
deleted) does not stop the others; the job then fails with :class:`RetentionError` naming the
stores, so its health shows it, and the next run tries again.

:func:`store_health` tells, per store, how many rows it holds, its oldest row, and whether that
row is older than its window plus one purge interval: then the purge is not doing its work.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from syncd.core.errors import RetriableError, SyncdError
from syncd.engines.spool import remove_spool_file
from syncd.state import outbox
from syncd.state import retention as stores
from syncd.state.retention import STORES

log = logging.getLogger(__name__)


class RetentionError(RetriableError):
    """Some stores could not be purged this time; the next run tries again."""


@dataclass(frozen=True)
class RetentionOptions:
    """What the retention job needs (from ``[retention]`` and the spool's place)."""

    windows: Mapping[str, timedelta]  # store -> how long it keeps a row; every STORES entry
    purge_interval: timedelta
    spool: Path


@dataclass
class RetentionReport:
    """What one run removed: rows per store (cleared requests for the outbox's detail stores),
    and the spool files of dead requests deleted."""

    purged: dict[str, int] = field(default_factory=dict)
    files_deleted: int = 0

    def summary(self) -> str | None:
        """One log line, or None when nothing was due."""
        parts = [f"{store} {count}" for store, count in self.purged.items() if count]
        if self.files_deleted:
            parts.append(f"{self.files_deleted} spool file(s) of dead requests")
        return f"retention: removed {', '.join(parts)}" if parts else None


def purge_all(
    conn: sqlite3.Connection, options: RetentionOptions, *, now: datetime
) -> RetentionReport:
    """Purge every store to its window at ``now``; raises :class:`RetentionError` after the
    others are done when a store failed."""
    missing = set(STORES) - set(options.windows)
    if missing:
        raise ValueError(f"no retention window for {', '.join(sorted(missing))}")
    report = RetentionReport()
    failed: list[str] = []
    for store in STORES:
        try:
            report.purged[store] = _PURGES[store](conn, now - options.windows[store], now)
        except sqlite3.OperationalError as error:
            log.warning("retention: purging %s failed: %s", store, error)
            failed.append(store)
        if store == "dead_requests":
            try:
                report.files_deleted, not_deleted = _delete_dead_request_files(
                    conn, options.spool
                )
            except sqlite3.OperationalError as error:
                log.warning("retention: deleting files of dead requests failed: %s", error)
                failed.append("spool files of dead requests")
            else:
                if not_deleted:
                    failed.append(f"{not_deleted} spool file(s) of dead requests")
    if failed:
        raise RetentionError(f"not purged this time: {', '.join(failed)}")
    return report


def _delete_dead_request_files(conn: sqlite3.Connection, spool: Path) -> tuple[int, int]:
    """Delete the spool files of cleared dead requests; (deleted, failed)."""
    deleted = failed = 0
    for file in stores.dead_request_files(conn):
        try:
            removed = remove_spool_file(spool, file.path)
        except (OSError, SyncdError) as error:
            log.warning(
                "retention: could not delete file #%d of dead service request #%d: %s",
                file.position,
                file.request_id,
                type(error).__name__,
            )
            failed += 1
            continue
        outbox.mark_file_deleted(conn, file.file_id)
        deleted += int(removed)
    return deleted, failed


_Purge = Callable[[sqlite3.Connection, datetime, datetime], int]

_PURGES: dict[str, _Purge] = {
    "vies_answers": lambda c, before, now: stores.purge_vies_answers(c, before=before, now=now),
    "audit_log": lambda c, before, now: stores.purge_audit_log(c, before=before),
    "delivered_requests": lambda c, before, now: stores.clear_delivered_requests(
        c, before=before, now=now
    ),
    "dead_requests": lambda c, before, now: stores.clear_dead_requests(c, before=before, now=now),
    "request_rows": lambda c, before, now: stores.delete_request_rows(c, before=before),
    "sync_runs": lambda c, before, now: stores.purge_sync_runs(c, before=before),
    "control_requests": lambda c, before, now: stores.purge_control_requests(c, before=before),
    "quarantine": lambda c, before, now: stores.purge_quarantine(c, before=before),
    "held_deletes": lambda c, before, now: stores.purge_held_deletes(c, before=before),
    "resync_progress": lambda c, before, now: stores.purge_resync_progress(c, before=before),
}


@dataclass(frozen=True)
class StoreHealth:
    """One store as ``syncd status`` and ``/metrics`` show it."""

    store: str
    rows: int  # the rows its window applies to
    oldest: datetime | None
    age_seconds: float | None  # of the oldest row; None when the store is empty
    window_seconds: float
    overdue: bool  # the oldest row is older than the window plus one purge interval


def store_health(
    conn: sqlite3.Connection,
    windows: Mapping[str, timedelta],
    purge_interval: timedelta,
    now: datetime,
) -> list[StoreHealth]:
    """Every store's rows and oldest row against its window: a store whose oldest row is older
    than its window plus one purge interval is ``overdue`` (its purge is not working)."""
    health = []
    for store, age in stores.ages(conn).items():
        window = windows[store]
        seconds = age.age_seconds(now)
        health.append(
            StoreHealth(
                store=store,
                rows=age.rows,
                oldest=age.oldest,
                age_seconds=seconds,
                window_seconds=window.total_seconds(),
                overdue=seconds is not None
                and seconds > (window + purge_interval).total_seconds(),
            )
        )
    return health
