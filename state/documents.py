"""The documents mirror in the cache: libraries, their items, staged enumerations, producers.

How an enumeration moves (``syncd.engines.documents`` drives it):

* Every page but the last is *staged* (``documents_staging``) in one transaction together with the
  link to the page after it (``document_libraries.enumeration_link``), so a crash resumes from the
  last committed page and never re-applies or skips one.
* The last page (the one carrying the delta link) is applied in one transaction with everything
  staged before it and with the new delta link: a full enumeration replaces the library's items
  (a swap), an incremental one merges changes and deletions. Readers see the library before or
  after, never half of it, and the delta link never runs ahead of the items it covers.
* An item seen twice in one enumeration keeps the last version (staging is keyed by item ID).

Folder paths are rebuilt from the parent chain after each apply (Graph's delta never sends
``parentReference.path``); an item is *in scope* when it lies below the library's folder scope.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from syncd.core.clock import iso, parse_iso_or_none
from syncd.core.documents import DocumentItem
from syncd.state.db import write_transaction

EnumerationKind = Literal["full", "incremental"]

_ITEM_COLUMNS = (
    "id", "parent_id", "kind", "name", "size", "mime_type", "quick_xor_hash", "etag", "ctag",
    "created_at", "modified_at", "web_url",
)
_COLUMN_LIST = ", ".join(_ITEM_COLUMNS)


@dataclass(frozen=True)
class LibraryConfig:
    """What the configuration says about one library (written by :func:`configure`)."""

    name: str
    site: str
    library: str
    folder: str
    permission: str
    producer_keys: tuple[str, ...]
    producers: tuple[str, ...]


@dataclass(frozen=True)
class LibraryState:
    """One ``document_libraries`` row."""

    name: str
    site: str
    library: str
    folder: str
    permission: str
    producers: tuple[str, ...]
    site_id: str | None
    drive_id: str | None
    delta_link: str | None
    enumeration_kind: EnumerationKind | None
    enumeration_link: str | None
    enumeration_pages: int
    enumeration_started_at: datetime | None
    last_delta_at: datetime | None
    last_full_at: datetime | None
    item_count: int
    health: str
    last_error: str | None
    health_updated_at: datetime | None


@dataclass(frozen=True)
class StoredDocument:
    """What the download path needs of one file."""

    id: str
    library: str
    drive_id: str | None
    name: str
    size: int | None
    mime_type: str | None
    quick_xor_hash: str | None


@dataclass(frozen=True)
class ApplyResult:
    """What applying an enumeration's last page changed."""

    kind: EnumerationKind
    upserted: int
    deleted: int
    item_count: int


_STATE_COLUMNS = (
    "name, site, library, folder, permission, producers, site_id, drive_id, delta_link, "
    "enumeration_kind, enumeration_link, enumeration_pages, enumeration_started_at, "
    "last_delta_at, last_full_at, item_count, health, last_error, health_updated_at"
)


def _state(row: Sequence[Any]) -> LibraryState:
    return LibraryState(
        name=row[0],
        site=row[1],
        library=row[2],
        folder=row[3],
        permission=row[4],
        producers=tuple(json.loads(row[5])),
        site_id=row[6],
        drive_id=row[7],
        delta_link=row[8],
        enumeration_kind=row[9],
        enumeration_link=row[10],
        enumeration_pages=row[11],
        enumeration_started_at=parse_iso_or_none(row[12]),
        last_delta_at=parse_iso_or_none(row[13]),
        last_full_at=parse_iso_or_none(row[14]),
        item_count=row[15],
        health=row[16],
        last_error=row[17],
        health_updated_at=parse_iso_or_none(row[18]),
    )


# -- configuration ------------------------------------------------------------------------------


def configure(
    conn: sqlite3.Connection, libraries: Sequence[LibraryConfig], aliases: dict[str, str]
) -> list[str]:
    """Make the cache's libraries, producer keys and aliases match the configuration, in one
    transaction. A library whose site or library name changed forgets its drive, cursor and
    items (they belong to another library now); one no longer configured is removed with its
    items. Returns the names of the libraries removed."""
    with write_transaction(conn):
        existing = {row[0]: row for row in conn.execute(
            "SELECT name, site, library, folder FROM document_libraries"
        )}
        wanted = {library.name for library in libraries}
        removed = sorted(set(existing) - wanted)
        for name in removed:
            conn.execute("DELETE FROM document_libraries WHERE name = ?", (name,))
        for library in libraries:
            old = existing.get(library.name)
            if old is not None and (old[1], old[2]) != (library.site, library.library):
                conn.execute("DELETE FROM document_libraries WHERE name = ?", (library.name,))
                old = None
            if old is None:
                conn.execute(
                    "INSERT INTO document_libraries (name, site, library, folder, permission, "
                    "producers) VALUES (?, ?, ?, ?, ?, ?)",
                    (library.name, library.site, library.library, library.folder,
                     library.permission, json.dumps(list(library.producers))),
                )
            else:
                conn.execute(
                    "UPDATE document_libraries SET folder = ?, permission = ?, producers = ? "
                    "WHERE name = ?",
                    (library.folder, library.permission, json.dumps(list(library.producers)),
                     library.name),
                )
                if old[3] != library.folder:
                    _rebuild_paths(conn, library.name, library.folder)
                    conn.execute(
                        "UPDATE document_libraries SET item_count = (SELECT count(*) FROM "
                        "documents WHERE library = ? AND kind = 'file' AND in_scope = 1) "
                        "WHERE name = ?",
                        (library.name, library.name),
                    )
            conn.execute("DELETE FROM library_producers WHERE library = ?", (library.name,))
            conn.executemany(
                "INSERT OR IGNORE INTO library_producers (library, producer_key) VALUES (?, ?)",
                [(library.name, key) for key in library.producer_keys],
            )
        conn.execute("DELETE FROM producer_aliases")
        conn.executemany(
            "INSERT INTO producer_aliases (alias_key, producer_key) VALUES (?, ?)",
            [(alias, key) for alias, key in aliases.items() if alias != key],
        )
    return removed


def load(conn: sqlite3.Connection, name: str) -> LibraryState | None:
    """The library called ``name``; None if it is not in the cache."""
    row = conn.execute(
        f"SELECT {_STATE_COLUMNS} FROM document_libraries WHERE name = ?", (name,)
    ).fetchone()
    return _state(row) if row else None


def all_libraries(conn: sqlite3.Connection) -> list[LibraryState]:
    """Every library in the cache, by name."""
    return [
        _state(row)
        for row in conn.execute(f"SELECT {_STATE_COLUMNS} FROM document_libraries ORDER BY name")
    ]


def set_drive(conn: sqlite3.Connection, name: str, *, site_id: str, drive_id: str) -> None:
    """Keep the resolved site and drive IDs of a library."""
    with write_transaction(conn):
        conn.execute(
            "UPDATE document_libraries SET site_id = ?, drive_id = ? WHERE name = ?",
            (site_id, drive_id, name),
        )


def record_health(
    conn: sqlite3.Connection, name: str, *, health: str, error: str | None, now: datetime
) -> None:
    """The library job's health as the portal and ``status`` see it."""
    with write_transaction(conn):
        conn.execute(
            "UPDATE document_libraries SET health = ?, last_error = COALESCE(?, last_error), "
            "health_updated_at = ? WHERE name = ?",
            (health, error, iso(now), name),
        )


# -- enumerations -------------------------------------------------------------------------------


def begin(conn: sqlite3.Connection, name: str, kind: EnumerationKind, *, now: datetime) -> None:
    """Start an enumeration of ``kind`` afresh: whatever an earlier one staged is dropped.

    The library's items stay as they are (and visible) until the enumeration's last page."""
    with write_transaction(conn):
        conn.execute("DELETE FROM documents_staging WHERE library = ?", (name,))
        conn.execute(
            "UPDATE document_libraries SET enumeration_kind = ?, enumeration_link = NULL, "
            "enumeration_pages = 0, enumeration_started_at = ? WHERE name = ?",
            (kind, iso(now), name),
        )


def forget_cursor(conn: sqlite3.Connection, name: str) -> None:
    """Drop the library's delta link (and any enumeration in progress), so that its next run
    enumerates everything again; the items stay visible until that enumeration is swapped in."""
    with write_transaction(conn):
        conn.execute("DELETE FROM documents_staging WHERE library = ?", (name,))
        conn.execute(
            "UPDATE document_libraries SET delta_link = NULL, enumeration_kind = NULL, "
            "enumeration_link = NULL, enumeration_pages = 0, enumeration_started_at = NULL "
            "WHERE name = ?",
            (name,),
        )


def stage_page(
    conn: sqlite3.Connection, name: str, items: Iterable[DocumentItem], next_link: str
) -> None:
    """Stage one page that is not the last, with the link to the page after it."""
    with write_transaction(conn):
        _stage(conn, name, items)
        conn.execute(
            "UPDATE document_libraries SET enumeration_link = ?, "
            "enumeration_pages = enumeration_pages + 1 WHERE name = ?",
            (next_link, name),
        )


def finish(
    conn: sqlite3.Connection,
    name: str,
    kind: EnumerationKind,
    items: Iterable[DocumentItem],
    delta_link: str,
    *,
    now: datetime,
) -> ApplyResult:
    """Apply the enumeration's last page together with everything staged before it, and keep
    ``delta_link`` as the library's cursor, in one transaction."""
    with write_transaction(conn):
        _stage(conn, name, items)
        folder = conn.execute(
            "SELECT folder FROM document_libraries WHERE name = ?", (name,)
        ).fetchone()[0]
        if kind == "full":
            upserted, deleted = _swap(conn, name)
        else:
            upserted, deleted = _merge(conn, name)
        if kind == "full" or _folders_staged(conn, name):
            _rebuild_paths(conn, name, folder)
        elif upserted:  # only files changed: place them under their (unchanged) folders
            _place_staged_files(conn, name, folder)
        conn.execute("DELETE FROM documents_staging WHERE library = ?", (name,))
        count = conn.execute(
            "SELECT count(*) FROM documents WHERE library = ? AND kind = 'file' AND in_scope = 1",
            (name,),
        ).fetchone()[0]
        conn.execute(
            "UPDATE document_libraries SET delta_link = ?, enumeration_kind = NULL, "
            "enumeration_link = NULL, enumeration_pages = 0, enumeration_started_at = NULL, "
            "last_delta_at = ?, item_count = ?, health = 'ok', health_updated_at = ?, "
            "last_full_at = CASE WHEN ? = 'full' THEN ? ELSE last_full_at END WHERE name = ?",
            (delta_link, iso(now), count, iso(now), kind, iso(now), name),
        )
    return ApplyResult(kind=kind, upserted=upserted, deleted=deleted, item_count=count)


def _stage(conn: sqlite3.Connection, name: str, items: Iterable[DocumentItem]) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO documents_staging (library, deleted, "
        f"{_COLUMN_LIST}) VALUES (?, ?, {', '.join('?' * len(_ITEM_COLUMNS))})",
        [
            (name, int(item.deleted), item.id, item.parent_id, item.kind, item.name, item.size,
             item.mime_type, item.quick_xor_hash, item.etag, item.ctag, item.created_at,
             item.modified_at, item.web_url)
            for item in items
        ],
    )


def _swap(conn: sqlite3.Connection, name: str) -> tuple[int, int]:
    before = conn.execute(
        "SELECT count(*) FROM documents WHERE library = ?", (name,)
    ).fetchone()[0]
    conn.execute("DELETE FROM documents WHERE library = ?", (name,))
    # An item another library had (the same drive configured twice is refused, so only after a
    # reconfiguration) moves here.
    conn.execute(
        f"INSERT OR REPLACE INTO documents (library, {_COLUMN_LIST}) "
        f"SELECT library, {_COLUMN_LIST} FROM documents_staging "
        "WHERE library = ? AND deleted = 0",
        (name,),
    )
    after = conn.execute(
        "SELECT count(*) FROM documents WHERE library = ?", (name,)
    ).fetchone()[0]
    return after, max(0, before - after)


def _merge(conn: sqlite3.Connection, name: str) -> tuple[int, int]:
    # Graph reports a renamed or moved folder, not what lies below it: the web URLs below it
    # follow the folder's (path-style URLs; SharePoint's Doc.aspx links do not change).
    moved_folders = conn.execute(
        "SELECT d.web_url, s.web_url FROM documents_staging AS s JOIN documents AS d "
        "ON d.id = s.id WHERE s.library = ? AND s.deleted = 0 AND s.kind = 'folder' "
        "AND d.web_url IS NOT NULL AND s.web_url IS NOT NULL AND d.web_url <> s.web_url",
        (name,),
    ).fetchall()
    upserted = conn.execute(
        f"INSERT INTO documents (library, {_COLUMN_LIST}) "
        f"SELECT library, {_COLUMN_LIST} FROM documents_staging "
        "WHERE library = ? AND deleted = 0 "
        "ON CONFLICT(id) DO UPDATE SET library = excluded.library, "
        + ", ".join(f"{column} = excluded.{column}" for column in _ITEM_COLUMNS[1:]),
        (name,),
    ).rowcount
    for old_url, new_url in moved_folders:
        conn.execute(
            "UPDATE documents SET web_url = ? || substr(web_url, ?) WHERE library = ? "
            "AND substr(web_url, 1, ?) = ? AND id NOT IN "
            "(SELECT id FROM documents_staging WHERE library = ?)",
            (new_url, len(old_url) + 1, name, len(old_url) + 1, old_url + "/", name),
        )
    gone = [
        row[0]
        for row in conn.execute(
            "SELECT id FROM documents_staging WHERE library = ? AND deleted = 1", (name,)
        )
    ]
    if not gone:
        return upserted, 0
    folders_gone = conn.execute(
        "SELECT count(*) FROM documents WHERE library = ? AND kind <> 'file' AND id IN "
        "(SELECT id FROM documents_staging WHERE library = ? AND deleted = 1)",
        (name, name),
    ).fetchone()[0]
    if not folders_gone:  # files only: nothing below them
        return upserted, conn.execute(
            "DELETE FROM documents WHERE library = ? AND id IN "
            "(SELECT id FROM documents_staging WHERE library = ? AND deleted = 1)",
            (name, name),
        ).rowcount
    # A deleted folder takes whatever is still below it (Graph may report only the folder).
    children: dict[str, list[str]] = {}
    for item_id, parent_id in conn.execute(
        "SELECT id, parent_id FROM documents WHERE library = ?", (name,)
    ):
        children.setdefault(parent_id, []).append(item_id)
    doomed: set[str] = set()
    stack = list(gone)
    while stack:
        item_id = stack.pop()
        if item_id in doomed:
            continue
        doomed.add(item_id)
        stack.extend(children.get(item_id, ()))
    deleted = 0
    for item_id in doomed:
        deleted += conn.execute(
            "DELETE FROM documents WHERE id = ? AND library = ?", (item_id, name)
        ).rowcount
    return upserted, deleted


def _folders_staged(conn: sqlite3.Connection, name: str) -> bool:
    """Whether the staged changes touch a folder (or the root): then paths below may move."""
    return conn.execute(
        "SELECT 1 FROM documents_staging WHERE library = ? AND deleted = 0 AND kind <> 'file' "
        "LIMIT 1",
        (name,),
    ).fetchone() is not None


def _place_staged_files(conn: sqlite3.Connection, name: str, folder: str) -> None:
    """``folder_path`` and ``in_scope`` of the staged files alone, from their parents' stored
    paths (valid, since no folder changed): a delta's cost follows its changes, not the
    library's size."""
    changes = []
    for item_id, parent_kind, parent_name, parent_path in conn.execute(
        "SELECT d.id, p.kind, p.name, p.folder_path FROM documents_staging AS s "
        "JOIN documents AS d ON d.id = s.id LEFT JOIN documents AS p ON p.id = d.parent_id "
        "WHERE s.library = ? AND s.deleted = 0",
        (name,),
    ):
        if parent_kind == "root":
            path = "/"
        elif parent_kind is None or not parent_path:  # parent missing or itself unplaced
            changes.append(("", 0, item_id))
            continue
        else:
            path = f"{'' if parent_path == '/' else parent_path}/{parent_name}"
        scope = int(not folder or path == folder or path.startswith(folder + "/"))
        changes.append((path, scope, item_id))
    conn.executemany("UPDATE documents SET folder_path = ?, in_scope = ? WHERE id = ?", changes)


def _rebuild_paths(conn: sqlite3.Connection, name: str, folder: str) -> None:
    """Recompute ``folder_path`` and ``in_scope`` of the library's items from the parent chain,
    writing only the rows that changed. An item whose chain does not reach the root (its parent
    has not arrived) is out of scope until it does."""
    rows = conn.execute(
        "SELECT id, parent_id, kind, name, folder_path, in_scope FROM documents WHERE library = ?",
        (name,),
    ).fetchall()
    by_id = {row[0]: row for row in rows}
    full: dict[str, str | None] = {}

    def full_path(item_id: str) -> str | None:
        """The item's own path ("" for the root), None when the chain is broken."""
        chain: list[str] = []
        current: str | None = item_id
        result: str | None = None
        while current is not None:
            if current in full:
                result = full[current]
                break
            row = by_id.get(current)
            if row is None or len(chain) > 10_000 or current in chain:
                result = None
                break
            if row[2] == "root":
                full[current] = ""
                result = ""
                break
            chain.append(current)
            current = row[1]
        for item in reversed(chain):
            if result is not None:
                result = f"{result}/{by_id[item][3]}"
            full[item] = result
        return full.setdefault(item_id, result)

    changes = []
    for item_id, parent_id, kind, _item_name, old_path, old_scope in rows:
        if kind == "root":
            continue
        parent_path = full_path(parent_id) if parent_id is not None else None
        if parent_path is None:
            path, scope = "", 0
        else:
            path = parent_path or "/"
            scope = int(not folder or path == folder or path.startswith(folder + "/"))
        if (path, scope) != (old_path, old_scope):
            changes.append((path, scope, item_id))
    conn.executemany("UPDATE documents SET folder_path = ?, in_scope = ? WHERE id = ?", changes)


# -- reading --------------------------------------------------------------------------------------


def find_file(conn: sqlite3.Connection, document_id: str) -> StoredDocument | None:
    """The file ``document_id`` as the portal may see it (in scope); None otherwise."""
    row = conn.execute(
        "SELECT d.id, d.library, l.drive_id, d.name, d.size, d.mime_type, d.quick_xor_hash "
        "FROM documents AS d JOIN document_libraries AS l ON l.name = d.library "
        "WHERE d.id = ? AND d.kind = 'file' AND d.in_scope = 1",
        (document_id,),
    ).fetchone()
    return StoredDocument(*row) if row else None


def snapshot(conn: sqlite3.Connection, name: str) -> dict[str, dict[str, Any]]:
    """Every item of the library but the root, as ``{id: {column: value}}`` (for comparing the
    cache with an upstream in tests and the demo)."""
    columns = ("parent_id", "kind", "name", "folder_path", "in_scope", "size", "mime_type",
               "quick_xor_hash", "etag", "ctag", "created_at", "modified_at", "web_url")
    return {
        row[0]: dict(zip(columns, row[1:], strict=True))
        for row in conn.execute(
            f"SELECT id, {', '.join(columns)} FROM documents "
            "WHERE library = ? AND kind <> 'root'",
            (name,),
        )
    }


def staged_count(conn: sqlite3.Connection, name: str) -> int:
    """How many items an enumeration in progress has staged."""
    return int(conn.execute(
        "SELECT count(*) FROM documents_staging WHERE library = ?", (name,)
    ).fetchone()[0])
