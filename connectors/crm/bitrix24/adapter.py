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
from syncd.connectors.crm.bitrix24.client import Bitrix24Client
from syncd.core.entities import Entity
from syncd.core.errors import AuthError, MalformedResponseError
from syncd.mappings.loader import MappingSet

log = logging.getLogger(__name__)

PAGE_SIZE = 50
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
    ) -> None:
        self.client = client
        self.devices_entity_type_id = devices_entity_type_id
        self._events_enabled = deletion_events
        self._select = {
            e: _top_level_select(mappings[e.value].source_fields, _SPECS[e]) for e in Entity
        }
        company_paths = mappings[Entity.COMPANIES.value].rules
        self._requisite_select = sorted(
            {"ID", "ENTITY_ID", "ENTITY_TYPE_ID"}
            | {r.path[1] for r in company_paths if r.path[0] == "_requisite" and len(r.path) > 1}
        )
        address_fields: set[str] = {"TYPE_ID", "ENTITY_TYPE_ID", "ANCHOR_TYPE_ID", "ANCHOR_ID"}
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
        started: datetime | None = None
        for records, last_id, time_info in self._keyset(
            entity, self._select[entity], extra, resume_after
        ):
            if started is None:
                started = _parse_time(time_info.get("date_start"), spec.list_method)
            if spec.owner_type is not None and records:
                self._attach_details(entity, records)
            yield Page(records=records, resume_after=last_id, server_time=started)

    def list_ids(self, entity: Entity) -> Iterator[list[str]]:
        spec = _SPECS[entity]
        for records, _last, _time in self._keyset(entity, [spec.id_field], {}, None):
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
        wanted = [int(i) for i in ids if str(i).isdigit()]
        found: list[RawRecord] = []
        for offset in range(0, len(wanted), PAGE_SIZE):
            chunk = wanted[offset : offset + PAGE_SIZE]
            params = self._list_params(
                entity, self._select[entity], {f"@{spec.id_field}": chunk}, start=-1
            )
            response = self.client.call(spec.list_method, params)
            records = self._records(entity, response.result)
            if spec.owner_type is not None and records:
                self._attach_details(entity, records)
            found.extend(records)
        return found

    def _keyset(
        self, entity: Entity, select: list[str], extra: Mapping[str, Any], resume_after: str | None
    ) -> Iterator[tuple[list[RawRecord], str | None, Mapping[str, Any]]]:
        spec = _SPECS[entity]
        last = int(resume_after) if resume_after else 0
        while True:
            filters = {**extra, f">{spec.id_field}": last}
            response = self.client.call(
                spec.list_method, self._list_params(entity, select, filters, start=-1)
            )
            records = self._records(entity, response.result)
            ids = [_int_id(r.get(spec.id_field), spec.list_method) for r in records]
            if any(i <= last for i in ids) or ids != sorted(ids):
                raise MalformedResponseError(f"{spec.list_method}: listing is not in ID order")
            records = _dedupe(records, ids)
            if records:
                last = ids[-1]
            exhausted = len(ids) < PAGE_SIZE
            yield records, None if exhausted else str(last), response.time
            if exhausted:
                return

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
        """Attach ``_requisite`` (companies) and ``_addresses`` to a page in one ``batch``."""
        spec = _SPECS[entity]
        owner_type = spec.owner_type
        assert owner_type is not None
        owner_ids = [int(r[spec.id_field]) for r in records]
        commands: dict[str, tuple[str, Mapping[str, Any]]] = {
            "addresses": (
                "crm.address.list",
                {
                    "select": self._address_select,
                    "filter": {
                        "ENTITY_TYPE_ID": OWNER_TYPE_REQUISITE,
                        "ANCHOR_TYPE_ID": owner_type,
                        "@ANCHOR_ID": owner_ids,
                    },
                },
            ),
        }
        if entity is Entity.COMPANIES:
            commands["requisites"] = (
                "crm.requisite.list",
                {
                    "select": self._requisite_select,
                    "filter": {"ENTITY_TYPE_ID": owner_type, "@ENTITY_ID": owner_ids},
                    "order": {"ID": "ASC"},
                },
            )
        batch = self.client.batch(commands)
        for error in batch.errors.values():
            raise error
        details: dict[str, list[RawRecord]] = {}
        for key, (method, params) in commands.items():
            rows = _rows(batch.result.get(key), method)
            start = batch.next.get(key)
            while start is not None:  # more than 50 rows for this page of owners
                response = self.client.call(method, {**params, "start": start})
                rows.extend(_rows(response.result, method))
                next_start = response.body.get("next")
                start = next_start if isinstance(next_start, int) else None
            details[key] = rows
        by_owner: dict[str, list[RawRecord]] = {}
        for row in details["addresses"]:
            by_owner.setdefault(str(row.get("ANCHOR_ID")), []).append(row)
        requisites: dict[str, RawRecord] = {}
        for row in details.get("requisites", []):
            requisites.setdefault(str(row.get("ENTITY_ID")), row)  # the first by ID
        for record in records:
            key = str(record[spec.id_field])
            record["_addresses"] = by_owner.get(key, [])
            if entity is Entity.COMPANIES:
                record["_requisite"] = requisites.get(key)

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


def _rows(value: Any, method: str) -> list[RawRecord]:
    if value in (None, []):
        return []
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise MalformedResponseError(f"{method}: result is not a list of records")
    return list(value)


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
