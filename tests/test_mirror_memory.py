"""The mirror engine over the in-memory CRM: no HTTP, no fake server. The same guarantees as
over Bitrix24's fake (tests/test_mirror_e2e.py): a full mirror equals the CRM record by record;
an incremental cycle takes changes; deletions arrive as events (or through the sweep); the
delete guard holds a mass deletion, and a truncated listing; a bad record is quarantined; one
record, or a whole entity, is resynced; an interrupted full resync resumes after its last
committed page; large listings are mapped in a worker process.

Most tests build the engine as the daemon does, through the vendor registry by name
(``[crm] vendor = "memory"``, :func:`syncd.runtime.build_engine`); a few build it directly over
:class:`MemoryAdapter` with a small page size.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.config import Settings
from syncd.connectors.crm.memory import MemoryAdapter, MemoryRecords
from syncd.connectors.crm.memory.vendor import VENDOR as MEMORY
from syncd.core.entities import Entity
from syncd.core.errors import UpstreamUnavailableError
from syncd.engines.mirror import MirrorEngine, StopRequested, apply_held_deletes
from syncd.engines.verify import differences
from syncd.mappings.loader import load_mapping_set
from syncd.runtime import build_engine
from syncd.state.cache import CacheStore
from syncd.state.db import connect
from tests.conftest import RecordingStop, memory_settings

MAPPINGS = load_mapping_set("memory")


@pytest.fixture
def records() -> MemoryRecords:
    crm = MemoryRecords()
    crm.seed(companies=30, contacts=90, devices=70, seed=4)
    return crm


@pytest.fixture
def engine(tmp_path: Path, records: MemoryRecords) -> Iterator[MirrorEngine]:
    conn = connect(tmp_path / "cache.sqlite3")
    yield MirrorEngine(conn, MemoryAdapter(records, page_size=20), MAPPINGS)
    conn.close()


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    """The in-memory vendor by name, seeded as the Bitrix24 fake of the e2e tests is (60
    companies, 300 contacts, 150 devices; pages of 50). Overrides conftest's, so its ``cache``
    opens this cache."""
    store = f"mirror-{tmp_path.name}"
    yield memory_settings(tmp_path, store, companies=60, contacts=300, devices=150, seed=3)
    MEMORY.forget(store)


@pytest.fixture
def crm(settings: Settings) -> MemoryRecords:
    """The records of the store ``settings`` names (what the CRM holds)."""
    return MEMORY.store(settings.crm.vendor_settings).records


@pytest.fixture
def mirror(
    settings: Settings, cache: sqlite3.Connection, stop: RecordingStop
) -> Iterator[MirrorEngine]:
    """The mirror engine built as the daemon builds it, through the registry by name."""
    engine = build_engine(settings, cache, stop=stop)
    yield engine
    engine.adapter.close()


def view(records: MemoryRecords) -> dict[str, list[dict[str, object]]]:
    return {e.value: list(records.records[e].values()) for e in Entity}


def count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def assert_mirrors(conn: sqlite3.Connection, engine: MirrorEngine, records: MemoryRecords) -> None:
    assert differences(conn, engine.mappings, view(records)) == []


def ids(records: MemoryRecords, entity: Entity) -> list[str]:
    """The CRM's record IDs of ``entity``, in ID order."""
    return sorted(records.records[entity], key=int)


def nonzero(counts: dict[Any, int]) -> dict[Any, int]:
    return {key: value for key, value in counts.items() if value}


def interrupt_after_pages(engine: MirrorEngine, stop: RecordingStop, pages: int) -> None:
    """Run a cycle and request shutdown once ``pages`` pages are committed (a clean stop)."""
    committed = 0

    def progress(entity: str, done: int, total: int | None) -> None:
        nonlocal committed
        if done == 0:
            return  # a full resync first reports each entity's count, nothing done yet
        committed += 1
        if committed == pages:
            stop.set()

    engine.progress = progress
    with pytest.raises(StopRequested):
        engine.run_cycle()


def test_the_first_cycle_mirrors_everything(engine: MirrorEngine, records: MemoryRecords) -> None:
    report = engine.run_cycle()
    assert report.kind == "full"
    assert differences(engine.conn, MAPPINGS, view(records)) == []
    assert (count(engine.conn, "companies"), count(engine.conn, "contacts"),
            count(engine.conn, "devices")) == (30, 90, 70)


def test_an_incremental_cycle_takes_changes_and_deletion_events(
    engine: MirrorEngine, records: MemoryRecords
) -> None:
    engine.run_cycle()
    records.update(Entity.DEVICES, "150", location="Tartu")
    created = records.create(Entity.CONTACTS, first_name="New", last_name="Client")
    records.delete(Entity.DEVICES, "160")
    report = engine.run_cycle()
    assert report.kind == "incremental"
    assert differences(engine.conn, MAPPINGS, view(records)) == []
    assert engine.conn.execute("SELECT location FROM devices WHERE crm_id = '150'").fetchone() \
        == ("Tartu",)
    assert engine.conn.execute(
        "SELECT 1 FROM contacts WHERE crm_id = ?", (created,)).fetchone()
    assert engine.adapter.read_deletions().deleted == {}  # acknowledged with the cycle


def test_the_delete_guard_holds_a_mass_deletion_seen_by_the_sweep(
    mirror: MirrorEngine, cache: sqlite3.Connection, crm: MemoryRecords
) -> None:
    mirror.run_cycle()
    doomed = ids(crm, Entity.DEVICES)[:40]
    for device_id in doomed:
        crm.delete(Entity.DEVICES, device_id)
    crm.deletions.clear()  # only the sweep can tell (as over a Bitrix24 webhook)
    report = mirror.sweep()
    assert nonzero(report.held) == {Entity.DEVICES: 40}
    assert count(cache, "devices") == 150  # held, still visible
    assert count(cache, "held_deletes") == 40
    held = CacheStore(cache).held_deletes(Entity.DEVICES)
    assert sorted(held, key=int) == doomed
    assert apply_held_deletes(cache, Entity.DEVICES) == 40
    assert_mirrors(cache, mirror, crm)


def test_the_sweep_finds_deletions(
    mirror: MirrorEngine, cache: sqlite3.Connection, crm: MemoryRecords
) -> None:
    mirror.run_cycle()
    crm.delete(Entity.DEVICES, ids(crm, Entity.DEVICES)[0])
    crm.delete(Entity.COMPANIES, ids(crm, Entity.COMPANIES)[-1])
    crm.deletions.clear()  # only the sweep can tell
    report = mirror.sweep()
    assert nonzero(report.deleted) == {Entity.DEVICES: 1, Entity.COMPANIES: 1}
    assert_mirrors(cache, mirror, crm)


def test_sweep_fetches_records_the_cache_misses(
    mirror: MirrorEngine, cache: sqlite3.Connection, crm: MemoryRecords
) -> None:
    mirror.run_cycle()
    cache.execute("DELETE FROM devices WHERE crm_id IN (SELECT crm_id FROM devices LIMIT 3)")
    report = mirror.sweep()
    assert report.upserted[Entity.DEVICES] == 3
    assert_mirrors(cache, mirror, crm)


def test_delete_guard_holds_after_a_truncated_listing(
    mirror: MirrorEngine, cache: sqlite3.Connection, crm: MemoryRecords
) -> None:
    mirror.run_cycle()
    crm.fail("list_ids", "truncated", after_pages=1, times=len(Entity))  # first page only
    report = mirror.sweep()
    assert report.held[Entity.CONTACTS] == 250  # 300 listed by count, 50 seen
    assert sum(report.deleted.values()) == 0
    reason = cache.execute("SELECT reason FROM held_deletes LIMIT 1").fetchone()[0]
    assert "truncated" in reason


def test_a_bad_record_is_quarantined_and_the_rest_applies(
    mirror: MirrorEngine, cache: sqlite3.Connection, crm: MemoryRecords
) -> None:
    mirror.run_cycle()
    first, second = ids(crm, Entity.CONTACTS)[:2]
    crm.update(Entity.CONTACTS, first, birth_date="31.02.1985")
    crm.update(Entity.CONTACTS, second, first_name="Renamed")
    report = mirror.run_cycle()
    assert report.quarantined[Entity.CONTACTS] == 1
    reason = cache.execute("SELECT reason FROM quarantine WHERE crm_id = ?", (first,)).fetchone()
    assert reason == ("birth_date: not an ISO 8601 date",)
    assert cache.execute(
        "SELECT first_name FROM contacts WHERE crm_id = ?", (second,)
    ).fetchone() == ("Renamed",)
    crm.update(Entity.CONTACTS, first, birth_date="1985-02-28T00:00:00+02:00")
    mirror.run_cycle()
    assert count(cache, "quarantine") == 0


def test_resync_record_refreshes_and_removes(
    mirror: MirrorEngine, cache: sqlite3.Connection, crm: MemoryRecords
) -> None:
    mirror.run_cycle()
    device_id = ids(crm, Entity.DEVICES)[0]
    cache.execute(
        "UPDATE devices SET location = 'wrong', content_hash = 'x' WHERE crm_id = ?", (device_id,)
    )
    assert mirror.resync_record(Entity.DEVICES, device_id).upserted[Entity.DEVICES] == 1
    crm.delete(Entity.DEVICES, device_id)
    assert mirror.resync_record(Entity.DEVICES, device_id).deleted[Entity.DEVICES] == 1
    assert_mirrors(cache, mirror, crm)


def test_full_resync_repairs_a_damaged_mirror(
    mirror: MirrorEngine, cache: sqlite3.Connection, crm: MemoryRecords
) -> None:
    mirror.run_cycle()
    cache.execute("UPDATE devices SET brand = 'x', content_hash = 'x' WHERE rowid <= 5")
    cache.execute(
        "INSERT INTO devices (crm_id, content_hash, synced_at) VALUES ('999999', 'x', 'x')"
    )
    report = mirror.run_full([Entity.DEVICES])
    assert report.upserted[Entity.DEVICES] == 5
    assert report.deleted[Entity.DEVICES] == 1
    assert_mirrors(cache, mirror, crm)


def resumed_listings(crm: MemoryRecords, since: int) -> list[tuple[Entity, str | None]]:
    """The full listings (``list_changed``) asked for since listing number ``since``: entity
    and where each resumed."""
    return [(listing.entity, listing.resume_after) for listing in crm.listings[since:]
            if listing.operation == "list_changed"]


def test_interrupted_full_resync_resumes_after_its_last_page(
    mirror: MirrorEngine, cache: sqlite3.Connection, crm: MemoryRecords, stop: RecordingStop
) -> None:
    interrupt_after_pages(mirror, stop, 3)
    assert count(cache, "contacts") == 0  # nothing swapped
    staged = cache.execute("SELECT sum(records) FROM resync_progress").fetchone()[0]
    assert staged == 110  # companies 50 + 10, then contacts 50
    stop.clear()
    mirror.progress = None
    before = len(crm.listings)
    report = mirror.run_cycle()
    assert report.kind == "full"
    resumed = resumed_listings(crm, before)
    assert not any(entity == Entity.COMPANIES for entity, _ in resumed)  # they were complete
    first_contacts = next(after for entity, after in resumed if entity == Entity.CONTACTS)
    assert first_contacts is not None and int(first_contacts) > 0  # resumed after its last page
    assert_mirrors(cache, mirror, crm)


def test_a_full_resync_broken_off_by_the_crm_resumes_after_its_last_page(
    mirror: MirrorEngine, cache: sqlite3.Connection, crm: MemoryRecords
) -> None:
    """As above, but the CRM fails in the middle of the contacts listing instead of a stop."""
    crm.fail("list_changed", "unavailable", after_pages=1, entity=Entity.CONTACTS)
    with pytest.raises(UpstreamUnavailableError):
        mirror.run_cycle()
    assert count(cache, "contacts") == 0  # nothing swapped
    staged = cache.execute("SELECT sum(records) FROM resync_progress").fetchone()[0]
    assert staged == 110  # companies 50 + 10, then the contacts' first page
    before = len(crm.listings)
    report = mirror.run_cycle()
    assert report.kind == "full"
    resumed = resumed_listings(crm, before)
    assert not any(entity == Entity.COMPANIES for entity, _ in resumed)
    assert resumed[0] == (Entity.CONTACTS, ids(crm, Entity.CONTACTS)[49])
    assert_mirrors(cache, mirror, crm)


def test_large_listings_are_mapped_in_a_worker_process(
    mirror: MirrorEngine, cache: sqlite3.Connection, crm: MemoryRecords, stop: RecordingStop,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from syncd.engines import mirror as mirror_module

    mirror.options = replace(mirror.options, map_worker_threshold=1)
    started: list[object] = []
    real_worker = mirror_module.MappingWorker

    def counting_worker(mappings: Any) -> Any:
        worker = real_worker(mappings)
        started.append(worker)
        return worker

    monkeypatch.setattr(mirror_module, "MappingWorker", counting_worker)
    bad = ids(crm, Entity.CONTACTS)[7]
    crm.update(Entity.CONTACTS, bad, languages=["not a language!"])
    interrupt_after_pages(mirror, stop, 4)
    stop.clear()
    mirror.progress = None
    report = mirror.run_cycle()
    assert report.kind == "full"
    assert len(started) == 2  # one worker per full-resync run, closed at its end
    assert cache.execute("SELECT crm_id, reason FROM quarantine").fetchall() == [
        (bad, "languages: not an ISO 639 language code")]
    assert_mirrors(cache, mirror, crm)
