"""The local HTTP API over real HTTP: a real ApiServer (waitress) on 127.0.0.1 and on a unix
socket, stand-ins for the VAT service and the health check, a real SQLite cache for the parcel
list. Every answer is checked against docs/openapi.yaml, so the document and the server cannot
drift apart."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import yaml

from syncd.api.app import MAX_VAT_PATH_CHARS, make_app
from syncd.api.server import ApiBindError, ApiServer, parse_listen
from syncd.core.clock import iso_or_none
from syncd.core.errors import RetriableError, SkippableError, SyncdError
from syncd.state import omniva
from syncd.state.db import connect, write_transaction
from tests.conftest import make_api_client

ROOT = Path(__file__).parents[1]
DOC: dict[str, Any] = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
JSON = "application/json; charset=utf-8"
NUMBER = "NL805734958B01"
AS_OF = "2026-11-21T12:00:00Z"
UNAVAILABLE = (
    "vies_unavailable",
    "member_state_unavailable",
    "vies_busy",
    "vies_blocked",
    "vies_bad_response",
)

# ------------------------------------------------------------------------------------------
# Stand-ins for the services the API calls (the real ones are syncd.engines.vat and
# syncd.state.omniva)
# ------------------------------------------------------------------------------------------


class MalformedVatNumber(SyncdError):
    """As syncd.engines.vat.MalformedVatNumberError."""

    code = "malformed_vat_number"


class VatRejected(SkippableError):
    """As syncd.engines.vat.VatRejectedError."""

    code = "vies_rejected_input"


class VatUnavailable(RetriableError):
    """As syncd.engines.vat.VatUnavailableError."""

    def __init__(self, code: str, retry_after: float | None) -> None:
        super().__init__("VIES is unavailable", retry_after=retry_after)
        self.code = code


@dataclass(frozen=True)
class StubAnswer:
    """A VatResult look-alike."""

    query: str
    country_code: str
    vat_number: str
    valid: bool = True
    name: str | None = "BOOKING.COM B.V."
    address: str | None = "HERENGRACHT 597\n1017CE AMSTERDAM"
    request_date: str | None = "2026-11-21"
    consultation_number: str | None = None
    fetched_at: str | None = "2026-11-21T12:00:00Z"
    source: str = "live"
    age_seconds: int | None = None
    invalid_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def answer_for(raw: str, **changes: Any) -> StubAnswer:
    compact = re.sub(r"[ .\-]", "", raw).upper()
    return StubAnswer(query=compact, country_code=compact[:2], vat_number=compact[2:], **changes)


class StubVat:
    """VatLookup stand-in: a table of outcomes by raw number, a call log, optional holds."""

    def __init__(self) -> None:
        self.outcomes: dict[str, StubAnswer | Exception] = {}
        self.calls: list[tuple[str, bool]] = []
        self.entered = threading.Event()
        self.gate: threading.Event | None = None
        self.barrier: threading.Barrier | None = None

    def lookup(self, raw: str, *, fresh: bool = False) -> StubAnswer:
        self.calls.append((raw, fresh))
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(30)
        if self.barrier is not None:
            self.barrier.wait(10)
        outcome = self.outcomes.get(raw) or answer_for(raw)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


class CacheLocations:
    """LocationSource over the real cache: the locations in syncd.state.omniva's JSON shape (the
    shape docs/openapi.yaml documents), the list's time from the omniva_list row."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()  # one connection shared by the server's threads

    def locations(self, country: str, kind: str | None) -> list[dict[str, Any]]:
        with self._lock:
            return omniva.list_locations(self._conn, country, kind)

    def as_of(self) -> str | None:
        with self._lock:
            return iso_or_none(omniva.list_state(self._conn).updated_at)


class StubHealth:
    def __init__(self) -> None:
        self.healthy = True
        self.details: dict[str, Any] = {"status": "ok", "mirror": {"age_seconds": 42}}
        self.error: Exception | None = None

    def __call__(self) -> tuple[bool, Mapping[str, Any]]:
        if self.error is not None:
            raise self.error
        return self.healthy, dict(self.details)


def add_location(
    conn: sqlite3.Connection,
    location_id: str,
    country: str,
    kind: str,
    name: str,
    **extra: str | float,
) -> None:
    row: dict[str, str | float] = {
        "location_id": location_id,
        "country": country,
        "kind": kind,
        "name": name,
        "longitude": 24.75,
        "latitude": 59.43,
        **extra,
    }
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    with write_transaction(conn):
        conn.execute(
            f"INSERT INTO parcel_machines ({columns}) VALUES ({marks})", list(row.values())
        )


def set_list_checked(conn: sqlite3.Connection, at: str | None) -> None:
    with write_transaction(conn):
        conn.execute("UPDATE omniva_list SET checked_at = ?, updated_at = ? WHERE id = 1", (at, at))


# ------------------------------------------------------------------------------------------
# Checking answers against docs/openapi.yaml
# ------------------------------------------------------------------------------------------


def _resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        target: Any = DOC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _validate(schema: Mapping[str, Any], instance: object) -> None:
    validator = jsonschema_rs.Draft202012Validator({**schema, "components": DOC["components"]})
    errors = [str(error) for error in validator.iter_errors(instance)]
    assert not errors, errors


def check(response: httpx.Response, path: str | None = None, method: str = "get") -> Any:
    """Assert the answer is JSON with the API's headers and matches the document: the response
    documented for ``path`` (an OpenAPI path template) and its status, or the Error schema for
    answers outside any operation (404, 405, server-level errors). Returns the body."""
    assert response.headers["content-type"] == JSON
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["server"] == "syncd"
    body = response.json()
    if path is None:
        _validate({"$ref": "#/components/schemas/Error"}, body)
        return body
    responses = DOC["paths"][path][method]["responses"]
    assert str(response.status_code) in responses, f"{response.status_code} undocumented"
    documented = _resolve(responses[str(response.status_code)])
    for name, header in documented.get("headers", {}).items():
        header = _resolve(header)
        if header.get("required"):
            assert name in response.headers, f"missing header {name}"
            value: object = response.headers[name]
            if header["schema"].get("type") == "integer":
                assert str(value).isdigit()
                value = int(str(value))
            _validate(header["schema"], value)
    _validate(documented["content"]["application/json"]["schema"], body)
    return body


def error_code(response: httpx.Response, path: str | None = None) -> str:
    code: str = check(response, path)["error"]["code"]
    return code


# ------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------


@dataclass
class Api:
    server: ApiServer
    client: httpx.Client
    vat: StubVat
    health: StubHealth
    conn: sqlite3.Connection
    extra_clients: list[httpx.Client] = field(default_factory=list)

    def new_client(self, **kwargs: Any) -> httpx.Client:
        client = make_api_client(self.server.address, **kwargs)
        self.extra_clients.append(client)
        return client


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = connect(tmp_path / "cache.sqlite3")
    yield connection
    connection.close()


def start_api(
    conn: sqlite3.Connection,
    listen: str,
    *,
    threads: int = 4,
    max_request_bytes: int = 8192,
    app_max_request_bytes: int | None = None,
) -> Api:
    vat, health = StubVat(), StubHealth()
    app = make_app(
        vat,
        CacheLocations(conn),
        health,
        max_request_bytes=max_request_bytes
        if app_max_request_bytes is None
        else app_max_request_bytes,
    )
    server = ApiServer(app, listen=listen, threads=threads, max_request_bytes=max_request_bytes)
    server.start()
    return Api(server, make_api_client(server.address), vat, health, conn)


def close_api(api: Api) -> None:
    api.client.close()
    for client in api.extra_clients:
        client.close()
    if api.vat.gate is not None:
        api.vat.gate.set()
    api.server.stop(timeout=2)


@pytest.fixture(params=["tcp", "unix"])
def api(request: pytest.FixtureRequest, conn: sqlite3.Connection, short_dir: Path) -> Iterator[Api]:
    listen = "127.0.0.1:0" if request.param == "tcp" else f"unix:{short_dir / 'api.sock'}"
    set_list_checked(conn, AS_OF)
    started = start_api(conn, listen)
    yield started
    close_api(started)


@pytest.fixture
def tcp_api(conn: sqlite3.Connection) -> Iterator[Api]:
    set_list_checked(conn, AS_OF)
    started = start_api(conn, "127.0.0.1:0")
    yield started
    close_api(started)


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def raw_exchange(address: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes to a TCP ``address``, read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port_of(address)), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


# ------------------------------------------------------------------------------------------
# GET /v1/vat/{number}
# ------------------------------------------------------------------------------------------

VAT = "/v1/vat/{number}"


def test_vat_lookup_answers_with_the_service_result(api: Api) -> None:
    stored = answer_for(NUMBER, source="cache", age_seconds=3600, consultation_number="WAPIAAAA")
    api.vat.outcomes[NUMBER] = stored
    response = api.client.get(f"/v1/vat/{NUMBER}")
    assert response.status_code == 200
    assert check(response, VAT) == stored.to_json()
    assert api.vat.calls == [(NUMBER, False)]


def test_vat_lookup_local_answer_with_nulls_matches_the_document(api: Api) -> None:
    api.vat.outcomes["EE123"] = answer_for(
        "EE123",
        valid=False,
        name=None,
        address=None,
        request_date=None,
        fetched_at=None,
        source="local",
        invalid_reason="wrong length",
    )
    body = check(api.client.get("/v1/vat/EE123"), VAT)
    assert (body["valid"], body["source"], body["name"]) == (False, "local", None)


def test_vat_number_reaches_the_service_percent_decoded(api: Api) -> None:
    response = api.client.get("/v1/vat/nl%20805.734.958-b01")
    assert response.status_code == 200
    check(response, VAT)
    assert api.vat.calls == [("nl 805.734.958-b01", False)]


@pytest.mark.parametrize(
    ("value", "fresh"), [("true", True), ("1", True), ("false", False), ("0", False)]
)
def test_vat_fresh_parameter(api: Api, value: str, fresh: bool) -> None:
    response = api.client.get(f"/v1/vat/{NUMBER}", params={"fresh": value})
    assert response.status_code == 200
    check(response, VAT)
    assert api.vat.calls == [(NUMBER, fresh)]


@pytest.mark.parametrize(
    "query", ["fresh=yes", "fresh=", "fresh=TRUE", "fresh=2", "fresh=true&fresh=true", "nocache=1"]
)
def test_vat_bad_query_is_refused_before_any_lookup(api: Api, query: str) -> None:
    response = api.client.get(f"/v1/vat/{NUMBER}?{query}")
    assert response.status_code == 400
    assert error_code(response, VAT) == "invalid_parameter"
    assert api.vat.calls == []


def test_vat_number_of_32_characters_is_looked_up_and_33_is_malformed(api: Api) -> None:
    """The API's limit is the VAT service's and the CLI's (32), and its message says so."""
    from syncd.engines.vat import MAX_INPUT_LENGTH

    assert MAX_VAT_PATH_CHARS == MAX_INPUT_LENGTH == 32
    assert api.client.get("/v1/vat/EE" + "1" * 30).status_code == 200
    response = api.client.get("/v1/vat/EE" + "1" * 31)
    assert response.status_code == 400
    assert error_code(response, VAT) == "malformed_vat_number"
    assert "32 characters at most" in response.text
    assert [len(raw) for raw, _ in api.vat.calls] == [32]


@pytest.mark.parametrize(
    "segment",
    ["EE12%2F34", "EE12/34", "EE12%0034", "EE_123", "%C3%84%C3%84123", "EE12%0A3", "EE+1"],
)
def test_vat_number_with_other_characters_is_malformed(api: Api, segment: str) -> None:
    response = api.client.get(f"/v1/vat/{segment}")
    assert response.status_code == 400
    assert error_code(response, VAT) == "malformed_vat_number"
    assert api.vat.calls == []


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (MalformedVatNumber("not a VAT number"), 400, "malformed_vat_number"),
        (VatRejected("INVALID_INPUT"), 422, "vies_rejected_input"),
    ],
)
def test_vat_service_refusals(api: Api, error: Exception, status: int, code: str) -> None:
    api.vat.outcomes["XX1"] = error
    response = api.client.get("/v1/vat/XX1")
    assert response.status_code == status
    assert error_code(response, VAT) == code
    assert "retry-after" not in response.headers


@pytest.mark.parametrize("code", UNAVAILABLE)
def test_vat_unavailable_is_503_with_retry_after(api: Api, code: str) -> None:
    api.vat.outcomes[NUMBER] = VatUnavailable(code, retry_after=12.3)
    response = api.client.get(f"/v1/vat/{NUMBER}")
    assert response.status_code == 503
    assert error_code(response, VAT) == code
    assert response.headers["retry-after"] == "13"


@pytest.mark.parametrize(("hint", "header"), [(None, "60"), (0, "60"), (3600, "3600"), (0.2, "1")])
def test_vat_retry_after_without_or_with_odd_hints(
    api: Api, hint: float | None, header: str
) -> None:
    api.vat.outcomes[NUMBER] = VatUnavailable("vies_busy", retry_after=hint)
    response = api.client.get(f"/v1/vat/{NUMBER}")
    assert response.status_code == 503
    check(response, VAT)
    assert response.headers["retry-after"] == header


class OtherCodeError(SyncdError):
    code = "something_new"


@pytest.mark.parametrize(
    "error",
    [RuntimeError(f"boom for {NUMBER}"), OtherCodeError(f"odd {NUMBER}"), KeyError(NUMBER)],
)
def test_unexpected_errors_are_500_and_logged_by_type_only(
    api: Api, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    api.vat.outcomes[NUMBER] = error
    with caplog.at_level(logging.DEBUG):
        response = api.client.get(f"/v1/vat/{NUMBER}")
    assert response.status_code == 500
    assert error_code(response, VAT) == "internal_error"
    assert NUMBER not in response.text
    ours = [r for r in caplog.records if r.name.startswith(("syncd", "waitress"))]
    assert any(type(error).__name__ in r.getMessage() for r in ours)
    assert not any(NUMBER in r.getMessage() or r.exc_info for r in ours)


class RealVatErrors:
    """VatLookup raising syncd.engines.vat's own errors, answering with its own VatResult."""

    def __init__(self) -> None:
        from syncd.engines import vat

        self.vat = vat
        self.outcomes: dict[str, Exception] = {
            "malformed": vat.MalformedVatNumberError("not a VAT number"),
            "rejected": vat.VatRejectedError("INVALID_INPUT"),
            **{  # the path may not hold "_": vies-busy stands for vies_busy
                code.replace("_", "-"): vat.VatUnavailableError(code, retry_after=90.5)
                for code in vat.UNAVAILABLE_MESSAGES
            },
        }

    def lookup(self, raw: str, *, fresh: bool = False) -> Any:
        if raw in self.outcomes:
            raise self.outcomes[raw]
        return self.vat.VatResult(
            query="EE100931558",
            country_code="EE",
            vat_number="100931558",
            valid=True,
            name="Example OÜ",
            address=None,
            request_date="2026-11-21",
            consultation_number=None,
            fetched_at="2026-11-21T11:00:00Z",
            source="stale",
            age_seconds=90_000,
            invalid_reason=None,
        )


def test_syncd_vat_errors_and_results_answer_as_documented(conn: sqlite3.Connection) -> None:
    # A contract check against the real service's types: its codes are the ones mapped here
    # and its VatResult.to_json() is the documented VatAnswer.
    real = RealVatErrors()
    assert set(real.vat.UNAVAILABLE_MESSAGES) == set(UNAVAILABLE)
    server = ApiServer(make_app(real, CacheLocations(conn), StubHealth()), listen="127.0.0.1:0")
    server.start()
    try:
        with make_api_client(server.address) as client:
            assert check(client.get("/v1/vat/EE100931558"), VAT)["source"] == "stale"
            expected = {
                "malformed": (400, "malformed_vat_number"),
                "rejected": (422, "vies_rejected_input"),
            }
            expected |= {code.replace("_", "-"): (503, code) for code in UNAVAILABLE}
            for raw, (status, code) in expected.items():
                response = client.get(f"/v1/vat/{raw}")
                assert (response.status_code, error_code(response, VAT)) == (status, code)
                if status == 503:
                    assert response.headers["retry-after"] == "91"
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------
# GET /v1/parcel-machines
# ------------------------------------------------------------------------------------------

PARCELS = "/v1/parcel-machines"


@pytest.fixture
def locations(conn: sqlite3.Connection) -> None:
    add_location(
        conn,
        "96331",
        "EE",
        "parcel_machine",
        "Tartu Lõunakeskuse pakiautomaat",
        county="Tartu maakond",
        town="Tartu linn",
        street="Ringtee",
        house_number="75",
        comment_et="Sissepääs<br>peauksest",
        temp_service_hours="E-R 10-18",
        temp_service_hours_until="2026-12-31",
    )
    add_location(conn, "96051", "EE", "parcel_machine", "Kadrioru pakiautomaat")
    add_location(conn, "10101", "EE", "post_office", "Tallinna postkontor", longitude=24.7536)
    add_location(
        conn,
        "LV9001",
        "LV",
        "parcel_machine",
        "Rīga Origo pakomāts",
        longitude=24.12,
        latitude=56.95,
    )


@pytest.mark.usefixtures("locations")
def test_parcel_machines_of_a_country_sorted_by_name(api: Api) -> None:
    response = api.client.get(PARCELS, params={"country": "ee"})
    assert response.status_code == 200
    body = check(response, PARCELS)
    assert (body["country"], body["type"], body["as_of"], body["count"]) == ("EE", None, AS_OF, 3)
    assert [loc["id"] for loc in body["locations"]] == ["96051", "10101", "96331"]
    tartu = body["locations"][2]
    assert (tartu["type"], tartu["town"], tartu["village"]) == ("parcel_machine", "Tartu linn", "")
    assert tartu["comments"]["et"] == "Sissepääs\npeauksest"
    assert tartu["temp_service_hours"] == [{"hours": "E-R 10-18", "until": "2026-12-31"}]


@pytest.mark.usefixtures("locations")
@pytest.mark.parametrize(
    ("kind", "ids"), [("parcel_machine", ["96051", "96331"]), ("post_office", ["10101"])]
)
def test_parcel_machines_of_one_type(api: Api, kind: str, ids: list[str]) -> None:
    body = check(api.client.get(PARCELS, params={"country": "EE", "type": kind}), PARCELS)
    assert body["type"] == kind
    assert [loc["id"] for loc in body["locations"]] == ids
    assert body["count"] == len(ids)


@pytest.mark.usefixtures("locations")
def test_parcel_machines_of_a_country_omniva_does_not_serve(api: Api) -> None:
    body = check(api.client.get(PARCELS, params={"country": "de"}), PARCELS)
    assert (body["country"], body["count"], body["locations"]) == ("DE", 0, [])


def test_parcel_machines_carry_their_state_from_omniva_markers(api: Api) -> None:
    add_location(api.conn, "80016", "LT", "parcel_machine", "Vilniaus Ozo g. Maxima paštomatas")
    add_location(
        api.conn,
        "80533",
        "LT",
        "parcel_machine",
        "Klaipėdos Taikos pr. Norfa paštomatas",
        state="overfilled",
        state_note="PERPILDYTAS",
    )
    body = check(api.client.get(PARCELS, params={"country": "LT"}), PARCELS)
    states = {
        loc["id"]: (loc["name"], loc["state"], loc["state_note"]) for loc in body["locations"]
    }
    assert states == {
        "80016": ("Vilniaus Ozo g. Maxima paštomatas", "normal", ""),
        "80533": ("Klaipėdos Taikos pr. Norfa paštomatas", "overfilled", "PERPILDYTAS"),
    }


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", "missing_parameter"),
        ("country=", "missing_parameter"),
        ("type=post_office", "missing_parameter"),
        ("country=EST", "invalid_parameter"),
        ("country=E1", "invalid_parameter"),
        ("country=%C3%84%C3%96", "invalid_parameter"),
        ("country=E", "invalid_parameter"),
        ("country=EE&type=locker", "invalid_parameter"),
        ("country=EE&type=", "invalid_parameter"),
        ("country=EE&country=LV", "invalid_parameter"),
        ("country=EE&limit=5", "invalid_parameter"),
        ("Country=EE", "invalid_parameter"),
    ],
)
def test_parcel_machines_bad_parameters(api: Api, query: str, code: str) -> None:
    response = api.client.get(f"{PARCELS}?{query}")
    assert response.status_code == 400
    assert error_code(response, PARCELS) == code


def test_parcel_machines_before_any_list_was_loaded(api: Api) -> None:
    set_list_checked(api.conn, None)
    response = api.client.get(PARCELS, params={"country": "EE"})
    assert response.status_code == 503
    assert error_code(response, PARCELS) == "parcel_list_unavailable"
    assert int(response.headers["retry-after"]) >= 1


# ------------------------------------------------------------------------------------------
# GET /healthz
# ------------------------------------------------------------------------------------------


def test_healthz_ok_with_details(api: Api) -> None:
    response = api.client.get("/healthz")
    assert response.status_code == 200
    assert check(response, "/healthz") == {"status": "ok", "mirror": {"age_seconds": 42}}


def test_healthz_degraded_is_still_200(api: Api) -> None:
    api.health.details = {"status": "degraded", "vies": "circuit open"}
    response = api.client.get("/healthz")
    assert response.status_code == 200
    assert check(response, "/healthz")["status"] == "degraded"


def test_healthz_unhealthy_is_503(api: Api) -> None:
    api.health.healthy = False
    api.health.details = {"status": "ok", "mirror": "stuck"}  # healthy=False wins
    response = api.client.get("/healthz")
    assert response.status_code == 503
    assert check(response, "/healthz") == {"status": "unhealthy", "mirror": "stuck"}
    assert "retry-after" not in response.headers


def test_healthz_check_that_raises_is_unhealthy(api: Api) -> None:
    api.health.error = OSError("disk gone")
    response = api.client.get("/healthz")
    assert response.status_code == 503
    assert check(response, "/healthz") == {"status": "unhealthy"}


def test_healthz_takes_no_parameters(api: Api) -> None:
    response = api.client.get("/healthz?verbose=1")
    assert response.status_code == 400
    assert error_code(response, "/healthz") == "invalid_parameter"


def test_head_answers_headers_without_a_body(api: Api) -> None:
    full = api.client.get("/healthz")
    response = api.client.head("/healthz")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-type"] == JSON
    assert response.headers["content-length"] == full.headers["content-length"]


# ------------------------------------------------------------------------------------------
# Errors outside the operations
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/v1/vat/", "/v1/vat", "/v2/vat/EE1", "/healthz/x", "/openapi.json"]
)
def test_unknown_paths_are_404(api: Api, path: str) -> None:
    response = api.client.get(path)
    assert response.status_code == 404
    assert error_code(response) == "not_found"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"/v1/vat/{NUMBER}"),
        ("PUT", "/v1/parcel-machines?country=EE"),
        ("DELETE", "/healthz"),
        ("OPTIONS", "/healthz"),
        ("PATCH", "/healthz"),
    ],
)
def test_other_methods_are_405_with_allow(api: Api, method: str, path: str) -> None:
    response = api.client.request(method, path)
    assert response.status_code == 405
    assert error_code(response) == "method_not_allowed"
    assert response.headers["allow"] == "GET, HEAD"
    assert api.vat.calls == []


def test_body_over_the_limit_is_413_from_the_server(api: Api) -> None:
    assert api.client.request("GET", "/healthz", content=b"x" * 8192).status_code == 200
    response = api.client.request("GET", f"/v1/vat/{NUMBER}", content=b"x" * 8193)
    assert response.status_code == 413
    assert error_code(response) == "request_too_large"
    assert api.vat.calls == []


def test_chunked_body_over_the_limit_is_413(api: Api) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"y" * 1000

    response = api.client.request("GET", "/healthz", content=chunks())
    assert response.status_code == 413
    assert error_code(response) == "request_too_large"


def test_body_over_the_application_limit_is_413_from_the_application(
    conn: sqlite3.Connection,
) -> None:
    # The application's own guard, for when the server's limit is higher than the app's.
    started = start_api(conn, "127.0.0.1:0", max_request_bytes=1000, app_max_request_bytes=10)
    try:
        assert started.client.request("GET", "/healthz", content=b"x" * 10).status_code == 200
        response = started.client.request("GET", "/healthz", content=b"x" * 11)
        assert response.status_code == 413
        assert error_code(response) == "request_too_large"
        assert "connection" not in response.headers  # the application's answer, not waitress's
    finally:
        close_api(started)


def test_headers_over_16_kib_are_431(api: Api) -> None:
    response = api.client.get("/v1/vat/" + "E" * 20_000)
    assert response.status_code == 431
    assert error_code(response) == "request_header_too_large"
    assert api.vat.calls == []


def test_garbage_is_a_json_400(tcp_api: Api) -> None:
    status, headers, body = raw_exchange(
        tcp_api.server.address, b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"
    )
    assert status == 400
    assert headers["content-type"] == JSON
    _validate({"$ref": "#/components/schemas/Error"}, yaml.safe_load(body))


def test_unsupported_transfer_encoding_is_a_json_501(tcp_api: Api) -> None:
    status, headers, body = raw_exchange(
        tcp_api.server.address,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    )
    assert status == 501
    assert headers["content-type"] == JSON
    assert yaml.safe_load(body)["error"]["code"] == "not_implemented"


@pytest.mark.parametrize(
    "host", [b"localhost", b"localhost:8787", b"127.0.0.1:8787", b"127.3.4.5", b"[::1]:8787", b""]
)
def test_loopback_host_names_are_served(tcp_api: Api, host: bytes) -> None:
    status, headers, body = raw_exchange(
        tcp_api.server.address,
        b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n",
    )
    assert status == 200
    assert headers["content-type"] == JSON
    assert yaml.safe_load(body)["status"] == "ok"


@pytest.mark.parametrize(
    "host", [b"a..b", b"evil.example", b"evil.example:8787", b"x" * 300, b"10.0.0.1", b"[::2]"]
)
def test_other_host_names_are_refused_against_dns_rebinding(tcp_api: Api, host: bytes) -> None:
    status, headers, body = raw_exchange(
        tcp_api.server.address,
        b"GET /v1/vat/EE100931558 HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n",
    )
    assert status == 403
    assert headers["content-type"] == JSON
    assert yaml.safe_load(body)["error"]["code"] == "forbidden_host"
    assert tcp_api.vat.calls == []  # refused before the lookup


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: evil.com localhost\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: evil.example\r\nHost: localhost\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: localhost:80@evil.com\r\n",
        "GET /healthz HTTP/1.1\r\nHost: l\u043ecalhost\r\n".encode(),  # a Cyrillic o
        b"GET /healthz HTTP/1.1\r\nHost: localhost.\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1.evil.example\r\n",
        b"GET http://evil.example/healthz HTTP/1.1\r\nHost: localhost\r\n",
        b"GET http://localhost/healthz HTTP/1.1\r\nHost: localhost\r\n",
    ],
    ids=["space", "two-hosts", "two-hosts-reversed", "userinfo", "cyrillic", "trailing-dot",
         "suffix", "absolute-form", "absolute-form-local"],
)
def test_malformed_host_or_target_fails_closed(tcp_api: Api, head: bytes) -> None:
    request = head + b"Connection: close\r\n\r\n"
    status, headers, body = raw_exchange(tcp_api.server.address, request)
    assert status in (400, 403), status
    assert headers["content-type"] == JSON
    if status == 403:
        assert yaml.safe_load(body)["error"]["code"] == "forbidden_host"


def test_no_vat_number_in_any_log_line(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    api.vat.outcomes["EE100931558"] = VatUnavailable("vies_unavailable", None)
    api.vat.outcomes["EE100931559"] = RuntimeError("EE100931559")
    with caplog.at_level(logging.DEBUG):
        for number in (NUMBER, "EE100931558", "EE100931559", "EE10093155" + "0" * 60):
            api.client.get(f"/v1/vat/{number}")
        api.client.request("POST", f"/v1/vat/{NUMBER}")
        api.client.request("GET", f"/v1/vat/{NUMBER}", content=b"x" * 9000)
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any(r.name == "syncd.api.app" for r in server_side)  # the requests were logged ...
    for record in server_side:  # ... without the numbers
        assert "EE1009315" not in record.getMessage()
        assert NUMBER not in record.getMessage()


# ------------------------------------------------------------------------------------------
# The server: addresses, binding, stopping
# ------------------------------------------------------------------------------------------


def test_port_zero_reports_the_bound_port(tcp_api: Api) -> None:
    assert re.fullmatch(r"127\.0\.0\.1:\d+", tcp_api.server.address)
    assert port_of(tcp_api.server.address) > 0
    assert tcp_api.client.get("/healthz").status_code == 200


def test_localhost_listens_on_ipv4_loopback(conn: sqlite3.Connection) -> None:
    started = start_api(conn, "localhost:0")
    try:
        assert started.server.address.startswith("127.0.0.1:")
        assert started.client.get("/healthz").status_code == 200
    finally:
        close_api(started)


def test_ipv6_loopback(conn: sqlite3.Connection) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        started = start_api(conn, "[::1]:0")
    except ApiBindError:
        pytest.skip("IPv6 loopback not available")
    try:
        assert re.fullmatch(r"\[::1\]:\d+", started.server.address)
        assert started.client.get("/healthz").status_code == 200
    finally:
        close_api(started)


@pytest.mark.parametrize(
    "listen",
    [
        "0.0.0.0:8787",
        "192.168.1.10:8787",
        "[::]:8787",
        "[2001:db8::1]:8787",
        "example.com:8787",
        ":8787",
        "8787",
        "127.0.0.1",
        "127.0.0.1:99999",
        "127.0.0.1:-1",
        "::1:8787",
        "unix:api.sock",
        "tcp://127.0.0.1:8787",
    ],
)
def test_non_loopback_or_malformed_listen_is_refused(listen: str) -> None:
    app = make_app(StubVat(), CacheLocations(sqlite3.connect(":memory:")), StubHealth())
    with pytest.raises(ValueError):
        ApiServer(app, listen=listen)


@pytest.mark.parametrize(
    ("listen", "display"),
    [
        ("127.0.0.1:8787", "127.0.0.1:8787"),
        ("127.0.0.2:80", "127.0.0.2:80"),
        (" localhost:8787 ", "127.0.0.1:8787"),
        ("[::1]:8787", "[::1]:8787"),
        ("unix:/run/syncd/api.sock", "unix:/run/syncd/api.sock"),
    ],
)
def test_loopback_listen_forms(listen: str, display: str) -> None:
    assert parse_listen(listen).display() == display


def test_port_in_use_fails_at_start_with_a_clear_message(conn: sqlite3.Connection) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        app = make_app(StubVat(), CacheLocations(conn), StubHealth())
        server = ApiServer(app, listen=f"127.0.0.1:{port}")
        with pytest.raises(
            ApiBindError, match=rf"127\.0\.0\.1:{port}: address already in use"
        ) as info:
            server.start()
        # an OSError too, with the reason in strerror (what the daemon reports)
        assert isinstance(info.value, OSError)
        assert info.value.strerror == "address already in use"
        server.stop()  # harmless after a failed start


def test_stop_is_prompt_and_closes_the_port(conn: sqlite3.Connection) -> None:
    started = start_api(conn, "127.0.0.1:0")
    idle = [started.new_client() for _ in range(3)]
    for client in idle:  # keep-alive connections left open and idle
        assert client.get("/healthz").status_code == 200
    began = time.monotonic()
    started.server.stop(timeout=5)
    assert time.monotonic() - began < 1.0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port_of(started.server.address)), timeout=2)
    with pytest.raises(httpx.TransportError):
        idle[0].get("/healthz")
    started.server.stop()  # idempotent
    close_api(started)


def test_stop_lets_a_request_in_progress_finish(conn: sqlite3.Connection) -> None:
    started = start_api(conn, "127.0.0.1:0")
    started.vat.gate = threading.Event()
    answers: list[httpx.Response] = []
    request = threading.Thread(
        target=lambda: answers.append(started.client.get(f"/v1/vat/{NUMBER}"))
    )
    request.start()
    assert started.vat.entered.wait(5)
    stopping = threading.Thread(target=started.server.stop, kwargs={"timeout": 10})
    stopping.start()
    stopping.join(0.3)
    assert stopping.is_alive()  # stop() waits for the lookup in progress ...
    started.vat.gate.set()
    request.join(5)
    stopping.join(5)
    assert not stopping.is_alive()
    assert answers and answers[0].status_code == 200  # ... which got its answer
    check(answers[0], VAT)
    close_api(started)


def test_stop_gives_up_on_a_request_past_its_timeout(conn: sqlite3.Connection) -> None:
    started = start_api(conn, "127.0.0.1:0")
    started.vat.gate = threading.Event()
    waitress_log = logging.getLogger("waitress")
    seen = threading.Event()
    records: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)
            if "serving" in record.getMessage():
                seen.set()

    handler, level = Catch(), waitress_log.level
    waitress_log.addHandler(handler)
    waitress_log.setLevel(logging.INFO)
    failures: list[Exception] = []

    def call() -> None:
        try:
            started.client.get(f"/v1/vat/{NUMBER}")
        except httpx.TransportError as exc:
            failures.append(exc)

    request = threading.Thread(target=call)
    try:
        request.start()
        assert started.vat.entered.wait(5)
        began = time.monotonic()
        started.server.stop(timeout=0.3)
        assert time.monotonic() - began < 1.5
        request.join(5)
        assert failures  # the connection was closed under the abandoned request
        started.vat.gate.set()  # the abandoned worker finishes into a closed connection
        # waitress logs "Client disconnected while serving <path>"; the path is withheld
        assert seen.wait(5)
        assert not any(NUMBER in r.getMessage() for r in records)
        assert any("path withheld" in r.getMessage() for r in records)
    finally:
        waitress_log.removeHandler(handler)
        waitress_log.setLevel(level)
        close_api(started)


def test_requests_are_served_concurrently(conn: sqlite3.Connection) -> None:
    started = start_api(conn, "127.0.0.1:0", threads=2)
    started.vat.barrier = threading.Barrier(2)  # both lookups must be in progress at once
    try:
        clients = [started.new_client(), started.new_client()]
        answers: list[int] = []
        threads = [
            threading.Thread(
                target=lambda c=c: answers.append(c.get(f"/v1/vat/{NUMBER}").status_code)
            )
            for c in clients
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)
        assert answers == [200, 200]
    finally:
        close_api(started)


# ------------------------------------------------------------------------------------------
# Unix sockets
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o660, 0o600])
def test_unix_socket_mode_and_removal_at_stop(
    conn: sqlite3.Connection, short_dir: Path, mode: int
) -> None:
    path = short_dir / "api.sock"
    app = make_app(StubVat(), CacheLocations(conn), StubHealth())
    server = ApiServer(app, listen=f"unix:{path}", unix_socket_mode=mode)
    server.start()
    try:
        assert server.address == f"unix:{path}"
        info = os.stat(path)
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == mode
        with make_api_client(server.address) as client:
            assert client.get("/healthz").status_code == 200
    finally:
        server.stop()
    assert not path.exists()


def test_stale_unix_socket_is_replaced(
    conn: sqlite3.Connection, short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = short_dir / "api.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # a socket file left behind by a process that died
    dead.close()
    with pytest.raises(ConnectionRefusedError), socket.socket(socket.AF_UNIX) as probe:
        probe.connect(str(path))
    with caplog.at_level(logging.INFO, logger="syncd.api.server"):
        started = start_api(conn, f"unix:{path}")
    try:
        assert "removed the stale socket" in caplog.text
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert started.client.get("/healthz").status_code == 200
    finally:
        close_api(started)


def test_unix_socket_in_use_is_not_taken_over(conn: sqlite3.Connection, short_dir: Path) -> None:
    path = short_dir / "api.sock"
    first = start_api(conn, f"unix:{path}")
    try:
        app = make_app(StubVat(), CacheLocations(conn), StubHealth())
        second = ApiServer(app, listen=f"unix:{path}")
        with pytest.raises(ApiBindError, match="another process is listening"):
            second.start()
        assert first.client.get("/healthz").status_code == 200  # still served by the first
    finally:
        close_api(first)


def test_unix_path_that_is_not_a_socket_is_left_alone(
    conn: sqlite3.Connection, short_dir: Path
) -> None:
    path = short_dir / "api.sock"
    path.write_text("not a socket")
    app = make_app(StubVat(), CacheLocations(conn), StubHealth())
    with pytest.raises(ApiBindError, match="not a socket"):
        ApiServer(app, listen=f"unix:{path}").start()
    assert path.read_text() == "not a socket"


def test_unix_socket_in_a_missing_directory_fails_at_start(
    conn: sqlite3.Connection, short_dir: Path
) -> None:
    app = make_app(StubVat(), CacheLocations(conn), StubHealth())
    server = ApiServer(app, listen=f"unix:{short_dir / 'missing' / 'api.sock'}")
    with pytest.raises(ApiBindError, match="no such file or directory"):
        server.start()


def test_make_app_refuses_a_negative_limit(conn: sqlite3.Connection) -> None:
    with pytest.raises(ValueError):
        make_app(StubVat(), CacheLocations(conn), StubHealth(), max_request_bytes=-1)
