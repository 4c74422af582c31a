"""Per-job health as the daemon last recorded it; ``syncd status`` reads it."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from syncd.state.db import write_transaction


@dataclass(frozen=True)
class JobHealth:
    """One job's health row."""

    job: str
    state: str  # ok | failing | stopped | idle
    last_success_at: str | None
    last_error_at: str | None
    last_error: str | None
    consecutive_failures: int
    next_run_at: str | None
    updated_at: str


def save(conn: sqlite3.Connection, health: JobHealth) -> None:
    with write_transaction(conn):
        conn.execute(
            "INSERT INTO job_health (job, state, last_success_at, last_error_at, last_error, "
            "consecutive_failures, next_run_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(job) DO UPDATE SET state = excluded.state, "
            "last_success_at = excluded.last_success_at, last_error_at = excluded.last_error_at, "
            "last_error = excluded.last_error, "
            "consecutive_failures = excluded.consecutive_failures, "
            "next_run_at = excluded.next_run_at, updated_at = excluded.updated_at",
            (
                health.job,
                health.state,
                health.last_success_at,
                health.last_error_at,
                health.last_error,
                health.consecutive_failures,
                health.next_run_at,
                health.updated_at,
            ),
        )


def load_all(conn: sqlite3.Connection) -> list[JobHealth]:
    rows = conn.execute(
        "SELECT job, state, last_success_at, last_error_at, last_error, consecutive_failures, "
        "next_run_at, updated_at FROM job_health ORDER BY job"
    ).fetchall()
    return [JobHealth(*row) for row in rows]


def load(conn: sqlite3.Connection, job: str) -> JobHealth | None:
    return next((h for h in load_all(conn) if h.job == job), None)
