"""``FakeBitrix24``: a real HTTP server on 127.0.0.1 speaking Bitrix24's webhook REST dialect.

Requests go to ``/rest/<user_id>/<token>/<method>[.json]``; each passes through fault
injection, the optional leaky-bucket limit (503 ``QUERY_LIMIT_EXCEEDED``), the webhook check
and the optional operating-time budget (429 ``OPERATION_TIME_LIMIT``, see ``operating.py``;
``batch`` checks and charges each command instead of itself) before the method runs under the
store lock. ``/_fake/…`` is a token-less control API for driving a fake that runs in another
process (see ``control.py``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, parse_qsl

from syncd.connectors.fakehttp import LoopbackFake, QuietHandler, TrackingHTTPServer

from ..wire import php_query_decode
from .batch import BatchHooks
from .clock import FakeClock
from .control import ControlApi
from .dataset import Dice, RecordFactory, build_store
from .disk import UPLOAD_FIELD
from .envelope import ApiError, MethodResult, method_not_found, success_body, time_block
from .faults import API_ERROR_FAULTS, Fault, FaultRegistry, LeakyBucket
from .files import Links
from .methods import Portal, coerce
from .mutations import random_update
from .operating import NOT_CHARGED, OperatingBudget, operation_time_limit
from .schema import DISK_FILE_IDS_FIELD, FILES_FIELD
from .store import Row, Store
from .upload import BodyError, MultipartError, Reader, extract_file, read_body

ENTITIES: tuple[str, ...] = ("companies", "contacts", "devices")
UPLOAD_METHOD = "disk.upload"  # the multipart uploadUrl endpoint, for faults and request_log
_DOWNLOADS = {  # signed GET links: path → (token kind, name for faults and request_log)
    "/rest/crm.controller.item.getfile.json": ("crm", "crm.controller.item.getfile"),
    "/rest/download.json": ("disk", "disk.download"),
}
JSON_TYPE = "application/json; charset=utf-8"
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_PHP_WARNING = (
    b"<br />\n<b>Warning</b>:  Undefined array key \"ID\" in "
    b"<b>/home/bitrix/www/bitrix/modules/crm/lib/controller.php</b> on line <b>412</b><br />\n"
)


@dataclass
class Reply:
    """What the handler writes back; ``transport`` may break the exchange on purpose."""

    status: int = 200
    body: bytes | bytearray = b""
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    transport: str = "send"  # "send" | "drop" (close, no response) | "truncate" (half a body)
    close: bool = False  # close the connection after answering (an unread body is pending)


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    """A JSON reply."""
    body = _ENCODER.encode(payload).encode()  # ASCII escapes, like PHP's json_encode
    return Reply(status, body, headers=headers or {})


def error_reply(error: ApiError, headers: dict[str, str] | None = None) -> Reply:
    """A Bitrix24 error reply."""
    return json_reply(error.status, error.body(), headers)


class FakeBitrix24(LoopbackFake):
    """A seeded fake Bitrix24 portal served over real HTTP on 127.0.0.1.

    Use as a context manager or call ``start()``/``stop()``. Mutation helpers
    (``create``/``update``/``delete``/``mutate_random``) are thread-safe and behave like the
    portal: each bumps ``DATE_MODIFY``/``updatedTime`` to the fake clock
    (``clock_offset_seconds`` + real time), and deletes cascade and queue offline events.

    Limits, both off by default and replaceable at runtime (also through ``POST
    /_fake/limits``): ``rate_limiter`` (a ``LeakyBucket``, from ``rate_limit=(burst, drain)``)
    and ``operating_limit`` (an ``OperatingBudget``). ``between_commands(index, method)``, when
    set, runs after each command of a ``batch``, outside the store lock, so a test can create or
    delete records between the commands of one batch.
    """

    _name = "bitrix24"

    def __init__(
        self,
        seed: int = 1,
        companies: int = 50,
        contacts: int = 200,
        devices: int = 100,
        token: str = "test-token",
        user_id: int = 1,
        devices_entity_type_id: int = 1040,
        events_allowed: bool = False,
        rate_limit: tuple[float, float] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        service_requests_entity_type_id: int = 1044,
        disk_folder_id: int = 1,
        operating_limit: OperatingBudget | None = None,
    ) -> None:
        super().__init__(host, port)
        self.token = token
        self.user_id = user_id
        self.clock = FakeClock()
        self.store: Store
        self.factory: RecordFactory
        self.store, self.factory = build_store(
            seed, companies, contacts, devices, self.clock, devices_entity_type_id,
            service_requests_entity_type_id, disk_folder_id,
        )
        self.faults = FaultRegistry()
        self.rate_limiter = LeakyBucket(*rate_limit) if rate_limit else None
        self.operating_limit = operating_limit
        self.between_commands: Callable[[int, str], None] | None = None
        self.request_log: list[tuple[str, dict[str, Any]]] = []
        self.links = Links(lambda: f"http://{self.host}:{self.port}")
        hooks = BatchHooks(
            sub_fault=self._batch_fault, now=self.clock.now, budget=lambda: self.operating_limit,
            between=self._between_commands, refused=self._count_refusal,
        )
        self.portal = Portal(
            self.store, events_allowed, log=self._log, batch_hooks=hooks, links=self.links,
            user_id=user_id,
        )
        self._control = ControlApi(self)
        self._count_lock = threading.Lock()
        self._request_count = 0
        self._refusals: dict[str, int] = {"QUERY_LIMIT_EXCEEDED": 0, "OPERATION_TIME_LIMIT": 0}

    # --- lifecycle (start/stop/port/control_url: LoopbackFake) ------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _Handler

    def _server_class(self) -> type[_Server]:
        return _Server

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/rest/<user_id>/`` (without the token)."""
        return f"http://{self.host}:{self.port}/rest/{self.user_id}/"

    @property
    def webhook_url(self) -> str:
        """The incoming-webhook URL: ``base_url`` + token + ``/``."""
        return f"{self.base_url}{self.token}/"

    @property
    def clock_offset_seconds(self) -> float:
        """Seconds added to real time to get the fake portal's clock."""
        return self.clock.offset_seconds

    @clock_offset_seconds.setter
    def clock_offset_seconds(self, value: float) -> None:
        self.clock.offset_seconds = value

    @property
    def events_allowed(self) -> bool:
        """Whether ``event.offline.*`` is available (an OAuth application context)."""
        return self.portal.events_allowed

    @events_allowed.setter
    def events_allowed(self, value: bool) -> None:
        self.portal.events_allowed = value

    @property
    def request_count(self) -> int:
        """HTTP requests served under ``/rest/`` (faulted ones included)."""
        return self._request_count

    # --- data helpers -----------------------------------------------------------------------

    def records(self, entity: str) -> dict[str, Row]:
        """Deep copies of all records of ``companies``/``contacts``/``devices`` by string ID."""
        with self.store.lock:
            return self.store.export(entity)

    def requisites_of(self, entity: str, record_id: str | int) -> list[Row]:
        """Deep copies of the requisites of a company or contact."""
        with self.store.lock:
            return self.store.export_children(entity, int(record_id), "requisites")

    def addresses_of(self, entity: str, record_id: str | int) -> list[Row]:
        """Deep copies of the addresses anchored to a company or contact."""
        with self.store.lock:
            return self.store.export_children(entity, int(record_id), "addresses")

    def create(self, entity: str, skew_seconds: float = 0.0, **overrides: Any) -> str:
        """Create a realistic record (companies with a requisite and addresses, about half of
        contacts too), apply ``overrides`` and return its ID as a string."""
        with self.store.lock:
            return self._create(entity, skew_seconds, overrides)

    def update(
        self, entity: str, record_id: str | int, skew_seconds: float = 0.0, **fields: Any
    ) -> Row:
        """Change fields and bump the modification time to the fake clock plus
        ``skew_seconds``; returns a copy of the record. Multifields are replaced wholesale."""
        with self.store.lock:
            key = int(record_id)
            if key not in self.store.table(entity).rows:
                raise KeyError(f"{entity} {record_id} does not exist")
            row = self.store.update(entity, key, self._coerce(entity, fields), skew_seconds)
            return copy.deepcopy(row)

    def delete(self, entity: str, record_id: str | int) -> bool:
        """Delete a record the way Bitrix24 does (see ``Store.delete``); False if absent."""
        with self.store.lock:
            return self.store.delete(entity, int(record_id))

    def mutate_random(
        self, creates: int = 0, updates: int = 0, deletes: int = 0, seed: int | None = None
    ) -> dict[str, dict[str, list[str]]]:
        """Random creates/updates/deletes spread over the three entities.

        Returns ``{"created"|"updated"|"deleted": {entity: [ids]}}``. Updated and deleted
        records are distinct, and nothing created in the same call is updated or deleted.
        """
        with self.store.lock:
            saved = self.factory.dice
            if seed is not None:
                self.factory.dice = Dice(seed)
            try:
                return self._mutate(creates, updates, deletes)
            finally:
                self.factory.dice = saved

    def service_requests(self) -> dict[str, Row]:
        """Deep copies of the service-request items by string ID, each with ``_files`` (its
        ``ufCrm9Files`` values) and ``_disk_files`` (``ufCrm9DiskFileIds`` resolved; unknown
        IDs are left out) as ``{"name", "size", "sha256"}`` entries."""
        with self.store.lock:
            files = self.store.files
            out = self.store.export("service_requests")
            for row in out.values():
                row["_files"] = [
                    files.crm_files[int(value["id"])].blob.summary()
                    for value in row.get(FILES_FIELD) or []
                    if int(value["id"]) in files.crm_files
                ]
                disk_ids = [int(v) for v in row.get(DISK_FILE_IDS_FIELD) or [] if str(v).isdigit()]
                row["_disk_files"] = [
                    files.disk_files[object_id].blob.summary()
                    for object_id in disk_ids
                    if object_id in files.disk_files
                ]
            return out

    def disk_files(self) -> dict[str, Row]:
        """Every Disk file by string ID: ``{"name", "size", "sha256", "folder_id"}``."""
        with self.store.lock:
            return {
                str(object_id): {**disk_file.blob.summary(), "folder_id": disk_file.folder_id}
                for object_id, disk_file in self.store.files.disk_files.items()
            }

    def file_bytes(self, file_id: int | str) -> bytes:
        """The content of a file UF value (by its ``id``) or of a Disk file (by its ``ID``)."""
        with self.store.lock:
            files = self.store.files
            stored = files.crm_files.get(int(file_id)) or files.disk_files.get(int(file_id))
            if stored is None:
                raise KeyError(f"no file {file_id}")
            return bytes(stored.blob.data)

    def stats(self) -> dict[str, Any]:
        """Request count, record counts, the operating seconds each method has used in the
        budget's window (``{}`` without a budget) and how many calls or batch commands the
        limits refused, by error code (injected faults not counted), as served by ``GET
        /_fake/stats``."""
        with self.store.lock:
            counts = {
                name: len(self.store.table(name))
                for name in (*ENTITIES, "service_requests", "requisites", "addresses")
            }
            counts["events"] = len(self.store.events.events)
            counts["disk_files"] = len(self.store.files.disk_files)
        budget = self.operating_limit
        with self._count_lock:
            refusals = dict(self._refusals)
        return {
            "request_count": self.request_count,
            "counts": counts,
            "operating": budget.usage() if budget is not None else {},
            "refusals": refusals,
        }

    def _coerce(self, entity: str, fields: dict[str, Any]) -> Row:
        schema = self.store.schemas[entity]
        out: Row = {}
        for name, value in fields.items():
            resolved = schema.resolve(name)
            out[resolved or name] = coerce(schema, resolved, value) if resolved else value
        return out

    def _create(self, entity: str, skew_seconds: float, overrides: dict[str, Any]) -> str:
        store, factory = self.store, self.factory
        requisites: list[tuple[Row, list[Row]]] = []
        if entity == "companies":
            key, row, requisites = factory.company(None)
        elif entity == "contacts":
            key, row, requisites = factory.contact(None, store.companies.keys)
        elif entity == "devices":
            key, row = factory.device(
                None, store.companies.keys, store.contacts.keys,
                store.contacts.indexes["COMPANY_ID"],
            )
        else:
            raise KeyError(f"unknown entity {entity!r}")
        if skew_seconds:
            stamp = self.clock.now_iso(skew_seconds)
            created, modified = (
                ("createdTime", "updatedTime") if entity == "devices"
                else ("DATE_CREATE", "DATE_MODIFY")
            )
            row[created] = row[modified] = stamp
        row.update(self._coerce(entity, overrides))
        store.insert(entity, key, row, requisites)
        return str(key)

    def _mutate(self, creates: int, updates: int, deletes: int) -> dict[str, dict[str, list[str]]]:
        dice, store = self.factory.dice, self.store
        summary: dict[str, dict[str, list[str]]] = {
            kind: {entity: [] for entity in ENTITIES} for kind in ("created", "updated", "deleted")
        }
        touched: set[tuple[str, int]] = set()
        for _ in range(creates):
            entity = dice.pick(ENTITIES)
            new_id = self._create(entity, 0.0, {})
            summary["created"][entity].append(new_id)
            touched.add((entity, int(new_id)))
        for kind, count in (("updated", updates), ("deleted", deletes)):
            for _ in range(count):
                picked = self._pick_untouched(dice, touched)
                if picked is None:
                    break
                entity, key = picked
                touched.add(picked)
                if kind == "updated":
                    store.update(entity, key, random_update(self.factory, store, entity, key))
                else:
                    store.delete(entity, key)
                summary[kind][entity].append(str(key))
        return summary

    def _pick_untouched(self, dice: Dice, touched: set[tuple[str, int]]) -> tuple[str, int] | None:
        for _ in range(50):
            entity = dice.pick(ENTITIES)
            keys = self.store.table(entity).keys
            if not keys:
                continue
            key = dice.pick(keys)
            if (entity, key) not in touched:
                return entity, key
        return None

    # --- request handling -------------------------------------------------------------------

    def _log(self, method: str, params: dict[str, Any]) -> None:
        self.request_log.append((method, params))

    def _batch_fault(self, method: str) -> Fault | None:
        return self.faults.take(method, in_batch=True)

    def _between_commands(self, index: int, method: str) -> None:
        hook = self.between_commands
        if hook is not None:
            hook(index, method)

    def _count_refusal(self, code: str) -> None:
        with self._count_lock:
            self._refusals[code] = self._refusals.get(code, 0) + 1

    def _rate_limited(self) -> Reply | None:
        """The 503 refusal when the leaky bucket is full, else None (the request is counted)."""
        if self.rate_limiter is None or self.rate_limiter.admit():
            return None
        self._count_refusal("QUERY_LIMIT_EXCEEDED")
        return error_reply(ApiError(*API_ERROR_FAULTS["query_limit"]))

    def handle(self, verb: str, target: str, body: bytes, content_type: str) -> Reply:
        """Answer one HTTP request (any path)."""
        path, _, query = target.partition("?")
        if path.lower() in _DOWNLOADS:
            return self._download(path.lower(), query)
        if path.startswith("/rest/"):
            return self._rest(path, query, body, content_type)
        if path.startswith("/_fake/"):
            return json_reply(*self._control.handle(verb, path, parse_qs(query), body))
        return error_reply(method_not_found())

    def _rest(self, path: str, query: str, body: bytes, content_type: str) -> Reply:
        parts = path[len("/rest/"):].strip("/").split("/")
        user, token = (parts[0], parts[1]) if len(parts) == 3 else (None, None)
        method = parts[-1].lower().removesuffix(".json")
        with self._count_lock:
            self._request_count += 1
        try:
            params = decode_params(query, body, content_type)
        except ValueError:
            self._log(method, {})
            return error_reply(ApiError(400, "INVALID_REQUEST", "Invalid request body"))
        self._log(method, params)
        fault = self.faults.take(method)
        early = _early_fault_reply(fault)
        if early is not None:
            return early
        limited = self._rate_limited()
        if limited is not None:
            return limited
        if len(parts) != 3 or user != str(self.user_id) or token != self.token:
            return error_reply(ApiError(*API_ERROR_FAULTS["auth_error"]))
        late = fault if fault is not None and fault.kind != "slow" else None
        budget = self.operating_limit if method != "batch" else None  # batch: per command
        if budget is not None and budget.blocked(method):
            return _late_fault_reply(late, self._operating_refusal(budget, method))
        reply, outcome = self._call(method, params, budget)
        return _late_fault_reply(late or outcome.escalate, reply)

    def _operating_refusal(self, budget: OperatingBudget, method: str) -> Reply:
        """429 OPERATION_TIME_LIMIT with a ``time`` block telling when the method unblocks."""
        self._count_refusal("OPERATION_TIME_LIMIT")
        refusal = operation_time_limit()
        now = self.clock.now()
        block = time_block(now, now, usage=budget.time_fields(method))
        return json_reply(refusal.status, {**refusal.body(), "time": block})

    def _call(
        self, method: str, params: dict[str, Any], budget: OperatingBudget | None
    ) -> tuple[Reply, MethodResult]:
        """Run the method, charging its execution time (errors included) to the budget."""
        start = self.clock.now()
        began = time.perf_counter()
        try:
            outcome = self.portal.call(method, params)
        except ApiError as error:
            if budget is not None and error.code not in NOT_CHARGED:
                budget.charge(method, time.perf_counter() - began)
            return error_reply(error), MethodResult(None)
        if budget is not None:
            budget.charge(method, time.perf_counter() - began)
            outcome.operating = budget.time_fields(method)
        return json_reply(200, success_body(outcome, start, self.clock.now())), outcome

    def _download(self, path: str, query: str) -> Reply:
        """A signed link's content (``urlMachine`` of a file UF value, a Disk ``DOWNLOAD_URL``)."""
        kind, name = _DOWNLOADS[path]
        with self._count_lock:
            self._request_count += 1
        params = dict(parse_qsl(query))
        self._log(name, {"token": "***"})
        fault = self.faults.take(name)
        early = _early_fault_reply(fault)
        if early is not None:
            return early
        late = fault if fault is not None and fault.kind != "slow" else None
        payload = self.links.verify(kind, params.get("token", ""), params.get("auth", ""))
        with self.store.lock:
            files = self.store.files
            stored: Any = None
            if payload is not None and kind == "crm":
                stored = files.crm_files.get(int(payload.get("fileId", "0")))
            elif payload is not None:
                stored = files.disk_files.get(int(payload.get("id", "0")))
        if stored is None:
            return _late_fault_reply(
                late, error_reply(ApiError(404, "ERROR_NOT_FOUND", "File not found"))
            )
        disposition = f"attachment; filename=\"{quote_header(stored.blob.name)}\""
        reply = Reply(200, stored.blob.data, "application/octet-stream",
                      {"Content-Disposition": disposition})
        return _late_fault_reply(late, reply)

    def handle_upload(self, target: str, headers: Any, rfile: Reader) -> Reply:
        """The second step of ``disk.folder.uploadfile``: a multipart POST to its uploadUrl.

        Faults match the name ``disk.upload``. ``drop`` closes before the body is read; the
        others act after it has been read, so the connection stays usable. The leaky bucket
        counts uploads like any REST call (Bitrix24's uploadUrl is ``/rest/upload.json``).
        Requests refused before processing (faults, the limit, a bad form) leave the token
        usable; once processed, even with an error such as a duplicate name, it is used up.
        Bodies above ``MAX_BODY_BYTES`` (600 MiB of file plus framing) get 413 unread.
        """
        token = target.partition("?")[0][len("/upload/"):].strip("/")
        with self._count_lock:
            self._request_count += 1
        entry: dict[str, Any] = {"token": token}
        self._log(UPLOAD_METHOD, entry)
        fault = self.faults.take(UPLOAD_METHOD)
        if fault is not None and fault.kind == "drop":
            return Reply(transport="drop")
        try:
            body = read_body(
                rfile, headers.get("Content-Length"), headers.get("Transfer-Encoding")
            )
        except BodyError as error:
            code = "ERROR_FILE_TOO_LARGE" if error.status == 413 else "INVALID_REQUEST"
            reply = error_reply(ApiError(error.status, code, str(error)))
            reply.close = True
            return reply
        entry["bytes"] = len(body)
        early = _early_fault_reply(fault)
        if early is not None:
            return early
        limited = self._rate_limited()
        if limited is not None:
            return limited
        start = self.clock.now()
        try:
            self.portal.disk.check_upload(token)
            filename, _ = extract_file(body, headers.get("Content-Type", ""), UPLOAD_FIELD)
            digest = hashlib.sha256(body).hexdigest()
            result = self.portal.disk.complete_upload(token, filename, body, digest)
        except MultipartError as exc:
            reply = error_reply(ApiError(400, "ERROR_ARGUMENT", str(exc)))
        except ApiError as error:
            reply = error_reply(error)
        else:
            entry["size"] = len(body)
            reply = json_reply(200, success_body(MethodResult(result), start, self.clock.now()))
        late = fault if fault is not None and fault.kind != "slow" else None
        return _late_fault_reply(late, reply)


def quote_header(name: str) -> str:
    """A filename safe inside a quoted ``Content-Disposition`` parameter."""
    return name.replace("\\", "_").replace('"', "_").encode("ascii", "replace").decode()


def decode_params(query: str, body: bytes, content_type: str) -> dict[str, Any]:
    """Parameters from the query string and a JSON or form body (the body wins)."""
    params: dict[str, Any] = php_query_decode(query) if query else {}
    if not body.strip():
        return params
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json" or (not kind and body.lstrip()[:1] in (b"{", b"[")):
        decoded = json.loads(body)
        if isinstance(decoded, dict):
            params.update(decoded)
        return params
    if kind in ("application/x-www-form-urlencoded", ""):
        params.update(php_query_decode(body.decode("utf-8", "replace")))
    return params


def _early_fault_reply(fault: Fault | None) -> Reply | None:
    """Faults answered before the method runs (``slow`` sleeps here and lets it run)."""
    if fault is None:
        return None
    if fault.kind in API_ERROR_FAULTS:
        return error_reply(fault.api_error(), fault.headers())
    if fault.kind == "html_error":
        return Reply(502, _NGINX_502, "text/html", fault.headers())
    if fault.kind == "drop":
        return Reply(transport="drop")
    if fault.kind == "slow":
        time.sleep(fault.delay or 0.0)
    return None


def _late_fault_reply(fault: Fault | None, reply: Reply) -> Reply:
    """Faults applied after the method ran (its writes stay done)."""
    if fault is None:
        return reply
    if fault.kind == "drop_after_processing" or fault.kind == "drop":
        return Reply(transport="drop")
    if fault.kind == "malformed_json":
        return Reply(200, _PHP_WARNING + reply.body)
    if fault.kind == "truncated_json":
        return Reply(200, reply.body, transport="truncate")
    if fault.kind == "html_error":
        return Reply(502, _NGINX_502, "text/html", fault.headers())
    return reply


class _Server(TrackingHTTPServer[FakeBitrix24]):
    """The shared tracking server with a deeper accept queue."""

    request_queue_size = 128  # benchmarks open many connections at once


class _Handler(QuietHandler):
    """HTTP/1.1 keep-alive handler; every answer carries a Content-Length."""

    server_version = "nginx"
    server: _Server

    def serve(self, verb: str) -> None:
        if verb == "POST" and self.path.startswith("/upload/"):
            self._serve_upload()
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        try:
            reply = self.server.fake.handle(
                verb, self.path, body, self.headers.get("Content-Type", "")
            )
        except Exception as exc:  # a bug in the fake must not hang the client
            reply = json_reply(500, {"error": "INTERNAL_SERVER_ERROR",
                                     "error_description": f"fake server bug: {exc!r}"})
        self.write_reply(reply)

    def _serve_upload(self) -> None:
        """An uploadUrl POST: the fake reads (and counts) the body itself, in chunks."""
        try:
            reply = self.server.fake.handle_upload(self.path, self.headers, self.rfile)
        except ConnectionError:
            self.close_connection = True  # the client went away mid-upload
            return
        except Exception as exc:  # a bug in the fake must not hang the client
            reply = json_reply(500, {"error": "INTERNAL_SERVER_ERROR",
                                     "error_description": f"fake server bug: {exc!r}"})
            reply.close = True
        self.write_reply(reply)
