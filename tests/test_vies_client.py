"""ViesClient against FakeVies on loopback: reference answers, fault and transport mapping,
checkVatApprox, thread safety and XML hardening."""

from __future__ import annotations

import datetime
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.connectors.vies import (
    ViesAnswer,
    ViesBlockedError,
    ViesBusyError,
    ViesClient,
    ViesEchoMismatchError,
    ViesError,
    ViesInvalidInputError,
    ViesMalformedError,
    ViesUnavailableError,
)
from syncd.connectors.vies.client import wsdl_document
from syncd.connectors.vies.fake import COMPANIES, FakeVies
from syncd.core.errors import (
    FatalError,
    MalformedResponseError,
    RateLimitedError,
    SkippableError,
    UpstreamUnavailableError,
)

FIXTURES = Path(__file__).parent / "fixtures" / "vies"
DAY = datetime.date(2024, 5, 17)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.fixture
def fake() -> Iterator[FakeVies]:
    with FakeVies(seed=5, request_date=DAY) as f:
        yield f


@pytest.fixture
def client(fake: FakeVies) -> Iterator[ViesClient]:
    with ViesClient(fake.base_url, connect_timeout=2.0, timeout=5.0) as c:
        yield c


def raises_vies(client: ViesClient, country: str, number: str) -> ViesError:
    """The ViesError a check raises; also asserts the message keeps the number out and hides
    the chained zeep/requests exception (whose text can carry bodies and URLs)."""
    with pytest.raises(ViesError) as caught:
        client.check(country, number)
    error = caught.value
    assert number not in str(error)
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
    return error


# --- reference samples, served byte for byte ---------------------------------------------------


def test_reference_valid_answer_is_parsed(fake: FakeVies, client: ViesClient) -> None:
    fake.inject_raw(fixture("checkVat_response_valid_NL.xml"), times=1)
    answer = client.check("NL", "805734958B01")
    assert answer == ViesAnswer(
        country_code="NL",
        vat_number="805734958B01",
        valid=True,
        name="BOOKING.COM B.V.",
        address="HERENGRACHT 00597 1017CE AMSTERDAM",
        request_date="2023-01-25",
        consultation_number=None,
    )


def test_reference_invalid_answer_maps_placeholders_to_none(
    fake: FakeVies, client: ViesClient
) -> None:
    fake.inject_raw(fixture("checkVat_response_invalid.xml"), times=1)
    answer = client.check("NL", "200")
    assert answer.valid is False
    assert (answer.name, answer.address) == (None, None)
    assert (answer.country_code, answer.vat_number) == ("NL", "200")
    assert answer.request_date == "2017-03-20"


@pytest.mark.parametrize(
    ("name", "error_type", "code", "member_state"),
    [
        ("fault_INVALID_INPUT.xml", ViesInvalidInputError, "INVALID_INPUT", False),
        ("fault_MS_UNAVAILABLE.xml", ViesUnavailableError, "MS_UNAVAILABLE", True),
    ],
)
def test_reference_faults_map_by_faultstring(
    fake: FakeVies,
    client: ViesClient,
    name: str,
    error_type: type[ViesError],
    code: str,
    member_state: bool,
) -> None:
    fake.inject_raw(fixture(name), times=1)
    error = raises_vies(client, "EE", "101819093")
    assert type(error) is error_type
    assert error.code == code
    assert error.member_state is member_state
    assert "EE" in str(error) and code in str(error)


def test_raw_injection_serves_the_fixture_byte_for_byte(fake: FakeVies) -> None:
    import requests

    body = fixture("checkVat_response_valid_NL.xml")
    fake.inject_raw(body, times=1)
    response = requests.post(fake.base_url, data=fixture("checkVat_request.xml"), timeout=5)
    assert response.content == body


# --- VIES test-service numbering -----------------------------------------------------------------

NUMBERING = [
    ("201", ViesInvalidInputError, SkippableError, "INVALID_INPUT", False),
    ("202", ViesInvalidInputError, SkippableError, "INVALID_REQUESTER_INFO", False),
    ("300", ViesUnavailableError, UpstreamUnavailableError, "SERVICE_UNAVAILABLE", False),
    ("301", ViesUnavailableError, UpstreamUnavailableError, "MS_UNAVAILABLE", True),
    ("302", ViesUnavailableError, UpstreamUnavailableError, "TIMEOUT", True),
    ("400", ViesBlockedError, FatalError, "VAT_BLOCKED", False),
    ("401", ViesBlockedError, FatalError, "IP_BLOCKED", False),
    ("500", ViesBusyError, RateLimitedError, "GLOBAL_MAX_CONCURRENT_REQ", False),
    ("501", ViesBusyError, RateLimitedError, "GLOBAL_MAX_CONCURRENT_REQ_TIME", False),
    ("600", ViesBusyError, RateLimitedError, "MS_MAX_CONCURRENT_REQ", True),
    ("601", ViesBusyError, RateLimitedError, "MS_MAX_CONCURRENT_REQ_TIME", True),
]


@pytest.mark.parametrize(("number", "error_type", "policy", "code", "member_state"), NUMBERING)
def test_test_numbering_faults_map_to_typed_errors(
    client: ViesClient,
    number: str,
    error_type: type[ViesError],
    policy: type[Exception],
    code: str,
    member_state: bool,
) -> None:
    error = raises_vies(client, "LV", number)
    assert type(error) is error_type
    assert isinstance(error, policy)
    assert error.code == code
    assert error.member_state is member_state
    assert str(error).startswith("VIES: ") and f"({code}, LV)" in str(error)


def test_test_numbers_valid_and_invalid(client: ViesClient) -> None:
    valid = client.check("FI", "100")
    invalid = client.check("FI", "200")
    assert valid.valid and valid.name and valid.address
    assert valid.request_date == DAY.isoformat()
    assert not invalid.valid and invalid.name is None and invalid.address is None


def test_register_company_and_unknown_number(client: ViesClient) -> None:
    booking = client.check("NL", "805734958B01")
    assert booking.valid and booking.name == "BOOKING.COM B.V."
    assert booking.address == "HERENGRACHT 00597\n1017CE AMSTERDAM"
    german = client.check("DE", "159425947")  # valid, but Germany shares no name/address
    assert german.valid and german.name is None and german.address is None
    unknown = client.check("EE", "100000009")
    assert unknown.valid is False and unknown.name is None


# --- transport failures --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error_type", "code"),
    [
        ("http_500", ViesUnavailableError, "http_error"),
        ("invalid_xml", ViesMalformedError, "invalid_xml"),
        ("html", ViesMalformedError, "html"),
        ("redirect", ViesMalformedError, "redirect"),
        ("truncated", ViesUnavailableError, "connection"),
        ("drop", ViesUnavailableError, "connection"),
    ],
)
def test_transport_faults_map(
    fake: FakeVies, client: ViesClient, kind: str, error_type: type[ViesError], code: str
) -> None:
    fake.inject(kind, times=1)
    error = raises_vies(client, "EE", "101819093")
    assert type(error) is error_type and error.code == code
    assert fake.call_count == 1  # one call, no retry, no redirect followed
    assert client.check("EE", "101819093").valid  # the client recovers on the next call


def test_timeout_against_a_slow_answer(fake: FakeVies) -> None:
    fake.inject("slow", delay=30.0, times=1)  # stop() cuts the wait short
    with ViesClient(fake.base_url, connect_timeout=2.0, timeout=0.2) as client:
        error = raises_vies(client, "EE", "101819093")
    assert isinstance(error, ViesUnavailableError) and error.code == "timeout"
    assert not error.member_state


def test_slow_answer_within_the_timeout_succeeds(fake: FakeVies, client: ViesClient) -> None:
    fake.inject("slow", delay=0.05, times=1)
    assert client.check("EE", "101819093").valid


def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # nothing listens on the port any more
    with ViesClient(f"http://127.0.0.1:{port}/vies", connect_timeout=2.0, timeout=2.0) as client:
        error = raises_vies(client, "EE", "101819093")
    assert isinstance(error, ViesUnavailableError) and error.code == "connection"


def test_redirect_is_not_followed(fake: FakeVies, client: ViesClient) -> None:
    # a 307 would make requests re-POST to the fake, which would log a second request
    fake.inject_raw(b"", status=307, headers={"Location": fake.base_url}, times=1)
    error = raises_vies(client, "EE", "101819093")
    assert isinstance(error, ViesMalformedError) and error.code == "redirect"
    assert fake.call_count == 1 and len(fake.requests) == 1


def test_http_500_with_a_fault_maps_by_faultstring(fake: FakeVies, client: ViesClient) -> None:
    fake.inject_raw(fixture("fault_MS_UNAVAILABLE.xml"), status=500, times=1)
    error = raises_vies(client, "EE", "101819093")
    assert isinstance(error, ViesUnavailableError) and error.code == "MS_UNAVAILABLE"


def test_http_500_with_an_unknown_fault_is_an_http_error(
    fake: FakeVies, client: ViesClient
) -> None:
    body = fixture("fault_INVALID_INPUT.xml").replace(b"INVALID_INPUT", b"java.lang.NullPointer")
    fake.inject_raw(body, status=500, times=1)
    error = raises_vies(client, "EE", "101819093")
    assert isinstance(error, ViesUnavailableError) and error.code == "http_error"


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (503, b"", "text/plain"),
        (502, b"Bad Gateway", "text/plain"),
        (404, b"<html><body>Not Found</body></html>", "text/html"),
    ],
)
def test_other_statuses_are_http_errors(
    fake: FakeVies, client: ViesClient, status: int, body: bytes, content_type: str
) -> None:
    fake.inject_raw(body, status=status, content_type=content_type, times=1)
    error = raises_vies(client, "EE", "101819093")
    assert isinstance(error, ViesUnavailableError) and error.code == "http_error"
    assert str(status) in str(error)


def test_unknown_fault_with_200_is_unexpected(fake: FakeVies, client: ViesClient) -> None:
    fake.inject("raw", body=fixture("fault_INVALID_INPUT.xml").replace(b"INVALID_", b"ODD_"))
    error = raises_vies(client, "EE", "101819093")
    assert isinstance(error, ViesMalformedError) and error.code == "unexpected"
    assert isinstance(error, MalformedResponseError)


def test_answer_missing_fields_is_unexpected(fake: FakeVies, client: ViesClient) -> None:
    body = fixture("checkVat_response_valid_NL.xml").replace(
        b"<ns2:requestDate>2023-01-25+01:00</ns2:requestDate>", b""
    )
    fake.inject_raw(body, times=1)
    error = raises_vies(client, "NL", "805734958B01")
    assert isinstance(error, ViesMalformedError) and error.code == "unexpected"


def test_empty_200_and_plain_text_are_invalid_xml(fake: FakeVies, client: ViesClient) -> None:
    fake.inject_raw(b"", times=1)
    fake.inject_raw(b"OK", content_type="text/plain", times=1)
    for _ in range(2):
        error = raises_vies(client, "EE", "101819093")
        assert isinstance(error, ViesMalformedError) and error.code == "invalid_xml"


def test_html_without_content_type_is_detected(fake: FakeVies, client: ViesClient) -> None:
    fake.inject_raw(b"\n<!DOCTYPE html><html><body>Maintenance</body></html>", times=1)
    error = raises_vies(client, "EE", "101819093")
    assert isinstance(error, ViesMalformedError) and error.code == "html"


# --- XML hardening -------------------------------------------------------------------------------

_ENTITY_ANSWER = (
    b'<?xml version="1.0"?>\n'
    b'<!DOCTYPE env:Envelope [<!ENTITY secret "INJECTED-BY-ENTITY">]>'
    b'<env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"><env:Body>'
    b'<ns2:checkVatResponse xmlns:ns2="urn:ec.europa.eu:taxud:vies:services:checkVat:types">'
    b"<ns2:countryCode>EE</ns2:countryCode><ns2:vatNumber>101819093</ns2:vatNumber>"
    b"<ns2:requestDate>2024-05-17+01:00</ns2:requestDate><ns2:valid>true</ns2:valid>"
    b"<ns2:name>&secret;</ns2:name><ns2:address>---</ns2:address>"
    b"</ns2:checkVatResponse></env:Body></env:Envelope>"
)
_EXTERNAL_ANSWER = _ENTITY_ANSWER.replace(
    b'<!ENTITY secret "INJECTED-BY-ENTITY">', b'<!ENTITY secret SYSTEM "file:///etc/hostname">'
)
_LAUGHS = _ENTITY_ANSWER.replace(
    b'<!ENTITY secret "INJECTED-BY-ENTITY">',
    b'<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY secret "&c;&c;&c;&c;&c;&c;&c;">',
)


@pytest.mark.parametrize("body", [_ENTITY_ANSWER, _EXTERNAL_ANSWER, _LAUGHS])
def test_answers_with_dtd_or_entities_are_refused(
    fake: FakeVies, client: ViesClient, body: bytes
) -> None:
    fake.inject_raw(body, times=1)
    error = raises_vies(client, "EE", "101819093")
    assert isinstance(error, ViesMalformedError) and error.code == "invalid_xml"
    assert "INJECTED" not in str(error)


def test_doctype_without_entities_is_refused(fake: FakeVies, client: ViesClient) -> None:
    body = _ENTITY_ANSWER.replace(b' [<!ENTITY secret "INJECTED-BY-ENTITY">]', b"").replace(
        b"&secret;", b"X"
    )
    fake.inject_raw(body, times=1)
    error = raises_vies(client, "EE", "101819093")
    assert error.code == "invalid_xml"


def test_wsdl_comes_from_the_package() -> None:
    document = wsdl_document()
    assert document.location.endswith("connectors/vies/checkVatService.wsdl")
    assert wsdl_document() is document  # parsed once


# --- checkVatApprox ------------------------------------------------------------------------------


def test_requester_uses_check_vat_approx_and_keeps_the_consultation_number(
    fake: FakeVies,
) -> None:
    with ViesClient(
        fake.base_url, connect_timeout=2.0, timeout=5.0, requester=("EE", "101819093")
    ) as client:
        first = client.check("PL", "5925517329")
        second = client.check("PL", "5925517329")
    assert first.valid and first.name == "WIŚLANA ESTETYKA SPÓŁKA Z OGRANICZONĄ ODPOWIEDZIALNOŚCIĄ"
    assert first.address == "DŁUGA 17\n80-831 GDAŃSK"
    assert first.consultation_number and first.consultation_number.startswith("WAPI")
    assert second.consultation_number != first.consultation_number
    assert [r.operation for r in fake.requests] == ["checkVatApprox", "checkVatApprox"]
    assert fake.requests[0] == ("checkVatApprox", "PL", "5925517329")


def test_without_requester_check_vat_is_used(fake: FakeVies, client: ViesClient) -> None:
    answer = client.check("EL", "562418057")
    assert answer.consultation_number is None
    assert fake.requests == [("checkVat", "EL", "562418057")]


def test_approx_invalid_number_and_bad_requester(fake: FakeVies) -> None:
    with ViesClient(
        fake.base_url, connect_timeout=2.0, timeout=5.0, requester=("EE", "101819093")
    ) as client:
        unknown = client.check("LT", "100000015")
    assert unknown.valid is False and unknown.name is None and unknown.address is None
    with ViesClient(
        fake.base_url, connect_timeout=2.0, timeout=5.0, requester=("GB", "123456789")
    ) as client:
        error = raises_vies(client, "LT", "161682812")
    assert isinstance(error, ViesInvalidInputError) and error.code == "INVALID_REQUESTER_INFO"


def test_approx_answer_without_a_consultation_number_is_kept_and_flagged(fake: FakeVies) -> None:
    fake.inject("no_consultation", times=1)
    with ViesClient(
        fake.base_url, connect_timeout=2.0, timeout=5.0, requester=("EE", "101819093")
    ) as client:
        bare = client.check("PL", "5925517329")
        proven = client.check("PL", "5925517329")
    assert bare.valid and bare.name == proven.name
    assert (bare.consultation_number, bare.approx, bare.consultation_missing) == (None, True, True)
    assert proven.consultation_number and not proven.consultation_missing


def test_approx_answer_missing_the_identifier_element_is_kept_and_flagged(
    fake: FakeVies,
) -> None:
    # The WSDL requires requestIdentifier; an answer without the element at all is still a verdict.
    body = APPROX_ANSWER.replace(b"<ns2:requestIdentifier></ns2:requestIdentifier>", b"")
    fake.inject_raw(body, times=1)
    with ViesClient(
        fake.base_url, connect_timeout=2.0, timeout=5.0, requester=("EE", "101819093")
    ) as client:
        answer = client.check("NL", "805734958B01")
    assert answer.valid and answer.consultation_missing


def test_check_vat_answers_never_miss_a_consultation_number(client: ViesClient) -> None:
    answer = client.check("EL", "562418057")
    assert (answer.approx, answer.consultation_missing) == (False, False)


# --- the echo: an answer must be about the number asked -----------------------------------------

APPROX_ANSWER = (
    b'<?xml version="1.0" encoding="UTF-8"?><env:Envelope '
    b'xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"><env:Header/><env:Body>'
    b'<ns2:checkVatApproxResponse xmlns:ns2="urn:ec.europa.eu:taxud:vies:services:checkVat:types">'
    b"<ns2:countryCode>NL</ns2:countryCode><ns2:vatNumber>805734958B01</ns2:vatNumber>"
    b"<ns2:requestDate>2023-01-25+01:00</ns2:requestDate><ns2:valid>true</ns2:valid>"
    b"<ns2:traderName>BOOKING.COM B.V.</ns2:traderName>"
    b"<ns2:traderAddress>HERENGRACHT 00597 1017CE AMSTERDAM</ns2:traderAddress>"
    b"<ns2:requestIdentifier></ns2:requestIdentifier>"
    b"</ns2:checkVatApproxResponse></env:Body></env:Envelope>"
)


@pytest.mark.parametrize(("kind", "part"), [("echo_country", "country"), ("echo_number", "number")])
def test_an_answer_about_another_number_is_a_bad_response(
    fake: FakeVies, client: ViesClient, kind: str, part: str
) -> None:
    fake.inject(kind, times=1)
    error = raises_vies(client, "EE", "101819093")
    assert isinstance(error, ViesEchoMismatchError) and isinstance(error, MalformedResponseError)
    assert (error.code, error.part, error.member_state) == ("echo_mismatch", part, False)
    assert "echo_mismatch" in str(error)
    assert client.check("EE", "101819093").valid  # the next, true answer is accepted


def _answer_echoing(fake: FakeVies, country: bytes, number: bytes) -> None:
    """The next answer: Booking.com's real one, echoing ``country`` and ``number``."""
    body = fixture("checkVat_response_valid_NL.xml")
    body = body.replace(b">NL</ns2:countryCode>", b">" + country + b"</ns2:countryCode>")
    body = body.replace(b">805734958B01</", b">" + number + b"</")
    fake.inject_raw(body, times=1)


@pytest.mark.parametrize(
    ("country", "number"),
    [
        (b"NL", b"805734958B01"),
        (b"nl", b"805734958b01"),
        (b" NL ", b" 805 734 958 B01 "),
        (b"NL", b"805.734.958-B01"),
        (b"NL", b"NL805734958B01"),  # the number echoed with its prefix
    ],
)
def test_an_echo_differing_in_spacing_case_or_prefix_is_accepted(
    fake: FakeVies, client: ViesClient, country: bytes, number: bytes
) -> None:
    _answer_echoing(fake, country, number)
    answer = client.check("NL", "805734958B01")
    assert answer.valid and answer.name == "BOOKING.COM B.V."


@pytest.mark.parametrize(
    ("country", "number"),
    [
        (b"BE", b"805734958B01"),  # another member state
        (b"NL", b"805734958B02"),  # another number
        (b"NL", b"805734958"),  # a part of it
        (b"NL", b"DE805734958B01"),  # another prefix
    ],
)
def test_an_echo_of_anything_else_is_refused(
    fake: FakeVies, client: ViesClient, country: bytes, number: bytes
) -> None:
    _answer_echoing(fake, country, number)
    error = raises_vies(client, "NL", "805734958B01")
    assert isinstance(error, ViesEchoMismatchError)


@pytest.mark.parametrize(
    ("asked", "echoed", "mismatch"),
    [
        (("EE", "101819093"), ("EE", "101819093"), None),
        (("EE", "101819093"), ("ee", " 101 819 093\n"), None),
        (("EL", "094259216"), ("GR", "094259216"), None),  # VIES's EL is ISO's GR
        (("EL", "094259216"), ("EL", "EL094259216"), None),
        (("EE", "101819093"), ("LV", "101819093"), "country"),
        (("EL", "094259216"), ("EL", "94259216"), "number"),  # a leading zero counts
        (("EE", "101819093"), ("EE", "LV101819093"), "number"),
        (("EE", "101819093"), ("EE", "101819094"), "number"),
    ],
)
def test_answer_mismatch(
    asked: tuple[str, str], echoed: tuple[str, str], mismatch: str | None
) -> None:
    answer = ViesAnswer(echoed[0], echoed[1], True, None, None, "2024-05-17", None)
    assert answer.mismatch(*asked) == mismatch


# --- threads -------------------------------------------------------------------------------------


def test_concurrent_checks_from_many_threads(fake: FakeVies, client: ViesClient) -> None:
    threads_n, calls = 8, 5
    barrier = threading.Barrier(threads_n)
    results: list[list[ViesAnswer]] = [[] for _ in range(threads_n)]
    failures: list[BaseException] = []

    def work(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            for call in range(calls):
                company = COMPANIES[(index + call) % len(COMPANIES)]
                results[index].append(client.check(company.country_code, company.vat_number))
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not failures
    for index, answers in enumerate(results):
        expected = [COMPANIES[(index + c) % len(COMPANIES)] for c in range(calls)]
        assert [(a.country_code, a.vat_number, a.name) for a in answers] == [
            (e.country_code, e.vat_number, e.name) for e in expected
        ]
    assert fake.call_count == threads_n * calls


def test_calls_are_in_flight_at_once(fake: FakeVies, client: ViesClient) -> None:
    fake.hold()
    answers: list[ViesAnswer] = []
    lock = threading.Lock()

    def work() -> None:
        answer = client.check("EE", "105597971")
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    assert fake.wait_for_waiting(6, timeout=10)  # six calls held by the fake at once
    fake.release()
    for thread in threads:
        thread.join(timeout=10)
    assert len(answers) == 6 and all(a.name == "Saare Ilustuudio OÜ" for a in answers)


def test_closed_client_refuses_calls(fake: FakeVies) -> None:
    client = ViesClient(fake.base_url, connect_timeout=2.0, timeout=5.0)
    assert client.check("EE", "101819093").valid
    client.close()
    with pytest.raises(RuntimeError):
        client.check("EE", "101819093")
    assert fake.call_count == 1
