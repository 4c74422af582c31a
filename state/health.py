"""Per-job health as the daemon last recorded it; ``syncd status``, ``/metrics`` and ``/healthz``
read it (through :mod:`syncd.state.overview`)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

from syncd.core.clock import iso, iso_or_none, parse_iso, parse_iso_or_none
from syncd.state.db import write_transaction


@dataclass(frozen=True)
class JobHealth:
    """One job's health row (times are aware UTC)."""

    job: str
    state: str  # ok | failing | stopped | idle
    last_success_at: datetime | None
    last_error_at: datetime | None
    last_error: str | None
    consecutive_failures: int
    next_run_at: datetime | None
    updated_at: datetime


def save(conn: sqlite3.Connection, health: JobHealth) -> None:
    """Insert or replace the row of ``health.job``."""
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
                iso_or_none(health.last_success_at),
                iso_or_none(health.last_error_at),
                health.last_error,
                health.consecutive_failures,
                iso_or_none(health.next_run_at),
                iso(health.updated_at),
            ),
        )


def load_all(conn: sqlite3.Connection) -> list[JobHealth]:
    """Every job's row, by job name."""
    rows = conn.execute(
        "SELECT job, state, last_success_at, last_error_at, last_error, consecutive_failures, "
        "next_run_at, updated_at FROM job_health ORDER BY job"
    ).fetchall()
    return [_from_row(*row) for row in rows]


def _from_row(
    job: str,
    state: str,
    last_success_at: str | None,
    last_error_at: str | None,
    last_error: str | None,
    consecutive_failures: int,
    next_run_at: str | None,
    updated_at: str,
) -> JobHealth:
    return JobHealth(
        job=job,
        state=state,
        last_success_at=parse_iso_or_none(last_success_at),
        last_error_at=parse_iso_or_none(last_error_at),
        last_error=last_error,
        consecutive_failures=int(consecutive_failures),
        next_run_at=parse_iso_or_none(next_run_at),
        updated_at=parse_iso(updated_at),
    )


def load(conn: sqlite3.Connection, job: str) -> JobHealth | None:
    """The row of ``job``; None before it first ran."""
    return next((h for h in load_all(conn) if h.job == job), None)
