"""Parsing and validating Omniva's ``locations.json`` (parcel machines and post offices).

The list is a compact JSON array of flat objects whose values are all strings (``ZIP``, ``NAME``,
``TYPE``, ``A0_NAME``…``A8_NAME``, ``X_COORDINATE``, ``Y_COORDINATE``, service hours, five
``comment_*`` directions and ``MODIFIED``). A state marker at the end of ``NAME`` (see
:mod:`.markers`) is taken off the name and kept as ``state``/``state_note``. One bad record
never fails the list: it is skipped and counted by reason. A body that is not a usable list at
all raises :class:`SuspiciousListError`, so the caller keeps the copy it has.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from syncd.core.errors import MalformedResponseError
from syncd.core.parcel_machines import Kind, ParcelMachine

from .markers import split_marker

KINDS: Final[dict[str, Kind]] = {"0": "parcel_machine", "1": "post_office"}

# Omniva key → ParcelMachine attribute, for the free-text keys that may be absent or empty.
OPTIONAL_TEXT_KEYS: Final[dict[str, str]] = {
    "A1_NAME": "county",
    "A2_NAME": "town",
    "A3_NAME": "village",
    "A4_NAME": "small_place",
    "A5_NAME": "street",
    "A6_NAME": "area",
    "A7_NAME": "house_number",
    "A8_NAME": "apartment",
    "SERVICE_HOURS": "service_hours",
    "TEMP_SERVICE_HOURS": "temp_service_hours",
    "TEMP_SERVICE_HOURS_UNTIL": "temp_service_hours_until",
    "TEMP_SERVICE_HOURS_2": "temp_service_hours_2",
    "TEMP_SERVICE_HOURS_2_UNTIL": "temp_service_hours_2_until",
    "comment_est": "comment_et",
    "comment_eng": "comment_en",
    "comment_rus": "comment_ru",
    "comment_lav": "comment_lv",
    "comment_lit": "comment_lt",
    "MODIFIED": "modified_at",
}
REQUIRED_KEYS: Final[tuple[str, ...]] = (
    "ZIP",
    "NAME",
    "TYPE",
    "A0_NAME",
    "X_COORDINATE",
    "Y_COORDINATE",
)

_ZIP = re.compile(r"[0-9A-Za-z]{1,32}")
_COUNTRY = re.compile(r"[A-Z]{2}")
_BOM = b"\xef\xbb\xbf"


class SuspiciousListError(MalformedResponseError):
    """Omniva's answer is not a list we would replace the stored one with.

    ``code`` is a stable word for logs, status and tests: ``html``, ``redirect``, ``too_large``,
    ``not_json``, ``truncated``, ``not_array``, ``empty``, ``no_valid_records``, ``shrunk``.
    Messages hold counts and codes only, never record content.
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ParsedLocations:
    """The valid records (unique ``location_id``, last one wins) and what was skipped, by reason."""

    records: list[ParcelMachine]
    skipped: int
    skipped_reasons: dict[str, int] = field(default_factory=dict)


class _Skip(Exception):
    """One record fails validation; ``reason`` is the stable skip reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_locations(body: bytes) -> ParsedLocations:
    """Parse a downloaded ``locations.json``.

    Raises :class:`SuspiciousListError` for an HTML page, a body that is not JSON (truncated
    or corrupt), JSON that is not an array, an empty array, or an array without one valid record.
    Individual bad records are skipped and counted in ``skipped_reasons``: ``not_an_object``,
    ``missing_<key>`` / ``bad_<key>`` for the required keys (``zip``, ``name``, ``type``,
    ``country``, ``longitude``, ``latitude``), ``bad_text_field`` (an optional key holding a
    number, list or object) and ``duplicate_zip`` (an earlier record with the same ZIP was
    replaced by a later one).
    """
    data = _decode(body)
    if not isinstance(data, list):
        raise SuspiciousListError("Omniva's list is not a JSON array", code="not_array")
    if not data:
        raise SuspiciousListError("Omniva's list is empty", code="empty")
    reasons: Counter[str] = Counter()
    by_id: dict[str, ParcelMachine] = {}
    for item in data:
        try:
            record = _parse_record(item)
        except _Skip as skip:
            reasons[skip.reason] += 1
            continue
        if record.location_id in by_id:
            reasons["duplicate_zip"] += 1
        by_id[record.location_id] = record
    if not by_id:
        raise SuspiciousListError(
            f"Omniva's list has no valid record among {len(data)}", code="no_valid_records"
        )
    return ParsedLocations(
        records=list(by_id.values()),
        skipped=sum(reasons.values()),
        skipped_reasons=dict(sorted(reasons.items())),
    )


def _parse_record(item: Any) -> ParcelMachine:
    """Validate and map one decoded record; raises ``_Skip`` when it is bad."""
    if not isinstance(item, dict):
        raise _Skip("not_an_object")
    location_id = _required(item, "ZIP", "zip")
    if not _ZIP.fullmatch(location_id):
        raise _Skip("bad_zip")
    name = _required(item, "NAME", "name")
    if not name.strip():
        raise _Skip("missing_name")
    kind = KINDS.get(_required(item, "TYPE", "type"))
    if kind is None:
        raise _Skip("bad_type")
    country = _required(item, "A0_NAME", "country")
    if not _COUNTRY.fullmatch(country):
        raise _Skip("bad_country")
    longitude = _coordinate(_required(item, "X_COORDINATE", "longitude"), 180.0, "longitude")
    latitude = _coordinate(_required(item, "Y_COORDINATE", "latitude"), 90.0, "latitude")
    text: dict[str, str] = {}
    for key, attribute in OPTIONAL_TEXT_KEYS.items():
        value = item.get(key)
        if value is None:  # absent or null: Omniva leaves unused parts empty anyway
            value = ""
        elif not isinstance(value, str):
            raise _Skip("bad_text_field")
        text[attribute] = value
    clean_name, state, state_note = split_marker(name)
    return ParcelMachine(
        location_id=location_id,
        country=country,
        kind=kind,
        name=clean_name,
        longitude=longitude,
        latitude=latitude,
        state=state,
        state_note=state_note,
        **text,
    )


def _decode(body: bytes) -> Any:
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
    stripped = body.lstrip()
    if stripped[:1] == b"<":
        raise SuspiciousListError("Omniva sent an HTML page instead of the list", code="html")
    try:
        return orjson.loads(stripped)
    except orjson.JSONDecodeError as error:
        if not stripped.strip():
            raise SuspiciousListError("Omniva sent an empty body", code="empty") from None
        if error.pos >= len(stripped.rstrip()):  # the parser ran out of data
            raise SuspiciousListError(
                f"Omniva's list is truncated JSON ({len(body)} bytes)", code="truncated"
            ) from None
        raise SuspiciousListError(
            f"Omniva's list is not valid JSON (error at byte {error.pos})", code="not_json"
        ) from None


def _required(item: dict[str, Any], key: str, reason: str) -> str:
    value = item.get(key)
    if value is None or value == "":
        raise _Skip(f"missing_{reason}")
    if not isinstance(value, str):
        raise _Skip(f"bad_{reason}")
    return value


def _coordinate(value: str, limit: float, reason: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise _Skip(f"bad_{reason}") from None
    if not math.isfinite(number) or not -limit <= number <= limit:
        raise _Skip(f"bad_{reason}")
    return number
