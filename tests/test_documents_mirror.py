"""The documents mirror end to end: :class:`~syncd.engines.documents.DocumentMirror` and
:mod:`syncd.state.documents` through the real Graph connector against the fake Microsoft Graph.

What must hold: a first enumeration equals the library exactly; every kind of change arrives
with the next delta (a renamed or moved folder takes its descendants' folder paths along, a
deleted one its descendants); an item repeated across pages keeps its last version; an expired
cursor (410) in the middle of a delta ends in an exact cache while readers keep seeing the old
items until the swap; a folder scope hides what lies outside it; the stored delta link never runs
ahead of the items it covers; every injected fault is survived or, for 403/404, stops the library
with the right error; devices meet their libraries' documents through normalised producers, the
same way in Python as in the SQL view.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.connectors.sharepoint.fake import FakeGraph
from syncd.connectors.sharepoint.graph import GraphLibraries
from syncd.connectors.sharepoint.producers import producer_key
from syncd.connectors.sharepoint.settings import SharepointSettings
from syncd.core.clock import utc_now
from syncd.core.documents import DeltaPage, DocumentItem
from syncd.core.errors import (
    AuthError,
    FatalError,
    RetriableError,
    UpstreamNotFoundError,
)
from syncd.engines.documents import (
    DocumentMirror,
    DocumentProgress,
    DocumentSource,
    LibraryReport,
    Resolved,
    library_configs,
)
from syncd.state import documents
from syncd.state.db import connect, write_transaction
from syncd.state.documents import LibraryState
from tests.conftest import (
    SHAREPOINT_HOST,
    SHAREPOINT_SITE_PATH,
    RecordingStop,
    document_library,
    fake_documents,
    settled,
    sharepoint_settings,
)

PAGE_SIZE = 5


# ------------------------------------------------------------------------------------------
# Fixtures and helpers
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> Iterator[FakeGraph]:
    with FakeGraph(page_size=PAGE_SIZE) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _no_leftover_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "graph" in request.fixturenames:
        request.getfixturevalue("graph").clear_faults()


class SimulatedCrash(Exception):
    """Raised by :class:`Recording` in place of a page: the process "dies" there."""


class Recording:
    """A :class:`DocumentSource` around another that keeps every page it hands out, and can
    "crash" on a chosen delta call or drop some tombstones."""

    def __init__(
        self,
        inner: DocumentSource,
        *,
        crash_on_call: int | None = None,
        keep_tombstone: Callable[[DocumentItem], bool] | None = None,
    ) -> None:
        self.inner = inner
        self.crash_on_call = crash_on_call
        self.keep_tombstone = keep_tombstone
        self.calls = 0
        self.pages: list[DeltaPage] = []

    def resolve(self, site: str, library: str) -> Resolved:
        return self.inner.resolve(site, library)

    def delta(self, drive_id: str, link: str | None) -> DeltaPage:
        self.calls += 1
        if self.calls == self.crash_on_call:
            raise SimulatedCrash(f"killed before delta call {self.calls}")
        page = self.inner.delta(drive_id, link)
        if self.keep_tombstone is not None:
            keep = self.keep_tombstone
            items = tuple(item for item in page.items if not item.deleted or keep(item))
            page = DeltaPage(items, page.next_link, page.delta_link, page.skipped)
        self.pages.append(page)
        return page

    def download_url(self, drive_id: str, item_id: str) -> str:
        return self.inner.download_url(drive_id, item_id)

    def close(self) -> None:
        self.inner.close()


@dataclass
class Mirrored:
    """One library of the fake Graph, mirrored into its own cache."""

    fake: FakeGraph
    drive_id: str
    name: str
    folder: str
    settings: SharepointSettings
    path: Path
    conn: sqlite3.Connection
    stop: RecordingStop
    graph: GraphLibraries
    ids: dict[str, str] = field(default_factory=dict)

    def run(
        self, source: DocumentSource | None = None, progress: DocumentProgress | None = None,
        *, full: bool = False,
    ) -> LibraryReport:
        mirror = DocumentMirror(
            self.conn, source or self.graph, self.settings, stop=self.stop, progress=progress
        )
        return mirror.run(self.name, full=full)

    def cache(self, conn: sqlite3.Connection | None = None) -> dict[str, dict[str, Any]]:
        return documents.snapshot(conn or self.conn, self.name)

    def upstream(self) -> dict[str, dict[str, Any]]:
        return fake_documents(self.fake, self.drive_id, self.folder)

    def state(self, conn: sqlite3.Connection | None = None) -> LibraryState:
        state = documents.load(conn or self.conn, self.name)
        assert state is not None
        return state

    def reader(self) -> sqlite3.Connection:
        """A second connection, as the portal has."""
        return connect(self.path, migrate_schema=False)

    def delta_requests(self) -> int:
        return self.fake.request_count(f"/v1.0/drives/{self.drive_id}/root/delta*")

    def folder_path(self, path: str) -> str:
        return str(self.cache()[self.ids[path]]["folder_path"])


_numbers = itertools.count(1)
MakeLibrary = Callable[..., Mirrored]


@pytest.fixture
def make_library(graph: FakeGraph, tmp_path: Path) -> Iterator[MakeLibrary]:
    made: list[Mirrored] = []

    def make(
        files: int = 0, *, tree: bool = False, folder: str = "", seed: int = 0,
        stop: RecordingStop | None = None, **options: Any,
    ) -> Mirrored:
        number = next(_numbers)
        name, title = f"lib{number}", f"Library {number}"
        drive_id = graph.add_library(SHAREPOINT_HOST, SHAREPOINT_SITE_PATH, title)
        if files:
            graph.seed_library(drive_id, files=files, producers=["Candela"], seed=seed)
        ids = build_tree(graph, drive_id) if tree else {}
        settings = sharepoint_settings(
            graph, document_library(name, title, ("Candela",), folder=folder), **options
        )
        stop = stop or RecordingStop()
        source = GraphLibraries(settings, ("client_secret", graph.client_secret), stop=stop)
        path = tmp_path / f"{name}.sqlite3"
        conn = connect(path)
        mirrored = Mirrored(graph, drive_id, name, folder, settings, path, conn, stop, source, ids)
        DocumentMirror(conn, source, settings).configure()
        made.append(mirrored)
        return mirrored

    yield make
    for mirrored in made:
        mirrored.graph.close()
        mirrored.conn.close()


TREE_FOLDERS = ("Manuals", "Manuals/Lasers", "Manuals/Lasers/Old", "Manuals Extra", "Videos")
TREE_FILES = (
    "Manuals/Index.pdf",
    "Manuals/Lasers/GentleMax.pdf",
    "Manuals/Lasers/Old/GentleMax 2019.pdf",
    "Manuals Extra/Errata.pdf",
    "Videos/Setup.mp4",
    "Read me.docx",
)


def build_tree(fake: FakeGraph, drive_id: str) -> dict[str, str]:
    """A small known tree (three pages of five); path below the root → item ID."""
    ids: dict[str, str] = {}
    for path in (*TREE_FOLDERS, *TREE_FILES):
        parent, _, name = path.rpartition("/")
        parent_id = ids[parent] if parent else None
        if path in TREE_FOLDERS:
            ids[path] = fake.add_folder(drive_id, name, parent_id)
        else:
            ids[path] = fake.add_file(drive_id, name, parent_id, content=path.encode() * 3)
    return ids


def files_in(view: dict[str, dict[str, Any]]) -> int:
    return sum(1 for row in view.values() if row["kind"] == "file" and row["in_scope"])


# ------------------------------------------------------------------------------------------
# First enumeration
# ------------------------------------------------------------------------------------------


def test_first_enumeration_equals_the_fake_exactly(make_library: MakeLibrary) -> None:
    lib = make_library(60, seed=4)
    report = lib.run()
    assert (report.kind, report.restarted, report.skipped) == ("full", False, 0)
    assert report.pages > 5
    assert lib.cache() == lib.upstream()  # names, folder paths, sizes, hashes, eTags, URLs
    state = lib.state()
    assert state.delta_link is not None and state.enumeration_kind is None
    assert state.last_full_at is not None and state.last_delta_at is not None
    assert state.item_count == report.item_count == 60
    assert documents.staged_count(lib.conn, lib.name) == 0
    roots = lib.conn.execute(
        "SELECT parent_id, name FROM documents WHERE library = ? AND kind = 'root'", (lib.name,)
    ).fetchall()
    assert roots == [(None, "root")]


def test_folder_paths_come_from_the_parent_chain(make_library: MakeLibrary) -> None:
    lib = make_library(tree=True)
    lib.run()
    assert lib.cache() == lib.upstream()
    assert lib.folder_path("Read me.docx") == "/"
    assert lib.folder_path("Manuals") == "/"
    assert lib.folder_path("Manuals/Lasers/Old/GentleMax 2019.pdf") == "/Manuals/Lasers/Old"
    assert lib.folder_path("Manuals Extra/Errata.pdf") == "/Manuals Extra"


def test_a_second_run_without_changes_changes_nothing(make_library: MakeLibrary) -> None:
    lib = make_library(tree=True)
    lib.run()
    before = lib.cache()
    report = lib.run()
    assert (report.kind, report.pages, report.upserted, report.deleted) == ("incremental", 1, 0, 0)
    assert lib.cache() == before == lib.upstream()


# ------------------------------------------------------------------------------------------
# Incremental changes
# ------------------------------------------------------------------------------------------


def test_added_files_and_folders_arrive(make_library: MakeLibrary) -> None:
    lib = make_library(tree=True)
    lib.run()
    images = lib.fake.add_folder(lib.drive_id, "Images")
    panel = lib.fake.add_file(lib.drive_id, "Front Panel.png", images, content=b"png")
    deep = lib.fake.add_file(lib.drive_id, "Errata 2.pdf", lib.ids["Manuals/Lasers/Old"])
    report = lib.run()
    assert report.kind == "incremental" and report.upserted == 3
    cache = lib.cache()
    assert settled(cache) == settled(lib.upstream())
    assert cache[images]["folder_path"] == "/" and cache[panel]["folder_path"] == "/Images"
    assert cache[deep]["folder_path"] == "/Manuals/Lasers/Old"
    assert lib.state().item_count == len(TREE_FILES) + 2


def test_a_renamed_file_arrives(make_library: MakeLibrary) -> None:
    lib = make_library(tree=True)
    lib.run()
    target = lib.ids["Manuals/Lasers/GentleMax.pdf"]
    lib.fake.rename(lib.drive_id, target, "GentleMax Pro.pdf")
    lib.run()
    assert lib.cache()[target]["name"] == "GentleMax Pro.pdf"
    assert settled(lib.cache()) == settled(lib.upstream())


def test_a_renamed_folder_moves_its_descendants_paths(make_library: MakeLibrary) -> None:
    lib = make_library(tree=True)
    lib.run()
    lib.fake.rename(lib.drive_id, lib.ids["Manuals"], "Documentation")
    report = lib.run()
    assert report.upserted == 1  # Graph reports the folder only; the paths below follow it
    assert settled(lib.cache()) == settled(lib.upstream())
    assert lib.folder_path("Manuals/Index.pdf") == "/Documentation"
    assert lib.folder_path("Manuals/Lasers") == "/Documentation"
    assert lib.folder_path("Manuals/Lasers/Old/GentleMax 2019.pdf") == (
        "/Documentation/Lasers/Old"
    )
    assert lib.folder_path("Manuals Extra/Errata.pdf") == "/Manuals Extra"  # a prefix only


def test_a_moved_file_arrives(make_library: MakeLibrary) -> None:
    lib = make_library(tree=True)
    lib.run()
    lib.fake.move(lib.drive_id, lib.ids["Read me.docx"], lib.ids["Manuals/Lasers/Old"])
    lib.run()
    assert lib.folder_path("Read me.docx") == "/Manuals/Lasers/Old"
    assert lib.cache()[lib.ids["Read me.docx"]]["parent_id"] == lib.ids["Manuals/Lasers/Old"]
    assert settled(lib.cache()) == settled(lib.upstream())


def test_a_moved_folder_moves_its_descendants_paths(make_library: MakeLibrary) -> None:
    lib = make_library(tree=True)
    lib.run()
    lib.fake.move(lib.drive_id, lib.ids["Manuals/Lasers"], lib.ids["Videos"])
    lib.run()
    assert lib.folder_path("Manuals/Lasers/GentleMax.pdf") == "/Videos/Lasers"
    assert lib.folder_path("Manuals/Lasers/Old/GentleMax 2019.pdf") == "/Videos/Lasers/Old"
    assert lib.folder_path("Manuals/Index.pdf") == "/Manuals"
    assert settled(lib.cache()) == settled(lib.upstream())


def test_a_modified_file_arrives(make_library: MakeLibrary) -> None:
    lib = make_library(tree=True)
    lib.run()
    target = lib.ids["Videos/Setup.mp4"]
    before = lib.cache()[target]
    lib.fake.modify(lib.drive_id, target, content=b"a new cut of the set-up video")
    lib.run()
    after = lib.cache()[target]
    assert after["size"] == len(b"a new cut of the set-up video")
    assert after["etag"] != before["etag"] and after["ctag"] != before["ctag"]
    assert after["quick_xor_hash"] != before["quick_xor_hash"]
    assert settled(lib.cache()) == settled(lib.upstream())


def test_a_deleted_file_is_removed(make_library: MakeLibrary) -> None:
    lib = make_library(tree=True)
    lib.run()
    target = lib.ids["Manuals/Index.pdf"]
    lib.fake.delete(lib.drive_id, target)
    report = lib.run()
    assert report.deleted == 1 and target not in lib.cache()
    assert lib.state().item_count == len(TREE_FILES) - 1
    assert settled(lib.cache()) == settled(lib.upstream())


@pytest.mark.parametrize("reported", ["every tombstone", "the folder's only"])
def test_a_deleted_folder_takes_its_descendants(make_library: MakeLibrary, reported: str) -> None:
    lib = make_library(tree=True)
    lib.run()
    folder = lib.ids["Manuals"]
    gone = lib.fake.delete(lib.drive_id, folder)
    assert len(gone) == 6
    source = Recording(
        lib.graph,
        keep_tombstone=None if reported == "every tombstone" else lambda item: item.id == folder,
    )
    report = lib.run(source)
    assert report.deleted == len(gone)
    remaining = {row[0] for row in lib.conn.execute("SELECT id FROM documents")}
    assert remaining.isdisjoint(gone)  # removed, not just hidden
    assert settled(lib.cache()) == settled(lib.upstream())
    assert lib.state().item_count == 3


def test_many_random_changes_over_several_deltas(make_library: MakeLibrary) -> None:
    lib = make_library(80, seed=7)
    lib.run()
    for round_number in range(4):
        lib.fake.change_files(lib.drive_id, 25, seed=round_number)
        report = lib.run()
        assert report.kind == "incremental"
        assert settled(lib.cache()) == settled(lib.upstream())
    lib.run(full=True)  # a full enumeration brings folder sizes and web URLs up to date too
    assert lib.cache() == lib.upstream()


# ------------------------------------------------------------------------------------------
# Pages: repeated items, expired cursors, crashes between pages
# ------------------------------------------------------------------------------------------


def test_an_item_repeated_across_pages_keeps_the_last_version(
    make_library: MakeLibrary,
) -> None:
    """Graph may send an item again on a later page of the same enumeration, in a newer
    version: the later one is kept. Here the fake repeats the first file of the delta after
    its folder was renamed between the pages (so its webUrl changed)."""
    lib = make_library(tree=True)
    lib.run()
    first = "Manuals/Lasers/Old/GentleMax 2019.pdf"
    for path in (first, *(path for path in TREE_FILES if path != first)):
        lib.fake.modify(lib.drive_id, lib.ids[path])  # six changes: two pages

    def between_pages(_library: str, pages: int, _items: int) -> None:
        if pages == 1:
            lib.fake.rename(lib.drive_id, lib.ids["Manuals/Lasers/Old"], "Archive")
            lib.fake.add_fault("repeat_item", drive_id=lib.drive_id)

    source = Recording(lib.graph)
    lib.run(source, between_pages)
    target = lib.ids[first]
    versions = [
        (number, item) for number, page in enumerate(source.pages) for item in page.items
        if item.id == target
    ]
    assert [number for number, _ in versions] == [0, 1]
    (_, earlier), (_, later) = versions
    assert earlier.web_url != later.web_url and "/Archive/" in str(later.web_url)
    assert lib.cache()[target]["web_url"] == later.web_url
    assert lib.folder_path(first) == "/Manuals/Lasers/Old"  # the rename comes with the next delta
    lib.run()
    assert lib.folder_path(first) == "/Manuals/Lasers/Archive"
    assert lib.cache() == lib.upstream()


def test_items_repeated_on_every_page_are_stored_once(make_library: MakeLibrary) -> None:
    lib = make_library(40, seed=3)
    lib.fake.add_fault("repeat_item", times=None, drive_id=lib.drive_id)
    source = Recording(lib.graph)
    lib.run(source)
    sent = [item.id for page in source.pages for item in page.items]
    assert len(sent) > len(set(sent))
    assert lib.cache() == lib.upstream()
    lib.fake.change_files(lib.drive_id, 40, seed=1)
    lib.run()
    assert settled(lib.cache()) == settled(lib.upstream())


@pytest.mark.parametrize("how", ["expire_delta_tokens", "resync fault"])
def test_an_expired_cursor_mid_delta_ends_exact_and_readers_keep_the_old_items(
    make_library: MakeLibrary, how: str
) -> None:
    lib = make_library(30, seed=5)
    lib.run()
    before, old_link = lib.cache(), lib.state().delta_link
    lib.fake.change_files(lib.drive_id, 50, seed=9)  # an incremental delta of several pages
    if how == "resync fault":  # the second page of the delta answers 410
        lib.fake.add_fault("resync", after=1, path="*/delta*", drive_id=lib.drive_id)
    reader = lib.reader()
    seen_old = 0

    def between_pages(_library: str, pages: int, _items: int) -> None:
        nonlocal seen_old
        if how == "expire_delta_tokens" and pages == 1 and seen_old == 0:
            lib.fake.expire_delta_tokens(lib.drive_id)
        if lib.state(reader).delta_link == old_link:  # not swapped yet: all of the old items
            assert lib.cache(reader) == before
            seen_old += 1
        else:  # the last page: swapped in at once
            assert lib.cache(reader) == lib.upstream()

    try:
        report = lib.run(progress=between_pages)
    finally:
        reader.close()
    assert report.restarted and report.kind == "full"
    assert lib.stop.waits == []  # a 410 is not retried: the same link stays expired
    assert seen_old >= 3  # a page of the delta, then pages of the new enumeration
    assert lib.cache() == lib.upstream()
    assert lib.state().delta_link != old_link and lib.state().last_full_at is not None
    assert lib.run().kind == "incremental"


@pytest.mark.parametrize("pages_done", [1, 3])
def test_a_first_enumeration_cut_short_resumes_and_never_runs_ahead(
    make_library: MakeLibrary, pages_done: int
) -> None:
    lib = make_library(30, seed=6)
    total = count_pages(lib)
    with pytest.raises(SimulatedCrash):
        lib.run(Recording(lib.graph, crash_on_call=pages_done + 1))
    state = lib.state()
    assert state.delta_link is None and lib.cache() == {}  # nothing shown half-way
    assert (state.enumeration_kind, state.enumeration_pages) == ("full", pages_done)
    assert state.enumeration_link is not None
    assert documents.staged_count(lib.conn, lib.name) == pages_done * PAGE_SIZE
    resumed = Recording(lib.graph)
    report = lib.run(resumed)
    assert len(resumed.pages) == total - pages_done  # from the next page, not from the start
    assert report.kind == "full"
    assert lib.cache() == lib.upstream()


def count_pages(lib: Mirrored) -> int:
    """How many pages a first enumeration of the library takes now."""
    pages, link = 0, None
    while True:
        page = lib.graph.delta(lib.drive_id, link)
        pages += 1
        if page.next_link is None:
            return pages
        link = page.next_link


@pytest.mark.parametrize("pages_done", [0, 1, 2])
def test_an_incremental_delta_cut_short_keeps_the_old_cursor_with_the_old_items(
    make_library: MakeLibrary, pages_done: int
) -> None:
    lib = make_library(30, seed=8)
    lib.run()
    before, old_link = lib.cache(), lib.state().delta_link
    lib.fake.change_files(lib.drive_id, 50, seed=2)
    with pytest.raises(SimulatedCrash):
        lib.run(Recording(lib.graph, crash_on_call=pages_done + 1))
    state = lib.state()
    assert state.delta_link == old_link and lib.cache() == before
    assert state.enumeration_pages == pages_done
    lib.run()
    assert settled(lib.cache()) == settled(lib.upstream())
    assert lib.state().delta_link != old_link


def test_the_cursor_changes_only_together_with_the_items(make_library: MakeLibrary) -> None:
    """Read from a second connection after every committed page of a first enumeration and of
    several deltas: the delta link and the items always belong together."""
    lib = make_library(40, seed=11)
    reader = lib.reader()
    checks = 0
    expected: dict[str, dict[str, Any]] = {}
    old_link: str | None = None

    def between_pages(_library: str, _pages: int, _items: int) -> None:
        nonlocal checks
        state = lib.state(reader)
        if state.delta_link == old_link:
            assert lib.cache(reader) == expected
        else:
            assert settled(lib.cache(reader)) == settled(lib.upstream())
        checks += 1

    try:
        for round_number in range(4):
            expected, old_link = lib.cache(), lib.state().delta_link
            if round_number:
                lib.fake.change_files(lib.drive_id, 30, seed=round_number)
            lib.run(progress=between_pages)
    finally:
        reader.close()
    assert checks > 10


# ------------------------------------------------------------------------------------------
# Folder scope
# ------------------------------------------------------------------------------------------


def test_a_folder_scope_hides_what_lies_outside(make_library: MakeLibrary) -> None:
    lib = make_library(tree=True, folder="/Manuals")
    lib.run()
    cache = lib.cache()
    assert cache == lib.upstream()
    inside = {path for path in TREE_FILES if path.startswith("Manuals/")}
    for path in TREE_FILES:
        assert cache[lib.ids[path]]["in_scope"] == (path in inside), path
        found = documents.find_file(lib.conn, lib.ids[path])
        assert (found is not None) == (path in inside), path
    assert lib.state().item_count == len(inside) == files_in(cache) == 3

    # moves across the scope's edge, both ways
    lib.fake.move(lib.drive_id, lib.ids["Read me.docx"], lib.ids["Manuals/Lasers"])
    lib.fake.move(lib.drive_id, lib.ids["Manuals/Lasers/Old"], lib.ids["Videos"])
    lib.run()
    cache = lib.cache()
    assert settled(cache) == settled(lib.upstream())
    assert cache[lib.ids["Read me.docx"]]["in_scope"] == 1
    assert cache[lib.ids["Manuals/Lasers/Old/GentleMax 2019.pdf"]]["in_scope"] == 0
    assert lib.state().item_count == files_in(cache) == 3


def test_a_nested_folder_scope_and_the_portals_view(make_library: MakeLibrary) -> None:
    lib = make_library(tree=True, folder="/Manuals/Lasers")
    lib.run()
    assert lib.cache() == lib.upstream()
    assert lib.state().item_count == 2
    add_device(lib.conn, "dev-1", "Candela")
    listed = {row[0] for row in lib.conn.execute(
        "SELECT document_id FROM device_documents WHERE device_id = 'dev-1'"
    )}
    assert listed == {lib.ids["Manuals/Lasers/GentleMax.pdf"],
                      lib.ids["Manuals/Lasers/Old/GentleMax 2019.pdf"]}


# ------------------------------------------------------------------------------------------
# Faults
# ------------------------------------------------------------------------------------------


TRANSIENT = {
    "throttle": {"retry_after": 3},
    "unavailable": {"retry_after": 2},
    "gateway_timeout": {},
    "drop": {},
    "truncate": {},
    "html": {},
}


@pytest.mark.parametrize("phase", ["first", "incremental"])
@pytest.mark.parametrize("kind", sorted(TRANSIENT))
def test_transient_faults_are_retried_and_never_corrupt_the_cache(
    make_library: MakeLibrary, kind: str, phase: str
) -> None:
    lib = make_library(30, seed=12)
    if phase == "incremental":
        lib.run()
        lib.fake.change_files(lib.drive_id, 50, seed=3)
    requests_before = lib.delta_requests()
    lib.fake.add_fault(kind, times=2, after=1, path="*/delta*", drive_id=lib.drive_id,
                       **TRANSIENT[kind])
    report = lib.run()
    assert lib.delta_requests() - requests_before == report.pages + 2  # two retries
    assert settled(lib.cache()) == settled(lib.upstream())
    if phase == "first":
        assert lib.cache() == lib.upstream()
    assert len(lib.stop.waits) == 2
    hint = TRANSIENT[kind].get("retry_after")
    if hint is not None:  # Retry-After is honoured: no retry before it
        assert all(wait >= hint for wait in lib.stop.waits)
    assert lib.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.parametrize("kind", ["truncate", "html", "unavailable", "drop"])
def test_a_persistent_fault_fails_the_run_and_keeps_the_cache(
    make_library: MakeLibrary, kind: str
) -> None:
    lib = make_library(30, seed=13)
    lib.run()
    before, old_link = lib.cache(), lib.state().delta_link
    lib.fake.change_files(lib.drive_id, 50, seed=4)
    lib.fake.add_fault(kind, times=None, after=1, path="*/delta*", drive_id=lib.drive_id)
    with pytest.raises(RetriableError):
        lib.run()
    assert lib.cache() == before and lib.state().delta_link == old_link
    lib.fake.clear_faults()
    lib.run()  # resumes after the page it had
    assert settled(lib.cache()) == settled(lib.upstream())


class SleepingStop(RecordingStop):
    """Records each wait as RecordingStop does, but really waits."""

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0.0))
        return threading.Event.wait(self, timeout)


def test_throttling_waits_as_long_as_retry_after_says(make_library: MakeLibrary) -> None:
    """Real time: the gap between the throttled request and its retry, measured from the
    connector's per-request hook (the test itself never sleeps)."""
    lib = make_library(tree=True, stop=SleepingStop())
    sent: list[float] = []
    lib.graph.on_request = lambda: sent.append(time.monotonic())
    lib.fake.add_fault("throttle", after=1, path="*/delta*", drive_id=lib.drive_id,
                       retry_after=1)
    report = lib.run()
    # site, drives, delta page 1, page 2 (429), page 2 again, the pages after it
    assert len(sent) == 2 + report.pages + 1
    throttled = sent[4] - sent[3]
    assert 1.0 <= throttled < 5.0
    assert lib.stop.waits == [1.0]
    assert lib.cache() == lib.upstream()


def test_a_rejected_token_is_renewed_exactly_once(make_library: MakeLibrary) -> None:
    lib = make_library(30, seed=14)
    lib.run()
    lib.fake.change_files(lib.drive_id, 50, seed=5)
    tokens = lib.fake.token_requests
    lib.fake.add_fault("token_expired", after=1, path="*/delta*", drive_id=lib.drive_id)
    report = lib.run()
    assert report.pages >= 2
    assert lib.fake.token_requests - tokens == 1
    assert lib.stop.waits == []  # renewed at once, no backoff
    assert settled(lib.cache()) == settled(lib.upstream())

    lib.fake.invalidate_access_tokens()  # revoked between runs: Graph's own 401
    lib.fake.change_files(lib.drive_id, 10, seed=6)
    lib.run()
    assert lib.fake.token_requests - tokens == 2
    assert settled(lib.cache()) == settled(lib.upstream())


@pytest.mark.parametrize(
    ("kind", "error"), [("forbidden", AuthError), ("not_found", UpstreamNotFoundError)]
)
@pytest.mark.parametrize("phase", ["first", "incremental"])
def test_forbidden_and_not_found_stop_the_library(
    make_library: MakeLibrary, kind: str, error: type[FatalError], phase: str
) -> None:
    lib = make_library(tree=True)
    if phase == "incremental":
        lib.run()
        lib.fake.add_file(lib.drive_id, "New.pdf")
    before, old_link = lib.cache(), lib.state().delta_link
    requests_before = lib.delta_requests()
    lib.fake.add_fault(kind, times=None, drive_id=lib.drive_id)
    with pytest.raises(error) as raised:
        lib.run()
    assert isinstance(raised.value, FatalError)
    assert lib.delta_requests() - requests_before == 1  # not retried
    assert lib.stop.waits == []
    assert lib.cache() == before and lib.state().delta_link == old_link


# ------------------------------------------------------------------------------------------
# Producers: devices meet their libraries' documents
# ------------------------------------------------------------------------------------------


def add_device(conn: sqlite3.Connection, device_id: str, producer: str | None) -> None:
    with write_transaction(conn):
        conn.execute(
            "INSERT INTO devices (crm_id, producer, content_hash, synced_at) VALUES (?, ?, ?, ?)",
            (device_id, producer, "test", "2026-11-21T12:00:00Z"),
        )


def library_files(conn: sqlite3.Connection, name: str, *names: str) -> set[str]:
    """Put a root, a folder and ``names`` (files) into library ``name``; the files' IDs."""
    items = [DocumentItem(id=f"{name}-root", kind="root"),
             DocumentItem(id=f"{name}-folder", kind="folder", parent_id=f"{name}-root",
                          name="Manuals")]
    items += [DocumentItem(id=f"{name}-{n}", kind="file", parent_id=f"{name}-folder",
                           name=file_name, size=100)
              for n, file_name in enumerate(names)]
    documents.begin(conn, name, "full", now=utc_now())
    documents.finish(conn, name, "full", items, f"https://graph.invalid/{name}", now=utc_now())
    return {item.id for item in items if item.kind == "file"}


PRODUCER_LIBRARIES = SharepointSettings(
    libraries=[
        document_library("candela", "Candela", ("Candela",)),
        document_library("candela-videos", "Candela Videos", (" candela ",)),
        document_library("cynosure", "Cynosure", ("Cynosure", "Cynosure Inc")),
    ],
    producer_aliases={"Candela Corp.": "Candela", "Syneron-Candela": "CANDELA"},
)
CANDELA = {"candela", "candela-videos"}
DEVICES: list[tuple[str, str | None, set[str]]] = [
    ("exact", "Candela", CANDELA),
    ("upper", "CANDELA", CANDELA),
    ("padded", "  Candela  ", CANDELA),
    ("line-break", "Candela\r\n", CANDELA),
    ("tab-corp", "candela\tcorp.", CANDELA),  # "candela corp.", an alias
    ("alias", "Candela Corp.", CANDELA),
    ("alias-spaced", "Candela     Corp.", CANDELA),
    ("nbsp-alias", "Candela\u00a0Corp.", CANDELA),
    ("other-alias", "syneron-candela", CANDELA),
    ("cynosure", "Cynosure", {"cynosure"}),
    ("cynosure-inc", "CYNOSURE \t INC", {"cynosure"}),
    ("none", None, set()),
    ("empty", "", set()),
    ("blank", " \t\u00a0\n ", set()),
    ("longer-name", "Candelabra", set()),
    ("non-ascii-case", "CANDELÁ", set()),  # only ASCII letters are lowered, as SQLite does
    ("inner-space", "Cande la", set()),
]


@pytest.fixture(scope="module")
def producer_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    tuple[sqlite3.Connection, dict[str, set[str]]]
]:
    conn = connect(tmp_path_factory.mktemp("producers") / "cache.sqlite3")
    documents.configure(conn, library_configs(PRODUCER_LIBRARIES),
                        PRODUCER_LIBRARIES.alias_keys())
    files = {
        "candela": library_files(conn, "candela", "GentleMax.pdf", "Vbeam.pdf"),
        "candela-videos": library_files(conn, "candela-videos", "Setup.mp4"),
        "cynosure": library_files(conn, "cynosure", "PicoSure.pdf"),
    }
    for device_id, producer, _ in DEVICES:
        add_device(conn, device_id, producer)
    yield conn, files
    conn.close()


@pytest.mark.parametrize(
    ("device_id", "producer", "libraries"), DEVICES, ids=[d[0] for d in DEVICES]
)
def test_devices_meet_their_producers_documents(
    producer_cache: tuple[sqlite3.Connection, dict[str, set[str]]],
    device_id: str, producer: str | None, libraries: set[str],
) -> None:
    conn, files = producer_cache
    rows = conn.execute(
        "SELECT library, document_id, permission FROM device_documents WHERE device_id = ?",
        (device_id,),
    ).fetchall()
    assert {(library, document) for library, document, _ in rows} == {
        (library, document) for library in libraries for document in files[library]
    }
    assert len(rows) == len(set(rows))
    assert all(permission == f"docs.{library}" for library, _, permission in rows)


@pytest.fixture(scope="module")
def key_cache() -> Iterator[sqlite3.Connection]:
    conn = connect(":memory:")
    yield conn
    conn.close()


AWKWARD = st.sampled_from(list(" \t\n\r\u00a0\u2003\u3000\x0b\x0cAaZzÁáİıß.-"))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.one_of(AWKWARD, st.characters(exclude_categories=("Cs",))),
               max_size=80))
def test_producer_key_is_what_the_view_computes(key_cache: sqlite3.Connection, text: str) -> None:
    with write_transaction(key_cache):
        key_cache.execute("DELETE FROM devices")
        key_cache.execute(
            "INSERT INTO devices (crm_id, producer, content_hash, synced_at) "
            "VALUES ('d', ?, 'x', 'now')",
            (text,),
        )
    rows = key_cache.execute("SELECT producer_key FROM device_producer_keys").fetchall()
    expected = producer_key(text)
    if not expected:  # the view leaves out devices whose producer is blank
        assert rows == []
    else:
        assert rows == [(expected,)]
