"""Scheduled jobs with their own health: last success, last error, backoff.

A job logs once when it starts failing and once when it recovers (not at every tick), keeps
backing off while it fails (honouring the upstream's ``retry_after``), and stops for good on a
:class:`~syncd.core.errors.FatalError` until the daemon restarts.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from syncd.core.clock import utc_now
from syncd.core.errors import FatalError, RetriableError, SkippableError
from syncd.engines.mirror import StopRequested
from syncd.state import health

log = logging.getLogger(__name__)


class Job:
    """A named unit of scheduled work; ``run`` never raises (except on shutdown)."""

    def __init__(
        self,
        name: str,
        work: Callable[[], str | None],
        *,
        base_backoff: float = 5.0,
        max_backoff: float = 900.0,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.work = work
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self._rng = rng or random.Random()
        self.state = "idle"
        self.consecutive_failures = 0
        self.last_success_at: datetime | None = None
        self.last_error_at: datetime | None = None
        self.last_error: str | None = None
        self.last_result: str | None = None
        self.backoff_until = 0.0  # time.monotonic()

    @property
    def stopped(self) -> bool:
        return self.state == "stopped"

    def ready(self) -> bool:
        """Whether the job may run now (not stopped, not backing off)."""
        return not self.stopped and time.monotonic() >= self.backoff_until

    def run(self, conn: sqlite3.Connection | None = None) -> bool:
        """Run once; returns True on success. Health is saved to ``conn`` when given."""
        if not self.ready():
            return False
        try:
            self.last_result = self.work()
        except StopRequested:
            return False
        except FatalError as error:
            self._failed(error, fatal=True)
        except (RetriableError, SkippableError) as error:
            self._failed(error, fatal=False)
        except Exception as error:  # a bug: keep the daemon alive, but say so loudly, once
            if self.state != "failing":
                log.exception("job %s crashed", self.name)
            self._failed(error, fatal=False, label=f"internal error: {type(error).__name__}")
        else:
            self._succeeded()
        finally:
            if conn is not None:
                self._save(conn)
        return self.state == "ok"

    def _succeeded(self) -> None:
        if self.state == "failing":
            log.info(
                "job %s recovered after %d failed attempt(s)", self.name, self.consecutive_failures
            )
        self.state = "ok"
        self.consecutive_failures = 0
        self.backoff_until = 0.0
        self.last_success_at = utc_now()

    def _failed(self, error: BaseException, *, fatal: bool, label: str | None = None) -> None:
        message = label or str(error) or type(error).__name__
        self.consecutive_failures += 1
        self.last_error = message
        self.last_error_at = utc_now()
        if fatal:
            self.state = "stopped"
            log.error("job %s stopped: %s; fix the cause and restart syncd", self.name, message)
            return
        delay = self.next_backoff(getattr(error, "retry_after", None))
        self.backoff_until = time.monotonic() + delay
        if self.state != "failing":
            log.warning(
                "job %s failing: %s (retrying with backoff, next in %.0fs)",
                self.name,
                message,
                delay,
            )
        else:
            log.debug(
                "job %s still failing (%d): %s", self.name, self.consecutive_failures, message
            )
        self.state = "failing"

    def next_backoff(self, retry_after: float | None) -> float:
        """Exponential backoff with jitter, never shorter than the upstream's hint."""
        exponent = min(self.consecutive_failures - 1, 16)
        delay = min(self.max_backoff, self.base_backoff * 2**exponent)
        delay = self._rng.uniform(delay / 2, delay)
        return max(delay, retry_after or 0.0)

    def record_success(self) -> None:
        """Count work done outside :meth:`run` (an operator's resync) as a success."""
        self._succeeded()

    def give_up(self, error: BaseException) -> None:
        """Stop the job for good without running it, as a :class:`FatalError` would (its lane
        could not start)."""
        self._failed(error, fatal=True)

    def save(self, conn: sqlite3.Connection) -> None:
        """Record the job's health now (``run`` does so after every run)."""
        self._save(conn)

    def _save(self, conn: sqlite3.Connection) -> None:
        wait = max(0.0, self.backoff_until - time.monotonic())
        next_run = utc_now() + timedelta(seconds=wait) if wait else None
        health.save(
            conn,
            health.JobHealth(
                job=self.name,
                state=self.state,
                last_success_at=self.last_success_at,
                last_error_at=self.last_error_at,
                last_error=self.last_error,
                consecutive_failures=self.consecutive_failures,
                next_run_at=next_run,
                updated_at=utc_now(),
            ),
        )
