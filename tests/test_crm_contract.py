"""The CRM adapter contract: what every adapter must do, whatever the vendor.

Written as vdirsyncer's storage tests are: a base class of tests that only use the vendor-neutral
:class:`~syncd.connectors.crm.base.CRMAdapter` protocol plus an ``upstream`` controller (create,
update,
delete records in the vendor's fake). A second vendor's adapter subclasses it with its own two
fixtures and runs every test unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from syncd.connectors.crm.base import CRMAdapter, DeletionDetection
from syncd.core.entities import ENTITY_ORDER, Entity
from syncd.core.errors import RecordMappingError
from syncd.mappings.loader import load_mapping_set


class Upstream(Protocol):
    """Controls the vendor's fake: what the contract needs to set up its cases."""

    vendor: str

    def create(self, entity: Entity) -> str: ...
    def touch(self, entity: Entity, record_id: str) -> None: ...
    def delete(self, entity: Entity, record_id: str) -> None: ...
    def ids(self, entity: Entity) -> set[str]: ...


def all_pages(adapter: CRMAdapter, entity: Entity, **kwargs: Any) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for page in adapter.list_changed(entity, kwargs.get("since"), kwargs.get("resume_after")):
        records.extend(page.records)
    return records


class CRMAdapterContract:
    """Tests every adapter must pass. Subclasses provide ``adapter`` and ``upstream``."""

    def record_id(self, adapter: CRMAdapter, entity: Entity, raw: dict[str, Any]) -> str:
        mapping = load_mapping_set(adapter.vendor)[entity.value]
        found = mapping.record_id(raw)
        assert found is not None
        return found

    @pytest.mark.parametrize("entity", ENTITY_ORDER)
    def test_full_listing_returns_every_record_once(
        self, adapter: CRMAdapter, upstream: Upstream, entity: Entity
    ) -> None:
        ids = [self.record_id(adapter, entity, r) for r in all_pages(adapter, entity)]
        assert len(ids) == len(set(ids))
        assert set(ids) == upstream.ids(entity)

    @pytest.mark.parametrize("entity", ENTITY_ORDER)
    def test_listing_resumes_after_any_page(self, adapter: CRMAdapter, entity: Entity) -> None:
        pages = list(adapter.list_changed(entity, None))
        assert len(pages) >= 2, "the contract needs a dataset of more than one page"
        assert pages[-1].resume_after is None
        head = [self.record_id(adapter, entity, r) for r in pages[0].records]
        resumed = all_pages(adapter, entity, resume_after=pages[0].resume_after)
        tail = [self.record_id(adapter, entity, r) for r in resumed]
        everything = [self.record_id(adapter, entity, r) for p in pages for r in p.records]
        assert head + tail == everything

    @pytest.mark.parametrize("entity", ENTITY_ORDER)
    def test_changes_since_a_server_time(
        self, adapter: CRMAdapter, upstream: Upstream, entity: Entity
    ) -> None:
        mark = adapter.server_time()
        existing = sorted(upstream.ids(entity), key=int)[0]
        upstream.touch(entity, existing)
        created = upstream.create(entity)
        changed = {
            self.record_id(adapter, entity, r)
            for r in all_pages(adapter, entity, since=mark - timedelta(seconds=1))
        }
        assert {existing, created} <= changed
        assert len(changed) < len(upstream.ids(entity))

    def test_pages_carry_the_server_clock(self, adapter: CRMAdapter) -> None:
        page = next(iter(adapter.list_changed(Entity.CONTACTS, None)))
        assert page.server_time is not None and page.server_time.tzinfo is not None
        assert abs((adapter.server_time() - page.server_time).total_seconds()) < 300

    @pytest.mark.parametrize("entity", ENTITY_ORDER)
    def test_id_listing_and_count_agree(
        self, adapter: CRMAdapter, upstream: Upstream, entity: Entity
    ) -> None:
        ids = [i for page in adapter.list_ids(entity) for i in page]
        assert set(ids) == upstream.ids(entity)
        assert adapter.count(entity) == len(ids)

    @pytest.mark.parametrize("entity", ENTITY_ORDER)
    def test_deleted_records_disappear(
        self, adapter: CRMAdapter, upstream: Upstream, entity: Entity
    ) -> None:
        victim = sorted(upstream.ids(entity), key=int)[-1]
        upstream.delete(entity, victim)
        assert victim not in {i for page in adapter.list_ids(entity) for i in page}
        assert adapter.get_records(entity, [victim]) == []

    @pytest.mark.parametrize("entity", ENTITY_ORDER)
    def test_get_records_returns_what_exists(
        self, adapter: CRMAdapter, upstream: Upstream, entity: Entity
    ) -> None:
        wanted = sorted(upstream.ids(entity), key=int)[:3]
        found = adapter.get_records(entity, [*wanted, "999999999"])
        assert sorted(self.record_id(adapter, entity, r) for r in found) == sorted(wanted)

    @pytest.mark.parametrize("entity", ENTITY_ORDER)
    def test_records_map_onto_the_canonical_model(
        self, adapter: CRMAdapter, entity: Entity
    ) -> None:
        mapping = load_mapping_set(adapter.vendor)[entity.value]
        failures = []
        for raw in all_pages(adapter, entity):
            try:
                mapping.map(raw)
            except RecordMappingError as error:
                failures.append(str(error))
        assert failures == []

    def test_capabilities_are_declared(self, adapter: CRMAdapter) -> None:
        caps = adapter.capabilities
        assert DeletionDetection.ID_SWEEP in caps.deletion_detection
        assert caps.page_size > 0 and caps.rate_limit

    def test_deletion_events_when_available(self, adapter: CRMAdapter, upstream: Upstream) -> None:
        victim = sorted(upstream.ids(Entity.DEVICES), key=int)[0]
        upstream.delete(Entity.DEVICES, victim)
        events = adapter.read_deletions()
        if DeletionDetection.EVENTS not in adapter.capabilities.deletion_detection:
            assert events.deleted == {}
            return
        assert victim in events.deleted.get(Entity.DEVICES, set())
        assert events.ack_token
        adapter.acknowledge_deletions(events.ack_token)
        assert adapter.read_deletions().deleted == {}


# -- Bitrix24 ---------------------------------------------------------------------------------


class Bitrix24Upstream:
    vendor = "bitrix24"

    def __init__(self, fake: Any) -> None:
        self.fake = fake

    def create(self, entity: Entity) -> str:
        return str(self.fake.create(entity.value))

    def touch(self, entity: Entity, record_id: str) -> None:
        field = {"companies": "TITLE", "contacts": "LAST_NAME", "devices": "ufCrm8Location"}
        self.fake.update(entity.value, record_id, **{field[entity.value]: "Touched"})

    def delete(self, entity: Entity, record_id: str) -> None:
        self.fake.delete(entity.value, record_id)

    def ids(self, entity: Entity) -> set[str]:
        return set(self.fake.records(entity.value))


@pytest.fixture(params=[False, True], ids=["webhook", "app-with-events"])
def bitrix24(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
    from syncd.runtime import build_adapter, load_mappings
    from tests.conftest import make_settings

    with FakeBitrix24(
        seed=9, companies=120, contacts=120, devices=110, token="t",
        events_allowed=request.param,
    ) as fake:
        # One command per batch: listings of this small dataset still take several pages.
        settings = make_settings(tmp_path, fake, batch_commands=1)
        adapter = build_adapter(settings, load_mappings(settings))
        yield adapter, Bitrix24Upstream(fake)
        adapter.close()


class TestBitrix24Adapter(CRMAdapterContract):
    @pytest.fixture
    def adapter(self, bitrix24: tuple[Any, Any]) -> Any:
        return bitrix24[0]

    @pytest.fixture
    def upstream(self, bitrix24: tuple[Any, Any]) -> Any:
        return bitrix24[1]


# -- the in-memory CRM ------------------------------------------------------------------------


class MemoryUpstream:
    vendor = "memory"

    def __init__(self, records: Any) -> None:
        self.records = records

    def create(self, entity: Entity) -> str:
        return str(self.records.create(entity, name="Created", last_name="Created"))

    def touch(self, entity: Entity, record_id: str) -> None:
        self.records.update(entity, record_id, location="Touched", last_name="Touched")

    def delete(self, entity: Entity, record_id: str) -> None:
        self.records.delete(entity, record_id)

    def ids(self, entity: Entity) -> set[str]:
        return set(self.records.records[entity])


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """The in-memory vendor, configured by name (``[crm] vendor = "memory"``) and built through
    the registry, as the daemon builds any vendor."""
    from syncd.config import load_settings
    from syncd.connectors.crm import registry
    from syncd.runtime import build_adapter, load_mappings

    store = f"contract-{tmp_path.name}"
    settings = load_settings(
        None, crm={"vendor": "memory",
                   "memory": {"store": store, "companies": 60, "contacts": 120, "devices": 110,
                              "seed": 9}},
    )
    vendor = registry.get("memory")
    adapter = build_adapter(settings, load_mappings(settings))
    yield adapter, MemoryUpstream(vendor.store(settings.crm.vendor_settings).records)  # type: ignore[attr-defined]
    vendor.forget(store)  # type: ignore[attr-defined]


class TestMemoryAdapter(CRMAdapterContract):
    @pytest.fixture
    def adapter(self, memory: tuple[Any, Any]) -> Any:
        return memory[0]

    @pytest.fixture
    def upstream(self, memory: tuple[Any, Any]) -> Any:
        return memory[1]
