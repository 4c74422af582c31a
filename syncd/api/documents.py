"""Document downloads for the local API: ``GET``/``HEAD /v1/documents/{id}/download``.

:class:`DocumentDownloads` streams one file of a mirrored SharePoint library to the portal:

1. the cache says whether the document exists and may be shown (a file, in a configured
   library, under the library's folder scope: :func:`syncd.state.documents.find_file`);
2. Microsoft Graph is asked for the file's pre-authenticated download URL *at request time*
   (through a *link provider*, the Graph connector, built on the first download because
   importing msgraph takes seconds);
3. the file is fetched from that URL with a streaming GET (the client's ``Range`` passed on)
   and relayed in 64 KiB chunks as the WSGI body, which closes the upstream response when it is
   exhausted or closed (a portal that hangs up mid-download frees the connection at once).

Nothing holds a whole file: memory per download is one chunk here plus waitress's output
buffer (``syncd.api.server.OUTBUF_HIGH_WATERMARK``).

**The download URL is a credential**: anyone holding it can read the file until it expires.
It is never logged, stored, put into an exception or an answer. httpx's client logs every
request's URL on the ``httpx`` logger (INFO); a filter on that logger withholds the URL of the
requests this module sends (:class:`_WithholdDownloadUrls`).

**Range.** One range (``bytes=0-99``, ``bytes=100-``, ``bytes=-50``) is passed to SharePoint,
which answers 206 or 416. A malformed ``Range``, one with several ranges or another unit is
ignored, as RFC 9110 allows, and the whole file is sent (200): a portal that relays a
browser's odd header still gets the file.

Errors are :class:`~syncd.api.app.ApiError` with stable codes: ``unknown_document`` (404: not
in the cache, not a file, out of scope, or gone from SharePoint), ``sharepoint_unavailable``
(503 with ``Retry-After``: throttled, 5xx, timeouts, network), ``sharepoint_refused`` (502:
403/authentication), ``sharepoint_bad_response`` (502), ``range_not_satisfiable`` (416 with
``Content-Range: bytes */size``), ``documents_not_configured`` (404: the SharePoint connector
cannot be used), ``downloads_busy`` (503: ``max_concurrent`` downloads already run).
"""

from __future__ import annotations

import logging
import re
import sqlite3
import ssl
import threading
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol
from urllib.parse import quote, urljoin, urlsplit

import httpx

from syncd.api.app import DEFAULT_RETRY_AFTER, ApiError, retry_after_seconds
from syncd.connectors.http import USER_AGENT
from syncd.connectors.http import retry_after_seconds as parse_retry_after
from syncd.core.errors import (
    AuthError,
    ConfigError,
    MalformedResponseError,
    RetriableError,
    SyncdError,
    UpstreamNotFoundError,
    UpstreamRejectedError,
)
from syncd.state.documents import StoredDocument, find_file

if TYPE_CHECKING:
    from syncd.config import Settings
    from syncd.connectors.budget import RequestBudget
    from syncd.connectors.sharepoint.settings import SharepointSettings

__all__ = [
    "CHUNK_SIZE",
    "DOCUMENT_ID",
    "MAX_REDIRECTS",
    "DocumentDownloads",
    "Download",
    "DownloadBody",
    "LinkProvider",
    "content_disposition",
    "make_download_client",
    "single_range",
]

log = logging.getLogger(__name__)

CHUNK_SIZE: Final = 64 * 1024
MAX_REDIRECTS: Final = 2
# Graph driveItem IDs: letters, digits, '!', '_', '-' (SharePoint "01ABC...", OneDrive "ABC!123").
DOCUMENT_ID: Final = re.compile(r"[A-Za-z0-9!_-]{1,256}", re.ASCII)
DEFAULT_NAME: Final = "document"
_BUSY_RETRY_AFTER: Final = 5  # seconds: downloads_busy clears as soon as one download ends

_RANGE: Final = re.compile(
    r"\s*bytes\s*=\s*(?:(?P<first>\d{1,18})\s*-\s*(?P<last>\d{0,18})|-\s*(?P<suffix>\d{1,18}))\s*",
    re.ASCII | re.IGNORECASE,
)
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
# Upstream header values relayed only when they look like what they should be.
_SAFE_VALUE: Final = re.compile(r"[\x20-\x7e]{1,1024}", re.ASCII)
_CONTENT_TYPE: Final = re.compile(
    r"[A-Za-z0-9!#$&^_.+-]{1,127}/[A-Za-z0-9!#$&^_.+-]{1,127}(\s*;[\x20-\x7e]{0,256})?", re.ASCII
)
_CONTENT_RANGE: Final = re.compile(r"bytes (\d{1,18})-(\d{1,18})/(\d{1,18}|\*)", re.ASCII)
_UNSATISFIED_RANGE: Final = re.compile(r"bytes \*/\d{1,18}", re.ASCII)
_DIGITS: Final = re.compile(r"\d{1,18}", re.ASCII)
# Characters removed from a file name before it goes into Content-Disposition.
_DROPPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_DROPPED_CHARS: Final = frozenset('"\\/')


# ------------------------------------------------------------------------------------------
# Interfaces and results
# ------------------------------------------------------------------------------------------


class LinkProvider(Protocol):
    """Gives a file's short-lived pre-authenticated download URL
    (``syncd.connectors.sharepoint.graph.GraphLibraries``).

    Raises syncd errors: :class:`~syncd.core.errors.UpstreamNotFoundError` (the item is gone),
    :class:`~syncd.core.errors.AuthError` (access refused), :class:`RetriableError` subclasses
    (throttled, unavailable; ``retry_after`` in seconds or None),
    :class:`~syncd.core.errors.MalformedResponseError`.
    """

    def download_url(self, drive_id: str, item_id: str) -> str:
        """The URL; never log or store it."""
        ...


@dataclass(frozen=True)
class Download:
    """An answer to a download: ``status`` (200 or 206), the response ``headers`` and the
    ``body`` (a WSGI iterable whose ``close()`` frees the upstream connection)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: DownloadBody


class DownloadBody:
    """The WSGI body of a download: the upstream response's bytes in chunks of
    :data:`CHUNK_SIZE`. ``close()`` (called by the WSGI server when the answer is done or the
    client went away, and after the last chunk) closes the upstream response and releases the
    download's slot; it is idempotent."""

    def __init__(
        self,
        response: httpx.Response | None,
        release: Callable[[], None],
        *,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self._response = response
        self._release = release
        self._chunk_size = chunk_size
        self._lock = threading.Lock()
        self._closed = False
        self.bytes_sent = 0

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def __iter__(self) -> Iterator[bytes]:
        response = self._response
        if response is None or self._closed:
            return
        try:
            for chunk in response.iter_raw(self._chunk_size):
                if chunk:
                    self.bytes_sent += len(chunk)
                    yield chunk
        except (httpx.HTTPError, httpx.StreamError) as error:
            if not self._closed:
                # The answer's status and length are sent already: ending the body short makes
                # waitress close the connection, so the portal sees an incomplete download.
                log.warning(
                    "document download: the transfer from SharePoint broke off after %d bytes "
                    "(%s)",
                    self.bytes_sent,
                    _transport_kind(error),
                )
        finally:
            self.close()

    def close(self) -> None:
        """Close the upstream response and release the slot (once)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self._response is not None:
                self._response.close()
        except Exception as error:  # closing a broken connection must not mask anything
            log.debug("document download: closing the upstream failed (%s)", type(error).__name__)
        finally:
            self._release()


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def single_range(header: str | None) -> str | None:
    """The ``Range`` to ask SharePoint for: a single syntactically valid byte range,
    normalised (``bytes=0-99``, ``bytes=100-``, ``bytes=-50``); None for no header and for any
    header that is malformed, names several ranges or another unit, or has last < first (they
    are ignored: the whole file is sent)."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header)
    if match is None:
        return None
    suffix = match.group("suffix")
    if suffix is not None:
        return f"bytes=-{int(suffix)}"
    first = int(match.group("first"))
    last_text = match.group("last")
    if not last_text:
        return f"bytes={first}-"
    last = int(last_text)
    if last < first:
        return None
    return f"bytes={first}-{last}"


def _clean_name(name: str) -> str:
    """The file name without control and format characters, line/paragraph separators,
    quotes, backslashes and path separators; spaces collapsed; leading dots and spaces and
    trailing spaces and dots removed."""
    kept = []
    for char in unicodedata.normalize("NFC", name):
        if char in _DROPPED_CHARS or unicodedata.category(char) in _DROPPED_CATEGORIES:
            continue
        kept.append(" " if unicodedata.category(char) == "Zs" else char)
    cleaned = re.sub(" {2,}", " ", "".join(kept)).strip(" .")
    return cleaned[:255] or DEFAULT_NAME


def _ascii_name(name: str) -> str:
    """An ASCII stand-in for ``name`` (already cleaned): accents dropped (NFKD), anything else
    non-ASCII, ``%`` or ``;`` replaced by ``_``; the stem becomes ``document`` when nothing
    readable is left of it, and an extension that is not plain letters and digits is dropped."""
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem:
        stem, extension = name, ""

    def asciified(text: str) -> str:
        chars = []
        for char in unicodedata.normalize("NFKD", text):
            if unicodedata.combining(char):
                continue
            chars.append(char if 0x20 <= ord(char) < 0x7F and char not in '"\\%;' else "_")
        collapsed = re.sub(r"_{2,}", "_", "".join(chars))
        return re.sub(r" {2,}", " ", collapsed).strip(" ._")

    stem, extension = asciified(stem), asciified(extension)
    if not any(char.isalnum() for char in stem):
        stem = DEFAULT_NAME
    if extension and extension.isascii() and extension.isalnum():
        return f"{stem}.{extension}"
    return stem


def content_disposition(name: str) -> str:
    """``attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded>`` for a
    file called ``name`` (as the cache holds it: from SharePoint, so untrusted). Control
    characters, CR/LF, quotes, backslashes and path separators are removed first, so the value
    can neither end the header nor name a path."""
    cleaned = _clean_name(name)
    return (
        f'attachment; filename="{_ascii_name(cleaned)}"; '
        f"filename*=UTF-8''{quote(cleaned, safe='')}"
    )


def _transport_kind(error: BaseException) -> str:
    """A network failure in a few words, without the URL httpx may carry."""
    kinds: dict[type[BaseException], str] = {
        httpx.ConnectTimeout: "connect timeout",
        httpx.ReadTimeout: "read timeout",
        httpx.WriteTimeout: "write timeout",
        httpx.PoolTimeout: "no free connection",
        httpx.ConnectError: "connection refused or unreachable",
        httpx.RemoteProtocolError: "connection closed mid-answer",
        httpx.ReadError: "connection reset",
        httpx.StreamClosed: "stream closed",
    }
    return kinds.get(type(error), type(error).__name__)


def _unavailable(retry_after: object = None) -> ApiError:
    seconds = retry_after_seconds(retry_after) if retry_after is not None else DEFAULT_RETRY_AFTER
    return ApiError(503, "sharepoint_unavailable", headers=[("Retry-After", str(seconds))])


# ------------------------------------------------------------------------------------------
# Keeping the download URL out of httpx's log
# ------------------------------------------------------------------------------------------

_ACTIVE = threading.local()


class _WithholdDownloadUrls(logging.Filter):
    """httpx logs ``HTTP Request: GET <url> "HTTP/1.1 200 OK"`` at INFO for every request. While
    this thread sends a download request (:func:`_sending`), the URL is withheld."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(_ACTIVE, "sending", False):
            return True
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and str(record.msg).startswith("HTTP"):
            record.msg = 'HTTP Request: %s (a document download URL, withheld) "%s %s %s"'
            record.args = (args[0], args[2], args[3], args[4])
        else:
            record.msg = "httpx: a message about a document download (withheld)"
            record.args = None
        return True


_URL_FILTER: Final = _WithholdDownloadUrls()


def _install_url_filter() -> None:
    httpx_logger = logging.getLogger("httpx")
    if _URL_FILTER not in httpx_logger.filters:
        httpx_logger.addFilter(_URL_FILTER)


@contextmanager
def _sending() -> Iterator[None]:
    """Marks this thread as sending a download request (see :class:`_WithholdDownloadUrls`)."""
    _ACTIVE.sending = True
    try:
        yield
    finally:
        _ACTIVE.sending = False


# ------------------------------------------------------------------------------------------
# The client
# ------------------------------------------------------------------------------------------


def make_download_client(
    *,
    connect_timeout: float,
    read_timeout: float,
    ca_file: Path | str | None = None,
    max_connections: int = 16,
) -> httpx.Client:
    """The httpx client for downloads: explicit connect and read timeouts (read: the longest
    wait for the next bytes), certificates checked against the system's CAs plus ``ca_file``
    (PEM) when given, no redirects followed by httpx (the downloads follow at most
    :data:`MAX_REDIRECTS`, to https only), no cookies kept, no compression asked for."""
    verify: ssl.SSLContext | bool = True
    if ca_file is not None:
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=str(ca_file))
        verify = context
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))  # keeps nothing
    return httpx.Client(
        timeout=httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout),
        verify=verify,
        follow_redirects=False,
        cookies=jar,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=min(4, max_connections)
        ),
    )


# ------------------------------------------------------------------------------------------
# The downloads
# ------------------------------------------------------------------------------------------


class DocumentDownloads:
    """Streams mirrored SharePoint documents to the portal (the API's
    ``DocumentDownloadSource``).

    ``connection`` returns the calling thread's cache connection
    (``ThreadConnections.get``). ``links`` builds the link provider (the Graph connector) on the
    first download; it is called once (again only after it raised something other than
    :class:`~syncd.core.errors.ConfigError`), and a ConfigError from it (the SharePoint extra is
    not installed, say) makes every download answer ``documents_not_configured``. ``client`` is
    the httpx client the files are fetched with (:func:`make_download_client`), owned by this
    object from now on. ``max_concurrent`` caps the downloads streaming at once (each holds an
    API worker thread for its whole transfer); past it, 503 ``downloads_busy``. None: no cap.
    """

    def __init__(
        self,
        connection: Callable[[], sqlite3.Connection],
        links: Callable[[], LinkProvider],
        client: httpx.Client,
        *,
        max_concurrent: int | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1 (or None)")
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self._connection = connection
        self._make_links = links
        self._links: LinkProvider | None = None
        self._links_lock = threading.Lock()
        self._unusable = False
        self._client = client
        self._slots = (
            threading.BoundedSemaphore(max_concurrent) if max_concurrent is not None else None
        )
        self._chunk_size = chunk_size
        _install_url_filter()

    @classmethod
    def from_settings(
        cls,
        connection: Callable[[], sqlite3.Connection],
        settings: SharepointSettings,
        links: Callable[[], LinkProvider],
        *,
        max_concurrent: int | None = None,
    ) -> DocumentDownloads:
        """Downloads with a client made from ``[sharepoint]``: its connect and read timeouts
        (``connect_timeout_seconds``, ``timeout_seconds``) and ``ca_file``."""
        client = make_download_client(
            connect_timeout=settings.connect_timeout_seconds,
            read_timeout=settings.timeout_seconds,
            ca_file=settings.ca_file,
            max_connections=max(4, max_concurrent or 16),
        )
        return cls(connection, links, client, max_concurrent=max_concurrent)

    @classmethod
    def from_config(
        cls,
        settings: Settings,
        connection: Callable[[], sqlite3.Connection],
        *,
        stop: threading.Event | None = None,
        budget: RequestBudget | None = None,
        max_concurrent: int | None = None,
    ) -> DocumentDownloads:
        """Downloads as the daemon runs them, from syncd's whole configuration: the client from
        ``[sharepoint]`` (:meth:`from_settings`), and the link provider built on the first
        download by :func:`syncd.runtime.build_document_source` (the Graph connector, with the
        ``"push"`` priority of ``budget`` and one attempt per call: a person is waiting, and a
        throttled Graph is answered at once with 503 and its ``Retry-After`` instead of holding
        an API thread through the backoff). Only when ``settings.sharepoint.configured``."""
        sharepoint = settings.sharepoint
        if not sharepoint.configured:
            raise ConfigError("sharepoint: not configured; there are no documents to download")
        for_api = settings.model_copy(
            update={"sharepoint": sharepoint.model_copy(update={"max_attempts": 1})}
        )

        def links() -> LinkProvider:
            from syncd.runtime import build_document_source  # imports msgraph: seconds

            return build_document_source(
                for_api, stop=stop, budget=budget, priority="push", name="graph-api"
            )

        return cls.from_settings(connection, sharepoint, links, max_concurrent=max_concurrent)

    # -- the download -------------------------------------------------------------------------

    def open(self, document_id: str, range_header: str | None, *, head: bool) -> Download:
        """Start downloading ``document_id``: look it up in the cache, ask Graph for its
        download URL, open a streaming GET (with ``range_header`` when it is a single valid
        byte range; otherwise the whole file) and return the status (200 or 206), headers and
        body. With ``head`` the upstream answer is closed at once and the body is empty.

        Raises :class:`~syncd.api.app.ApiError` (codes in the module's docs)."""
        if not DOCUMENT_ID.fullmatch(document_id):
            raise ApiError(404, "unknown_document")
        stored = find_file(self._connection(), document_id)
        if stored is None or not stored.drive_id:
            raise ApiError(404, "unknown_document")
        byte_range = single_range(range_header)
        release = self._take_slot()
        try:
            url = self._download_url(stored)
            response = self._fetch(url, byte_range)
            del url
            try:
                status, headers = self._answer(stored, response, byte_range)
            except BaseException:
                response.close()
                raise
        except BaseException:
            release()
            raise
        body = DownloadBody(response, release, chunk_size=self._chunk_size)
        if head:
            body.close()
        return Download(status, headers, body)

    def close(self) -> None:
        """Close the download client and the link provider (if it was built)."""
        self._client.close()
        with self._links_lock:
            links, self._links = self._links, None
        closer = getattr(links, "close", None)
        if callable(closer):
            try:
                closer()
            except Exception as error:
                log.warning(
                    "document downloads: closing the Graph connector failed (%s)",
                    type(error).__name__,
                )

    # -- steps --------------------------------------------------------------------------------

    def _take_slot(self) -> Callable[[], None]:
        slots = self._slots
        if slots is None:
            return lambda: None
        if not slots.acquire(blocking=False):
            raise ApiError(
                503, "downloads_busy", headers=[("Retry-After", str(_BUSY_RETRY_AFTER))]
            )
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                slots.release()

        return release

    def _link_provider(self) -> LinkProvider:
        links = self._links
        if links is not None:
            return links
        with self._links_lock:
            if self._links is not None:
                return self._links
            if self._unusable:
                raise ApiError(404, "documents_not_configured")
            try:
                self._links = self._make_links()
            except ConfigError as error:
                # ConfigError messages name settings, never secrets.
                log.error("document downloads are off: %s", error)
                self._unusable = True
                raise ApiError(404, "documents_not_configured") from None
            except RetriableError as error:
                log.warning(
                    "document downloads: the Graph connector could not be built (%s)",
                    type(error).__name__,
                )
                raise _unavailable(error.retry_after) from None
            except Exception as error:
                log.error(
                    "document downloads: building the Graph connector failed with %s.%s",
                    type(error).__module__,
                    type(error).__qualname__,
                )
                raise _unavailable() from None
            return self._links

    def _download_url(self, stored: StoredDocument) -> str:
        links = self._link_provider()
        assert stored.drive_id is not None
        try:
            return links.download_url(stored.drive_id, stored.id)
        except UpstreamNotFoundError:
            raise ApiError(404, "unknown_document") from None
        except AuthError as error:
            log.warning("document download: Graph refused access (%s)", type(error).__name__)
            raise ApiError(502, "sharepoint_refused") from None
        except (MalformedResponseError, UpstreamRejectedError) as error:
            log.warning(
                "document download: Graph's answer could not be used (%s)", type(error).__name__
            )
            raise ApiError(502, "sharepoint_bad_response") from None
        except RetriableError as error:
            log.info(
                "document download: Graph is unavailable or throttling (%s)",
                type(error).__name__,
            )
            raise _unavailable(error.retry_after) from None
        except SyncdError as error:
            log.warning("document download: Graph failed (%s)", type(error).__name__)
            raise ApiError(502, "sharepoint_bad_response") from None

    def _fetch(self, url: str, byte_range: str | None) -> httpx.Response:
        """A streaming GET of ``url``, following up to :data:`MAX_REDIRECTS` redirects to
        https URLs. Network failures: 503; anything else is judged by :meth:`_answer`."""
        # Not compressed: the bytes are relayed as they come, with SharePoint's Content-Length.
        headers = {"Accept-Encoding": "identity"}
        if byte_range is not None:
            headers["Range"] = byte_range
        for hop in range(MAX_REDIRECTS + 1):
            request = self._client.build_request("GET", url, headers=headers)
            try:
                with _sending():
                    response = self._client.send(
                        request, stream=True, follow_redirects=False
                    )
            except httpx.TransportError as error:
                log.info(
                    "document download: SharePoint could not be reached (%s)",
                    _transport_kind(error),
                )
                raise _unavailable() from None
            if response.status_code not in _REDIRECTS:
                return response
            location = response.headers.get("location")
            response.close()
            target = urljoin(url, location) if location else ""
            if hop == MAX_REDIRECTS or urlsplit(target).scheme != "https":
                log.warning(
                    "document download: SharePoint redirected %s",
                    "too often" if hop == MAX_REDIRECTS else "to a URL that is not https",
                )
                raise ApiError(502, "sharepoint_bad_response")
            url = target
        raise AssertionError("unreachable")  # pragma: no cover

    def _answer(
        self, stored: StoredDocument, response: httpx.Response, byte_range: str | None
    ) -> tuple[int, tuple[tuple[str, str], ...]]:
        """The status and headers for SharePoint's ``response``; ApiError for an error."""
        status = response.status_code
        upstream = response.headers
        if status == 416:
            content_range = upstream.get("content-range", "")
            if not _UNSATISFIED_RANGE.fullmatch(content_range):
                content_range = f"bytes */{stored.size}" if stored.size is not None else ""
            raise ApiError(
                416,
                "range_not_satisfiable",
                headers=[("Content-Range", content_range)] if content_range else [],
            )
        if status in (404, 410):
            log.info("document download: SharePoint no longer has a document the cache lists")
            raise ApiError(404, "unknown_document")
        if status in (401, 403):
            log.warning("document download: SharePoint refused the download (%d)", status)
            raise ApiError(502, "sharepoint_refused")
        if status in (429, 503) or status >= 500:
            log.info("document download: SharePoint is unavailable or throttling (%d)", status)
            hint = parse_retry_after(upstream) if status in (429, 503) else None
            raise _unavailable(hint)
        if status not in (200, 206):
            log.warning("document download: SharePoint answered %d", status)
            raise ApiError(502, "sharepoint_bad_response")
        content_range = upstream.get("content-range")
        if status == 206 and (
            byte_range is None
            or content_range is None
            or not _CONTENT_RANGE.fullmatch(content_range)
        ):
            log.warning("document download: SharePoint sent a partial answer without its range")
            raise ApiError(502, "sharepoint_bad_response")

        headers: list[tuple[str, str]] = [("Content-Type", self._content_type(stored, upstream))]
        length = upstream.get("content-length")
        if length is not None and _DIGITS.fullmatch(length):
            headers.append(("Content-Length", str(int(length))))
        if status == 206 and content_range is not None:
            headers.append(("Content-Range", content_range))
        headers.append(("Accept-Ranges", "bytes"))
        for name in ("ETag", "Last-Modified"):
            value = upstream.get(name)
            if value is not None and _SAFE_VALUE.fullmatch(value):
                headers.append((name, value))
        encoding = upstream.get("content-encoding")
        if encoding is not None and encoding.lower() != "identity":
            if not _SAFE_VALUE.fullmatch(encoding):
                raise ApiError(502, "sharepoint_bad_response")
            headers.append(("Content-Encoding", encoding))  # relayed as sent, bytes untouched
        headers += [
            ("Content-Disposition", content_disposition(stored.name)),
            ("X-Content-Type-Options", "nosniff"),
            ("Cache-Control", "private, no-store"),
        ]
        return status, tuple(headers)

    @staticmethod
    def _content_type(stored: StoredDocument, upstream: httpx.Headers) -> str:
        for candidate in (upstream.get("content-type"), stored.mime_type):
            if candidate and _CONTENT_TYPE.fullmatch(candidate.strip()):
                return candidate.strip()
        return "application/octet-stream"
