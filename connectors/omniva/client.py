"""Downloading Omniva's ``locations.json`` with a conditional GET and a size cap.

Status policy (the error type carries it, see :mod:`syncd.core.errors`):

* 200 → :class:`Downloaded` (unless it is an HTML page: :class:`SuspiciousListError`);
  304 → :class:`NotModified`.
* 3xx → :class:`SuspiciousListError` (``redirect``). Omniva serves the file directly; a redirect
  in practice leads to a maintenance or login page, so it is treated like an HTML body and
  never followed.
* 429, 503 → :class:`RateLimitedError` with the ``Retry-After`` hint; 408 and other 5xx →
  :class:`UpstreamUnavailableError`; transport failures → ``syncd.connectors.http.transport_error``.
* Other 4xx → :class:`UpstreamRejectedError` (a :class:`FatalError`). The URL is public and
  unauthenticated, so a 404/410 means it is wrong or Omniva moved the file, and a 401/403
  means we are blocked (IP or User-Agent): retrying the same request cannot fix either, and an
  operator must look. ``UpstreamRejectedError`` rather than ``ConfigError`` because the cause may
  be on Omniva's side too; both stop the job the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

import httpx

from syncd.connectors.http import make_client, retry_after_seconds, transport_error
from syncd.connectors.omniva.locations import SuspiciousListError
from syncd.core.errors import (
    ConfigError,
    MalformedResponseError,
    RateLimitedError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
)

DEFAULT_URL = "https://www.omniva.ee/locations.json"
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024  # the full list is a few MB; this is a runaway guard
_WHAT = "Omniva locations download"


@dataclass(frozen=True)
class NotModified:
    """304: the list has not changed since the validators we sent."""


@dataclass(frozen=True)
class Downloaded:
    """200: the raw list and the validators for the next conditional request."""

    body: bytes
    etag: str | None
    last_modified: str | None


class OmnivaClient:
    """One GET of the locations list per :meth:`fetch`; no retries (the job schedule retries).

    Not meant for concurrent use from several threads (one refresh job owns it).
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float,
        timeout: float,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        self.url = url
        self.max_body_bytes = max_body_bytes
        self._http = make_client(connect_timeout=connect_timeout, timeout=timeout)

    def fetch(self, etag: str | None, last_modified: str | None) -> NotModified | Downloaded:
        """GET the list, conditional on ``etag`` / ``last_modified`` when given.

        Raises :class:`SuspiciousListError` (HTML, redirect, too large),
        :class:`MalformedResponseError` (an undecodable body), :class:`RateLimitedError`,
        :class:`UpstreamUnavailableError`, :class:`UpstreamRejectedError` or
        :class:`ConfigError` (not an http(s) URL); see the module doc.
        """
        headers: dict[str, str] = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        try:
            with self._http.stream("GET", self.url, headers=headers) as response:
                return self._answer(response, conditional=bool(headers))
        except httpx.UnsupportedProtocol:
            raise ConfigError(f"{_WHAT}: the list URL is not http(s)") from None
        except httpx.TransportError as error:
            raise transport_error(error, _WHAT) from None
        except httpx.DecodingError:  # a broken gzip/deflate body
            raise MalformedResponseError(f"{_WHAT}: the body could not be decoded") from None

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> OmnivaClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _answer(self, response: httpx.Response, *, conditional: bool) -> NotModified | Downloaded:
        status = response.status_code
        if status == 304:
            if not conditional:
                raise MalformedResponseError(f"{_WHAT}: 304 to an unconditional request")
            return NotModified()
        if status == 200:
            _check_content_type(response)
            body = self._read_capped(response)
            if body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<":
                raise SuspiciousListError(f"{_WHAT}: HTML page instead of the list", code="html")
            return Downloaded(
                body=body,
                etag=response.headers.get("etag"),
                last_modified=response.headers.get("last-modified"),
            )
        raise _status_error(response)

    def _read_capped(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():  # decoded bytes: a gzip bomb hits the cap too
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _too_large(self.max_body_bytes)  # leaving the stream drops the connection
            chunks.append(chunk)
        return b"".join(chunks)


def _check_content_type(response: httpx.Response) -> None:
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml"):
        raise SuspiciousListError(f"{_WHAT}: HTML page instead of the list", code="html")


def _too_large(limit: int) -> SuspiciousListError:
    return SuspiciousListError(
        f"{_WHAT}: the list is too large (over {limit} bytes); download aborted",
        code="too_large",
    )


def _status_error(response: httpx.Response) -> Exception:
    status = response.status_code
    if 300 <= status < 400:
        return SuspiciousListError(
            f"{_WHAT}: HTTP {status} redirect instead of the list (not followed)",
            code="redirect",
        )
    if status in (429, 503):
        return RateLimitedError(
            f"{_WHAT}: HTTP {status}", retry_after=retry_after_seconds(response.headers)
        )
    if status == 408 or status >= 500:
        return UpstreamUnavailableError(f"{_WHAT}: HTTP {status}")
    if 400 <= status < 500:
        return UpstreamRejectedError(
            f"{_WHAT}: HTTP {status} at the configured URL; check the Omniva list URL"
        )
    return MalformedResponseError(f"{_WHAT}: unexpected HTTP {status}")
