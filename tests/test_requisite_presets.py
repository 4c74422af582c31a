"""Requisite presets and data-quality warnings.

A Bitrix24 requisite's preset fixes its field set per country; ``[requisite_presets]`` in the
company mapping says which field fills each slot the rules read (``_requisite.RQ_COMPANY_ID``,
...). A requisite of a preset the mapping does not map becomes a data-quality warning naming the
preset ID (never a value), which travels with the raw record (``_data_quality``) through the
vendor-neutral engine into the cache, the log, ``syncd status`` and ``/metrics``.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from syncd.api.metrics import CacheCollector
from syncd.cli.status import collect, render
from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.connectors.crm.bitrix24.fake_view import adapter_view
from syncd.connectors.crm.bitrix24.presets import RequisitePresets
from syncd.connectors.crm.memory import MemoryAdapter, MemoryRecords
from syncd.core.entities import CANONICAL_FIELDS, Entity
from syncd.core.errors import ConfigError
from syncd.engines.mapworker import MappedBatch, MappingWorker, map_batch, resolve
from syncd.engines.mirror import MirrorEngine
from syncd.mappings.loader import MappingSet, load_mapping_set, parse_mapping
from syncd.state import overview
from syncd.state.cache import CacheStore
from syncd.state.db import connect, write_transaction

ROOT = Path(__file__).parents[1]
SHIPPED = (ROOT / "mappings" / "bitrix24" / "companies.toml").read_text(encoding="utf-8")
MAPPINGS = load_mapping_set("bitrix24")
MEMORY = load_mapping_set("memory")
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
SLOTS = {"RQ_COMPANY_FULL_NAME", "RQ_COMPANY_ID", "RQ_VAT_ID", "RQ_RESIDENCE_COUNTRY"}
UNMAPPED_7 = "requisite preset 7 is not mapped (companies.toml [requisite_presets])"

POLISH = """
[requisite_presets."7"]
RQ_COMPANY_FULL_NAME = "RQ_COMPANY_FULL_NAME"
RQ_COMPANY_ID = "RQ_REGON"
RQ_VAT_ID = "RQ_VAT_ID"
RQ_RESIDENCE_COUNTRY = "RQ_RESIDENCE_COUNTRY"
"""


def without_presets(text: str = SHIPPED) -> str:
    """The company mapping's text without its ``[requisite_presets]`` tables."""
    return re.split(r"^\[requisite_presets", text, maxsplit=1, flags=re.M)[0]


def with_top_level(line: str) -> str:
    """The shipped text without presets and with ``line`` among the top-level keys."""
    return without_presets().replace('entity = "companies"\n', f'entity = "companies"\n{line}\n')


def companies(text: str, label: str = "companies.toml") -> Any:
    return parse_mapping(text, label=label, vendor="bitrix24", entity="companies")


def mapping_set(tmp_path: Path, company_text: str) -> MappingSet:
    """The Bitrix24 mapping set with ``company_text`` as its companies.toml."""
    for entity in CANONICAL_FIELDS:
        source = ROOT / "mappings" / "bitrix24" / f"{entity}.toml"
        (tmp_path / f"{entity}.toml").write_text(source.read_text(encoding="utf-8"))
    (tmp_path / "companies.toml").write_text(company_text, encoding="utf-8")
    return load_mapping_set("bitrix24", tmp_path)


def requisite(preset: Any, **fields: Any) -> dict[str, Any]:
    return {"ID": "31", "ENTITY_TYPE_ID": "4", "ENTITY_ID": "12", "PRESET_ID": preset,
            "NAME": "Requisite", **fields}


def company(crm_id: str, requisite_row: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    return {"ID": crm_id, "DATE_MODIFY": "2026-11-01T10:00:00+02:00", "TITLE": f"Salon {crm_id}",
            "_requisite": requisite_row, "_addresses": [], **extra}


def values(batch: MappedBatch, crm_id: str) -> dict[str, Any]:
    names = ["crm_id", *(f.name for f in CANONICAL_FIELDS["companies"])]
    [row] = [row for row in batch.rows if row[0] == crm_id]
    return dict(zip(names, row, strict=False))


# -- the mapping file ------------------------------------------------------------------------


def test_the_shipped_company_mapping_maps_preset_1_by_the_slots_own_names() -> None:
    options = MAPPINGS["companies"].options
    assert options == {"requisite_presets": {"1": {slot: slot for slot in SLOTS}}}
    assert MAPPINGS["companies"].label == "mappings/bitrix24/companies.toml"
    assert all(MAPPINGS[e].options == {} for e in ("contacts", "devices"))
    presets = RequisitePresets.from_mapping(MAPPINGS["companies"])
    assert presets.configured and presets.slots == SLOTS


def test_a_mapping_may_carry_several_presets() -> None:
    mapping = companies(SHIPPED + POLISH)
    assert set(mapping.options["requisite_presets"]) == {"1", "7"}
    assert mapping.options["requisite_presets"]["7"]["RQ_COMPANY_ID"] == "RQ_REGON"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (with_top_level("requisite_presets = 1"), r"requisite_presets must be a table"),
        (with_top_level('requisite_presets = { "7" = "RQ_REGON" }'),
         r"requisite_presets\.7 must be a table"),
        (without_presets() + '[requisite_presets."7"]\nRQ_COMPANY_ID = 5\n',
         r"requisite_presets\.7\.RQ_COMPANY_ID must be a field name"),
        (without_presets() + '[requisite_presets."7"]\nRQ_COMPANY_ID = ""\n',
         r"requisite_presets\.7\.RQ_COMPANY_ID must be a field name"),
        (without_presets() + '[requisite_presets."7 b"]\n"" = "RQ_REGON"\n',
         r'requisite_presets\."7 b"\."" must be a field name'),
        (with_top_level("requisite_preset = {}"), r"unknown key 'requisite_preset'"),
    ],
)
def test_a_bad_presets_table_is_a_config_error_naming_file_and_key(
    text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=rf"mapping file t\.toml: {message}"):
        companies(text, label="t.toml")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[requisite_presets.org]\nRQ_VAT_ID = "RQ_VAT_ID"\n',
         r"requisite_presets\.'org' is not a preset ID"),
        ('[requisite_presets."7"]\nRQ_REGON = "RQ_REGON"\n',
         r"requisite_presets\.7\.RQ_REGON is not a slot the field rules read"),
        ('[requisite_presets."7"]\n[requisite_presets."07"]\n',
         r"requisite_presets\.07 is preset 7 again"),
    ],
)
def test_presets_that_do_not_fit_the_rules_are_config_errors(
    tmp_path: Path, table: str, message: str
) -> None:
    mappings = mapping_set(tmp_path, without_presets() + table)
    label = re.escape(f"{tmp_path}/companies.toml")
    with pytest.raises(ConfigError, match=rf"mapping file {label}: {message}"):
        RequisitePresets.from_mapping(mappings["companies"])


# -- translation -----------------------------------------------------------------------------


def test_a_configured_preset_is_re_keyed_by_slot() -> None:
    presets = RequisitePresets.from_mapping(companies(SHIPPED + POLISH))
    polish = requisite("7", RQ_COMPANY_FULL_NAME="Salon Sp. z o.o.", RQ_REGON="123456785",
                       RQ_COMPANY_ID="stale", RQ_VAT_ID="PL5260250274", RQ_RESIDENCE_COUNTRY="PL")
    translated, warning = presets.translate(polish)
    assert warning is None
    assert translated == {
        "ID": "31", "ENTITY_TYPE_ID": "4", "ENTITY_ID": "12", "PRESET_ID": "7",
        "RQ_COMPANY_FULL_NAME": "Salon Sp. z o.o.", "RQ_COMPANY_ID": "123456785",
        "RQ_VAT_ID": "PL5260250274", "RQ_RESIDENCE_COUNTRY": "PL",
    }
    estonian = requisite("1", RQ_COMPANY_ID="10000001", RQ_VAT_ID="EE100000001")
    translated, warning = presets.translate(estonian)
    assert warning is None
    assert translated["RQ_COMPANY_ID"] == "10000001" and translated["RQ_COMPANY_FULL_NAME"] is None
    assert "NAME" not in translated


def test_an_unconfigured_preset_warns_naming_the_preset_but_no_value() -> None:
    presets = RequisitePresets.from_mapping(MAPPINGS["companies"])
    german = requisite("7", RQ_COMPANY_FULL_NAME="Praxis Muster GmbH", RQ_USRLE="HRB 12345",
                       RQ_VAT_ID="DE136695976", RQ_RESIDENCE_COUNTRY="DE")
    translated, warning = presets.translate(german)
    assert warning == UNMAPPED_7
    for value in ("Praxis", "HRB", "12345", "DE136695976", "31", "12"):
        assert value not in warning
    # still read under the slots' own names (generic fields), the foreign ones not at all
    assert translated["RQ_COMPANY_FULL_NAME"] == "Praxis Muster GmbH"
    assert translated["RQ_VAT_ID"] == "DE136695976"
    assert "RQ_COMPANY_ID" not in translated and "RQ_USRLE" not in translated


@pytest.mark.parametrize(
    ("preset", "warning"),
    [
        (7, UNMAPPED_7),
        (" 007", UNMAPPED_7),
        (None, "requisite without a preset ID is not mapped (companies.toml [requisite_presets])"),
        ("mari@example.ee", "requisite preset (not a number) is not mapped "
                            "(companies.toml [requisite_presets])"),
        ("9" * 40, "requisite preset (not a number) is not mapped "
                   "(companies.toml [requisite_presets])"),
        ("1", None),
        (1, None),
    ],
)
def test_odd_preset_ids_are_normalised_or_not_quoted(preset: Any, warning: str | None) -> None:
    presets = RequisitePresets.from_mapping(MAPPINGS["companies"])
    assert presets.translate(requisite(preset, RQ_VAT_ID="EE1"))[1] == warning


def test_a_preset_that_maps_no_slot_warns_too() -> None:
    presets = RequisitePresets.from_mapping(companies(SHIPPED + '[requisite_presets."3"]\n'))
    assert presets.translate(requisite("3"))[1] == (
        "requisite preset 3 is not mapped (companies.toml [requisite_presets])"
    )


def test_without_a_presets_table_translation_is_the_identity() -> None:
    presets = RequisitePresets.from_mapping(companies(without_presets()))
    assert not presets.configured
    raw = requisite("7", RQ_COMPANY_ID="1", RQ_USRLE="HRB 1")
    assert presets.translate(raw) == (raw, None)
    assert presets.translate(raw)[0] is not raw
    assert presets.translate(None) == ({}, None)
    assert presets.select_fields() == {"PRESET_ID", *SLOTS}


def test_select_names_the_preset_and_every_field_a_preset_reads() -> None:
    presets = RequisitePresets.from_mapping(companies(SHIPPED + POLISH))
    assert presets.select_fields() == {"PRESET_ID", "RQ_REGON", *SLOTS}


def test_the_shipped_presets_map_the_fakes_companies_exactly_as_before() -> None:
    """Preset 1 maps the slots by their own names: every company maps to the same values (and
    content hash) through the presets as without them, so an upgrade rewrites no row."""
    presets = RequisitePresets.from_mapping(MAPPINGS["companies"])
    with FakeBitrix24(seed=5, companies=25, contacts=10, devices=10) as fake:
        raws = adapter_view(fake)["companies"]
    assert len(raws) == 25
    for raw in raws:
        translated, warning = presets.translate(raw["_requisite"])
        assert warning is None
        before = MAPPINGS["companies"].map(raw)
        after = MAPPINGS["companies"].map({**raw, "_requisite": translated})
        assert after == before


# -- mapping batches -------------------------------------------------------------------------


def test_map_batch_collects_the_warnings_of_the_records_that_fit() -> None:
    raws = [
        company("1", None, _data_quality=[UNMAPPED_7, UNMAPPED_7, 5, "", "  other  "]),
        company("2", None),
        company("3", None, TITLE="", _data_quality=[UNMAPPED_7]),  # quarantined: name required
        company("4", None, _data_quality="not a list"),
    ]
    batch = map_batch(MAPPINGS, "companies", raws)
    assert [row[0] for row in batch.rows] == ["1", "2", "4"]
    assert batch.rejects == [("3", "name: required value missing")]
    assert batch.warnings == [("1", UNMAPPED_7), ("1", "other")]
    assert pickle.loads(pickle.dumps(batch)) == batch
    gathered = MappedBatch()
    gathered.extend(batch)
    gathered.extend(map_batch(MAPPINGS, "companies", [company("5", None, _data_quality=["x"])]))
    assert gathered.warnings == [("1", UNMAPPED_7), ("1", "other"), ("5", "x")]
    assert len(gathered) == 5


def test_the_worker_process_returns_the_warnings_too() -> None:
    raws = [company("1", None, _data_quality=[UNMAPPED_7]), company("2", None)]
    worker = MappingWorker(MAPPINGS)
    try:
        mapped = resolve(worker.submit("companies", raws))
    finally:
        worker.close()
    assert mapped == map_batch(MAPPINGS, "companies", raws)
    assert mapped.warnings == [("1", UNMAPPED_7)]


def test_two_presets_map_both_correctly(tmp_path: Path) -> None:
    mappings = mapping_set(tmp_path, SHIPPED + POLISH)
    presets = RequisitePresets.from_mapping(mappings["companies"])
    rows = {
        "1": requisite("1", RQ_COMPANY_FULL_NAME="Salong OÜ", RQ_COMPANY_ID="10000001",
                       RQ_VAT_ID="ee100000001", RQ_RESIDENCE_COUNTRY="EE"),
        "2": requisite("7", RQ_COMPANY_FULL_NAME="Salon Sp. z o.o.", RQ_REGON="123456785",
                       RQ_VAT_ID="PL5260250274", RQ_RESIDENCE_COUNTRY="PL"),
        "3": requisite("46", RQ_COMPANY_FULL_NAME="Praxis GmbH", RQ_USRLE="HRB 1"),
    }
    raws = []
    for crm_id, row in rows.items():
        translated, warning = presets.translate(row)
        raws.append(company(crm_id, translated, _data_quality=[warning] if warning else []))
    batch = map_batch(mappings, "companies", raws)
    first, second, third = (values(batch, i) for i in ("1", "2", "3"))
    assert (first["legal_name"], first["registration_number"], first["vat_number"],
            first["country"]) == ("Salong OÜ", "10000001", "EE100000001", "EE")
    assert (second["legal_name"], second["registration_number"], second["vat_number"],
            second["country"]) == ("Salon Sp. z o.o.", "123456785", "PL5260250274", "PL")
    assert (third["legal_name"], third["registration_number"]) == ("Praxis GmbH", None)
    assert batch.warnings == [
        ("3", "requisite preset 46 is not mapped (companies.toml [requisite_presets])")
    ]


# -- the cache -------------------------------------------------------------------------------


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = connect(tmp_path / "cache.sqlite3")
    yield connection
    connection.close()


def stored(conn: sqlite3.Connection) -> dict[tuple[str, str, str], tuple[str, str]]:
    return {
        (entity, crm_id, message): (first, last)
        for entity, crm_id, message, first, last in conn.execute(
            "SELECT entity, crm_id, message, first_seen, last_seen FROM data_quality"
        )
    }


def test_the_cache_records_and_forgets_warnings(conn: sqlite3.Connection) -> None:
    store = CacheStore(conn)
    later = NOW + timedelta(minutes=5)
    with write_transaction(conn):
        store.record_data_quality(
            "companies", ["1", "2", "3"], [("1", "a"), ("1", "b"), ("2", "a")], now=NOW
        )
        store.record_data_quality("devices", ["9"], [("9", "a")], now=NOW)
    assert len(stored(conn)) == 4
    with write_transaction(conn):  # 1 again with "a" only, 2 clean; 3 untouched
        store.record_data_quality("companies", ["1", "2"], [("1", "a")], now=later)
    assert stored(conn) == {
        ("companies", "1", "a"): ("2026-11-21T12:00:00Z", "2026-11-21T12:05:00Z"),
        ("devices", "9", "a"): ("2026-11-21T12:00:00Z", "2026-11-21T12:00:00Z"),
    }
    assert store.data_quality_counts() == {"companies": 1, "devices": 1}
    with write_transaction(conn):
        store.record_data_quality("companies", ["4", "5"], [("4", "a"), ("5", "a")], now=later)
        store.forget_data_quality("devices", ["9"])
    [summary] = store.data_quality_summary()
    assert (summary.entity, summary.message, summary.records, summary.examples) == (
        "companies", "a", 3, ("1", "4", "5")
    )
    assert (summary.first_seen, summary.last_seen) == (NOW, later)
    with write_transaction(conn):
        store.forget_data_quality_not_seen_since("companies", later)
    assert len(stored(conn)) == 3
    with write_transaction(conn):
        store.forget_data_quality_not_seen_since("companies", later + timedelta(seconds=1))
    assert stored(conn) == {}


def test_deleting_a_record_forgets_its_warnings(conn: sqlite3.Connection) -> None:
    store = CacheStore(conn)
    with write_transaction(conn):
        conn.execute("INSERT INTO companies (crm_id, name, content_hash, synced_at) "
                     "VALUES ('1', 'Salong', 'h', '2026-11-21T12:00:00Z')")
        store.record_data_quality("companies", ["1", "2"], [("1", "a"), ("2", "a")], now=NOW)
        assert store.delete("companies", iter(["1"])) == 1
    assert set(stored(conn)) == {("companies", "2", "a")}


def test_the_summary_orders_entities_then_the_commonest_messages(
    conn: sqlite3.Connection,
) -> None:
    store = CacheStore(conn)
    with write_transaction(conn):
        store.record_data_quality("devices", ["7"], [("7", "z")], now=NOW)
        store.record_data_quality(
            "companies", ["1", "2", "3"], [("1", "b"), ("2", "b"), ("3", "a")], now=NOW
        )
    summary = [(s.entity, s.message, s.records) for s in store.data_quality_summary()]
    assert summary == [("companies", "b", 2), ("companies", "a", 1), ("devices", "z", 1)]
    assert [s.message for s in store.data_quality_summary("devices")] == ["z"]


# -- the engine ------------------------------------------------------------------------------


@pytest.fixture
def crm() -> MemoryRecords:
    records = MemoryRecords()
    records.seed(companies=8, contacts=10, devices=6, seed=2)
    return records


@pytest.fixture
def engine(tmp_path: Path, crm: MemoryRecords) -> Iterator[MirrorEngine]:
    connection = connect(tmp_path / "state" / "cache.sqlite3")
    yield MirrorEngine(connection, MemoryAdapter(crm, page_size=3), MEMORY)
    connection.close()


def quality_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("data quality")]


def test_an_incremental_cycle_stores_logs_and_later_clears_a_warning(
    engine: MirrorEngine, crm: MemoryRecords, caplog: pytest.LogCaptureFixture
) -> None:
    assert engine.run_cycle().kind == "full"
    assert stored(engine.conn) == {}
    crm.update(Entity.COMPANIES, "1", _data_quality=[UNMAPPED_7])
    crm.update(Entity.COMPANIES, "2", _data_quality=[UNMAPPED_7, "another"])
    with caplog.at_level(logging.WARNING, logger="syncd.engines.mirror"):
        assert engine.run_cycle().kind == "incremental"
    assert set(stored(engine.conn)) == {
        ("companies", "1", UNMAPPED_7), ("companies", "2", UNMAPPED_7),
        ("companies", "2", "another"),
    }
    assert sorted(quality_lines(caplog)) == [
        "data quality: 1 companies: another",
        f"data quality: 2 companies: {UNMAPPED_7}",
    ]
    assert not any("Salon" in r.getMessage() for r in caplog.records)
    caplog.clear()
    crm.update(Entity.COMPANIES, "1", _data_quality=[])
    crm.update(Entity.COMPANIES, "2", _data_quality=["another"])
    with caplog.at_level(logging.WARNING, logger="syncd.engines.mirror"):
        engine.run_cycle()
    assert set(stored(engine.conn)) == {("companies", "2", "another")}
    assert quality_lines(caplog) == ["data quality: 1 companies: another"]
    crm.delete(Entity.COMPANIES, "2")  # a deletion event: the record and its warning go
    engine.run_cycle()
    assert stored(engine.conn) == {}


def test_a_full_resync_records_staged_warnings_and_drops_unseen_ones(
    engine: MirrorEngine, crm: MemoryRecords, caplog: pytest.LogCaptureFixture
) -> None:
    for crm_id in ("1", "4", "7"):  # on different pages (3 records a page)
        crm.update(Entity.COMPANIES, crm_id, _data_quality=[UNMAPPED_7])
    store = CacheStore(engine.conn)
    with write_transaction(engine.conn):  # a record the CRM no longer has, from long ago
        store.record_data_quality("companies", ["999"], [("999", UNMAPPED_7)],
                                  now=datetime(2026, 1, 1, tzinfo=UTC))
    with caplog.at_level(logging.WARNING, logger="syncd.engines.mirror"):
        assert engine.run_full([Entity.COMPANIES, Entity.CONTACTS, Entity.DEVICES]).kind == "full"
    assert {crm_id for _, crm_id, _ in stored(engine.conn)} == {"1", "4", "7"}
    assert quality_lines(caplog) == [f"data quality: 3 companies: {UNMAPPED_7}"]
    crm.update(Entity.COMPANIES, "4", _data_quality=[])
    engine.run_full([Entity.COMPANIES])
    assert {crm_id for _, crm_id, _ in stored(engine.conn)} == {"1", "7"}


# -- status and metrics ----------------------------------------------------------------------


def test_status_and_metrics_show_the_warnings(
    engine: MirrorEngine, crm: MemoryRecords, tmp_path: Path
) -> None:
    engine.run_cycle()
    for crm_id in ("1", "2"):
        crm.update(Entity.COMPANIES, crm_id, _data_quality=[UNMAPPED_7])
    crm.update(Entity.DEVICES, next(iter(crm.records[Entity.DEVICES])), _data_quality=["odd"])
    engine.run_cycle()
    report = collect(engine.conn, tmp_path / "state")
    document = json.loads(json.dumps(report))  # what --json prints
    quality = document["data_quality"]
    assert quality["count"] == 3
    assert [(w["entity"], w["message"], w["records"], w["examples"])
            for w in quality["warnings"]] == [
        ("companies", UNMAPPED_7, 2, ["1", "2"]),
        ("devices", "odd", 1, quality["warnings"][1]["examples"]),
    ]
    assert quality["warnings"][0]["first_seen_at"].endswith("Z")
    assert not any("data quality" in p or "preset" in p for p in report["problems"])
    text = render(report)
    assert "data quality warnings: 3" in text
    assert f"  2 companies: {UNMAPPED_7} (e.g. 1, 2)" in text
    figures = overview.entities(engine.conn)
    assert {e: f.data_quality for e, f in figures.items()} == {
        "companies": 2, "contacts": 0, "devices": 1
    }
    families = {f.name: f for f in CacheCollector(lambda: engine.conn).collect()}
    samples = {s.labels["entity"]: s.value
               for s in families["syncd_data_quality_warnings"].samples}
    assert samples == {"companies": 2, "contacts": 0, "devices": 1}


def test_status_says_nothing_of_data_quality_when_there_is_none(
    engine: MirrorEngine, tmp_path: Path
) -> None:
    engine.run_cycle()
    report = collect(engine.conn, tmp_path / "state")
    assert report["data_quality"] == {"count": 0, "warnings": []}
    assert "data quality" not in render(report)


def test_the_adapter_reports_a_company_whose_requisite_preset_is_not_mapped(
    tmp_path: Path,
) -> None:
    """End to end over the fake Bitrix24: a company whose requisite has a preset of another
    country is mirrored with a data-quality warning naming the preset, which status shows."""
    from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
    from syncd.runtime import build_engine, open_cache
    from tests.conftest import make_settings

    with FakeBitrix24(seed=4, companies=30, contacts=20, devices=10, token="t") as fake:
        company = sorted(fake.records("companies"), key=int)[3]
        with fake.store.lock:
            for key in fake.store.requisite_keys("companies", int(company)):
                fake.store.requisites.rows[key]["PRESET_ID"] = "7"
        settings = make_settings(tmp_path, fake)
        conn = open_cache(settings)
        engine = build_engine(settings, conn)
        try:
            engine.run_cycle()
            rows = conn.execute(
                "SELECT entity, crm_id, message FROM data_quality"
            ).fetchall()
        finally:
            engine.adapter.close()
            conn.close()
    assert rows == [("companies", company, rows[0][2])]
    assert "preset 7" in rows[0][2]
