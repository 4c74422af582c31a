"""Omniva's parcel-machine list in the cache: ``parcel_machines`` and the ``omniva_list`` row.

A new list replaces the old one whole inside one write transaction together with its
``omniva_list`` row, so a reader (another connection; WAL gives it a snapshot) sees either the
old list or the new one, never a mix, and the row's ``record_count`` always matches the table.
"""

from __future__ import annotations

import html
import re
import sqlite3
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Any, Final

from syncd.core.clock import iso, parse_iso_or_none
from syncd.core.parcel_machines import ParcelMachine
from syncd.state.db import write_transaction

KINDS: Final[tuple[str, ...]] = ("parcel_machine", "post_office")
COLUMNS: Final[tuple[str, ...]] = (
    "location_id",
    "country",
    "kind",
    "name",
    "county",
    "town",
    "village",
    "small_place",
    "street",
    "area",
    "house_number",
    "apartment",
    "longitude",
    "latitude",
    "service_hours",
    "temp_service_hours",
    "temp_service_hours_until",
    "temp_service_hours_2",
    "temp_service_hours_2_until",
    "comment_et",
    "comment_en",
    "comment_ru",
    "comment_lv",
    "comment_lt",
    "modified_at",
    "state",
    "state_note",
)
COMMENT_LANGUAGES: Final[tuple[str, ...]] = ("et", "en", "ru", "lv", "lt")
_INSERT = (
    f"INSERT INTO parcel_machines ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
)
_row_of = attrgetter(*COLUMNS)
_BREAK = re.compile(r"<\s*/?\s*br\s*/?\s*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")


@dataclass(frozen=True)
class OmnivaListState:
    """The ``omniva_list`` row: where the stored list came from and the last refusal."""

    etag: str | None
    last_modified: str | None
    record_count: int
    skipped_count: int
    updated_at: datetime | None  # when the stored list last changed; None: no list yet
    checked_at: datetime | None  # last successful check (a 304 counts)
    refused_at: datetime | None  # last time a downloaded list was refused
    refused_reason: str | None

    @property
    def loaded(self) -> bool:
        """Whether a list is stored (the API answers 503 until one is)."""
        return self.updated_at is not None


def replace_list(
    conn: sqlite3.Connection,
    records: Iterable[ParcelMachine],
    *,
    etag: str | None,
    last_modified: str | None,
    skipped: int,
    now: datetime,
) -> None:
    """Replace the whole list and its ``omniva_list`` row in one transaction.

    ``records`` must have unique ``location_id`` values (``parse_locations`` ensures it); a
    duplicate rolls everything back with ``sqlite3.IntegrityError``.
    """
    with write_transaction(conn):
        conn.execute("DELETE FROM parcel_machines")
        conn.executemany(_INSERT, (_row_of(record) for record in records))
        count = int(conn.execute("SELECT count(*) FROM parcel_machines").fetchone()[0])
        conn.execute(
            "UPDATE omniva_list SET etag = ?, last_modified = ?, record_count = ?, "
            "skipped_count = ?, updated_at = ?, checked_at = ? WHERE id = 1",
            (etag, last_modified, count, skipped, iso(now), iso(now)),
        )


def mark_checked(conn: sqlite3.Connection, *, now: datetime) -> None:
    """Record a successful check that found the list unchanged (HTTP 304)."""
    with write_transaction(conn):
        conn.execute("UPDATE omniva_list SET checked_at = ? WHERE id = 1", (iso(now),))


def record_refusal(conn: sqlite3.Connection, reason: str, *, now: datetime) -> None:
    """Record that a downloaded list was refused (the stored list stays as it is).

    ``reason`` is shown in status: codes and counts only, never record content.
    """
    with write_transaction(conn):
        conn.execute(
            "UPDATE omniva_list SET refused_at = ?, refused_reason = ? WHERE id = 1",
            (iso(now), reason),
        )


def list_state(conn: sqlite3.Connection) -> OmnivaListState:
    """The ``omniva_list`` row."""
    row = conn.execute(
        "SELECT etag, last_modified, record_count, skipped_count, updated_at, checked_at, "
        "refused_at, refused_reason FROM omniva_list WHERE id = 1"
    ).fetchone()
    if row is None:  # the migration inserts it; a missing row means a hand-edited cache
        return OmnivaListState(None, None, 0, 0, None, None, None, None)
    etag, last_modified, records, skipped, updated_at, checked_at, refused_at, reason = row
    return OmnivaListState(
        etag=etag,
        last_modified=last_modified,
        record_count=int(records),
        skipped_count=int(skipped),
        updated_at=parse_iso_or_none(updated_at),
        checked_at=parse_iso_or_none(checked_at),
        refused_at=parse_iso_or_none(refused_at),
        refused_reason=reason,
    )


def counts(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """Stored locations per country and kind; every country present lists both kinds.

    ``{"EE": {"parcel_machine": 89, "post_office": 86}, "LV": {...}}``
    """
    result: dict[str, dict[str, int]] = {}
    for country, kind, number in conn.execute(
        "SELECT country, kind, count(*) FROM parcel_machines GROUP BY country, kind "
        "ORDER BY country, kind"
    ):
        result.setdefault(country, dict.fromkeys(KINDS, 0))[kind] = int(number)
    return result


def list_locations(
    conn: sqlite3.Connection, country: str, kind: str | None = None
) -> list[dict[str, Any]]:
    """The locations of ``country`` (case-insensitive), optionally of one ``kind``, in the API's
    JSON shape, ordered by name (accents and case ignored, as people look names up).

    Each item: ``id``, ``name``, ``type``, ``country``, the address parts (``county``, ``town``,
    ``village``, ``small_place``, ``street``, ``area``, ``house_number``, ``apartment``), a
    one-line ``address``, ``latitude``, ``longitude``, ``service_hours``,
    ``temp_service_hours`` (a list of ``{"hours", "until"}``, only the periods Omniva filled in),
    ``comments`` (``{"et", "en", "ru", "lv", "lt"}`` as plain text: Omniva's HTML line breaks
    become newlines and other markup is dropped), ``modified_at`` (as Omniva sends it),
    ``state`` (``normal``, ``overfilled``, ``longer_delivery`` or ``prepaid_pickup_only``, from
    Omniva's name marker, which ``name`` no longer holds) and ``state_note`` (the marker as
    Omniva wrote it; ``""`` when normal). Raises ``ValueError`` for an unknown ``kind``.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown location type {kind!r}")
    sql = f"SELECT {', '.join(COLUMNS)} FROM parcel_machines WHERE country = ?"
    params: list[str] = [country.strip().upper()]
    if kind is not None:
        sql += " AND kind = ?"
        params.append(kind)
    cursor = conn.execute(sql, params)
    rows = [dict(zip(COLUMNS, row, strict=True)) for row in cursor.fetchall()]
    rows.sort(key=lambda row: (_sort_key(row["name"]), row["name"], row["location_id"]))
    return [_to_json(row) for row in rows]


def format_address(row: dict[str, Any]) -> str:
    """A one-line human address from the non-empty parts, most specific first:
    ``street house-apartment, area, small place, village, town, county``."""
    house = row["house_number"]
    if house and row["apartment"]:
        house = f"{house}-{row['apartment']}"
    street, area = row["street"], row["area"]
    if not street:  # the area names the place (a shop, a harbour) when there is no street
        street, area = area, ""
    parts = [
        " ".join(part for part in (street, house) if part),
        area,
        row["small_place"],
        row["village"],
        row["town"],
        row["county"],
    ]
    line: list[str] = []
    for part in parts:
        part = part.strip()
        if part and (not line or line[-1] != part):
            line.append(part)
    return ", ".join(line)


def _to_json(row: dict[str, Any]) -> dict[str, Any]:
    periods = (
        (row["temp_service_hours"], row["temp_service_hours_until"]),
        (row["temp_service_hours_2"], row["temp_service_hours_2_until"]),
    )
    return {
        "id": row["location_id"],
        "name": row["name"],
        "type": row["kind"],
        "country": row["country"],
        "county": row["county"],
        "town": row["town"],
        "village": row["village"],
        "small_place": row["small_place"],
        "street": row["street"],
        "area": row["area"],
        "house_number": row["house_number"],
        "apartment": row["apartment"],
        "address": format_address(row),
        "latitude": row["latitude"],
        "longitude": row["longitude"],
        "service_hours": row["service_hours"],
        "temp_service_hours": [
            {"hours": hours, "until": until} for hours, until in periods if hours or until
        ],
        "comments": {lang: _plain(row[f"comment_{lang}"]) for lang in COMMENT_LANGUAGES},
        "modified_at": row["modified_at"],
        "state": row["state"],
        "state_note": row["state_note"],
    }


def _plain(text: str) -> str:
    if "<" not in text and "&" not in text:
        return text
    text = html.unescape(_TAG.sub("", _BREAK.sub("\n", text)))
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def _sort_key(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
