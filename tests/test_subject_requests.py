"""Data subjects' requests (issue 12): export, erasure with suppression, unsuppress, restrict.

A seeded person (Mari) is present in every store: two cached contact records (one with her
address in capitals), a staged copy, devices, service requests with spool files, restriction,
audit entries, a resync request, data-quality and held-deletion rows, and a sole proprietor's
company with a VIES answer. Beside her: Marika, with a similar name, an e-mail address one
letter off and the same employer. Everything runs through ``syncd``'s own CLI against a real
SQLite cache; no upstream is ever called.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from syncd.cli.main import main
from syncd.core.clock import iso
from syncd.core.entities import Entity
from syncd.core.identifiers import InvalidIdentifierError, normalise_email, normalise_phone
from syncd.engines.subjects import build_normaliser, clean_vat
from syncd.state import audit, outbox, restrictions, suppressions
from syncd.state.cache import CacheStore
from syncd.state.db import connect, write_transaction

ROOT = Path(__file__).parents[1]
SCHEMA = json.loads((ROOT / "docs" / "subject-export.schema.json").read_text())
NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
MARI, MARI_COPY, MARIKA = "9017", "9020", "9018"
MARI_FIE, SHARED_COMPANY = "5001", "5002"
KEYS = {
    "mari_a": "3f2a6c1e-8d4b-4c1a-9e7f-0b1c2d3e4f5a",
    "mari_b": "6b1d2e3f-4a5b-4c6d-8e7f-a1b2c3d4e5f6",
    "marika": "c0ffee00-1234-4abc-8def-abcdefabcdef",
}
# What must not survive Mari's erasure anywhere (text compared case-insensitively).
MARI_TEXT = ("mari.tamm@ilu.ee", "mari.tamm@gmail.com", "5123 4567", "+37251234567",
             "51234567", "Pärnu mnt 10", "handpiece-mari.jpg", "Mari's laser overheats")
MARIKA_TEXT = ("Marika", "marika.tamm@ilu.ee", "mari.tamm@ilu.eu", "5123 4568", "Tartu mnt 5",
               MARIKA)


def _contact(crm_id: str, first: str, emails: list[str], phones: list[str], street: str,
             company: str | None) -> dict[str, Any]:
    return {
        "crm_id": crm_id, "first_name": first, "last_name": "Tamm", "birth_date": "1990-05-01",
        "emails": json.dumps([{"type": "work", "value": e} for e in emails]),
        "phones": json.dumps([{"type": "mobile", "value": p} for p in phones]),
        "languages": '["et"]', "newsletters": '["news"]', "company_id": company,
        "addresses": json.dumps([{"type": "physical", "line1": street, "line2": None,
                                  "city": "Tallinn", "postal_code": "10148", "region": None,
                                  "country": "Estonia"}]),
        "content_hash": f"h{crm_id}", "synced_at": "2026-11-20T08:00:00Z",
    }


def _insert(conn: sqlite3.Connection, table: str, row: dict[str, Any]) -> None:
    conn.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                 tuple(row.values()))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A configuration whose CRM and VIES are a listening socket that must never be called."""
    token = tmp_path / "token"
    token.write_text("test-token")
    path = tmp_path / "syncd.toml"
    path.write_text(
        f'[crm.bitrix24]\nurl = "http://127.0.0.1:{_TRAP.getsockname()[1]}/rest/1/"\n'
        f'webhook_token_file = "{token}"\n'
        f'[vies]\nendpoint = "http://127.0.0.1:{_TRAP.getsockname()[1]}/vies"\n'
        f'[state]\ndirectory = "{tmp_path / "state"}"\n'
        '[api]\nlisten = "127.0.0.1:0"\n[omniva]\nenabled = false\n'
    )
    return path


_TRAP = socket.socket()
_TRAP.bind(("127.0.0.1", 0))
_TRAP.listen(8)
_TRAP.setblocking(False)


def _trap_was_called() -> bool:
    try:
        connection, _ = _TRAP.accept()
    except BlockingIOError:
        return False
    connection.close()
    return True


@pytest.fixture
def cache(config: Path, tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = connect(tmp_path / "state" / "cache.sqlite3")
    _seed(conn, tmp_path / "state" / "spool")
    yield conn
    conn.close()
    assert not _trap_was_called(), "a subject command called an upstream"


def _seed(conn: sqlite3.Connection, spool: Path) -> None:
    with write_transaction(conn):
        for crm_id, name, vat, emails, phones in (
            (MARI_FIE, "Mari Tamm FIE", "EE100931558", "[]", "[]"),
            (SHARED_COMPANY, "Ilu Kliinik OÜ", "EE101571629",
             '[{"type": "work", "value": "info@ilu.ee"}]',
             '[{"type": "work", "value": "+372 600 0000"}]'),
        ):
            _insert(conn, "companies", {
                "crm_id": crm_id, "name": name, "vat_number": vat, "country": "EE",
                "emails": emails, "phones": phones, "content_hash": "c",
                "synced_at": "2026-11-20T08:00:00Z"})
        _insert(conn, "contacts", _contact(MARI, "Mari", ["Mari.Tamm@Ilu.ee",
                                                          "mari.tamm@gmail.com"],
                                           ["+372 5123 4567"], "Pärnu mnt 10", SHARED_COMPANY))
        _insert(conn, "contacts", _contact(MARI_COPY, "Mari", ["MARI.TAMM@ILU.EE"], ["51234567"],
                                           "Pärnu mnt 10", None))
        _insert(conn, "contacts", _contact(MARIKA, "Marika", ["marika.tamm@ilu.ee",
                                                              "mari.tamm@ilu.eu"],
                                           ["+372 5123 4568"], "Tartu mnt 5", SHARED_COMPANY))
        _insert(conn, "stage_contacts", {**_contact(MARI, "Mari", ["mari.tamm@ilu.ee"], [],
                                                    "Pärnu mnt 10", None), "synced_at": ""})
        for crm_id, contact, company in (("7001", MARI, None), ("7002", MARI, SHARED_COMPANY),
                                         ("7003", MARIKA, SHARED_COMPANY),
                                         ("7004", None, MARI_FIE)):
            _insert(conn, "devices", {
                "crm_id": crm_id, "name": f"Laser {crm_id}", "serial_number": f"SN-{crm_id}",
                "contact_id": contact, "company_id": company, "content_hash": "d",
                "synced_at": "2026-11-20T08:00:00Z"})
        _insert(conn, "vies_answers", {
            "country_code": "EE", "vat_number": "100931558", "valid": 1, "name": "Mari Tamm FIE",
            "address": "Narva mnt 3, Tallinn", "request_date": "2026-11-20",
            "fetched_at": "2026-11-20T09:00:00Z"})
        _insert(conn, "vies_answers", {
            "country_code": "EE", "vat_number": "101571629", "valid": 1, "name": "Ilu Kliinik OÜ",
            "address": "Tartu mnt 5, Tallinn", "request_date": "2026-11-20",
            "fetched_at": "2026-11-20T09:00:00Z"})
        conn.execute("INSERT INTO cursors VALUES ('contacts', '2026-11-21T11:00:00+02:00', ?)",
                     (iso(NOW),))
        for entity, crm_id in (("contacts", MARI), ("contacts", MARIKA)):
            conn.execute("INSERT INTO data_quality VALUES (?, ?, 'odd field', ?, ?)",
                         (entity, crm_id, iso(NOW), iso(NOW)))
        conn.execute("INSERT INTO held_deletes VALUES ('devices', '7001', ?, 'guard')", (iso(NOW),))
        conn.execute(
            "INSERT INTO control_requests (action, entity, record_id, requested_by, requested_at, "
            "status) VALUES ('resync', 'contacts', ?, 'root', ?, 'done')", (MARI, iso(NOW)))
    requests = {}
    for name, contact, email, phone, files in (
        ("mari_a", MARI, "mari.tamm@ilu.ee", "+372 5123 4567", ["handpiece-mari.jpg", "b.pdf"]),
        ("mari_b", None, "MARI.TAMM@ilu.ee", "5123 4567", []),
        ("marika", MARIKA, "marika.tamm@ilu.ee", "+372 5123 4568", ["marika.jpg"]),
    ):
        entries = []
        for position, original in enumerate(files):
            relative = f"{KEYS[name]}/{position}.bin"
            (spool / relative).parent.mkdir(parents=True, exist_ok=True)
            (spool / relative).write_bytes(b"photo")
            entries.append({"path": relative, "original_name": original,
                            "declared_type": "image/jpeg", "size": 5})
        requests[name], _ = outbox.enqueue(conn, {
            "idempotency_key": KEYS[name], "request_type": "repair",
            "message": "Mari's laser overheats" if contact != MARIKA else "Marika's question",
            "contact_email": email, "contact_phone": phone, "contact_crm_id": contact,
            "contact_address": "Pärnu mnt 10" if contact != MARIKA else "Tartu mnt 5",
            "files": entries}, request_types=frozenset({"repair"}), now=NOW)
    restrictions.restrict(conn, MARI, now=NOW)
    audit.record(conn, "resync.request", target=f"contacts record {MARI}")
    audit.record(conn, "resync.request", target=f"contacts record {MARIKA}")
    audit.record(conn, "outbox.reveal", target=str(requests["mari_a"]))
    audit.record(conn, "outbox.reveal", target=str(requests["marika"]))


def run(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(["--config", str(config), "subject", *args])
    except SystemExit as exit_:  # argparse's usage errors
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def export(config: Path, capsys: pytest.CaptureFixture[str], *selector: str) -> dict[str, Any]:
    code, out, _ = run(config, capsys, "export", *selector, "--format", "json")
    assert code == 0
    document: dict[str, Any] = json.loads(out)
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    return document


def keys(document: dict[str, Any]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for item in document["items"]:
        found.setdefault(item["store"], set()).add(item["key"])
    return found


def request_ids(conn: sqlite3.Connection) -> dict[str, int]:
    return {name: int(outbox.id_for_key(conn, key) or 0) for name, key in KEYS.items()}


# -- normalisation ------------------------------------------------------------------------------


def test_identifiers_are_normalised() -> None:
    assert normalise_email("  Mari.Tamm@ILU.ee ") == "mari.tamm@ilu.ee"
    for raw in ("+372 5123 4567", "5123 4567", "+372-5123-4567", "(+372) 51234567"):
        assert normalise_phone(raw, "EE") == "+37251234567"
    assert normalise_phone("2123 4567", "LV") == "+37121234567"
    assert clean_vat("ee 100 931 558") == "EE100931558"
    assert clean_vat("GR 094259216") == "EL094259216"  # Greece is EL at VIES
    normaliser = build_normaliser("EE")
    for kind, raw in (("email", "mari.tamm"), ("email", "a@b"), ("phone", "call me"),
                      ("phone", "12"), ("vat", "XX123"), ("crm_contact", "17; drop")):
        with pytest.raises(InvalidIdentifierError) as caught:
            normaliser.selector(kind, raw)  # type: ignore[arg-type]
        assert raw not in str(caught.value)


# -- export -------------------------------------------------------------------------------------


def test_export_holds_every_item_about_mari_and_nothing_about_marika(
    config: Path, cache: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = request_ids(cache)
    document = export(config, capsys, "--email", "MARI.TAMM@ilu.EE")
    assert document["selector"] == {"kind": "email", "value": "mari.tamm@ilu.ee"}
    assert document["data_as_of"] == {"companies": None, "contacts": "2026-11-21T09:00:00Z",
                                      "devices": None}
    found = keys(document)
    mari_a, mari_b = str(ids["mari_a"]), str(ids["mari_b"])
    files = {str(f.id) for f in (outbox.get(cache, ids["mari_a"]) or _no()).files}
    audit_ids = {str(row[0]) for row in cache.execute(
        "SELECT id FROM audit_log WHERE target IN (?, ?)", (f"contacts record {MARI}", mari_a))}
    assert found == {
        "contacts": {MARI, MARI_COPY},  # the same address in capitals is the same address
        "stage_contacts": {MARI},
        "devices": {"7001", "7002"},
        "outbox_requests": {mari_a, mari_b},
        "outbox_files": files,
        "subject_restrictions": {MARI},
        "audit_log": audit_ids,
        "control_requests": {"1"},
        "data_quality": {f"contacts:{MARI}:odd field"},
        "held_deletes": {"devices:7001"},
    }
    assert all(item["time"] for item in document["items"] if item["store"] != "stage_contacts")
    text = json.dumps(document, ensure_ascii=False)
    assert "Mari's laser overheats" in text and "handpiece-mari.jpg" in text
    for value in (*MARIKA_TEXT, "Ilu Kliinik", "info@ilu.ee", "Mari Tamm FIE"):
        assert value not in text, value
    # the export is audited, naming no one
    action, target, details = cache.execute(
        "SELECT action, target, details FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    assert (action, target) == ("subject.export", None)
    assert json.loads(details) == {"selector": "email", "items": len(document["items"]),
                                   "to": "json"}


def test_export_by_phone_reads_every_format(
    config: Path, cache: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = request_ids(cache)
    for raw in ("5123 4567", "+37251234567", "+372 (5123) 4567"):
        found = keys(export(config, capsys, "--phone", raw))
        assert found["contacts"] == {MARI, MARI_COPY}
        assert found["outbox_requests"] == {str(ids["mari_a"]), str(ids["mari_b"])}
    # a Latvian number with the same digits is someone else's
    assert "contacts" not in keys(export(config, capsys, "--phone", "+371 5123 4567"))
    assert keys(export(config, capsys, "--phone", "5123 4567", "--region", "ee"))["contacts"] == {
        MARI, MARI_COPY}


def test_export_by_crm_contact_and_by_vat(
    config: Path, cache: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    found = keys(export(config, capsys, "--crm-contact", MARI))
    assert found["contacts"] == {MARI} and found["devices"] == {"7001", "7002"}
    assert found["outbox_requests"] == {str(request_ids(cache)["mari_a"])}
    document = export(config, capsys, "--vat", "ee 100 931 558")
    assert keys(document) == {"companies": {MARI_FIE}, "devices": {"7004"},
                              "vies_answers": {"EE:100931558"}}
    assert "Tamm" not in json.dumps([i for i in document["items"] if i["store"] == "devices"])


def test_shared_company_identifiers_show_the_company_record_but_not_its_people(
    config: Path, cache: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    found = keys(export(config, capsys, "--email", "INFO@ilu.ee"))
    assert found == {"companies": {SHARED_COMPANY}}


def test_export_summary_and_output_file(
    config: Path, cache: sqlite3.Connection, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(config, capsys, "export", "--email", "mari.tamm@ilu.ee")
    assert code == 0 and "contacts" in out and "data as of" in out
    assert not any(v.lower() in out.lower() for v in MARI_TEXT)
    target = tmp_path / "mari.json"
    old = os.umask(0o022)
    try:
        code, out, _ = run(config, capsys, "export", "--email", "mari.tamm@ilu.ee", "--output",
                           str(target))
    finally:
        os.umask(old)
    assert code == 0 and stat.S_IMODE(target.stat().st_mode) == 0o600
    jsonschema.Draft202012Validator(SCHEMA).validate(json.loads(target.read_text()))
    before = target.read_bytes()
    code, _, err = run(config, capsys, "export", "--email", "mari.tamm@ilu.ee", "--output",
                       str(target))
    assert code == 73 and target.read_bytes() == before and "not overwritten" in err


def test_nobody_matched_is_an_empty_export(
    config: Path, cache: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    document = export(config, capsys, "--email", "nobody@example.ee")
    assert document["items"] == [] and document["counts"] == {}


@pytest.mark.parametrize("selector", [
    ("--email", "mari.tamm-at-ilu.ee"), ("--phone", "call 5123 4567 please"),
    ("--phone", "12"), ("--vat", "ZZ100931558"), ("--crm-contact", "17 OR 1=1"),
])
@pytest.mark.parametrize("action", ["export", "erase", "unsuppress", "restrict"])
def test_bad_selectors_exit_65_without_echoing_the_value(
    config: Path, cache: sqlite3.Connection, capsys: pytest.CaptureFixture[str],
    selector: tuple[str, str], action: str,
) -> None:
    if action == "restrict" and selector[0] == "--vat":
        code, _, err = run(config, capsys, action, *selector)
        assert code == 64  # a company cannot be restricted: usage
        return
    code, out, err = run(config, capsys, action, *selector, "--yes" if action == "erase" else
                         "--region=EE")
    assert code == 65
    assert len(err.strip().splitlines()) == 1 and selector[1] not in err + out


def test_bad_region_is_a_usage_error(
    config: Path, cache: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(config, capsys, "export", "--phone", "5123 4567", "--region", "XX")
    assert code == 64


# -- erasure ------------------------------------------------------------------------------------


def _dump(conn: sqlite3.Connection) -> list[str]:
    return list(conn.iterdump())


def _text_columns(conn: sqlite3.Connection) -> Iterator[tuple[str, str]]:
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        for column in conn.execute(f"PRAGMA table_info({table})"):
            if column[2].upper() in ("TEXT", ""):
                yield table, column[1]


def traces_of(conn: sqlite3.Connection, texts: tuple[str, ...], crm_ids: tuple[str, ...],
              first_name: str | None = None) -> list[str]:
    """Every (table, column) of the cache holding one of ``texts`` (case-insensitively), a CRM
    ID of ``crm_ids`` as a whole value (or an audit target naming it), or ``first_name``."""
    found = []
    for table, column in _text_columns(conn):
        for (value,) in conn.execute(f'SELECT "{column}" FROM "{table}"'):
            if not isinstance(value, str):
                continue
            if any(t.lower() in value.lower() for t in texts) or value == first_name:
                found.append(f"{table}.{column}")
            if value in crm_ids or any(value.endswith(f" record {i}") for i in crm_ids):
                found.append(f"{table}.{column} (ID)")
    return found


def test_dry_run_changes_nothing(
    config: Path, cache: sqlite3.Connection, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    before = _dump(cache)
    code, out, _ = run(config, capsys, "erase", "--email", "mari.tamm@ilu.ee")
    assert code == 0 and "dry run" in out and "--yes" in out
    assert "contacts" in out and "kept: 1 device" in out
    assert _dump(cache) == before
    assert not (tmp_path / "state" / suppressions.KEY_FILE_NAME).exists()


def test_erase_leaves_no_trace_of_mari_and_spares_marika(
    config: Path, cache: sqlite3.Connection, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ids = request_ids(cache)
    spool = tmp_path / "state" / "spool"
    assert traces_of(cache, MARI_TEXT, (MARI, MARI_COPY), "Mari")
    code, out, err = run(config, capsys, "erase", "--email", "Mari.Tamm@ilu.ee", "--yes")
    assert code == 0, err
    assert f"contacts {MARI}, {MARI_COPY}; devices 7001" in out
    assert "delete the record(s) there" in out and "will not bring them back" in out
    assert traces_of(cache, MARI_TEXT, (MARI, MARI_COPY, "7001"), "Mari") == []
    assert not (spool / KEYS["mari_a"]).exists()
    # Marika and the shared company are untouched; the shared device only lost its link to Mari
    assert cache.execute("SELECT count(*) FROM contacts WHERE crm_id = ?", (MARIKA,)).fetchone()
    assert (spool / KEYS["marika"] / "0.bin").exists()
    assert outbox.get(cache, ids["marika"]) is not None
    assert cache.execute("SELECT contact_id, company_id FROM devices WHERE crm_id = '7002'"
                         ).fetchone() == (None, SHARED_COMPANY)
    assert {r[0] for r in cache.execute("SELECT crm_id FROM companies")} == {MARI_FIE,
                                                                             SHARED_COMPANY}
    assert cache.execute("SELECT count(*) FROM audit_log WHERE target = ?",
                         (f"contacts record {MARIKA}",)).fetchone()[0] == 1
    # the audit log: earlier entries keep action and time; the erasure is recorded by counts
    assert {r[0] for r in cache.execute("SELECT target FROM audit_log WHERE action = "
                                        "'resync.request'")} == {
        "contacts record (erased)", f"contacts record {MARIKA}"}
    target, details = cache.execute(
        "SELECT target, details FROM audit_log WHERE action = 'subject.erase'").fetchone()
    counts = json.loads(details)["counts"]
    assert target is None and counts["contacts"] == 2 and counts["outbox_requests"] == 2
    assert counts["outbox_files"] == 2 and counts["stage_contacts"] == 1
    # suppressed by keyed hashes only; the key is the daemon's alone
    key_file = tmp_path / "state" / suppressions.KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert suppressions.counts(cache) == {"contacts": 2, "devices": 1}
    assert CacheStore(cache).live_ids(Entity.CONTACTS) == {MARIKA}
    # asked again, syncd says it holds only the suppression
    assert keys(export(config, capsys, "--email", "mari.tamm@ilu.ee")) == {
        "subject_suppressions": {"contacts:email"}}


def test_erase_by_vat_removes_the_company_and_its_vies_answer(
    config: Path, cache: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(config, capsys, "erase", "--vat", "EE 100931558", "--yes")
    assert code == 0 and f"companies {MARI_FIE}" in out
    assert traces_of(cache, ("100931558", "Mari Tamm FIE"), (MARI_FIE, "7004")) == []
    assert cache.execute("SELECT count(*) FROM vies_answers").fetchone()[0] == 1  # the other's
    assert suppressions.counts(cache) == {"companies": 1, "devices": 1}


def test_erase_waits_while_a_request_is_being_sent(
    config: Path, cache: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    cache.execute("UPDATE outbox_requests SET status = 'sending' WHERE id = ?",
                  (request_ids(cache)["mari_a"],))
    before = _dump(cache)
    code, _, err = run(config, capsys, "erase", "--crm-contact", MARI, "--yes")
    assert code == 75 and "busy" in err
    assert _dump(cache) == before


def test_erase_refuses_a_user_who_does_not_own_the_state_directory(
    config: Path, cache: sqlite3.Connection, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    code, _, err = run(config, capsys, "erase", "--crm-contact", MARI, "--yes")
    assert code == 77 and "sudo -u syncd" in err


def test_an_uncached_contact_is_suppressed_too(
    config: Path, cache: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(config, capsys, "erase", "--crm-contact", "123456", "--yes")
    assert code == 0 and "contacts 123456" in out
    assert suppressions.counts(cache) == {"contacts": 1}


# -- suppression in the mirror ------------------------------------------------------------------


def test_merge_skips_suppressed_rows_and_lifting_lets_them_back(
    config: Path, cache: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, capsys, "erase", "--crm-contact", MARI, "--yes")[0] == 0
    store = CacheStore(cache)
    # as CacheStore.stage_rows takes it: crm_id, the canonical fields, bookkeeping
    row = (MARI, "Mari", "Tamm", None, '[{"type": "work", "value": "mari.tamm@ilu.ee"}]', "[]",
           "[]", "[]", "[]", None, None, "hash", "", None)
    with write_transaction(cache):
        store.ensure_scratch()
        store.stage_rows("scratch", "contacts", [row])
        assert store.merge("scratch", "contacts", run_id=1, now=NOW) == 0
        store.clear_staging("scratch", "contacts")
        # a complete listing that still holds the ID keeps it suppressed; one without it lifts
        assert suppressions.lift_unlisted(cache, "contacts", [MARI, MARIKA]) == 0
        assert suppressions.lift_unlisted(cache, "contacts", [MARIKA]) == 1
        assert suppressions.counts(cache) == {"devices": 1}  # 7001 is still listed nowhere
        store.stage_rows("scratch", "contacts", [row])
        assert store.merge("scratch", "contacts", run_id=1, now=NOW) == 1


def test_a_lost_key_stops_the_mirror_rather_than_bring_back_the_erased(
    config: Path, cache: sqlite3.Connection, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(config, capsys, "erase", "--crm-contact", MARI, "--yes")[0] == 0
    (tmp_path / "state" / suppressions.KEY_FILE_NAME).unlink()
    with pytest.raises(suppressions.SuppressionKeyError, match="unsuppress --all"):
        suppressions.suppressed_ids(cache, "contacts", [MARI])
    code, out, _ = run(config, capsys, "unsuppress", "--all")
    assert code == 0 and "contacts 1, devices 1" in out and suppressions.counts(cache) == {}
    assert suppressions.suppressed_ids(cache, "contacts", [MARI]) == set()


def test_unsuppress_by_any_identifier_of_the_erasure(
    config: Path, cache: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, capsys, "erase", "--email", "mari.tamm@ilu.ee", "--yes")[0] == 0
    # her other address was on an erased record: it finds the same erasure
    code, out, _ = run(config, capsys, "unsuppress", "--email", "MARI.TAMM@gmail.com")
    assert code == 0 and "contacts 2, devices 1" in out
    assert cache.execute("SELECT count(*) FROM subject_suppressions").fetchone()[0] == 0
    code, out, _ = run(config, capsys, "unsuppress", "--phone", "5123 4567")
    assert code == 1 and "no suppression" in out
    assert cache.execute("SELECT count(*) FROM audit_log WHERE action = 'subject.unsuppress'"
                         ).fetchone()[0] == 2


def test_suppression_key_is_made_once_and_private(tmp_path: Path) -> None:
    conn = connect(tmp_path / "cache.sqlite3")
    old = os.umask(0o027)  # the unit's UMask=
    try:
        assert suppressions.load_key(conn) is None
        first = suppressions.load_key(conn, create=True)
        again = suppressions.load_key(conn, create=True)
    finally:
        os.umask(old)
    key_file = tmp_path / suppressions.KEY_FILE_NAME
    assert first == again and first is not None and len(first) == 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    key_file.chmod(0o640)  # readable by the portal's group: refused
    with pytest.raises(suppressions.SuppressionKeyError, match="chmod 600"):
        suppressions.load_key(conn)
    conn.close()


# -- restriction --------------------------------------------------------------------------------


def test_restrict_and_unrestrict(
    config: Path, cache: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(config, capsys, "restrict", "--phone", "+372 5123 4568")
    assert code == 0 and f"contact {MARIKA}: restricted" in out
    assert restrictions.is_restricted(cache, MARIKA)
    assert cache.execute("SELECT restricted FROM contacts WHERE crm_id = ?",
                         (MARIKA,)).fetchone() == (1,)
    code, out, _ = run(config, capsys, "restrict", "--email", "mari.tamm@ilu.ee")
    assert code == 0 and f"contact {MARI}: already restricted" in out
    assert f"contact {MARI_COPY}: restricted" in out
    code, out, _ = run(config, capsys, "restrict", "--crm-contact", "777")  # not cached yet
    assert code == 0 and restrictions.is_restricted(cache, "777")
    code, out, _ = run(config, capsys, "unrestrict", "--crm-contact", MARIKA)
    assert code == 0 and "restriction lifted" in out and not restrictions.is_restricted(cache,
                                                                                          MARIKA)
    code, _, err = run(config, capsys, "restrict", "--email", "nobody@example.ee")
    assert code == 1 and "nobody" not in err
    entries = cache.execute("SELECT action, target, details FROM audit_log WHERE action LIKE "
                            "'subject.%restrict'").fetchall()
    assert (("subject.restrict", f"contacts record {MARIKA}", '{"changed": true}') in entries)
    assert all("@" not in (target or "") + details for _, target, details in entries)


def _no() -> Any:
    raise AssertionError("missing")


def test_status_counts_restrictions_and_suppressions_without_naming_anyone(
    config: Path, cache: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    from syncd.cli.status import collect, render

    run(config, capsys, "unrestrict", "--email", "mari.tamm@ilu.ee")  # the seeded restriction
    assert "subjects " not in render(collect(cache, config.parent))  # nothing in force: no line
    run(config, capsys, "restrict", "--crm-contact", MARIKA)
    run(config, capsys, "erase", "--email", "mari.tamm@ilu.ee", "--yes")
    report = collect(cache, config.parent)
    assert report["subjects"] == {
        "restricted_contacts": 1, "suppressed_records": {"contacts": 2, "devices": 1}
    }
    line = next(li for li in render(report).splitlines() if li.startswith("subjects "))
    assert "1 restricted contact(s)" in line and "2 contacts, 1 devices" in line
    assert MARIKA not in line and MARI not in line
