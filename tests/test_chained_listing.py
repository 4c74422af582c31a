"""Chained batch listings against the fake Bitrix24: the trust rule holds whatever changes
between the commands of one batch, and the mirror equals the CRM exactly afterwards.

The fake behaves as Bitrix24 does with a ``$result[...]`` reference that does not resolve: it
becomes an empty string, and an empty ``>ID`` lists from the start. Every case below would store
a wrong page if the adapter trusted a command after a short one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.connectors.crm.bitrix24.adapter import Bitrix24Adapter
from syncd.connectors.crm.bitrix24.chains import BatchSizing, Chain, ChainRunner
from syncd.connectors.crm.bitrix24.client import Bitrix24Client
from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.connectors.crm.bitrix24.fake_view import adapter_view
from syncd.connectors.http import RetryPolicy
from syncd.core.entities import Entity
from syncd.core.errors import MalformedResponseError, UpstreamRejectedError
from syncd.engines.mirror import MirrorEngine
from syncd.engines.verify import differences
from syncd.mappings.loader import load_mapping_set
from syncd.runtime import build_engine, open_cache
from tests.conftest import make_settings

MAPPINGS = load_mapping_set("bitrix24")


@pytest.fixture
def fake() -> Iterator[FakeBitrix24]:
    with FakeBitrix24(seed=21, companies=140, contacts=420, devices=330, token="t") as fake:
        yield fake


@pytest.fixture
def adapter(fake: FakeBitrix24) -> Iterator[Bitrix24Adapter]:
    client = Bitrix24Client(fake.webhook_url, retry=RetryPolicy(max_attempts=3, base_delay=0.0))
    adapter = Bitrix24Adapter(
        client, MAPPINGS, devices_entity_type_id=1040, deletion_events=False
    )
    yield adapter
    adapter.close()


@pytest.fixture
def engine(tmp_path: Path, fake: FakeBitrix24) -> Iterator[tuple[MirrorEngine, sqlite3.Connection]]:
    settings = make_settings(tmp_path, fake)
    conn = open_cache(settings)
    engine = build_engine(settings, conn)
    yield engine, conn
    engine.adapter.close()
    conn.close()


def ids_of(adapter: Bitrix24Adapter, entity: Entity) -> list[int]:
    field = "id" if entity is Entity.DEVICES else "ID"
    return [int(r[field]) for p in adapter.list_changed(entity, None) for r in p.records]


def fake_ids(fake: FakeBitrix24, entity: Entity) -> list[int]:
    return sorted(int(i) for i in fake.records(entity.value))


def once_at(index: int, action: Callable[[], None]) -> Callable[[int, str], None]:
    """A ``between_commands`` hook that runs ``action`` after the batch command ``index``
    of the first batch that gets that far, and never again."""
    fired = []

    def hook(at: int, method: str) -> None:
        if at == index and not fired and method != "crm.address.list":
            fired.append(method)
            action()

    return hook


# -- the listing itself ------------------------------------------------------------------------


@pytest.mark.parametrize("entity", [Entity.CONTACTS, Entity.DEVICES])
def test_a_full_listing_takes_two_requests_per_2500_records(
    fake: FakeBitrix24, adapter: Bitrix24Adapter, entity: Entity
) -> None:
    before = fake.request_count
    listed = [int(i) for page in adapter.list_ids(entity) for i in page]
    assert listed == fake_ids(fake, entity)
    # one counting call (50 rows) + one chained batch for the rest (< 2,500 rows)
    assert fake.request_count - before == 2


def test_records_deleted_between_the_commands_of_a_batch_are_not_listed(
    fake: FakeBitrix24, adapter: Bitrix24Adapter
) -> None:
    ids = fake_ids(fake, Entity.CONTACTS)
    doomed = ids[120:180] + ids[-5:]  # ahead of the chain, in the middle and at the end

    def delete() -> None:
        for record_id in doomed:
            fake.delete("contacts", record_id)

    fake.between_commands = once_at(0, delete)
    assert ids_of(adapter, Entity.CONTACTS) == fake_ids(fake, Entity.CONTACTS)
    assert not set(doomed) & set(ids_of(adapter, Entity.CONTACTS))


def test_records_inserted_between_the_commands_of_a_batch_are_listed(
    fake: FakeBitrix24, adapter: Bitrix24Adapter
) -> None:
    created: list[str] = []
    fake.between_commands = once_at(1, lambda: created.extend(
        fake.create("devices") for _ in range(70)
    ))
    listed = ids_of(adapter, Entity.DEVICES)
    assert len(created) == 70
    assert listed == fake_ids(fake, Entity.DEVICES)


def test_a_short_page_inside_a_chain_discards_what_follows_it(
    fake: FakeBitrix24, adapter: Bitrix24Adapter
) -> None:
    """Deleting everything after row ~120 while the batch runs makes its third command short;
    the fourth and later reference a 50th row that does not exist, so the fake lists them from
    the start (as Bitrix24 does). Those pages must be discarded, not stored."""
    ids = fake_ids(fake, Entity.CONTACTS)
    starts: list[Any] = []

    def truncate() -> None:
        for record_id in ids[125:]:
            fake.delete("contacts", record_id)

    def hook(at: int, method: str) -> None:
        if method == "crm.contact.list" and at == 0 and not starts:
            starts.append(at)
            truncate()

    fake.between_commands = hook
    listed = ids_of(adapter, Entity.CONTACTS)
    assert listed == ids[:125]
    assert len(listed) == len(set(listed))
    # The commands after the short one did run and listed from the start: proof the hazard
    # was real in this test and that the adapter discarded it.
    restarts = [
        params for method, params in fake.request_log
        if method == "crm.contact.list" and params.get("filter", {}).get(">ID") in ("", None)
        and str(params.get("start")) == "-1"
    ]
    assert restarts, "no chained command was left without its reference"


def test_gaps_in_the_ids_do_not_end_a_chain_early(
    fake: FakeBitrix24, adapter: Bitrix24Adapter
) -> None:
    ids = fake_ids(fake, Entity.DEVICES)
    for record_id in ids[40:160] + ids[200:260]:  # two wide holes, one across a page boundary
        fake.delete("devices", record_id)
    fake.create("devices")
    assert ids_of(adapter, Entity.DEVICES) == fake_ids(fake, Entity.DEVICES)


def test_an_empty_entity_takes_one_request(fake: FakeBitrix24, adapter: Bitrix24Adapter) -> None:
    for record_id in fake_ids(fake, Entity.DEVICES):
        fake.delete("devices", record_id)
    before = fake.request_count
    pages = list(adapter.list_changed(Entity.DEVICES, None))
    assert [p.records for p in pages] == [[]]
    assert pages[0].resume_after is None
    assert fake.request_count - before == 1


def test_the_data_ending_exactly_on_a_page_boundary(
    fake: FakeBitrix24, adapter: Bitrix24Adapter
) -> None:
    ids = fake_ids(fake, Entity.DEVICES)
    for record_id in ids[300:]:  # exactly six full pages left
        fake.delete("devices", record_id)
    assert ids_of(adapter, Entity.DEVICES) == ids[:300]


def test_resuming_a_listing_after_any_page(fake: FakeBitrix24) -> None:
    client = Bitrix24Client(fake.webhook_url, retry=RetryPolicy(max_attempts=1))
    small = Bitrix24Adapter(
        client, MAPPINGS, devices_entity_type_id=1040, deletion_events=False,
        sizing=BatchSizing(max_commands=2),
    )
    try:
        pages = list(small.list_changed(Entity.CONTACTS, None))
        assert len(pages) >= 3
        everything = [r["ID"] for p in pages for r in p.records]
        seen = 0
        for page in pages[:-1]:
            seen += len(page.records)
            assert page.resume_after == everything[seen - 1]
            rest = [
                r["ID"]
                for p in small.list_changed(Entity.CONTACTS, None, page.resume_after)
                for r in p.records
            ]
            assert everything[:seen] + rest == everything
    finally:
        small.close()


def test_the_51st_command_is_never_sent(fake: FakeBitrix24, adapter: Bitrix24Adapter) -> None:
    commands = {f"c{i}": ("crm.contact.list", {"start": -1}) for i in range(51)}
    before = fake.request_count
    with pytest.raises(ValueError, match="at most 50"):
        adapter.client.batch(commands)
    assert fake.request_count == before
    assert BatchSizing(max_commands=50).capacity("crm.contact.list", adapter.client) == 50


def test_the_fake_refuses_51_commands_and_the_client_classifies_it(fake: FakeBitrix24) -> None:
    client = Bitrix24Client(fake.webhook_url, retry=RetryPolicy(max_attempts=1))
    cmd = {f"c{i}": "crm.contact.list?start=-1" for i in range(51)}
    with pytest.raises(UpstreamRejectedError, match="ERROR_BATCH_LENGTH_EXCEEDED"):
        client.call("batch", {"halt": 0, "cmd": cmd})
    client.close()


def test_a_first_command_out_of_order_is_a_malformed_answer(fake: FakeBitrix24) -> None:
    """The first command of a batch carries a concrete ``>ID``: rows at or below it mean the
    CRM did not do what was asked, which is an error, not something to store."""
    client = Bitrix24Client(fake.webhook_url, retry=RetryPolicy(max_attempts=1))
    chain = Chain("crm.contact.list", {"select": ["ID"], "order": {"ID": "DESC"}}, "ID", after=100)
    with pytest.raises(MalformedResponseError):
        ChainRunner(client).run([chain])
    client.close()


# -- details for many pages at once -----------------------------------------------------------


def test_details_of_a_full_listing_take_a_few_batches(
    fake: FakeBitrix24, adapter: Bitrix24Adapter
) -> None:
    before = fake.request_count
    records = [r for p in adapter.list_changed(Entity.COMPANIES, None) for r in p.records]
    assert len(records) == 140
    # 1 counting call + 1 chained listing + requisites and addresses of 140 companies
    assert fake.request_count - before <= 4
    for record in records:
        expected = fake.addresses_of("companies", record["ID"])
        assert sorted(map(_address_key, record["_addresses"])) == sorted(
            map(_address_key, expected)
        )
        requisites = fake.requisites_of("companies", record["ID"])
        first = min(requisites, key=lambda r: int(r["ID"])) if requisites else None
        assert (record["_requisite"] or {}).get("ID") == (first or {}).get("ID")


def test_an_owner_with_more_than_a_page_of_addresses_is_complete(
    fake: FakeBitrix24, adapter: Bitrix24Adapter
) -> None:
    """Addresses have no ID: a chain over them uses the owner's ID with ``>=``. An owner with
    more than 50 addresses fills a whole page; it is read with offsets, then passed."""
    from syncd.connectors.crm.bitrix24.fake.dataset import Dice

    busy = fake_ids(fake, Entity.CONTACTS)[10]
    with fake.store.lock:
        factory = fake.factory
        factory.dice = Dice(5)
        country = factory.country()
        for _ in range(14):  # 14 requisites × 6 address types = 84 addresses
            requisite = factory._requisite(busy, "contacts", "3", "Person", "2020-01-01", {})
            fake.store.requisites.add(int(requisite["ID"]), requisite)
            for type_id in ("1", "4", "6", "8", "9", "11"):
                address = factory.address(requisite, country, type_id)
                fake.store.addresses.add(fake.store.addresses.allocate(), address)
    records = [r for p in adapter.list_changed(Entity.CONTACTS, None) for r in p.records]
    by_id = {r["ID"]: r for r in records}
    assert len(by_id[str(busy)]["_addresses"]) == len(fake.addresses_of("contacts", busy)) >= 84
    for record in records:
        assert len(record["_addresses"]) == len(fake.addresses_of("contacts", record["ID"]))


def test_changed_records_get_their_details_by_id_groups(
    fake: FakeBitrix24, adapter: Bitrix24Adapter
) -> None:
    mark = adapter.server_time()
    ids = fake_ids(fake, Entity.COMPANIES)
    touched = ids[::9]  # sparse: a range would list almost everything
    for record_id in touched:
        fake.update("companies", record_id, skew_seconds=5, TITLE="Touched")
    before = fake.request_count
    records = [r for p in adapter.list_changed(Entity.COMPANIES, mark) for r in p.records]
    assert sorted(int(r["ID"]) for r in records) == touched
    assert fake.request_count - before == 2  # the listing, then one batch of details
    for record in records:
        assert len(record["_addresses"]) == len(fake.addresses_of("companies", record["ID"]))


def _address_key(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(row.get(f)) for f in ("TYPE_ID", "ENTITY_ID", "CITY", "ADDRESS_1"))


# -- the mirror over chained listings ----------------------------------------------------------


@pytest.mark.parametrize(
    "when",
    ["contacts-listing", "company-details", "device-listing"],
)
def test_the_mirror_equals_the_crm_after_changes_inside_batches(
    fake: FakeBitrix24, engine: tuple[MirrorEngine, sqlite3.Connection], when: str
) -> None:
    mirror, cache = engine
    entity, method = {
        "contacts-listing": ("contacts", "crm.contact.list"),
        "company-details": ("companies", "crm.requisite.list"),
        "device-listing": ("devices", "crm.item.list"),
    }[when]
    fired: list[int] = []

    def hook(at: int, sent: str) -> None:
        if sent == method and at >= 1 and not fired:
            fired.append(at)
            victims = sorted(fake.records(entity), key=int)
            for record_id in victims[60:68]:  # under the delete guard (10 %)
                fake.delete(entity, record_id)
            for _ in range(30):
                fake.create(entity)
            fake.update(entity, victims[0], skew_seconds=2)

    fake.between_commands = hook
    mirror.run_cycle()  # the first, full resync
    assert fired
    fake.between_commands = None
    mirror.sweep()
    mirror.run_cycle()
    assert differences(cache, mirror.mappings, adapter_view(fake)) == []


# -- sizing ------------------------------------------------------------------------------------


def batch_sizes(fake: FakeBitrix24) -> list[int]:
    """Commands per ``batch`` request, in the order the fake received them."""
    return [len(params.get("cmd") or {}) for method, params in fake.request_log
            if method == "batch"]


def test_a_batch_whose_answer_would_be_too_large_is_split(fake: FakeBitrix24) -> None:
    client = Bitrix24Client(fake.webhook_url, retry=RetryPolicy(max_attempts=1))
    sized = Bitrix24Adapter(
        client, MAPPINGS, devices_entity_type_id=1040, deletion_events=False,
        sizing=BatchSizing(max_bytes=256 * 1024),
    )
    try:
        for record_id in fake_ids(fake, Entity.DEVICES):
            fake.delete("devices", record_id)
        for _ in range(1500):
            fake.create("devices")
        fake.request_log.clear()
        listed = ids_of(sized, Entity.DEVICES)
    finally:
        sized.close()
    assert listed == fake_ids(fake, Entity.DEVICES)
    sizes = batch_sizes(fake)
    # the first call (50 rows) shows what a command's answer weighs; no batch passes 256 KiB
    per_command = sized.sizing._bytes["crm.item.list"].value
    assert per_command is not None and per_command > 1000
    assert all(size <= 256 * 1024 // per_command + 1 for size in sizes)
    assert len(sizes) >= 3


def test_a_method_near_its_operating_budget_pauses_before_the_crm_refuses(
    fake: FakeBitrix24,
) -> None:
    """Each command is charged 0.5 s; the client keeps a 2 s margin under the portal's 6 s
    limit: after the first batch it knows what a command costs and sends no more than fit. It
    must stop sending crm.contact.list before the portal refuses it (no 429), and hand the
    engine a rate-limit error that names when to come back."""
    from syncd.connectors.crm.bitrix24.fake.operating import OperatingBudget
    from syncd.core.errors import RateLimitedError

    fake.operating_limit = OperatingBudget(limit_seconds=6.0, cost_per_call=0.5)
    client = Bitrix24Client(fake.webhook_url, retry=RetryPolicy(max_attempts=3, base_delay=0.0))
    client.operating_budget_seconds = 4.0
    paced = Bitrix24Adapter(client, MAPPINGS, devices_entity_type_id=1040,
                            deletion_events=False, sizing=BatchSizing(max_commands=4))
    try:
        for _ in range(60):
            fake.create("contacts")
        with pytest.raises(RateLimitedError) as raised:
            ids_of(paced, Entity.CONTACTS)
        assert (raised.value.retry_after or 0) > 60  # until the window's oldest bucket leaves
        assert fake.stats()["refusals"].get("OPERATION_TIME_LIMIT", 0) == 0
        assert client.operating_wait("crm.contact.list") > 0
        assert client.operating_wait("crm.item.list") == 0
        # the other methods go on
        assert ids_of(paced, Entity.DEVICES) == fake_ids(fake, Entity.DEVICES)
    finally:
        paced.close()
