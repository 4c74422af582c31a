"""In-memory file storage of the fake portal: file UF values and Bitrix Disk.

File UF values (``ufCrm9Files``) and Disk files both keep their bytes here, with their size and
SHA-256, under IDs from one ``b_file`` counter (UF values answer with that ID; a Disk object has
its own ``ID`` and the ``b_file`` one as ``FILE_ID``). Disk names are unique per folder,
compared case-insensitively as MySQL's collation does. Signed links (``urlMachine``,
``DOWNLOAD_URL``) are HMACs over the file's identity, so the fake can serve the downloads.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from .envelope import ApiError
from .params import int_or_none, param, values

FIRST_FILE_ID = 30001  # b_file IDs, as in the reference example's 30577
_WHITESPACE = re.compile(rb"\s+")


@dataclass
class Blob:
    """Stored bytes with their fingerprint."""

    name: str
    data: bytes | bytearray
    sha256: str

    @property
    def size(self) -> int:
        """Size in bytes."""
        return len(self.data)

    def summary(self) -> dict[str, object]:
        """``{"name", "size", "sha256"}`` (what the tests' Python API exposes)."""
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


def make_blob(name: str, data: bytes | bytearray, sha256: str | None = None) -> Blob:
    """A blob, hashing ``data`` unless the digest is already known."""
    return Blob(name, data, sha256 or hashlib.sha256(data).hexdigest())


@dataclass
class CrmFile:
    """One value of a file UF: a ``b_file`` owned by a CRM item's field."""

    file_id: int
    blob: Blob
    entity: str
    item_id: int
    field: str


@dataclass
class Folder:
    """A Disk folder."""

    id: int
    name: str
    storage_id: int
    created: str


@dataclass
class DiskFile:
    """A Disk file object."""

    id: int
    folder_id: int
    file_id: int
    blob: Blob
    created: str
    created_by: int

    @property
    def name(self) -> str:
        """The file's name in its folder."""
        return self.blob.name


@dataclass
class PendingUpload:
    """An ``uploadUrl`` handed out by ``disk.folder.uploadfile`` and not used yet."""

    folder_id: int
    name: str | None
    generate_unique_name: bool
    created_by: int


@dataclass
class FileStore:
    """All files of the fake portal (guarded by the store lock)."""

    folder_id: int = 1
    storage_id: int = 1
    folder_name: str = "Service requests"
    created: str = "2019-01-01T10:00:00+02:00"
    crm_files: dict[int, CrmFile] = field(default_factory=dict)
    disk_files: dict[int, DiskFile] = field(default_factory=dict)
    folders: dict[int, Folder] = field(default_factory=dict)
    uploads: dict[str, PendingUpload] = field(default_factory=dict)
    next_file_id: int = FIRST_FILE_ID
    next_object_id: int = 0

    def __post_init__(self) -> None:
        self.folders[self.folder_id] = Folder(
            self.folder_id, self.folder_name, self.storage_id, self.created
        )
        self.next_object_id = max(self.next_object_id, self.folder_id + 1)

    def _file_id(self) -> int:
        file_id = self.next_file_id
        self.next_file_id += 1
        return file_id

    # --- file UF values -------------------------------------------------------------------------

    def add_crm_file(self, blob: Blob, entity: str, item_id: int, field_name: str) -> CrmFile:
        """Store a new file UF value."""
        crm_file = CrmFile(self._file_id(), blob, entity, item_id, field_name)
        self.crm_files[crm_file.file_id] = crm_file
        return crm_file

    def drop_crm_file(self, file_id: int) -> None:
        """Forget a file UF value (its bytes go with it)."""
        self.crm_files.pop(file_id, None)

    # --- Disk -----------------------------------------------------------------------------------

    def children(self, folder_id: int) -> list[DiskFile]:
        """Files directly in a folder, by ID."""
        return [f for f in self.disk_files.values() if f.folder_id == folder_id]

    def name_taken(self, folder_id: int, name: str) -> bool:
        """Whether a folder already holds ``name`` (case-insensitively)."""
        wanted = name.lower()
        return any(f.name.lower() == wanted for f in self.children(folder_id))

    def unique_name(self, folder_id: int, name: str) -> str:
        """``name`` or, when taken, ``stem (1).ext``, ``stem (2).ext``… as Disk renames."""
        if not self.name_taken(folder_id, name):
            return name
        dot = name.rfind(".")
        stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, "")
        number = 1
        while self.name_taken(folder_id, f"{stem} ({number}){ext}"):
            number += 1
        return f"{stem} ({number}){ext}"

    def add_disk_file(self, folder_id: int, blob: Blob, now: str, created_by: int) -> DiskFile:
        """Store a new Disk file (the caller has checked the name)."""
        object_id = self.next_object_id
        self.next_object_id += 1
        disk_file = DiskFile(object_id, folder_id, self._file_id(), blob, now, created_by)
        self.disk_files[object_id] = disk_file
        return disk_file

    def new_upload(self, pending: PendingUpload) -> str:
        """Register a one-time upload token."""
        token = secrets.token_urlsafe(24)
        self.uploads[token] = pending
        return token


FileSlot = int | Blob  # one entry of a file-field write: keep this file ID, or store a new file


def invalid_value(upper_field: str, detail: str = "") -> ApiError:
    """``crm.item``'s answer to a value a field cannot take."""
    return ApiError(
        400, "CRM_FIELD_ERROR_VALUE_NOT_VALID", f'Invalid value of field "{upper_field}"{detail}'
    )


def file_slots(upper_field: str, value: Any) -> list[FileSlot]:
    """Decode a multiple file field's write: ``[["name", "<base64>"], {"id": N}, …]``.

    ``""``/``[]``/``None`` clear the field; a lone ``["name", "<base64>"]`` pair counts as one
    file. ``{"fileData": …}`` entries are skipped silently (crm.item.* saves nothing for
    them). Bad base64, an empty file or a nameless pair raises ``CRM_FIELD_ERROR_VALUE_NOT_VALID``
    before anything is stored.
    """
    if value is None or value == "":
        return []
    entries = [value] if isinstance(value, dict) and _is_file_ref(value) else values(value)
    if len(entries) == 2 and all(isinstance(entry, str) for entry in entries):
        entries = [entries]
    slots: list[FileSlot] = []
    for entry in entries:
        if isinstance(entry, dict) and _is_file_ref(entry):
            if param(entry, "id") is None:
                continue  # fileData
            file_id = int_or_none(param(entry, "id"))
            if file_id is None:
                raise invalid_value(upper_field, ": a file ID is expected")
            slots.append(file_id)
            continue
        pair = values(entry) if isinstance(entry, list | dict) else []
        name = pair[0].strip() if pair and isinstance(pair[0], str) else ""
        if len(pair) < 2 or not name:
            raise invalid_value(upper_field, ': ["name", "<base64>"] or {"id": N} expected')
        data = decode_base64(pair[1])
        if not data:
            raise invalid_value(upper_field, f": the content of {name!r} is not valid base64")
        slots.append(make_blob(name, data))
    return slots


def _is_file_ref(entry: dict[str, Any]) -> bool:
    return any(str(key).lower() in ("id", "filedata") for key in entry)


def decode_base64(text: object) -> bytes | None:
    """Strictly decoded base64 (line breaks allowed), or None when it is not base64."""
    if not isinstance(text, str):
        return None
    try:
        raw = _WHITESPACE.sub(b"", text.encode("ascii"))
        return base64.b64decode(raw, validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None


class Links:
    """The fake portal's signed URLs for file UF values and Disk downloads."""

    def __init__(self, base_url: Callable[[], str], secret: str | None = None) -> None:
        self.base_url = base_url
        self._key = (secret or secrets.token_hex(16)).encode()
        self.auth = hmac.new(self._key, b"auth", hashlib.sha256).hexdigest()

    def _sign(self, kind: str, payload: dict[str, str]) -> str:
        body = base64.b64encode(urlencode(payload).encode()).decode()
        mac = hmac.new(self._key, f"{kind}|{body}".encode(), hashlib.sha256).digest()
        return f"{kind}|{body}.{base64.b64encode(mac).decode()}"

    def verify(self, kind: str, token: str, auth: str) -> dict[str, str] | None:
        """The payload of a link this fake signed, or None when forged or foreign."""
        prefix = f"{kind}|"
        if not token.startswith(prefix) or not hmac.compare_digest(auth, self.auth):
            return None
        body, _, mac = token[len(prefix):].partition(".")
        expected = hmac.new(self._key, f"{kind}|{body}".encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(base64.b64decode(mac), expected):
                return None
            return dict(parse_qsl(base64.b64decode(body).decode()))
        except (binascii.Error, ValueError):
            return None

    def _machine(self, path: str, token: str) -> str:
        return f"{self.base_url()}/rest/{path}?auth={self.auth}&token={quote(token, safe='')}"

    def crm_file(
        self, entity_type_id: int, item_id: int, upper_field: str, file_id: int
    ) -> dict[str, object]:
        """A file UF value as ``crm.item.*`` returns it: ``{id, url, urlMachine}``."""
        query = {
            "action": "crm.controller.item.getFile", "entityTypeId": str(entity_type_id),
            "id": str(item_id), "fieldName": upper_field, "fileId": str(file_id),
        }
        url = (
            f"{self.base_url()}/bitrix/services/main/ajax.php?action={query['action']}"
            f"&SITE_ID=s1&entityTypeId={entity_type_id}&id={item_id}&fieldName={upper_field}"
            f"&fileId={file_id}"
        )
        token = self._sign("crm", query)
        return {
            "id": file_id, "url": url,
            "urlMachine": self._machine("crm.controller.item.getFile.json", token),
        }

    def disk_download(self, object_id: int) -> str:
        """A Disk file's ``DOWNLOAD_URL``."""
        return self._machine("download.json", self._sign("disk", {"id": str(object_id)}))

    def upload_url(self, token: str) -> str:
        """Where the second step of a ``disk.folder.uploadfile`` posts its multipart form."""
        return f"{self.base_url()}/upload/{token}"
