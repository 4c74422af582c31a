"""Bitrix Disk methods of the fake portal.

- ``disk.folder.uploadfile {id, data: {NAME}, fileContent: [name, base64], generateUniqueName}``
  stores the file and answers the new object (numbers as the docs' upload example shows:
  ``ID``/``FILE_ID``/``DELETED_TYPE`` integers, ``SIZE`` and the other IDs strings). Without
  ``fileContent`` it answers ``{field: "file", uploadUrl}``: a one-time URL for a
  ``multipart/form-data`` POST (see ``upload.py``), whose answer is that same object.
- A taken name (case-insensitive, per folder) is refused with 400 ``DISK_OBJ_22000`` unless
  ``generateUniqueName`` asks for ``name (1).ext``.
- ``disk.folder.getchildren {id, filter}``, ``disk.folder.get {id}``, ``disk.file.get {id}``
  answer objects with every scalar as a string, as the docs' ``disk.file.get`` example does;
  unknown IDs answer 400 ``ERROR_NOT_FOUND`` "Could not find entity with id 'X'".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .envelope import ApiError, MethodResult
from .files import Blob, DiskFile, Folder, Links, PendingUpload, decode_base64, make_blob
from .params import flag, int_or_none, param, start_of, values
from .query import PAGE_SIZE, split_operator
from .store import Row, Store

UPLOAD_FIELD = "file"  # the multipart field an uploadUrl expects
Handler = Callable[[dict[str, Any]], MethodResult]
_FILTERABLE = frozenset(
    {"ID", "NAME", "CODE", "TYPE", "PARENT_ID", "STORAGE_ID", "CREATED_BY", "UPDATED_BY"}
)


def not_found(raw_id: Any) -> ApiError:
    """Disk's answer for an unknown object ID."""
    return ApiError(400, "ERROR_NOT_FOUND", f"Could not find entity with id '{raw_id}'")


def _bad_id() -> ApiError:
    return ApiError(400, "ERROR_ARGUMENT", "Invalid value of parameter {Parameter #0}")


def _name_required() -> ApiError:
    return ApiError(
        400, "DISK_BASE_SERVICE_22001", "Error: required parameter NAME (DISK_BASE_SERVICE_22001)"
    )


def _could_not_save() -> ApiError:
    return ApiError(400, "ERROR_COULD_NOT_SAVE_FILE", "Could not save file")


class Disk:
    """The ``disk.*`` handlers over the store's ``FileStore``."""

    def __init__(self, store: Store, links: Links, user_id: int = 1) -> None:
        self.store = store
        self.links = links
        self.user_id = user_id

    def register(self, handlers: dict[str, Handler]) -> None:
        """Add the handlers to a portal's method table."""
        handlers["disk.folder.uploadfile"] = self.upload_file
        handlers["disk.folder.getchildren"] = self.get_children
        handlers["disk.folder.get"] = self.folder_get
        handlers["disk.file.get"] = self.file_get

    # --- methods (called under the store lock) --------------------------------------------------

    def upload_file(self, params: dict[str, Any]) -> MethodResult:
        """``disk.folder.uploadfile``: store base64 ``fileContent`` or hand out an uploadUrl."""
        folder = self._folder(params)
        name = _data_name(param(params, "data"))
        unique = flag(param(params, "generateUniqueName"), default=False)
        content = param(params, "fileContent")
        if content in (None, "", [], {}):
            token = self.store.files.new_upload(
                PendingUpload(folder.id, name, unique, self.user_id)
            )
            return MethodResult({"field": UPLOAD_FIELD, "uploadUrl": self.links.upload_url(token)})
        if not name:
            raise _name_required()
        pair = values(content)
        data = decode_base64(pair[1]) if len(pair) >= 2 else None
        if data is None:
            raise _could_not_save()
        disk_file = self._create(folder.id, make_blob(name, data), unique, self.user_id)
        return MethodResult(self.render(disk_file, fresh=True))

    def get_children(self, params: dict[str, Any]) -> MethodResult:
        """``disk.folder.getchildren``: the folder's files, optionally filtered."""
        folder = self._folder(params)
        tests = _compile_filter(param(params, "filter"))
        rows = [
            row for row in (self.render(f) for f in self.store.files.children(folder.id))
            if all(test(row) for test in tests)
        ]
        start = max(0, start_of(params))
        following = start + PAGE_SIZE if start + PAGE_SIZE < len(rows) else None
        return MethodResult(rows[start:start + PAGE_SIZE], total=len(rows), next=following)

    def folder_get(self, params: dict[str, Any]) -> MethodResult:
        """``disk.folder.get``."""
        return MethodResult(self.render_folder(self._folder(params)))

    def file_get(self, params: dict[str, Any]) -> MethodResult:
        """``disk.file.get``."""
        raw = param(params, "id")
        object_id = int_or_none(raw)
        if object_id is None:
            raise _bad_id()
        disk_file = self.store.files.disk_files.get(object_id)
        if disk_file is None:
            raise not_found(raw)
        return MethodResult(self.render(disk_file))

    # --- the second step of an uploadUrl upload -------------------------------------------------

    def check_upload(self, token: str) -> None:
        """Raise unless ``token`` is an unused upload token (takes the store lock)."""
        with self.store.lock:
            if token not in self.store.files.uploads:
                raise _unknown_token()

    def complete_upload(self, token: str, form_name: str | None, blob_data: bytes | bytearray,
                        sha256: str) -> Row:
        """Create the file a multipart upload carried; the token is used up (takes the lock)."""
        with self.store.lock:
            files = self.store.files
            pending = files.uploads.pop(token, None)
            if pending is None:
                raise _unknown_token()
            if pending.folder_id not in files.folders:
                raise not_found(pending.folder_id)
            name = pending.name or (form_name or "").strip()
            if not name:
                raise _name_required()
            blob = make_blob(name, blob_data, sha256)
            disk_file = self._create(
                pending.folder_id, blob, pending.generate_unique_name, pending.created_by
            )
            return self.render(disk_file, fresh=True)

    # --- helpers ---------------------------------------------------------------------------------

    def _folder(self, params: dict[str, Any]) -> Folder:
        raw = param(params, "id")
        folder_id = int_or_none(raw)
        if folder_id is None:
            raise _bad_id()
        folder = self.store.files.folders.get(folder_id)
        if folder is None:
            raise not_found(raw)
        return folder

    def _create(self, folder_id: int, blob: Blob, unique: bool, created_by: int) -> DiskFile:
        files = self.store.files
        if unique:
            blob.name = files.unique_name(folder_id, blob.name)
        elif files.name_taken(folder_id, blob.name):
            raise ApiError(400, "DISK_OBJ_22000", "A file with this name already exists")
        return files.add_disk_file(folder_id, blob, self.store.clock.now_iso(), created_by)

    def render(self, disk_file: DiskFile, fresh: bool = False) -> Row:
        """A file object; ``fresh`` is the upload answer's typing (some integers), otherwise
        every scalar is a string like ``disk.file.get`` answers."""
        folder = self.store.files.folders[disk_file.folder_id]
        user = str(disk_file.created_by)
        return {
            "ID": disk_file.id if fresh else str(disk_file.id),
            "NAME": disk_file.name,
            "CODE": None,
            "STORAGE_ID": str(folder.storage_id),
            "TYPE": "file",
            "PARENT_ID": str(folder.id),
            "DELETED_TYPE": 0 if fresh else "0",
            "GLOBAL_CONTENT_VERSION": 1 if fresh else "1",
            "FILE_ID": disk_file.file_id if fresh else str(disk_file.file_id),
            "SIZE": str(disk_file.blob.size),
            "CREATE_TIME": disk_file.created,
            "UPDATE_TIME": disk_file.created,
            "DELETE_TIME": None,
            "CREATED_BY": user,
            "UPDATED_BY": user,
            "DELETED_BY": None if fresh else "0",
            "DOWNLOAD_URL": self.links.disk_download(disk_file.id),
            "DETAIL_URL": f"{self.links.base_url()}/docs/file/{folder.name}/{disk_file.name}",
        }

    def render_folder(self, folder: Folder) -> Row:
        """A folder object as ``disk.folder.get`` answers it."""
        return {
            "ID": str(folder.id),
            "NAME": folder.name,
            "CODE": None,
            "STORAGE_ID": str(folder.storage_id),
            "TYPE": "folder",
            "REAL_OBJECT_ID": str(folder.id),
            "PARENT_ID": None,
            "DELETED_TYPE": "0",
            "CREATE_TIME": folder.created,
            "UPDATE_TIME": folder.created,
            "DELETE_TIME": None,
            "CREATED_BY": str(self.user_id),
            "UPDATED_BY": str(self.user_id),
            "DELETED_BY": "0",
            "DETAIL_URL": f"{self.links.base_url()}/docs/path/{folder.name}/",
        }


def _unknown_token() -> ApiError:
    return ApiError(404, "ERROR_NOT_FOUND", "Upload token is unknown or has already been used")


def _data_name(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    name = param(data, "NAME")
    if name is None:
        return None
    return str(name).strip() or None


def _compile_filter(raw: Any) -> list[Callable[[Row], bool]]:
    """Disk filters: ``FIELD``/``=FIELD`` equal, ``!FIELD`` differs, ``%FIELD`` contains; values
    compare as strings, case-insensitively (as MySQL's collation does)."""
    if raw in (None, "", []):
        return []
    if not isinstance(raw, dict):
        raise ApiError(400, "ERROR_ARGUMENT", "Invalid value of parameter {filter}")
    tests: list[Callable[[Row], bool]] = []
    for key, value in raw.items():
        op, name = split_operator(str(key).strip())
        field = name.upper()
        if field not in _FILTERABLE or op not in ("", "=", "!", "!=", "%"):
            raise ApiError(400, "ERROR_ARGUMENT", f"Invalid filter: field '{key}' is not allowed")
        wanted = [str(item).lower() for item in values(value)]
        tests.append(_condition(field, op, wanted))
    return tests


def _condition(field: str, op: str, wanted: list[str]) -> Callable[[Row], bool]:
    def actual(row: Row) -> str:
        return str(row.get(field) or "").lower()

    if op == "%":
        return lambda row: any(item in actual(row) for item in wanted)
    if op in ("!", "!="):
        return lambda row: actual(row) not in wanted
    return lambda row: actual(row) in wanted
