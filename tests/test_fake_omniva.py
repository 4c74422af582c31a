"""The fake omniva.ee itself: wire format, validators and 304s, modes, control API, synthetic
lists and the standalone runner."""

from __future__ import annotations

import gzip
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

import httpx
import pytest

from syncd.connectors.omniva.fake import (
    MARKER_EVERY,
    FakeOmniva,
    encode_locations,
    sample_bytes,
    sample_locations,
    synthetic,
)
from syncd.connectors.omniva.locations import parse_locations

ROOT = Path(__file__).parents[1]
IDENTITY = {"Accept-Encoding": "identity"}


@pytest.fixture
def fake() -> Iterator[FakeOmniva]:
    with FakeOmniva() as f:
        yield f


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0, follow_redirects=False) as client:
        yield client


def test_bundled_sample_is_omniva_serialisation() -> None:
    records = sample_locations()
    assert len(records) == 261
    assert all(len(r) == 25 and all(isinstance(v, str) for v in r.values()) for r in records)
    assert encode_locations(records) == sample_bytes()  # compact, \uXXXX and \/ escapes
    assert b"\\u00f5" in sample_bytes() and "õ".encode() not in sample_bytes()


def test_list_is_served_byte_for_byte_with_validators(fake: FakeOmniva, http: httpx.Client) -> None:
    response = http.get(fake.locations_url, headers=IDENTITY)
    assert response.status_code == 200
    assert response.content == sample_bytes()
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(sample_bytes()))
    etag = response.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    assert etag == fake.etag
    assert response.headers["last-modified"] == fake.last_modified
    # A fresh fake dates the file by its newest record (2021-12-29 in the sample).
    assert parsedate_to_datetime(fake.last_modified).year == 2021


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"If-None-Match": "{etag}"}, 304),
        ({"If-None-Match": "W/{etag}"}, 304),  # If-None-Match uses the weak comparison
        ({"If-None-Match": '"other", {etag}'}, 304),
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": '"other"'}, 200),
        ({"If-Modified-Since": "{last_modified}"}, 304),
        ({"If-Modified-Since": "{later}"}, 304),
        ({"If-Modified-Since": "{earlier}"}, 200),
        ({"If-Modified-Since": "not a date"}, 200),
        # If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2)
        ({"If-None-Match": '"other"', "If-Modified-Since": "{last_modified}"}, 200),
        ({}, 200),
    ],
)
def test_conditional_requests(
    fake: FakeOmniva, http: httpx.Client, headers: dict[str, str], status: int
) -> None:
    moment = parsedate_to_datetime(fake.last_modified)
    values = {
        "etag": fake.etag,
        "last_modified": fake.last_modified,
        "later": format_datetime(moment + timedelta(hours=1), usegmt=True),
        "earlier": format_datetime(moment - timedelta(seconds=1), usegmt=True),
    }
    sent = {name: value.format(**values) for name, value in headers.items()}
    response = http.get(fake.locations_url, headers={**IDENTITY, **sent})
    assert response.status_code == status
    if status == 304:
        assert response.content == b""
        assert response.headers["etag"] == fake.etag
        assert response.headers["last-modified"] == fake.last_modified
    else:
        assert response.content == sample_bytes()
    (logged,) = fake.requests
    assert logged.status == status
    assert logged.if_none_match == sent.get("If-None-Match")
    assert logged.if_modified_since == sent.get("If-Modified-Since")


def test_gzip_variant_has_its_own_strong_etag(fake: FakeOmniva, http: httpx.Client) -> None:
    raw = http.get(fake.locations_url, headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.headers["vary"] == "Accept-Encoding"
    assert raw.content == sample_bytes()  # httpx decoded it
    assert int(raw.headers["content-length"]) == len(gzip.compress(sample_bytes(), mtime=0))
    gz_etag = raw.headers["etag"]
    assert gz_etag != fake.etag and gz_etag.endswith('-gzip"') and not gz_etag.startswith("W/")
    again = http.get(fake.locations_url, headers={"If-None-Match": gz_etag})
    assert again.status_code == 304
    with FakeOmniva(compress=False) as plain:
        response = http.get(plain.locations_url, headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in response.headers


def test_head_answers_headers_only(fake: FakeOmniva, http: httpx.Client) -> None:
    response = http.head(fake.locations_url, headers=IDENTITY)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(sample_bytes()))


def test_set_locations_changes_validators(fake: FakeOmniva, http: httpx.Client) -> None:
    old_etag, old_modified = fake.etag, fake.last_modified
    records = sample_locations()[:10]
    fake.set_locations(records)
    assert fake.etag != old_etag
    assert parsedate_to_datetime(fake.last_modified) > parsedate_to_datetime(old_modified)
    # Two changes within one second still get distinct, increasing Last-Modified values.
    before = fake.last_modified
    fake.set_locations(records[:5])
    assert parsedate_to_datetime(fake.last_modified) > parsedate_to_datetime(before)
    stale = http.get(fake.locations_url, headers={**IDENTITY, "If-Modified-Since": before})
    assert stale.status_code == 200 and stale.content == encode_locations(records[:5])
    old = http.get(fake.locations_url, headers={"If-None-Match": old_etag})
    assert old.status_code == 200


def test_modes_over_the_wire(fake: FakeOmniva, http: httpx.Client) -> None:
    fake.set_mode("empty")
    assert http.get(fake.locations_url).content == b"[]"
    fake.set_mode("html")
    page = http.get(fake.locations_url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    fake.set_mode("truncated")
    cut = http.get(fake.locations_url, headers=IDENTITY).content
    assert cut == sample_bytes()[: len(sample_bytes()) // 2]
    fake.set_mode("shrunk")
    assert len(parse_locations(http.get(fake.locations_url).content).records) == 27
    fake.set_mode("not_json")
    assert http.get(fake.locations_url).content.startswith(b"Warning:")
    fake.set_mode("redirect")
    moved = http.get(fake.locations_url)
    assert moved.status_code == 302 and moved.headers["location"] == "/maintenance.html"
    fake.set_mode("http_503", retry_after=30)
    busy = http.get(fake.locations_url)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "30"
    fake.set_mode("dropped")
    with pytest.raises(httpx.RemoteProtocolError):
        http.get(fake.locations_url)
    fake.set_mode("ok")
    assert http.get(fake.locations_url).content == sample_bytes()


def test_mode_for_a_number_of_answers(fake: FakeOmniva, http: httpx.Client) -> None:
    fake.set_mode("http_500", times=2)
    statuses = [http.get(fake.locations_url).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert fake.mode == "ok"


def test_bad_mode_is_refused(fake: FakeOmniva) -> None:
    with pytest.raises(ValueError):
        fake.set_mode("sideways")
    with pytest.raises(ValueError):
        fake.set_mode("http_99")


def test_control_api(fake: FakeOmniva, http: httpx.Client) -> None:
    assert http.post(fake.control_url + "mode", json={"mode": "html"}).json() == {"mode": "html"}
    assert http.get(fake.locations_url).headers["content-type"].startswith("text/html")
    assert http.post(fake.control_url + "mode", json={"mode": "nope"}).status_code == 400
    assert http.get(fake.control_url + "nothing").status_code == 404
    http.post(fake.control_url + "mode", json={"mode": "ok"})
    http.get(fake.locations_url, headers={"If-None-Match": '"x"'})
    log = http.get(fake.control_url + "requests").json()
    assert log["count"] == 2  # control requests are not logged
    assert log["requests"][1]["if_none_match"] == '"x"'
    assert log["requests"][1]["status"] == 200

    made = http.post(
        fake.control_url + "locations", json={"synthetic": 40, "countries": ["LT"]}
    ).json()
    assert made["count"] == 40 and made["etag"] == fake.etag
    body = http.get(fake.locations_url).content
    assert {r.country for r in parse_locations(body).records} == {"LT"}
    one = sample_locations()[:1]
    http.post(fake.control_url + "locations", json={"locations": one})
    assert http.get(fake.locations_url, headers=IDENTITY).content == encode_locations(one)
    assert http.get(fake.control_url + "state").json()["count"] == 1

    assert http.post(fake.control_url + "reset").json() == {"ok": True}
    assert fake.request_count == 0
    assert http.get(fake.locations_url, headers=IDENTITY).content == sample_bytes()


def test_synthetic_lists_are_realistic_and_valid() -> None:
    records = synthetic(5000, countries=("EE", "LV", "LT", "FI"), seed=7)
    assert records == synthetic(5000, countries=("EE", "LV", "LT", "FI"), seed=7)
    assert all(len(r) == 25 and all(isinstance(v, str) for v in r.values()) for r in records)
    assert set(records[0]) == set(sample_locations()[0])
    parsed = parse_locations(encode_locations(records))
    assert (len(parsed.records), parsed.skipped) == (5000, 0)
    per_country = Counter(r.country for r in parsed.records)
    assert per_country == {"EE": 1250, "LV": 1250, "LT": 1250, "FI": 1250}
    kinds = Counter(r.kind for r in parsed.records)
    assert 0.7 < kinds["parcel_machine"] / 5000 < 0.9
    assert all(53.5 < r.latitude < 66 and 20 < r.longitude < 29 for r in parsed.records)
    with pytest.raises(ValueError):
        synthetic(10, countries=("DE",))


def test_synthetic_lists_carry_omniva_name_markers() -> None:
    records = synthetic(4000, countries=("EE", "LV", "LT", "FI"), seed=3)
    parsed = {r.location_id: r for r in parse_locations(encode_locations(records)).records}
    marked = {zip_code: r for zip_code, r in parsed.items() if r.state != "normal"}
    expected = {
        r["ZIP"]
        for r in records
        if r["TYPE"] == "0" and int(r["ZIP"]) % MARKER_EVERY == 0 and r["A0_NAME"] != "FI"
    }
    assert set(marked) == expected and len(expected) > 10
    states = {(r.country, r.state, r.state_note) for r in marked.values()}
    assert states == {
        ("EE", "longer_delivery", "Pikem ooteaeg kuni 2 päeva"),
        ("LV", "longer_delivery", "ILGĀKA PIEGĀDE"),
        ("LT", "overfilled", "PERPILDYTAS"),
    }
    assert not any(r.name.endswith(")") for r in parsed.values())


def test_standalone_runner_serves_until_terminated() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "syncd.connectors.omniva.fake", "--synthetic", "30", "--no-gzip"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline().split()
        assert ready[0] == "READY" and ready[1].endswith("/locations.json")
        response = httpx.get(ready[1], timeout=5.0)
        assert response.status_code == 200 and "content-encoding" not in response.headers
        assert len(parse_locations(response.content).records) == 30
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        if process.stdout is not None:
            process.stdout.close()
