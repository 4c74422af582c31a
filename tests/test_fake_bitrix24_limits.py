"""The fake Bitrix24's limits and the batch behaviour a chained-batch lister depends on, over
real loopback HTTP with httpx (no mocks): unresolvable ``$result`` references, empty
comparisons, the operating-time budget, the 50-command cap, the between-commands hook, the
limits control API, batch faults and the indexed list plans."""

from __future__ import annotations

import threading
from collections.abc import Container, Iterator
from typing import Any

import httpx
import pytest

from syncd.connectors.crm.bitrix24.client import classify
from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.connectors.crm.bitrix24.fake.__main__ import operating_budget, parse_args
from syncd.connectors.crm.bitrix24.fake.clock import FakeClock
from syncd.connectors.crm.bitrix24.fake.operating import OperatingBudget
from syncd.connectors.crm.bitrix24.wire import php_query_encode
from syncd.core.errors import RateLimitedError
from tests.test_fake_bitrix24 import call

ETID = 1040
DROPPED = (httpx.RemoteProtocolError, httpx.ReadError)
OPERATION_TIME_LIMIT = {
    "error": "OPERATION_TIME_LIMIT",
    "error_description": "Method is blocked due to operation time limit.",
}
T0 = 1_800_000_000.0  # a whole number of minutes since the epoch


class ManualClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def fake() -> Iterator[FakeBitrix24]:
    with FakeBitrix24(seed=3, companies=20, contacts=80, devices=60) as fake:
        yield fake


@pytest.fixture()
def client(fake: FakeBitrix24) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.webhook_url, timeout=5) as client:
        yield client


@pytest.fixture()
def control(fake: FakeBitrix24) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.control_url, timeout=5) as control:
        yield control



def command(method: str, **params: Any) -> str:
    return f"{method}?{php_query_encode(params)}"


def contact_page(after: Any, **extra: Any) -> str:
    """A keyset page of contacts after ``after`` (a value or a ``$result`` reference)."""
    return command("crm.contact.list", filter={">ID": after, **extra}, order={"ID": "ASC"},
                   select=["ID"], start=-1)


def ids(rows: list[dict[str, Any]], field: str = "ID") -> list[int]:
    return [int(row[field]) for row in rows]


def budget(clock: ManualClock, limit: float = 1.0, cost: float = 0.5) -> OperatingBudget:
    """A budget charging exactly ``cost`` per call (the measured time is scaled to nothing)."""
    return OperatingBudget(limit_seconds=limit, cost_per_call=cost, scale=0.0, clock=clock)


# --- unresolvable $result references and empty comparisons ------------------------------------


def test_unresolvable_references_become_empty_strings(fake: FakeBitrix24,
                                                      client: httpx.Client) -> None:
    cmd = {
        "c0": contact_page(0, **{"<=ID": 20}),  # 20 rows or fewer: there is no [49]
        "c1": contact_page("$result[c0][49][ID]"),
        "c2": command("crm.contact.list", filter={"NAME": "x$result[c0][49][ID]y"}),
        "c3": command("crm.contact.get", id="$result[nope][0][ID]"),
        "c4": contact_page("$result[c3][ID]"),  # c3 failed: it has no result
        "c5": contact_page("$result[c0][0][ID]"),  # resolvable, for contrast
    }
    body = call(client, "batch", halt=0, cmd=cmd)["result"]
    logged = {index: params for index, (method, params) in enumerate(fake.request_log)}
    assert logged[2]["filter"][">ID"] == ""
    assert logged[3]["filter"]["NAME"] == "xy"
    assert logged[4]["id"] == ""
    assert logged[5]["filter"][">ID"] == ""
    assert logged[6]["filter"][">ID"] == str(ids(body["result"]["c0"])[0])
    assert list(body["result_error"]) == ["c3"]
    # the hazard: an unresolved ">ID" is no condition, so the page starts over
    first_page = call(client, "crm.contact.list", order={"ID": "ASC"}, select=["ID"], start=-1)
    assert ids(body["result"]["c1"]) == ids(first_page["result"])
    assert ids(body["result"]["c4"]) == ids(first_page["result"])
    assert ids(body["result"]["c5"])[0] > ids(body["result"]["c0"])[0]


def test_unresolved_item_reference_lists_items_from_the_start(client: httpx.Client) -> None:
    def page(after: Any) -> str:
        return command("crm.item.list", entityTypeId=ETID, filter={">id": after},
                       order={"id": "ASC"}, select=["id"], start=-1)

    everything = call(client, "crm.item.list", entityTypeId=ETID, select=["id"], start=50)
    assert everything["total"] == 60
    body = call(client, "batch", cmd={
        "d0": page(0), "d1": page("$result[d0][items][49][id]"),
        "d2": page("$result[d1][items][49][id]"),  # d1 has 10 items: unresolved
    })["result"]["result"]
    first = ids(body["d0"]["items"], "id")
    assert len(first) == 50
    assert ids(body["d1"]["items"], "id") == ids(everything["result"]["items"], "id")
    assert ids(body["d2"]["items"], "id") == first


def test_empty_comparison_values_are_dropped(client: httpx.Client) -> None:
    everything = call(client, "crm.contact.list", select=["ID"])
    for empty in ("", None):
        body = call(client, "crm.contact.list", filter={">ID": empty}, select=["ID"])
        assert ids(body["result"]) == ids(everything["result"])
        assert body["total"] == everything["total"]
        body = call(client, "crm.contact.list", filter={">=ID": empty, "<=ID": 3}, select=["ID"])
        assert ids(body["result"]) == [1, 2, 3]
    dated = call(client, "crm.company.list", filter={"<DATE_MODIFY": ""}, select=["ID"])
    assert dated["total"] == 20
    items = call(client, "crm.item.list", entityTypeId=ETID, filter={"<id": ""}, start=-1)
    assert len(items["result"]["items"]) == 50
    # a value that is there but unusable is still an error
    response = client.post("crm.contact.list.json", json={"filter": {">ID": "abc"}})
    assert response.status_code == 400
    assert response.json() == {"error": "",
                               "error_description": "Invalid filter value for field 'ID'"}


# --- the operating-time budget ------------------------------------------------------------------


def test_operating_budget_slides_over_ten_buckets() -> None:
    clock = ManualClock()
    meter = OperatingBudget(limit_seconds=2.0, cost_per_call=0.25, scale=2.0, clock=clock)
    assert meter.charge("crm.contact.list", 0.5) == 1.25  # 0.5 × 2 + 0.25
    assert meter.used("CRM.CONTACT.LIST") == 1.25 and not meter.blocked("crm.contact.list")
    assert meter.reset_at("crm.contact.list") == int(T0) + 600
    clock.now += 90  # the next-but-one bucket
    meter.charge("crm.contact.list", 0.5)
    assert meter.used("crm.contact.list") == 2.5 and meter.blocked("crm.contact.list")
    assert meter.used("crm.company.list") == 0.0 and not meter.blocked("crm.company.list")
    assert meter.reset_at("crm.contact.list") == int(T0) + 600  # the oldest bucket still
    clock.now = T0 + 599.5
    assert meter.blocked("crm.contact.list")
    clock.now = T0 + 600  # the first bucket has left the window
    assert meter.used("crm.contact.list") == 1.25 and not meter.blocked("crm.contact.list")
    assert meter.reset_at("crm.contact.list") == int(T0) + 660
    assert meter.usage() == {"crm.contact.list": 1.25}
    clock.now = T0 + 660
    assert meter.usage() == {} and meter.reset_at("crm.contact.list") == int(T0) + 1260


def test_operating_limit_refuses_a_method_until_its_reset(client: httpx.Client,
                                                          fake: FakeBitrix24) -> None:
    clock = ManualClock()
    fake.operating_limit = budget(clock)
    reset = int(T0) + 600
    for used in (0.5, 1.0, 1.5):  # over the limit only once 1.5 > 1.0 has been charged
        body = call(client, "crm.contact.list", select=["ID"])
        assert body["time"]["operating"] == used
        assert body["time"]["operating_reset_at"] == reset
    refused = client.post("crm.contact.list.json", json={"select": ["ID"]})
    assert refused.status_code == 429
    body = refused.json()
    assert {key: body[key] for key in OPERATION_TIME_LIMIT} == OPERATION_TIME_LIMIT
    assert body["time"]["operating_reset_at"] == reset and body["time"]["operating"] == 1.5
    assert "result" not in body
    assert call(client, "crm.company.list")["time"]["operating"] == 0.5  # per method
    missing = client.post("crm.contact.get.json", json={"id": 999_999})
    assert missing.status_code == 400  # errors are charged too
    assert fake.operating_limit.used("crm.contact.get") == 0.5
    client.post("crm.nothing.json")
    assert fake.operating_limit.used("crm.nothing") == 0.0  # nothing ran
    clock.now = reset
    assert call(client, "crm.contact.list")["time"]["operating"] == 0.5
    assert fake.stats()["refusals"] == {"QUERY_LIMIT_EXCEEDED": 0, "OPERATION_TIME_LIMIT": 1}


def test_operating_refusal_tells_the_client_when_to_come_back(client: httpx.Client,
                                                              fake: FakeBitrix24) -> None:
    clock = ManualClock(T0 + 20)  # a third of the way into a one-minute bucket
    fake.operating_limit = budget(clock, limit=0.0)
    call(client, "server.time")
    refused = client.post("server.time.json")
    error = classify(refused.status_code, refused.json(), "server.time")
    assert isinstance(error, RateLimitedError)
    # the bucket the call was charged to leaves the window 10 minutes after it began
    assert refused.json()["time"]["operating_reset_at"] == int(T0) + 600


def test_batch_commands_are_checked_and_charged_per_method(client: httpx.Client,
                                                           fake: FakeBitrix24) -> None:
    clock = ManualClock()
    fake.operating_limit = budget(clock)
    cmd = {f"c{k}": contact_page(0) for k in range(5)}
    cmd["k"] = command("crm.company.list", select=["ID"])
    body = call(client, "batch", halt=0, cmd=cmd)
    inner = body["result"]
    assert list(inner["result"]) == ["c0", "c1", "c2", "k"]
    assert inner["result_error"] == {"c3": OPERATION_TIME_LIMIT, "c4": OPERATION_TIME_LIMIT}
    operating = {key: block["operating"] for key, block in inner["result_time"].items()}
    assert operating == {"c0": 0.5, "c1": 1.0, "c2": 1.5, "c3": 1.5, "c4": 1.5, "k": 0.5}
    resets = {block["operating_reset_at"] for block in inner["result_time"].values()}
    assert resets == {int(T0) + 600}
    # the batch's own block: the busiest method it called; batch itself costs nothing
    assert body["time"]["operating"] == 1.5
    assert body["time"]["operating_reset_at"] == int(T0) + 600
    assert fake.operating_limit.used("batch") == 0.0
    assert fake.stats()["refusals"]["OPERATION_TIME_LIMIT"] == 2
    halted = call(client, "batch", halt=1, cmd={"a": contact_page(0), "b": "server.time"})
    assert halted["result"]["result_error"] == {"a": OPERATION_TIME_LIMIT}
    assert halted["result"]["result"] == []
    # a blocked method refused at the top level; batch itself is never blocked
    assert client.post("crm.contact.list.json").status_code == 429


def test_without_a_budget_the_time_blocks_are_unchanged(client: httpx.Client) -> None:
    body = call(client, "batch", cmd={"a": "server.time"})
    assert "operating" not in body["result"]["result_time"]["a"]
    block = body["time"]
    assert block["operating"] == block["duration"]
    assert block["operating_reset_at"] == int(block["start"]) + 600


# --- batch length, the between-commands hook -------------------------------------------------


def test_fifty_one_commands_are_refused_whole(fake: FakeBitrix24, client: httpx.Client) -> None:
    assert len(call(client, "batch", cmd=["server.time"] * 50)["result"]["result"]) == 50
    fake.request_log.clear()
    response = client.post("batch.json", json={"halt": 0, "cmd": ["server.time"] * 51})
    assert response.status_code == 400
    assert response.json() == {"error": "ERROR_BATCH_LENGTH_EXCEEDED",
                               "error_description": "Max batch length exceeded"}
    assert [method for method, _ in fake.request_log] == ["batch"]  # no command ran


def test_between_commands_hook_runs_outside_the_store_lock(fake: FakeBitrix24,
                                                           client: httpx.Client) -> None:
    calls: list[tuple[int, str]] = []
    lock_free: list[bool] = []

    def probe_lock() -> None:
        acquired = fake.store.lock.acquire(timeout=5)
        lock_free.append(acquired)
        if acquired:
            fake.store.lock.release()

    def between(index: int, method: str) -> None:
        calls.append((index, method))
        if index == 0:
            other = threading.Thread(target=probe_lock)
            other.start()
            other.join()
            fake.delete("contacts", 5)
            fake.create("contacts", NAME="Late")

    fake.between_commands = between
    body = call(client, "batch", halt=0, cmd={
        "before": command("crm.contact.get", id=5),
        "after": command("crm.contact.get", id=5),
        "new": command("crm.contact.list", filter={"NAME": "Late"}, select=["ID"]),
        "bad": "crm.nope",
        "nested": "batch?cmd[x]=server.time",
    })["result"]
    assert calls == [(0, "crm.contact.get"), (1, "crm.contact.get"), (2, "crm.contact.list"),
                     (3, "crm.nope"), (4, "batch")]
    assert lock_free == [True]
    assert body["result"]["before"]["ID"] == "5"
    assert body["result_error"]["after"] == {"error": "", "error_description": "Not found"}
    assert len(body["result"]["new"]) == 1
    fake.between_commands = None
    call(client, "batch", cmd={"a": "server.time"})
    assert len(calls) == 5


def test_a_chain_sees_deletes_between_its_commands(fake: FakeBitrix24,
                                                   client: httpx.Client) -> None:
    """Deleting the row a chained reference points at does not break the chain: the next
    command continues after the ID the previous page returned."""
    first = call(client, "crm.contact.list", order={"ID": "ASC"}, select=["ID"], start=-1)
    last = ids(first["result"])[-1]

    def delete_last(index: int, method: str) -> None:
        fake.delete("contacts", last)

    fake.between_commands = delete_last
    body = call(client, "batch", cmd={"c0": contact_page(0),
                                      "c1": contact_page("$result[c0][49][ID]")})
    pages = body["result"]["result"]
    assert ids(pages["c0"])[-1] == last
    assert ids(pages["c1"]) and min(ids(pages["c1"])) > last
    assert str(last) not in fake.records("contacts")


# --- the CLI and the limits control API ---------------------------------------------------------


def test_cli_operating_options() -> None:
    args = parse_args(["--operating-limit", "480", "--operating-cost", "0.05",
                       "--operating-scale", "2", "--rate-limit", "50", "2"])
    clock = FakeClock()
    meter = operating_budget(args, clock)
    assert meter is not None
    assert (meter.limit_seconds, meter.cost_per_call, meter.scale) == (480.0, 0.05, 2.0)
    assert meter.clock == clock.now
    assert args.rate_limit == [50.0, 2.0]
    assert operating_budget(parse_args([]), clock) is None
    with pytest.raises(SystemExit):
        parse_args(["--operating-cost", "0.05"])


def test_control_api_sets_and_clears_limits(fake: FakeBitrix24, client: httpx.Client,
                                            control: httpx.Client) -> None:
    off = {"rate_limit": None, "operating_limit": None, "operating_cost": None,
           "operating_scale": None}
    assert control.get("limits").json() == off
    assert control.post("limits", json={"rate_limit": [2, 0.001]}).json()["rate_limit"] == [
        2.0, 0.001]
    statuses = [client.post("server.time.json").status_code for _ in range(3)]
    assert statuses == [200, 200, 503]
    assert client.post("server.time.json").json()["error"] == "QUERY_LIMIT_EXCEEDED"
    assert control.post("limits", json={"rate_limit": None}).json() == off
    assert client.post("server.time.json").status_code == 200

    settings = {"operating_limit": 1, "operating_cost": 0.5, "operating_scale": 0}
    assert control.post("limits", json=settings).json() == {**off, **settings}
    for _ in range(3):
        assert client.post("crm.contact.list.json").status_code == 200
    assert client.post("crm.contact.list.json").status_code == 429
    stats = control.get("stats").json()
    assert stats["operating"] == {"crm.contact.list": 1.5}
    assert stats["refusals"] == {"QUERY_LIMIT_EXCEEDED": 2, "OPERATION_TIME_LIMIT": 1}
    # raising the limit keeps what was charged; clearing it drops the budget
    assert control.post("limits", json={"operating_limit": 2}).json()["operating_limit"] == 2
    assert client.post("crm.contact.list.json").json()["time"]["operating"] == 2.0
    assert control.post("limits", json={"operating_limit": None}).json() == off
    assert client.post("crm.contact.list.json").status_code == 200
    assert control.get("stats").json()["operating"] == {}
    for bad in ({"rate_limit": [1]}, {"rate_limit": "fast"}, {"nonsense": 1},
                {"operating_limit": "lots"}):
        assert control.post("limits", json=bad).status_code == 400, bad


# --- batch faults ------------------------------------------------------------------------------


def test_a_fault_fails_one_command_of_a_halt0_chain(fake: FakeBitrix24,
                                                    client: httpx.Client) -> None:
    fake.faults.add("query_limit", method="crm.contact.list", after=1)
    body = call(client, "batch", halt=0, cmd={
        "c0": contact_page(0), "c1": contact_page("$result[c0][49][ID]"),
        "c2": contact_page("$result[c1][49][ID]"), "k": command("crm.company.list"),
    })["result"]
    assert body["result_error"] == {"c1": {"error": "QUERY_LIMIT_EXCEEDED",
                                           "error_description": "Too many requests"}}
    assert set(body["result"]) == {"c0", "c2", "k"}
    # c2's reference into the failed c1 is unresolved, so c2 repeats c0's page
    assert ids(body["result"]["c2"]) == ids(body["result"]["c0"])
    assert fake.faults.pending == []


def test_a_fault_on_batch_refuses_the_whole_batch(fake: FakeBitrix24,
                                                  client: httpx.Client) -> None:
    fake.faults.add("query_limit", method="batch")
    response = client.post("batch.json", json={"cmd": {"c0": contact_page(0)}})
    assert response.status_code == 503
    assert response.json() == {"error": "QUERY_LIMIT_EXCEEDED",
                               "error_description": "Too many requests"}
    assert [method for method, _ in fake.request_log] == ["batch"]


def test_a_truncated_batch_answer_after_the_commands_ran(fake: FakeBitrix24,
                                                         client: httpx.Client) -> None:
    fake.faults.add("truncated_json", method="batch")
    with pytest.raises(DROPPED):
        client.post("batch.json", json={"cmd": {
            "u": command("crm.contact.update", id=2, fields={"POST": "Truncated"})}})
    assert fake.records("contacts")["2"]["POST"] == "Truncated"
    assert call(client, "batch", cmd={"t": "server.time"})["result"]["result"]


# --- indexed list plans give the same answers as a plain scan -------------------------------


def _addresses_expected(fake: FakeBitrix24, owner_type: str,
                        anchors: Container[int]) -> list[tuple[int, str, str]]:
    """Addresses of ``owner_type`` anchors in ``anchors``, by ANCHOR_ID then table key."""
    table = fake.store.addresses
    chosen = [
        (int(row["ANCHOR_ID"]), key) for key, row in table.rows.items()
        if row["ANCHOR_TYPE_ID"] == owner_type and int(row["ANCHOR_ID"]) in anchors
    ]
    return [
        (anchor, table.rows[key]["ENTITY_ID"], table.rows[key]["TYPE_ID"])
        for anchor, key in sorted(chosen)
    ]


def _address_keys(rows: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [(int(row["ANCHOR_ID"]), row["ENTITY_ID"], row["TYPE_ID"]) for row in rows]


def _requisites_expected(fake: FakeBitrix24, low: int, high: int, after: int) -> list[int]:
    return sorted(
        key for key, row in fake.store.requisites.rows.items()
        if row["ENTITY_TYPE_ID"] == "4" and low <= int(row["ENTITY_ID"]) <= high and key > after
    )


def test_range_plans_match_a_plain_scan_and_follow_changes() -> None:
    anchors = list(range(10, 110, 2))
    with FakeBitrix24(seed=11, companies=150, contacts=300, devices=5) as fake, \
            httpx.Client(base_url=fake.webhook_url, timeout=5) as client:
        for round_number in range(2):
            for low, high in ((1, 150), (20, 60), (149, 400), (70, 70)):
                listed = call(client, "crm.address.list", filter={
                    "ANCHOR_TYPE_ID": 4, ">=ANCHOR_ID": low, "<=ANCHOR_ID": high,
                }, order={"ANCHOR_ID": "ASC"}, start=-1)["result"]
                expected = _addresses_expected(fake, "4", range(low, high + 1))
                assert _address_keys(listed) == expected[:50]
                paged = call(client, "crm.address.list", filter={
                    "ANCHOR_TYPE_ID": 4, ">ANCHOR_ID": low, "<ANCHOR_ID": high,
                }, order={"ANCHOR_ID": "ASC"}, start=50)
                expected = _addresses_expected(fake, "4", range(low + 1, high))
                assert paged["total"] == len(expected)
                assert _address_keys(paged["result"]) == expected[50:100]
                for after in (0, 40, 120):
                    listed = call(client, "crm.requisite.list", filter={
                        "ENTITY_TYPE_ID": 4, ">=ENTITY_ID": low, "<=ENTITY_ID": high,
                        ">ID": after,
                    }, order={"ID": "ASC"}, select=["ID"], start=-1)["result"]
                    assert ids(listed) == _requisites_expected(fake, low, high, after)[:50]
            listed = call(client, "crm.address.list", filter={
                "ANCHOR_TYPE_ID": 4, "@ANCHOR_ID": anchors,
            }, order={"ANCHOR_ID": "ASC"}, start=-1)["result"]
            expected = _addresses_expected(fake, "4", anchors)
            assert _address_keys(listed) == expected[:50]
            if round_number == 0:  # change the data: the indexes must follow
                for company in (15, 30, 31, 32, 100):
                    fake.delete("companies", company)
                for _ in range(5):
                    fake.create("companies")
                fake.mutate_random(creates=10, updates=10, deletes=10, seed=4)


def test_address_order_ties_break_by_the_table_key(fake: FakeBitrix24,
                                                   client: httpx.Client) -> None:
    table = fake.store.addresses
    owner = next(
        int(row["ANCHOR_ID"]) for row in table.rows.values()
        if row["ANCHOR_TYPE_ID"] == "4"
        and len(fake.addresses_of("companies", row["ANCHOR_ID"])) == 2
    )
    expected = [
        (row["ENTITY_ID"], row["TYPE_ID"]) for _, row in sorted(table.rows.items())
        if row["ANCHOR_TYPE_ID"] == "4" and int(row["ANCHOR_ID"]) == owner
    ]
    for filter_ in ({">=ANCHOR_ID": owner, "<=ANCHOR_ID": owner}, {"ANCHOR_ID": owner}):
        rows = call(client, "crm.address.list", filter={"ANCHOR_TYPE_ID": 4, **filter_},
                    order={"ANCHOR_ID": "ASC"}, start=-1)["result"]
        assert [(row["ENTITY_ID"], row["TYPE_ID"]) for row in rows] == expected
