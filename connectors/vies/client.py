"""The VIES SOAP client: one ``checkVat``/``checkVatApprox`` call per :meth:`ViesClient.check`.

The WSDL is the copy bundled with this package, parsed once and never fetched. zeep parses
answers with DTDs, entities and external references forbidden; redirects are never followed;
every exchange has connect and read timeouts. Every outcome is either a :class:`ViesAnswer` or
a :class:`~syncd.connectors.vies.errors.ViesError` subclass (see ``errors.py``). No retries
here: the caller owns the policy.
"""

from __future__ import annotations

import datetime
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any, NoReturn

import requests
import zeep
import zeep.exceptions
from lxml import etree
from zeep.wsdl import Document

from syncd.connectors.http import USER_AGENT

from .answer import ViesAnswer
from .errors import (
    ViesEchoMismatchError,
    ViesError,
    ViesMalformedError,
    ViesUnavailableError,
    fault_error,
)

DEFAULT_ENDPOINT = "https://ec.europa.eu/taxation_customs/vies/services/checkVatService"
BINDING = "{urn:ec.europa.eu:taxud:vies:services:checkVat}checkVatBinding"
WSDL_FILE = "checkVatService.wsdl"
_PLACEHOLDERS = frozenset({"", "---"})
_HTML_STARTS = (b"<!doctype html", b"<html")


def settings() -> zeep.Settings:
    """zeep settings: strict parsing with DTDs, entities and external references forbidden."""
    return zeep.Settings(
        strict=True,
        forbid_dtd=True,
        forbid_entities=True,
        forbid_external=True,
        xml_huge_tree=False,
    )


def _refuse(url: str) -> NoReturn:
    raise zeep.exceptions.ExternalReferenceForbidden(url)  # type: ignore[no-untyped-call]


class _OfflineTransport(zeep.Transport):
    """Loads the bundled WSDL from disk and refuses anything over the network."""

    def _load_remote_data(self, url: str) -> bytes:
        _refuse(url)


_document_lock = threading.Lock()
_document: Document | None = None


def wsdl_document() -> Document:
    """The bundled WSDL, parsed once per process (the parsed document is only read after)."""
    global _document
    with _document_lock:
        if _document is None:
            source = resources.files(__package__).joinpath(WSDL_FILE)
            with resources.as_file(source) as path:
                # zeep annotates the transport as a class; it wants an instance
                loader: Any = _OfflineTransport()  # type: ignore[no-untyped-call]
                _document = Document(str(path), loader, settings=settings())
        return _document


class _Transport(zeep.Transport):
    """zeep's transport without redirects, with (connect, read) timeouts, and refusing answers
    that are no SOAP at all (redirects, HTML pages) before zeep tries to parse them."""

    def __init__(self, session: requests.Session, timeout: tuple[float, float]) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            session=session, timeout=timeout[1], operation_timeout=timeout
        )
        session.headers["User-Agent"] = USER_AGENT
        self.last_status = 0

    def _load_remote_data(self, url: str) -> bytes:
        _refuse(url)

    def get(self, address: str, params: Any, headers: Any) -> requests.Response:
        _refuse(address)

    def post(self, address: str, message: bytes, headers: dict[str, str]) -> requests.Response:
        self.last_status = 0
        response = self.session.post(
            address,
            data=message,
            headers=headers,
            timeout=self.operation_timeout,
            allow_redirects=False,
        )
        self.last_status = status = response.status_code
        if 300 <= status < 400:
            raise ViesMalformedError("VIES: answered with a redirect (redirect)", code="redirect")
        if _is_html(response):
            if status == 200:
                raise ViesMalformedError("VIES: answered with an HTML page (html)", code="html")
            raise ViesUnavailableError(
                f"VIES: HTTP {status} with an HTML page (http_error)", code="http_error"
            )
        return response


def _is_html(response: requests.Response) -> bool:
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    head = response.content[:256].lstrip().lower()
    return media_type == "text/html" or head.startswith(_HTML_STARTS)


@dataclass
class _Channel:
    """One session plus the zeep service bound to it; used by one thread at a time."""

    session: requests.Session
    transport: _Transport
    service: Any


class ViesClient:
    """A thread-safe VIES SOAP client: ``check()`` makes exactly one call, no retries.

    ``requester`` (country code, number without prefix) switches to ``checkVatApprox``, whose
    ``requestIdentifier`` becomes ``ViesAnswer.consultation_number`` (None, and
    ``consultation_missing`` true, when VIES leaves it empty). Concurrent calls each use
    their own HTTP session from a small pool (one per call in flight), all sharing the parsed WSDL.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        connect_timeout: float,
        timeout: float,
        requester: tuple[str, str] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.requester = requester
        self._timeouts = (connect_timeout, timeout)
        self._document = wsdl_document()
        self._settings = settings()
        self._lock = threading.Lock()
        self._idle: list[_Channel] = []
        self._closed = False

    def check(self, country_code: str, vat_number: str) -> ViesAnswer:
        """Ask VIES about ``country_code`` + ``vat_number`` once.

        Raises a :class:`~syncd.connectors.vies.errors.ViesError` subclass for every failure,
        :class:`~syncd.connectors.vies.errors.ViesEchoMismatchError` when the answer echoes
        another country code or number than the one asked.
        """
        channel = self._acquire()
        try:
            return self._call(channel, country_code, vat_number)
        finally:
            self._release(channel)

    def close(self) -> None:
        """Close every HTTP session; ``check()`` raises RuntimeError afterwards."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for channel in idle:
            channel.session.close()

    def __enter__(self) -> ViesClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- channels ---------------------------------------------------------------------------

    def _acquire(self) -> _Channel:
        with self._lock:
            if self._closed:
                raise RuntimeError("the VIES client is closed")
            if self._idle:
                return self._idle.pop()
        session = requests.Session()
        transport = _Transport(session, self._timeouts)
        client = zeep.Client(  # type: ignore[no-untyped-call]
            wsdl=self._document, transport=transport, settings=self._settings
        )
        service = client.create_service(BINDING, self.endpoint)  # type: ignore[no-untyped-call]
        return _Channel(session, transport, service)

    def _release(self, channel: _Channel) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(channel)
                return
        channel.session.close()

    # --- the call ---------------------------------------------------------------------------

    def _call(self, channel: _Channel, country_code: str, vat_number: str) -> ViesAnswer:
        try:
            if self.requester is None:
                result = channel.service.checkVat(countryCode=country_code, vatNumber=vat_number)
            else:
                result = channel.service.checkVatApprox(
                    countryCode=country_code,
                    vatNumber=vat_number,
                    requesterCountryCode=self.requester[0],
                    requesterVatNumber=self.requester[1],
                )
        except ViesError:
            raise
        except Exception as exc:
            # ``from None``: zeep and requests put bodies and URLs into their messages.
            raise _failure(exc, channel.transport.last_status, country_code) from None
        answer = _answer(result, approx=self.requester is not None)
        mismatch = answer.mismatch(country_code, vat_number)
        if mismatch is not None:
            raise ViesEchoMismatchError(mismatch)
        return answer


def _failure(exc: Exception, status: int, country_code: str) -> ViesError:
    """Map an exception raised during the exchange to a ViesError."""
    kind = type(exc).__name__
    if isinstance(exc, zeep.exceptions.Fault):
        known = fault_error(str(exc.message or ""), country_code)
        if known is not None:
            return known
        if status != 200:
            return ViesUnavailableError(f"VIES: HTTP {status} (http_error)", code="http_error")
        return ViesMalformedError("VIES: unknown fault (unexpected)", code="unexpected")
    if isinstance(exc, zeep.exceptions.TransportError):
        if exc.status_code != 200:
            return ViesUnavailableError(
                f"VIES: HTTP {exc.status_code} (http_error)", code="http_error"
            )
        return ViesMalformedError("VIES: the answer is not XML (invalid_xml)", code="invalid_xml")
    if isinstance(
        exc,
        zeep.exceptions.DTDForbidden
        | zeep.exceptions.EntitiesForbidden
        | zeep.exceptions.ExternalReferenceForbidden,
    ):
        return ViesMalformedError(
            f"VIES: the answer declares a DTD or entities (invalid_xml; {kind})", code="invalid_xml"
        )
    if isinstance(exc, zeep.exceptions.XMLSyntaxError | etree.XMLSyntaxError):
        return ViesMalformedError("VIES: the answer is not SOAP (invalid_xml)", code="invalid_xml")
    if isinstance(exc, requests.TooManyRedirects):
        return ViesMalformedError("VIES: answered with a redirect (redirect)", code="redirect")
    if isinstance(exc, requests.Timeout):
        return ViesUnavailableError("VIES: no answer in time (timeout)", code="timeout")
    if isinstance(exc, requests.RequestException):
        # refused, reset, or cut mid-answer (a truncated body)
        return ViesUnavailableError(
            f"VIES: connection failed (connection; {kind})", code="connection"
        )
    if isinstance(exc, zeep.exceptions.Error | ValueError | TypeError):
        return ViesMalformedError(
            f"VIES: unexpected answer (unexpected; {kind})", code="unexpected"
        )
    raise exc


def _answer(result: Any, *, approx: bool) -> ViesAnswer:
    """A ViesAnswer from zeep's checkVatResponse/checkVatApproxResponse value."""
    country_code = getattr(result, "countryCode", None)
    vat_number = getattr(result, "vatNumber", None)
    valid = getattr(result, "valid", None)
    request_date = getattr(result, "requestDate", None)
    if (
        not isinstance(country_code, str)
        or not isinstance(vat_number, str)
        or not isinstance(valid, bool)
        or not isinstance(request_date, datetime.date)
    ):
        raise ViesMalformedError("VIES: the answer misses fields (unexpected)", code="unexpected")
    if approx:
        name, address = result.traderName, result.traderAddress
        consultation = _text(result.requestIdentifier)
    else:
        name, address, consultation = result.name, result.address, None
    return ViesAnswer(
        country_code=country_code,
        vat_number=vat_number,
        valid=valid,
        name=_text(name),
        address=_text(address),
        request_date=request_date.strftime("%Y-%m-%d"),
        consultation_number=consultation,
        approx=approx,
    )


def _text(value: object) -> str | None:
    """A VIES text field: None for absent, empty or the ``---`` placeholder."""
    if not isinstance(value, str) or value.strip() in _PLACEHOLDERS:
        return None
    return value.strip()
