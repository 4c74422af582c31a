"""FakeVies itself: wire shape, register, safe request parsing, faults, the gate, the control API
over HTTP and the standalone runner."""

from __future__ import annotations

import datetime
import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from lxml import etree
from stdnum.eu import vat

from syncd.connectors.vies import (
    ViesClient,
    ViesEchoMismatchError,
    ViesInvalidInputError,
    ViesUnavailableError,
)
from syncd.connectors.vies.fake import (
    COMPANIES,
    MEMBER_STATES,
    TEST_FAULTS,
    Company,
    FakeVies,
)

ROOT = Path(__file__).parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "vies"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
TYPES = "urn:ec.europa.eu:taxud:vies:services:checkVat:types"
DAY = datetime.date(2023, 1, 25)
REQUEST = (FIXTURES / "checkVat_request.xml").read_bytes()  # NL 805734958B01


@pytest.fixture
def fake() -> Iterator[FakeVies]:
    with FakeVies(seed=2, request_date=DAY) as f:
        yield f


@pytest.fixture
def client(fake: FakeVies) -> Iterator[ViesClient]:
    with ViesClient(fake.base_url, connect_timeout=2.0, timeout=5.0) as c:
        yield c


def wsdl_schema() -> etree.XMLSchema:
    wsdl = etree.parse(str(FIXTURES / "checkVatService.wsdl"))
    schema = wsdl.find(".//{http://www.w3.org/2001/XMLSchema}schema")
    assert schema is not None
    return etree.XMLSchema(etree.fromstring(etree.tostring(schema)))


def soap_request(country: str, number: str, operation: str = "checkVat", **extra: str) -> bytes:
    fields = {"countryCode": country, "vatNumber": number, **extra}
    inner = "".join(f"<urn:{k}>{v}</urn:{k}>" for k, v in fields.items())
    return (
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" xmlns:urn="{TYPES}"><soapenv:Header/>'
        f"<soapenv:Body><urn:{operation}>{inner}</urn:{operation}></soapenv:Body>"
        "</soapenv:Envelope>"
    ).encode()


def post(fake: FakeVies, body: bytes) -> requests.Response:
    return requests.post(fake.base_url, data=body, headers={"Content-Type": "text/xml"}, timeout=5)


def body_element(response: requests.Response) -> etree._Element:
    root = etree.fromstring(response.content)
    assert root.tag == f"{{{SOAP_ENV}}}Envelope"
    body = root.find(f"{{{SOAP_ENV}}}Body")
    assert body is not None
    return body[0]


def fault_string(response: requests.Response) -> str:
    element = body_element(response)
    assert element.tag == f"{{{SOAP_ENV}}}Fault"
    return element.findtext("faultstring") or ""


def control(fake: FakeVies, verb: str, route: str, payload: Any = None) -> requests.Response:
    return requests.request(verb, fake.control_url + route, json=payload, timeout=5)


# --- register ------------------------------------------------------------------------------------


def test_register_numbers_pass_stdnum_and_cover_the_countries() -> None:
    assert 8 <= len(COMPANIES) <= 12
    for company in COMPANIES:
        assert vat.is_valid(company.vat_id), company.vat_id
        assert company.country_code in MEMBER_STATES
    countries = {c.country_code for c in COMPANIES}
    assert {"EE", "LV", "LT", "FI", "DE", "NL", "EL", "PL"} <= countries
    assert len({c.vat_id for c in COMPANIES}) == len(COMPANIES)
    assert any(c.address and "\n" in c.address for c in COMPANIES)


def test_every_registered_company_answers_with_its_details(
    fake: FakeVies, client: ViesClient
) -> None:
    assert fake.companies == list(COMPANIES)
    for company in COMPANIES:
        answer = client.check(company.country_code, company.vat_number)
        assert answer.valid
        assert (answer.name, answer.address) == (company.name, company.address)
        assert answer.request_date == "2023-01-25"


def test_unknown_well_formed_number_is_invalid_with_placeholders(fake: FakeVies) -> None:
    response = post(fake, soap_request("EE", "100000009"))
    element = body_element(response)
    assert element.findtext(f"{{{TYPES}}}valid") == "false"
    assert element.findtext(f"{{{TYPES}}}name") == "---"
    assert element.findtext(f"{{{TYPES}}}address") == "---"


def test_companies_can_be_added_and_removed(fake: FakeVies, client: ViesClient) -> None:
    fake.add_company(Company("FI", "51788002", "Revontuli Laser Oy", "Uusi katu 1\n00100 HELSINKI"))
    assert client.check("FI", "51788002").address == "Uusi katu 1\n00100 HELSINKI"
    assert fake.remove_company("FI", "51788002")
    assert client.check("FI", "51788002").valid is False
    assert not fake.remove_company("FI", "51788002")


# --- wire shape ----------------------------------------------------------------------------------


def test_answer_has_the_reference_envelope_shape(fake: FakeVies) -> None:
    response = post(fake, REQUEST)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/xml")
    assert int(response.headers["Content-Length"]) == len(response.content)
    text = response.content.decode()
    assert "<env:Envelope" in text and "<env:Header/>" in text
    assert "<ns2:checkVatResponse" in text and "<ns2:requestDate>2023-01-25+01:00<" in text
    reference = etree.fromstring((FIXTURES / "checkVat_response_valid_NL.xml").read_bytes())
    ours = etree.fromstring(response.content)
    assert [e.tag for e in ours.iter()] == [e.tag for e in reference.iter()]
    for tag in ("countryCode", "vatNumber", "requestDate", "valid", "name"):
        assert ours.findtext(f".//{{{TYPES}}}{tag}") == reference.findtext(f".//{{{TYPES}}}{tag}")
    assert wsdl_schema().validate(body_element(response))


def test_approx_answer_follows_the_wsdl(fake: FakeVies) -> None:
    body = soap_request(
        "NL",
        "805734958B01",
        "checkVatApprox",
        traderName="booking.com b.v.",
        traderCity="Amsterdam",
        requesterCountryCode="EE",
        requesterVatNumber="101819093",
    )
    element = body_element(post(fake, body))
    assert wsdl_schema().validate(element)
    assert etree.QName(element).localname == "checkVatApproxResponse"
    get = lambda tag: element.findtext(f"{{{TYPES}}}{tag}")  # noqa: E731
    assert get("traderName") == "BOOKING.COM B.V."
    assert get("traderAddress") == "HERENGRACHT 00597\n1017CE AMSTERDAM"
    assert get("traderNameMatch") == "1" and get("traderCityMatch") == "3"
    assert (get("requestIdentifier") or "").startswith("WAPI")
    assert fake.requests == [("checkVatApprox", "NL", "805734958B01")]


def test_approx_without_requester_has_an_empty_identifier(fake: FakeVies) -> None:
    element = body_element(post(fake, soap_request("EE", "101819093", "checkVatApprox")))
    assert wsdl_schema().validate(element)
    assert element.findtext(f"{{{TYPES}}}requestIdentifier") == ""


def test_wsdl_is_served_with_the_fake_address(fake: FakeVies) -> None:
    response = requests.get(fake.wsdl_url, timeout=5)
    assert response.status_code == 200
    original = (FIXTURES / "checkVatService.wsdl").read_bytes()
    assert fake.base_url.encode() in response.content
    assert b"ec.europa.eu/taxation_customs/vies/services" not in response.content
    assert response.content.replace(fake.base_url.encode(), b"@") == original.replace(
        b"http://ec.europa.eu/taxation_customs/vies/services/checkVatService", b"@"
    )
    assert requests.get(fake.base_url, timeout=5).status_code == 405


def test_fault_shape(fake: FakeVies) -> None:
    response = post(fake, soap_request("EE", "301"))
    assert response.status_code == 200
    assert fault_string(response) == "MS_UNAVAILABLE"
    assert b"<faultcode>env:Server</faultcode>" in response.content


@pytest.mark.parametrize(("number", "code"), sorted(TEST_FAULTS.items()))
def test_test_numbering_for_any_member_state(fake: FakeVies, number: str, code: str) -> None:
    for country in ("EE", "EL", "XI"):
        assert fault_string(post(fake, soap_request(country, number))) == code


@pytest.mark.parametrize(
    ("country", "number"),
    [
        ("GR", "562418057"),
        ("ZZ", "123456"),
        ("EE", ""),
        ("EE", "1"),
        ("EE", "12 34"),
        ("EE", "1234567890123"),
    ],
)
def test_bad_input_is_invalid_input(fake: FakeVies, country: str, number: str) -> None:
    assert fault_string(post(fake, soap_request(country, number))) == "INVALID_INPUT"


# --- safe request parsing ------------------------------------------------------------------------


def test_request_with_an_entity_gets_a_client_fault(fake: FakeVies) -> None:
    body = REQUEST.replace(
        b"<soapenv:Envelope",
        b'<!DOCTYPE soapenv:Envelope [<!ENTITY n "805734958B01">]><soapenv:Envelope',
        1,
    ).replace(b"<urn:vatNumber>805734958B01<", b"<urn:vatNumber>&n;<")
    body = body.replace(b'<?xml version="1.0" encoding="UTF-8"?>\n', b"")
    response = post(fake, body)
    assert response.status_code == 500
    assert b"<faultcode>env:Client</faultcode>" in response.content
    assert "DOCTYPE" in fault_string(response)
    assert fake.requests == [] and fake.call_count == 1


def test_external_entity_is_never_fetched(fake: FakeVies) -> None:
    body = soap_request("EE", "&x;").replace(
        b"<soapenv:Envelope",
        b'<!DOCTYPE soapenv:Envelope [<!ENTITY x SYSTEM "file:///etc/passwd">]><soapenv:Envelope',
    )
    response = post(fake, body)
    assert response.status_code == 500 and b"root:" not in response.content


@pytest.mark.parametrize(
    "body",
    [
        b"not xml",
        b"<a>unclosed",
        b'<x xmlns="urn:other"/>',
        REQUEST.replace(b"urn:checkVat>", b"urn:somethingElse>"),
    ],
)
def test_malformed_requests_get_client_faults(fake: FakeVies, body: bytes) -> None:
    response = post(fake, body)
    assert response.status_code == 500
    assert fault_string(response).startswith("Unmarshalling Error")


def test_oversized_request_is_refused(fake: FakeVies) -> None:
    response = post(fake, b"x" * (64 * 1024 + 1))
    assert response.status_code == 413
    assert fake.call_count == 0


# --- injected faults -----------------------------------------------------------------------------


def test_fault_scoped_to_a_country(fake: FakeVies, client: ViesClient) -> None:
    fake.inject("MS_UNAVAILABLE", country="EE")
    for _ in range(3):  # unlimited by default
        with pytest.raises(ViesUnavailableError) as caught:
            client.check("EE", "101819093")
        assert caught.value.code == "MS_UNAVAILABLE"
    assert client.check("LV", "40957117777").valid
    fake.faults.clear()
    assert client.check("EE", "101819093").valid


def test_fault_scoped_to_a_number_with_or_without_prefix(
    fake: FakeVies, client: ViesClient
) -> None:
    fake.inject("INVALID_INPUT", number="EE105597971", times=1)
    fake.inject("TIMEOUT", number="105597971", times=1)
    with pytest.raises(ViesInvalidInputError):
        client.check("EE", "105597971")
    with pytest.raises(ViesUnavailableError) as caught:
        client.check("EE", "105597971")
    assert caught.value.code == "TIMEOUT" and caught.value.member_state
    assert client.check("EE", "101819093").valid
    assert client.check("EE", "105597971").valid  # both faults used up


def test_fault_times(fake: FakeVies, client: ViesClient) -> None:
    fake.inject("SERVICE_UNAVAILABLE", times=2)
    for _ in range(2):
        with pytest.raises(ViesUnavailableError):
            client.check("PL", "5925517329")
    assert client.check("PL", "5925517329").valid
    assert fake.faults.list() == []
    assert fake.call_count == 3


def test_unknown_fault_kind_is_refused(fake: FakeVies) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        fake.inject("EXPLODE")
    with pytest.raises(ValueError, match="times"):
        fake.inject("html", times=0)


@pytest.mark.parametrize(
    ("kind", "status", "content_type"),
    [("http_500", 500, "text/html"), ("html", 200, "text/html"), ("invalid_xml", 200, "text/xml")],
)
def test_transport_fault_wire(fake: FakeVies, kind: str, status: int, content_type: str) -> None:
    fake.inject(kind, times=1)
    response = post(fake, REQUEST)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith(content_type)
    if kind == "invalid_xml":
        with pytest.raises(etree.XMLSyntaxError):
            etree.fromstring(response.content)


def test_redirect_fault_points_at_an_html_page(fake: FakeVies) -> None:
    fake.inject("redirect", times=1)
    response = requests.post(fake.base_url, data=REQUEST, allow_redirects=False, timeout=5)
    assert response.status_code == 302
    page = requests.get(response.headers["Location"], timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")


def test_truncated_fault_cuts_the_body(fake: FakeVies) -> None:
    fake.inject("truncated", times=1)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        post(fake, REQUEST)
    assert post(fake, REQUEST).status_code == 200


@pytest.mark.parametrize(
    ("kind", "country", "number"),
    [("echo_country", "AT", "805734958B01"), ("echo_number", "NL", "805734958B00")],
)
def test_wrong_echo_faults_answer_the_truth_echoing_another_number(
    fake: FakeVies, kind: str, country: str, number: str
) -> None:
    fake.inject(kind, times=1)
    element = body_element(post(fake, REQUEST))
    assert wsdl_schema().validate(element)
    get = lambda tag: element.findtext(f"{{{TYPES}}}{tag}")  # noqa: E731
    assert (get("countryCode"), get("vatNumber")) == (country, number)
    assert (get("valid"), get("name")) == ("true", "BOOKING.COM B.V.")
    assert fake.requests == [("checkVat", "NL", "805734958B01")]
    assert body_element(post(fake, REQUEST)).findtext(f"{{{TYPES}}}vatNumber") == "805734958B01"


def test_no_consultation_fault_leaves_the_identifier_empty(fake: FakeVies) -> None:
    fake.inject("no_consultation", times=1)
    body = soap_request(
        "NL",
        "805734958B01",
        "checkVatApprox",
        requesterCountryCode="EE",
        requesterVatNumber="101819093",
    )
    element = body_element(post(fake, body))
    assert wsdl_schema().validate(element)
    get = lambda tag: element.findtext(f"{{{TYPES}}}{tag}")  # noqa: E731
    assert (get("valid"), get("traderName"), get("requestIdentifier")) == (
        "true",
        "BOOKING.COM B.V.",
        "",
    )
    again = body_element(post(fake, body)).findtext(f"{{{TYPES}}}requestIdentifier")
    assert (again or "").startswith("WAPI")


def test_answer_faults_over_the_control_api(fake: FakeVies, client: ViesClient) -> None:
    response = control(fake, "POST", "faults", {"kind": "echo_number", "number": "EE101819093"})
    assert response.json() == {"ok": True, "kind": "echo_number"}
    with pytest.raises(ViesEchoMismatchError):
        client.check("EE", "101819093")
    assert client.check("EE", "105597971").valid  # another number: no fault


# --- gate ----------------------------------------------------------------------------------------


def test_gate_holds_and_releases(fake: FakeVies, client: ViesClient) -> None:
    assert not fake.wait_for_waiting(1, timeout=0.01)
    fake.hold()
    done: queue.Queue[str] = queue.Queue()

    def work(number: str) -> None:
        done.put(client.check("EE", number).vat_number)

    numbers = ["101819093", "105597971", "100"]
    threads = [threading.Thread(target=work, args=(n,)) for n in numbers]
    for thread in threads:
        thread.start()
    assert fake.wait_for_waiting(3, timeout=10)
    assert done.empty() and len(fake.requests) == 3  # logged before the gate
    fake.release(1)  # one through, the gate stays held
    first = done.get(timeout=10)
    assert fake.wait_for_waiting(2, timeout=10) and fake.gate.waiting == 2 and done.empty()
    fake.release()
    rest = {done.get(timeout=10), done.get(timeout=10)}
    assert {first, *rest} == set(numbers)
    for thread in threads:
        thread.join(timeout=10)
    assert client.check("EE", "101819093").valid  # open again


def test_stop_releases_held_requests() -> None:
    fake = FakeVies().start()
    client = ViesClient(fake.base_url, connect_timeout=2.0, timeout=10.0)
    fake.hold()
    errors: queue.Queue[BaseException | None] = queue.Queue()

    def work() -> None:
        try:
            client.check("EE", "101819093")
            errors.put(None)
        except BaseException as exc:
            errors.put(exc)

    thread = threading.Thread(target=work)
    thread.start()
    assert fake.wait_for_waiting(1, timeout=10)
    fake.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    outcome = errors.get(timeout=1)  # answered or cut off, but not stuck
    assert outcome is None or isinstance(outcome, ViesUnavailableError)
    client.close()


# --- control API over HTTP -----------------------------------------------------------------------


def test_control_faults_over_http(fake: FakeVies, client: ViesClient) -> None:
    response = control(fake, "POST", "faults", {"kind": "MS_MAX_CONCURRENT_REQ", "country": "LT"})
    assert response.status_code == 200 and response.json() == {
        "ok": True,
        "kind": "MS_MAX_CONCURRENT_REQ",
    }
    listed = control(fake, "GET", "faults").json()
    assert [(f["kind"], f["country"], f["times"]) for f in listed] == [
        ("MS_MAX_CONCURRENT_REQ", "LT", None)
    ]
    with pytest.raises(Exception) as caught:
        client.check("LT", "161682812")
    assert getattr(caught.value, "code", None) == "MS_MAX_CONCURRENT_REQ"
    assert control(fake, "DELETE", "faults").status_code == 200
    assert client.check("LT", "161682812").valid
    raw = (FIXTURES / "fault_INVALID_INPUT.xml").read_text()
    control(fake, "POST", "faults", {"kind": "raw", "body": raw, "times": 1})
    with pytest.raises(ViesInvalidInputError):
        client.check("LT", "161682812")


def test_control_requests_stats_and_reset(fake: FakeVies, client: ViesClient) -> None:
    client.check("EE", "101819093")
    post(fake, b"garbage")
    assert control(fake, "GET", "requests").json() == [
        {"operation": "checkVat", "country_code": "EE", "vat_number": "101819093"}
    ]
    assert control(fake, "GET", "stats").json() == {"call_count": 2, "waiting": 0, "held": False}
    fake.inject("html")
    fake.hold()
    assert control(fake, "POST", "reset").json() == {"ok": True}
    assert fake.requests == [] and fake.call_count == 0 and fake.faults.list() == []
    assert not fake.gate.held
    assert client.check("EE", "101819093").valid


def test_control_hold_release_over_http(fake: FakeVies, client: ViesClient) -> None:
    assert control(fake, "POST", "hold").status_code == 200
    done = threading.Event()
    thread = threading.Thread(target=lambda: (client.check("EE", "100"), done.set()))
    thread.start()
    assert fake.wait_for_waiting(1, timeout=10)
    assert control(fake, "GET", "stats").json()["waiting"] == 1
    assert control(fake, "POST", "release", {}).status_code == 200
    assert done.wait(timeout=10)
    thread.join(timeout=10)


def test_control_companies_over_http(fake: FakeVies, client: ViesClient) -> None:
    listed = control(fake, "GET", "companies").json()
    assert len(listed) == len(COMPANIES) and listed[0]["vat_number"] == COMPANIES[0].vat_number
    added = {"country_code": "EE", "vat_number": "100000009", "name": "Uus OÜ", "address": "A 1"}
    assert control(fake, "POST", "companies", added).status_code == 200
    answer = client.check("EE", "100000009")
    assert answer.valid and answer.name == "Uus OÜ"


def test_control_errors(fake: FakeVies) -> None:
    assert control(fake, "POST", "faults", {"kind": "nope"}).status_code == 400
    assert control(fake, "POST", "companies", {"name": "x"}).status_code == 400
    assert control(fake, "GET", "nothing").status_code == 404
    bad = requests.post(fake.control_url + "faults", data=b"[1]", timeout=5)
    assert bad.status_code == 400 and bad.json()["error"] == "bad_request"


# --- standalone ----------------------------------------------------------------------------------


def test_standalone_runner() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "syncd.connectors.vies.fake", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("READY http://127.0.0.1:")
        endpoint = line.split()[1]
        with ViesClient(endpoint, connect_timeout=2.0, timeout=5.0) as client:
            assert client.check("NL", "805734958B01").name == "BOOKING.COM B.V."
        stats = requests.get(endpoint.split("/taxation")[0] + "/_fake/stats", timeout=5).json()
        assert stats["call_count"] == 1
        body = json.loads(
            requests.get(endpoint.split("/taxation")[0] + "/_fake/requests", timeout=5).text
        )
        assert body == [
            {"operation": "checkVat", "country_code": "NL", "vat_number": "805734958B01"}
        ]
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
