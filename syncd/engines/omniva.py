"""Refreshing the cached Omniva parcel-machine list: download, validate, replace or refuse.

Like the shop plugins, syncd keeps the copy it has whenever a download does not look like a
real list (an HTML page, a redirect, broken or empty JSON, nothing valid, or a list that shrank
by more than ``max_shrink_share``). A refusal is recorded in ``omniva_list`` for status and
raised as :class:`MalformedResponseError`, so the job shows failing and retries on schedule.
Network trouble and HTTP errors (5xx, 429) are not refusals: no list arrived; they propagate
with their own retry policy and leave ``omniva_list`` untouched.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from syncd.connectors.omniva.client import Downloaded, NotModified
from syncd.connectors.omniva.locations import SuspiciousListError, parse_locations
from syncd.core.errors import MalformedResponseError
from syncd.core.parcel_machines import ParcelMachine
from syncd.state import omniva as store

log = logging.getLogger(__name__)


class LocationsFetcher(Protocol):
    """What :func:`refresh_locations` needs of
    :class:`syncd.connectors.omniva.client.OmnivaClient`."""

    def fetch(self, etag: str | None, last_modified: str | None) -> NotModified | Downloaded: ...


@dataclass(frozen=True)
class RefreshReport:
    """What one refresh did; ``records``/``skipped``/``counts`` describe the list now stored."""

    outcome: Literal["updated", "not_modified"]
    records: int
    skipped: int
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped_reasons: dict[str, int] = field(default_factory=dict)  # empty when not_modified

    def summary(self) -> str:
        """One log line, e.g. ``omniva list updated: 261 locations (EE 175, LV 86), 0 skipped``."""
        per_country = ", ".join(
            f"{country} {sum(kinds.values())}" for country, kinds in sorted(self.counts.items())
        )
        verb = "updated" if self.outcome == "updated" else "not modified"
        countries = f" ({per_country})" if per_country else ""
        return f"omniva list {verb}: {self.records} locations{countries}, {self.skipped} skipped"


def refresh_locations(
    conn: sqlite3.Connection,
    client: LocationsFetcher,
    *,
    max_shrink_share: float,
    now: datetime,
) -> RefreshReport:
    """Check Omniva for a new list and store it when it passes validation.

    Sends the stored validators (only while a list is stored). 304 → ``mark_checked``; 200 →
    parse and replace in one transaction. Refuses (``record_refusal``, old list kept,
    :class:`SuspiciousListError` raised) a suspicious download, or one with fewer than
    ``(1 - max_shrink_share)`` times the stored ``record_count``, overall or for any country
    with at least :data:`COUNTRY_CHECK_MIN` stored locations. Other errors of
    ``client.fetch`` propagate unchanged.
    """
    if not 0.0 <= max_shrink_share <= 1.0:
        raise ValueError("max_shrink_share must be between 0 and 1")
    state = store.list_state(conn)
    etag, last_modified = (state.etag, state.last_modified) if state.loaded else (None, None)
    try:
        answer = client.fetch(etag, last_modified)
        if isinstance(answer, NotModified):
            store.mark_checked(conn, now=now)
            return RefreshReport(
                "not_modified", state.record_count, state.skipped_count, store.counts(conn)
            )
        parsed = parse_locations(answer.body)
        if state.loaded and state.record_count > 0:
            _check_shrink(len(parsed.records), state.record_count, max_shrink_share)
            _check_countries(parsed.records, store.counts(conn), max_shrink_share)
    except MalformedResponseError as error:
        store.record_refusal(conn, str(error), now=now)
        raise
    if parsed.skipped:
        log.warning(
            "omniva list: %d of %d records skipped (%s)",
            parsed.skipped,
            len(parsed.records) + parsed.skipped,
            ", ".join(f"{reason} {n}" for reason, n in parsed.skipped_reasons.items()),
        )
    store.replace_list(
        conn,
        parsed.records,
        etag=answer.etag,
        last_modified=answer.last_modified,
        skipped=parsed.skipped,
        now=now,
    )
    return RefreshReport(
        "updated", len(parsed.records), parsed.skipped, store.counts(conn), parsed.skipped_reasons
    )


# A country with fewer stored locations than this is not checked on its own (one closed post
# office would otherwise look like a collapse).
COUNTRY_CHECK_MIN = 20


def _check_countries(
    records: Sequence[ParcelMachine], stored: dict[str, dict[str, int]], max_shrink_share: float
) -> None:
    """Refuse a list in which one country lost more than the share (a list missing a whole
    country can pass the total check when other countries are large)."""
    new = Counter(record.country for record in records)
    for country, kinds in sorted(stored.items()):
        before = sum(kinds.values())
        if before >= COUNTRY_CHECK_MIN and new[country] < before * (1.0 - max_shrink_share):
            raise SuspiciousListError(
                f"Omniva's list for {country} shrank from {before} to {new[country]} locations "
                f"(more than {max_shrink_share:.0%} fewer); the stored list is kept",
                code="shrunk",
            )


def _check_shrink(new: int, stored: int, max_shrink_share: float) -> None:
    if new < stored * (1.0 - max_shrink_share):
        raise SuspiciousListError(
            f"Omniva's list shrank from {stored} to {new} locations "
            f"(more than {max_shrink_share:.0%} fewer); the stored list is kept",
            code="shrunk",
        )
