"""Omniva's parcel-machine list: parsing, the conditional client, the cache and the refresh job,
against the fake omniva.ee on loopback."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from syncd.connectors.omniva.client import Downloaded, NotModified, OmnivaClient
from syncd.connectors.omniva.fake import BAD_RECORDS_SKIPS, FakeOmniva, sample_bytes, synthetic
from syncd.connectors.omniva.fake.server import encode_locations
from syncd.connectors.omniva.locations import SuspiciousListError, parse_locations
from syncd.connectors.omniva.markers import split_marker
from syncd.core.errors import (
    ConfigError,
    MalformedResponseError,
    RateLimitedError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
)
from syncd.core.parcel_machines import ParcelMachine
from syncd.engines.omniva import refresh_locations
from syncd.state import db
from syncd.state import omniva as store

T0 = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)
T1 = datetime(2025, 3, 2, 6, 0, tzinfo=UTC)
SAMPLE_COUNTS = {
    "EE": {"parcel_machine": 89, "post_office": 86},
    "LV": {"parcel_machine": 86, "post_office": 0},
}


@pytest.fixture
def fake() -> Iterator[FakeOmniva]:
    with FakeOmniva() as f:
        yield f


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    return tmp_path / "cache.sqlite3"


@pytest.fixture
def conn(cache_path: Path) -> Iterator[sqlite3.Connection]:
    connection = db.connect(cache_path)
    yield connection
    connection.close()


@pytest.fixture
def client(fake: FakeOmniva) -> Iterator[OmnivaClient]:
    with OmnivaClient(fake.locations_url, connect_timeout=2.0, timeout=5.0) as c:
        yield c


def all_rows(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT * FROM parcel_machines ORDER BY location_id").fetchall()


def sample_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = orjson.loads(sample_bytes())
    return records


def body_of(records: list[Any]) -> bytes:
    return orjson.dumps(records)


# --- parsing --------------------------------------------------------------------------------


def test_reference_sample_parses_completely() -> None:
    parsed = parse_locations(sample_bytes())
    assert len(parsed.records) == 261
    assert parsed.skipped == 0 and parsed.skipped_reasons == {}
    by_kind: dict[tuple[str, str], int] = {}
    for record in parsed.records:
        by_kind[(record.country, record.kind)] = by_kind.get((record.country, record.kind), 0) + 1
    assert by_kind == {
        ("EE", "parcel_machine"): 89,
        ("EE", "post_office"): 86,
        ("LV", "parcel_machine"): 86,
    }
    first = next(r for r in parsed.records if r.location_id == "10696")
    assert first == ParcelMachine(
        location_id="10696",
        country="EE",
        kind="post_office",
        name="1it postipunkt",
        longitude=24.714293,
        latitude=59.420107,
        county="Harju maakond",
        town="Tallinn",
        village="Kristiine linnaosa",
        street="Sõpruse pst",
        house_number="33",
        modified_at="2021-12-20T12:51:39.343+02:00",
    )
    keguma = next(r for r in parsed.records if r.location_id == "9165")
    assert (keguma.kind, keguma.comment_lv, keguma.house_number) == (
        "parcel_machine",
        "Pa kreisi no ieejas",
        "5C",
    )


def test_all_comment_and_hours_keys_map_to_columns() -> None:
    record = dict(sample_records()[0])
    record.update(
        SERVICE_HOURS="E-R 9-18",
        TEMP_SERVICE_HOURS="E-R 10-16",
        TEMP_SERVICE_HOURS_UNTIL="2025-12-31",
        TEMP_SERVICE_HOURS_2="L 10-14",
        TEMP_SERVICE_HOURS_2_UNTIL="2026-01-06",
        comment_est="et",
        comment_eng="en",
        comment_rus="ru",
        comment_lav="lv",
        comment_lit="lt",
        A4_NAME="small",
        A6_NAME="area",
        A8_NAME="8",
    )
    (parsed,) = parse_locations(body_of([record])).records
    assert (parsed.comment_et, parsed.comment_en, parsed.comment_ru) == ("et", "en", "ru")
    assert (parsed.comment_lv, parsed.comment_lt) == ("lv", "lt")
    assert (parsed.service_hours, parsed.temp_service_hours) == ("E-R 9-18", "E-R 10-16")
    assert (parsed.temp_service_hours_until, parsed.temp_service_hours_2) == (
        "2025-12-31",
        "L 10-14",
    )
    assert parsed.temp_service_hours_2_until == "2026-01-06"
    assert (parsed.small_place, parsed.area, parsed.apartment) == ("small", "area", "8")


def _drop(key: str) -> Callable[[dict[str, Any]], Any]:
    def mutate(record: dict[str, Any]) -> Any:
        del record[key]
        return record

    return mutate


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    def mutate(record: dict[str, Any]) -> Any:
        record[key] = value
        return record

    return mutate


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (_drop("ZIP"), "missing_zip"),
        (_set("ZIP", ""), "missing_zip"),
        (_set("ZIP", "12 34"), "bad_zip"),
        (_set("ZIP", 12345), "bad_zip"),
        (_drop("NAME"), "missing_name"),
        (_set("NAME", "   "), "missing_name"),
        (_set("TYPE", "7"), "bad_type"),
        (_drop("TYPE"), "missing_type"),
        (_set("A0_NAME", "ee"), "bad_country"),
        (_set("A0_NAME", "EST"), "bad_country"),
        (_drop("A0_NAME"), "missing_country"),
        (_set("X_COORDINATE", "abc"), "bad_longitude"),
        (_set("X_COORDINATE", "180.5"), "bad_longitude"),
        (_set("X_COORDINATE", "nan"), "bad_longitude"),
        (_drop("X_COORDINATE"), "missing_longitude"),
        (_set("Y_COORDINATE", "-90.01"), "bad_latitude"),
        (_set("Y_COORDINATE", "inf"), "bad_latitude"),
        (_set("Y_COORDINATE", 59.4), "bad_latitude"),
        (_set("comment_est", 5), "bad_text_field"),
        (_set("A5_NAME", ["x"]), "bad_text_field"),
        (lambda record: "not an object", "not_an_object"),
        (lambda record: None, "not_an_object"),
    ],
)
def test_bad_record_is_skipped_with_its_reason(
    mutate: Callable[[dict[str, Any]], Any], reason: str
) -> None:
    records: list[Any] = sample_records()[:5]
    records[2] = mutate(dict(records[2]))
    parsed = parse_locations(body_of(records))
    assert len(parsed.records) == 4
    assert parsed.skipped == 1
    assert parsed.skipped_reasons == {reason: 1}


def test_missing_or_null_optional_keys_default_to_empty_and_extra_keys_are_ignored() -> None:
    record = dict(sample_records()[1])
    del record["comment_lit"], record["A8_NAME"]
    record["SERVICE_HOURS"] = None
    record["NEW_KEY"] = {"future": "field"}
    (parsed,) = parse_locations(body_of([record])).records
    assert (parsed.comment_lt, parsed.apartment, parsed.service_hours) == ("", "", "")


def test_duplicate_zip_keeps_the_last_and_counts_a_skip() -> None:
    records = sample_records()[:3]
    later = dict(records[0], NAME="Renamed later")
    parsed = parse_locations(body_of([*records, later]))
    assert len(parsed.records) == 3
    assert parsed.skipped_reasons == {"duplicate_zip": 1}
    assert next(r for r in parsed.records if r.location_id == records[0]["ZIP"]).name == (
        "Renamed later"
    )


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"[]", "empty"),
        (b"<!DOCTYPE html><html><body>Hooldus</body></html>", "html"),
        (b"\r\n  <html>", "html"),
        (sample_bytes()[: len(sample_bytes()) // 2], "truncated"),
        (sample_bytes()[:-1], "truncated"),
        (b"Warning: something failed\n[]", "not_json"),
        (b"[1, 2] trailing", "not_json"),
        (b'{"ZIP": "1"}', "not_array"),
        (b'"a string"', "not_array"),
        (b"[1, 2, 3]", "no_valid_records"),
        (b'[{"ZIP": "1", "NAME": "x", "TYPE": "9"}]', "no_valid_records"),
    ],
)
def test_unusable_body_is_suspicious(body: bytes, code: str) -> None:
    with pytest.raises(SuspiciousListError) as caught:
        parse_locations(body)
    assert caught.value.code == code
    assert isinstance(caught.value, MalformedResponseError)


def test_byte_order_mark_is_tolerated() -> None:
    assert len(parse_locations(b"\xef\xbb\xbf" + sample_bytes()).records) == 261


# --- the refresh job against the fake -------------------------------------------------------


def test_reference_sample_loads_and_second_fetch_is_conditional_304(
    fake: FakeOmniva, client: OmnivaClient, conn: sqlite3.Connection
) -> None:
    report = refresh_locations(conn, client, max_shrink_share=0.5, now=T0)
    assert (report.outcome, report.records, report.skipped) == ("updated", 261, 0)
    assert report.counts == SAMPLE_COUNTS
    assert store.counts(conn) == SAMPLE_COUNTS
    assert "261 locations (EE 175, LV 86)" in report.summary()
    state = store.list_state(conn)
    assert state.record_count == 261 and state.updated_at == T0 and state.checked_at == T0
    assert state.etag and state.last_modified == fake.last_modified

    again = refresh_locations(conn, client, max_shrink_share=0.5, now=T1)
    assert (again.outcome, again.records, again.counts) == ("not_modified", 261, SAMPLE_COUNTS)
    first, second = fake.requests
    assert first.if_none_match is None and first.status == 200
    assert second.if_none_match == state.etag
    assert second.if_modified_since == state.last_modified
    assert second.status == 304
    after = store.list_state(conn)
    assert (after.updated_at, after.checked_at) == (T0, T1)


def test_changed_list_is_downloaded_again(
    fake: FakeOmniva, client: OmnivaClient, conn: sqlite3.Connection
) -> None:
    refresh_locations(conn, client, max_shrink_share=0.5, now=T0)
    records = sample_records()
    records[0] = dict(records[0], NAME="1it postipunkt (moved)")
    fake.set_locations(records)
    report = refresh_locations(conn, client, max_shrink_share=0.5, now=T1)
    assert report.outcome == "updated"
    assert fake.requests[-1].status == 200 and fake.requests[-1].if_none_match is not None
    names = {loc["name"] for loc in store.list_locations(conn, "EE", "post_office")}
    assert "1it postipunkt (moved)" in names and "1it postipunkt" not in names
    assert store.list_state(conn).updated_at == T1


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("empty", "empty"),
        ("html", "html"),
        ("truncated", "truncated"),
        ("shrunk", "shrunk"),
        ("not_json", "not_json"),
        ("redirect", "redirect"),
    ],
)
def test_bad_download_keeps_the_list_and_records_the_refusal(
    fake: FakeOmniva, client: OmnivaClient, conn: sqlite3.Connection, mode: str, code: str
) -> None:
    refresh_locations(conn, client, max_shrink_share=0.5, now=T0)
    before, state_before = all_rows(conn), store.list_state(conn)
    fake.set_mode(mode)
    with pytest.raises(SuspiciousListError) as caught:
        refresh_locations(conn, client, max_shrink_share=0.5, now=T1)
    assert caught.value.code == code
    assert all_rows(conn) == before
    state = store.list_state(conn)
    assert state == replace(state_before, refused_at=T1, refused_reason=str(caught.value))
    assert state.refused_reason  # says what was wrong, for status

    # The old validators are kept: once Omniva is healthy again the stored list is still current.
    fake.set_mode("ok")
    assert refresh_locations(conn, client, max_shrink_share=0.5, now=T1).outcome == "not_modified"


def test_redirect_is_not_followed(
    fake: FakeOmniva, client: OmnivaClient, conn: sqlite3.Connection
) -> None:
    fake.set_mode("redirect")
    with pytest.raises(SuspiciousListError):
        refresh_locations(conn, client, max_shrink_share=0.5, now=T0)
    assert [(r.path, r.status) for r in fake.requests] == [("/locations.json", 302)]
    assert not store.list_state(conn).loaded


@pytest.mark.parametrize("compress", [False, True], ids=["content_length", "streamed_gzip"])
def test_too_large_download_is_aborted_and_refused(
    conn: sqlite3.Connection, compress: bool
) -> None:
    with FakeOmniva(compress=compress) as fake:
        with OmnivaClient(fake.locations_url, connect_timeout=2, timeout=5) as roomy:
            refresh_locations(conn, roomy, max_shrink_share=0.5, now=T0)
        before = all_rows(conn)
        fake.set_locations(synthetic(1000))  # about 600 kB, gzipped well under the cap
        with OmnivaClient(
            fake.locations_url, connect_timeout=2, timeout=5, max_body_bytes=200_000
        ) as tight:
            with pytest.raises(SuspiciousListError) as caught:
                refresh_locations(conn, tight, max_shrink_share=0.5, now=T1)
            assert caught.value.code == "too_large"
            assert "too large" in str(caught.value)
        assert fake.requests[-1].status == 200
    assert all_rows(conn) == before
    assert store.list_state(conn).refused_at == T1


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("http_500", UpstreamUnavailableError),
        ("http_502", UpstreamUnavailableError),
        ("dropped", UpstreamUnavailableError),
        ("http_503", RateLimitedError),
        ("http_429", RateLimitedError),
        ("http_404", UpstreamRejectedError),
        ("http_403", UpstreamRejectedError),
    ],
)
def test_http_failure_keeps_the_list_and_is_no_refusal(
    fake: FakeOmniva,
    client: OmnivaClient,
    conn: sqlite3.Connection,
    mode: str,
    error: type[Exception],
) -> None:
    refresh_locations(conn, client, max_shrink_share=0.5, now=T0)
    before, state_before = all_rows(conn), store.list_state(conn)
    fake.set_locations(sample_records()[:-1])  # a changed list, so no 304 spares the body
    fake.set_mode(mode)
    with pytest.raises(error):
        refresh_locations(conn, client, max_shrink_share=0.5, now=T1)
    assert all_rows(conn) == before
    # No list arrived: nothing was refused and the list was not checked either.
    assert store.list_state(conn) == state_before


def test_rate_limit_carries_retry_after(fake: FakeOmniva, client: OmnivaClient) -> None:
    fake.set_mode("http_429", retry_after=120)
    with pytest.raises(RateLimitedError) as caught:
        client.fetch(None, None)
    assert caught.value.retry_after == 120.0


def test_read_timeout_is_upstream_unavailable(fake: FakeOmniva) -> None:
    fake.set_mode("slow", delay=30)  # the fake's stop() cuts the delay short
    impatient = OmnivaClient(fake.locations_url, connect_timeout=1, timeout=0.2)
    with impatient, pytest.raises(UpstreamUnavailableError, match="read timeout"):
        impatient.fetch(None, None)


def test_connection_refused_is_upstream_unavailable() -> None:
    with FakeOmniva() as fake:
        url = fake.locations_url
    client = OmnivaClient(url, connect_timeout=1, timeout=1)
    with client, pytest.raises(UpstreamUnavailableError, match="refused or unreachable"):
        client.fetch(None, None)


def test_client_returns_validators_and_not_modified(fake: FakeOmniva) -> None:
    with OmnivaClient(fake.locations_url, connect_timeout=1, timeout=5) as client:
        first = client.fetch(None, None)
        assert isinstance(first, Downloaded)
        assert parse_locations(first.body).records  # gzip was decoded
        assert first.last_modified == fake.last_modified
        assert first.etag is not None and first.etag.startswith('"')
        assert client.fetch(first.etag, None) == NotModified()
        assert client.fetch(None, first.last_modified) == NotModified()
        assert isinstance(client.fetch('"stale"', None), Downloaded)


def test_bad_records_load_the_good_ones_with_a_skip_count(
    fake: FakeOmniva,
    client: OmnivaClient,
    conn: sqlite3.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.set_mode("bad_records")
    with caplog.at_level(logging.WARNING, logger="syncd.engines.omniva"):
        report = refresh_locations(conn, client, max_shrink_share=0.5, now=T0)
    assert (report.outcome, report.records, report.skipped) == ("updated", 258, 3)
    assert report.skipped_reasons == BAD_RECORDS_SKIPS
    state = store.list_state(conn)
    assert (state.record_count, state.skipped_count) == (258, 3)
    assert sum(sum(kinds.values()) for kinds in store.counts(conn).values()) == 258
    (message,) = [r.getMessage() for r in caplog.records if r.name == "syncd.engines.omniva"]
    assert "3 of 261" in message and "bad_type 1" in message and "missing_zip 1" in message
    names = {record["NAME"] for record in sample_records()}
    assert not any(name in message for name in names)  # counts only, no record content


def test_shrink_within_the_allowed_share_is_accepted(
    fake: FakeOmniva, client: OmnivaClient, conn: sqlite3.Connection
) -> None:
    refresh_locations(conn, client, max_shrink_share=0.6, now=T0)
    fake.set_mode("shrunk", share=0.5)  # every 2nd record: 131 of 261, each country about half
    report = refresh_locations(conn, client, max_shrink_share=0.6, now=T1)
    assert (report.outcome, report.records) == ("updated", 131)


def test_list_missing_a_whole_country_is_refused(
    fake: FakeOmniva, client: OmnivaClient, conn: sqlite3.Connection
) -> None:
    records = synthetic(1000, countries=("EE", "LV", "LT"))
    fake.set_locations(records)
    refresh_locations(conn, client, max_shrink_share=0.5, now=T0)
    before = all_rows(conn)
    # Latvia vanishes: about a third fewer in total (within the share), all of one country.
    fake.set_locations([r for r in records if r["A0_NAME"] != "LV"])
    with pytest.raises(SuspiciousListError, match="for LV shrank"):
        refresh_locations(conn, client, max_shrink_share=0.5, now=T1)
    assert all_rows(conn) == before
    assert "for LV shrank" in (store.list_state(conn).refused_reason or "")


def test_small_first_list_is_accepted_when_nothing_is_stored(
    fake: FakeOmniva, client: OmnivaClient, conn: sqlite3.Connection
) -> None:
    fake.set_mode("shrunk")
    report = refresh_locations(conn, client, max_shrink_share=0.5, now=T0)
    assert report.records == 27
    assert store.list_state(conn).record_count == 27


# --- name markers ---------------------------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures" / "omniva"


def test_reference_sample_markers_become_states() -> None:
    records = {r.location_id: r for r in parse_locations(sample_bytes()).records}
    marked = {
        location_id: (r.state, r.state_note)
        for location_id, r in records.items()
        if r.state != "normal"
    }
    longer_lv = ("longer_delivery", "ILGĀKA PIEGĀDE")
    prepaid = ("prepaid_pickup_only", "ainult ettemakstud pakkide väljastamine")
    assert marked == {
        "9918": longer_lv,
        "9981": longer_lv,
        "9213": longer_lv,
        "9922": longer_lv,
        "9962": longer_lv,
        "96227": ("longer_delivery", "Pikem ooteaeg kuni 2 päeva"),
        "70319": prepaid,
        "62223": prepaid,
        "46335": prepaid,
        "90119": prepaid,
    }
    assert records["9918"].name == "Daugavpils T/C Ditton pakomāts"
    assert records["96227"].name == "Valga Siili Coop Konsumi pakiautomaat"
    assert records["70319"].name == "Kolga-Jaani postiautomaat"
    # Other text in parentheses is part of the name.
    assert records["48094"].name == "Adavere postipunkt (Coop)"
    assert records["90394"].name == "Lihula postipunkt (raamatukogu)"
    assert records["88394"].name == "Jõõpre postipunkt (Kauplus Meie)"
    assert all(r.state_note == "" for r in records.values() if r.state == "normal")


def test_lithuanian_overfilled_marker() -> None:
    parsed = parse_locations((FIXTURES / "locations_lt_markers.json").read_bytes())
    records = {r.location_id: r for r in parsed.records}
    assert (records["80016"].name, records["80016"].state, records["80016"].state_note) == (
        "Vilniaus Ozo g. Maxima paštomatas",
        "overfilled",
        "PERPILDYTAS",
    )
    assert (records["80533"].state, records["80533"].state_note) == ("overfilled", "Perpildytas")
    assert records["80533"].name == "Klaipėdos Taikos pr. Norfa paštomatas"
    assert (records["80427"].state, records["80427"].state_note) == ("normal", "")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Ozo paštomatas (PERPILDYTAS)", ("Ozo paštomatas", "overfilled", "PERPILDYTAS")),
        ("Ozo paštomatas (perpildytas)", ("Ozo paštomatas", "overfilled", "perpildytas")),
        ("Ozo paštomatas(PERPILDYTAS)  ", ("Ozo paštomatas", "overfilled", "PERPILDYTAS")),
        ("Ozo paštomatas ( PERPILDYTAS )", ("Ozo paštomatas", "overfilled", "PERPILDYTAS")),
        ("Rimi pakomāts (ilgāka piegāde)", ("Rimi pakomāts", "longer_delivery", "ilgāka piegāde")),
        (
            "Rimi pakomāts (ILGĀKA\u00a0 PIEGĀDE)",  # a no-break space and a double space
            ("Rimi pakomāts", "longer_delivery", "ILGĀKA\u00a0 PIEGĀDE"),
        ),
        (
            "Rimi pakomāts (ILGA\u0304KA PIEGA\u0304DE)",  # decomposed: A + combining macron
            ("Rimi pakomāts", "longer_delivery", "ILGA\u0304KA PIEGA\u0304DE"),
        ),
        (
            "Valga pakiautomaat (Pikem ooteaeg kuni 5 päeva)",
            ("Valga pakiautomaat", "longer_delivery", "Pikem ooteaeg kuni 5 päeva"),
        ),
        (
            "Valga pakiautomaat (pikem ooteaeg kuni 2-3 päeva)",
            ("Valga pakiautomaat", "longer_delivery", "pikem ooteaeg kuni 2-3 päeva"),
        ),
        (
            "Rakke postiautomaat (AINULT ETTEMAKSTUD PAKKIDE VÄLJASTAMINE)",
            (
                "Rakke postiautomaat",
                "prepaid_pickup_only",
                "AINULT ETTEMAKSTUD PAKKIDE VÄLJASTAMINE",
            ),
        ),
        # not markers: stays in the name, state normal
        ("Adavere postipunkt (Coop)", ("Adavere postipunkt (Coop)", "normal", "")),
        ("Ozo (PERPILDYTAS) paštomatas", ("Ozo (PERPILDYTAS) paštomatas", "normal", "")),
        ("Ozo paštomatas PERPILDYTAS", ("Ozo paštomatas PERPILDYTAS", "normal", "")),
        ("Ozo paštomatas (PERPILDYTAS", ("Ozo paštomatas (PERPILDYTAS", "normal", "")),
        ("Ozo paštomatas (ne PERPILDYTAS)", ("Ozo paštomatas (ne PERPILDYTAS)", "normal", "")),
        ("Valga (Pikem ooteaeg kuni päeva)", ("Valga (Pikem ooteaeg kuni päeva)", "normal", "")),
        ("(PERPILDYTAS)", ("(PERPILDYTAS)", "normal", "")),  # nothing left to call it
    ],
)
def test_split_marker(name: str, expected: tuple[str, str, str]) -> None:
    assert split_marker(name) == expected


def test_marker_keeps_a_record_that_would_otherwise_be_valid() -> None:
    record = dict(sample_records()[0], NAME="Ozo paštomatas (PERPILDYTAS)", A0_NAME="LT")
    (parsed,) = parse_locations(body_of([record])).records
    assert (parsed.name, parsed.state, parsed.state_note) == (
        "Ozo paštomatas",
        "overfilled",
        "PERPILDYTAS",
    )


def test_a_marker_appearing_or_disappearing_changes_the_state_at_the_next_refresh(
    fake: FakeOmniva, client: OmnivaClient, conn: sqlite3.Connection
) -> None:
    refresh_locations(conn, client, max_shrink_share=0.5, now=T0)

    def stored(location_id: str) -> tuple[str, str, str]:
        row = conn.execute(
            "SELECT name, state, state_note FROM parcel_machines WHERE location_id = ?",
            (location_id,),
        ).fetchone()
        return tuple(row)

    assert stored("9918") == ("Daugavpils T/C Ditton pakomāts", "longer_delivery", "ILGĀKA PIEGĀDE")
    assert stored("9165")[1:] == ("normal", "")

    records = sample_records()
    for record in records:
        if record["ZIP"] == "9918":  # Omniva dropped the marker
            record["NAME"] = "Daugavpils T/C Ditton pakomāts"
        if record["ZIP"] == "9165":  # ... and added one to another machine
            record["NAME"] += " (ILGĀKA PIEGĀDE)"
        record["MODIFIED"] = "2025-03-02T08:00:00.000+02:00"
    fake.set_locations(records)
    assert refresh_locations(conn, client, max_shrink_share=0.5, now=T1).outcome == "updated"

    assert stored("9918") == ("Daugavpils T/C Ditton pakomāts", "normal", "")
    keguma = stored("9165")
    assert keguma[1:] == ("longer_delivery", "ILGĀKA PIEGĀDE")
    assert not keguma[0].endswith(")")
    by_id = {loc["id"]: loc for loc in store.list_locations(conn, "LV")}
    assert (by_id["9165"]["state"], by_id["9165"]["state_note"]) == (
        "longer_delivery",
        "ILGĀKA PIEGĀDE",
    )
    assert (by_id["9918"]["state"], by_id["9918"]["state_note"]) == ("normal", "")


# --- the stored list ------------------------------------------------------------------------


def test_list_locations_filters_by_country_and_type(
    client: OmnivaClient, conn: sqlite3.Connection
) -> None:
    refresh_locations(conn, client, max_shrink_share=0.5, now=T0)
    assert len(store.list_locations(conn, "EE")) == 175
    assert len(store.list_locations(conn, " ee ")) == 175
    machines = store.list_locations(conn, "ee", "parcel_machine")
    assert len(machines) == 89 and {m["type"] for m in machines} == {"parcel_machine"}
    offices = store.list_locations(conn, "EE", "post_office")
    assert len(offices) == 86 and {m["country"] for m in offices} == {"EE"}
    assert len(store.list_locations(conn, "LV", "parcel_machine")) == 86
    assert store.list_locations(conn, "LV", "post_office") == []
    assert store.list_locations(conn, "LT") == []
    with pytest.raises(ValueError):
        store.list_locations(conn, "EE", "locker")


def test_list_locations_json_shape_and_order(
    client: OmnivaClient, conn: sqlite3.Connection
) -> None:
    refresh_locations(conn, client, max_shrink_share=0.5, now=T0)
    locations = store.list_locations(conn, "LV")
    assert set(locations[0]) == {
        "id", "name", "type", "country", "county", "town", "village", "small_place", "street",
        "area", "house_number", "apartment", "address", "latitude", "longitude",
        "service_hours", "temp_service_hours", "comments", "modified_at", "state", "state_note",
    }  # fmt: skip
    # Ordered by name as people read it: "Ādažu…" sorts with the A's, not after "Z".
    assert locations[0]["name"].startswith("Ādažu")
    assert locations[-1]["name"].startswith("Viļānu")
    keguma = next(loc for loc in locations if loc["id"] == "9165")
    assert keguma["address"] == "Ķeguma prospekts 5C, Ķegums, Ogres novads"
    assert keguma["comments"] == {
        "et": "",
        "en": "",
        "ru": "",
        "lv": "Pa kreisi no ieejas",
        "lt": "",
    }
    assert (keguma["latitude"], keguma["longitude"]) == (56.743749, 24.718084)
    assert keguma["modified_at"] == "2021-07-07T12:56:54.657+03:00"
    assert keguma["temp_service_hours"] == []
    tallinn = next(loc for loc in store.list_locations(conn, "EE") if loc["id"] == "10696")
    assert tallinn["address"] == "Sõpruse pst 33, Kristiine linnaosa, Tallinn, Harju maakond"


def test_address_comments_and_temporary_hours_in_json(conn: sqlite3.Connection) -> None:
    record = ParcelMachine(
        location_id="90001",
        country="EE",
        kind="post_office",
        name="Kadrina postipunkt (Talutehnika)",
        longitude=26.1,
        latitude=59.3,
        county="Lääne-Viru maakond",
        town="Kadrina vald",
        village="Kadapiku küla",
        area="Talutehnika",
        temp_service_hours="E-R 10-14",
        temp_service_hours_until="2025-08-31",
        comment_et="Poe sees.</br>Kassa juures &amp; vasakul<br />",
        comment_en="Inside the shop.</br>",
    )
    store.replace_list(conn, [record], etag=None, last_modified=None, skipped=0, now=T0)
    (item,) = store.list_locations(conn, "EE")
    assert item["address"] == "Talutehnika, Kadapiku küla, Kadrina vald, Lääne-Viru maakond"
    assert item["temp_service_hours"] == [{"hours": "E-R 10-14", "until": "2025-08-31"}]
    assert item["comments"]["en"] == "Inside the shop."
    assert item["comments"]["et"] == "Poe sees.\nKassa juures & vasakul"


def test_readers_see_the_old_or_the_new_list_never_half(
    client: OmnivaClient, conn: sqlite3.Connection, cache_path: Path
) -> None:
    refresh_locations(conn, client, max_shrink_share=0.5, now=T0)
    reader = db.connect(cache_path)
    new_records = parse_locations(encode_locations(synthetic(120, ("EE", "LT")))).records
    seen_inside: list[tuple[int, int, bool]] = []

    def records_checking_midway() -> Iterator[ParcelMachine]:
        for index, record in enumerate(new_records):
            if index == 60:  # half of the new list is inserted, the old one deleted
                seen_inside.append(
                    (
                        reader.execute("SELECT count(*) FROM parcel_machines").fetchone()[0],
                        store.list_state(reader).record_count,
                        conn.in_transaction,
                    )
                )
            yield record

    store.replace_list(
        conn, records_checking_midway(), etag='"n"', last_modified=None, skipped=0, now=T1
    )
    assert seen_inside == [(261, 261, True)]
    assert reader.execute("SELECT count(*) FROM parcel_machines").fetchone()[0] == 120
    assert store.list_state(reader).record_count == 120
    assert set(store.counts(reader)) == {"EE", "LT"}
    reader.close()


def test_failed_replace_rolls_back_completely(
    client: OmnivaClient, conn: sqlite3.Connection
) -> None:
    refresh_locations(conn, client, max_shrink_share=0.5, now=T0)
    before, state_before = all_rows(conn), store.list_state(conn)
    new_records = parse_locations(encode_locations(synthetic(50))).records

    def failing_midway() -> Iterator[ParcelMachine]:
        yield from new_records[:25]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        store.replace_list(conn, failing_midway(), etag=None, last_modified=None, skipped=0, now=T1)
    with pytest.raises(sqlite3.IntegrityError):
        duplicated = [new_records[0], new_records[1], new_records[0]]
        store.replace_list(conn, duplicated, etag=None, last_modified=None, skipped=0, now=T1)
    assert not conn.in_transaction
    assert all_rows(conn) == before
    assert store.list_state(conn) == state_before


def test_mark_checked_and_refusal_leave_the_list(conn: sqlite3.Connection) -> None:
    assert not store.list_state(conn).loaded
    assert store.counts(conn) == {}
    store.mark_checked(conn, now=T0)
    store.record_refusal(conn, "Omniva's list is empty", now=T1)
    state = store.list_state(conn)
    assert (state.checked_at, state.refused_at, state.refused_reason) == (
        T0,
        T1,
        "Omniva's list is empty",
    )
    assert (state.record_count, state.updated_at, state.loaded) == (0, None, False)


def test_refresh_rejects_an_impossible_shrink_share(
    client: OmnivaClient, conn: sqlite3.Connection
) -> None:
    with pytest.raises(ValueError):
        refresh_locations(conn, client, max_shrink_share=1.5, now=T0)


def test_full_size_synthetic_list_round_trips(
    fake: FakeOmniva, client: OmnivaClient, conn: sqlite3.Connection
) -> None:
    fake.set_locations(synthetic(5000, countries=("EE", "LV", "LT", "FI")))
    report = refresh_locations(conn, client, max_shrink_share=0.5, now=T0)
    assert (report.records, report.skipped) == (5000, 0)
    assert set(report.counts) == {"EE", "FI", "LT", "LV"}
    assert sum(len(store.list_locations(conn, c)) for c in report.counts) == 5000


def test_url_that_is_not_http_is_a_configuration_error() -> None:
    client = OmnivaClient("ftp://127.0.0.1/locations.json", connect_timeout=1, timeout=1)
    with client, pytest.raises(ConfigError):
        client.fetch(None, None)
