"""A thin Bitrix24 REST client over an inbound webhook: calls, batches and error classification.

Why not Bitrix24's official SDK (``b24pysdk``): it brings a second HTTP stack (``requests``),
retries only HTTP 503 with its own sleeping loop (no Retry-After, no 429/``operating`` budget),
and ends in a bare ``RuntimeError``; the engine needs pages it can checkpoint and error types it
can classify. See the README's dependency notes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import httpx
import orjson

from syncd.connectors.budget import Priority, RequestBudget
from syncd.connectors.crm.bitrix24.wire import php_query_encode
from syncd.connectors.http import RetryPolicy, make_client, retry_after_seconds, transport_error
from syncd.core.errors import (
    AmbiguousWriteError,
    AuthError,
    FatalError,
    MalformedResponseError,
    RateLimitedError,
    SyncdError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
)

log = logging.getLogger(__name__)

_AUTH_CODES = frozenset(
    {
        "NO_AUTH_FOUND",
        "expired_token",
        "invalid_token",
        "INVALID_CREDENTIALS",
        "ACCESS_DENIED",
        "insufficient_scope",
        "user_access_error",
        "allowed_only_intranet_user",
        "WRONG_AUTH_TYPE",
    }
)
_FATAL_CODES = frozenset(
    {
        "PORTAL_DELETED",
        "OVERLOAD_LIMIT",
        "ERROR_METHOD_NOT_FOUND",
        "INVALID_REQUEST",
        "ERROR_MANIFEST_IS_NOT_AVAILABLE",
    }
)
_UNAVAILABLE_CODES = frozenset({"INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER"})
MAX_BATCH_COMMANDS = 50
# Default pause when the leaky bucket overflows without a Retry-After (it drains 2 requests/s).
QUERY_LIMIT_PAUSE_SECONDS = 1.0
# Default pause for an operating-time block without a reset time (the window is 10 minutes).
OPERATION_LIMIT_PAUSE_SECONDS = 60.0


@dataclass
class Response:
    """A successful call: the whole envelope (``result``, ``total``, ``next``, ``time``)."""

    body: dict[str, Any]
    nbytes: int = 0  # size of the answer as received (for batch sizing)

    @property
    def result(self) -> Any:
        return self.body["result"]

    @property
    def time(self) -> Mapping[str, Any]:
        value = self.body.get("time")
        return value if isinstance(value, dict) else {}


@dataclass
class BatchResult:
    """The parts of a ``batch`` answer, per command key."""

    result: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, SyncdError] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    next: dict[str, int] = field(default_factory=dict)
    time: Mapping[str, Any] = field(default_factory=dict)
    # Server seconds each command took (``result_time[k].processing``), when the CRM said.
    seconds: dict[str, float] = field(default_factory=dict)
    nbytes: int = 0


class Bitrix24Client:
    """Calls Bitrix24 REST methods through ``<webhook_url><method>.json``.

    ``webhook_url`` is ``https://<portal>/rest/<user>/<token>/``; it is a secret and never logged.
    ``budget`` (shared with the other lanes' clients) is drawn from once before every HTTP
    request, at ``priority``; ``on_request`` is called then too (the lane's heartbeat).
    """

    def __init__(
        self,
        webhook_url: str,
        *,
        connect_timeout: float = 10.0,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        operating_budget_seconds: float = 400.0,
        budget: RequestBudget | None = None,
        priority: Priority = "mirror",
        on_request: Callable[[], None] | None = None,
    ) -> None:
        if not webhook_url.endswith("/"):
            webhook_url += "/"
        self._webhook_url = webhook_url
        self._http = make_client(connect_timeout=connect_timeout, timeout=timeout)
        self.retry = retry or RetryPolicy()
        self.operating_budget_seconds = operating_budget_seconds
        self._pause_until: dict[str, float] = {}
        self._operating: dict[str, tuple[float, float]] = {}  # method → (used s, reset epoch)
        self._lock = threading.Lock()
        self.requests_sent = 0
        self.budget = budget
        self.priority: Priority = priority
        self.on_request = on_request

    def close(self) -> None:
        self._http.close()

    # -- calls --------------------------------------------------------------------------------

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Response:
        """Call ``method`` with retries per the policy; raises a classified :class:`SyncdError`."""
        return self.retry.call(lambda: self._call_once(method, params or {}), what=method)

    def batch(self, commands: Mapping[str, tuple[str, Mapping[str, Any]]]) -> BatchResult:
        """Run up to 50 commands in one request (``halt=0``); per-command errors are classified
        into ``BatchResult.errors`` instead of raising."""
        if len(commands) > MAX_BATCH_COMMANDS:
            raise ValueError(f"a batch takes at most {MAX_BATCH_COMMANDS} commands")
        cmd = {
            key: f"{method}?{php_query_encode(dict(params))}"
            for key, (method, params) in commands.items()
        }
        response = self.call("batch", {"halt": 0, "cmd": cmd})
        body = response.result
        if not isinstance(body, dict):
            raise MalformedResponseError("batch: result is not an object")
        out = BatchResult(time=response.time, nbytes=response.nbytes)
        try:
            out.result = {k: v for k, v in _as_map(body.get("result")).items() if k in commands}
            out.total = {k: int(v) for k, v in _as_map(body.get("result_total")).items()}
            out.next = {k: int(v) for k, v in _as_map(body.get("result_next")).items()}
        except (TypeError, ValueError):
            raise MalformedResponseError("batch: a total or next is not a number") from None
        for key, error in _as_map(body.get("result_error")).items():
            if key not in commands:
                # Never a bare KeyError: the answer does not belong to what was sent.
                raise MalformedResponseError("batch: an error for a command that was not sent")
            if isinstance(error, dict):
                out.errors[key] = classify(400, error, f"batch {commands[key][0]}")
        times = _as_map(body.get("result_time"))
        for key, (method, _params) in commands.items():
            block = times.get(key)
            if not isinstance(block, dict):
                continue
            # What the command cost: its processing time, or what the CRM charged it against
            # the method's operating budget (the rise of ``operating`` since the method's last
            # answer in this window), whichever is larger.
            before, _reset = self._operating.get(method.lower(), (None, None))
            self._note_operating_budget(block, method)
            seconds = _number(block.get("processing", block.get("duration"))) or 0.0
            after = _number(block.get("operating"))
            if before is not None and after is not None and after >= before:
                seconds = max(seconds, after - before)
            out.seconds[key] = seconds
        for key, error in out.errors.items():
            # A command refused for its method's operating time: the reset time that command's
            # result_time reported beats classify()'s default pause.
            wait = self.operating_wait(commands[key][0])
            if isinstance(error, RateLimitedError) and wait > 0:
                error.retry_after = wait
        return out

    def write(self, method: str, params: Mapping[str, Any]) -> Response:
        """Call a method that changes the CRM, exactly once: a write is never retried blindly.

        A failure after the request may have reached the CRM (timeout, dropped connection, 5xx)
        raises :class:`AmbiguousWriteError`; the caller looks its idempotency key up before
        writing again.
        """
        try:
            # A rate-limit refusal (503 QUERY_LIMIT_EXCEEDED, 429 OPERATION_TIME_LIMIT) means the
            # call did not run, so only that is retried here.
            return self.retry.call(
                lambda: self._call_once(method, params), what=method, retry_on=RateLimitedError
            )
        except UpstreamUnavailableError as error:
            if "connection refused" in str(error) or "connect timeout" in str(error):
                raise  # never sent
            raise AmbiguousWriteError(f"{error}; it may have been applied") from None

    def upload(
        self, url: str, field: str, name: str, content: BinaryIO, content_type: str
    ) -> Response:
        """POST one file as multipart/form-data to an upload URL the CRM handed out, streamed
        from ``content`` (httpx reads it in chunks, so memory stays bounded). Single attempt."""
        self._check_upload_url(url)

        def attempt() -> Response:
            content.seek(0)  # a retry after a rate-limit refusal sends the file from the start
            self._take_budget()
            try:
                with self._lock:
                    self.requests_sent += 1
                response = self._http.post(url, files={field: (name, content, content_type)})
            except httpx.TransportError as error:
                failure = transport_error(error, "file upload")
                if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
                    raise failure from None
                raise AmbiguousWriteError(f"{failure}; it may have been stored") from None
            return self._parse("file upload", response)

        return self.retry.call(attempt, what="file upload", retry_on=RateLimitedError)

    def _check_upload_url(self, url: str) -> None:
        # The upload URL comes from the CRM's answer: only ever send files back to the CRM host.
        expected = httpx.URL(self._webhook_url)
        actual = httpx.URL(url)
        if (actual.scheme, actual.host, actual.port) != (
            expected.scheme,
            expected.host,
            expected.port,
        ):
            raise FatalError("the CRM handed out an upload URL on another host; refusing it")

    def _call_once(self, method: str, params: Mapping[str, Any]) -> Response:
        self._respect_operating_pause(method)
        url = f"{self._webhook_url}{method}.json"
        for _hop in range(3):
            self._take_budget()
            try:
                with self._lock:
                    self.requests_sent += 1
                http_response = self._http.post(url, json=params)
            except httpx.TransportError as error:
                raise transport_error(error, method) from None
            if http_response.status_code in (301, 302, 307, 308):
                url = self._follow_domain_move(http_response, method)
                continue
            return self._parse(method, http_response)
        raise FatalError(f"{method}: too many redirects; check crm.url")

    def _follow_domain_move(self, response: httpx.Response, method: str) -> str:
        location = str(response.headers.get("location", ""))
        if not location.startswith(("http://", "https://")):
            raise FatalError(f"{method}: redirect without a usable Location; check crm.url")
        log.warning(
            "the CRM portal answered with a redirect (domain moved?); "
            "following it for now, update crm.url"
        )
        return location

    def _parse(self, method: str, response: httpx.Response) -> Response:
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            if response.status_code >= 500 or response.status_code in (429, 503):
                raise self._http_status_error(method, response) from None
            raise MalformedResponseError(
                f"{method}: HTTP {response.status_code} with a body that is not JSON "
                f"({_content_kind(response)})"
            ) from None
        if not isinstance(body, dict):
            raise MalformedResponseError(f"{method}: response is not a JSON object")
        if "error" in body and "result" not in body:
            error = classify(response.status_code, body, method)
            if isinstance(error, RateLimitedError):
                header_hint = retry_after_seconds(response.headers)
                if header_hint is not None:
                    error.retry_after = header_hint
            raise error
        if response.status_code != 200:
            raise self._http_status_error(method, response)
        if "result" not in body:
            raise MalformedResponseError(f"{method}: response has no result")
        self._note_operating_budget(body.get("time"), method)
        return Response(body, len(response.content))

    def _http_status_error(self, method: str, response: httpx.Response) -> SyncdError:
        status = response.status_code
        hint = retry_after_seconds(response.headers)
        if status in (429, 503):
            return RateLimitedError(f"{method}: HTTP {status}", retry_after=hint)
        if status >= 500:
            return UpstreamUnavailableError(f"{method}: HTTP {status}")
        if status in (401, 403):
            return AuthError(f"{method}: HTTP {status}; check the webhook and its scopes")
        return UpstreamRejectedError(f"{method}: unexpected HTTP {status}")

    def _take_budget(self) -> None:
        # Before every HTTP request, after the operating-time pause (a paused client holds no
        # token). Raises RetriableError when shutdown interrupts the wait.
        if self.budget is not None:
            self.budget.acquire(self.priority, self.retry.stop)
        if self.on_request is not None:
            self.on_request()

    # -- the operating-time budget -----------------------------------------------------------

    def _note_operating_budget(self, time_info: Any, method: str) -> None:
        """Bitrix24 counts each method's execution time over 10 minutes (``time.operating``,
        per method, in every answer and in every batch command's ``result_time``). Remember it
        per method; near the limit, that method pauses until ``operating_reset_at`` rather than
        run into 429 OPERATION_TIME_LIMIT, while other methods go on."""
        if not isinstance(time_info, dict):
            return
        operating = _number(time_info.get("operating"))
        reset_at = _number(time_info.get("operating_reset_at"))
        if operating is None or reset_at is None:
            return
        method = method.lower()
        with self._lock:
            self._operating[method] = (operating, reset_at)
            if operating >= self.operating_budget_seconds and method != "batch":
                if self._pause_until.get(method, 0.0) < reset_at:
                    log.warning(
                        "CRM operating-time budget of %s nearly used (%.0fs of %.0fs); "
                        "pausing it until the window resets",
                        method,
                        operating,
                        self.operating_budget_seconds,
                    )
                self._pause_until[method] = max(self._pause_until.get(method, 0.0), reset_at)

    def operating_headroom(self, method: str) -> float:
        """Seconds of ``method``'s operating-time budget left in the current window (as last
        reported by the CRM; the whole budget when the window has reset or nothing is known)."""
        with self._lock:
            used, reset_at = self._operating.get(method.lower(), (0.0, 0.0))
        if reset_at <= time.time():
            return self.operating_budget_seconds
        return max(0.0, self.operating_budget_seconds - used)

    def operating_wait(self, method: str) -> float:
        """Seconds until ``method`` may be called again (0 when it is not paused)."""
        with self._lock:
            until = self._pause_until.get(method.lower(), 0.0)
        return max(0.0, until - time.time())

    def _respect_operating_pause(self, method: str) -> None:
        if method.lower() == "batch":
            return  # a batch's commands are checked by whoever plans the batch
        wait = self.operating_wait(method)
        if wait > 0 and self.retry.stop.wait(min(wait, 600.0)):
            raise RateLimitedError("paused for the CRM operating-time budget", retry_after=wait)


def classify(status: int, body: Mapping[str, Any], what: str) -> SyncdError:
    """Turn a Bitrix24 error body into the error type that carries its retry policy.

    Two families exist: ``crm.item.*`` and system errors use named codes; the old
    ``crm.contact/company.*`` methods answer HTTP 400 with an empty code (or ``0``).
    """
    code = str(body.get("error") or "")
    description = str(body.get("error_description") or "")[:200]
    label = f"{what}: {code or 'error'}" + (f" ({description})" if description else "")
    if code == "QUERY_LIMIT_EXCEEDED":
        return RateLimitedError(label, retry_after=QUERY_LIMIT_PAUSE_SECONDS)
    if code == "OPERATION_TIME_LIMIT":
        reset_at = _number(
            body.get("time", {}).get("operating_reset_at")
            if isinstance(body.get("time"), dict)
            else None
        )
        wait = max(1.0, reset_at - time.time()) if reset_at else OPERATION_LIMIT_PAUSE_SECONDS
        return RateLimitedError(label, retry_after=wait)
    if code in _AUTH_CODES or status in (401, 403):
        return AuthError(label)
    if code in _FATAL_CODES:
        return FatalError(label)
    if code in _UNAVAILABLE_CODES or status >= 500:
        return UpstreamUnavailableError(label)
    if status == 429 or status == 503:
        return RateLimitedError(label)
    return UpstreamRejectedError(label)


def _as_map(value: Any) -> dict[str, Any]:
    # Bitrix24 serialises an empty map as [].
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _content_kind(response: httpx.Response) -> str:
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    return "empty body" if not response.content else kind
