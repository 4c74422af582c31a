"""Resync requests from the CLI to the running daemon, and their progress.

The CLI inserts a request; the daemon claims it, reports progress and finishes it. At most one
request is pending or running at a time: the insert refuses while another is open.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from syncd.state.db import write_transaction


@dataclass(frozen=True)
class ControlRequest:
    """One resync request as stored."""

    id: int
    action: str
    entity: str
    record_id: str | None
    requested_by: str
    requested_at: str
    status: str
    progress_done: int
    progress_total: int | None
    message: str | None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


_COLUMNS = (
    "id, action, entity, record_id, requested_by, requested_at, status, progress_done, "
    "progress_total, message"
)


def _from_row(row: tuple[object, ...]) -> ControlRequest:
    return ControlRequest(*row)  # type: ignore[arg-type]


def open_request(conn: sqlite3.Connection) -> ControlRequest | None:
    """The pending or running request, if any."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM control_requests WHERE status IN ('pending', 'running') "
        "ORDER BY id LIMIT 1"
    ).fetchone()
    return _from_row(row) if row else None


def request_resync(
    conn: sqlite3.Connection, *, entity: str, record_id: str | None, actor: str, now: str
) -> tuple[ControlRequest, bool]:
    """Insert a resync request unless one is open; returns ``(request, created)``."""
    with write_transaction(conn):
        existing = open_request(conn)
        if existing is not None:
            return existing, False
        cursor = conn.execute(
            "INSERT INTO control_requests (action, entity, record_id, requested_by, requested_at) "
            "VALUES ('resync', ?, ?, ?, ?)",
            (entity, record_id, actor, now),
        )
        assert cursor.lastrowid is not None
        request = get(conn, cursor.lastrowid)
    assert request is not None
    return request, True


def get(conn: sqlite3.Connection, request_id: int) -> ControlRequest | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM control_requests WHERE id = ?", (request_id,)
    ).fetchone()
    return _from_row(row) if row else None


def claim_pending(conn: sqlite3.Connection, *, now: str) -> ControlRequest | None:
    """Mark the oldest pending request running and return it (the daemon calls this)."""
    with write_transaction(conn):
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM control_requests WHERE status = 'pending' ORDER BY id LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            "UPDATE control_requests SET status = 'running', started_at = ? WHERE id = ?",
            (now, row[0]),
        )
    return get(conn, int(row[0]))


def report_progress(
    conn: sqlite3.Connection, request_id: int, done: int, total: int | None
) -> None:
    with write_transaction(conn):
        conn.execute(
            "UPDATE control_requests SET progress_done = ?, progress_total = ? WHERE id = ?",
            (done, total, request_id),
        )


def finish(conn: sqlite3.Connection, request_id: int, *, ok: bool, message: str, now: str) -> None:
    with write_transaction(conn):
        conn.execute(
            "UPDATE control_requests SET status = ?, message = ?, finished_at = ? WHERE id = ?",
            ("done" if ok else "failed", message, now, request_id),
        )


def fail_abandoned(conn: sqlite3.Connection, *, now: str) -> int:
    """At daemon start: requests left 'running' by a dead daemon go back to 'pending'."""
    with write_transaction(conn):
        cursor = conn.execute(
            "UPDATE control_requests SET status = 'pending', started_at = NULL "
            "WHERE status = 'running'"
        )
    return cursor.rowcount
