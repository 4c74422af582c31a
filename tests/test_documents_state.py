"""The documents mirror's state: staged enumerations, the swap, merges, folder paths, scope and
configuration changes, on a real SQLite cache (no network)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncd.core.documents import DocumentItem
from syncd.state import documents
from syncd.state.db import connect
from syncd.state.documents import LibraryConfig

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def library(name: str = "candela", *, folder: str = "", site: str = "h.sharepoint.com:/sites/M",
            producers: tuple[str, ...] = ("candela",)) -> LibraryConfig:
    return LibraryConfig(name=name, site=site, library="Candela", folder=folder,
                         permission="docs.candela", producer_keys=producers,
                         producers=producers)


def root() -> DocumentItem:
    return DocumentItem(id="R", kind="root")


def folder(item_id: str, name: str, parent: str = "R") -> DocumentItem:
    return DocumentItem(id=item_id, kind="folder", name=name, parent_id=parent)


def file(item_id: str, name: str, parent: str = "R", size: int = 10) -> DocumentItem:
    return DocumentItem(id=item_id, kind="file", name=name, parent_id=parent, size=size,
                        mime_type="application/pdf", quick_xor_hash="h", etag="e")


def gone(item_id: str) -> DocumentItem:
    return DocumentItem(id=item_id, kind="file", deleted=True)


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    conn = connect(tmp_path / "cache.sqlite3")
    documents.configure(conn, [library()], {})
    return conn


def paths(conn: sqlite3.Connection) -> dict[str, tuple[str, str, int]]:
    return {
        item_id: (row["name"], row["folder_path"], row["in_scope"])
        for item_id, row in documents.snapshot(conn, "candela").items()
    }


def full(conn: sqlite3.Connection, pages: list[list[DocumentItem]], link: str = "D1") -> None:
    documents.begin(conn, "candela", "full", now=NOW)
    for number, page in enumerate(pages[:-1]):
        documents.stage_page(conn, "candela", page, f"N{number}")
    documents.finish(conn, "candela", "full", pages[-1], link, now=NOW)


def test_a_full_enumeration_is_invisible_until_its_last_page(
    conn: sqlite3.Connection, tmp_path: Path
) -> None:
    reader = connect(tmp_path / "cache.sqlite3")
    documents.begin(conn, "candela", "full", now=NOW)
    documents.stage_page(conn, "candela", [root(), folder("F", "Manuals")], "N1")
    assert reader.execute("SELECT count(*) FROM documents").fetchone()[0] == 0
    state = documents.load(reader, "candela")
    assert state is not None
    assert (state.enumeration_kind, state.enumeration_link) == ("full", "N1")
    assert state.delta_link is None
    result = documents.finish(conn, "candela", "full", [file("A", "a.pdf", "F")], "D1", now=NOW)
    assert result.item_count == 1
    assert paths(reader) == {"F": ("Manuals", "/", 1), "A": ("a.pdf", "/Manuals", 1)}
    state = documents.load(reader, "candela")
    assert state is not None
    assert (state.delta_link, state.enumeration_kind, state.item_count) == ("D1", None, 1)
    assert documents.staged_count(reader, "candela") == 0


def test_an_item_seen_twice_keeps_the_last_version(conn: sqlite3.Connection) -> None:
    full(conn, [[root(), file("A", "old.pdf")], [file("A", "new.pdf")]])
    assert paths(conn) == {"A": ("new.pdf", "/", 1)}


def test_a_swap_replaces_the_library_and_a_merge_applies_changes(
    conn: sqlite3.Connection,
) -> None:
    full(conn, [[root(), folder("F", "Manuals"), file("A", "a.pdf", "F"), file("B", "b.pdf")]])
    full(conn, [[root(), folder("F", "Manuals"), file("B", "b.pdf")]], link="D2")
    assert set(paths(conn)) == {"F", "B"}
    documents.finish(
        conn, "candela", "incremental",
        [folder("F", "Service manuals"), folder("G", "Videos", "F"), file("C", "c.mp4", "G"),
         file("B", "b.pdf", "G")],
        "D3", now=NOW,
    )
    assert paths(conn) == {
        "F": ("Service manuals", "/", 1),
        "G": ("Videos", "/Service manuals", 1),
        "C": ("c.mp4", "/Service manuals/Videos", 1),
        "B": ("b.pdf", "/Service manuals/Videos", 1),
    }


def test_a_deleted_folder_takes_what_is_still_below_it(conn: sqlite3.Connection) -> None:
    full(conn, [[root(), folder("F", "A"), folder("G", "B", "F"), file("X", "x.pdf", "G"),
                 file("Y", "y.pdf", "F"), file("Z", "z.pdf")]])
    # Y moved out before F was deleted: it stays; X and G go with F.
    result = documents.finish(
        conn, "candela", "incremental", [file("Y", "y.pdf", "R"), gone("F")], "D2", now=NOW
    )
    assert set(paths(conn)) == {"Y", "Z"}
    assert (result.deleted, result.item_count) == (3, 2)


def test_an_item_whose_parent_has_not_arrived_is_out_of_scope(conn: sqlite3.Connection) -> None:
    full(conn, [[root(), file("A", "a.pdf", "MISSING")]])
    assert paths(conn) == {"A": ("a.pdf", "", 0)}
    assert documents.load(conn, "candela").item_count == 0  # type: ignore[union-attr]


def test_the_folder_scope_hides_everything_outside_it(conn: sqlite3.Connection) -> None:
    documents.configure(conn, [library(folder="/Manuals")], {})
    full(conn, [[root(), folder("M", "Manuals"), folder("S", "Sub", "M"), file("A", "a.pdf", "S"),
                 file("B", "b.pdf", "M"), folder("O", "Manuals old"), file("C", "c.pdf", "O"),
                 file("D", "d.pdf")]])
    scoped = {item_id for item_id, (_n, _p, scope) in paths(conn).items() if scope}
    assert scoped == {"S", "A", "B"}
    assert documents.load(conn, "candela").item_count == 2  # type: ignore[union-attr]
    documents.configure(conn, [library(folder="")], {})  # a changed scope applies at once
    assert documents.load(conn, "candela") is not None
    assert {i for i, (_n, _p, scope) in paths(conn).items() if scope} == set(paths(conn))


def test_reconfiguring_a_library_to_another_site_forgets_its_items(
    conn: sqlite3.Connection,
) -> None:
    full(conn, [[root(), file("A", "a.pdf")]])
    documents.set_drive(conn, "candela", site_id="s", drive_id="d")
    documents.configure(conn, [library(site="other.sharepoint.com:/sites/X")], {})
    state = documents.load(conn, "candela")
    assert state is not None
    assert (state.drive_id, state.delta_link, paths(conn)) == (None, None, {})
    documents.configure(conn, [], {})
    assert documents.load(conn, "candela") is None


def test_forgetting_the_cursor_keeps_the_items_until_the_next_swap(
    conn: sqlite3.Connection,
) -> None:
    full(conn, [[root(), file("A", "a.pdf")]])
    documents.begin(conn, "candela", "incremental", now=NOW)
    documents.stage_page(conn, "candela", [file("B", "b.pdf")], "N1")
    documents.forget_cursor(conn, "candela")
    state = documents.load(conn, "candela")
    assert state is not None
    assert (state.delta_link, state.enumeration_kind, documents.staged_count(conn, "candela")) == (
        None, None, 0,
    )
    assert set(paths(conn)) == {"A"}


def test_find_file_answers_only_files_in_scope(conn: sqlite3.Connection) -> None:
    documents.set_drive(conn, "candela", site_id="s", drive_id="drive")
    full(conn, [[root(), folder("F", "Manuals"), file("A", "a.pdf", "F"),
                 file("B", "b.pdf", "GONE")]])
    found = documents.find_file(conn, "A")
    assert found is not None and (found.drive_id, found.name, found.size) == ("drive", "a.pdf", 10)
    assert documents.find_file(conn, "F") is None
    assert documents.find_file(conn, "B") is None
    assert documents.find_file(conn, "nope") is None


def test_web_urls_below_a_renamed_folder_follow_it(conn: sqlite3.Connection) -> None:
    base = "https://h.sharepoint.com/sites/M/Candela"
    full(conn, [[
        root(),
        DocumentItem(id="F", kind="folder", name="Manuals", parent_id="R",
                     web_url=f"{base}/Manuals"),
        DocumentItem(id="A", kind="file", name="a.pdf", parent_id="F",
                     web_url=f"{base}/Manuals/a.pdf"),
        DocumentItem(id="B", kind="file", name="b.pdf", parent_id="R",
                     web_url=f"{base}/Manuals old/b.pdf"),
        DocumentItem(id="C", kind="file", name="c.docx", parent_id="F",
                     web_url=f"{base}/_layouts/15/Doc.aspx?sourcedoc=x"),
    ]])
    documents.finish(
        conn, "candela", "incremental",
        [DocumentItem(id="F", kind="folder", name="Service manuals", parent_id="R",
                      web_url=f"{base}/Service%20manuals")],
        "D2", now=NOW,
    )
    urls = {i: row["web_url"] for i, row in documents.snapshot(conn, "candela").items()}
    assert urls == {
        "F": f"{base}/Service%20manuals",
        "A": f"{base}/Service%20manuals/a.pdf",
        "B": f"{base}/Manuals old/b.pdf",  # a prefix of the name, not below the folder
        "C": f"{base}/_layouts/15/Doc.aspx?sourcedoc=x",
    }


def test_a_changed_scope_recounts_the_files_at_once(conn: sqlite3.Connection) -> None:
    full(conn, [[root(), folder("M", "Manuals"), file("A", "a.pdf", "M"), file("B", "b.pdf")]])
    assert documents.load(conn, "candela").item_count == 2  # type: ignore[union-attr]
    documents.configure(conn, [library(folder="/Manuals")], {})
    assert documents.load(conn, "candela").item_count == 1  # type: ignore[union-attr]
