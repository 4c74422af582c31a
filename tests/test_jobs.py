"""Per-job health: log once on failure and once on recovery, backoff, fatal stops."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from syncd.core.errors import AuthError, RateLimitedError, UpstreamUnavailableError
from syncd.daemon.jobs import Job
from syncd.state import health
from syncd.state.db import connect


class Flaky:
    def __init__(self, errors: list[Exception | None]) -> None:
        self.errors = errors

    def __call__(self) -> str:
        error = self.errors.pop(0)
        if error is not None:
            raise error
        return "ok"


def test_logs_once_when_failing_and_once_when_recovering(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conn = connect(tmp_path / "c.sqlite3")
    failure = UpstreamUnavailableError("crm.contact.list: read timeout")
    job = Job("mirror", Flaky([failure, failure, failure, None]), base_backoff=0.0)
    caplog.set_level(logging.DEBUG, logger="syncd.daemon.jobs")
    for _ in range(4):
        job.run(conn)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(warnings) == 1 and "failing" in warnings[0].getMessage()
    assert len(infos) == 1 and "recovered after 3" in infos[0].getMessage()
    saved = health.load(conn, "mirror")
    assert saved is not None and saved.state == "ok" and saved.consecutive_failures == 0
    assert saved.last_error == "crm.contact.list: read timeout"


def test_backoff_grows_and_honours_retry_after() -> None:
    job = Job("mirror", Flaky([]), base_backoff=2.0, max_backoff=100.0, rng=random.Random(1))
    job.consecutive_failures = 1
    first = job.next_backoff(None)
    job.consecutive_failures = 5
    fifth = job.next_backoff(None)
    assert 1.0 <= first <= 2.0
    assert 16.0 <= fifth <= 32.0
    assert job.next_backoff(600.0) == 600.0


def test_failing_job_waits_for_its_backoff(tmp_path: Path) -> None:
    job = Job("mirror", Flaky([RateLimitedError("503", retry_after=3600), None]))
    assert job.run() is False
    assert job.state == "failing"
    assert job.ready() is False
    assert job.run() is False  # skipped: still backing off, the work was not called
    assert job.consecutive_failures == 1


def test_fatal_error_stops_the_job(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    conn = connect(tmp_path / "c.sqlite3")
    job = Job("mirror", Flaky([AuthError("crm.contact.list: NO_AUTH_FOUND")]))
    job.run(conn)
    assert job.stopped and not job.ready()
    assert any("stopped" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    saved = health.load(conn, "mirror")
    assert saved is not None and saved.state == "stopped"


def test_a_bug_does_not_kill_the_daemon() -> None:
    job = Job("mirror", Flaky([ZeroDivisionError("boom")]), base_backoff=0.0)
    assert job.run() is False
    assert job.state == "failing"
    assert job.last_error == "internal error: ZeroDivisionError"
