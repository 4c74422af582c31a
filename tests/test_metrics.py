"""``GET /metrics`` over real HTTP: a real ApiServer on 127.0.0.1 with the daemon's own sources
(ThreadConnections, CachedLocations, DaemonHealth) over a real SQLite cache, a stand-in VAT
service. The answer is parsed with prometheus_client's parser and checked value by value; no
label or sample may carry a VAT number, a name or a path."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from syncd.api.app import make_app
from syncd.api.metrics import CONTENT_TYPE, CacheCollector, MetricsSource
from syncd.api.server import ApiServer
from syncd.api.sources import CachedLocations, DaemonHealth
from syncd.state import health, vies_cache
from syncd.state.db import ThreadConnections, connect, write_transaction
from tests.conftest import make_api_client
from tests.test_api import (
    DOC,
    NUMBER,
    StubVat,
    VatRejected,
    VatUnavailable,
    add_location,
    answer_for,
    check,
    error_code,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
Labels = frozenset[tuple[str, str]]


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Answer:
    """What vies_cache.put needs of an answer."""

    country_code: str
    vat_number: str
    valid: bool = True
    name: str | None = "Baltic Lasers OÜ"
    address: str | None = "Ringtee 75, Tartu"
    request_date: str = "2026-11-21"
    consultation_number: str | None = None


# ------------------------------------------------------------------------------------------
# The cache's contents
# ------------------------------------------------------------------------------------------


def fill_cache(conn: sqlite3.Connection) -> None:
    for job, state, success, failures in (
        ("mirror", "ok", NOW - timedelta(minutes=2), 0),
        ("push", "failing", NOW - timedelta(hours=1), 3),
        ("omniva", "stopped", None, 1),
        ("sweep", "idle", None, 0),
    ):
        health.save(
            conn,
            health.JobHealth(
                job=job,
                state=state,
                last_success_at=success,
                last_error_at=None if failures == 0 else NOW,
                last_error=None if failures == 0 else "boom",
                consecutive_failures=failures,
                next_run_at=None,
                updated_at=NOW,
            ),
        )
    with write_transaction(conn):
        for i in range(3):
            conn.execute(
                "INSERT INTO companies (crm_id, name, vat_number, content_hash, synced_at) "
                "VALUES (?, 'Acme', ?, 'h', ?)",
                (str(i + 1), NUMBER, stamp(NOW)),
            )
        conn.execute(
            "INSERT INTO contacts (crm_id, first_name, content_hash, synced_at) "
            "VALUES ('7', 'Mari', 'h', ?)",
            (stamp(NOW),),
        )
        conn.execute(
            "INSERT INTO cursors (entity, value, updated_at) VALUES ('companies', ?, ?)",
            ("2026-11-21T11:00:00+00:00", stamp(NOW)),
        )
        conn.executemany(
            "INSERT INTO quarantine (entity, crm_id, reason, first_seen_at, last_seen_at) "
            "VALUES ('devices', ?, 'bad serial', ?, ?)",
            [(crm_id, stamp(NOW), stamp(NOW)) for crm_id in ("11", "12")],
        )
        conn.execute(
            "INSERT INTO held_deletes (entity, crm_id, detected_at, reason) "
            "VALUES ('contacts', '8', ?, 'too many at once')",
            (stamp(NOW),),
        )
        for key, status, created in (
            ("00000000-0000-4000-8000-000000000001", "pending", NOW - timedelta(seconds=90)),
            ("00000000-0000-4000-8000-000000000002", "pending", NOW - timedelta(seconds=30)),
            ("00000000-0000-4000-8000-000000000003", "retry_wait", NOW - timedelta(seconds=60)),
            ("00000000-0000-4000-8000-000000000004", "done", NOW - timedelta(days=2)),
            ("00000000-0000-4000-8000-000000000005", "dead", NOW - timedelta(days=3)),
        ):
            conn.execute(
                "INSERT INTO outbox_requests (idempotency_key, request_type, message, "
                "contact_email, created_at, status) VALUES (?, 'service', 'help', "
                "'mari@example.com', ?, ?)",
                (key, created.strftime("%Y-%m-%dT%H:%M:%S.000Z"), status),
            )
    vies_cache.put(conn, Answer("EE", "100931558"), NOW - timedelta(hours=1))
    vies_cache.put(conn, Answer("NL", "805734958B01"), NOW - timedelta(hours=2))
    vies_cache.open_circuit(
        conn, "global", "IP_BLOCKED", now=NOW, until=datetime(2099, 1, 1, tzinfo=UTC)
    )
    vies_cache.add_counts(conn, {"cache": 5, "live": 2, "unavailable": 1}, vies_cache.day_of(NOW))
    vies_cache.add_counts(conn, {"cache": 100}, vies_cache.day_of(NOW - timedelta(days=1)))
    add_location(conn, "96331", "EE", "parcel_machine", "Tartu Lõunakeskuse pakiautomaat")
    add_location(conn, "96332", "EE", "parcel_machine", "Tartu Kvartali pakiautomaat")
    add_location(conn, "10101", "EE", "post_office", "Tallinna postkontor")
    add_location(conn, "LV9001", "LV", "parcel_machine", "Rīga Origo pakomāts")
    with write_transaction(conn):
        conn.execute(
            "UPDATE omniva_list SET record_count = 4, updated_at = ?, checked_at = ? WHERE id = 1",
            (stamp(NOW - timedelta(hours=3)), stamp(NOW - timedelta(minutes=10))),
        )


# ------------------------------------------------------------------------------------------
# Fixtures and helpers
# ------------------------------------------------------------------------------------------


@dataclass
class Running:
    client: httpx.Client
    vat: StubVat
    server: ApiServer


@pytest.fixture
def cache_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "cache.sqlite3"
    conn = connect(path)
    fill_cache(conn)
    conn.close()
    yield path


@pytest.fixture
def connections(cache_path: Path) -> Iterator[ThreadConnections]:
    pool = ThreadConnections(lambda: connect(cache_path))
    yield pool
    pool.close_all()


def serve(connections: ThreadConnections, metrics: MetricsSource | None) -> Iterator[Running]:
    vat = StubVat()
    app = make_app(
        vat,
        CachedLocations(connections),
        DaemonHealth(connections),
        metrics=metrics,
    )
    server = ApiServer(app, listen="127.0.0.1:0", threads=4)
    server.start()
    client = make_api_client(server.address)
    try:
        yield Running(client, vat, server)
    finally:
        client.close()
        server.stop(timeout=2)


@pytest.fixture
def api(connections: ThreadConnections) -> Iterator[Running]:
    yield from serve(connections, MetricsSource(connections.get, clock=lambda: NOW))


def scrape(client: httpx.Client) -> tuple[str, dict[tuple[str, Labels], float]]:
    """GET /metrics: the body and its samples by (sample name, labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["server"] == "syncd"
    documented = DOC["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    media_type = response.headers["content-type"].split(";")[0]
    assert any(key.split(";")[0] == media_type for key in documented)
    text = response.text
    samples: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        assert family.documentation, f"{family.name} has no HELP"
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = sample.value
    return text, samples


def value(samples: dict[tuple[str, Labels], float], sample: str, /, **labels: str) -> float:
    return samples[(sample, frozenset(labels.items()))]


def names(samples: dict[tuple[str, Labels], float]) -> set[str]:
    return {name for name, _ in samples}


# ------------------------------------------------------------------------------------------
# The cache's figures
# ------------------------------------------------------------------------------------------


def test_metrics_answers_prometheus_text(api: Running) -> None:
    text, samples = scrape(api.client)
    assert text.startswith("# HELP ")
    assert value(samples, "syncd_cache_read_success") == 1


def test_job_health(api: Running) -> None:
    _, samples = scrape(api.client)
    up = {"mirror": 1, "push": 0, "omniva": 0, "sweep": 1}
    for job, expected in up.items():
        assert value(samples, "syncd_job_up", name=job) == expected
    current = {"mirror": "ok", "push": "failing", "omniva": "stopped", "sweep": "idle"}
    for job, state in current.items():
        for other in ("ok", "idle", "failing", "stopped"):
            assert value(samples, "syncd_job_state", name=job, state=other) == (other == state)
    success = value(samples, "syncd_job_last_success_timestamp_seconds", name="mirror")
    assert success == (NOW - timedelta(minutes=2)).timestamp()
    assert ("syncd_job_last_success_timestamp_seconds", frozenset({("name", "omniva")})) not in (
        samples
    )
    assert value(samples, "syncd_job_consecutive_failures", name="push") == 3
    assert value(samples, "syncd_job_consecutive_failures", name="mirror") == 0


def test_cache_records(api: Running) -> None:
    _, samples = scrape(api.client)
    assert value(samples, "syncd_cache_records", entity="companies") == 3
    assert value(samples, "syncd_cache_records", entity="contacts") == 1
    assert value(samples, "syncd_cache_records", entity="devices") == 0
    as_of = value(samples, "syncd_cache_data_as_of_timestamp_seconds", entity="companies")
    assert as_of == datetime(2026, 11, 21, 11, 0, tzinfo=UTC).timestamp()
    assert ("syncd_cache_data_as_of_timestamp_seconds", frozenset({("entity", "devices")})) not in (
        samples
    )
    assert value(samples, "syncd_cache_quarantined_records", entity="devices") == 2
    assert value(samples, "syncd_cache_quarantined_records", entity="companies") == 0
    assert value(samples, "syncd_cache_held_deletes", entity="contacts") == 1


def test_outbox_depth(api: Running) -> None:
    _, samples = scrape(api.client)
    expected = {"pending": 2, "sending": 0, "retry_wait": 1, "done": 1, "dead": 1}
    for status, count in expected.items():
        assert value(samples, "syncd_outbox_requests", status=status) == count
    assert value(samples, "syncd_outbox_oldest_undelivered_age_seconds") == 90


def test_vies_figures(api: Running) -> None:
    _, samples = scrape(api.client)
    assert value(samples, "syncd_vies_cached_answers") == 2
    assert value(samples, "syncd_vies_open_circuits") == 1
    # Today's row only (yesterday's 100 cache hits are not counted), every outcome present.
    today = {"cache": 5, "live": 2, "stale": 0, "local_invalid": 0, "rejected": 0}
    for outcome, count in {**today, "unavailable": 1}.items():
        assert value(samples, "syncd_vies_lookups_today", outcome=outcome) == count


def test_omniva_figures(api: Running) -> None:
    _, samples = scrape(api.client)
    assert value(samples, "syncd_omniva_locations", country="EE", kind="parcel_machine") == 2
    assert value(samples, "syncd_omniva_locations", country="EE", kind="post_office") == 1
    assert value(samples, "syncd_omniva_locations", country="LV", kind="parcel_machine") == 1
    assert value(samples, "syncd_omniva_locations", country="LV", kind="post_office") == 0
    assert value(samples, "syncd_omniva_list_loaded") == 1
    assert value(samples, "syncd_omniva_list_age_seconds") == 3 * 3600
    assert value(samples, "syncd_omniva_list_checked_age_seconds") == 600


def test_an_empty_cache_gives_zeros_and_leaves_unknown_times_out(tmp_path: Path) -> None:
    conn = connect(tmp_path / "empty.sqlite3")
    try:
        families = {f.name: f for f in CacheCollector(lambda: conn, clock=lambda: NOW).collect()}
    finally:
        conn.close()
    assert families["syncd_cache_read_success"].samples[0].value == 1
    assert families["syncd_job_up"].samples == []
    assert families["syncd_omniva_list_loaded"].samples[0].value == 0
    assert families["syncd_omniva_list_age_seconds"].samples == []
    assert families["syncd_omniva_locations"].samples == []
    assert families["syncd_outbox_oldest_undelivered_age_seconds"].samples[0].value == 0
    assert {s.labels["entity"]: s.value for s in families["syncd_cache_records"].samples} == {
        "companies": 0,
        "contacts": 0,
        "devices": 0,
    }


def test_an_unreadable_cache_still_answers_with_the_api_figures(
    connections: ThreadConnections,
) -> None:
    def broken() -> sqlite3.Connection:
        raise sqlite3.OperationalError("disk I/O error")

    for running in serve(connections, MetricsSource(broken)):
        assert running.client.get("/healthz").status_code == 503
        _, samples = scrape(running.client)
        assert value(samples, "syncd_cache_read_success") == 0
        assert "syncd_job_up" not in names(samples)
        assert value(samples, "syncd_api_requests_total", route="healthz", status="503") == 1


# ------------------------------------------------------------------------------------------
# The API's own figures
# ------------------------------------------------------------------------------------------


def test_requests_are_counted_by_route_and_status_never_by_path(api: Running) -> None:
    api.vat.outcomes["EE100931558"] = VatUnavailable("vies_unavailable", 30)
    api.vat.outcomes["EE100931000"] = VatRejected("INVALID_INPUT")
    api.vat.outcomes["EE100931559"] = answer_for("EE100931559", source="cache", age_seconds=60)
    client = api.client
    assert client.get(f"/v1/vat/{NUMBER}?fresh=true").status_code == 200
    assert client.get("/v1/vat/EE100931559").status_code == 200
    assert client.get("/v1/vat/EE100931558").status_code == 503
    assert client.get("/v1/vat/EE100931000").status_code == 422
    assert client.get("/v1/vat/EE10093155%21").status_code == 400
    assert client.get(f"/v1/vat/{NUMBER}?fresh=maybe").status_code == 400
    assert client.get("/v1/parcel-machines?country=EE").status_code == 200
    assert client.get("/healthz").status_code == 503  # the omniva job is stopped
    assert client.get(f"/nothing/{NUMBER}").status_code == 404
    assert client.post(f"/v1/vat/{NUMBER}").status_code == 405
    scrape(api.client)
    text, samples = scrape(api.client)

    requests = {
        (dict(labels)["route"], dict(labels)["status"]): n
        for (name, labels), n in samples.items()
        if name == "syncd_api_requests_total"
    }
    assert requests == {
        ("vat", "200"): 2,
        ("vat", "503"): 1,
        ("vat", "422"): 1,
        ("vat", "400"): 2,
        ("parcel_machines", "200"): 1,
        ("healthz", "503"): 1,
        ("not_found", "404"): 1,
        ("method_not_allowed", "405"): 1,
        ("metrics", "200"): 1,  # the earlier scrape; this one is counted once answered
    }
    assert value(samples, "syncd_api_request_duration_seconds_count", route="vat") == 6
    assert value(samples, "syncd_api_request_duration_seconds_bucket", route="vat", le="+Inf") == 6
    assert (
        value(samples, "syncd_api_request_duration_seconds_bucket", route="vat", le="0.0005") <= 6
    )
    assert value(samples, "syncd_api_request_duration_seconds_sum", route="vat") > 0

    lookups = {"cache": 1, "live": 1, "unavailable": 1, "rejected": 1, "malformed": 1}
    for outcome in ("cache", "live", "stale", "local_invalid", "malformed", "rejected"):
        expected = lookups.get(outcome, 0)
        assert value(samples, "syncd_api_vat_lookups_total", outcome=outcome) == expected

    # Nothing the clients sent, nor what the answers held, nor any stored personal data.
    for secret in (
        NUMBER,
        "805734958",
        "EE100931",
        "100931558",
        "BOOKING",
        "HERENGRACHT",
        "/v1",
        "nothing",
    ):
        assert secret not in text
    for secret in ("Baltic Lasers", "Ringtee", "Mari", "mari@example.com", "Acme", "boom"):
        assert secret not in text


def test_local_answers_count_as_local_invalid(api: Running) -> None:
    api.vat.outcomes["EE123"] = answer_for("EE123", valid=False, source="local")
    assert api.client.get("/v1/vat/EE123").status_code == 200
    _, samples = scrape(api.client)
    assert value(samples, "syncd_api_vat_lookups_total", outcome="local_invalid") == 1


def test_metrics_takes_no_parameters(api: Running) -> None:
    response = api.client.get("/metrics?format=openmetrics")
    assert response.status_code == 400
    assert error_code(response, "/metrics") == "invalid_parameter"


def test_metrics_head_and_other_methods(api: Running) -> None:
    head = api.client.head("/metrics")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == CONTENT_TYPE
    response = api.client.post("/metrics")
    assert response.status_code == 405
    assert error_code(response) == "method_not_allowed"
    assert response.headers["allow"] == "GET, HEAD"


def test_without_a_metrics_source_metrics_is_not_found(connections: ThreadConnections) -> None:
    for running in serve(connections, None):
        response = running.client.get("/metrics")
        assert response.status_code == 404
        assert error_code(response) == "not_found"
        check(running.client.get("/v1/parcel-machines?country=LV"), "/v1/parcel-machines")


def test_each_source_has_its_own_registry(connections: ThreadConnections) -> None:
    first, second = MetricsSource(connections.get), MetricsSource(connections.get)
    first.observe_request("healthz", 200, 0.001)
    assert b'route="healthz"' in first.render()[0]
    assert b'route="healthz"' not in second.render()[0]
    assert REGISTRY.get_sample_value("syncd_api_requests_total") is None
    assert not any(m.name.startswith("syncd_") for m in REGISTRY.collect())


def test_unknown_vat_outcomes_are_not_counted(connections: ThreadConnections) -> None:
    metrics = MetricsSource(connections.get)
    metrics.observe_vat_lookup("EE100931558")
    metrics.observe_vat_lookup(None)
    assert b"EE100931558" not in metrics.render()[0]
