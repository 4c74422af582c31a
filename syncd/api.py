"""The local HTTP API the portal calls: VAT number lookups, Omniva's parcel machines, health,
Prometheus metrics.

A WSGI application (werkzeug routing, requests and responses) built by :func:`make_app` over three
small interfaces, so it depends on no concrete service: :class:`VatLookup` (syncd.vat.VatService),
:class:`LocationSource` (Omniva's list in the cache) and :class:`HealthSource`. The server that
runs it, :class:`~syncd.api_server.ApiServer`, is re-exported here (``from syncd.api import
ApiServer, make_app``); the contract is ``docs/openapi.yaml``.

Every answer is JSON (``application/json; charset=utf-8``), except the Prometheus text of
``GET /metrics``, with ``Cache-Control: no-store`` and ``X-Content-Type-Options: nosniff``. Every
error is ``{"error": {"code": ..., "message": ...}}`` with a stable ``code`` and a fixed message:
nothing the client sent (a VAT number, say) is ever echoed in an error or written to a log line.

Given a :class:`~syncd.metrics.MetricsSource`, the app records every request there (by route
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
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, PathConverter, Rule
from werkzeug.wrappers import Request, Response

from syncd.api_server import (
    JSON_CONTENT_TYPE,
    STANDARD_HEADERS,
    ApiBindError,
    ApiServer,
)
from syncd.errors import SyncdError

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from syncd.metrics import MetricsSource

__all__ = [
    "DEFAULT_RETRY_AFTER",
    "JSON_CONTENT_TYPE",
    "MAX_VAT_PATH_CHARS",
    "UNAVAILABLE_CODES",
    "ApiBindError",
    "ApiError",
    "ApiServer",
    "HealthSource",
    "LocationSource",
    "VatAnswer",
    "VatLookup",
    "make_app",
]

logger = logging.getLogger(__name__)

MAX_VAT_PATH_CHARS: Final = 64
DEFAULT_RETRY_AFTER: Final = 60  # seconds, when an unavailable error carries no hint
_MAX_RETRY_AFTER: Final = 86_400
DEFAULT_MAX_REQUEST_BYTES: Final = 8192

# The error codes of syncd.vat's exceptions (matched by their ``code``, see _vat_error).
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
    "request_too_large": "The request is too large; these endpoints take no request body.",
    "internal_error": "An internal error occurred; it has been logged.",
    "bad_request": "The request could not be understood.",
    "forbidden_host": "This API answers only requests addressed to localhost or a loopback "
    "address.",
}

# What a VAT number may look like before the VAT service is even asked (the service applies
# the same rule and more: a known country prefix, python-stdnum's checks).
_VAT_CHARS: Final = re.compile(r"[A-Za-z0-9 .\-]+")
_COUNTRY: Final = re.compile(r"[A-Za-z]{2}")
_FRESH: Final[Mapping[str, bool]] = {"true": True, "1": True, "false": False, "0": False}
_KINDS: Final = ("parcel_machine", "post_office")
# The outcome counted in the metrics for each status of _vat_error's answers.
_VAT_OUTCOMES: Final[Mapping[int, str]] = {400: "malformed", 422: "rejected", 503: "unavailable"}


# ------------------------------------------------------------------------------------------
# The interfaces the API calls
# ------------------------------------------------------------------------------------------


class VatAnswer(Protocol):
    """A VAT lookup's result (``syncd.vat.VatResult``)."""

    def to_json(self) -> Mapping[str, Any]:
        """The answer's JSON object (schema ``VatAnswer`` in docs/openapi.yaml)."""
        ...


class VatLookup(Protocol):
    """Looks VAT numbers up (``syncd.vat.VatService``).

    ``lookup`` raises :class:`~syncd.errors.SyncdError` subclasses carrying a ``code``:
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
    ) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message if message is not None else _MESSAGES[code]
        self.headers = tuple(headers)


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
    return _json(
        error.status,
        {"error": {"code": error.code, "message": error.message}},
        error.headers,
    )


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
        Rule("/healthz", endpoint="healthz", methods=["GET"]),
        Rule("/metrics", endpoint="metrics", methods=["GET"]),
    ],
    # An API answers the path it is given: no redirects to "canonical" URLs.
    strict_slashes=False,
    merge_slashes=False,
    redirect_defaults=False,
    converters={"rest": _Rest},
)


def _loopback_host(host: str) -> bool:
    """Whether a Host header names this host by a loopback name (a port may follow)."""
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:8787
        name = name[1 : name.find("]")] if "]" in name else name
    else:
        name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    if name in ("", "localhost"):
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
    ) -> None:
        self._vat = vat
        self._locations = locations
        self._health = health
        self._max_request_bytes = max_request_bytes
        self._metrics = metrics
        self._handlers: Mapping[str, Callable[..., Response]] = {
            "vat": self._vat_lookup,
            "parcel_machines": self._parcel_machines,
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
            if length is not None and length > self._max_request_bytes:
                raise ApiError(413, "request_too_large")
            if not _loopback_host(request.host):
                # A web page in the portal user's browser may resolve its own name to 127.0.0.1
                # (DNS rebinding); the portal itself calls localhost or a loopback address.
                raise ApiError(403, "forbidden_host")
            urls = _URLS.bind("localhost")
            endpoint, values = urls.match(request.path, method=request.method)
            return endpoint, self._handlers[endpoint](request, **values)
        except ApiError as error:
            return endpoint or error.code, _error(error)
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
    """The answer for one of syncd.vat's errors, recognised by its ``code`` (duck typing keeps
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
) -> WSGIApplication:
    """The API as a WSGI application.

    Routes: ``GET /v1/vat/{number}[?fresh=true]``, ``GET /v1/parcel-machines?country=EE
    [&type=parcel_machine|post_office]``, ``GET /healthz``, ``GET /metrics`` (HEAD too). A
    request whose body is larger than ``max_request_bytes`` is refused with 413 (the server
    refuses it first; this is the application's own guard). With ``metrics``, every request is
    recorded there and ``/metrics`` serves it (Prometheus text); without, ``/metrics`` is 404.
    """
    if max_request_bytes < 0:
        raise ValueError("max_request_bytes must not be negative")
    return _Api(vat, locations, health, max_request_bytes, metrics)
