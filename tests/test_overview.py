"""syncd.state.overview (the read model status, /metrics and /healthz share), the mirror look-ups
of syncd.state.references, the control polls and the demo's hand edits."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from syncd.state import (
    control,
    demo_edits,
    health,
    omniva,
    outbox,
    overview,
    references,
    vies_cache,
)
from syncd.state.cache import CacheStore, HeldDeletes, RunCounts
from syncd.state.db import connect, data_version, write_transaction
from syncd.state.migrations import latest_version

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
TYPES = frozenset({"repair"})


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = connect(tmp_path / "cache.sqlite3")
    yield connection
    connection.close()


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def mirror_rows(conn: sqlite3.Connection) -> None:
    """Two companies, a contact of the first and a device of the second, as merged rows."""
    with write_transaction(conn):
        for crm_id in ("1", "2"):
            conn.execute(
                "INSERT INTO companies (crm_id, name, content_hash, synced_at) "
                "VALUES (?, 'Salong OÜ', ?, ?)",
                (crm_id, f"h{crm_id}", stamp(NOW)),
            )
        conn.execute(
            "INSERT INTO contacts (crm_id, first_name, company_id, content_hash, synced_at) "
            "VALUES ('5', 'Mari', '1', 'h5', ?)",
            (stamp(NOW),),
        )
        conn.execute(
            "INSERT INTO devices (crm_id, brand, model, serial_number, company_id, location, "
            "content_hash, synced_at) VALUES ('17', 'Candela', 'GentleMax', 'SN-1', '2', "
            "'Tallinn', 'h17', ?)",
            (stamp(NOW),),
        )


def test_an_empty_cache_reads_as_empty(conn: sqlite3.Connection) -> None:
    seen = overview.read(conn, NOW)
    assert (seen.at, seen.schema_version, seen.schema_expected) == (NOW, latest_version(), 6)
    assert seen.jobs == ()
    figures = {
        e: (f.records, f.data_as_of, f.quarantined, f.held) for e, f in seen.entities.items()
    }
    assert figures == {
        "companies": (0, None, 0, None),
        "contacts": (0, None, 0, None),
        "devices": (0, None, 0, None),
    }
    assert (seen.quarantined, seen.last_run, seen.resync_request, seen.resync_staged) == (
        (),
        None,
        None,
        {},
    )
    assert seen.outbox.by_status == dict.fromkeys(outbox.STATUSES, 0)
    assert seen.outbox.oldest_undelivered_age(NOW) is None
    assert (seen.vies.answers, seen.vies.open_circuits, seen.vies.hit_ratio) == (0, (), None)
    assert (seen.omniva.list_state.loaded, seen.omniva.counts) == (False, {})
    assert seen.libraries == ()


def test_the_overview_reads_every_part_typed_and_in_utc(conn: sqlite3.Connection) -> None:
    mirror_rows(conn)
    store = CacheStore(conn)
    with write_transaction(conn):
        store.set_cursor(
            "companies", datetime(2026, 11, 21, 13, 30, tzinfo=timezone(timedelta(hours=2))),
            now=NOW,
        )
        store.quarantine("devices", "18", "bad serial", now=NOW - timedelta(hours=1))
        store.quarantine("devices", "18", "bad serial", now=NOW - timedelta(minutes=5))
        store.quarantine("contacts", "9", "no name", now=NOW - timedelta(minutes=30))
        store.hold_deletes("devices", ["20", "21"], "too many at once", now=NOW)
        run_id = store.start_run(
            "sweep", ["devices"], started_at=NOW - timedelta(minutes=2), now=NOW
        )
        store.finish_run(run_id, RunCounts(upserted=3, deleted=1), data_as_of=None, details={})
        store.begin_resync(["devices"], now=NOW - timedelta(minutes=20))
        store.save_progress(
            "devices", resume_after="50", server_time=NOW, records=50, complete=False
        )
    health.save(
        conn,
        health.JobHealth("mirror", "failing", NOW - timedelta(hours=1), NOW, "boom", 2, None, NOW),
    )
    request, _ = control.request_resync(
        conn, entity="devices", record_id=None, actor="mari", now=NOW - timedelta(minutes=21)
    )
    outbox.enqueue(
        conn,
        {"idempotency_key": "00000000-0000-4000-8000-000000000001", "request_type": "repair"},
        request_types=TYPES,
        now=NOW - timedelta(seconds=90),
    )
    vies_cache.open_circuit(conn, "global", "IP_BLOCKED", now=NOW, until=NOW + timedelta(hours=1))
    vies_cache.add_counts(conn, {"cache": 3, "live": 1}, vies_cache.day_of(NOW))
    omniva.mark_checked(conn, now=NOW - timedelta(minutes=10))

    seen = overview.read(conn, NOW)

    assert [(j.job, j.state, j.last_success_at, j.updated_at) for j in seen.jobs] == [
        ("mirror", "failing", NOW - timedelta(hours=1), NOW)
    ]
    companies, contacts, devices = (seen.entities[e] for e in ("companies", "contacts", "devices"))
    assert companies.records == 2
    assert companies.data_as_of == datetime(2026, 11, 21, 11, 30, tzinfo=UTC)
    assert companies.data_as_of is not None and companies.data_as_of.tzinfo == UTC
    assert (contacts.records, contacts.quarantined, contacts.held) == (1, 1, None)
    assert (devices.records, devices.quarantined) == (1, 1)
    assert devices.held == HeldDeletes("devices", 2, "too many at once")
    assert [(q.entity, q.crm_id, q.last_seen_at, q.occurrences) for q in seen.quarantined] == [
        ("devices", "18", NOW - timedelta(minutes=5), 2),
        ("contacts", "9", NOW - timedelta(minutes=30), 1),
    ]
    assert seen.last_run is not None
    run = seen.last_run
    assert (run.id, run.kind, run.finished_at, run.upserted, run.deleted) == (
        run_id,
        "sweep",
        NOW,
        3,
        1,
    )
    assert seen.resync_request == request
    assert seen.resync_request is not None
    assert seen.resync_request.requested_at == NOW - timedelta(minutes=21)
    staged = seen.resync_staged["devices"]
    assert (staged.resume_after, staged.pages, staged.records) == ("50", 1, 50)
    assert not staged.complete
    assert (staged.server_time, staged.started_at) == (NOW, NOW - timedelta(minutes=20))
    assert seen.outbox.by_status["pending"] == 1
    assert seen.outbox.oldest_undelivered_age(NOW) == 90.0
    assert [(c.scope, c.open_until) for c in seen.vies.open_circuits] == [
        ("global", NOW + timedelta(hours=1))
    ]
    assert (seen.vies.today, seen.vies.lookups_24h, seen.vies.hit_ratio) == (
        {"cache": 3, "live": 1},
        4,
        0.75,
    )
    assert seen.omniva.list_state.checked_at == NOW - timedelta(minutes=10)


def test_health_holds_jobs_open_circuits_and_the_schema(conn: sqlite3.Connection) -> None:
    health.save(conn, health.JobHealth("push", "stopped", None, NOW, "no auth", 1, None, NOW))
    vies_cache.open_circuit(conn, "EE", "MS_UNAVAILABLE", now=NOW, until=NOW + timedelta(minutes=1))
    vies_cache.open_circuit(conn, "global", "IP_BLOCKED", now=NOW, until=NOW - timedelta(minutes=1))
    seen = overview.health(conn, NOW)
    assert [(j.job, j.state) for j in seen.jobs] == [("push", "stopped")]
    assert [c.scope for c in seen.open_circuits] == ["EE"]
    assert seen.schema_version == latest_version()


def test_job_health_times_round_trip_to_the_second(conn: sqlite3.Connection) -> None:
    moment = NOW + timedelta(microseconds=750_000)
    health.save(conn, health.JobHealth("mirror", "ok", moment, None, None, 0, moment, moment))
    saved = health.load(conn, "mirror")
    assert saved is not None
    assert (saved.last_success_at, saved.next_run_at, saved.updated_at) == (NOW, NOW, NOW)
    stored = conn.execute("SELECT last_success_at, updated_at FROM job_health").fetchone()
    assert stored == ("2026-11-21T12:00:00Z", "2026-11-21T12:00:00Z")


def test_the_mirror_look_ups_of_a_service_request(conn: sqlite3.Connection) -> None:
    mirror_rows(conn)
    assert references.device(conn, "17") == references.DeviceRef(
        "Candela", "GentleMax", "SN-1", "2"
    )
    assert references.device(conn, "18") is None
    assert references.contact(conn, "5") == references.ContactRef("1")
    assert references.contact(conn, "6") is None
    # Not certain while the table was never mirrored; certain once its cursor exists.
    assert references.unknown_reference(conn, "devices", "18") is False
    with write_transaction(conn):
        CacheStore(conn).set_cursor("devices", NOW, now=NOW)
    assert references.unknown_reference(conn, "devices", "18") is True
    assert references.unknown_reference(conn, "devices", "17") is False
    with pytest.raises(ValueError, match="not a mirrored table"):
        references.unknown_reference(conn, "companies", "1")


def test_fingerprints_and_quarantined_ids(conn: sqlite3.Connection) -> None:
    mirror_rows(conn)
    store = CacheStore(conn)
    assert store.fingerprints("devices") == {"17": ("h17", ("2", None))}
    assert store.fingerprints("companies") == {"1": ("h1", ()), "2": ("h2", ())}
    with write_transaction(conn):
        store.quarantine("devices", "18", "bad serial", now=NOW)
        store.quarantine("devices", "19", "bad serial", now=NOW)
    assert store.quarantined_ids("devices") == {"18", "19"}
    assert store.quarantined_ids("contacts") == set()
    assert store.quarantine_counts() == {"devices": 2}


def test_the_daemon_polls_control_requests_without_writing(tmp_path: Path) -> None:
    conn = connect(tmp_path / "cache.sqlite3")
    assert control.has_pending(conn) is False
    request, _ = control.request_resync(
        conn, entity="all", record_id=None, actor="test", now=NOW
    )
    assert control.has_pending(conn) is True
    assert control.running_ids(conn) == []
    claimed = control.claim_pending(conn, now=NOW)
    assert claimed is not None and claimed.id == request.id and claimed.status == "running"
    assert (control.has_pending(conn), control.running_ids(conn)) == (False, [request.id])
    assert control.fail_abandoned(conn) == 1
    assert control.has_pending(conn) is True
    conn.close()


def test_data_version_moves_when_another_connection_commits(tmp_path: Path) -> None:
    watcher, writer = connect(tmp_path / "c.sqlite3"), connect(tmp_path / "c.sqlite3")
    before = data_version(watcher)
    assert data_version(watcher) == before
    health.save(writer, health.JobHealth("mirror", "ok", NOW, None, None, 0, None, NOW))
    assert data_version(watcher) != before
    watcher.close()
    writer.close()


def test_the_demo_ages_answers_and_damages_devices(conn: sqlite3.Connection) -> None:
    mirror_rows(conn)

    class Answer:
        country_code, vat_number, valid = "LV", "40003245752", True
        name = address = consultation_number = None
        request_date = "2026-11-21"

    vies_cache.put(conn, Answer(), NOW)
    assert demo_edits.age_vies_answers(conn, "LV", NOW - timedelta(hours=36)) == 1
    assert demo_edits.age_vies_answers(conn, "EE", NOW) == 0
    stored = vies_cache.get(conn, "LV", "40003245752")
    assert stored is not None and stored.fetched_at == NOW - timedelta(hours=36)
    assert demo_edits.damage_devices(conn, 5) == 1
    assert CacheStore(conn).fingerprints("devices") == {"17": ("damaged", ("2", None))}
