"""The mirror end to end against the fake Bitrix24 over loopback."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.connectors.crm.bitrix24.fake_view import adapter_view
from syncd.core.entities import Entity
from syncd.engines.mirror import MirrorEngine, StopRequested, apply_held_deletes
from syncd.engines.verify import differences
from syncd.state.cache import CacheStore
from tests.conftest import RecordingStop


def assert_mirrors(conn: sqlite3.Connection, engine: MirrorEngine, fake: FakeBitrix24) -> None:
    assert differences(conn, engine.mappings, adapter_view(fake)) == []


def interrupt_after_pages(engine: MirrorEngine, stop: RecordingStop, pages: int) -> None:
    """Run a cycle and request shutdown once ``pages`` pages are committed (a clean stop)."""
    committed = 0

    def count(entity: str, done: int, total: int | None) -> None:
        nonlocal committed
        committed += 1
        if committed == pages:
            stop.set()

    engine.progress = count
    with pytest.raises(StopRequested):
        engine.run_cycle()


def nonzero(counts: dict[Any, int]) -> dict[Any, int]:
    return {key: value for key, value in counts.items() if value}


def list_requests(fake: FakeBitrix24, since: int) -> list[str]:
    return [method for method, _ in fake.request_log[since:] if method.endswith(".list")]


def test_first_cycle_is_a_full_mirror(
    engine: MirrorEngine, cache: sqlite3.Connection, fake: FakeBitrix24
) -> None:
    report = engine.run_cycle()
    assert report.kind == "full"
    assert cache.execute("SELECT count(*) FROM contacts").fetchone()[0] == 300
    assert_mirrors(cache, engine, fake)
    runs = cache.execute("SELECT kind, data_as_of FROM sync_runs").fetchall()
    assert runs[0][0] == "full" and runs[0][1] is not None
    assert {row[0] for row in cache.execute("SELECT entity FROM cursors")} == set(Entity)


def test_company_fields_requisites_and_addresses(
    engine: MirrorEngine, cache: sqlite3.Connection
) -> None:
    engine.run_cycle()
    row = cache.execute(
        "SELECT count(*), count(legal_name), count(registration_number), count(country), "
        "sum(json_array_length(addresses) > 0) FROM companies"
    ).fetchone()
    total, legal, registration, country, with_address = row
    assert total == legal == registration == country == 60
    assert with_address == 60
    vat = cache.execute("SELECT vat_number FROM companies WHERE vat_number IS NOT NULL").fetchall()
    assert vat and all(v[0][:2] in ("EE", "LV", "LT") for v in vat)


def test_incremental_cycle_applies_creates_and_updates(
    engine: MirrorEngine, cache: sqlite3.Connection, fake: FakeBitrix24
) -> None:
    engine.run_cycle()
    fake.mutate_random(creates=10, updates=25, deletes=0, seed=11)
    report = engine.run_cycle()
    assert report.kind == "incremental"
    assert sum(report.upserted.values()) >= 30
    assert_mirrors(cache, engine, fake)


def test_noop_incremental_lists_each_entity_once(engine: MirrorEngine, fake: FakeBitrix24) -> None:
    engine.run_cycle()
    before = len(fake.request_log)
    report = engine.run_cycle()
    assert report.kind == "incremental"
    assert sorted(list_requests(fake, before)) == [
        "crm.company.list",
        "crm.contact.list",
        "crm.item.list",
    ]


def test_sweep_finds_deletions(
    engine: MirrorEngine, cache: sqlite3.Connection, fake: FakeBitrix24
) -> None:
    engine.run_cycle()
    fake.delete("devices", sorted(fake.records("devices"), key=int)[0])
    fake.delete("companies", sorted(fake.records("companies"), key=int)[-1])
    report = engine.sweep()
    assert nonzero(report.deleted) == {Entity.DEVICES: 1, Entity.COMPANIES: 1}
    assert_mirrors(cache, engine, fake)


def test_sweep_fetches_records_the_cache_misses(
    engine: MirrorEngine, cache: sqlite3.Connection, fake: FakeBitrix24
) -> None:
    engine.run_cycle()
    cache.execute("DELETE FROM devices WHERE crm_id IN (SELECT crm_id FROM devices LIMIT 3)")
    report = engine.sweep()
    assert report.upserted[Entity.DEVICES] == 3
    assert_mirrors(cache, engine, fake)


def test_delete_guard_holds_a_mass_deletion(
    engine: MirrorEngine, cache: sqlite3.Connection, fake: FakeBitrix24
) -> None:
    engine.run_cycle()
    doomed = sorted(fake.records("devices"), key=int)[:40]
    for device_id in doomed:
        fake.delete("devices", device_id)
    report = engine.sweep()
    assert nonzero(report.held) == {Entity.DEVICES: 40}
    assert cache.execute("SELECT count(*) FROM devices").fetchone()[0] == 150
    held = CacheStore(cache).held_deletes(Entity.DEVICES)
    assert sorted(held, key=int) == doomed
    assert apply_held_deletes(cache, Entity.DEVICES) == 40
    assert_mirrors(cache, engine, fake)


def test_delete_guard_holds_after_a_truncated_listing(
    engine: MirrorEngine, cache: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.run_cycle()
    real = engine.adapter.list_ids

    def first_page_only(entity: Entity) -> Any:
        yield next(iter(real(entity)))

    monkeypatch.setattr(engine.adapter, "list_ids", first_page_only)
    report = engine.sweep()
    assert report.held[Entity.CONTACTS] == 250  # 300 listed by count, 50 seen
    assert sum(report.deleted.values()) == 0
    reason = cache.execute("SELECT reason FROM held_deletes LIMIT 1").fetchone()[0]
    assert "truncated" in reason


def test_a_bad_record_is_quarantined_and_the_rest_applies(
    engine: MirrorEngine, cache: sqlite3.Connection, fake: FakeBitrix24
) -> None:
    engine.run_cycle()
    first, second = sorted(fake.records("contacts"), key=int)[:2]
    fake.update("contacts", first, BIRTHDATE="31.02.1985")
    fake.update("contacts", second, NAME="Renamed")
    report = engine.run_cycle()
    assert report.quarantined[Entity.CONTACTS] == 1
    reason = cache.execute("SELECT reason FROM quarantine WHERE crm_id = ?", (first,)).fetchone()
    assert reason == ("birth_date: not an ISO 8601 date",)
    assert cache.execute(
        "SELECT first_name FROM contacts WHERE crm_id = ?", (second,)
    ).fetchone() == ("Renamed",)
    fake.update("contacts", first, BIRTHDATE="1985-02-28T00:00:00+02:00")
    engine.run_cycle()
    assert cache.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 0


def test_resync_record_refreshes_and_removes(
    engine: MirrorEngine, cache: sqlite3.Connection, fake: FakeBitrix24
) -> None:
    engine.run_cycle()
    device_id = sorted(fake.records("devices"), key=int)[0]
    cache.execute(
        "UPDATE devices SET location = 'wrong', content_hash = 'x' WHERE crm_id = ?", (device_id,)
    )
    assert engine.resync_record(Entity.DEVICES, device_id).upserted[Entity.DEVICES] == 1
    fake.delete("devices", device_id)
    assert engine.resync_record(Entity.DEVICES, device_id).deleted[Entity.DEVICES] == 1
    assert_mirrors(cache, engine, fake)


def test_full_resync_repairs_a_damaged_mirror(
    engine: MirrorEngine, cache: sqlite3.Connection, fake: FakeBitrix24
) -> None:
    engine.run_cycle()
    cache.execute("UPDATE devices SET brand = 'x', content_hash = 'x' WHERE rowid <= 5")
    cache.execute(
        "INSERT INTO devices (crm_id, content_hash, synced_at) VALUES ('999999', 'x', 'x')"
    )
    report = engine.run_full([Entity.DEVICES])
    assert report.upserted[Entity.DEVICES] == 5
    assert report.deleted[Entity.DEVICES] == 1
    assert_mirrors(cache, engine, fake)


def test_interrupted_full_resync_resumes_after_its_last_page(
    engine: MirrorEngine, cache: sqlite3.Connection, fake: FakeBitrix24, stop: RecordingStop
) -> None:
    interrupt_after_pages(engine, stop, 3)
    assert cache.execute("SELECT count(*) FROM contacts").fetchone()[0] == 0  # nothing swapped
    staged = cache.execute("SELECT sum(records) FROM resync_progress").fetchone()[0]
    assert staged == 110  # companies 50 + 10, then contacts 50
    stop.clear()
    engine.progress = None
    before = len(fake.request_log)
    report = engine.run_cycle()
    assert report.kind == "full"
    resumed = [(m, p) for m, p in fake.request_log[before:]
               if m.endswith(".list") and int(p.get("start", 0)) == -1]  # listings, not counts
    assert not any(m == "crm.company.list" for m, _ in resumed)  # companies were complete
    first_contacts = next(p for m, p in resumed if m == "crm.contact.list")
    assert int(first_contacts["filter"][">ID"]) > 0  # resumed after its last page
    assert_mirrors(cache, engine, fake)


def test_deletion_events_are_applied_without_a_sweep(tmp_path: Any) -> None:
    from syncd.runtime import build_engine, open_cache
    from tests.conftest import make_settings

    with FakeBitrix24(
        seed=5, companies=10, contacts=40, devices=20, token="t", events_allowed=True
    ) as fake:
        settings = make_settings(tmp_path, fake)
        conn = open_cache(settings)
        engine = build_engine(settings, conn)
        engine.run_cycle()
        engine.run_cycle()  # drains events from the initial load, if any
        victim = sorted(fake.records("contacts"), key=int)[0]
        fake.delete("contacts", victim)
        report = engine.run_cycle()
        assert report.deleted[Entity.CONTACTS] == 1
        assert_mirrors(conn, engine, fake)
        before = len(fake.request_log)
        engine.run_cycle()
        assert "event.offline.clear" not in [m for m, _ in fake.request_log[before:]]
        engine.adapter.close()
        conn.close()


def test_webhook_without_event_access_falls_back_to_sweeps(
    engine: MirrorEngine, fake: FakeBitrix24
) -> None:
    engine.run_cycle()
    engine.run_cycle()
    before = len(fake.request_log)
    engine.run_cycle()
    assert "event.offline.get" not in [m for m, _ in fake.request_log[before:]]


def test_large_listings_are_mapped_in_a_worker_process(
    engine: MirrorEngine, cache: sqlite3.Connection, fake: FakeBitrix24, stop: RecordingStop,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from syncd.engines import mirror

    engine.options = replace(engine.options, map_worker_threshold=1)
    started: list[object] = []
    real_worker = mirror.MappingWorker

    def counting_worker(mappings: Any) -> Any:
        worker = real_worker(mappings)
        started.append(worker)
        return worker

    monkeypatch.setattr(mirror, "MappingWorker", counting_worker)
    bad = sorted(fake.records("contacts"), key=int)[7]
    fake.update("contacts", bad, UF_CRM_LANGUAGES=["not a language!"])
    interrupt_after_pages(engine, stop, 4)
    stop.clear()
    engine.progress = None
    report = engine.run_cycle()
    assert report.kind == "full"
    assert len(started) == 2  # one worker per full-resync run, closed at its end
    assert cache.execute("SELECT crm_id, reason FROM quarantine").fetchall() == [
        (bad, "languages: not an ISO 639 language code")]
    assert_mirrors(cache, engine, fake)
