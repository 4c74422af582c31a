"""Resync requests from the CLI to the running daemon, and their progress.

The CLI inserts a request; the daemon claims it, reports progress and finishes it. At most one
request is pending or running at a time: the insert refuses while another is open.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from syncd.core.clock import iso, parse_iso
from syncd.state.db import write_transaction


@dataclass(frozen=True)
class ControlRequest:
    """One resync request as stored."""

    id: int
    action: str
    entity: str
    record_id: str | None
    requested_by: str
    requested_at: datetime
    status: str
    progress_done: int
    progress_total: int | None
    message: str | None
    progress_requests: int = 0  # CRM requests the resync has sent so far
    progress_eta_seconds: float | None = None  # estimated seconds left, when known

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


_COLUMNS = ", ".join(f.name for f in fields(ControlRequest))


def _from_row(row: tuple[Any, ...]) -> ControlRequest:
    """A request from its ``_COLUMNS`` row (``requested_at`` is stored as ISO text)."""
    values = dict(zip(_COLUMNS.split(", "), row, strict=True))
    return ControlRequest(**{**values, "requested_at": parse_iso(values["requested_at"])})


def open_request(conn: sqlite3.Connection) -> ControlRequest | None:
    """The pending or running request, if any."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM control_requests WHERE status IN ('pending', 'running') "
        "ORDER BY id LIMIT 1"
    ).fetchone()
    return _from_row(row) if row else None


def request_resync(
    conn: sqlite3.Connection, *, entity: str, record_id: str | None, actor: str, now: datetime
) -> tuple[ControlRequest, bool]:
    """Insert a resync request unless one is open; returns ``(request, created)``."""
    with write_transaction(conn):
        existing = open_request(conn)
        if existing is not None:
            return existing, False
        cursor = conn.execute(
            "INSERT INTO control_requests (action, entity, record_id, requested_by, requested_at) "
            "VALUES ('resync', ?, ?, ?, ?)",
            (entity, record_id, actor, iso(now)),
        )
        assert cursor.lastrowid is not None
        request = get(conn, cursor.lastrowid)
    assert request is not None
    return request, True


def get(conn: sqlite3.Connection, request_id: int) -> ControlRequest | None:
    """The request ``request_id``, whatever its status; None if there is no such request."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM control_requests WHERE id = ?", (request_id,)
    ).fetchone()
    return _from_row(row) if row else None


def has_pending(conn: sqlite3.Connection) -> bool:
    """Whether a request waits to be claimed (a plain read: it never waits for the write lock)."""
    return (
        conn.execute("SELECT 1 FROM control_requests WHERE status = 'pending' LIMIT 1").fetchone()
        is not None
    )


def running_ids(conn: sqlite3.Connection) -> list[int]:
    """The IDs of the requests a daemon has claimed and not finished."""
    return [
        int(request_id)
        for (request_id,) in conn.execute(
            "SELECT id FROM control_requests WHERE status = 'running' ORDER BY id"
        )
    ]


def claim_pending(conn: sqlite3.Connection, *, now: datetime) -> ControlRequest | None:
    """Mark the oldest pending request running and return it (the daemon calls this)."""
    with write_transaction(conn):
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM control_requests WHERE status = 'pending' ORDER BY id LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            "UPDATE control_requests SET status = 'running', started_at = ? WHERE id = ?",
            (iso(now), row[0]),
        )
    return get(conn, int(row[0]))


def report_progress(
    conn: sqlite3.Connection,
    request_id: int,
    done: int,
    total: int | None,
    *,
    requests: int = 0,
    eta_seconds: float | None = None,
) -> None:
    """Record how far the request's resync got (``total`` None while it is not known), the
    CRM requests it has sent and the estimated seconds left."""
    with write_transaction(conn):
        conn.execute(
            "UPDATE control_requests SET progress_done = ?, progress_total = ?, "
            "progress_requests = ?, progress_eta_seconds = ? WHERE id = ?",
            (done, total, requests, eta_seconds, request_id),
        )


def finish(
    conn: sqlite3.Connection, request_id: int, *, ok: bool, message: str, now: datetime
) -> None:
    """Close the request as ``done`` or ``failed`` with ``message`` (its report or error)."""
    with write_transaction(conn):
        conn.execute(
            "UPDATE control_requests SET status = ?, message = ?, finished_at = ? WHERE id = ?",
            ("done" if ok else "failed", message, iso(now), request_id),
        )


def fail_abandoned(conn: sqlite3.Connection) -> int:
    """At daemon start: requests left 'running' by a dead daemon go back to 'pending'."""
    with write_transaction(conn):
        cursor = conn.execute(
            "UPDATE control_requests SET status = 'pending', started_at = NULL "
            "WHERE status = 'running'"
        )
    return cursor.rowcount


def prune_finished(conn: sqlite3.Connection, *, before: datetime) -> int:
    """Drop the requests that finished before ``before``, inside the caller's transaction (the
    retention job's ``control_requests`` store); returns how many."""
    return conn.execute(
        "DELETE FROM control_requests WHERE status IN ('done', 'failed') AND finished_at < ?",
        (iso(before),),
    ).rowcount
