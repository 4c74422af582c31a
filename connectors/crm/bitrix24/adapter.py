"""The Bitrix24 CRM adapter: contacts and companies (old ``crm.contact/company.*`` methods,
with requisites and addresses) and devices (a smart process, ``crm.item.*``).

Every listing is a keyset scan: ``order {ID: ASC}``, ``filter {">ID": last}``, ``start=-1`` (no
COUNT). Unlike offset paging it neither skips nor repeats a record when others change during the
scan, and the last ID is a resume point the engine can checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from syncd.connectors.crm.base import (
    Capabilities,
    ChangeTracking,
    DeletionDetection,
    DeletionEvents,
    Page,
    RawRecord,
)
from syncd.connectors.crm.bitrix24.chains import (
    MAX_COMMANDS,
    Average,
    BatchSizing,
    Chain,
    ChainRunner,
)
from syncd.connectors.crm.bitrix24.client import Bitrix24Client
from syncd.connectors.crm.bitrix24.presets import RequisitePresets
from syncd.core.entities import Entity
from syncd.core.errors import AuthError, MalformedResponseError
from syncd.mappings.loader import MappingSet

log = logging.getLogger(__name__)

PAGE_SIZE = 50
ENGINE_PAGE = 500  # records per Page handed to the engine
OWNER_TYPE_CONTACT = 3
OWNER_TYPE_COMPANY = 4
OWNER_TYPE_REQUISITE = 8
_DELETE_EVENTS = {
    "ONCRMCONTACTDELETE": Entity.CONTACTS,
    "ONCRMCOMPANYDELETE": Entity.COMPANIES,
}


@dataclass(frozen=True)
class _EntitySpec:
    list_method: str
    id_field: str
    modified_field: str
    owner_type: int | None  # requisites/addresses hang off contacts (3) and companies (4)
    new_style: bool  # crm.item.*: camelCase, int IDs, result.items


_SPECS: dict[Entity, _EntitySpec] = {
    Entity.COMPANIES: _EntitySpec(
        "crm.company.list", "ID", "DATE_MODIFY", OWNER_TYPE_COMPANY, False
    ),
    Entity.CONTACTS: _EntitySpec(
        "crm.contact.list", "ID", "DATE_MODIFY", OWNER_TYPE_CONTACT, False
    ),
    Entity.DEVICES: _EntitySpec("crm.item.list", "id", "updatedTime", None, True),
}


class Bitrix24Adapter:
    """Implements :class:`syncd.connectors.crm.base.CRMAdapter` for Bitrix24."""

    vendor = "bitrix24"

    def __init__(
        self,
        client: Bitrix24Client,
        mappings: MappingSet,
        *,
        devices_entity_type_id: int,
        deletion_events: bool = True,
        sizing: BatchSizing | None = None,
    ) -> None:
        self.client = client
        self.sizing = sizing or BatchSizing()
        # Detail rows per owner seen so far (sizes the detail listings of the next page).
        self._ratio: dict[str, Average] = {"addresses": Average(), "requisites": Average()}
        self.devices_entity_type_id = devices_entity_type_id
        self._events_enabled = deletion_events
        self._select = {
            e: _top_level_select(mappings[e.value].source_fields, _SPECS[e]) for e in Entity
        }
        self._presets = RequisitePresets.from_mapping(mappings[Entity.COMPANIES.value])
        self._requisite_select = sorted(
            {"ID", "ENTITY_ID", "ENTITY_TYPE_ID"} | self._presets.select_fields()
        )
        address_fields: set[str] = {
            "TYPE_ID", "ENTITY_TYPE_ID", "ENTITY_ID", "ANCHOR_TYPE_ID", "ANCHOR_ID"
        }
        for entity in (Entity.COMPANIES, Entity.CONTACTS):
            for rule in mappings[entity.value].rules:
                if rule.path[0] == "_addresses":
                    address_fields.update(rule.args.get("fields", {}).values())
                    address_fields.add(str(rule.args.get("type_key", "TYPE_ID")))
        self._address_select = sorted(address_fields)

    @property
    def capabilities(self) -> Capabilities:
        detection = {DeletionDetection.ID_SWEEP}
        if self._events_enabled:
            detection.add(DeletionDetection.EVENTS)
        return Capabilities(
            change_tracking=ChangeTracking.MODIFIED_SINCE,
            deletion_detection=frozenset(detection),
            page_size=PAGE_SIZE,
            rate_limit="leaky bucket (503 QUERY_LIMIT_EXCEEDED) + operating time (429)",
        )

    @property
    def requests_made(self) -> int:
        """HTTP requests this adapter's client has sent (a batch counts once)."""
        return self.client.requests_sent

    def close(self) -> None:
        self.client.close()

    # -- listings -----------------------------------------------------------------------------

    def server_time(self) -> datetime:
        response = self.client.call("server.time")
        return _parse_time(response.result, "server.time")

    def list_changed(
        self, entity: Entity, since: datetime | None, resume_after: str | None = None
    ) -> Iterator[Page]:
        spec = _SPECS[entity]
        extra: dict[str, Any] = {}
        if since is not None:
            extra[f">{spec.modified_field}"] = since.isoformat(timespec="seconds")
        for records, resume, started in self._listing(
            entity, self._select[entity], extra, resume_after
        ):
            if spec.owner_type is not None and records:
                self._attach_details(entity, records)
            # A batch brings up to 2,550 records; the engine gets them in pages of at most
            # ENGINE_PAGE (each a resume point: every row of a batch is trusted and in ID
            # order), which bounds what its prefetch and mapping pipeline hold in memory.
            for start in range(0, max(1, len(records)), ENGINE_PAGE):
                chunk = records[start : start + ENGINE_PAGE]
                last = start + ENGINE_PAGE >= len(records)
                yield Page(
                    records=chunk,
                    resume_after=resume if last else str(chunk[-1][spec.id_field]),
                    server_time=started,
                )

    def list_ids(self, entity: Entity) -> Iterator[list[str]]:
        spec = _SPECS[entity]
        for records, _resume, _started in self._listing(entity, [spec.id_field], {}, None):
            yield [str(record[spec.id_field]) for record in records]

    def count(self, entity: Entity) -> int:
        spec = _SPECS[entity]
        params = self._list_params(entity, [spec.id_field], {}, start=0)
        response = self.client.call(spec.list_method, params)
        total = response.body.get("total")
        if not isinstance(total, int) or total < 0:
            raise MalformedResponseError(f"{spec.list_method}: no usable total")
        return total

    def get_records(self, entity: Entity, ids: Sequence[str]) -> list[RawRecord]:
        spec = _SPECS[entity]
        wanted = sorted({int(i) for i in ids if str(i).isdigit()})
        chunks = [wanted[i : i + PAGE_SIZE] for i in range(0, len(wanted), PAGE_SIZE)]
        found: list[RawRecord] = []
        for offset in range(0, len(chunks), MAX_COMMANDS):
            commands = {
                f"ids{number}": (
                    spec.list_method,
                    self._list_params(
                        entity, self._select[entity], {f"@{spec.id_field}": chunk}, start=-1
                    ),
                )
                for number, chunk in enumerate(chunks[offset : offset + MAX_COMMANDS])
            }
            if len(commands) == 1:
                method, params = next(iter(commands.values()))
                found.extend(self._records(entity, self.client.call(method, params).result))
                continue
            batch = self.client.batch(commands)
            for key in commands:
                if key in batch.errors:
                    raise batch.errors[key]
                if key not in batch.result:
                    raise MalformedResponseError(
                        f"batch {spec.list_method}: a command has no answer"
                    )
                found.extend(self._records(entity, batch.result[key]))
        if spec.owner_type is not None and found:
            self._attach_details(entity, found)
        return found

    # -- chained keyset listings ----------------------------------------------------------------

    def _listing(
        self, entity: Entity, select: list[str], extra: Mapping[str, Any], resume_after: str | None
    ) -> Iterator[tuple[list[RawRecord], str | None, datetime]]:
        """Pages of a keyset listing: one plain call that also counts what is left (``start=0``
        returns ``total``), then chained batches sized to it. Yields (records, resume point or
        None at the end, the CRM's clock when the listing started)."""
        spec = _SPECS[entity]
        after = int(resume_after) if resume_after else 0
        response = self.client.call(
            spec.list_method,
            self._list_params(entity, select, {**extra, f">{spec.id_field}": after}, start=0),
        )
        started = _parse_time(response.time.get("date_start"), spec.list_method)
        self.sizing.note_page(spec.list_method, response.nbytes)
        first = self._records(entity, response.result)
        ids = [_int_id(r.get(spec.id_field), spec.list_method) for r in first]
        if any(i <= after for i in ids) or ids != sorted(ids):
            raise MalformedResponseError(f"{spec.list_method}: listing is not in ID order")
        first = _dedupe(first, ids)
        if len(ids) < PAGE_SIZE:
            yield first, None, started
            return
        total = response.body.get("total")
        left = total - len(ids) if isinstance(total, int) and total >= len(ids) else None
        chain = Chain(
            spec.list_method,
            self._list_params(entity, select, extra, start=-1),
            spec.id_field,
            items=spec.new_style,
            after=ids[-1],
            expected_pages=None if left is None else left // PAGE_SIZE + 1,
        )
        runner = ChainRunner(self.client, self.sizing)
        pending = first
        while not chain.done:
            runner.step([chain])
            rows = pending + chain.take()
            pending = []
            row_ids = [_int_id(r.get(spec.id_field), spec.list_method) for r in rows]
            yield _dedupe(rows, row_ids), None if chain.done else str(chain.after), started

    def _list_params(
        self, entity: Entity, select: list[str], filters: Mapping[str, Any], *, start: int
    ) -> dict[str, Any]:
        spec = _SPECS[entity]
        params: dict[str, Any] = {
            "select": select,
            "filter": dict(filters),
            "order": {spec.id_field: "ASC"},
            "start": start,
        }
        if spec.new_style:
            params["entityTypeId"] = self.devices_entity_type_id
        return params

    def _records(self, entity: Entity, result: Any) -> list[RawRecord]:
        spec = _SPECS[entity]
        rows = result.get("items") if spec.new_style and isinstance(result, dict) else result
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise MalformedResponseError(f"{spec.list_method}: result is not a list of records")
        if len(rows) > PAGE_SIZE:
            raise MalformedResponseError(f"{spec.list_method}: page larger than {PAGE_SIZE}")
        return rows

    # -- requisites and addresses -------------------------------------------------------------

    def _attach_details(self, entity: Entity, records: list[RawRecord]) -> None:
        """Attach ``_requisite`` (companies) and ``_addresses`` to ``records``, complete for
        every owner, in as few batches as the rows need.

        Owners listed densely (a full listing) are covered by one chained listing per kind
        over their ID range; a sparse set (changed records, repairs) by groups of owner IDs,
        one command each, chained on only where a group has more than a page.
        """
        spec = _SPECS[entity]
        owner_type = spec.owner_type
        assert owner_type is not None
        owners = sorted({int(r[spec.id_field]) for r in records})
        kinds: dict[str, list[Chain]] = {
            "addresses": self._detail_chains("addresses", owner_type, owners)
        }
        if entity is Entity.COMPANIES:
            kinds["requisites"] = self._detail_chains("requisites", owner_type, owners)
        ChainRunner(self.client, self.sizing).run([c for chains in kinds.values() for c in chains])
        wanted = set(owners)
        addresses: dict[tuple[Any, ...], RawRecord] = {}
        for chain in kinds["addresses"]:
            for row in chain.take():
                if _owner(row.get("ANCHOR_ID")) in wanted:
                    addresses[_address_identity(row)] = row
        by_owner: dict[str, list[RawRecord]] = {}
        for row in addresses.values():
            by_owner.setdefault(str(row.get("ANCHOR_ID")), []).append(row)
        requisites: dict[str, RawRecord] = {}
        requisite_rows = [row for chain in kinds.get("requisites", []) for row in chain.take()]
        requisite_rows.sort(key=lambda row: _owner(row.get("ID")))
        for row in requisite_rows:
            if _owner(row.get("ENTITY_ID")) in wanted:
                requisites.setdefault(str(row.get("ENTITY_ID")), row)  # the first by ID
        self._ratio["addresses"].add(len(addresses) / len(owners))
        if entity is Entity.COMPANIES:
            self._ratio["requisites"].add(len(requisites) / len(owners))
        for record in records:
            key = str(record[spec.id_field])
            record["_addresses"] = by_owner.get(key, [])
            if entity is Entity.COMPANIES:
                translated, warning = self._presets.translate(requisites.get(key))
                record["_requisite"] = translated or None
                if warning:
                    record.setdefault("_data_quality", []).append(warning)

    def _detail_chains(self, kind: str, owner_type: int, owners: list[int]) -> list[Chain]:
        """The chains that list ``kind`` for ``owners``: one over their ID range when they are
        dense, else one per group of IDs sized to fill about one page each."""
        per_owner = max(0.05, self._ratio[kind].value or 1.0)
        if kind == "addresses":
            method, key_field, select = "crm.address.list", "ANCHOR_ID", self._address_select
            fixed: dict[str, Any] = {
                "ENTITY_TYPE_ID": OWNER_TYPE_REQUISITE,
                "ANCHOR_TYPE_ID": owner_type,
            }
            owner_field, repeating = "ANCHOR_ID", True
        else:
            method, key_field, select = "crm.requisite.list", "ID", self._requisite_select
            fixed = {"ENTITY_TYPE_ID": owner_type}
            owner_field, repeating = "ENTITY_ID", False
        order = {key_field: "ASC"}
        low, high = owners[0], owners[-1]
        if len(owners) > PAGE_SIZE and len(owners) * 2 >= high - low + 1:
            pages = int(len(owners) * per_owner) // PAGE_SIZE + 1
            ranged = {**fixed, f"<={owner_field}": high}
            after: int | None = low
            if not repeating:
                ranged[f">={owner_field}"] = low
                after = None
            return [
                Chain(
                    method,
                    {"select": select, "filter": ranged, "order": order},
                    key_field,
                    repeating_keys=repeating,
                    after=after,
                    expected_pages=pages,
                    span=(low, high) if repeating else None,
                )
            ]
        size = max(1, min(PAGE_SIZE, int(PAGE_SIZE * 0.8 / per_owner)))
        return [
            Chain(
                method,
                {
                    "select": select,
                    "filter": {**fixed, f"@{owner_field}": owners[i : i + size]},
                    "order": order,
                },
                key_field,
                repeating_keys=repeating,
                expected_pages=1,
            )
            for i in range(0, len(owners), size)
        ]

    # -- deletion events ----------------------------------------------------------------------

    def read_deletions(self) -> DeletionEvents:
        """Reserve pending offline events (``clear=0``) and pick out the deletions.

        Only an application (OAuth) context may read offline events; with an inbound webhook the
        portal answers ACCESS_DENIED and the adapter falls back to ID sweeps alone.
        """
        if not self._events_enabled:
            return DeletionEvents()
        try:
            response = self.client.call("event.offline.get", {"clear": 0, "limit": 50})
        except AuthError:
            self._events_enabled = False
            log.info(
                "CRM deletion events are not available to these credentials "
                "(an app context is required); deletions come from ID sweeps only"
            )
            return DeletionEvents()
        result = response.result
        if not isinstance(result, dict) or not isinstance(result.get("events", []), list):
            raise MalformedResponseError("event.offline.get: unexpected result")
        deleted: dict[Entity, set[str]] = {}
        for event in result.get("events", []):
            entity, record_id = self._deletion_of(event)
            if entity is not None and record_id is not None:
                deleted.setdefault(entity, set()).add(record_id)
        process_id = result.get("process_id")
        reserved = bool(result.get("events")) and process_id not in (None, "")
        token = str(process_id) if reserved else None
        return DeletionEvents(deleted=deleted, ack_token=token)

    def acknowledge_deletions(self, ack_token: str) -> None:
        self.client.call("event.offline.clear", {"process_id": ack_token})

    def _deletion_of(self, event: Any) -> tuple[Entity | None, str | None]:
        if not isinstance(event, dict):
            return None, None
        name = str(event.get("EVENT_NAME", "")).upper()
        data = event.get("EVENT_DATA")
        fields = data.get("FIELDS") if isinstance(data, dict) else None
        if not isinstance(fields, dict):
            return None, None
        record_id = fields.get("ID")
        if record_id in (None, "") or not str(record_id).isdigit():
            return None, None
        if name in _DELETE_EVENTS:
            return _DELETE_EVENTS[name], str(record_id)
        if name.startswith("ONCRMDYNAMICITEMDELETE"):
            type_id = fields.get("ENTITY_TYPE_ID")
            if str(type_id) == str(self.devices_entity_type_id):
                return Entity.DEVICES, str(record_id)
        return None, None


def _top_level_select(fields: frozenset[str], spec: _EntitySpec) -> list[str]:
    wanted = {f for f in fields if not f.startswith("_")} | {spec.id_field, spec.modified_field}
    return sorted(wanted)


def _owner(value: Any) -> int:
    """An owner or row ID as an int (0 when it is not one, which matches no owner)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else 0


def _address_identity(row: RawRecord) -> tuple[Any, ...]:
    # Addresses have no ID: (type, owner kind, owner) is their key in Bitrix24, and the anchor
    # is the contact or company it belongs to.
    return tuple(str(row.get(f)) for f in _ADDRESS_KEY)


_ADDRESS_KEY = ("ANCHOR_TYPE_ID", "ANCHOR_ID", "TYPE_ID", "ENTITY_TYPE_ID", "ENTITY_ID")


def _int_id(value: Any, method: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and value.isdigit() and int(value) > 0:
        return int(value)
    raise MalformedResponseError(f"{method}: a record has no usable ID")


def _dedupe(records: list[RawRecord], ids: list[int]) -> list[RawRecord]:
    if len(set(ids)) == len(ids):
        return records
    latest: dict[int, RawRecord] = {}
    for record_id, record in zip(ids, records, strict=True):
        latest[record_id] = record
    return list(latest.values())


def _parse_time(value: Any, method: str) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    raise MalformedResponseError(f"{method}: no usable server time")
