"""The door of the outbox: service requests and their files, checked and stored by syncd itself.

The portal never writes syncd's files. It hands a request to the local API (``POST
/v1/service-requests``, one ``multipart/form-data`` body) or an admin to ``syncd outbox
enqueue``; both end here, in :class:`ServiceRequestIntake`, which

* streams each file into a private directory under the spool (``.incoming/``), never holding
  more than one chunk in memory, deciding its type from the first bytes (the magic-byte
  allow-list of :mod:`syncd.engines.spool`) and stopping at once when a file is not allowed,
  empty or
  over the limit of its kind;
* checks the request's fields with the outbox's own validation
  (:func:`syncd.state.outbox.validate_request`: the same code the push lane applies again before
  delivery) and that the device and contact it names are in the mirror, the contact's
  processing not restricted (``syncd subject restrict``: 409 ``contact_restricted``);
* moves the files to ``<spool>/<key>/<position>.<ext>`` and inserts the outbox row in one write
  transaction, so a crash leaves either a filed request with all its files or nothing that counts
  (a leftover directory, which :meth:`ServiceRequestIntake.sweep_orphans` removes);
* answers a request whose idempotency key is already filed with the first answer, without
  storing anything again.

Every refusal is an :class:`IntakeError` carrying an HTTP status, a stable code and the field or
file it concerns (``files[2]``), never what the client sent: no file name, message or address
appears in an error or a log line.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import sqlite3
import stat
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, Final

from syncd.core.errors import SkippableError
from syncd.engines.spool import (
    ALLOWED_TYPES,
    SNIFF_BYTES,
    FileLimits,
    Kind,
    declared_type_fits,
    format_size,
    sanitise_name,
    sniff_bytes,
)
from syncd.state import outbox, references, restrictions

__all__ = [
    "FORM_FIELDS",
    "IncomingFile",
    "IntakeError",
    "IntakeOptions",
    "Receipt",
    "ServiceRequestIntake",
    "UploadBudget",
    "canonical_key",
]

INCOMING: Final = ".incoming"
#: The form fields a request may carry (files come as parts named ``files``).
FORM_FIELDS: Final = outbox.REQUEST_FIELDS
FILE_FIELD: Final = "files"
MAX_FIELD_BYTES: Final = 4 * outbox.MAX_MESSAGE_LENGTH  # UTF-8: at most 4 bytes a character
ORPHAN_AGE_SECONDS: Final = 3600.0
_EXTENSIONS: Final[Mapping[str, str]] = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/heic": "heic",
    "image/webp": "webp",
    "video/mp4": "mp4",
    "video/quicktime": "mov",
    "application/pdf": "pdf",
}
_PLURAL: Final[Mapping[Kind, str]] = {"image": "images", "video": "videos", "document": "PDFs"}


class IntakeError(SkippableError):
    """A request refused at the door: ``status`` (HTTP), a stable ``code``, the ``field`` it
    concerns (``message``, ``files[1]``) when there is one, and a message that quotes nothing
    the client sent."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after


@dataclass(frozen=True)
class IntakeOptions:
    """What the door enforces (from ``[outbox]`` and ``[api]``)."""

    spool: Path
    request_types: frozenset[str]
    limits: FileLimits = field(default_factory=FileLimits)
    min_free_bytes: int = 1024 * 1024 * 1024


@dataclass(frozen=True)
class Receipt:
    """What the door answers: the outbox row's ID, the key, and whether this call filed it
    (False: the key was filed before and this is the first answer again)."""

    id: int
    idempotency_key: str
    created: bool

    @property
    def status_url(self) -> str:
        """Where the request's status is (``GET``)."""
        return f"/v1/service-requests/{self.idempotency_key}"


@dataclass(frozen=True)
class IncomingFile:
    """A file for :meth:`ServiceRequestIntake.file_request`: its content in chunks, the name the
    client gave it (kept, sanitised, for the CRM) and the type the client declared."""

    chunks: Iterable[bytes]
    name: str
    declared_type: str = ""


def canonical_key(raw: str | None, *, field: str = "Idempotency-Key") -> str:
    """The idempotency key in canonical lower-case form; raises :class:`IntakeError` (400,
    naming ``field``) for anything that is not a hyphenated UUID."""
    text = (raw or "").strip()
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        parsed = None
    if parsed is None or str(parsed) != text.lower():
        raise IntakeError(
            400,
            "invalid_idempotency_key",
            "must be a UUID in its hyphenated form (e.g. 3f2a6c1e-8d4b-4c1a-9e7f-0b1c2d3e4f5a).",
            field=field,
        )
    return str(parsed)


# ------------------------------------------------------------------------------------------
# Budgets
# ------------------------------------------------------------------------------------------


class UploadBudget:
    """How many requests and bytes the door takes per sliding ``period`` (a runaway portal must
    not fill the disk): :meth:`charge` raises 429 with Retry-After when one is spent."""

    def __init__(
        self,
        max_requests: int,
        max_bytes: int,
        *,
        period: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.period = period
        self._clock = clock
        self._charges: deque[tuple[float, int]] = deque()
        self._bytes = 0
        self._lock = threading.Lock()

    def charge(self, size: int) -> None:
        """Count one request of ``size`` bytes, or raise :class:`IntakeError` (429)."""
        with self._lock:
            now = self._clock()
            while self._charges and self._charges[0][0] <= now - self.period:
                self._bytes -= self._charges.popleft()[1]
            over_count = len(self._charges) >= self.max_requests
            over_bytes = self._charges and self._bytes + size > self.max_bytes
            if over_count or over_bytes or size > self.max_bytes:
                wait = self._charges[0][0] + self.period - now if self._charges else self.period
                what = "requests" if over_count else "upload volume"
                raise IntakeError(
                    429,
                    "too_many_requests",
                    f"The portal has used its {what} for this period; try again later.",
                    retry_after=max(1.0, wait),
                )
            self._charges.append((now, size))
            self._bytes += size


# ------------------------------------------------------------------------------------------
# Files on their way in
# ------------------------------------------------------------------------------------------


@dataclass
class _StoredFile:
    position: int
    relative: str
    name: str
    mime_type: str
    size: int


class _FileWriter:
    """One file streaming into the incoming directory: typed from its first bytes, counted
    against its kind's limit as it arrives."""

    def __init__(self, draft: _Draft, position: int, name: str, declared_type: str) -> None:
        self._draft = draft
        self.position = position
        self.label = f"files[{position}]"
        self.name = sanitise_name(name) if name else "file"
        self._declared = declared_type
        self._head = bytearray()
        self._size = 0
        self._mime: str | None = None
        self._kind: Kind | None = None
        self._temp = draft.directory / f"{position}.part"
        self._handle: BinaryIO = open(  # noqa: SIM115 - closed in finish()/discard()
            os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640),
            "wb",
            buffering=0,
        )

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._kind is None:
            self._head.extend(chunk[: SNIFF_BYTES - len(self._head)])
            if len(self._head) >= SNIFF_BYTES:
                self._decide_type()
        self._size += len(chunk)
        self._check_limit()
        self._handle.write(chunk)

    def finish(self) -> _StoredFile:
        if self._size == 0:
            raise IntakeError(422, "empty_file", "The file is empty.", field=self.label)
        if self._kind is None:
            self._decide_type()
        self._check_limit()
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        assert self._mime is not None
        final = f"{self.position}.{_EXTENSIONS[self._mime]}"
        os.rename(self._temp, self._draft.directory / final)
        return _StoredFile(self.position, final, self.name, self._mime, self._size)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._handle.close()

    def _decide_type(self) -> None:
        sniffed = sniff_bytes(bytes(self._head))
        if sniffed is None or sniffed not in ALLOWED_TYPES:
            raise IntakeError(
                415,
                "file_type_not_allowed",
                "The content is not an allowed type: JPEG, PNG, HEIC or WebP photos, MP4 or "
                "QuickTime videos, PDF documents (decided by the content, not the name).",
                field=self.label,
            )
        kind = ALLOWED_TYPES[sniffed]
        if not declared_type_fits(self._declared, kind):
            raise IntakeError(
                415,
                "file_type_mismatch",
                f"The declared type does not match the content ({kind}).",
                field=self.label,
            )
        self._mime, self._kind = sniffed, kind

    def _check_limit(self) -> None:
        limits = self._draft.options.limits
        limit = limits.for_kind(self._kind) if self._kind else max(
            limits.image, limits.video, limits.document
        )
        if self._size > limit:
            what = _PLURAL[self._kind] if self._kind else "files"
            raise IntakeError(
                413,
                "file_too_large",
                f"The file is over the limit of {format_size(limit)} for {what}.",
                field=self.label,
            )


class _Draft:
    """The files of one request while they arrive, in ``<spool>/.incoming/<key>.<random>/``."""

    def __init__(self, options: IntakeOptions, key: str) -> None:
        self.options = options
        self.key = key
        incoming = options.spool / INCOMING
        incoming.mkdir(parents=True, exist_ok=True)
        self.directory = incoming / f"{key}.{secrets.token_hex(4)}"
        self.directory.mkdir()
        self.files: list[_StoredFile] = []
        self._writer: _FileWriter | None = None

    def open_file(self, name: str, declared_type: str) -> _FileWriter:
        if len(self.files) >= self.options.limits.max_files_per_request:
            raise IntakeError(
                413,
                "too_many_files",
                f"At most {self.options.limits.max_files_per_request} files per request.",
                field=FILE_FIELD,
            )
        self._writer = _FileWriter(self, len(self.files), name, declared_type)
        return self._writer

    def close_file(self) -> None:
        assert self._writer is not None
        self.files.append(self._writer.finish())
        self._writer = None

    def install(self) -> None:
        """Move the files to ``<spool>/<key>/`` (inside the outbox's write transaction)."""
        target = self.options.spool / self.key
        if target.exists():  # left by a crash before its row was committed: no row uses it
            shutil.rmtree(target)
        os.rename(self.directory, target)
        _fsync_directory(self.options.spool)

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.discard()
        shutil.rmtree(self.directory, ignore_errors=True)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------
# The intake
# ------------------------------------------------------------------------------------------


class ServiceRequestIntake:
    """Files service requests: every way in (the API, the CLI) goes through :meth:`file_request`
    or :meth:`start`/:meth:`finish`, so one set of checks applies to all."""

    def __init__(
        self,
        connection: Callable[[], sqlite3.Connection],
        options: IntakeOptions,
        *,
        budget: UploadBudget | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._connection = connection
        self.options = options
        self.budget = budget
        self._clock = clock
        self._key_locks: dict[str, tuple[threading.Lock, int]] = {}
        self._locks_guard = threading.Lock()

    # -- the steps ------------------------------------------------------------------------

    def filed(self, key: str) -> Receipt | None:
        """The first answer for ``key`` if it was filed before, else None."""
        request_id = outbox.id_for_key(self._connection(), key)
        return None if request_id is None else Receipt(request_id, key, created=False)

    def status(self, key: str) -> dict[str, Any] | None:
        """Where the request filed under ``key`` stands (the API's ``ServiceRequestStatus``),
        without its message or contact details; None when no request has that key."""
        request = outbox.get_by_key(self._connection(), key)
        if request is None:
            return None
        return {
            "id": request.id,
            "idempotency_key": request.idempotency_key,
            "request_type": request.request_type,
            "status": request.status,
            "attempts": request.attempts,
            "next_attempt_at": request.next_attempt_at,
            "last_error": request.last_error,
            "crm_id": request.crm_id,
            "created_at": request.created_at,
            "delivered_at": request.delivered_at,
            "files": [
                {
                    "position": f.position,
                    "status": f.status,
                    "type": f.declared_type,
                    "size": f.size,
                    "error": f.error,
                }
                for f in request.files
            ],
        }

    def check_space(self, incoming_bytes: int) -> None:
        """Refuse (507) when the spool's file system would keep less than the configured free
        space after taking ``incoming_bytes``."""
        self.options.spool.mkdir(parents=True, exist_ok=True)
        info = os.statvfs(self.options.spool)
        free = info.f_bavail * info.f_frsize
        if free - incoming_bytes < self.options.min_free_bytes:
            raise IntakeError(
                507,
                "insufficient_storage",
                "syncd's spool is short of free space; the request was not filed. Try again "
                "later (an operator has been told).",
                retry_after=300,
            )

    @contextlib.contextmanager
    def draft(self, key: str) -> Iterator[_Draft]:
        """A draft for ``key``'s files, held under the key's lock (two POSTs with one key never
        store twice); discarded unless :meth:`commit` moved it into place."""
        with self._lock_for(key):
            draft = _Draft(self.options, key)
            try:
                yield draft
            finally:
                draft.discard()

    def commit(self, draft: _Draft, fields: Mapping[str, str | None]) -> Receipt:
        """Check the fields, then move the files into place and insert the row in one write
        transaction. Returns the receipt (the first one again when the key was filed meanwhile)."""
        data: dict[str, object] = {
            "idempotency_key": draft.key,
            **{name: value for name, value in fields.items() if value is not None},
            "files": [
                {
                    "path": f"{draft.key}/{stored.relative}",
                    "original_name": stored.name,
                    "declared_type": stored.mime_type,
                    "size": stored.size,
                }
                for stored in draft.files
            ],
        }
        conn = self._connection()
        try:
            outbox.validate_request(data, request_types=self.options.request_types)
        except outbox.OutboxValidationError as error:
            raise _field_error(str(error)) from None
        self._check_references(conn, fields)
        _check_not_restricted(conn, fields)
        request_id, created = outbox.enqueue(
            conn,
            data,
            request_types=self.options.request_types,
            now=self._clock(),
            before_insert=draft.install,
        )
        return Receipt(request_id, draft.key, created)

    def file_request(
        self, key: str, fields: Mapping[str, str | None], files: Iterable[IncomingFile]
    ) -> Receipt:
        """File one request whose files are at hand (the CLI): the same checks as the API."""
        known = self.filed(key)
        if known is not None:
            return known
        with self.draft(key) as draft:
            for incoming in files:
                writer = draft.open_file(incoming.name, incoming.declared_type)
                for chunk in incoming.chunks:
                    writer.write(chunk)
                draft.close_file()
            return self.commit(draft, fields)

    def file_multipart(self, key: str, body: IO[bytes], boundary: bytes, length: int) -> Receipt:
        """File one request from a ``multipart/form-data`` body of ``length`` bytes (the API):
        the fields of :data:`FORM_FIELDS` and any number of file parts named ``files``. A key
        filed before gets its first answer and the body is not read."""
        known = self.filed(key)
        if known is not None:
            return known
        if self.budget is not None:
            self.budget.charge(length)
        self.check_space(length)
        with self.draft(key) as draft:
            known = self.filed(key)  # filed by a concurrent POST while we waited for the lock
            if known is not None:
                return known
            fields = _read_form(draft, body, boundary)
            return self.commit(draft, fields)

    # -- housekeeping ---------------------------------------------------------------------

    def sweep_orphans(self, *, older_than: float = ORPHAN_AGE_SECONDS) -> int:
        """Remove what a crash left in the spool: drafts in ``.incoming/`` and request
        directories no outbox row refers to, once older than ``older_than`` seconds (a draft
        in progress is younger). Returns how many were removed."""
        spool = self.options.spool
        if not spool.is_dir():
            return 0
        in_use = outbox.spool_directories_in_use(self._connection())
        cutoff = time.time() - older_than
        removed = 0
        drafts = spool / INCOMING
        candidates = list(drafts.iterdir()) if drafts.is_dir() else []
        candidates += [
            p for p in spool.iterdir() if p.name != INCOMING and p.name not in in_use
        ]
        for path in candidates:
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if info.st_mtime > cutoff:
                continue
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            removed += 1
        return removed

    # -- helpers --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock_for(self, key: str) -> Iterator[None]:
        with self._locks_guard:
            lock, users = self._key_locks.get(key, (threading.Lock(), 0))
            self._key_locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._locks_guard:
                lock, users = self._key_locks[key]
                if users == 1:
                    del self._key_locks[key]
                else:
                    self._key_locks[key] = (lock, users - 1)

    @staticmethod
    def _check_references(conn: sqlite3.Connection, fields: Mapping[str, str | None]) -> None:
        for name, table, entity in (
            ("device_crm_id", "devices", "device"),
            ("contact_crm_id", "contacts", "contact"),
        ):
            value = fields.get(name)
            if value and references.unknown_reference(conn, table, value):
                raise IntakeError(
                    422,
                    f"unknown_{entity}",
                    f"No such {entity} in the CRM mirror.",
                    field=name,
                )


def _check_not_restricted(conn: sqlite3.Connection, fields: Mapping[str, str | None]) -> None:
    """Refuse (409 ``contact_restricted``) a request for a contact whose processing is
    restricted: nothing is stored, and the portal learns it at once. A restriction set after
    the request was filed is the push lane's to apply (the request goes ``dead``)."""
    contact = fields.get("contact_crm_id")
    if contact and restrictions.is_restricted(conn, contact):
        raise IntakeError(
            409,
            "contact_restricted",
            "The contact's processing is restricted (syncd subject restrict); the request was "
            "not filed.",
            field="contact_crm_id",
        )


_READ_BYTES: Final = 64 * 1024
# File parts: "files", or PHP's and HTML's array spellings "files[]" and "files[3]".
_FILE_PART: Final = re.compile(r"files(?:\[[0-9]{0,3}\])?")


def _read_form(draft: _Draft, body: IO[bytes], boundary: bytes) -> dict[str, str | None]:
    """Stream a multipart body: fields into memory (bounded), files into ``draft``."""
    from werkzeug.exceptions import RequestEntityTooLarge
    from werkzeug.sansio.multipart import NEED_DATA, Data, Epilogue, MultipartDecoder
    from werkzeug.sansio.multipart import Field as FieldPart
    from werkzeug.sansio.multipart import File as FilePart

    limits = draft.options.limits
    decoder = MultipartDecoder(
        boundary, max_parts=limits.max_files_per_request + len(FORM_FIELDS) + 1
    )
    fields: dict[str, str | None] = {}
    field_name: str | None = None
    field_value = bytearray()
    writer: _FileWriter | None = None
    finished = False
    try:
        while not finished:
            chunk = body.read(_READ_BYTES)
            decoder.receive_data(chunk or None)
            while True:
                event = decoder.next_event()
                if event is NEED_DATA:
                    break
                if isinstance(event, Epilogue):
                    finished = True
                    break
                if isinstance(event, FilePart):
                    if not _FILE_PART.fullmatch(event.name or ""):
                        raise _unknown_field()
                    writer = draft.open_file(event.filename, event.headers.get("content-type", ""))
                elif isinstance(event, FieldPart):
                    if event.name not in FORM_FIELDS:
                        raise _unknown_field()
                    if event.name in fields:
                        raise IntakeError(
                            400, "duplicate_field", "The field is given twice.", field=event.name
                        )
                    field_name, field_value = event.name, bytearray()
                elif isinstance(event, Data):
                    if writer is not None:
                        writer.write(event.data)
                        if not event.more_data:
                            draft.close_file()
                            writer = None
                    elif field_name is not None:
                        field_value.extend(event.data)
                        if len(field_value) > MAX_FIELD_BYTES:
                            raise IntakeError(
                                413, "field_too_large", "The field is too long.", field=field_name
                            )
                        if not event.more_data:
                            fields[field_name] = _decode_field(field_name, field_value)
                            field_name = None
            if not chunk and not finished:
                raise ValueError("the body ended before the closing boundary")
    except RequestEntityTooLarge:
        raise IntakeError(
            413, "too_many_parts", "The form has more parts than a request may carry."
        ) from None
    except ValueError:
        raise IntakeError(
            400,
            "malformed_body",
            "The body is not complete, well-formed multipart/form-data.",
        ) from None
    return fields


def _unknown_field() -> IntakeError:
    return IntakeError(
        400,
        "unknown_field",
        "The form has a part that is not a request field; fields: "
        + ", ".join(FORM_FIELDS)
        + f"; files: parts named {FILE_FIELD} (or {FILE_FIELD}[]) with a file name.",
    )


def _decode_field(name: str, raw: bytes | bytearray) -> str | None:
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise IntakeError(
            400, "invalid_encoding", "The field is not UTF-8 text.", field=name
        ) from None
    return text if text.strip() else None


def _field_error(reason: str) -> IntakeError:
    """The outbox validation's message ("message: must be text ...") as a 422 naming the
    field."""
    name, sep, rest = reason.partition(": ")
    if not sep or " " in name:
        return IntakeError(422, "invalid_request", reason)
    return IntakeError(422, f"invalid_{name.split('[', 1)[0].split('.', 1)[0]}", rest, field=name)
