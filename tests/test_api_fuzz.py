"""Schemathesis fuzzes every operation of docs/openapi.yaml against a real ApiServer on loopback
(stand-ins for the VAT service and health, a real SQLite cache for the parcel list and the
metrics): no 5xx, and
every answer (status, headers, content type, body) conforms to the document. Valid and invalid
inputs both, deterministic (derandomized) so that CI sees the same cases every run."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from syncd.api.app import make_app
from syncd.api.metrics import MetricsSource
from syncd.api.server import ApiServer
from syncd.engines.intake import IntakeOptions, ServiceRequestIntake
from syncd.state.db import ThreadConnections, connect
from tests.test_api import (
    AS_OF,
    CacheLocations,
    MalformedVatNumber,
    StubAnswer,
    StubHealth,
    VatRejected,
    add_location,
    set_list_checked,
)

ROOT = Path(__file__).parents[1]
SCHEMA = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.yaml")
VIES_PREFIXES = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "CY",
        "CZ",
        "DE",
        "DK",
        "EE",
        "EL",
        "ES",
        "FI",
        "FR",
        "GR",
        "HR",
        "HU",
        "IE",
        "IT",
        "LT",
        "LU",
        "LV",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SE",
        "SI",
        "SK",
        "XI",
    ]
)


class FuzzVat:
    """A VatLookup stand-in with syncd.engines.vat's outcomes, decided by the number's shape: no
    two-letter prefix or over 32 characters → malformed (400); ending in 000 → VIES rejects it
    (422); a VIES prefix and digits → valid; anything else → invalid by the local check (the
    real service calls an unknown prefix malformed; answering it keeps the 200 path busy)."""

    def lookup(self, raw: str, *, fresh: bool = False) -> StubAnswer:
        compact = re.sub(r"[ .\-]", "", raw).upper()
        if len(raw) > 32 or len(compact) < 3 or not compact[:2].isalpha():
            raise MalformedVatNumber("not a VAT number")
        country, number = ("EL" if compact[:2] == "GR" else compact[:2]), compact[2:]
        if number.endswith("000"):
            raise VatRejected("INVALID_INPUT")
        if country in VIES_PREFIXES and number.isdigit():
            return StubAnswer(
                query=country + number,
                country_code=country,
                vat_number=number,
                source="live" if fresh else "cache",
                age_seconds=None if fresh else 60,
            )
        return StubAnswer(
            query=country + number,
            country_code=country,
            vat_number=number,
            valid=False,
            name=None,
            address=None,
            request_date=None,
            fetched_at=None,
            source="local",
            invalid_reason="the number does not follow the country's format",
        )


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("fuzz") / "cache.sqlite3"
    conn: sqlite3.Connection = connect(path)
    add_location(conn, "96331", "EE", "parcel_machine", "Tartu Lõunakeskuse pakiautomaat")
    add_location(conn, "10101", "EE", "post_office", "Tallinna postkontor", comment_en="<b>x</b>")
    add_location(conn, "LV9001", "LV", "parcel_machine", "Rīga Origo pakomāts")
    set_list_checked(conn, AS_OF)
    connections = ThreadConnections(lambda: connect(path))
    intake = ServiceRequestIntake(
        connections.get,
        IntakeOptions(
            spool=path.parent / "spool",
            request_types=frozenset({"repair", "other"}),
            min_free_bytes=0,
        ),
    )
    app = make_app(
        FuzzVat(),
        CacheLocations(conn),
        StubHealth(),
        metrics=MetricsSource(connections.get),
        service_requests=intake,
        max_upload_bytes=1024 * 1024,
    )
    server = ApiServer(app, listen="127.0.0.1:0", threads=4, max_request_bytes=1024 * 1024)
    server.start()
    yield f"http://{server.address}"
    server.stop(timeout=2)
    connections.close_all()
    conn.close()


@SCHEMA.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_document(case: schemathesis.Case, api_url: str) -> None:
    # A well-shaped VAT number may still be refused by the service (an unknown country prefix:
    # 400; VIES's INVALID_INPUT: 422), and a well-shaped service request by the door (random
    # bytes are not an allowed file type; a request type must be a configured one), all
    # documented; the check that valid input is accepted applies to the other operations.
    refusable = ("/v1/vat/{number}", "/v1/service-requests")
    excluded = [positive_data_acceptance] if case.operation.path in refusable else []
    case.call_and_validate(base_url=api_url, excluded_checks=excluded)
