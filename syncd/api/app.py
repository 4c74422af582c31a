"""The local HTTP API the portal calls: VAT number lookups, Omniva's parcel machines, document
downloads, health, Prometheus metrics.

A WSGI application (werkzeug routing, requests and responses) built by :func:`make_app` over
small interfaces, so it depends on no concrete service:
:class:`VatLookup` (syncd.engines.vat.VatService),
:class:`LocationSource` (Omniva's list in the cache), :class:`HealthSource` and, optionally,
:class:`DocumentDownloadSource` (syncd.api.documents.DocumentDownloads). The server that
runs it, :class:`~syncd.api.server.ApiServer`, is re-exported here (``from syncd.api.app import
ApiServer, make_app``); the contract is ``docs/openapi.yaml``.

Every answer is JSON (``application/json; charset=utf-8``), except the Prometheus text of
``GET /metrics`` and a document's bytes (``GET /v1/documents/{id}/download``, streamed), with
``Cache-Control: no-store`` (a download: ``private, no-store``) and
``X-Content-Type-Options: nosniff``. Every error is ``{"error": {"code": ..., "message": ...}}``
with a stable ``code`` and a fixed message: nothing the client sent (a VAT number, say) is ever
echoed in an error or written to a log line.

Given a :class:`~syncd.api.metrics.MetricsSource`, the app records every request there (by route
name, never by path: the path of a VAT lookup holds the number) and serves it at ``/metrics``;
without one, ``/metrics`` is 404.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, Final, Protocol

import orjson
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.http import parse_options_header
from werkzeug.routing import Map, PathConverter, Rule
from werkzeug.wrappers import Request, Response

from syncd.api.server import (
    JSON_CONTENT_TYPE,
    STANDARD_HEADERS,
    ApiBindError,
    ApiServer,
)
from syncd.core.errors import SyncdError
from syncd.engines.intake import IntakeError, Receipt, canonical_key

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from syncd.api.metrics import MetricsSource

__all__ = [
    "DEFAULT_RETRY_AFTER",
    "JSON_CONTENT_TYPE",
    "MAX_VAT_PATH_CHARS",
    "UNAVAILABLE_CODES",
    "ApiBindError",
    "ApiError",
    "ApiServer",
    "DocumentDownload",
    "DocumentDownloadSource",
    "HealthSource",
    "LocationSource",
    "ServiceRequestDesk",
    "VatAnswer",
    "VatLookup",
    "make_app",
]

logger = logging.getLogger(__name__)

# The same limit as the VAT service's (syncd.engines.vat.MAX_INPUT_LENGTH, checked by a test):
# the API refuses what the service would refuse, with the same number in its message.
MAX_VAT_PATH_CHARS: Final = 32
DEFAULT_RETRY_AFTER: Final = 60  # seconds, when an unavailable error carries no hint
_MAX_RETRY_AFTER: Final = 86_400
DEFAULT_MAX_REQUEST_BYTES: Final = 8192
SERVICE_REQUESTS_PATH: Final = "/v1/service-requests"

# The error codes of syncd.engines.vat's exceptions (matched by their ``code``, see _vat_error).
MALFORMED_CODE: Final = "malformed_vat_number"
REJECTED_CODE: Final = "vies_rejected_input"
UNAVAILABLE_CODES: Final = frozenset(
    {
        "vies_unavailable",
        "member_state_unavailable",
        "vies_busy",
        "vies_blocked",
        "vies_bad_response",
    }
)

_MESSAGES: Final[Mapping[str, str]] = {
    MALFORMED_CODE: "Not a VAT number: it needs a country prefix and may contain only letters, "
    f"digits, spaces, dots and dashes ({MAX_VAT_PATH_CHARS} characters at most).",
    REJECTED_CODE: "VIES refused the number as invalid input.",
    "vies_unavailable": "VIES is not available at the moment; try again later.",
    "member_state_unavailable": "The member state's VAT register is not available through VIES "
    "at the moment; try again later.",
    "vies_busy": "VIES is busy; try again later.",
    "vies_blocked": "VIES is refusing lookups from this server for a while; try again later.",
    "vies_bad_response": "VIES sent an answer that could not be read; try again later.",
    "parcel_list_unavailable": "No parcel-machine list has been loaded yet; try again later.",
    "not_found": "No such resource.",
    "method_not_allowed": "This method is not allowed here; see the Allow header.",
    "request_too_large": "The request is too large (only POST /v1/service-requests takes a "
    "body, up to api.max_upload_mb).",
    "service_requests_disabled": "Service requests cannot be filed here: this syncd has no "
    "outbox configured.",
    "unknown_service_request": "No service request was filed with this key.",
    "unsupported_media_type": "The body must be multipart/form-data with a boundary.",
    "length_required": "The request needs a Content-Length (or chunked transfer encoding).",
    "internal_error": "An internal error occurred; it has been logged.",
    "bad_request": "The request could not be understood.",
    "forbidden_host": "This API answers only requests addressed to localhost or a loopback "
    "address.",
    "unknown_document": "No such document: it is not in a mirrored library (or not in its "
    "folder scope), or SharePoint no longer has it.",
    "documents_not_configured": "Documents cannot be downloaded here: this syncd has no "
    "SharePoint libraries configured.",
    "sharepoint_unavailable": "SharePoint is not available or is throttling at the moment; "
    "try again later.",
    "sharepoint_refused": "SharePoint refused syncd access to the document; an operator must "
    "check the app's permissions.",
    "sharepoint_bad_response": "SharePoint sent an answer that could not be used; try again "
    "later.",
    "range_not_satisfiable": "The requested byte range lies outside the document; "
    "Content-Range gives its size.",
    "downloads_busy": "Too many document downloads are in progress; try again shortly.",
}

# What a VAT number may look like before the VAT service is even asked (the service applies
# the same rule and more: a known country prefix, python-stdnum's checks).
_VAT_CHARS: Final = re.compile(r"[A-Za-z0-9 .\-]+")
# A Graph driveItem ID (SharePoint "01ABC...", OneDrive "ABC!123"); anything else is unknown.
_DOCUMENT_ID: Final = re.compile(r"[A-Za-z0-9!_-]{1,256}", re.ASCII)
_COUNTRY: Final = re.compile(r"[A-Za-z]{2}")
_FRESH: Final[Mapping[str, bool]] = {"true": True, "1": True, "false": False, "0": False}
_KINDS: Final = ("parcel_machine", "post_office")
# The outcome counted in the metrics for each status of _vat_error's answers.
_VAT_OUTCOMES: Final[Mapping[int, str]] = {400: "malformed", 422: "rejected", 503: "unavailable"}


# ------------------------------------------------------------------------------------------
# The interfaces the API calls
# ------------------------------------------------------------------------------------------


class VatAnswer(Protocol):
    """A VAT lookup's result (``syncd.engines.vat.VatResult``)."""

    def to_json(self) -> Mapping[str, Any]:
        """The answer's JSON object (schema ``VatAnswer`` in docs/openapi.yaml)."""
        ...


class VatLookup(Protocol):
    """Looks VAT numbers up (``syncd.engines.vat.VatService``).

    ``lookup`` raises :class:`~syncd.core.errors.SyncdError` subclasses carrying a ``code``:
    ``malformed_vat_number`` (not a VAT number at all), ``vies_rejected_input`` (VIES said
    INVALID_INPUT), or one of :data:`UNAVAILABLE_CODES` with ``retry_after`` seconds.
    """

    def lookup(self, raw: str, *, fresh: bool = False) -> VatAnswer:
        """Look ``raw`` up; ``fresh`` bypasses the fresh cache. Thread-safe."""
        ...


class LocationSource(Protocol):
    """Omniva's parcel machines and post offices as the cache holds them."""

    def locations(self, country: str, kind: str | None) -> Sequence[Mapping[str, Any]]:
        """The locations in ``country`` (upper-case ISO code), of ``kind`` (``parcel_machine``
        or ``post_office``) or of both when None, each as a ``Location`` JSON object."""
        ...

    def as_of(self) -> str | None:
        """UTC timestamp of the stored list, or None when no list was ever loaded."""
        ...


class ServiceRequestDesk(Protocol):
    """Files service requests and reports their status (``syncd.engines.intake``)."""

    def file_multipart(self, key: str, body: IO[bytes], boundary: bytes, length: int) -> Receipt:
        """File the request in ``body``; raises :class:`~syncd.engines.intake.IntakeError`."""
        ...

    def status(self, key: str) -> Mapping[str, Any] | None:
        """The ``ServiceRequestStatus`` JSON of the request filed under ``key``, or None."""
        ...


class DocumentDownload(Protocol):
    """A download in progress (``syncd.api.documents.Download``)."""

    @property
    def status(self) -> int:
        """200, or 206 for a byte range."""
        ...

    @property
    def headers(self) -> Sequence[tuple[str, str]]:
        """The answer's headers (Content-Type, Content-Length, Content-Disposition, ...)."""
        ...

    @property
    def body(self) -> Iterable[bytes]:
        """The bytes, streamed; its ``close()`` frees the upstream connection."""
        ...


class DocumentDownloadSource(Protocol):
    """Streams mirrored SharePoint documents (``syncd.api.documents.DocumentDownloads``).

    ``open`` raises :class:`ApiError` (``unknown_document``, ``sharepoint_unavailable``,
    ``sharepoint_refused``, ``sharepoint_bad_response``, ``range_not_satisfiable``,
    ``documents_not_configured``, ``downloads_busy``)."""

    def open(self, document_id: str, range_header: str | None, *, head: bool) -> DocumentDownload:
        """Start the download of ``document_id`` (``range_header``: the client's Range)."""
        ...


class HealthSource(Protocol):
    """Health of the daemon: ``(healthy, details)``; details become the body of ``/healthz``
    (a ``status`` of ``ok`` or ``degraded`` in details is kept when healthy)."""

    def __call__(self) -> tuple[bool, Mapping[str, Any]]: ...


# ------------------------------------------------------------------------------------------
# Responses
# ------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answer: HTTP ``status`` with the stable ``code`` (and its fixed message)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str | None = None,
        *,
        headers: Sequence[tuple[str, str]] = (),
        field: str | None = None,
    ) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message if message is not None else _MESSAGES[code]
        self.headers = tuple(headers)
        self.field = field

    @classmethod
    def from_intake(cls, error: IntakeError) -> ApiError:
        """The answer for a request refused at the outbox's door."""
        headers = []
        if error.retry_after is not None:
            headers.append(("Retry-After", str(retry_after_seconds(error.retry_after))))
        return cls(error.status, error.code, error.message, headers=headers, field=error.field)


def _json(status: int, payload: object, headers: Iterable[tuple[str, str]] = ()) -> Response:
    response = Response(
        orjson.dumps(payload),
        status=status,
        content_type=JSON_CONTENT_TYPE,
        headers=STANDARD_HEADERS,
    )
    for name, value in headers:
        response.headers[name] = value
    return response


def _error(error: ApiError) -> Response:
    body: dict[str, str] = {"code": error.code, "message": error.message}
    if error.field is not None:
        body["field"] = error.field
    return _json(error.status, {"error": body}, error.headers)


def retry_after_seconds(value: object) -> int:
    """Whole seconds for Retry-After from an exception's ``retry_after`` (None, or nonsense:
    :data:`DEFAULT_RETRY_AFTER`)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return DEFAULT_RETRY_AFTER
    if value <= 0:
        return DEFAULT_RETRY_AFTER
    return min(_MAX_RETRY_AFTER, max(1, math.ceil(value)))


# ------------------------------------------------------------------------------------------
# Parameters
# ------------------------------------------------------------------------------------------


def _check_params(request: Request, allowed: frozenset[str]) -> None:
    # Unknown parameters are refused, so that a typo ("contry") is not silently ignored. The
    # name is not echoed: it is whatever the client sent.
    if any(name not in allowed for name in request.args):
        accepted = ", ".join(sorted(allowed)) or "none"
        raise ApiError(
            400, "invalid_parameter", f"Unknown query parameter; this endpoint accepts: {accepted}."
        )


def _param(request: Request, name: str) -> str | None:
    values = request.args.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, "invalid_parameter", f"The parameter {name} may be given only once.")
    return values[0]


# ------------------------------------------------------------------------------------------
# The application
# ------------------------------------------------------------------------------------------


class _Rest(PathConverter):
    """The rest of the path, whatever it holds (slashes, newlines), so that every shape of a bad
    VAT number is answered as one (400), not as an unknown path (404)."""

    regex = r"[\s\S]+"
    part_isolating = False


_URLS: Final = Map(
    [
        Rule("/v1/vat/<rest:number>", endpoint="vat", methods=["GET"]),
        Rule("/v1/parcel-machines", endpoint="parcel_machines", methods=["GET"]),
        Rule(SERVICE_REQUESTS_PATH, endpoint="service_request_post", methods=["POST"]),
        Rule(
            f"{SERVICE_REQUESTS_PATH}/<rest:key>",
            endpoint="service_request_status",
            methods=["GET"],
        ),
        Rule(
            "/v1/documents/<rest:document_id>/download",
            endpoint="document_download",
            methods=["GET"],
        ),
        Rule("/healthz", endpoint="healthz", methods=["GET"]),
        Rule("/metrics", endpoint="metrics", methods=["GET"]),
    ],
    # An API answers the path it is given: no redirects to "canonical" URLs.
    strict_slashes=False,
    merge_slashes=False,
    redirect_defaults=False,
    converters={"rest": _Rest},
)


# A Host header the API answers: a loopback name or address with an optional port, in ASCII,
# nothing else (no user info, no second value, no look-alike letters). Anything that does not
# match is refused: the check fails closed.
_HOST_HEADER: Final = re.compile(
    r"(?P<name>localhost|[0-9.]{7,15}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?", re.ASCII
)


def _loopback_host(environ: Mapping[str, Any]) -> bool:
    """Whether a request is addressed to this host by a loopback name: an origin-form target
    (``/path``, not ``http://evil.example/path``) and a Host header that is empty, absent, or
    ``localhost``/a loopback address with an optional port."""
    target = str(environ.get("REQUEST_URI") or environ.get("PATH_INFO") or "/")
    if not target.startswith("/"):
        return False
    host = environ.get("HTTP_HOST")
    if host is None or host == "":
        return True  # no authority to rebind (HTTP/1.0, or an empty Host)
    match = _HOST_HEADER.fullmatch(str(host))
    if match is None:
        return False
    name = match.group("name").lower().strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class _Api:
    def __init__(
        self,
        vat: VatLookup,
        locations: LocationSource,
        health: HealthSource,
        max_request_bytes: int,
        metrics: MetricsSource | None,
        service_requests: ServiceRequestDesk | None,
        max_upload_bytes: int,
        documents: DocumentDownloadSource | None,
    ) -> None:
        self._vat = vat
        self._locations = locations
        self._health = health
        self._max_request_bytes = max_request_bytes
        self._metrics = metrics
        self._desk = service_requests
        self._max_upload_bytes = max_upload_bytes
        self._documents = documents
        self._handlers: Mapping[str, Callable[..., Response]] = {
            "vat": self._vat_lookup,
            "parcel_machines": self._parcel_machines,
            "service_request_post": self._file_service_request,
            "service_request_status": self._service_request_status,
            "document_download": self._document_download,
            "healthz": self._healthz,
            "metrics": self._metrics_text,
        }

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.monotonic()
        request = Request(environ)
        route, response = self._dispatch(request)
        elapsed = time.monotonic() - started
        # The route's name, never the path: the path of a VAT lookup holds the number.
        logger.debug(
            "api %s %s -> %d in %.1f ms",
            request.method,
            route,
            response.status_code,
            elapsed * 1000,
        )
        if self._metrics is not None:
            self._metrics.observe_request(route, response.status_code, elapsed)
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> tuple[str, Response]:
        """The answer and its route: the matched rule's name, or when no rule matched the
        error's code (``not_found``, ``method_not_allowed``, ...)."""
        endpoint = ""
        try:
            length = request.content_length
            upload = request.method == "POST" and request.path == SERVICE_REQUESTS_PATH
            limit = self._max_upload_bytes if upload else self._max_request_bytes
            if length is not None and length > limit:
                raise ApiError(413, "request_too_large")
            if not _loopback_host(request.environ):
                # A web page in the portal user's browser may resolve its own name to 127.0.0.1
                # (DNS rebinding); the portal itself calls localhost or a loopback address.
                raise ApiError(403, "forbidden_host")
            urls = _URLS.bind("localhost")
            endpoint, values = urls.match(request.path, method=request.method)
            return endpoint, self._handlers[endpoint](request, **values)
        except ApiError as error:
            return endpoint or error.code, _error(error)
        except IntakeError as error:
            return endpoint, _error(ApiError.from_intake(error))
        except MethodNotAllowed as exc:
            allow = ", ".join(sorted(exc.valid_methods or ()))
            refusal = ApiError(405, "method_not_allowed", headers=[("Allow", allow)])
            return endpoint or refusal.code, _error(refusal)
        except NotFound:
            return endpoint or "not_found", _error(ApiError(404, "not_found"))
        except HTTPException as exc:
            status = exc.code if exc.code is not None and 400 <= exc.code < 500 else 400
            return endpoint or "bad_request", _error(ApiError(status, "bad_request"))
        except Exception as exc:
            # The message may hold what the client sent (a VAT number): log the type only.
            logger.error(
                "api: %s failed with %s.%s (details withheld)",
                endpoint or "-",
                type(exc).__module__,
                type(exc).__qualname__,
            )
            return endpoint or "internal_error", _error(ApiError(500, "internal_error"))

    def _vat_lookup(self, request: Request, number: str) -> Response:
        _check_params(request, frozenset({"fresh"}))
        raw_fresh = _param(request, "fresh")
        if raw_fresh is None:
            fresh = False
        elif raw_fresh in _FRESH:
            fresh = _FRESH[raw_fresh]
        else:
            raise ApiError(400, "invalid_parameter", "fresh must be true, false, 1 or 0.")
        if len(number) > MAX_VAT_PATH_CHARS or not _VAT_CHARS.fullmatch(number):
            self._count_vat("malformed")
            raise ApiError(400, MALFORMED_CODE)
        try:
            answer = self._vat.lookup(number, fresh=fresh)
        except SyncdError as exc:
            error = _vat_error(exc)
            if error is None:
                raise
            self._count_vat(_VAT_OUTCOMES.get(error.status))
            raise error from None
        body = answer.to_json()
        self._count_vat(body.get("source"))
        return _json(200, body)

    def _count_vat(self, outcome: object) -> None:
        if self._metrics is not None:
            self._metrics.observe_vat_lookup(outcome)

    def _parcel_machines(self, request: Request) -> Response:
        _check_params(request, frozenset({"country", "type"}))
        country = _param(request, "country")
        if country is None or country == "":
            raise ApiError(
                400, "missing_parameter", "The country parameter is required (e.g. country=EE)."
            )
        if not _COUNTRY.fullmatch(country):
            raise ApiError(
                400, "invalid_parameter", "country must be a two-letter country code (e.g. EE)."
            )
        country = country.upper()
        kind = _param(request, "type")
        if kind is not None and kind not in _KINDS:
            raise ApiError(400, "invalid_parameter", "type must be parcel_machine or post_office.")
        as_of = self._locations.as_of()
        if as_of is None:
            raise ApiError(
                503,
                "parcel_list_unavailable",
                headers=[("Retry-After", str(DEFAULT_RETRY_AFTER))],
            )
        found = list(self._locations.locations(country, kind))
        return _json(
            200,
            {
                "country": country,
                "type": kind,
                "as_of": as_of,
                "count": len(found),
                "locations": found,
            },
        )

    def _file_service_request(self, request: Request) -> Response:
        _check_params(request, frozenset())
        if self._desk is None:
            raise ApiError(503, "service_requests_disabled")
        key = canonical_key(request.headers.get("Idempotency-Key"))
        mimetype, options = parse_options_header(request.headers.get("Content-Type", ""))
        boundary = options.get("boundary", "")
        if mimetype != "multipart/form-data" or not boundary or not boundary.isascii():
            raise ApiError(415, "unsupported_media_type")
        length = request.content_length
        if length is None:
            raise ApiError(411, "length_required")
        receipt = self._desk.file_multipart(key, request.stream, boundary.encode(), length)
        headers = [("Location", receipt.status_url)]
        if not receipt.created:
            headers.append(("Idempotent-Replayed", "true"))
        return _json(
            202,
            {
                "id": receipt.id,
                "idempotency_key": receipt.idempotency_key,
                "status_url": receipt.status_url,
            },
            headers,
        )

    def _service_request_status(self, request: Request, key: str) -> Response:
        _check_params(request, frozenset())
        if self._desk is None:
            raise ApiError(503, "service_requests_disabled")
        found = self._desk.status(canonical_key(key))
        if found is None:
            raise ApiError(404, "unknown_service_request")
        return _json(200, found)

    def _document_download(self, request: Request, document_id: str) -> Response:
        _check_params(request, frozenset())
        if self._documents is None:
            raise ApiError(404, "documents_not_configured")
        if not _DOCUMENT_ID.fullmatch(document_id):
            raise ApiError(404, "unknown_document")  # before the cache is asked
        download = self._documents.open(
            document_id, request.headers.get("Range"), head=request.method == "HEAD"
        )
        # Streamed as it arrives: direct_passthrough hands the body to the server untouched,
        # and the server calls its close() when the answer is done or the client went away.
        return Response(
            download.body,
            status=download.status,
            headers=list(download.headers),
            direct_passthrough=True,
        )

    def _healthz(self, request: Request) -> Response:
        _check_params(request, frozenset())
        try:
            healthy, details = self._health()
        except Exception as exc:  # a failing check means an unhealthy daemon
            logger.error(
                "api: health check failed with %s.%s (details withheld)",
                type(exc).__module__,
                type(exc).__qualname__,
            )
            return _json(503, {"status": "unhealthy"})
        body = dict(details)
        if not healthy:
            body["status"] = "unhealthy"
        elif body.get("status") not in ("ok", "degraded"):
            body["status"] = "ok"
        return _json(200 if healthy else 503, body)

    def _metrics_text(self, request: Request) -> Response:
        if self._metrics is None:
            raise ApiError(404, "not_found")
        _check_params(request, frozenset())
        body, content_type = self._metrics.render()
        return Response(body, status=200, content_type=content_type, headers=STANDARD_HEADERS)


def _vat_error(exc: SyncdError) -> ApiError | None:
    """The answer for one of syncd.engines.vat's errors, recognised by its ``code`` (duck typing
    keeps
    this module free of an import of the service); None for any other error (500)."""
    code = getattr(exc, "code", None)
    if code == MALFORMED_CODE:
        return ApiError(400, MALFORMED_CODE)
    if code == REJECTED_CODE:
        return ApiError(422, REJECTED_CODE)
    if isinstance(code, str) and code in UNAVAILABLE_CODES:
        seconds = retry_after_seconds(getattr(exc, "retry_after", None))
        return ApiError(503, code, headers=[("Retry-After", str(seconds))])
    return None


def make_app(
    vat: VatLookup,
    locations: LocationSource,
    health: HealthSource,
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    metrics: MetricsSource | None = None,
    service_requests: ServiceRequestDesk | None = None,
    max_upload_bytes: int = 0,
    documents: DocumentDownloadSource | None = None,
) -> WSGIApplication:
    """The API as a WSGI application.

    Routes: ``GET /v1/vat/{number}[?fresh=true]``, ``GET /v1/parcel-machines?country=EE
    [&type=parcel_machine|post_office]``, ``GET /healthz``, ``GET /metrics`` (HEAD too). A
    request whose body is larger than ``max_request_bytes`` is refused with 413 (the server
    refuses it first; this is the application's own guard). With ``metrics``, every request is
    recorded there and ``/metrics`` serves it (Prometheus text); without, ``/metrics`` is 404.
    With ``service_requests``, ``POST /v1/service-requests`` (a body of up to
    ``max_upload_bytes``) files a request and ``GET /v1/service-requests/{key}`` reports it;
    without, both answer 503 ``service_requests_disabled``. With ``documents``,
    ``GET /v1/documents/{id}/download`` streams a mirrored SharePoint document (Range honoured);
    without, it answers 404 ``documents_not_configured``.
    """
    if max_request_bytes < 0:
        raise ValueError("max_request_bytes must not be negative")
    return _Api(
        vat,
        locations,
        health,
        max_request_bytes,
        metrics,
        service_requests,
        max(max_upload_bytes, max_request_bytes),
        documents,
    )
