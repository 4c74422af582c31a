"""Retention: the purge of each store, and each store's oldest row.

A *store* is what one retention window covers (``[retention]`` in the settings; the table in
docs/privacy.md says what each holds and why). Every purge here takes its cutoff ``before``
(``now`` minus the store's window), runs its own short write transaction and removes (or, for
outbox requests, clears) exactly the rows older than the cutoff: a row at the cutoff or younger is
untouched. The retention job (:mod:`syncd.engines.retention`) runs them in turn.

Outbox requests are never touched while ``sending``: only ``done`` and ``dead`` rows are cleared
or removed, and a cleared ``dead`` request can no longer be retried
(:func:`syncd.state.outbox.retry`), so nothing can lease it while its spool files are deleted.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from syncd.core.clock import iso, iso_ms, parse_iso_or_none
from syncd.state import audit, control, vies_cache
from syncd.state.cache import ENTITIES, CacheStore
from syncd.state.db import write_transaction
from syncd.state.outbox import LocalFile

# When an outbox request ended: delivered, or last changed (went dead).
_REQUEST_ENDED: Final = (
    "coalesce(CASE status WHEN 'done' THEN delivered_at END, updated_at, created_at)"
)

# Per store: the rows its window applies to (FROM ... [WHERE ...]), and the time that ages them.
# The outbox stores count the requests still holding what their window limits.
_AGED_ROWS: Final[dict[str, tuple[str, str]]] = {
    "vies_answers": ("vies_answers", "fetched_at"),
    "audit_log": ("audit_log", "at"),
    "delivered_requests": (
        "outbox_requests WHERE status = 'done' AND message_dropped_at IS NULL",
        "delivered_at",
    ),
    "dead_requests": (
        "outbox_requests WHERE status = 'dead' AND message_dropped_at IS NULL",
        "coalesce(updated_at, created_at)",
    ),
    "request_rows": ("outbox_requests WHERE status IN ('done', 'dead')", _REQUEST_ENDED),
    # The newest run always stays (the portal's "data as of"), so it is not aged.
    "sync_runs": ("sync_runs WHERE id < (SELECT max(id) FROM sync_runs)", "finished_at"),
    "control_requests": ("control_requests WHERE status IN ('done', 'failed')", "finished_at"),
    "quarantine": ("quarantine", "last_seen_at"),
    "held_deletes": ("held_deletes", "detected_at"),
    "resync_progress": ("resync_progress", "started_at"),
}

STORES: Final = tuple(_AGED_ROWS)
"""Every store with a retention window, in the order the retention job purges them."""

_FORGET_DETAILS: Final = (
    "message = NULL, contact_phone = NULL, contact_email = NULL, contact_address = NULL, "
    "message_dropped_at = :now"
)


@dataclass(frozen=True)
class StoreAge:
    """How much a store holds under its window, and since when."""

    store: str
    rows: int  # the rows its window applies to
    oldest: datetime | None  # the oldest of them; None when there are none

    def age_seconds(self, now: datetime) -> float | None:
        """Seconds since the oldest row (never negative), or None when the store is empty."""
        if self.oldest is None:
            return None
        return max(0.0, (now - self.oldest).total_seconds())


def ages(conn: sqlite3.Connection) -> dict[str, StoreAge]:
    """Each store's rows and oldest row (for ``syncd status`` and ``/metrics``)."""
    found: dict[str, StoreAge] = {}
    for store, (rows, moment) in _AGED_ROWS.items():
        count, oldest = conn.execute(f"SELECT count(*), min({moment}) FROM {rows}").fetchone()
        found[store] = StoreAge(store, int(count), parse_iso_or_none(oldest))
    return found


# -- the purges, one per store -----------------------------------------------------------------


def purge_vies_answers(conn: sqlite3.Connection, *, before: datetime, now: datetime) -> int:
    """Delete VIES answers fetched before ``before``; with them circuits that have closed and
    lookup counters older than :data:`~syncd.state.vies_cache.COUNTS_KEEP_DAYS` days (neither
    holds personal data). Returns the rows deleted."""
    return vies_cache.purge(conn, before, now=now)


def purge_audit_log(conn: sqlite3.Connection, *, before: datetime) -> int:
    """Delete audit entries written before ``before``."""
    with write_transaction(conn):
        return audit.prune(conn, before=before)


def clear_delivered_requests(conn: sqlite3.Connection, *, before: datetime, now: datetime) -> int:
    """Forget the message, contact details and file names of requests delivered before
    ``before``; the row keeps its key, type, status, CRM ID and times for the portal. Returns
    how many requests were cleared."""
    return _forget_details(conn, "status = 'done' AND delivered_at < :before", before, now)


def clear_dead_requests(conn: sqlite3.Connection, *, before: datetime, now: datetime) -> int:
    """Forget the message, contact details and file names of requests dead since before
    ``before`` (the row keeps its last error too). Their spool files are then due for deletion:
    :func:`dead_request_files`. Returns how many requests were cleared."""
    return _forget_details(
        conn, "status = 'dead' AND coalesce(updated_at, created_at) < :before", before, now
    )


def _forget_details(conn: sqlite3.Connection, where: str, before: datetime, now: datetime) -> int:
    chosen = f"SELECT id FROM outbox_requests WHERE {where} AND message_dropped_at IS NULL"
    params = {"before": iso_ms(before), "now": iso_ms(now)}
    with write_transaction(conn):
        conn.execute(
            f"UPDATE outbox_files SET original_name = '' WHERE request_id IN ({chosen})", params
        )
        return conn.execute(
            f"UPDATE outbox_requests SET {_FORGET_DETAILS} WHERE id IN ({chosen})", params
        ).rowcount


def dead_request_files(conn: sqlite3.Connection) -> list[LocalFile]:
    """Spool files of dead requests whose details were forgotten, not known to be deleted yet
    (repeatable: a crash between clearing and deleting leaves them for the next run). A rejected
    file keeps its status and reason after deletion, so it is listed again; deleting it again is
    a no-op."""
    return [
        LocalFile(*row)
        for row in conn.execute(
            "SELECT f.id, f.request_id, f.position, f.path FROM outbox_files f "
            "JOIN outbox_requests r ON r.id = f.request_id "
            "WHERE r.status = 'dead' AND r.message_dropped_at IS NOT NULL "
            "AND f.status IN ('pending', 'uploaded', 'rejected') ORDER BY f.id"
        )
    ]


def delete_request_rows(conn: sqlite3.Connection, *, before: datetime) -> int:
    """Delete delivered and dead requests (their file rows go with them) that ended before
    ``before`` and whose details were already forgotten."""
    with write_transaction(conn):
        return conn.execute(
            "DELETE FROM outbox_requests WHERE status IN ('done', 'dead') "
            f"AND message_dropped_at IS NOT NULL AND {_REQUEST_ENDED} < ?",
            (iso_ms(before),),
        ).rowcount


def purge_sync_runs(conn: sqlite3.Connection, *, before: datetime) -> int:
    """Delete cycle records that finished before ``before``; the newest always stays."""
    with write_transaction(conn):
        return conn.execute(
            "DELETE FROM sync_runs WHERE finished_at < ? "
            "AND id < (SELECT max(id) FROM sync_runs)",
            (iso(before),),
        ).rowcount


def purge_control_requests(conn: sqlite3.Connection, *, before: datetime) -> int:
    """Delete resync requests that finished before ``before`` (open ones stay)."""
    with write_transaction(conn):
        return control.prune_finished(conn, before=before)


def purge_quarantine(conn: sqlite3.Connection, *, before: datetime) -> int:
    """Delete quarantine entries last met before ``before`` (a record still failing is met
    again by the next full resync and quarantined afresh)."""
    with write_transaction(conn):
        return conn.execute(
            "DELETE FROM quarantine WHERE last_seen_at < ?", (iso(before),)
        ).rowcount


def purge_held_deletes(conn: sqlite3.Connection, *, before: datetime) -> int:
    """Delete held deletions no sweep has confirmed since ``before`` (each sweep that holds
    them again writes them anew; the next sweep decides afresh)."""
    with write_transaction(conn):
        return conn.execute(
            "DELETE FROM held_deletes WHERE detected_at < ?", (iso(before),)
        ).rowcount


def purge_resync_progress(conn: sqlite3.Connection, *, before: datetime) -> int:
    """Discard a full resync abandoned since before ``before``: its progress, its staged
    records (copies of CRM data) and the data-quality warnings of staged records that never
    reached the cache. Returns the rows deleted (0 when no resync is that old)."""
    with write_transaction(conn):
        latest = conn.execute("SELECT max(started_at) FROM resync_progress").fetchone()[0]
        if latest is None or latest >= iso(before):
            return 0
        removed = int(conn.execute("SELECT count(*) FROM resync_progress").fetchone()[0])
        for entity in ENTITIES:
            removed += int(
                conn.execute(f"SELECT count(*) FROM stage_{entity}").fetchone()[0]
            )
            conn.execute(
                "DELETE FROM data_quality WHERE entity = ? AND crm_id NOT IN "
                f"(SELECT crm_id FROM main.{entity})",
                (entity,),
            )
        CacheStore(conn).end_resync()
    return removed
