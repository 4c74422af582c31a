"""Erasure against the mirror, end to end with the fake Bitrix24 over loopback: an erased person
whom the CRM still holds is not brought back by incremental cycles, full resyncs or ID sweeps;
once the CRM deletes them the suppression is lifted; ``unsuppress`` lets them back. The subject
commands themselves never send the CRM a request.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from syncd.cli.main import main
from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.core.clock import utc_now
from syncd.core.entities import ENTITY_ORDER
from syncd.engines.mirror import MirrorEngine
from syncd.state import outbox, suppressions
from tests.conftest import write_config

ROOT = Path(__file__).parents[1]
SCHEMA = json.loads((ROOT / "docs" / "subject-export.schema.json").read_text())
EMAIL, PHONE = "Ulle.Erasmus@Salong-Test.ee", "+372 5999 8877"
PERSON_TEXT = ("ulle.erasmus@salong-test.ee", "5999 8877", "59998877", "Erasmus", "Zenobia")
# Columns that hold a contact's or a device's CRM ID, with the entity filter where one is needed.
ID_COLUMNS = {
    "contacts": [("contacts", "crm_id", ""), ("stage_contacts", "crm_id", ""),
                 ("devices", "contact_id", ""), ("stage_devices", "contact_id", ""),
                 ("outbox_requests", "contact_crm_id", ""),
                 ("subject_restrictions", "contact_id", "")],
    "devices": [("devices", "crm_id", ""), ("stage_devices", "crm_id", ""),
                ("outbox_requests", "device_crm_id", "")],
}
for _entity in ("contacts", "devices"):
    ID_COLUMNS[_entity] += [(t, c, f"entity = '{_entity}'") for t, c in (
        ("quarantine", "crm_id"), ("data_quality", "crm_id"), ("held_deletes", "crm_id"),
        ("control_requests", "record_id"))]


def traces(conn: sqlite3.Connection, person: str, device: str) -> list[str]:
    """Where the cache still holds the person: their identifiers in any text column, their
    records' IDs in the columns that hold such IDs, audit entries naming them."""
    found = []
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        for column in conn.execute(f"PRAGMA table_info({table})"):
            if column[2].upper() not in ("TEXT", ""):
                continue
            for (value,) in conn.execute(f'SELECT "{column[1]}" FROM "{table}"'):
                if isinstance(value, str) and any(t.lower() in value.lower() for t in PERSON_TEXT):
                    found.append(f"{table}.{column[1]}")
    for entity, crm_id in (("contacts", person), ("devices", device)):
        for table, column, where in ID_COLUMNS[entity]:
            if conn.execute(f"SELECT 1 FROM {table} WHERE {column} = ? "
                            f"{'AND ' + where if where else ''}", (crm_id,)).fetchone():
                found.append(f"{table}.{column} = {crm_id}")
        if conn.execute("SELECT 1 FROM audit_log WHERE target = ?",
                        (f"{entity} record {crm_id}",)).fetchone():
            found.append(f"audit_log naming {entity} {crm_id}")
    return found


def seed_person(fake: FakeBitrix24) -> tuple[str, str, str]:
    """A person at a company with colleagues, with a device of their own; returns the IDs of
    the person, the device and the company."""
    company = min(fake.records("contacts").values(), key=lambda r: int(r["ID"]))["COMPANY_ID"]
    person = fake.create(
        "contacts", NAME="Zenobia", LAST_NAME="Erasmus", COMPANY_ID=company,
        EMAIL=[fake.factory.multifield("EMAIL", "WORK", EMAIL)],
        PHONE=[fake.factory.multifield("PHONE", "MOBILE", PHONE)],
    )
    device = fake.create("devices", contactId=int(person), companyId=None)
    return person, device, str(company)


def cli(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["--config", str(config), *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return code, out


def file_request(conn: sqlite3.Connection, spool: Path, person: str, device: str) -> int:
    key = "5e3f1c2a-7b6d-4e8f-9a0b-1c2d3e4f5a6b"
    (spool / key).mkdir(parents=True)
    (spool / key / "0.jpg").write_bytes(b"\xff\xd8\xff photo")
    request_id, _ = outbox.enqueue(conn, {
        "idempotency_key": key, "request_type": "repair", "message": "Zenobia's laser",
        "contact_email": EMAIL.upper(), "contact_phone": PHONE, "contact_crm_id": person,
        "device_crm_id": device,
        "files": [{"path": f"{key}/0.jpg", "original_name": "erasmus.jpg", "size": 9,
                   "declared_type": "image/jpeg"}],
    }, request_types=frozenset({"repair"}), now=utc_now())
    return request_id


def contact_ids(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT crm_id FROM contacts")}


def test_erased_person_stays_out_until_the_crm_deletes_them(
    tmp_path: Path, fake: FakeBitrix24, engine: MirrorEngine, cache: sqlite3.Connection,
    capsys: pytest.CaptureFixture[str],
) -> None:
    person, device, company = seed_person(fake)
    engine.run_cycle()
    config = write_config(tmp_path, fake)
    spool = tmp_path / "state" / "spool"
    file_request(cache, spool, person, device)
    assert person in contact_ids(cache) and traces(cache, person, device)
    requests_before = fake.request_count

    _, out = cli(config, capsys, "subject", "export", "--email", EMAIL.lower(), "--format", "json")
    document: dict[str, Any] = json.loads(out)
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    by_store: dict[str, set[str]] = {}
    for item in document["items"]:
        by_store.setdefault(item["store"], set()).add(item["key"])
    assert by_store["contacts"] == {person}  # not the colleagues at the same company
    assert by_store["devices"] == {device} and len(by_store["outbox_requests"]) == 1
    assert "companies" not in by_store
    assert all(document["data_as_of"][e] for e in ("companies", "contacts", "devices"))

    _, out = cli(config, capsys, "subject", "erase", "--phone", "5999 8877", "--yes")
    assert f"contacts {person}; devices {device}" in out
    assert traces(cache, person, device) == []
    assert not (spool / "5e3f1c2a-7b6d-4e8f-9a0b-1c2d3e4f5a6b").exists()
    assert fake.request_count == requests_before  # no subject command called the CRM

    # the CRM still has them: changed there, mirrored incrementally, resynced, swept
    fake.update("contacts", person, NAME="Zenobia")
    fake.update("devices", device, ufCrm8Location="Tartu")
    assert engine.run_cycle().kind == "incremental"
    assert traces(cache, person, device) == []
    engine.run_full(ENTITY_ORDER)
    assert traces(cache, person, device) == []
    engine.sweep()
    assert traces(cache, person, device) == []
    assert suppressions.counts(cache) == {"contacts": 1, "devices": 1}
    assert company in {row[0] for row in cache.execute("SELECT crm_id FROM companies")}

    # the CRM deletes the person (the sweep sees it), then the device (a full resync does)
    fake.delete("contacts", person)
    engine.sweep()
    assert suppressions.counts(cache) == {"devices": 1}
    fake.delete("devices", device)
    engine.run_full(ENTITY_ORDER)
    assert cache.execute("SELECT count(*) FROM subject_suppressions").fetchone()[0] == 0
    assert traces(cache, person, device) == []


def test_unsuppress_lets_the_mirror_bring_them_back(
    tmp_path: Path, fake: FakeBitrix24, engine: MirrorEngine, cache: sqlite3.Connection,
    capsys: pytest.CaptureFixture[str],
) -> None:
    person, device, _ = seed_person(fake)
    engine.run_cycle()
    config = write_config(tmp_path, fake)
    cli(config, capsys, "subject", "erase", "--crm-contact", person, "--yes")
    engine.sweep()
    assert person not in contact_ids(cache)
    _, out = cli(config, capsys, "subject", "unsuppress", "--email", EMAIL)
    assert "contacts 1, devices 1" in out
    engine.sweep()  # finds them missing from the cache and fetches them
    assert person in contact_ids(cache)
    assert cache.execute("SELECT contact_id FROM devices WHERE crm_id = ?",
                         (device,)).fetchone() == (person,)


def test_a_deletion_event_lifts_the_suppression_in_the_next_cycle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from syncd.runtime import build_engine, open_cache
    from tests.conftest import make_settings

    with FakeBitrix24(seed=5, companies=10, contacts=40, devices=20, token="t",
                      events_allowed=True) as fake:
        person, device, _ = seed_person(fake)
        conn = open_cache(make_settings(tmp_path, fake))
        engine = build_engine(make_settings(tmp_path, fake), conn)
        try:
            engine.run_cycle()
            engine.run_cycle()  # drains the events of the initial load, if any
            cli(write_config(tmp_path, fake), capsys, "subject", "erase", "--crm-contact",
                person, "--yes")
            assert suppressions.counts(conn) == {"contacts": 1, "devices": 1}
            fake.delete("contacts", person)
            assert engine.run_cycle().kind == "incremental"
            assert suppressions.counts(conn) == {"devices": 1}
            assert traces(conn, person, device) == []
        finally:
            engine.adapter.close()
            conn.close()
