"""The fake's data: SharePoint sites, their document libraries (drives) and driveItems, the
mutations that change them and each library's change log.

Every change to an item gives it the library's next *change sequence* number and appends
``(seq, item id)`` to the log; an item's ``seq`` is its latest change, so an older log entry of
the same item is stale. Delta enumeration (:mod:`.delta`) walks this log. Deleted items stay as
tombstones (reported by later deltas). An item's serialised delta JSON is cached until the item
(or, for its ``webUrl``, ``size`` and ``childCount``, a relative) changes.

Nothing here locks: :class:`~.server.FakeGraph` holds its lock around every call.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote

from .content import MIME_TYPES, Content, GeneratedContent, StoredContent, kind_of
from .wire import dumps, graph_time, utc_now

DRIVE_TYPE: Final = "documentLibrary"
_FORBIDDEN_CHARACTERS: Final = frozenset('"*:<>?/\\|')
_URL_SAFE: Final = "()'!$&+,;=@~"
_APP_ID: Final = "2a1f0000-0000-4000-8000-0000000000a1"
_TEAM_ID: Final = "6ec4996b-0000-4000-8000-0000000000d1"


def _guid(*parts: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts))


@dataclass(slots=True, eq=False)
class Item:
    """One driveItem (folder or file), live or a tombstone."""

    id: str
    name: str
    parent_id: str | None  # None only for the root
    kind: str  # "folder" or a content kind (see content.MIME_TYPES)
    created: datetime
    modified: datetime
    seq: int
    content: Content | None = None
    content_version: int = 1
    etag_version: int = 1
    ctag_version: int = 1
    deleted: bool = False
    by_app: bool = False  # last changed by the fake's API ("Manual import") rather than seeded
    children: dict[str, str] | None = None  # folders: casefolded name → id of live children
    size: int = 0  # files: the content's size; folders: the live files below
    cached: bytes | None = None  # serialised delta JSON
    guid_cache: str = ""  # computed on first use
    url_cache: str = ""  # webUrl, until the item or a parent is renamed or moved

    @property
    def is_folder(self) -> bool:
        """Whether the item is a folder (the root included)."""
        return self.kind == "folder"

    @property
    def guid(self) -> str:
        """The GUID SharePoint puts in the eTag/cTag."""
        if not self.guid_cache:
            digest = hashlib.md5(self.id.encode(), usedforsecurity=False).digest()
            self.guid_cache = str(uuid.UUID(bytes=digest, version=4)).upper()
        return self.guid_cache

    @property
    def etag(self) -> str:
        """The eTag: changes with every change."""
        return f'"{{{self.guid}}},{self.etag_version}"'

    @property
    def ctag(self) -> str:
        """The cTag: changes with the content."""
        return f'"c:{{{self.guid}}},{self.ctag_version}"'


@dataclass(eq=False)
class Site:
    """A SharePoint site (``hostname`` + server-relative ``path``)."""

    hostname: str
    path: str
    name: str
    display_name: str
    created: datetime
    drive_ids: list[str] = field(default_factory=list)

    @property
    def site_collection_id(self) -> uuid.UUID:
        """The site collection's GUID."""
        return _guid("site", self.hostname.lower(), self.path.lower())

    @property
    def web_id(self) -> uuid.UUID:
        """The web's GUID."""
        return _guid("web", self.hostname.lower(), self.path.lower())

    @property
    def id(self) -> str:
        """Graph's composite site id: ``hostname,site-collection-guid,web-guid``."""
        return f"{self.hostname},{self.site_collection_id},{self.web_id}"

    @property
    def web_url(self) -> str:
        """``https://hostname/sites/Name``."""
        return f"https://{self.hostname}{quote(self.path, safe='/' + _URL_SAFE)}"

    @property
    def domain(self) -> str:
        """The tenant's mail domain (``contoso.sharepoint.com`` → ``contoso.com``)."""
        return self.hostname.split(".", 1)[0] + ".com"

    def to_json(self) -> dict[str, Any]:
        """The site resource."""
        return {
            "createdDateTime": graph_time(self.created),
            "description": "",
            "id": self.id,
            "lastModifiedDateTime": graph_time(self.created),
            "name": self.name,
            "webUrl": self.web_url,
            "displayName": self.display_name,
            "root": {},
            "siteCollection": {"hostname": self.hostname},
        }


class Library:
    """A document library (drive) of a site with its items and change log."""

    def __init__(self, site: Site, name: str, created: datetime) -> None:
        self.site = site
        self.name = name
        self.created = created
        list_id = _guid("list", site.id, name.lower())
        raw = site.site_collection_id.bytes + site.web_id.bytes + list_id.bytes
        self.id = "b!" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
        url_name = "Shared Documents" if name == "Documents" else name
        self.web_url = f"{site.web_url}/{quote(url_name, safe=_URL_SAFE)}"
        self.items: dict[str, Item] = {}
        self.seq = 0
        self.log_seqs: list[int] = []  # strictly increasing
        self.log_ids: list[str] = []
        self.token_epoch = 0  # delta tokens of an older epoch answer 410
        self._next_number = 0
        root = Item(
            self._new_id(), "root", None, "folder", created, created, 0, children={}
        )
        self.items[root.id] = root
        self.root_id = root.id
        self._changed(root, created, by_app=False)

    # --- lookups ------------------------------------------------------------------------------

    def live(self, item_id: str) -> Item:
        """A live item (``"root"`` names the root); KeyError when unknown or deleted."""
        item = self.items.get(self.root_id if item_id == "root" else item_id)
        if item is None or item.deleted:
            raise KeyError(f"no item {item_id!r} in drive {self.id}")
        return item

    def folder(self, item_id: str | None) -> Item:
        """A live folder (None: the root); KeyError/ValueError otherwise."""
        item = self.live(self.root_id if item_id is None else item_id)
        if not item.is_folder:
            raise ValueError(f"item {item.id} is not a folder")
        return item

    def segments(self, item: Item) -> list[str]:
        """Names from the root down to ``item`` (empty for the root)."""
        names: list[str] = []
        while item.parent_id is not None:
            names.append(item.name)
            item = self.items[item.parent_id]
        names.reverse()
        return names

    def folder_path(self, item: Item) -> str:
        """The path of the folder containing ``item``: ``/`` at the top, else ``/A/B``."""
        return "/" + "/".join(self.segments(item)[:-1])

    def web_url_of(self, item: Item) -> str:
        """The item's browser URL."""
        if not item.url_cache:
            if item.parent_id is None:
                item.url_cache = self.web_url
            else:
                parent = self.web_url_of(self.items[item.parent_id])
                item.url_cache = parent + "/" + quote(item.name, safe=_URL_SAFE)
        return item.url_cache

    def descendants(self, folder: Item) -> Iterator[Item]:
        """Every live item below ``folder``, parents before their children."""
        stack = [folder]
        while stack:
            current = stack.pop()
            for child_id in (current.children or {}).values():
                child = self.items[child_id]
                yield child
                if child.is_folder:
                    stack.append(child)

    def live_items(self) -> Iterator[Item]:
        """Every live item, the root included."""
        return (item for item in self.items.values() if not item.deleted)

    # --- mutations ----------------------------------------------------------------------------

    def add_folder(
        self, name: str, parent_id: str | None = None, *, when: datetime | None = None,
        by_app: bool = True,
    ) -> Item:
        """Create a folder; ValueError when the parent has an item of that name."""
        parent = self.folder(parent_id)
        moment = when or utc_now()
        item = Item(self._new_id(), _valid_name(name), parent.id, "folder", moment, moment, 0,
                    children={})
        self._attach(item, parent)
        self.items[item.id] = item
        self._changed(item, moment, by_app)
        return item

    def add_file(
        self, name: str, parent_id: str | None = None, *, kind: str | None = None,
        size: int | None = None, data: bytes | None = None, when: datetime | None = None,
        by_app: bool = True,
    ) -> Item:
        """Create a file: ``data`` as given, or generated content of ``kind`` (default: from the
        name) and ``size`` (default: a realistic size for the kind)."""
        parent = self.folder(parent_id)
        moment = when or utc_now()
        item_id = self._new_id()
        file_kind = kind or kind_of(name)
        if file_kind not in MIME_TYPES:
            raise ValueError(f"unknown kind {file_kind!r}; expected one of {sorted(MIME_TYPES)}")
        item = Item(item_id, _valid_name(name), parent.id, file_kind, moment, moment, 0)
        item.content = _content(item, size, data)
        item.size = item.content.size
        self._attach(item, parent)
        self.items[item.id] = item
        self._changed(item, moment, by_app)
        return item

    def rename(self, item_id: str, new_name: str) -> Item:
        """Rename an item (new eTag and lastModifiedDateTime; cTag and content unchanged)."""
        item = self._movable(item_id)
        parent = self.folder(item.parent_id)
        name = _valid_name(new_name)
        self._check_free(parent, name, item)
        assert parent.children is not None
        del parent.children[item.name.casefold()]
        item.name = name
        parent.children[name.casefold()] = item.id
        self._metadata_changed(item)
        return item

    def move(self, item_id: str, new_parent_id: str | None) -> Item:
        """Move an item to another folder of the library (new eTag and lastModifiedDateTime)."""
        item = self._movable(item_id)
        target = self.folder(new_parent_id)
        probe: Item | None = target
        while probe is not None:
            if probe.id == item.id:
                raise ValueError("cannot move a folder into itself or one of its subfolders")
            probe = self.items[probe.parent_id] if probe.parent_id else None
        if target.id == item.parent_id:
            return item
        self._check_free(target, item.name, item)
        old_parent = self.folder(item.parent_id)
        self._detach(item, old_parent)
        self._attach(item, target)
        self._metadata_changed(item)
        return item

    def modify(self, item_id: str, *, size: int | None = None, data: bytes | None = None) -> Item:
        """New content for a file (new version: eTag, cTag, lastModifiedDateTime, bytes and
        hash change; ``size`` None keeps the size); a folder just gets a new eTag."""
        item = self._movable(item_id)
        if item.is_folder:
            self._metadata_changed(item)
            return item
        item.content_version += 1
        item.ctag_version += 1
        old_size = item.size
        item.content = _content(item, item.size if size is None and data is None else size, data)
        item.size = item.content.size
        self._adjust_ancestors(item.parent_id, item.size - old_size)
        self._metadata_changed(item)
        return item

    def delete(self, item_id: str) -> list[str]:
        """Delete an item; a folder's descendants go with it. The ids deleted, deepest last."""
        item = self._movable(item_id)
        parent = self.folder(item.parent_id)
        doomed = [item, *self.descendants(item)] if item.is_folder else [item]
        self._detach(item, parent)
        moment = utc_now()
        for victim in doomed:
            victim.deleted = True
            victim.children = {} if victim.is_folder else None
            self._changed(victim, moment, by_app=True)
        return [victim.id for victim in doomed]

    # --- serialisation ------------------------------------------------------------------------

    def delta_json(self, item: Item) -> bytes:
        """The item as a delta page lists it (cached)."""
        if item.cached is None:
            item.cached = dumps(self.tombstone(item) if item.deleted else self.fields(item))
        return item.cached

    def fields(self, item: Item, *, full_parent: bool = False) -> dict[str, Any]:
        """The driveItem resource. ``full_parent`` adds ``name``, ``path`` and ``siteId`` to
        ``parentReference`` (item GETs do; delta never gives ``path``)."""
        fields: dict[str, Any] = {
            "id": item.id,
            "name": item.name,
            "webUrl": self.web_url_of(item),
            "createdDateTime": graph_time(item.created),
            "lastModifiedDateTime": graph_time(item.modified),
            "eTag": item.etag,
        }
        if not item.is_folder or item.parent_id is None:
            fields["cTag"] = item.ctag
        fields["size"] = item.size
        if item.parent_id is None:
            fields["createdBy"] = {"user": {"displayName": "System Account"}}
            fields["lastModifiedBy"] = {"user": {"displayName": "System Account"}}
            fields["root"] = {}
        else:
            fields["createdBy"] = self._team()
            fields["lastModifiedBy"] = self._app() if item.by_app else self._team()
        if item.is_folder:
            fields["folder"] = {"childCount": len(item.children or {})}
        else:
            assert item.content is not None
            fields["file"] = {
                "mimeType": MIME_TYPES[item.kind],
                "hashes": {"quickXorHash": item.content.quick_xor_hash()},
            }
        fields["parentReference"] = self.parent_reference(item, full=full_parent)
        fields["fileSystemInfo"] = {
            "createdDateTime": graph_time(item.created),
            "lastModifiedDateTime": graph_time(item.modified),
        }
        return fields

    def parent_reference(self, item: Item, *, full: bool = False) -> dict[str, Any]:
        """``parentReference``: driveType, driveId and (but for the root) the parent's id;
        ``full`` adds the parent's name and path and the site id."""
        reference: dict[str, Any] = {"driveType": DRIVE_TYPE, "driveId": self.id}
        if item.parent_id is None:
            return reference
        reference["id"] = item.parent_id
        if full:
            parent = self.items[item.parent_id]
            reference["name"] = parent.name
            reference["path"] = "/drives/" + self.id + "/root:" + "".join(
                "/" + segment for segment in self.segments(parent)
            )
            reference["siteId"] = self.site.id
        return reference

    def tombstone(self, item: Item) -> dict[str, Any]:
        """A deleted item as delta reports it."""
        return {
            "id": item.id,
            "deleted": {"state": "deleted"},
            "folder" if item.is_folder else "file": {},
            "parentReference": self.parent_reference(item),
            "lastModifiedDateTime": graph_time(item.modified),
            "size": 0,
        }

    def drive_json(self) -> dict[str, Any]:
        """The drive resource."""
        root = self.items[self.root_id]
        return {
            "createdDateTime": graph_time(self.created),
            "description": "",
            "id": self.id,
            "lastModifiedDateTime": graph_time(root.modified),
            "name": self.name,
            "webUrl": self.web_url,
            "driveType": DRIVE_TYPE,
            "createdBy": {"user": {"displayName": "System Account"}},
            "lastModifiedBy": {"user": {"displayName": "System Account"}},
            "owner": {"group": {"displayName": f"{self.site.display_name} Owners"}},
            "quota": {"deleted": 0, "remaining": 27487790694400 - root.size, "state": "normal",
                      "total": 27487790694400, "used": root.size},
        }

    def snapshot_entry(self, item: Item, folder_paths: dict[str, str]) -> dict[str, Any]:
        """The item as :meth:`FakeGraph.snapshot` describes it; ``folder_paths`` caches the
        path of each folder (``""`` for the root) across calls."""
        path = self._path_of_folder(item.parent_id or self.root_id, folder_paths) or "/"
        return {
            "name": item.name,
            "parent_id": item.parent_id,
            "kind": "folder" if item.is_folder else "file",
            "path": path,
            "size": item.size,
            "mime_type": None if item.is_folder else MIME_TYPES[item.kind],
            "quick_xor_hash": None if item.content is None else item.content.quick_xor_hash(),
            "etag": item.etag,
            "ctag": None if item.is_folder else item.ctag,
            "created_at": graph_time(item.created),
            "modified_at": graph_time(item.modified),
            "web_url": self.web_url_of(item),
        }

    # --- internals ----------------------------------------------------------------------------

    def _path_of_folder(self, folder_id: str, cache: dict[str, str]) -> str:
        known = cache.get(folder_id)
        if known is not None:
            return known
        folder = self.items[folder_id]
        if folder.parent_id is None:
            path = ""
        else:
            path = self._path_of_folder(folder.parent_id, cache) + "/" + folder.name
        cache[folder_id] = path
        return path

    def _new_id(self) -> str:
        number = self._next_number
        self._next_number += 1
        digest = hashlib.sha1(f"{self.id}/{number}".encode(), usedforsecurity=False).digest()
        return "01" + base64.b32encode(digest).decode()

    def _changed(self, item: Item, moment: datetime, by_app: bool) -> None:
        self.seq += 1
        item.seq = self.seq
        item.modified = moment
        item.by_app = by_app
        item.cached = None
        self.log_seqs.append(self.seq)
        self.log_ids.append(item.id)

    def _metadata_changed(self, item: Item) -> None:
        item.etag_version += 1
        item.url_cache = ""
        self._changed(item, max(utc_now(), item.modified), by_app=True)
        if item.is_folder:  # descendants' webUrl changed (they are not reported, as in Graph)
            for below in self.descendants(item):
                below.cached = None
                below.url_cache = ""

    def _movable(self, item_id: str) -> Item:
        item = self.live(item_id)
        if item.parent_id is None:
            raise ValueError("the root of a drive cannot be changed that way")
        return item

    def _check_free(self, folder: Item, name: str, moving: Item | None = None) -> None:
        existing = (folder.children or {}).get(name.casefold())
        if existing is not None and (moving is None or existing != moving.id):
            raise ValueError(f"an item named {name!r} already exists in that folder")

    def _attach(self, item: Item, parent: Item) -> None:
        self._check_free(parent, item.name)
        assert parent.children is not None
        parent.children[item.name.casefold()] = item.id
        item.parent_id = parent.id
        self._adjust_ancestors(parent.id, item.size)

    def _detach(self, item: Item, parent: Item) -> None:
        assert parent.children is not None
        del parent.children[item.name.casefold()]
        self._adjust_ancestors(parent.id, -item.size)

    def _adjust_ancestors(self, folder_id: str | None, size_delta: int) -> None:
        """Add ``size_delta`` to the folder and its ancestors (their JSON is stale either way:
        sizes or childCount changed)."""
        while folder_id is not None:
            folder = self.items[folder_id]
            folder.size += size_delta
            folder.cached = None
            folder_id = folder.parent_id

    def _team(self) -> dict[str, Any]:
        return {"user": {"email": f"service-docs@{self.site.domain}", "id": _TEAM_ID,
                         "displayName": "Service Documentation Team"}}

    def _app(self) -> dict[str, Any]:
        return {"application": {"id": _APP_ID, "displayName": "Manual import"},
                "user": {"displayName": "SharePoint App"}}


def _valid_name(name: str) -> str:
    """``name`` if SharePoint accepts it as an item name; ValueError otherwise."""
    if not name or name != name.strip() or name.endswith(".") or name in (".", ".."):
        raise ValueError(f"invalid item name {name!r}")
    if not _FORBIDDEN_CHARACTERS.isdisjoint(name) or len(name) > 400:
        raise ValueError(f"invalid item name {name!r}")
    return name


def _content(item: Item, size: int | None, data: bytes | None) -> Content:
    if data is not None:
        return StoredContent(bytes(data))
    if size is None:
        size = default_size(item.kind, item.id)
    return GeneratedContent(item.kind, size, f"{item.id}:{item.content_version}")


_DEFAULT_SIZES: Final[dict[str, tuple[int, int]]] = {
    "pdf": (50_000, 20_000_000),
    "mp4": (5_000_000, 300_000_000),
    "jpg": (200_000, 8_000_000),
    "png": (50_000, 3_000_000),
    "docx": (20_000, 2_000_000),
    "xlsx": (20_000, 2_000_000),
    "zip": (100_000, 50_000_000),
    "bin": (1_000, 1_000_000),
}


def size_range(kind: str) -> tuple[int, int]:
    """The realistic (smallest, largest) size of a file of ``kind``."""
    return _DEFAULT_SIZES[kind]


def default_size(kind: str, key: str) -> int:
    """A realistic size for a ``kind`` file, derived from ``key`` (log-uniform in the kind's
    range)."""
    low, high = _DEFAULT_SIZES[kind]
    fraction = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    return int(low * (high / low) ** fraction)
