"""Mapping files, transforms and the mapper's behaviour on hostile input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.core.entities import CANONICAL_FIELDS, CanonicalRecord
from syncd.core.errors import ConfigError, RecordMappingError
from syncd.mappings.loader import load_mapping_set, parse_mapping

FIXTURES = Path(__file__).parent / "fixtures" / "bitrix24"
MAPPINGS = load_mapping_set("bitrix24")


def fields_of(entity: str, record: CanonicalRecord) -> dict[str, object]:
    """The record's canonical values by field name, JSON fields decoded from their stored text."""
    named: dict[str, object] = {}
    for spec, value in zip(CANONICAL_FIELDS[entity], record.values, strict=True):
        if spec.kind == "json":
            assert isinstance(value, str), spec.name
            named[spec.name] = json.loads(value)
        else:
            named[spec.name] = value
    return named


def test_every_entity_maps_every_canonical_field() -> None:
    for entity, fields in CANONICAL_FIELDS.items():
        targets = {rule.target for rule in MAPPINGS[entity].rules}
        assert targets == {f.name for f in fields}


def test_reference_contact_maps_with_typed_email() -> None:
    body = json.loads((FIXTURES / "crm.contact.list.response.json").read_text())
    record = MAPPINGS["contacts"].map(body["result"][0])
    values = fields_of("contacts", record)
    assert record.crm_id == "75"
    assert values["first_name"] == "Anastasia"
    assert values["emails"] == [{"type": "work", "value": "special-for@example.com"}]
    assert values["company_id"] is None


def test_reference_company_maps_phone() -> None:
    body = json.loads((FIXTURES / "crm.company.list.response.json").read_text())
    raw = {**body["result"][0], "DATE_MODIFY": "2026-01-27T10:27:39+01:00"}
    record = MAPPINGS["companies"].map(raw)
    values = fields_of("companies", record)
    assert values["name"] == "Crossroads"
    assert values["phones"] == [{"type": "work", "value": "+19998887766"}]
    assert record.updated_at == "2026-01-27T09:27:39Z"


def test_device_mapping_reads_spa_fields() -> None:
    raw = {
        "id": 17,
        "updatedTime": "2026-11-01T10:00:00+02:00",
        "title": "GentleMax Pro",
        "ufCrm8Brand": "Candela",
        "ufCrm8IsRental": "Y",
        "ufCrm8Handpieces": ["18 mm", ""],
        "ufCrm8WarrantyStart": "2023-05-01T03:00:00+03:00",  # midnight UTC, as rendered
        "companyId": 5,
        "contactId": None,
    }
    record = MAPPINGS["devices"].map(raw)
    values = fields_of("devices", record)
    assert record.crm_id == "17"
    assert values["ownership"] == "rental"
    assert values["handpieces"] == ["18 mm"]
    assert values["warranty_start"] == "2023-05-01"
    assert values["company_id"] == "5"
    assert values["contact_id"] is None


@pytest.mark.parametrize(
    ("rendered", "day"),
    [
        ("1985-03-14T03:00:00+03:00", "1985-03-14"),  # Tallinn, summer (the reference sample)
        ("2001-11-11T02:00:00+02:00", "2001-11-11"),  # Tallinn, winter (the API notes)
        ("2001-11-10T19:00:00-05:00", "2001-11-11"),  # New York: the evening before, in UTC-5
        ("1990-06-30T14:00:00-10:00", "1990-07-01"),  # Honolulu
        ("1990-07-01T12:00:00+12:00", "1990-07-01"),  # Auckland: midnight UTC is noon there
        ("1990-07-01T00:00:00+00:00", "1990-07-01"),
        ("1990-07-01", "1990-07-01"),  # a plain date stays as it is
    ],
)
def test_birth_date_is_the_crm_day_in_any_portal_offset(rendered: str, day: str) -> None:
    """Bitrix24 keeps a date-only field as midnight UTC and renders it in the portal's offset;
    the day is the UTC date, whatever the offset's sign and whatever the host's zone."""
    raw = {"ID": "1", "DATE_MODIFY": "2026-01-01T00:00:00+02:00", "BIRTHDATE": rendered}
    assert fields_of("contacts", MAPPINGS["contacts"].map(raw))["birth_date"] == day


def test_birth_date_ignores_the_hosts_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time as time_module

    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time_module.tzset()
    try:
        raw = {"ID": "1", "DATE_MODIFY": "2026-01-01T00:00:00+02:00",
               "BIRTHDATE": "2001-11-10T19:00:00-05:00"}
        assert fields_of("contacts", MAPPINGS["contacts"].map(raw))["birth_date"] == "2001-11-11"
    finally:
        monkeypatch.delenv("TZ")
        time_module.tzset()


def test_unmapped_fields_are_not_stored() -> None:
    raw = {
        "ID": "1",
        "DATE_MODIFY": "2026-01-01T00:00:00+02:00",
        "COMMENTS": "secret note",
        "POST": "CEO",
    }
    values = fields_of("contacts", MAPPINGS["contacts"].map(raw))
    assert "secret note" not in json.dumps(values)
    assert set(values) == {f.name for f in CANONICAL_FIELDS["contacts"]}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"ID": "x"}, "id"),
        ({"ID": "1", "DATE_MODIFY": "yesterday"}, "updated_at"),
        ({"ID": "1", "DATE_MODIFY": "2026-01-01T00:00:00"}, "updated_at"),
        ({"ID": "1", "BIRTHDATE": "14.03.1985"}, "birth_date"),
        ({"ID": "1", "EMAIL": "not-a-list"}, "emails"),
        ({"ID": "1", "COMPANY_ID": "-3"}, "company_id"),
        ({"ID": "1", "UF_CRM_LANGUAGES": ["Estonian!"]}, "languages"),
    ],
)
def test_bad_fields_are_named_without_their_value(raw: dict[str, object], field: str) -> None:
    with pytest.raises(RecordMappingError) as caught:
        MAPPINGS["contacts"].map(raw)
    assert caught.value.field == field
    for value in raw.values():
        if isinstance(value, str) and len(value) > 3:
            assert value not in str(caught.value)


def test_links_are_not_part_of_the_content_hash() -> None:
    base = {"id": 3, "updatedTime": "2026-01-01T00:00:00+02:00", "companyId": 5}
    linked = MAPPINGS["devices"].map(base)
    unlinked = MAPPINGS["devices"].map({**base, "companyId": None})
    assert linked.content_hash == unlinked.content_hash
    assert fields_of("devices", linked)["company_id"] == "5"


def test_content_hash_changes_with_content_only() -> None:
    base = {"ID": "1", "DATE_MODIFY": "2026-01-01T00:00:00+02:00", "NAME": "Mari"}
    first = MAPPINGS["contacts"].map(base)
    later = MAPPINGS["contacts"].map({**base, "DATE_MODIFY": "2026-02-01T00:00:00+02:00"})
    renamed = MAPPINGS["contacts"].map({**base, "NAME": "Maria"})
    assert first.content_hash == later.content_hash
    assert first.content_hash != renamed.content_hash


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("vendor = 'bitrix24'\nentity = 'contacts'\n[fields", "not valid TOML"),
        ("vendor = 'x'\nentity = 'contacts'\n[fields]\n", "must declare"),
        ("vendor = 'bitrix24'\nentity = 'contacts'\ncolour = 1\n", "unknown key 'colour'"),
    ],
)
def test_bad_mapping_files_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_mapping(text, label="t.toml", vendor="bitrix24", entity="contacts")


def test_mapping_file_with_unknown_transform_is_rejected(tmp_path: Path) -> None:
    for entity in CANONICAL_FIELDS:
        source = Path(__file__).parents[1] / "mappings" / "bitrix24" / f"{entity}.toml"
        (tmp_path / f"{entity}.toml").write_text(source.read_text())
    path = tmp_path / "devices.toml"
    path.write_text(path.read_text().replace('transform = "flag"', 'transform = "eval"'))
    with pytest.raises(ConfigError, match=r"fields\.ownership\.transform 'eval'"):
        load_mapping_set("bitrix24", tmp_path)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    sorted(
        {
            rule.path[0]
            for m in MAPPINGS.entities.values()
            for rule in (m.id_rule, m.updated_rule, *m.rules)
        }
    )
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    entity=st.sampled_from(sorted(CANONICAL_FIELDS)),
    record=st.dictionaries(field_names | st.text(max_size=8), json_values, max_size=12)
    | json_values,
)
def test_arbitrary_json_maps_or_is_quarantined(entity: str, record: object) -> None:
    try:
        mapped = MAPPINGS[entity].map(record)
    except RecordMappingError as error:
        assert str(error)
    else:
        assert mapped.crm_id.isdigit()
        json.dumps(fields_of(entity, mapped))
