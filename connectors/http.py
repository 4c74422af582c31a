"""HTTP plumbing shared by every connector: clients with timeouts, Retry-After parsing, and the
retry policy (tenacity) driven by the error hierarchy in :mod:`syncd.core.errors`."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from syncd import __version__
from syncd.core.errors import RetriableError, SyncdError, UpstreamUnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")

USER_AGENT = f"syncd/{__version__} (+https://baltic-lasers.example/syncd)"
# The longest single wait the retry policy accepts inside one call; a longer Retry-After ends the
# call with the error, and the job-level backoff (which survives across cycles) takes over.
MAX_INLINE_WAIT_SECONDS = 60.0


def make_client(
    *, connect_timeout: float, timeout: float, base_url: str = "", user_agent: str = USER_AGENT
) -> httpx.Client:
    """An httpx client with explicit timeouts on every phase and no implicit redirects."""
    return httpx.Client(
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        follow_redirects=False,
        headers={"User-Agent": user_agent, "Accept": "application/json"},
        limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
    )


def retry_after_seconds(headers: httpx.Headers, *, now: datetime | None = None) -> float | None:
    """The ``Retry-After`` header in seconds (delta-seconds or HTTP-date), or None."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def transport_error(error: httpx.TransportError, what: str) -> UpstreamUnavailableError:
    """Describe a network failure without URLs (which may hold tokens)."""
    kind = {
        httpx.ConnectTimeout: "connect timeout",
        httpx.ReadTimeout: "read timeout",
        httpx.WriteTimeout: "write timeout",
        httpx.PoolTimeout: "connection pool timeout",
        httpx.ConnectError: "connection refused or unreachable",
        httpx.RemoteProtocolError: "connection closed without a complete response",
        httpx.ReadError: "connection reset while reading",
    }.get(type(error), type(error).__name__)
    return UpstreamUnavailableError(f"{what}: {kind}")


class RetryPolicy:
    """Exponential backoff with full jitter, honouring the upstream's ``retry_after`` hints.

    ``stop`` (when given) aborts waiting as soon as it is set, so shutdown is never held up by a
    backoff sleep.
    """

    def __init__(
        self,
        *,
        max_attempts: int = 5,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        stop: threading.Event | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.stop = stop or threading.Event()
        self._rng = rng or random.Random()

    def delay_for(self, attempt: int, error: BaseException | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        backoff = self._rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
        hint = getattr(error, "retry_after", None)
        return max(backoff, float(hint)) if hint is not None else backoff

    def call(
        self, fn: Callable[[], T], *, what: str, retry_on: type[RetriableError] = RetriableError
    ) -> T:
        """Run ``fn``, retrying ``retry_on`` errors per the policy; others pass through."""

        def wait(state: RetryCallState) -> float:
            if state.attempt_number >= self.max_attempts:
                return 0.0  # tenacity asks for a wait before it stops: no retry follows
            error = state.outcome.exception() if state.outcome else None
            delay = self.delay_for(state.attempt_number, error)
            if delay > MAX_INLINE_WAIT_SECONDS:
                raise error if isinstance(error, SyncdError) else RetriableError(what)
            log.debug(
                "%s: attempt %d failed (%s); retrying in %.2fs",
                what,
                state.attempt_number,
                error,
                delay,
            )
            return delay

        def sleep(seconds: float) -> None:
            if self.stop.wait(seconds):
                raise RetriableError(f"{what}: interrupted by shutdown")

        retrying = Retrying(
            retry=retry_if_exception_type(retry_on),
            stop=stop_after_attempt(self.max_attempts),
            wait=wait,
            sleep=sleep,
            reraise=True,
        )
        return retrying(fn)
