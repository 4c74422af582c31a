"""The cache schema, migrations and the store's merge semantics, on real SQLite files."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncd.mappings.loader import load_mapping_set
from syncd.state.cache import CacheStore
from syncd.state.db import connect, write_transaction
from syncd.state.migrations import current_version, latest_version

MAPPINGS = load_mapping_set("bitrix24")
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return connect(tmp_path / "cache.sqlite3")


def company(crm_id: str, title: str = "Salong OÜ") -> object:
    return MAPPINGS["companies"].map(
        {"ID": crm_id, "TITLE": title, "DATE_MODIFY": "2026-11-21T10:00:00+02:00"}
    )


def device(crm_id: str, company_id: int | None, location: str = "Tallinn") -> object:
    return MAPPINGS["devices"].map(
        {
            "id": int(crm_id),
            "companyId": company_id,
            "updatedTime": "2026-11-21T10:00:00+02:00",
            "ufCrm8Location": location,
        }
    )


def test_connection_settings(conn: sqlite3.Connection) -> None:
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    assert current_version(conn) == latest_version() >= 1


def test_reopening_does_not_migrate_twice(tmp_path: Path) -> None:
    first = connect(tmp_path / "c.sqlite3")
    first.execute("INSERT INTO audit_log (at, actor, action) VALUES ('t', 'a', 'x')")
    first.close()
    again = connect(tmp_path / "c.sqlite3")
    assert again.execute("SELECT count(*) FROM audit_log").fetchone()[0] == 1


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = connect(tmp_path / "c.sqlite3")
    conn.execute(f"PRAGMA user_version = {latest_version() + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this syncd"):
        connect(tmp_path / "c.sqlite3")


def merge(store: CacheStore, entity: str, records: list[object], run_id: int = 1) -> int:
    with write_transaction(store.conn):
        store.ensure_scratch()
        store.clear_staging("scratch", entity)
        store.stage("scratch", entity, records)  # type: ignore[arg-type]
        return store.merge("scratch", entity, run_id=run_id, now=NOW)


def test_merge_inserts_updates_and_skips_unchanged(conn: sqlite3.Connection) -> None:
    store = CacheStore(conn)
    assert merge(store, "companies", [company("1"), company("2")]) == 2
    assert merge(store, "companies", [company("1"), company("2")]) == 0
    assert merge(store, "companies", [company("1", "Uus Nimi AS")]) == 1
    assert (
        conn.execute("SELECT name FROM companies WHERE crm_id = '1'").fetchone()[0] == "Uus Nimi AS"
    )


def test_links_to_unknown_records_are_null_and_resolve_later(conn: sqlite3.Connection) -> None:
    store = CacheStore(conn)
    merge(store, "devices", [device("10", company_id=7)])
    assert conn.execute("SELECT company_id FROM devices").fetchone()[0] is None
    merge(store, "companies", [company("7")])
    merge(store, "devices", [device("10", company_id=7)])
    assert conn.execute("SELECT company_id FROM devices").fetchone()[0] == "7"


def test_deleting_a_company_unlinks_its_devices(conn: sqlite3.Connection) -> None:
    store = CacheStore(conn)
    merge(store, "companies", [company("7")])
    merge(store, "devices", [device("10", company_id=7)])
    with write_transaction(conn):
        assert store.delete("companies", ["7"]) == 1
    assert conn.execute("SELECT crm_id, company_id FROM devices").fetchall() == [("10", None)]


def test_cursor_never_moves_backwards(conn: sqlite3.Connection) -> None:
    store = CacheStore(conn)
    later = datetime(2026, 11, 21, 12, tzinfo=UTC)
    with write_transaction(conn):
        store.set_cursor("contacts", later, now=NOW)
        store.set_cursor("contacts", later - timedelta(hours=1), now=NOW)
    assert store.cursor("contacts") == later


def test_failed_transaction_leaves_nothing(conn: sqlite3.Connection) -> None:
    store = CacheStore(conn)
    with pytest.raises(RuntimeError), write_transaction(conn):
        store.ensure_scratch()
        store.stage("scratch", "companies", [company("1")])  # type: ignore[list-item]
        store.merge("scratch", "companies", run_id=1, now=NOW)
        store.set_cursor("companies", datetime.now(UTC), now=NOW)
        raise RuntimeError("crash before commit")
    assert store.count("companies") == 0
    assert store.cursor("companies") is None


def test_quarantine_is_released_when_the_record_maps(conn: sqlite3.Connection) -> None:
    store = CacheStore(conn)
    with write_transaction(conn):
        store.quarantine("companies", "1", "name: required value missing", now=NOW)
        store.quarantine("companies", "1", "name: required value missing", now=NOW)
    assert conn.execute("SELECT occurrences FROM quarantine").fetchone()[0] == 2
    merge(store, "companies", [company("1")])
    assert conn.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 0


def test_json_columns_are_valid_json(conn: sqlite3.Connection) -> None:
    store = CacheStore(conn)
    merge(store, "devices", [device("1", None)])
    row = conn.execute("SELECT json_array_length(handpieces) FROM devices").fetchone()
    assert row[0] == 0
