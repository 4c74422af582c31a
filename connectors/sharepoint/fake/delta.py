"""Delta enumeration over a library's change log, and its opaque tokens.

An enumeration covers the changes with ``since < seq <= upto``: ``since`` is 0 for a first
enumeration (every live item, the root included, no tombstones) or the ``upto`` of the
deltaLink the client came back with; ``upto`` is the library's sequence when the enumeration
started. Items come in order of their latest change and a page resumes after the last change
it served (``after``), so an item changed while the client pages through is skipped here (its
new change is above ``upto``) and reported by the next delta: nothing is lost, and an item whose
parent changed later may come before that parent (clients track items by id).

Tokens are base64url text carrying ``kind;drive tag;epoch;since;upto;after;page size``; a
token of an epoch older than the library's (see ``expire_delta_tokens``) answers 410.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass

from .library import Library

MAX_PAGE_SIZE = 2000


class TokenExpired(Exception):
    """The token predates ``expire_delta_tokens``: the client must enumerate again (410)."""


class TokenInvalid(Exception):
    """The token is not one this drive issued (400)."""


@dataclass(frozen=True)
class Cursor:
    """Where an enumeration stands."""

    paging: bool  # True: a nextLink (mid-enumeration); False: a deltaLink
    epoch: int
    since: int
    upto: int
    after: int
    top: int

    def encode(self, drive_id: str) -> str:
        """The opaque token."""
        text = ";".join(
            ["n" if self.paging else "d", _tag(drive_id)]
            + [str(n) for n in (self.epoch, self.since, self.upto, self.after, self.top)]
        )
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, drive_id: str) -> Cursor:
        """The cursor of ``token``; TokenInvalid when it is not one of this drive's."""
        try:
            text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            kind, tag, *numbers = text.split(";")
            epoch, since, upto, after, top = (int(n) for n in numbers)
        except (ValueError, UnicodeDecodeError, binascii.Error):
            raise TokenInvalid("Invalid delta token.") from None
        if kind not in ("n", "d") or tag != _tag(drive_id):
            raise TokenInvalid("Invalid delta token.")
        return cls(kind == "n", epoch, since, upto, after, top)


def _tag(drive_id: str) -> str:
    return hashlib.sha256(drive_id.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Page:
    """One delta page: serialised items, then a nextLink token or a deltaLink token."""

    items: list[bytes]
    next_token: str | None
    delta_token: str | None


def delta_page(
    library: Library,
    token: str | None,
    top: int,
    repeat_item: Callable[[], bool],
) -> Page:
    """The page ``token`` asks for (None: the first page of a first enumeration).

    ``top`` is the page size for a new enumeration (a nextLink keeps its own). ``repeat_item``
    is asked on pages after the first; when it says yes, the page starts with an item an earlier
    page of the enumeration already sent (in its current version).
    """
    if token is None:
        cursor = Cursor(True, library.token_epoch, 0, library.seq, 0, top)
    else:
        given = Cursor.decode(token, library.id)
        if given.epoch < library.token_epoch:
            raise TokenExpired("resyncRequired")
        if given.paging:
            cursor = given
        else:
            cursor = Cursor(True, given.epoch, given.upto, library.seq, given.upto, top)
    first_enumeration = cursor.since == 0
    items: list[bytes] = []
    if cursor.after > cursor.since and repeat_item():
        repeated = _first_served(library, cursor, first_enumeration)
        if repeated is not None:
            items.append(repeated)
    index = bisect_right(library.log_seqs, cursor.after)
    last = cursor.after
    count = 0
    more = False
    while index < len(library.log_seqs):
        seq = library.log_seqs[index]
        if seq > cursor.upto:
            break
        item = library.items[library.log_ids[index]]
        index += 1
        if item.seq != seq or (first_enumeration and item.deleted):
            continue  # a stale entry, or a tombstone a first enumeration does not report
        if count == cursor.top:
            more = True
            break
        items.append(library.delta_json(item))
        count += 1
        last = seq
    if more:
        following = Cursor(True, cursor.epoch, cursor.since, cursor.upto, last, cursor.top)
        return Page(items, following.encode(library.id), None)
    done = Cursor(False, cursor.epoch, cursor.upto, cursor.upto, cursor.upto, cursor.top)
    return Page(items, None, done.encode(library.id))


def _first_served(library: Library, cursor: Cursor, first_enumeration: bool) -> bytes | None:
    """The current JSON of the first item an earlier page of this enumeration served."""
    index = bisect_right(library.log_seqs, cursor.since)
    while index < len(library.log_seqs) and library.log_seqs[index] <= cursor.after:
        seq = library.log_seqs[index]
        item = library.items[library.log_ids[index]]
        index += 1
        if item.seq == seq and not (first_enumeration and item.deleted):
            return library.delta_json(item)
    return None
