"""VIES's SOAP wire format: reading requests safely and writing answers and faults in the
envelope shape the real service uses (``env:`` envelope, ``ns2:`` types, dates with ``+01:00``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from lxml import etree

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
TYPES = "urn:ec.europa.eu:taxud:vies:services:checkVat:types"
OPERATIONS = ("checkVat", "checkVatApprox")
XML_TYPE = "text/xml; charset=UTF-8"
_TRADER_FIELDS = ("traderName", "traderCompanyType", "traderStreet", "traderPostcode", "traderCity")


class RequestError(ValueError):
    """The POST body is not a checkVat/checkVatApprox SOAP request (answered with a Client
    fault, as a JAX-WS service does)."""


@dataclass(frozen=True)
class SoapRequest:
    """One parsed checkVat or checkVatApprox request (absent fields are empty strings)."""

    operation: str
    country_code: str
    vat_number: str
    requester_country_code: str = ""
    requester_vat_number: str = ""
    trader: dict[str, str] = field(default_factory=dict)


def _parser() -> etree.XMLParser:
    # A new parser per request: lxml parsers must not be shared between threads.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def parse_request(body: bytes) -> SoapRequest:
    """Read a SOAP 1.1 request; DTDs and entity declarations are refused, never expanded."""
    try:
        root = etree.fromstring(body, _parser())
    except etree.XMLSyntaxError:
        raise RequestError("Unmarshalling Error: the request is not well-formed XML") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise RequestError("Unmarshalling Error: DOCTYPE is disallowed")
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise RequestError("Unmarshalling Error: not a SOAP 1.1 envelope")
    soap_body = root.find(f"{{{SOAP_ENV}}}Body")
    children = [] if soap_body is None else [c for c in soap_body if isinstance(c.tag, str)]
    if not children:
        raise RequestError("Unmarshalling Error: the SOAP body is empty")
    operation = etree.QName(children[0])
    if operation.namespace != TYPES or operation.localname not in OPERATIONS:
        raise RequestError(f"Unmarshalling Error: unexpected element {operation.localname}")
    node = children[0]

    def text(name: str) -> str:
        return (node.findtext(f"{{{TYPES}}}{name}") or "").strip()

    return SoapRequest(
        operation=operation.localname,
        country_code=text("countryCode"),
        vat_number=text("vatNumber"),
        requester_country_code=text("requesterCountryCode"),
        requester_vat_number=text("requesterVatNumber"),
        trader={name: text(name) for name in _TRADER_FIELDS if text(name)},
    )


def _envelope(body: str) -> bytes:
    return (
        f'<env:Envelope xmlns:env="{SOAP_ENV}"><env:Header/><env:Body>{body}'
        "</env:Body></env:Envelope>"
    ).encode()


def _element(name: str, value: str) -> str:
    return f"<ns2:{name}>{escape(value)}</ns2:{name}>"


def answer(
    request: SoapRequest,
    *,
    valid: bool,
    name: str | None,
    address: str | None,
    request_date: str,
    request_identifier: str = "",
    echo: tuple[str, str] | None = None,
) -> bytes:
    """A checkVatResponse or checkVatApproxResponse envelope (``None`` → ``---``); ``echo``
    (country code, number) replaces the echo of the request's own."""
    approx = request.operation == "checkVatApprox"
    country_code, vat_number = echo or (request.country_code, request.vat_number)
    parts = [
        _element("countryCode", country_code),
        _element("vatNumber", vat_number),
        _element("requestDate", request_date),
        _element("valid", "true" if valid else "false"),
        _element("traderName" if approx else "name", name or "---"),
    ]
    if approx:
        parts.append(_element("traderAddress", address or "---"))
        parts.extend(_matches(request, name))
        parts.append(_element("requestIdentifier", request_identifier))
    else:
        parts.append(_element("address", address or "---"))
    tag = f"{request.operation}Response"
    return b'<?xml version="1.0" encoding="UTF-8"?>' + _envelope(
        f'<ns2:{tag} xmlns:ns2="{TYPES}">{"".join(parts)}</ns2:{tag}>'
    )


def _matches(request: SoapRequest, name: str | None) -> list[str]:
    """Match codes for the trader details the request gave: 1 valid, 2 invalid, 3 not processed
    (the fake compares names only)."""
    out: list[str] = []
    given = request.trader.get("traderName")
    if given is not None:
        code = "3" if name is None else "1" if given.casefold() == name.casefold() else "2"
        out.append(_element("traderNameMatch", code))
    for detail, match in (
        ("traderCompanyType", "traderCompanyTypeMatch"),
        ("traderStreet", "traderStreetMatch"),
        ("traderPostcode", "traderPostcodeMatch"),
        ("traderCity", "traderCityMatch"),
    ):
        if detail in request.trader:
            out.append(_element(match, "3"))
    return out


def fault(faultstring: str, faultcode: str = "env:Server") -> bytes:
    """A SOAP 1.1 fault envelope as VIES sends it."""
    return _envelope(
        f"<env:Fault><faultcode>{escape(faultcode)}</faultcode>"
        f"<faultstring>{escape(faultstring)}</faultstring></env:Fault>"
    )
