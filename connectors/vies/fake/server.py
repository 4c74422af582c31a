"""``FakeVies``: a real HTTP server on 127.0.0.1 speaking VIES's checkVat SOAP service.

``GET <SERVICE_PATH>?wsdl`` serves the bundled WSDL with its address pointing at the fake;
``POST <SERVICE_PATH>`` answers checkVat and checkVatApprox. Each SOAP request is counted,
parsed (a DTD or an entity gets a Client fault), logged, held at the gate when it is held,
then answered: an injected fault if one matches, else VIES's test-service numbering, else the
register (unknown well-formed numbers are invalid with ``---``). ``/_fake/…`` is the control API.
"""

from __future__ import annotations

import datetime
import json
import random
import re
import string
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any, NamedTuple

from syncd.connectors.fakehttp import LoopbackFake, QuietHandler, TrackingHTTPServer
from syncd.connectors.vies.client import WSDL_FILE

from . import soap
from .companies import (
    COMPANIES,
    MEMBER_STATES,
    TEST_FAULTS,
    TEST_INVALID,
    TEST_TRADER_ADDRESS,
    TEST_TRADER_NAME,
    TEST_VALID,
    Company,
)
from .control import ControlApi
from .faults import FaultRegistry, InjectedFault
from .gate import Gate

SERVICE_PATH = "/taxation_customs/vies/services/checkVatService"
MAINTENANCE_PATH = "/taxation_customs/vies/maintenance.html"
MAX_BODY_BYTES = 64 * 1024
JSON_TYPE = "application/json"
HTML_TYPE = "text/html; charset=UTF-8"
_WSDL_ADDRESS = b"http://ec.europa.eu/taxation_customs/vies/services/checkVatService"
_NUMBER = re.compile(r"[0-9A-Za-z+*.]{2,12}")
_CET = datetime.timezone(datetime.timedelta(hours=1))
_MAINTENANCE_PAGE = (
    b'<!DOCTYPE html>\n<html lang="en"><head><title>VIES - Service unavailable</title></head>'
    b"<body><h1>VIES is under maintenance</h1><p>Please try again later.</p></body></html>\n"
)
_ERROR_500_PAGE = (
    b"<html><head><title>500 Internal Server Error</title></head>"
    b"<body><h1>Internal Server Error</h1></body></html>\n"
)
_NOT_FOUND_PAGE = b"<html><body><h1>404 Not Found</h1></body></html>\n"


class LoggedRequest(NamedTuple):
    """One SOAP request the fake parsed."""

    operation: str  # "checkVat" | "checkVatApprox"
    country_code: str
    vat_number: str


@dataclass
class Reply:
    """What the handler writes back; ``transport`` may break the exchange on purpose."""

    status: int = 200
    body: bytes = b""
    content_type: str = soap.XML_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    transport: str = "send"  # "send" | "drop" (close, no answer) | "truncate" (half the body)
    close: bool = False


def json_reply(status: int, payload: Any) -> Reply:
    """A JSON reply (control API)."""
    return Reply(status, json.dumps(payload).encode(), JSON_TYPE)


class FakeVies(LoopbackFake):
    """A fake VIES SOAP service over real HTTP on 127.0.0.1.

    Use as a context manager (``with FakeVies() as fake:`` → ``fake.base_url`` is the SOAP
    endpoint) or call ``start()``/``stop()``. ``seed`` drives the checkVatApprox request
    identifiers; ``companies`` is the register (default :data:`COMPANIES`); ``request_date``
    fixes the date the answers carry (default: today in CET).
    """

    _name = "vies"

    def __init__(
        self,
        seed: int = 1,
        companies: Iterable[Company] = COMPANIES,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        request_date: datetime.date | None = None,
    ) -> None:
        super().__init__(host, port)
        self.request_date = request_date
        self.faults = FaultRegistry()
        self.gate = Gate()
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._register: dict[tuple[str, str], Company] = {}
        for company in companies:
            self.add_company(company)
        self._requests: list[LoggedRequest] = []
        self._call_count = 0
        self._control = ControlApi(self)

    # --- lifecycle (start/stop/port/control_url: LoopbackFake) ------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _Handler

    def _before_stop(self) -> None:
        """Open the gate, so held requests are answered (or cut short) before the shutdown."""
        self.gate.release()

    @property
    def base_url(self) -> str:
        """The SOAP endpoint: ``http://127.0.0.1:PORT/taxation_customs/vies/services/…``."""
        return f"http://{self.host}:{self.port}{SERVICE_PATH}"

    @property
    def wsdl_url(self) -> str:
        """The endpoint with ``?wsdl``."""
        return f"{self.base_url}?wsdl"

    # --- Python API -------------------------------------------------------------------------

    @property
    def companies(self) -> list[Company]:
        """The register, in insertion order."""
        with self._lock:
            return list(self._register.values())

    def add_company(self, company: Company) -> None:
        """Register a trader (replacing one with the same number)."""
        with self._lock:
            self._register[(company.country_code, company.vat_number.upper())] = company

    def remove_company(self, country_code: str, vat_number: str) -> bool:
        """Deregister a trader (its number becomes invalid); False if it was unknown."""
        with self._lock:
            return self._register.pop((country_code, vat_number.upper()), None) is not None

    def inject(self, kind: str, **options: Any) -> InjectedFault:
        """Inject a fault: a VIES fault string or a transport kind (see ``faults.py``), with
        ``country``, ``number``, ``times`` (default unlimited), ``delay``, ``status``, ``body``,
        ``content_type``."""
        return self.faults.add(kind, **options)

    def inject_raw(
        self,
        body: bytes | str,
        *,
        status: int = 200,
        content_type: str = soap.XML_TYPE,
        headers: dict[str, str] | None = None,
        times: int | None = None,
        country: str | None = None,
        number: str | None = None,
    ) -> InjectedFault:
        """Answer matching requests with exactly ``body`` (a captured VIES answer, say)."""
        return self.faults.add(
            "raw",
            body=body,
            status=status,
            content_type=content_type,
            headers=headers,
            times=times,
            country=country,
            number=number,
        )

    @property
    def requests(self) -> list[LoggedRequest]:
        """Every parsed SOAP request so far: (operation, country_code, vat_number)."""
        with self._lock:
            return list(self._requests)

    @property
    def call_count(self) -> int:
        """SOAP POSTs received (unparseable and faulted ones included)."""
        with self._lock:
            return self._call_count

    def reset(self) -> None:
        """Forget requests, faults and the call count; open the gate."""
        with self._lock:
            self._requests.clear()
            self._call_count = 0
        self.faults.clear()
        self.gate.release()

    def hold(self) -> None:
        """Hold every following SOAP request at the gate until ``release()``."""
        self.gate.hold()

    def release(self, count: int | None = None) -> None:
        """Open the gate, or let ``count`` requests through and keep holding."""
        self.gate.release(count)

    def wait_for_waiting(self, count: int, timeout: float | None = None) -> bool:
        """Block until ``count`` requests wait at the gate; False on timeout."""
        return self.gate.wait_for_waiting(count, timeout)

    def wsdl(self) -> bytes:
        """The bundled WSDL with its soap:address pointing at this fake."""
        source = resources.files("syncd.connectors.vies").joinpath(WSDL_FILE).read_bytes()
        return source.replace(_WSDL_ADDRESS, self.base_url.encode())

    # --- request handling -------------------------------------------------------------------

    def handle(self, verb: str, target: str, body: bytes) -> Reply:
        """Answer one HTTP request (any path)."""
        path, _, query = target.partition("?")
        if path.startswith("/_fake/"):
            return json_reply(*self._control.handle(verb, path, body))
        if path == SERVICE_PATH and verb == "POST":
            return self._soap(body)
        if path == SERVICE_PATH and verb == "GET" and query.lower().startswith("wsdl"):
            return Reply(200, self.wsdl())
        if path == SERVICE_PATH:
            return Reply(405, b"", HTML_TYPE, {"Allow": "POST"})
        if path == MAINTENANCE_PATH and verb == "GET":
            return Reply(200, _MAINTENANCE_PAGE, HTML_TYPE)
        return Reply(404, _NOT_FOUND_PAGE, HTML_TYPE)

    def _soap(self, body: bytes) -> Reply:
        with self._lock:
            self._call_count += 1
        try:
            request = soap.parse_request(body)
        except soap.RequestError as exc:
            return Reply(500, soap.fault(str(exc), "env:Client"))
        with self._lock:
            self._requests.append(
                LoggedRequest(request.operation, request.country_code, request.vat_number)
            )
        self.gate.pass_through()
        injected = self.faults.take(request.country_code, request.vat_number)
        if injected is not None and injected.kind != "slow":
            return self._fault_reply(injected, request)
        if injected is not None and self._stopping.wait(injected.delay):
            return Reply(transport="drop")
        return Reply(200, self._answer(request))

    def _answer(
        self,
        request: soap.SoapRequest,
        *,
        echo: tuple[str, str] | None = None,
        consultation: bool = True,
    ) -> bytes:
        """The truth: a fault for bad input and test numbers, else the register's answer
        (echoing ``echo`` instead of the request's number, without a consultation number when
        ``consultation`` is false)."""
        if request.country_code not in MEMBER_STATES or not _NUMBER.fullmatch(request.vat_number):
            return soap.fault("INVALID_INPUT")
        has_requester = bool(request.requester_country_code or request.requester_vat_number)
        if has_requester and (
            request.requester_country_code not in MEMBER_STATES
            or not _NUMBER.fullmatch(request.requester_vat_number)
        ):
            return soap.fault("INVALID_REQUESTER_INFO")
        number = request.vat_number.upper()
        if number in TEST_FAULTS:
            return soap.fault(TEST_FAULTS[number])
        with self._lock:
            company = self._register.get((request.country_code, number))
            identifier = self._identifier() if has_requester and consultation else ""
        name: str | None
        address: str | None
        if number == TEST_VALID:
            name, address, valid = TEST_TRADER_NAME, TEST_TRADER_ADDRESS, True
        elif company is not None and number != TEST_INVALID:
            name, address, valid = company.name, company.address, True
        else:
            name, address, valid = None, None, False
        return soap.answer(
            request,
            valid=valid,
            name=name,
            address=address,
            request_date=self._request_date(),
            request_identifier=identifier,
            echo=echo,
        )

    def _identifier(self) -> str:
        alphabet = string.ascii_uppercase + string.digits
        return "WAPI" + "".join(self._random.choice(alphabet) for _ in range(12))

    def _request_date(self) -> str:
        day = self.request_date or datetime.datetime.now(_CET).date()
        return f"{day.isoformat()}+01:00"

    def _fault_reply(self, injected: InjectedFault, request: soap.SoapRequest) -> Reply:
        kind = injected.kind
        if kind == "raw":
            return Reply(injected.status, injected.body, injected.content_type, injected.headers)
        if kind == "http_500":
            return Reply(500, _ERROR_500_PAGE, HTML_TYPE)
        if kind == "html":
            return Reply(200, _MAINTENANCE_PAGE, HTML_TYPE)
        if kind == "redirect":
            location = f"http://{self.host}:{self.port}{MAINTENANCE_PATH}"
            return Reply(302, _MAINTENANCE_PAGE, HTML_TYPE, {"Location": location})
        if kind == "drop":
            return Reply(transport="drop")
        if kind == "invalid_xml":
            # a mismatched end tag: well-formedness fails near the end, as with a broken proxy
            broken = self._answer(request).replace(b"</env:Body>", b"</env:Bdoy>")
            return Reply(200, broken)
        if kind == "truncated":
            return Reply(200, self._answer(request), transport="truncate")
        if kind == "echo_country":
            other = min(MEMBER_STATES - {request.country_code})
            return Reply(200, self._answer(request, echo=(other, request.vat_number)))
        if kind == "echo_number":
            echo = (request.country_code, _other_number(request.vat_number))
            return Reply(200, self._answer(request, echo=echo))
        if kind == "no_consultation":
            return Reply(200, self._answer(request, consultation=False))
        return Reply(200, soap.fault(kind))  # a VIES fault string


def _other_number(number: str) -> str:
    """``number`` with its last character changed: another number of the same shape."""
    if not number:
        return "1"
    last = number[-1]
    return number[:-1] + ("1" if last == "0" else "0")


class _Handler(QuietHandler):
    """HTTP/1.1 keep-alive handler; every answer carries a Content-Length."""

    server_version = "Apache"
    server: TrackingHTTPServer[FakeVies]

    def serve(self, verb: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.write_reply(Reply(413, b"", HTML_TYPE, close=True))
            return
        body = self.rfile.read(length) if length else b""
        try:
            reply = self.server.fake.handle(verb, self.path, body)
        except Exception as exc:  # a bug in the fake must not hang the client
            reply = Reply(500, soap.fault(f"fake server bug: {exc!r}"))
        self.write_reply(reply)
