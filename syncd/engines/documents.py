"""The documents mirror: SharePoint libraries' metadata into the cache, one library at a time.

Per library the engine follows Graph's delta protocol: the first run enumerates everything (no
link), each later run asks the library's delta link for what changed. Pages before the last are
staged with the link that follows them (a crash resumes there); the last page, which carries the
new delta link, is applied together with everything staged in one transaction
(:mod:`syncd.state.documents`). When Graph says a link has expired (410 ``resyncRequired``), the
library is enumerated again from the start through staging and swapped in at the end, so the
portal keeps seeing the old items meanwhile, as with the CRM's full resync.

The connector is anything with the :class:`DocumentSource` methods; the Graph one is
:class:`syncd.connectors.sharepoint.graph.GraphLibraries`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from syncd.connectors.sharepoint.producers import producer_key
from syncd.connectors.sharepoint.settings import DocumentLibrary, SharepointSettings
from syncd.core.clock import utc_now
from syncd.core.documents import DeltaPage
from syncd.core.errors import ConfigError, DeltaExpiredError
from syncd.engines.mirror import StopRequested
from syncd.state import documents
from syncd.state.documents import EnumerationKind, LibraryConfig

log = logging.getLogger(__name__)

# (library, pages so far, items so far) after every committed page
DocumentProgress = Callable[[str, int, int], None]


class Resolved(Protocol):
    """A library's upstream IDs."""

    @property
    def site_id(self) -> str: ...

    @property
    def drive_id(self) -> str: ...


class DocumentSource(Protocol):
    """What the engine needs of a document connector (the contract suite checks it)."""

    def resolve(self, site: str, library: str) -> Resolved:
        """The IDs of ``library`` in ``site``; UpstreamNotFoundError if there is none."""

    def delta(self, drive_id: str, link: str | None) -> DeltaPage:
        """The first page of a full enumeration (``link`` None) or the page at ``link``;
        DeltaExpiredError when the link is no longer valid."""

    def download_url(self, drive_id: str, item_id: str) -> str:
        """A short-lived pre-authenticated URL of the item's content."""

    def close(self) -> None:
        """Release connections."""


@dataclass(frozen=True)
class LibraryReport:
    """What one run did to one library."""

    library: str
    kind: EnumerationKind
    pages: int
    requests: int
    upserted: int
    deleted: int
    item_count: int
    skipped: int
    restarted: bool  # a 410 sent it back to a full enumeration

    def summary(self) -> str:
        restarted = " after an expired cursor" if self.restarted else ""
        skipped = f", {self.skipped} unreadable item(s) skipped" if self.skipped else ""
        return (
            f"documents {self.library}: {self.kind}{restarted}, {self.pages} page(s), "
            f"{self.upserted} changed, {self.deleted} removed, {self.item_count} file(s){skipped}"
        )


def library_configs(settings: SharepointSettings) -> list[LibraryConfig]:
    """The configured libraries as the cache stores them (producer keys normalised)."""
    return [_config(library) for library in settings.libraries]


def _config(library: DocumentLibrary) -> LibraryConfig:
    keys = tuple(dict.fromkeys(producer_key(name) for name in library.producers))
    return LibraryConfig(
        name=library.name,
        site=library.site,
        library=library.library,
        folder=library.folder,
        permission=library.permission,
        producer_keys=keys,
        producers=library.producers,
    )


class DocumentMirror:
    """Mirrors the configured libraries through ``source`` into the cache at ``conn``."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        source: DocumentSource,
        settings: SharepointSettings,
        *,
        stop: threading.Event | None = None,
        progress: DocumentProgress | None = None,
    ) -> None:
        self.conn = conn
        self.source = source
        self.settings = settings
        self.stop = stop or threading.Event()
        self.progress = progress

    def configure(self) -> None:
        """Bring the cache's libraries, producer keys and aliases in line with the settings."""
        removed = documents.configure(
            self.conn, library_configs(self.settings), self.settings.alias_keys()
        )
        for name in removed:
            log.info("documents %s: no longer configured; its items were removed", name)

    def names(self) -> list[str]:
        return [library.name for library in self.settings.libraries]

    def run(self, name: str, *, full: bool = False) -> LibraryReport:
        """Bring library ``name`` up to date (``full``: enumerate everything again)."""
        state = documents.load(self.conn, name)
        if state is None:
            raise ConfigError(f"sharepoint.libraries: no library called {name!r} is configured")
        drive_id = state.drive_id
        if drive_id is None:
            resolved = self.source.resolve(state.site, state.library)
            documents.set_drive(
                self.conn, name, site_id=resolved.site_id, drive_id=resolved.drive_id
            )
            drive_id = resolved.drive_id
        if full:
            documents.forget_cursor(self.conn, name)
            state = documents.load(self.conn, name)
            assert state is not None
        kind: EnumerationKind
        link: str | None
        begun = False
        if state.enumeration_kind is not None:  # begun earlier: resume where it stopped
            kind, begun = state.enumeration_kind, True
            link = state.enumeration_link or (state.delta_link if kind == "incremental" else None)
            if state.enumeration_link is not None:
                log.info(
                    "documents %s: resuming a %s enumeration after page %d",
                    name, kind, state.enumeration_pages,
                )
            if kind == "incremental" and link is None:
                kind, begun = "full", False
        elif state.delta_link is not None:
            kind, link = "incremental", state.delta_link
        else:
            kind, link = "full", None
        pages = requests = items_seen = skipped = 0
        restarted = False
        while True:
            if self.stop.is_set():
                raise StopRequested("documents: stopping")
            try:
                requests += 1
                page = self.source.delta(drive_id, link)
            except DeltaExpiredError:
                if restarted:
                    raise
                log.warning(
                    "documents %s: Graph expired the change cursor; enumerating the library "
                    "again (the portal keeps the current items until it is done)",
                    name,
                )
                restarted = True
                kind, link = "full", None
                documents.begin(self.conn, name, "full", now=utc_now())
                begun = True
                continue
            pages += 1
            items_seen += len(page.items)
            skipped += page.skipped
            if page.next_link is not None:
                if not begun:
                    documents.begin(self.conn, name, kind, now=utc_now())
                    begun = True
                documents.stage_page(self.conn, name, page.items, page.next_link)
                link = page.next_link
                if self.progress is not None:
                    self.progress(name, pages, items_seen)
                continue
            assert page.delta_link is not None
            result = documents.finish(
                self.conn, name, kind, page.items, page.delta_link, now=utc_now()
            )
            if self.progress is not None:
                self.progress(name, pages, items_seen)
            if skipped:
                log.warning(
                    "documents %s: %d item(s) Graph sent could not be read and were skipped",
                    name, skipped,
                )
            return LibraryReport(
                library=name,
                kind=kind,
                pages=pages,
                requests=requests,
                upserted=result.upserted,
                deleted=result.deleted,
                item_count=result.item_count,
                skipped=skipped,
                restarted=restarted,
            )
