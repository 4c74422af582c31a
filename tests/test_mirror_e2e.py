"""The mirror end to end against the fake Bitrix24 over loopback: the happy paths (a full
mirror, an incremental cycle, deletions found by the sweep or read as events) and what only
Bitrix24 over HTTP shows (requisites and addresses, the requests a cycle makes, a webhook
without event access).

The engine's own guarantees that any vendor shows (quarantine, resyncs, the delete guard,
resuming an interrupted resync, the mapping worker) are tested over the in-memory CRM, without
HTTP, in tests/test_mirror_memory.py.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.connectors.crm.bitrix24.fake_view import adapter_view
from syncd.core.entities import Entity
from syncd.engines.mirror import MirrorEngine
from syncd.engines.verify import differences


def assert_mirrors(conn: sqlite3.Connection, engine: MirrorEngine, fake: FakeBitrix24) -> None:
    assert differences(conn, engine.mappings, adapter_view(fake)) == []


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


