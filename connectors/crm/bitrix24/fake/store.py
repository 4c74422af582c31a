"""The fake portal's in-memory store: tables with sorted keys and secondary indexes, the
cascading mutations Bitrix24 performs, and the offline event queue.

Rows are replaced, never mutated in place (copy-on-write), so a row handed to the serialiser
stays consistent even if a mutation lands meanwhile. Every change bumps the table's ``version``,
which invalidates cached query results.
"""

from __future__ import annotations

import copy
import threading
import uuid
from bisect import bisect_left, insort
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .clock import FakeClock, parse_instant
from .files import FileStore
from .schema import ENTITY_SCHEMAS, Kind, Schema, parent_field, service_request_schema

Row = dict[str, Any]
Requisites = list[tuple[Row, list[Row]]]  # requisites of one owner, each with its addresses

# crm.requisite ENTITY_TYPE_ID / crm.address ANCHOR_TYPE_ID of an owner entity
OWNER_TYPE_IDS: dict[str, str] = {"contacts": "3", "companies": "4"}
REQUISITE_TYPE_ID = "8"  # crm.address ENTITY_TYPE_ID when the address belongs to a requisite


class Table:
    """Rows keyed by positive integers, keys kept sorted, with optional secondary indexes on
    integer-valued fields and on the modification time (``(instant, key)`` pairs kept sorted,
    for "changed since" filters).

    Each indexed field has two views: ``indexes[field]`` maps a value to its sorted keys (for
    ``=``/``@`` filters), and ``ordered[field]`` holds ``(value, key)`` pairs sorted, for range
    filters and for reading rows in the field's order with ties broken by the table key.
    Rows whose field is empty are in neither.
    """

    def __init__(self, name: str, id_field: str | None, indexed: Iterable[str] = (),
                 modified_field: str | None = None) -> None:
        self.name = name
        self.id_field = id_field
        self.modified_field = modified_field
        self.by_modified: list[tuple[float, int]] = []
        self.rows: dict[int, Row] = {}
        self.keys: list[int] = []
        self.indexes: dict[str, dict[int, list[int]]] = {name: {} for name in indexed}
        self.ordered: dict[str, list[tuple[int, int]]] = {name: [] for name in indexed}
        self.next_key = 1
        self.version = 0
        # offset paging's match lists (see query.py), valid while version is unchanged
        self.query_cache: OrderedDict[Hashable, list[int]] = OrderedDict()
        self.query_cache_version = -1

    def __len__(self) -> int:
        return len(self.rows)

    def allocate(self, gap: int = 0) -> int:
        """Reserve the next key (after skipping ``gap`` keys, as deleted records leave holes)."""
        key = self.next_key + gap
        self.next_key = key + 1
        return key

    def add(self, key: int, row: Row) -> None:
        """Insert a row under a fresh key."""
        self.rows[key] = row
        if not self.keys or key > self.keys[-1]:
            self.keys.append(key)
        else:
            insort(self.keys, key)
        self.next_key = max(self.next_key, key + 1)
        for name in self.indexes:
            self._index_add(name, row.get(name), key)
        if self.modified_field:
            insort(self.by_modified, (_instant(row.get(self.modified_field)), key))
        self.version += 1

    def bulk_add(self, pairs: list[tuple[int, Row]]) -> None:
        """Insert many rows at once (keys ascending and above the existing ones)."""
        rows = self.rows
        keys = self.keys
        for key, row in pairs:
            rows[key] = row
            keys.append(key)
        if pairs:
            self.next_key = max(self.next_key, pairs[-1][0] + 1)
        for name, index in self.indexes.items():
            ordered = self.ordered[name]
            for key, row in pairs:
                value = row.get(name)
                if value is not None and value != "":
                    index.setdefault(int(value), []).append(key)
                    ordered.append((int(value), key))
            ordered.sort()
        if self.modified_field:
            field = self.modified_field
            self.by_modified.extend((_instant(row.get(field)), key) for key, row in pairs)
            self.by_modified.sort()
        self.version += 1

    def remove(self, key: int) -> Row | None:
        """Delete a row; returns it, or None when absent."""
        row = self.rows.pop(key, None)
        if row is None:
            return None
        del self.keys[bisect_left(self.keys, key)]
        for name in self.indexes:
            self._index_remove(name, row.get(name), key)
        if self.modified_field:
            self._unindex_modified(row, key)
        self.version += 1
        return row

    def set_fields(self, key: int, changes: Row, drop: Iterable[str] = ()) -> Row:
        """Replace a row with a copy carrying ``changes`` (and without the ``drop`` keys)."""
        old = self.rows[key]
        new = {**old, **changes}
        for name in drop:
            new.pop(name, None)
        for name in self.indexes:
            if old.get(name) != new.get(name):
                self._index_remove(name, old.get(name), key)
                self._index_add(name, new.get(name), key)
        field = self.modified_field
        if field and old.get(field) != new.get(field):
            self._unindex_modified(old, key)
            insort(self.by_modified, (_instant(new.get(field)), key))
        self.rows[key] = new
        self.version += 1
        return new

    def _index_add(self, name: str, value: Any, key: int) -> None:
        index_key = _index_key(value)
        if index_key is None:
            return
        keys = self.indexes[name].setdefault(index_key, [])
        if not keys or key > keys[-1]:
            keys.append(key)
        else:
            insort(keys, key)
        ordered = self.ordered[name]
        pair = (index_key, key)
        if not ordered or pair > ordered[-1]:
            ordered.append(pair)
        else:
            insort(ordered, pair)

    def _index_remove(self, name: str, value: Any, key: int) -> None:
        index_key = _index_key(value)
        if index_key is None:
            return
        index = self.indexes[name]
        keys = index.get(index_key)
        if keys and key in keys:
            keys.remove(key)
            if not keys:
                del index[index_key]
        ordered = self.ordered[name]
        position = bisect_left(ordered, (index_key, key))
        if position < len(ordered) and ordered[position] == (index_key, key):
            del ordered[position]

    def _unindex_modified(self, row: Row, key: int) -> None:
        assert self.modified_field is not None
        entry = (_instant(row.get(self.modified_field)), key)
        position = bisect_left(self.by_modified, entry)
        if position < len(self.by_modified) and self.by_modified[position] == entry:
            del self.by_modified[position]

    def lookup(self, name: str, value: int) -> list[int]:
        """Keys whose indexed field ``name`` equals ``value`` (sorted)."""
        return self.indexes[name].get(value, [])


def _instant(value: Any) -> float:
    return parse_instant(value) if isinstance(value, str) and value else float("-inf")


def _index_key(value: Any) -> int | None:
    if value is None or value == "":
        return None
    return int(value)


@dataclass
class OfflineEvent:
    """One queued ``event.offline`` entry."""

    row: Row
    process_id: str | None = None


@dataclass
class EventQueue:
    """Bitrix24's offline event queue with reservation (``clear=0`` + ``process_id``)."""

    events: dict[int, OfflineEvent] = field(default_factory=dict)
    next_id: int = 1

    def push(self, name: str, data: Any, timestamp: str) -> None:
        """Enqueue an event."""
        event_id = self.next_id
        self.next_id += 1
        self.events[event_id] = OfflineEvent(
            row={
                "ID": str(event_id),
                "TIMESTAMP_X": timestamp,
                "EVENT_NAME": name,
                "EVENT_DATA": data,
                "EVENT_ADDITIONAL": False,
                "MESSAGE_ID": str(event_id),
            }
        )

    def available(self, process_id: str | None) -> list[int]:
        """IDs of events a ``get`` may hand out: unreserved ones plus those already reserved
        under ``process_id`` (so a restarted consumer can pick its batch up again)."""
        return [
            event_id
            for event_id, event in self.events.items()
            if event.process_id is None or (process_id and event.process_id == process_id)
        ]

    def take(self, ids: list[int], clear: bool, process_id: str | None) -> str | None:
        """Delete (``clear``) or reserve the events; returns the reservation's process id."""
        if clear:
            for event_id in ids:
                self.events.pop(event_id, None)
            return None
        reservation = process_id or uuid.uuid4().hex
        for event_id in ids:
            self.events[event_id].process_id = reservation
        return reservation

    def clear(self, process_id: str, ids: set[str] | None) -> None:
        """Remove events reserved under ``process_id`` (only ``ids``/message ids when given)."""
        for event_id, event in list(self.events.items()):
            if event.process_id != process_id:
                continue
            if ids is None or event.row["ID"] in ids or event.row["MESSAGE_ID"] in ids:
                del self.events[event_id]


class Store:
    """All tables of the fake portal plus the mutation rules that keep them consistent."""

    def __init__(
        self,
        clock: FakeClock,
        devices_entity_type_id: int = 1040,
        service_requests_entity_type_id: int = 1044,
        disk_folder_id: int = 1,
    ) -> None:
        self.clock = clock
        self.devices_entity_type_id = devices_entity_type_id
        self.service_requests_entity_type_id = service_requests_entity_type_id
        self.parent_field = parent_field(devices_entity_type_id)  # service request → device
        self.schemas: dict[str, Schema] = {
            **ENTITY_SCHEMAS, "service_requests": service_request_schema(devices_entity_type_id)
        }
        # smart processes by table name → entityTypeId
        self.item_entity_type_ids: dict[str, int] = {
            "devices": devices_entity_type_id,
            "service_requests": service_requests_entity_type_id,
        }
        self.lock = threading.RLock()
        self.companies = Table("companies", "ID", modified_field="DATE_MODIFY")
        self.contacts = Table("contacts", "ID", indexed=("COMPANY_ID",),
                              modified_field="DATE_MODIFY")
        self.devices = Table("devices", "id", indexed=("companyId", "contactId"),
                             modified_field="updatedTime")
        self.service_requests = Table(
            "service_requests", "id", indexed=("companyId", "contactId", self.parent_field),
            modified_field="updatedTime",
        )
        self.files = FileStore(folder_id=disk_folder_id)
        self.requisites = Table("requisites", "ID", indexed=("ENTITY_ID",))
        self.addresses = Table("addresses", None, indexed=("ENTITY_ID", "ANCHOR_ID"))
        self.events = EventQueue()
        self.multifield_seq = 0
        self.location_seq = 0

    # --- lookups ---------------------------------------------------------------------------

    def table(self, entity: str) -> Table:
        """The table of ``companies``/``contacts``/``devices``/``service_requests``/
        ``requisites``/``addresses``."""
        table = getattr(self, entity, None)
        if not isinstance(table, Table):
            raise KeyError(f"unknown entity {entity!r}")
        return table

    def requisite_keys(self, entity: str, key: int) -> list[int]:
        """Requisites owned by a contact or company."""
        owner_type = OWNER_TYPE_IDS[entity]
        return [
            req_key
            for req_key in self.requisites.lookup("ENTITY_ID", key)
            if self.requisites.rows[req_key]["ENTITY_TYPE_ID"] == owner_type
        ]

    def address_keys_of_requisite(self, requisite_key: int) -> list[int]:
        """Addresses attached to a requisite."""
        return [
            addr_key
            for addr_key in self.addresses.lookup("ENTITY_ID", requisite_key)
            if self.addresses.rows[addr_key]["ENTITY_TYPE_ID"] == REQUISITE_TYPE_ID
        ]

    def address_keys(self, entity: str, key: int) -> list[int]:
        """Addresses anchored to a contact or company."""
        owner_type = OWNER_TYPE_IDS[entity]
        return [
            addr_key
            for addr_key in self.addresses.lookup("ANCHOR_ID", key)
            if self.addresses.rows[addr_key]["ANCHOR_TYPE_ID"] == owner_type
        ]

    def export(self, entity: str, with_children: bool = False) -> dict[str, Row]:
        """Deep copies of all rows of an entity keyed by string ID (optionally with
        ``_requisites``/``_addresses`` arrays for contacts and companies)."""
        table = self.table(entity)
        out: dict[str, Row] = {}
        for key in table.keys:
            row = copy.deepcopy(table.rows[key])
            if with_children and entity in OWNER_TYPE_IDS:
                row["_requisites"] = self.export_children(entity, key, "requisites")
                row["_addresses"] = self.export_children(entity, key, "addresses")
            out[str(key)] = row
        return out

    def export_children(self, entity: str, key: int, kind: str) -> list[Row]:
        """Deep copies of a contact's/company's requisites or addresses."""
        if kind == "requisites":
            keys, table = self.requisite_keys(entity, key), self.requisites
        else:
            keys, table = self.address_keys(entity, key), self.addresses
        return [copy.deepcopy(table.rows[k]) for k in keys]

    # --- mutations -------------------------------------------------------------------------

    def next_multifield_id(self) -> str:
        """A fresh multifield entry ID."""
        self.multifield_seq += 1
        return str(self.multifield_seq)

    def next_location_id(self) -> str:
        """A fresh LOC_ADDR_ID."""
        self.location_seq += 1
        return str(self.location_seq)

    def insert(
        self, entity: str, key: int, row: Row, requisites: Requisites
    ) -> None:
        """Insert a record with its requisites (each with its addresses)."""
        self.table(entity).add(key, row)
        for requisite, addresses in requisites:
            self.requisites.add(int(requisite["ID"]), requisite)
            for address in addresses:
                self.addresses.add(self.addresses.allocate(), address)

    def bulk_insert(self, entity: str, records: list[tuple[int, Row, Requisites]]) -> None:
        """Insert many new records (ascending keys) with their requisites and addresses."""
        self.table(entity).bulk_add([(key, row) for key, row, _ in records])
        requisites: list[tuple[int, Row]] = []
        addresses: list[tuple[int, Row]] = []
        allocate = self.addresses.allocate
        for _, _, owned in records:
            for requisite, requisite_addresses in owned:
                requisites.append((int(requisite["ID"]), requisite))
                addresses.extend((allocate(), address) for address in requisite_addresses)
        self.requisites.bulk_add(requisites)
        self.addresses.bulk_add(addresses)

    def touch_field(self, entity: str) -> str:
        """The modification-time field of an entity."""
        return "updatedTime" if entity in self.item_entity_type_ids else "DATE_MODIFY"

    def update(self, entity: str, key: int, changes: Row, skew_seconds: float = 0.0) -> Row:
        """Apply field changes and bump the modification time to the (skewed) fake clock.

        Empty multifield lists remove the multifield, as Bitrix24 omits absent multifields.
        """
        table = self.table(entity)
        if key not in table.rows:
            raise KeyError(key)
        schema = self.schemas[entity]
        drop = [
            name for name, value in changes.items()
            if schema.kind(name) is Kind.MULTI and not value
        ]
        kept = {name: value for name, value in changes.items() if name not in drop}
        kept[self.touch_field(entity)] = self.clock.now_iso(skew_seconds)
        return table.set_fields(key, kept, drop)

    def delete(self, entity: str, key: int) -> bool:
        """Delete a record like Bitrix24: drop its requisites and addresses (or its file UF
        values), unbind records that pointed at it (without touching their modification time)
        and queue a delete event."""
        table = self.table(entity)
        if table.remove(key) is None:
            return False
        if entity in self.item_entity_type_ids:
            for crm_file in list(self.files.crm_files.values()):
                if crm_file.entity == entity and crm_file.item_id == key:
                    self.files.drop_crm_file(crm_file.file_id)
        if entity in OWNER_TYPE_IDS:
            for req_key in self.requisite_keys(entity, key):
                for addr_key in self.address_keys_of_requisite(req_key):
                    self.addresses.remove(addr_key)
                self.requisites.remove(req_key)
        self._unbind(entity, key)
        self._queue_delete_event(entity, key)
        return True

    def _unbind(self, entity: str, key: int) -> None:
        if entity == "companies":
            for contact_key in list(self.contacts.lookup("COMPANY_ID", key)):
                self.contacts.set_fields(contact_key, {"COMPANY_ID": None})
            for table in (self.devices, self.service_requests):
                for item_key in list(table.lookup("companyId", key)):
                    table.set_fields(item_key, {"companyId": None})
        elif entity == "contacts":
            for table in (self.devices, self.service_requests):
                for item_key in list(table.lookup("contactId", key)):
                    table.set_fields(item_key, {"contactId": None})
        elif entity == "devices":
            for item_key in list(self.service_requests.lookup(self.parent_field, key)):
                self.service_requests.set_fields(item_key, {self.parent_field: None})

    def _queue_delete_event(self, entity: str, key: int) -> None:
        now = self.clock.now_iso()
        if entity == "contacts":
            self.events.push("ONCRMCONTACTDELETE", {"FIELDS": {"ID": str(key)}}, now)
        elif entity == "companies":
            self.events.push("ONCRMCOMPANYDELETE", {"FIELDS": {"ID": str(key)}}, now)
        else:
            data = {"FIELDS": {"ID": key, "ENTITY_TYPE_ID": self.item_entity_type_ids[entity]}}
            self.events.push("ONCRMDYNAMICITEMDELETE", data, now)
