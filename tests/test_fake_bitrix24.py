"""The fake Bitrix24 server, exercised over real loopback HTTP with httpx (no mocks)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.connectors.crm.bitrix24.wire import php_query_encode

FIXTURES = Path(__file__).parent / "fixtures" / "bitrix24"
ETID = 1040


def fixture(name: str) -> Any:
    """A reference body from Bitrix24's docs."""
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="module")
def shared() -> Iterator[FakeBitrix24]:
    """A read-only fake shared by the tests that do not mutate anything."""
    with FakeBitrix24(seed=1, companies=60, contacts=260, devices=120) as fake:
        yield fake


@pytest.fixture()
def fake() -> Iterator[FakeBitrix24]:
    """A fresh fake for tests that mutate data, arm faults or read the request log."""
    with FakeBitrix24(seed=3, companies=20, contacts=80, devices=40, events_allowed=True) as fake:
        yield fake


@pytest.fixture()
def client(fake: FakeBitrix24) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.webhook_url, timeout=5) as client:
        yield client


@pytest.fixture()
def shared_client(shared: FakeBitrix24) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared.webhook_url, timeout=5) as client:
        yield client


def call(client: httpx.Client, method: str, **params: Any) -> Any:
    response = client.post(f"{method}.json", json=params)
    assert response.status_code == 200, response.text
    return response.json()


def keyset_ids(client: httpx.Client, method: str, id_field: str = "ID", **extra: Any) -> list[int]:
    """All IDs via the fast scan: >ID filter, ID order, start=-1."""
    ids: list[int] = []
    last = 0
    while True:
        body = call(client, method, filter={f">{id_field}": last}, order={id_field: "ASC"},
                    start=-1, select=[id_field], **extra)
        assert body["total"] == 0 and "next" not in body
        rows = body["result"]["items"] if method == "crm.item.list" else body["result"]
        ids.extend(int(row[id_field]) for row in rows)
        if len(rows) < 50:
            return ids
        last = int(rows[-1][id_field])


def digest(value: Any) -> str:
    """A fingerprint, so failures never print generated personal data."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def instant(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def assert_time_block(block: dict[str, Any], reference: dict[str, Any]) -> None:
    assert set(reference) <= set(block)
    assert {"operating_reset_at", "operating"} <= set(block)
    for key in ("start", "finish", "duration", "processing"):
        assert isinstance(block[key], float)
    datetime.fromisoformat(block["date_start"])
    assert block["date_start"][-6:] in ("+02:00", "+03:00")


# --- envelopes against the reference fixtures ---------------------------------------------


def test_fixtures_copied_verbatim() -> None:
    names = sorted(path.name for path in FIXTURES.iterdir())
    assert "SOURCES.md" in names and len(names) == 20
    for name in names:
        if name.endswith(".json"):
            fixture(name)


def test_contact_list_envelope_matches_reference(shared_client: httpx.Client) -> None:
    reference = fixture("crm.contact.list.response.json")
    body = call(shared_client, "crm.contact.list", filter={"<=ID": 5},
                select=["ID", "NAME", "LAST_NAME", "ASSIGNED_BY_ID", "DATE_CREATE", "EMAIL"])
    assert list(body) == list(reference)  # result, total, time (no next: fewer than 50)
    assert_time_block(body["time"], reference["time"])
    ref_row = reference["result"][0]
    for row in body["result"]:
        assert set(row) <= set(ref_row) - {"EXPORT"}
        assert all(isinstance(value, str) for key, value in row.items() if key != "EMAIL")
        for entry in row.get("EMAIL", []):
            assert set(entry) == set(ref_row["EMAIL"][0])
            assert entry["TYPE_ID"] == "EMAIL" and isinstance(entry["ID"], str)
            assert entry["VALUE_TYPE"] in ("WORK", "HOME", "MAILING", "OTHER")


def test_company_list_envelope_matches_reference(shared_client: httpx.Client) -> None:
    reference = fixture("crm.company.list.response.json")
    body = call(shared_client, "crm.company.list", select=["TITLE", "ASSIGNED_BY_ID", "PHONE"])
    assert set(reference) <= set(body) and body["next"] == 50 and body["total"] == 60
    assert_time_block(body["time"], reference["time"])
    ref_row = reference["result"][0]
    with_phone = [row for row in body["result"] if "PHONE" in row]
    assert with_phone and all(set(row) == set(ref_row) for row in with_phone)
    assert set(with_phone[0]["PHONE"][0]) == set(ref_row["PHONE"][0])
    assert all(set(row) <= set(ref_row) for row in body["result"])


def test_requisite_and_address_envelopes_match_reference(shared_client: httpx.Client) -> None:
    reference = fixture("crm.requisite.list.response.json")
    body = call(shared_client, "crm.requisite.list", filter={"ENTITY_TYPE_ID": 4, "<=ENTITY_ID": 3},
                select=["ENTITY_TYPE_ID", "ENTITY_ID", "ID", "NAME"])
    assert list(body) == list(reference)
    assert [set(row) for row in body["result"]] == [set(reference["result"][0])] * 3
    assert all(isinstance(value, str) for row in body["result"] for value in row.values())

    reference = fixture("crm.address.list.response.json")
    body = call(shared_client, "crm.address.list", filter={"ENTITY_TYPE_ID": 8}, start=0)
    ref_row = reference["result"][0]
    assert set(reference) <= set(body)
    for row in body["result"]:
        assert list(row) == list(ref_row)  # same fields, same order, no ID / DATE_MODIFY
        assert row["COUNTRY_CODE"] is None
        assert all(isinstance(v, str) for k, v in row.items() if k != "COUNTRY_CODE")
        assert row["COUNTRY"] in ("Estonia", "Latvia", "Lithuania")


def test_item_list_envelope_matches_reference(shared_client: httpx.Client) -> None:
    reference = fixture("crm.item.list.response.json")
    body = call(shared_client, "crm.item.list", entityTypeId=ETID, start=100)
    assert list(body) == list(reference)
    assert list(body["result"]) == ["items"] and body["total"] == 120
    items = body["result"]["items"]
    assert len(items) == 20
    for item in items:
        assert isinstance(item["id"], int) and isinstance(item["assignedById"], int)
        assert item["entityTypeId"] == ETID and item["stageId"] == "DT1040_8:NEW"
        assert item["companyId"] is None or isinstance(item["companyId"], int)
        assert item["contactId"] is None or isinstance(item["contactId"], int)
        assert isinstance(item["ufCrm8Handpieces"], list)
        assert item["ufCrm8IsRental"] in ("Y", "N")


def test_error_bodies_match_reference(shared_client: httpx.Client) -> None:
    response = shared_client.post("crm.item.list.json",
                                  json={"entityTypeId": ETID, "filter": {"FIELD": 1}})
    assert response.status_code == 400
    assert response.json() == fixture("crm.item.list.error.invalid-filter.json")

    response = shared_client.post("crm.contact.list.json", json={"filter": {">NOPE": 1}})
    assert response.status_code == 400
    body = response.json()
    assert list(body) == list(fixture("crm.contact.list.error.access-denied.json"))
    assert body["error"] == "" and "NOPE" in body["error_description"]


# --- paging ----------------------------------------------------------------------------------


def test_offset_paging_has_next_and_total(shared: FakeBitrix24,
                                          shared_client: httpx.Client) -> None:
    ids: list[int] = []
    start: int | None = 0
    pages = 0
    while start is not None:
        body = call(shared_client, "crm.contact.list", start=start, select=["ID"])
        assert body["total"] == 260
        assert body.get("next") == (start + 50 if start + 50 < 260 else None)
        ids.extend(int(row["ID"]) for row in body["result"])
        start = body.get("next")
        pages += 1
    assert pages == 6
    assert ids == sorted(int(key) for key in shared.records("contacts"))
    past_end = call(shared_client, "crm.contact.list", start=300)
    assert past_end["result"] == [] and past_end["total"] == 260 and "next" not in past_end


def test_keyset_scan_lists_everything_without_count(shared: FakeBitrix24,
                                                    shared_client: httpx.Client) -> None:
    assert keyset_ids(shared_client, "crm.contact.list") == [
        int(key) for key in shared.records("contacts")
    ]
    assert keyset_ids(shared_client, "crm.item.list", "id", entityTypeId=ETID) == [
        int(key) for key in shared.records("devices")
    ]


def test_order_desc_and_by_modification(shared: FakeBitrix24,
                                        shared_client: httpx.Client) -> None:
    body = call(shared_client, "crm.contact.list", order={"ID": "DESC"}, select=["ID"])
    ids = [int(row["ID"]) for row in body["result"]]
    assert ids == sorted(ids, reverse=True) and ids[0] == max(map(int, shared.records("contacts")))
    body = call(shared_client, "crm.item.list", entityTypeId=ETID, order={"updatedTime": "asc"},
                select=["id", "updatedTime"])
    stamps = [instant(item["updatedTime"]) for item in body["result"]["items"]]
    assert stamps == sorted(stamps)


# --- filters and select ----------------------------------------------------------------------


def test_modified_since_filter_compares_instants_across_offsets(
    shared: FakeBitrix24, shared_client: httpx.Client
) -> None:
    records = shared.records("contacts")
    stamps = sorted(instant(row["DATE_MODIFY"]) for row in records.values())
    cutoff = stamps[len(stamps) // 2]
    expected = {int(key) for key, row in records.items() if instant(row["DATE_MODIFY"]) > cutoff}
    for hours in (5, -4, 0):
        text = datetime.fromtimestamp(cutoff, timezone(timedelta(hours=hours))).isoformat()
        text = text.replace("+00:00", "Z")
        assert text[-6:] not in ("+02:00", "+03:00")
        got: set[int] = set()
        start: int | None = 0
        while start is not None:
            body = call(shared_client, "crm.contact.list", filter={">DATE_MODIFY": text},
                        select=["ID"], start=start)
            got.update(int(row["ID"]) for row in body["result"])
            start = body.get("next")
        assert got == expected, text


def test_id_filters(shared_client: httpx.Client) -> None:
    body = call(shared_client, "crm.contact.list", filter={"@ID": [3, "5", 9999]}, select=["ID"])
    assert [row["ID"] for row in body["result"]] == ["3", "5"]
    body = call(shared_client, "crm.contact.list", filter={">=ID": 10, "<ID": 14, "!ID": 12},
                select=["ID"])
    assert [row["ID"] for row in body["result"]] == ["10", "11", "13"]
    body = call(shared_client, "crm.contact.list", filter={"!@ID": list(range(1, 300))})
    assert body["result"] == [] and body["total"] == 0
    body = call(shared_client, "crm.contact.list", filter={"ID": [2, 4]}, select=["ID"])
    assert [row["ID"] for row in body["result"]] == ["2", "4"]  # an array value means IN


def test_requisites_and_addresses_by_owner(shared: FakeBitrix24,
                                           shared_client: httpx.Client) -> None:
    owners = [2, 4, 7]
    body = call(shared_client, "crm.requisite.list",
                filter={"ENTITY_TYPE_ID": 4, "@ENTITY_ID": owners})
    assert sorted(int(row["ENTITY_ID"]) for row in body["result"]) == owners
    for row in body["result"]:
        assert row["PRESET_ID"] == "1" and row["RQ_RESIDENCE_COUNTRY"] in ("EE", "LV", "LT")
    requisite_ids = [row["ID"] for row in body["result"]]
    body = call(shared_client, "crm.address.list",
                filter={"ENTITY_TYPE_ID": 8, "@ENTITY_ID": requisite_ids})
    expected = [a for owner in owners for a in shared.addresses_of("companies", owner)]
    assert sorted(map(digest, body["result"])) == sorted(map(digest, expected))
    assert all(1 <= len(shared.addresses_of("companies", owner)) <= 2 for owner in owners)


def test_select_rules_of_the_old_family(shared_client: httpx.Client) -> None:
    default = call(shared_client, "crm.contact.list")["result"]
    assert all("PHONE" not in row and "EMAIL" not in row for row in default)
    assert all({"UF_CRM_LANGUAGES", "UF_CRM_NEWSLETTERS", "COMMENTS"} <= set(row)
               for row in default)
    star = call(shared_client, "crm.contact.list", select=["*"])["result"]
    assert all(not any(key.startswith("UF_") for key in row) for row in star)
    named = call(shared_client, "crm.contact.list", select=["NAME", "PHONE", "UF_*"])["result"]
    assert all(set(row) <= {"ID", "NAME", "PHONE", "UF_CRM_LANGUAGES", "UF_CRM_NEWSLETTERS"}
               for row in named)
    assert any("PHONE" in row for row in named) and all("ID" in row for row in named)
    items = call(shared_client, "crm.item.list", entityTypeId=ETID,
                 select=["title", "UF_CRM_8_BRAND"])["result"]["items"]
    assert all(set(item) == {"id", "title", "ufCrm8Brand"} for item in items)


def test_php_bracket_params_via_get_and_form(shared_client: httpx.Client) -> None:
    params = {"filter": {"<ID": 4}, "select": ["ID", "NAME"], "order": {"ID": "DESC"}}
    query = php_query_encode(params)
    body = shared_client.get(f"crm.contact.list?{query}").json()
    assert [row["ID"] for row in body["result"]] == ["3", "2", "1"]
    body = shared_client.post(
        "crm.contact.list", content=query.replace("filter", "FILTER"),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ).json()
    assert [row["ID"] for row in body["result"]] == ["3", "2", "1"]


# --- gets, the two error families, auth --------------------------------------------------------


def test_get_methods_and_error_families(shared_client: httpx.Client) -> None:
    contact = call(shared_client, "crm.contact.get", id=1)["result"]
    assert contact["ID"] == "1" and "UF_CRM_LANGUAGES" in contact
    response = shared_client.post("crm.company.get.json", json={"id": 999_999})
    assert (response.status_code, response.json()) == (
        400, {"error": "", "error_description": "Not found"})
    item = call(shared_client, "crm.item.get", entityTypeId=ETID, id=1)["result"]["item"]
    assert item["id"] == 1
    response = shared_client.post("crm.item.get.json", json={"entityTypeId": ETID, "id": 99_999})
    assert (response.status_code, response.json()) == (
        400, {"error": "NOT_FOUND", "error_description": "Element not found"})
    response = shared_client.post("crm.item.list.json", json={"entityTypeId": 31})
    assert response.status_code == 400 and response.json()["error"] == "NOT_FOUND"
    assert call(shared_client, "server.time")["result"][-6:] in ("+02:00", "+03:00")


def test_auth_and_unknown_method(shared: FakeBitrix24) -> None:
    wrong_token = httpx.post(f"{shared.base_url}nope/server.time.json")
    wrong_user = httpx.post(shared.webhook_url.replace("/rest/1/", "/rest/2/") + "server.time")
    for response in (wrong_token, wrong_user):
        assert response.status_code == 401
        assert response.json() == {"error": "NO_AUTH_FOUND",
                                   "error_description": "Wrong authorization data"}
    response = httpx.post(f"{shared.webhook_url}crm.nothing.here.json")
    assert response.status_code == 404
    assert response.json() == {"error": "ERROR_METHOD_NOT_FOUND",
                               "error_description": "Method not found!"}


# --- batch -----------------------------------------------------------------------------------


def test_batch_results_errors_and_php_empty_maps(shared_client: httpx.Client) -> None:
    reference = fixture("batch.response.json")
    cmd = {
        "first": "crm.contact.list?" + php_query_encode({"filter": {"<=ID": 3}, "select": ["ID"]}),
        "missing": f"crm.item.get?entityTypeId={ETID}&id=99999",
        "ref": "crm.contact.get?id=$result[first][2][ID]",
    }
    body = call(shared_client, "batch", halt=0, cmd=cmd)
    assert list(body) == list(reference)
    assert set(body["result"]) == set(reference["result"])
    inner = body["result"]
    assert [row["ID"] for row in inner["result"]["first"]] == ["1", "2", "3"]
    assert inner["result"]["ref"]["ID"] == "3"
    assert inner["result_error"] == {
        "missing": {"error": "NOT_FOUND", "error_description": "Element not found"}}
    assert inner["result_total"] == {"first": 3}
    assert inner["result_next"] == []  # an empty map serialises as []
    assert set(inner["result_time"]) == set(cmd)
    assert set(inner["result_time"]["first"]) == set(reference["result"]["result_time"]["get_user"])

    clean = call(shared_client, "batch", cmd={"t": "server.time"})["result"]
    assert clean["result_error"] == [] and clean["result_total"] == []
    paged = call(shared_client, "batch", cmd={"p": "crm.contact.list?start=0"})["result"]
    assert paged["result_next"] == {"p": 50} and paged["result_total"] == {"p": 260}


def test_batch_halt_nesting_and_limit(shared_client: httpx.Client) -> None:
    cmd = {"a": "crm.item.get?entityTypeId=1040&id=99999", "b": "server.time"}
    halted = call(shared_client, "batch", halt=1, cmd=cmd)["result"]
    assert halted["result"] == [] and list(halted["result_error"]) == ["a"]
    nested = call(shared_client, "batch", cmd={"n": "batch?cmd[x]=server.time"})["result"]
    assert nested["result_error"]["n"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
    unknown = call(shared_client, "batch", cmd=["crm.nope", "server.time"])["result"]
    # PHP arrays: keys 0..n-1 serialise as a JSON list, anything else as an object
    assert unknown["result_error"] == [{"error": "ERROR_METHOD_NOT_FOUND",
                                        "error_description": "Method not found!"}]
    assert isinstance(unknown["result"], dict) and list(unknown["result"]) == ["1"]
    listed = call(shared_client, "batch", cmd=["server.time"] * 50)["result"]["result"]
    assert isinstance(listed, list) and len(listed) == 50
    too_many = shared_client.post("batch.json", json={"cmd": ["server.time"] * 51})
    assert too_many.status_code == 400
    assert too_many.json()["error"] == "ERROR_BATCH_LENGTH_EXCEEDED"


def test_batch_logs_commands_and_url_encoded_form(fake: FakeBitrix24,
                                                  client: httpx.Client) -> None:
    command = "crm.contact.list?" + php_query_encode({"filter": {">ID": 70}, "start": -1})
    form = f"halt=0&cmd[k]={quote(command, safe='')}"
    response = client.post("batch", content=form,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200
    assert all(int(row["ID"]) > 70 for row in response.json()["result"]["result"]["k"])
    assert [method for method, _ in fake.request_log] == ["batch", "crm.contact.list"]
    assert fake.request_log[1][1]["filter"] == {">ID": "70"}
    assert fake.request_count == 1


# --- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "error"),
    [
        ("query_limit", 503, "QUERY_LIMIT_EXCEEDED"),
        ("operation_time_limit", 429, "OPERATION_TIME_LIMIT"),
        ("internal_error", 500, "INTERNAL_SERVER_ERROR"),
        ("auth_error", 401, "NO_AUTH_FOUND"),
    ],
)
def test_error_faults(fake: FakeBitrix24, client: httpx.Client, kind: str, status: int,
                      error: str) -> None:
    fake.faults.add(kind, times=2, method="crm.contact.*", retry_after=7)
    assert client.post("server.time").status_code == 200
    for _ in range(2):
        response = client.post("crm.contact.list.json", json={})
        assert response.status_code == status and response.json()["error"] == error
        assert response.headers["Retry-After"] == "7"
    assert client.post("crm.contact.list.json", json={}).status_code == 200
    if kind == "query_limit":
        assert response.json() == fixture("error.QUERY_LIMIT_EXCEEDED.assembled.json")


def test_html_error_and_malformed_json(fake: FakeBitrix24, client: httpx.Client) -> None:
    fake.faults.add("html_error")
    response = client.post("server.time")
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html") and b"nginx" in response.content
    fake.faults.add("malformed_json")
    response = client.post("server.time")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)
    assert client.post("server.time").json()["result"]


def test_drop_and_truncated_json_break_the_connection(fake: FakeBitrix24,
                                                      client: httpx.Client) -> None:
    for kind in ("drop", "truncated_json"):
        fake.faults.add(kind, method="server.time")
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            client.post("server.time")
        assert client.post("server.time").status_code == 200  # the client reconnects


def test_drop_after_processing_performs_the_write(fake: FakeBitrix24,
                                                  client: httpx.Client) -> None:
    fake.faults.add("drop_after_processing", method="crm.contact.update")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post("crm.contact.update.json", json={"id": 2, "fields": {"POST": "Omanik 2"}})
    assert fake.records("contacts")["2"]["POST"] == "Omanik 2"


def test_slow_fault_after_and_glob(fake: FakeBitrix24, client: httpx.Client) -> None:
    fake.faults.add("slow", delay=0.4, method="crm.*.list", after=1)
    started = time.perf_counter()
    call(client, "crm.company.list")  # let through by `after`
    call(client, "server.time")  # does not match the glob
    assert time.perf_counter() - started < 0.4
    started = time.perf_counter()
    call(client, "crm.contact.list")
    assert time.perf_counter() - started >= 0.4
    assert fake.faults.pending == []


def test_faults_inside_a_batch(fake: FakeBitrix24, client: httpx.Client) -> None:
    fake.faults.add("operation_time_limit", method="crm.contact.list")
    body = call(client, "batch", cmd={"a": "crm.contact.list", "b": "crm.company.list"})
    assert body["result"]["result_error"]["a"]["error"] == "OPERATION_TIME_LIMIT"
    assert len(body["result"]["result"]["b"]) == 20
    fake.faults.add("drop", method="crm.company.list")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post("batch.json", json={"cmd": {"b": "crm.company.list"}})


def test_leaky_bucket_rate_limit() -> None:
    fake = FakeBitrix24(seed=1, companies=2, contacts=2, devices=2, rate_limit=(3, 0.01))
    with fake, httpx.Client(base_url=fake.webhook_url) as client:
        statuses = [client.post("server.time").status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 503, 503]


# --- mutations, clock, events ---------------------------------------------------------------


def test_delete_company_cascades_and_unbinds_without_bumping(fake: FakeBitrix24) -> None:
    contacts = fake.records("contacts")
    company = next(row["COMPANY_ID"] for row in contacts.values() if row["COMPANY_ID"])
    bound = {key: row["DATE_MODIFY"] for key, row in contacts.items()
             if row["COMPANY_ID"] == company}
    devices = {key: row["updatedTime"] for key, row in fake.records("devices").items()
               if row["companyId"] == int(company)}
    assert fake.requisites_of("companies", company) and fake.addresses_of("companies", company)
    assert fake.delete("companies", company) and not fake.delete("companies", company)
    assert company not in fake.records("companies")
    assert fake.requisites_of("companies", company) == []
    assert fake.addresses_of("companies", company) == []
    after = fake.records("contacts")
    for key, modified in bound.items():
        assert after[key]["COMPANY_ID"] is None and after[key]["DATE_MODIFY"] == modified
    for key, updated in devices.items():
        device = fake.records("devices")[key]
        assert device["companyId"] is None and device["updatedTime"] == updated


def test_update_create_and_clock(fake: FakeBitrix24, client: httpx.Client) -> None:
    fake.clock_offset_seconds = 86_400
    before = time.time()
    row = fake.update("devices", "5", ufCrm8Location="Tartu", assignedById="3")
    assert row["ufCrm8Location"] == "Tartu" and row["assignedById"] == 3
    assert instant(row["updatedTime"]) >= int(before) + 86_400
    skewed = fake.update("contacts", 4, POST="Kosmeetik", skew_seconds=-7200)
    assert instant(skewed["DATE_MODIFY"]) < time.time() + 86_400 - 7000
    new_id = fake.create("contacts", NAME="Mari", COMPANY_ID=3)
    created = fake.records("contacts")[new_id]
    assert created["NAME"] == "Mari" and created["COMPANY_ID"] == "3"
    assert int(new_id) > max(int(key) for key in fake.records("contacts") if key != new_id)
    server_time = instant(call(client, "server.time")["result"])
    assert server_time >= before + 86_400 - 1
    changed = call(client, "crm.contact.list", filter={">=DATE_MODIFY": created["DATE_MODIFY"]},
                   select=["ID"])["result"]
    assert {row["ID"] for row in changed} == {new_id}


def test_rest_writes(fake: FakeBitrix24, client: httpx.Client) -> None:
    new_id = call(client, "crm.contact.add", fields={"NAME": "Test", "COMPANY_ID": 2,
                                                     "PHONE": [{"VALUE": "+372 5000 0001"}]})
    assert isinstance(new_id["result"], int)
    contact = call(client, "crm.contact.get", id=new_id["result"])["result"]
    assert contact["COMPANY_ID"] == "2" and "EMAIL" not in contact
    phone_id = contact["PHONE"][0]["ID"]
    replacement = {"VALUE": "+372 5000 0002", "VALUE_TYPE": "HOME"}
    call(client, "crm.contact.update", id=contact["ID"],
         fields={"PHONE": [{"ID": phone_id, "DELETE": "Y"}, replacement]})
    phones = fake.records("contacts")[contact["ID"]]["PHONE"]
    assert [(p["VALUE"], p["VALUE_TYPE"]) for p in phones] == [("+372 5000 0002", "HOME")]
    item = call(client, "crm.item.add", entityTypeId=ETID,
                fields={"title": "Fotona SP Dynamis", "companyId": "3"})["result"]["item"]
    assert isinstance(item["id"], int) and item["companyId"] == 3
    updated = call(client, "crm.item.update", entityTypeId=ETID, id=item["id"],
                   fields={"ufCrm8Location": "Pärnu"})["result"]["item"]
    assert updated["ufCrm8Location"] == "Pärnu"
    assert call(client, "crm.item.delete", entityTypeId=ETID, id=item["id"])["result"] == []
    assert str(item["id"]) not in fake.records("devices")
    assert call(client, "crm.contact.delete", id=contact["ID"])["result"] is True


def test_mutate_random_summary(fake: FakeBitrix24) -> None:
    summary = fake.mutate_random(creates=6, updates=9, deletes=4, seed=7)
    assert set(summary) == {"created", "updated", "deleted"}
    assert sum(map(len, summary["created"].values())) == 6
    assert sum(map(len, summary["updated"].values())) == 9
    assert sum(map(len, summary["deleted"].values())) == 4
    for entity, ids in summary["deleted"].items():
        assert not set(ids) & set(fake.records(entity))
    for entity, ids in summary["created"].items():
        assert set(ids) <= set(fake.records(entity))


def test_offline_events(fake: FakeBitrix24, client: httpx.Client) -> None:
    reference = fixture("event.offline.get.response.json")
    fake.delete("contacts", 3)
    fake.delete("devices", 4)
    body = call(client, "event.offline.get", clear=0)
    assert list(body) == list(reference) and list(body["result"]) == list(reference["result"])
    process_id = body["result"]["process_id"]
    assert isinstance(process_id, str) and process_id
    events = body["result"]["events"]
    assert [set(event) for event in events] == [set(reference["result"]["events"][0])] * 2
    assert [(e["EVENT_NAME"], e["EVENT_DATA"]) for e in events] == [
        ("ONCRMCONTACTDELETE", {"FIELDS": {"ID": "3"}}),
        ("ONCRMDYNAMICITEMDELETE", {"FIELDS": {"ID": 4, "ENTITY_TYPE_ID": ETID}}),
    ]
    assert call(client, "event.offline.get")["result"] == {"process_id": None, "events": []}
    assert len(call(client, "event.offline.list")["result"]) == 2
    assert call(client, "event.offline.clear", process_id=process_id)["result"] is True
    assert call(client, "event.offline.list")["result"] == []
    fake.delete("companies", 2)
    body = call(client, "event.offline.get")  # clear=1: delete on read
    assert body["result"]["process_id"] is None
    assert body["result"]["events"][0]["EVENT_NAME"] == "ONCRMCOMPANYDELETE"
    assert call(client, "event.offline.get")["result"]["events"] == []


def test_offline_events_need_an_app_context(shared_client: httpx.Client) -> None:
    response = shared_client.post("event.offline.get.json", json={})
    assert response.status_code == 403
    assert response.json() == {"error": "ACCESS_DENIED",
                               "error_description": "Access denied! Application context required"}


# --- dataset -------------------------------------------------------------------------------------


def test_dataset_is_deterministic_and_realistic(shared: FakeBitrix24) -> None:
    again = FakeBitrix24(seed=1, companies=60, contacts=260, devices=120)
    other = FakeBitrix24(seed=2, companies=60, contacts=260, devices=120)
    for entity in ("companies", "contacts", "devices"):
        assert digest(again.records(entity)) == digest(shared.records(entity))
    assert digest(other.records("contacts")) != digest(shared.records("contacts"))
    contacts = shared.records("contacts")
    linked = sum(1 for row in contacts.values() if row["COMPANY_ID"] is not None)
    assert 0.6 < linked / len(contacts) < 0.9
    assert all(isinstance(row["UF_CRM_LANGUAGES"], list) for row in contacts.values())
    vat_ids = [req["RQ_VAT_ID"] for key in shared.records("companies")
               for req in shared.requisites_of("companies", key)]
    estonian = [vat for vat in vat_ids if vat.startswith("EE")]
    assert estonian and "" in vat_ids
    for vat in estonian:
        digits = [int(d) for d in vat[2:]]
        assert len(digits) == 9
        weights = (3, 7, 1, 3, 7, 1, 3, 7, 1)
        assert sum(w * d for w, d in zip(weights, digits, strict=True)) % 10 == 0


def test_large_dataset_builds_quickly() -> None:
    started = time.perf_counter()
    FakeBitrix24(seed=5, companies=2_000, contacts=10_000, devices=5_000)
    assert time.perf_counter() - started < 4.0


def test_restart_keeps_the_url_and_stop_cuts_connections() -> None:
    fake = FakeBitrix24(seed=1, companies=2, contacts=2, devices=2).start()
    url = fake.webhook_url
    with httpx.Client(base_url=url) as client:
        assert client.post("server.time").status_code == 200
        fake.stop()
        with pytest.raises(httpx.TransportError):
            client.post("server.time")
        fake.start()
        try:
            assert fake.webhook_url == url
            assert client.post("server.time").status_code == 200
        finally:
            fake.stop()


# --- control API and standalone mode ----------------------------------------------------------


def test_control_api(fake: FakeBitrix24, client: httpx.Client) -> None:
    control = httpx.Client(base_url=fake.control_url)
    stats = control.get("stats").json()
    assert stats["counts"]["contacts"] == 80 and stats["request_count"] == 0
    summary = control.post("mutate", json={"creates": 3, "updates": 2, "deletes": 1,
                                           "seed": 1}).json()
    assert sum(map(len, summary["created"].values())) == 3
    armed = control.post("faults", json={"kind": "internal_error", "method": "server.time"})
    assert armed.is_success
    assert client.post("server.time").status_code == 500
    control.post("faults", json={"kind": "query_limit", "times": 5})
    assert control.delete("faults").json() == {"ok": True}
    assert client.post("server.time").status_code == 200
    assert control.post("faults", json={"kind": "nonsense"}).status_code == 400
    records = control.get("records", params={"entity": "companies"}).json()
    assert records.keys() == fake.records("companies").keys()
    assert control.get("records", params={"entity": "leads"}).status_code == 404
    first = next(iter(records.values()))
    assert first["_requisites"] and first["_addresses"]
    assert control.get("stats").json()["request_count"] == 2
    control.close()


def test_standalone_module_prints_ready_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "syncd.connectors.crm.bitrix24.fake", "--seed", "2",
         "--companies", "3",
         "--contacts", "5", "--devices", "2", "--token", "tok", "--events"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:") and line.endswith("/rest/1/tok/")
        url = line.split(" ", 1)[1]
        assert httpx.post(url + "event.offline.get.json", json={}).status_code == 200
        assert len(httpx.post(url + "crm.company.list.json").json()["result"]) == 3
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
