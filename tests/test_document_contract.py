"""The document connector contract: what every document source must do, whatever the vendor.

Written as vdirsyncer's storage tests (and ``tests/test_crm_contract.py``) are: a base class of
tests that use only the :class:`~syncd.engines.documents.DocumentSource` protocol plus an
``upstream`` controller that adds, renames, moves, modifies and deletes files and folders in the
vendor's fake, reads it back and expires its change cursors. Another connector subclasses it with
its own two fixtures (``source`` and ``upstream``) and runs every test unchanged; here it runs
against :class:`~syncd.connectors.sharepoint.graph.GraphLibraries` and the fake Microsoft Graph.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import pytest

from syncd.connectors.sharepoint.fake import FakeGraph
from syncd.connectors.sharepoint.graph import GraphLibraries
from syncd.connectors.sharepoint.quickxor import quickxor_b64
from syncd.core.documents import DeltaPage, DocumentItem
from syncd.core.errors import DeltaExpiredError, UpstreamNotFoundError
from syncd.engines.documents import DocumentSource
from tests.conftest import (
    SHAREPOINT_HOST,
    SHAREPOINT_SITE,
    SHAREPOINT_SITE_PATH,
    sharepoint_settings,
)

MAX_PAGES = 10_000


class Upstream(Protocol):
    """Controls the vendor's fake library: what the contract needs to set up its cases.

    ``snapshot`` describes every live item but the root as ``{id: {name, parent_id, kind,
    size, quick_xor_hash, etag, ...}}`` (``kind`` "folder" or "file"); a ``parent_id`` of None
    in the mutations means the top of the library."""

    site: str  # as the configuration names it: "host:/sites/Name"
    library: str

    def add_folder(self, name: str, parent_id: str | None = None) -> str: ...
    def add_file(self, name: str, parent_id: str | None = None, content: bytes = b"") -> str: ...
    def rename(self, item_id: str, name: str) -> None: ...
    def move(self, item_id: str, parent_id: str | None) -> None: ...
    def modify(self, item_id: str, content: bytes) -> None: ...
    def delete(self, item_id: str) -> None: ...
    def snapshot(self) -> dict[str, dict[str, Any]]: ...
    def content(self, item_id: str) -> bytes: ...
    def expire_cursors(self) -> None: ...


@dataclass
class Enumeration:
    """Every page of one enumeration, in order."""

    pages: list[DeltaPage]

    @property
    def items(self) -> list[DocumentItem]:
        return [item for page in self.pages for item in page.items]

    @property
    def delta_link(self) -> str:
        link = self.pages[-1].delta_link
        assert link is not None
        return link

    def by_id(self) -> dict[str, DocumentItem]:
        """The last version of each item the enumeration reported."""
        return {item.id: item for item in self.items}


def enumerate_all(source: DocumentSource, drive_id: str, link: str | None) -> Enumeration:
    """Follow next links from ``link`` (None: a first enumeration) to the delta link."""
    pages = [source.delta(drive_id, link)]
    while pages[-1].next_link is not None:
        assert len(pages) < MAX_PAGES, "the enumeration does not end"
        pages.append(source.delta(drive_id, pages[-1].next_link))
    return Enumeration(pages)


class DocumentSourceContract:
    """Tests every document connector must pass. Subclasses provide ``source`` and
    ``upstream`` fixtures; the upstream library starts with a small tree of several pages:
    ``Manuals/`` (three files and ``Manuals/Archive/`` with two), ``Videos/`` (two files)
    and two files at the top."""

    @pytest.fixture
    def drive_id(self, source: DocumentSource, upstream: Upstream) -> str:
        return source.resolve(upstream.site, upstream.library).drive_id

    @pytest.fixture
    def tree(self, upstream: Upstream) -> dict[str, str]:
        """Builds the starting tree; name (path below the root) → item ID."""
        ids: dict[str, str] = {}
        ids["Manuals"] = upstream.add_folder("Manuals")
        ids["Manuals/Archive"] = upstream.add_folder("Archive", ids["Manuals"])
        ids["Videos"] = upstream.add_folder("Videos")
        for name in ("Service Manual.pdf", "Operator Manual.pdf", "Specifications.pdf"):
            ids[f"Manuals/{name}"] = upstream.add_file(name, ids["Manuals"], name.encode() * 40)
        for name in ("Service Manual 2019.pdf", "Service Manual 2020.pdf"):
            ids[f"Manuals/Archive/{name}"] = upstream.add_file(
                name, ids["Manuals/Archive"], name.encode() * 7
            )
        for name in ("Calibration.mp4", "Training.mp4"):
            ids[f"Videos/{name}"] = upstream.add_file(name, ids["Videos"], name.encode() * 300)
        for name in ("Read me.docx", "Parts.xlsx"):
            ids[name] = upstream.add_file(name, None, name.encode())
        return ids

    @pytest.fixture
    def cursor(self, source: DocumentSource, drive_id: str, tree: dict[str, str]) -> str:
        """The delta link after a first enumeration of the starting tree."""
        return enumerate_all(source, drive_id, None).delta_link

    # -- resolve ------------------------------------------------------------------------------

    def test_resolve_a_known_library(self, source: DocumentSource, upstream: Upstream) -> None:
        resolved = source.resolve(upstream.site, upstream.library)
        assert isinstance(resolved.site_id, str) and resolved.site_id
        assert isinstance(resolved.drive_id, str) and resolved.drive_id
        again = source.resolve(upstream.site, upstream.library.upper())  # names ignore case
        assert (again.site_id, again.drive_id) == (resolved.site_id, resolved.drive_id)

    def test_resolve_an_unknown_site(self, source: DocumentSource, upstream: Upstream) -> None:
        host = upstream.site.split(":", 1)[0]
        with pytest.raises(UpstreamNotFoundError):
            source.resolve(f"{host}:/sites/NoSuchSite", upstream.library)

    def test_resolve_an_unknown_library(self, source: DocumentSource, upstream: Upstream) -> None:
        with pytest.raises(UpstreamNotFoundError):
            source.resolve(upstream.site, "No Such Library")

    # -- enumerations -------------------------------------------------------------------------

    def test_first_enumeration_pages_to_a_delta_link_with_every_item_once(
        self, source: DocumentSource, upstream: Upstream, drive_id: str, tree: dict[str, str]
    ) -> None:
        enumeration = enumerate_all(source, drive_id, None)
        pages = enumeration.pages
        assert len(pages) >= 2, "the contract needs a library of more than one page"
        for page in pages[:-1]:
            assert page.next_link is not None and page.delta_link is None and not page.last
        assert pages[-1].next_link is None and pages[-1].delta_link is not None
        ids = [item.id for item in enumeration.items]
        assert len(ids) == len(set(ids)), "an item came twice"
        roots = [item for item in enumeration.items if item.kind == "root"]
        assert len(roots) == 1 and roots[0].parent_id is None
        expected = upstream.snapshot()
        assert set(ids) == set(expected) | {roots[0].id}
        assert set(tree.values()) <= set(ids)
        for item in enumeration.items:
            assert not item.deleted
            if item.kind == "root":
                continue
            want = expected[item.id]
            assert (item.name, item.parent_id, item.kind) == (
                want["name"], want["parent_id"], want["kind"]
            )
            assert (item.etag, item.quick_xor_hash) == (want["etag"], want["quick_xor_hash"])
            if item.kind == "file":
                assert item.size == want["size"] and item.quick_xor_hash
        assert all(page.skipped == 0 for page in pages)

    def test_parents_come_from_the_same_enumeration(
        self, source: DocumentSource, drive_id: str, tree: dict[str, str]
    ) -> None:
        items = enumerate_all(source, drive_id, None).by_id()
        for item in items.values():
            if item.kind != "root":
                assert item.parent_id in items

    def test_no_change_delta_is_one_empty_page(
        self, source: DocumentSource, drive_id: str, cursor: str
    ) -> None:
        page = source.delta(drive_id, cursor)
        assert page.items == () and page.next_link is None and page.delta_link is not None
        again = source.delta(drive_id, page.delta_link)  # a link with nothing new stays usable
        assert again.items == () and again.delta_link is not None

    # -- changes ------------------------------------------------------------------------------

    def changes(
        self, source: DocumentSource, drive_id: str, cursor: str
    ) -> dict[str, DocumentItem]:
        """What the delta after ``cursor`` reports, and the cursor after it reports nothing."""
        enumeration = enumerate_all(source, drive_id, cursor)
        follow = source.delta(drive_id, enumeration.delta_link)
        assert follow.items == () and follow.last
        return enumeration.by_id()

    def test_an_added_file_shows_up(
        self, source: DocumentSource, upstream: Upstream, drive_id: str, tree: dict[str, str],
        cursor: str,
    ) -> None:
        new = upstream.add_file("Firmware Notes.pdf", tree["Manuals"], b"v2.1")
        changed = self.changes(source, drive_id, cursor)
        item = changed[new]
        assert not item.deleted and item.kind == "file"
        assert (item.name, item.parent_id, item.size) == ("Firmware Notes.pdf", tree["Manuals"], 4)
        assert item.quick_xor_hash == quickxor_b64(b"v2.1")

    def test_an_added_folder_shows_up(
        self, source: DocumentSource, upstream: Upstream, drive_id: str, cursor: str
    ) -> None:
        new = upstream.add_folder("Images")
        item = self.changes(source, drive_id, cursor)[new]
        assert (item.kind, item.name, item.deleted) == ("folder", "Images", False)

    def test_a_renamed_file_shows_up(
        self, source: DocumentSource, upstream: Upstream, drive_id: str, tree: dict[str, str],
        cursor: str,
    ) -> None:
        target = tree["Manuals/Specifications.pdf"]
        upstream.rename(target, "Technical Specifications.pdf")
        item = self.changes(source, drive_id, cursor)[target]
        assert (item.name, item.parent_id) == ("Technical Specifications.pdf", tree["Manuals"])
        assert item.etag == upstream.snapshot()[target]["etag"]

    def test_a_renamed_folder_shows_up(
        self, source: DocumentSource, upstream: Upstream, drive_id: str, tree: dict[str, str],
        cursor: str,
    ) -> None:
        upstream.rename(tree["Manuals/Archive"], "Old")
        item = self.changes(source, drive_id, cursor)[tree["Manuals/Archive"]]
        assert (item.kind, item.name) == ("folder", "Old")

    def test_a_moved_file_shows_up(
        self, source: DocumentSource, upstream: Upstream, drive_id: str, tree: dict[str, str],
        cursor: str,
    ) -> None:
        target = tree["Read me.docx"]
        upstream.move(target, tree["Manuals/Archive"])
        item = self.changes(source, drive_id, cursor)[target]
        assert (item.name, item.parent_id) == ("Read me.docx", tree["Manuals/Archive"])

    def test_a_modified_file_shows_up(
        self, source: DocumentSource, upstream: Upstream, drive_id: str, tree: dict[str, str],
        cursor: str,
    ) -> None:
        target = tree["Manuals/Service Manual.pdf"]
        before = upstream.snapshot()[target]
        upstream.modify(target, b"revision 7 of the service manual")
        item = self.changes(source, drive_id, cursor)[target]
        assert item.etag != before["etag"] and item.etag == upstream.snapshot()[target]["etag"]
        assert item.size == len(b"revision 7 of the service manual")
        assert item.quick_xor_hash == quickxor_b64(b"revision 7 of the service manual")

    def test_a_deleted_file_shows_up(
        self, source: DocumentSource, upstream: Upstream, drive_id: str, tree: dict[str, str],
        cursor: str,
    ) -> None:
        target = tree["Videos/Training.mp4"]
        upstream.delete(target)
        changed = self.changes(source, drive_id, cursor)
        assert changed[target].deleted
        assert tree["Videos/Calibration.mp4"] not in changed  # its sibling did not change

    def test_a_deleted_folder_with_children_shows_up(
        self, source: DocumentSource, upstream: Upstream, drive_id: str, tree: dict[str, str],
        cursor: str,
    ) -> None:
        upstream.delete(tree["Manuals"])
        changed = self.changes(source, drive_id, cursor)
        assert changed[tree["Manuals"]].deleted
        below = [item_id for name, item_id in tree.items() if name.startswith("Manuals/")]
        for item_id in below:  # reported deleted too, or left to the client (Graph may do both)
            assert item_id not in changed or changed[item_id].deleted
        assert set(upstream.snapshot()).isdisjoint(below)

    def test_a_cursor_moves_on_with_each_delta(
        self, source: DocumentSource, upstream: Upstream, drive_id: str, tree: dict[str, str],
        cursor: str,
    ) -> None:
        first = upstream.add_file("One.pdf", None, b"1")
        middle = enumerate_all(source, drive_id, cursor)
        second = upstream.add_file("Two.pdf", None, b"2")
        latest = enumerate_all(source, drive_id, middle.delta_link)
        assert first in middle.by_id() and second not in middle.by_id()
        assert set(latest.by_id()) == {second}

    # -- expired cursors ----------------------------------------------------------------------

    def test_an_expired_delta_link_raises(
        self, source: DocumentSource, upstream: Upstream, drive_id: str, cursor: str
    ) -> None:
        upstream.expire_cursors()
        with pytest.raises(DeltaExpiredError):
            source.delta(drive_id, cursor)
        fresh = enumerate_all(source, drive_id, None)  # a new first enumeration works
        assert {item.id for item in fresh.items} >= set(upstream.snapshot())

    def test_an_expired_next_link_raises(
        self, source: DocumentSource, upstream: Upstream, drive_id: str, tree: dict[str, str]
    ) -> None:
        first = source.delta(drive_id, None)
        assert first.next_link is not None
        upstream.expire_cursors()
        with pytest.raises(DeltaExpiredError):
            source.delta(drive_id, first.next_link)

    # -- downloads ----------------------------------------------------------------------------

    def test_a_download_url_yields_the_files_bytes(
        self, source: DocumentSource, upstream: Upstream, drive_id: str, tree: dict[str, str]
    ) -> None:
        items = enumerate_all(source, drive_id, None).by_id()
        for name in ("Videos/Calibration.mp4", "Manuals/Archive/Service Manual 2019.pdf"):
            item = items[tree[name]]
            url = source.download_url(drive_id, item.id)
            with httpx.Client(follow_redirects=True, trust_env=False) as client:
                response = client.get(url)  # pre-authenticated: no token of ours goes with it
            assert response.status_code == 200
            assert response.content == upstream.content(item.id)
            assert len(response.content) == item.size
            assert quickxor_b64(response.content) == item.quick_xor_hash

    def test_no_download_url_for_a_folder_or_a_deleted_file(
        self, source: DocumentSource, upstream: Upstream, drive_id: str, tree: dict[str, str]
    ) -> None:
        with pytest.raises(UpstreamNotFoundError):
            source.download_url(drive_id, tree["Videos"])
        upstream.delete(tree["Parts.xlsx"])
        with pytest.raises(UpstreamNotFoundError):
            source.download_url(drive_id, tree["Parts.xlsx"])

    def test_a_download_url_never_reaches_the_log(
        self, source: DocumentSource, drive_id: str, tree: dict[str, str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        urls = [source.download_url(drive_id, tree[name])
                for name in ("Read me.docx", "Manuals/Service Manual.pdf")]
        assert caplog.records, "DEBUG logging caught nothing: the check would prove nothing"
        secrets = [part for url in urls for part in (url, httpx.URL(url).path)]
        for record in caplog.records:
            text = f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
            for secret in secrets:
                assert secret not in text, f"{record.name} logged a download URL"


# -- Microsoft Graph (GraphLibraries) against the fake Graph -----------------------------------


class GraphUpstream:
    """One library of the fake Graph, through its Python API."""

    def __init__(self, fake: FakeGraph, library: str) -> None:
        self.fake = fake
        self.site = SHAREPOINT_SITE
        self.library = library
        self.drive_id = fake.add_library(SHAREPOINT_HOST, SHAREPOINT_SITE_PATH, library)

    def add_folder(self, name: str, parent_id: str | None = None) -> str:
        return self.fake.add_folder(self.drive_id, name, parent_id)

    def add_file(self, name: str, parent_id: str | None = None, content: bytes = b"") -> str:
        return self.fake.add_file(self.drive_id, name, parent_id, content=content)

    def rename(self, item_id: str, name: str) -> None:
        self.fake.rename(self.drive_id, item_id, name)

    def move(self, item_id: str, parent_id: str | None) -> None:
        self.fake.move(self.drive_id, item_id, parent_id)

    def modify(self, item_id: str, content: bytes) -> None:
        self.fake.modify(self.drive_id, item_id, content=content)

    def delete(self, item_id: str) -> None:
        self.fake.delete(self.drive_id, item_id)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return self.fake.snapshot(self.drive_id)

    def content(self, item_id: str) -> bytes:
        return self.fake.content(self.drive_id, item_id)

    def expire_cursors(self) -> None:
        self.fake.expire_delta_tokens(self.drive_id)


_libraries = itertools.count(1)


@pytest.fixture(scope="module")
def graph_fake() -> Iterator[FakeGraph]:
    with FakeGraph(page_size=4) as fake:  # the starting tree takes four pages
        yield fake


@pytest.fixture(scope="module")
def graph_source(graph_fake: FakeGraph) -> Iterator[GraphLibraries]:
    source = GraphLibraries(
        sharepoint_settings(graph_fake), ("client_secret", graph_fake.client_secret)
    )
    yield source
    source.close()


class TestGraphLibraries(DocumentSourceContract):
    @pytest.fixture
    def source(self, graph_source: GraphLibraries) -> GraphLibraries:
        return graph_source

    @pytest.fixture
    def upstream(self, graph_fake: FakeGraph) -> GraphUpstream:
        return GraphUpstream(graph_fake, f"Contract {next(_libraries)}")
