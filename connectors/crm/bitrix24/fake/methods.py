"""The REST methods of the fake portal, on top of the store.

Each handler takes the decoded parameters and returns a ``MethodResult`` or raises
``ApiError`` in the family's style: old methods answer 400 with an empty error code,
``crm.item.*`` uses codes like ``NOT_FOUND``/``INVALID_ARG_VALUE``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .batch import BatchHooks, run_batch
from .disk import Disk
from .envelope import ApiError, MethodResult, method_not_found, old_error
from .files import FileSlot, Links, file_slots, invalid_value
from .params import flag as _flag
from .params import int_or_none as _int_or_none
from .params import param, start_of
from .params import values as _values
from .query import (
    PAGE_SIZE,
    QueryError,
    compile_filter,
    compile_order,
    filter_rows,
    list_page,
    project,
    select_fields,
)
from .schema import (
    ADDRESSES,
    COMPANIES,
    CONTACTS,
    DISK_FILE_IDS_FIELD,
    EVENTS,
    FILES_FIELD,
    REQUISITES,
    SERVICE_SPA_ID,
    SPA_ID,
    Family,
    ItemType,
    Kind,
    Schema,
    camel_to_upper,
)
from .store import Row, Store, Table

Handler = Callable[[dict[str, Any]], MethodResult]
Logger = Callable[[str, dict[str, Any]], None]
_READ_ONLY = frozenset({"ID", "DATE_CREATE", "DATE_MODIFY", "id", "createdTime", "updatedTime",
                        "entityTypeId", "createdBy", "updatedBy"})


class Portal:
    """Dispatches REST method names to handlers."""

    def __init__(
        self,
        store: Store,
        events_allowed: bool = False,
        log: Logger | None = None,
        batch_hooks: BatchHooks | None = None,
        links: Links | None = None,
        user_id: int = 1,
    ) -> None:
        self.store = store
        self.events_allowed = events_allowed
        self.user_id = user_id
        self.links = links or Links(lambda: "http://127.0.0.1")
        self.item_types: dict[int, ItemType] = {
            store.devices_entity_type_id: ItemType(
                "devices", store.schemas["devices"], store.devices_entity_type_id, SPA_ID,
                "Devices",
            ),
            store.service_requests_entity_type_id: ItemType(
                "service_requests", store.schemas["service_requests"],
                store.service_requests_entity_type_id, SERVICE_SPA_ID, "Service requests",
            ),
        }
        self.disk = Disk(store, self.links, user_id)
        self.log = log or (lambda method, params: None)
        self.batch_hooks = batch_hooks or BatchHooks(now=store.clock.now)
        self.handlers: dict[str, Handler] = {
            "server.time": self._server_time,
            "crm.type.list": self._type_list,
            "event.offline.get": self._events_get,
            "event.offline.clear": self._events_clear,
            "event.offline.list": self._events_list,
            "crm.requisite.list": lambda p: self._list(store.requisites, REQUISITES, p),
            "crm.address.list": lambda p: self._list(store.addresses, ADDRESSES, p),
        }
        for entity, schema in (("contact", CONTACTS), ("company", COMPANIES)):
            self._register_old(entity, schema)
        self._register_items()
        self.disk.register(self.handlers)

    def _register_old(self, name: str, schema: Schema) -> None:
        table = self.store.table(schema.name)
        prefix = f"crm.{name}"
        self.handlers[f"{prefix}.list"] = lambda p: self._list(table, schema, p)
        self.handlers[f"{prefix}.get"] = lambda p: self._old_get(schema, p)
        self.handlers[f"{prefix}.add"] = lambda p: self._old_add(schema, p)
        self.handlers[f"{prefix}.update"] = lambda p: self._old_update(schema, p)
        self.handlers[f"{prefix}.delete"] = lambda p: self._old_delete(schema, p)

    def _register_items(self) -> None:
        self.handlers["crm.item.list"] = self._item_list
        self.handlers["crm.item.get"] = self._item_get
        self.handlers["crm.item.add"] = self._item_add
        self.handlers["crm.item.update"] = self._item_update
        self.handlers["crm.item.delete"] = self._item_delete

    # --- dispatch ---------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any]) -> MethodResult:
        """Run one method (``batch`` runs its commands, each under the store lock)."""
        method = method.lower()
        if method == "batch":
            return run_batch(params, self._call_in_batch, self.batch_hooks)
        handler = self.handlers.get(method)
        if handler is None:
            raise method_not_found()
        with self.store.lock:
            return handler(params)

    def _call_in_batch(self, method: str, params: dict[str, Any]) -> MethodResult:
        self.log(method, params)
        return self.call(method, params)

    # --- lists ------------------------------------------------------------------------------

    def _list(self, table: Table, schema: Schema, params: dict[str, Any]) -> MethodResult:
        try:
            conditions = compile_filter(schema, param(params, "filter"))
            order = compile_order(schema, param(params, "order"))
        except QueryError as error:
            if schema.family is Family.ITEM:
                raise ApiError(400, "INVALID_ARG_VALUE", str(error)) from error
            raise old_error(str(error)) from error
        page = list_page(table, schema, conditions, order, start_of(params))
        rows = project(page.rows, select_fields(schema, param(params, "select")))
        return MethodResult(rows, total=page.total, next=page.next)

    # --- old crm.contact / crm.company ------------------------------------------------------

    def _old_key(self, schema: Schema, params: dict[str, Any]) -> int:
        key = _int_or_none(param(params, "id"))
        if key is None:
            raise old_error("ID is not defined or invalid.")
        if key not in self.store.table(schema.name).rows:
            raise old_error("Not found")
        return key

    def _old_get(self, schema: Schema, params: dict[str, Any]) -> MethodResult:
        key = self._old_key(schema, params)
        row = self.store.table(schema.name).rows[key]
        return MethodResult(project([row], schema.all_fields)[0])

    def _old_add(self, schema: Schema, params: dict[str, Any]) -> MethodResult:
        fields = param(params, "fields")
        if not isinstance(fields, dict):
            raise old_error("Parameter 'fields' must be array.")
        key = self.store.table(schema.name).allocate()
        now = self.store.clock.now_iso()
        row: Row = {
            name: None if schema.kind(name) is Kind.NUM else "" for name in schema.standard
        }
        row.update({name: [] for name in schema.uf})
        row.update({"ID": str(key), "ASSIGNED_BY_ID": "1", "DATE_CREATE": now, "DATE_MODIFY": now})
        row.update(self._changes(schema, row, fields))
        for name in schema.multi:
            if not row.get(name):
                row.pop(name, None)  # Bitrix24 omits empty multifields
        self.store.insert(schema.name, key, row, [])
        return MethodResult(key)

    def _old_update(self, schema: Schema, params: dict[str, Any]) -> MethodResult:
        key = self._old_key(schema, params)
        fields = param(params, "fields")
        if not isinstance(fields, dict):
            raise old_error("Parameter 'fields' must be array.")
        row = self.store.table(schema.name).rows[key]
        self.store.update(schema.name, key, self._changes(schema, row, fields))
        return MethodResult(True)

    def _old_delete(self, schema: Schema, params: dict[str, Any]) -> MethodResult:
        self.store.delete(schema.name, self._old_key(schema, params))
        return MethodResult(True)

    def _changes(self, schema: Schema, row: Row, fields: dict[str, Any]) -> Row:
        changes: Row = {}
        for name, value in fields.items():
            field = schema.resolve(str(name))
            if field is None or field in _READ_ONLY:
                continue
            if schema.kind(field) is Kind.MULTI:
                changes[field] = self._merge_multifield(field, row.get(field) or [], value)
            else:
                changes[field] = coerce(schema, field, value)
        return changes

    def _merge_multifield(self, field: str, current: list[Row], value: Any) -> list[Row]:
        """Bitrix24 multifield writes: entries with an ID update (or ``DELETE: Y`` remove) that
        entry, entries without an ID are appended."""
        entries = list(value.values()) if isinstance(value, dict) else list(value or [])
        merged = {entry["ID"]: dict(entry) for entry in current}
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            entry_id = str(entry.get("ID") or "")
            if entry_id in merged:
                if str(entry.get("DELETE", "")).upper() == "Y":
                    del merged[entry_id]
                else:
                    merged[entry_id].update(
                        {k: str(v) for k, v in entry.items() if k in ("VALUE", "VALUE_TYPE")}
                    )
            elif entry.get("VALUE"):
                new_id = self.store.next_multifield_id()
                merged[new_id] = {
                    "ID": new_id,
                    "VALUE_TYPE": str(entry.get("VALUE_TYPE") or "WORK"),
                    "VALUE": str(entry["VALUE"]),
                    "TYPE_ID": field,
                }
        return list(merged.values())

    # --- crm.item (devices, service requests) ----------------------------------------------

    def _item_type(self, params: dict[str, Any]) -> ItemType:
        etid = _int_or_none(param(params, "entityTypeId"))
        item_type = self.item_types.get(etid) if etid is not None else None
        if item_type is None:
            raise ApiError(400, "NOT_FOUND", "Smart process not found")
        return item_type

    def _item_key(self, item_type: ItemType, params: dict[str, Any]) -> int:
        key = _int_or_none(param(params, "id"))
        if key is None or key not in self.store.table(item_type.entity).rows:
            raise ApiError(400, "NOT_FOUND", "Element not found")
        return key

    def _item_list(self, params: dict[str, Any]) -> MethodResult:
        item_type = self._item_type(params)
        table = self.store.table(item_type.entity)
        outcome = self._list(table, item_type.schema, params)
        return MethodResult({"items": outcome.result}, total=outcome.total, next=outcome.next)

    def _item_get(self, params: dict[str, Any]) -> MethodResult:
        item_type = self._item_type(params)
        key = self._item_key(item_type, params)
        return MethodResult({"item": self.store.table(item_type.entity).rows[key]})

    def _item_fields(
        self, item_type: ItemType, params: dict[str, Any]
    ) -> tuple[Row, dict[str, list[FileSlot]]]:
        """Coerced field changes plus the (already decoded) writes to file fields."""
        fields = param(params, "fields")
        if not isinstance(fields, dict):
            raise ApiError(400, "INVALID_ARG_VALUE", "Parameter 'fields' must be an object")
        schema = item_type.schema
        changes: Row = {}
        file_writes: dict[str, list[FileSlot]] = {}
        for name, value in fields.items():
            field = schema.resolve(str(name))
            if field is None or field in _READ_ONLY:
                continue
            if schema.kind(field) is Kind.FILE:
                file_writes[field] = file_slots(camel_to_upper(field), value)
                continue
            try:
                changes[field] = coerce(schema, field, value)
            except (TypeError, ValueError) as exc:
                raise invalid_value(camel_to_upper(field)) from exc
        return changes, file_writes

    def _new_item(self, item_type: ItemType, key: int) -> Row:
        now = self.store.clock.now_iso()
        etid = item_type.entity_type_id
        row: Row = dict.fromkeys(item_type.schema.standard)
        row.update({
            "id": key, "title": "", "createdTime": now, "updatedTime": now, "assignedById": 1,
            "stageId": f"DT{etid}_{item_type.spa_id}:NEW", "entityTypeId": etid,
        })
        if item_type.entity == "devices":
            row.update({f"ufCrm{SPA_ID}IsRental": "N", f"ufCrm{SPA_ID}Handpieces": []})
        else:
            row.update({"createdBy": self.user_id, "updatedBy": self.user_id,
                        FILES_FIELD: [], DISK_FILE_IDS_FIELD: []})
        return row

    def _item_add(self, params: dict[str, Any]) -> MethodResult:
        item_type = self._item_type(params)
        changes, file_writes = self._item_fields(item_type, params)
        key = self.store.table(item_type.entity).allocate()
        row = self._new_item(item_type, key)
        row.update(changes)
        for field, slots in file_writes.items():
            row[field] = self._write_files(item_type, key, field, [], slots)
        self.store.insert(item_type.entity, key, row, [])
        return MethodResult({"item": row})

    def _item_update(self, params: dict[str, Any]) -> MethodResult:
        item_type = self._item_type(params)
        key = self._item_key(item_type, params)
        changes, file_writes = self._item_fields(item_type, params)
        current = self.store.table(item_type.entity).rows[key]
        for field, slots in file_writes.items():
            changes[field] = self._write_files(
                item_type, key, field, current.get(field) or [], slots
            )
        if "updatedBy" in current:
            changes["updatedBy"] = self.user_id
        row = self.store.update(item_type.entity, key, changes)
        return MethodResult({"item": row})

    def _item_delete(self, params: dict[str, Any]) -> MethodResult:
        item_type = self._item_type(params)
        self.store.delete(item_type.entity, self._item_key(item_type, params))
        return MethodResult([])

    def _write_files(
        self, item_type: ItemType, key: int, field: str, current: list[Row],
        slots: list[FileSlot],
    ) -> list[Row]:
        """A file field's new value. The array replaces the whole field: listed IDs of current
        files stay, new files are stored, and every current file left out is deleted."""
        files = self.store.files
        upper = camel_to_upper(field)
        by_id = {int(value["id"]): value for value in current}
        value: list[Row] = []
        kept: set[int] = set()
        for slot in slots:
            if isinstance(slot, int):
                if slot in by_id and slot not in kept:  # foreign or unknown IDs are ignored
                    kept.add(slot)
                    value.append(by_id[slot])
                continue
            crm_file = files.add_crm_file(slot, item_type.entity, key, field)
            value.append(
                self.links.crm_file(item_type.entity_type_id, key, upper, crm_file.file_id)
            )
        for file_id in by_id:
            if file_id not in kept:
                files.drop_crm_file(file_id)
        return value

    # --- misc -------------------------------------------------------------------------------

    def _server_time(self, params: dict[str, Any]) -> MethodResult:
        return MethodResult(self.store.clock.now_iso())

    def _type_list(self, params: dict[str, Any]) -> MethodResult:
        types = [
            {
                "id": item_type.spa_id, "title": item_type.title, "code": "", "createdBy": 1,
                "entityTypeId": item_type.entity_type_id, "customSectionId": None,
                "isCategoriesEnabled": "N", "isStagesEnabled": "Y", "isClientEnabled": "Y",
                "isRecyclebinEnabled": "Y", "createdTime": "2019-01-01T10:00:00+02:00",
                "updatedTime": "2019-01-01T10:00:00+02:00", "updatedBy": 1,
            }
            for item_type in self.item_types.values()
        ]
        return MethodResult({"types": types}, total=len(types))

    # --- offline events ---------------------------------------------------------------------

    def _require_app_context(self) -> None:
        if not self.events_allowed:
            raise ApiError(403, "ACCESS_DENIED", "Access denied! Application context required")

    def _event_rows(self, params: dict[str, Any], process_id: str | None) -> list[Row]:
        try:
            conditions = compile_filter(EVENTS, param(params, "filter"))
        except QueryError as error:
            raise ApiError(400, "INVALID_ARG_VALUE", str(error)) from error
        queue = self.store.events
        rows = [queue.events[event_id].row for event_id in queue.available(process_id)]
        return filter_rows(rows, conditions)

    def _events_get(self, params: dict[str, Any]) -> MethodResult:
        self._require_app_context()
        process_id = param(params, "process_id") or None
        limit = _int_or_none(param(params, "limit")) or PAGE_SIZE
        rows = self._event_rows(params, process_id)[:limit]
        clear = _flag(param(params, "clear"), default=True)
        reservation = self.store.events.take([int(row["ID"]) for row in rows], clear, process_id)
        return MethodResult({"process_id": reservation, "events": rows})

    def _events_clear(self, params: dict[str, Any]) -> MethodResult:
        self._require_app_context()
        process_id = param(params, "process_id")
        if not process_id:
            raise ApiError(400, "ERROR_ARGUMENT", "process_id is required")
        ids = param(params, "id") or param(params, "message_id")
        selected = {str(value) for value in _values(ids)} if ids else None
        self.store.events.clear(str(process_id), selected)
        return MethodResult(True)

    def _events_list(self, params: dict[str, Any]) -> MethodResult:
        self._require_app_context()
        queue = self.store.events
        rows = [
            {**event.row, "PROCESS_ID": event.process_id or ""}
            for event in queue.events.values()
        ]
        start = max(0, start_of(params))
        page = rows[start:start + PAGE_SIZE]
        following = start + PAGE_SIZE if start + PAGE_SIZE < len(rows) else None
        return MethodResult(page, total=len(rows), next=following)


def coerce(schema: Schema, field: str, value: Any) -> Any:
    """A value in the wire type of its family: strings in the old family (IDs too), ints for
    ``crm.item`` numbers, lists for multiple fields, None for unset links."""
    kind = schema.kind(field)
    if kind is Kind.FILE:
        return value  # file fields are written through crm.item.add/update only
    if kind in (Kind.LIST, Kind.MULTI):
        items = _values(value) if value != "" else []
        return [str(item) for item in items] if kind is Kind.LIST else items
    if value is None:
        return None
    if kind is Kind.NUM:
        if value == "" or value == 0 or value == "0":
            return None
        return str(int(value)) if schema.family is Family.OLD else int(value)
    if kind is Kind.YN:
        return "Y" if str(value).strip().upper() in ("1", "Y", "TRUE") else "N"
    if isinstance(value, bool):
        return "Y" if value else "N"
    return str(value)
