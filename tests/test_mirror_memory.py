"""The mirror engine over the in-memory CRM: no HTTP, no fake server. The same guarantees as
over Bitrix24's fake (tests/test_mirror_e2e.py): a full mirror equals the CRM record by record;
an incremental cycle takes changes; deletions arrive as events (or through the sweep); the
delete guard holds a mass deletion."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.connectors.crm.memory import MemoryAdapter, MemoryRecords
from syncd.core.entities import Entity
from syncd.engines.mirror import MirrorEngine
from syncd.engines.verify import differences
from syncd.mappings.loader import load_mapping_set
from syncd.state.db import connect

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


def view(records: MemoryRecords) -> dict[str, list[dict[str, object]]]:
    return {e.value: list(records.records[e].values()) for e in Entity}


def count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


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
    tmp_path: Path, records: MemoryRecords
) -> None:
    conn = connect(tmp_path / "guard.sqlite3")
    adapter = MemoryAdapter(records, page_size=20)
    engine = MirrorEngine(conn, adapter, MAPPINGS)
    engine.run_cycle()
    for device in sorted(records.records[Entity.DEVICES], key=int)[:30]:
        records.delete(Entity.DEVICES, device)
    records.deletions.clear()  # only the sweep can tell
    engine.sweep()
    assert count(conn, "devices") == 70  # held, still visible
    assert count(conn, "held_deletes") == 30
    conn.close()
