"""Documents as syncd mirrors them: a library's items (metadata only) and one page of changes.

Vendor-neutral records that the SharePoint connector produces from Graph's ``driveItem`` JSON and
that :mod:`syncd.state.documents` stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ItemKind = Literal["root", "folder", "file"]


@dataclass(frozen=True, slots=True)
class DocumentItem:
    """One item of a library as one change reports it.

    A deletion carries only ``id`` (and ``deleted=True``); every other field is then empty.
    Times are UTC ISO-8601 text as the upstream sent them.
    """

    id: str
    kind: ItemKind
    deleted: bool = False
    parent_id: str | None = None
    name: str = ""
    size: int | None = None
    mime_type: str | None = None
    quick_xor_hash: str | None = None
    etag: str | None = None
    ctag: str | None = None
    created_at: str | None = None
    modified_at: str | None = None
    web_url: str | None = None


@dataclass(frozen=True, slots=True)
class DeltaPage:
    """One page of a change enumeration: its items, and either the link to the next page or
    the cursor (delta link) that covers everything up to and including this page."""

    items: tuple[DocumentItem, ...]
    next_link: str | None
    delta_link: str | None
    skipped: int = 0  # items on the page that could not be read (malformed)

    @property
    def last(self) -> bool:
        return self.next_link is None
