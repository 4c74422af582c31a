"""Named, pure transform functions that mapping files refer to by name.

Each transform takes the raw value found at the mapping's source path (``None`` when absent) and
the mapping's ``args``, and returns the canonical value or raises
:class:`~syncd.core.errors.RecordMappingError`. Reasons name what is wrong, never the value itself
(values may be personal data).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from syncd.core.errors import RecordMappingError

Transform = Callable[[Any, Mapping[str, Any]], Any]

MAX_TEXT_LENGTH = 1000
MAX_LIST_LENGTH = 100
_ID = re.compile(r"^[1-9][0-9]{0,18}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")


def crm_id(value: Any, args: Mapping[str, Any]) -> str:
    """A record's own ID: a positive integer, given as int or digit string."""
    text = _id_text(value)
    if text is None:
        raise RecordMappingError("missing or not a positive integer ID")
    return text


def ref_id(value: Any, args: Mapping[str, Any]) -> str | None:
    """A link to another record. ``None``, ``0``, ``""`` and ``"0"`` mean no link."""
    if value in (None, "", 0, "0", False):
        return None
    text = _id_text(value)
    if text is None:
        raise RecordMappingError("link is not a positive integer ID")
    return text


def _id_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if value > 0 else None
    if isinstance(value, str) and _ID.match(value.strip()):
        return value.strip()
    return None


def text(value: Any, args: Mapping[str, Any]) -> str | None:
    """A short string; empty becomes ``None``. Numbers are accepted and turned into text."""
    if value is None:
        return None
    if type(value) is str:  # the common case, checked first: this runs for most fields
        result = value.strip()
    elif isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RecordMappingError("not a text value")
    else:
        result = str(value).strip()
    if len(result) > int(args.get("max_length", MAX_TEXT_LENGTH)):
        raise RecordMappingError("text too long")
    return result or None


def upper_text(value: Any, args: Mapping[str, Any]) -> str | None:
    """Text with inner whitespace removed and upper-cased (VAT and registration numbers)."""
    result = text(value, args)
    return re.sub(r"\s+", "", result).upper() if result else None


def country_code(value: Any, args: Mapping[str, Any]) -> str | None:
    """An ISO 3166-1 alpha-2 country code."""
    result = upper_text(value, args)
    if result is None:
        return None
    if not _COUNTRY.match(result):
        raise RecordMappingError("not a two-letter country code")
    return result


def timestamp(value: Any, args: Mapping[str, Any]) -> str | None:
    """An ISO 8601 timestamp with offset, normalised to UTC (``2026-11-21T10:00:00Z``)."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise RecordMappingError("timestamp is not a string")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise RecordMappingError("not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise RecordMappingError("timestamp has no UTC offset")
    return parsed.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def calendar_date(value: Any, args: Mapping[str, Any]) -> str | None:
    """A calendar date (``YYYY-MM-DD``) from a date or a CRM datetime.

    Bitrix24 stores a date-only field as midnight UTC and renders it in the portal's offset:
    ``1985-03-14T03:00:00+03:00`` in Tallinn, ``2001-11-10T19:00:00-05:00`` (the 11th) in New
    York. So a datetime with an offset is converted to UTC before its date is taken; reading it
    in its own offset would give the day before in every portal west of Greenwich. The host's
    time zone is never used.
    """
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise RecordMappingError("date is not a string")
    raw = value.strip()
    try:
        if "T" in raw:
            moment = datetime.fromisoformat(raw)
            if moment.tzinfo is not None:
                moment = moment.astimezone(UTC)
            day = moment.date()
        else:
            day = date.fromisoformat(raw)
    except (ValueError, OverflowError):
        raise RecordMappingError("not an ISO 8601 date") from None
    if not 1900 <= day.year <= 2200:
        raise RecordMappingError("date out of range")
    return day.isoformat()


def string_list(value: Any, args: Mapping[str, Any]) -> list[str]:
    """A list of short strings (empty entries dropped, duplicates removed, order kept)."""
    if value is None or value == "" or value is False:
        return []
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_LIST_LENGTH:
        raise RecordMappingError("too many list entries")
    result: list[str] = []
    for item in items:
        entry = _short_text(item, args)
        if entry is not None and entry not in result:
            result.append(entry)
    return result


def language_list(value: Any, args: Mapping[str, Any]) -> list[str]:
    """Preferred languages as lower-case ISO 639 codes."""
    result = [code.lower() for code in string_list(value, args)]
    if any(not _LANGUAGE.match(code) for code in result):
        raise RecordMappingError("not an ISO 639 language code")
    return result


def flag(value: Any, args: Mapping[str, Any]) -> str | None:
    """A yes/no flag mapped to one of two canonical words: ``args.true`` / ``args.false``."""
    if value in (None, ""):
        return None
    truthy = value in (True, 1, "Y", "y", "1", "true", "yes")
    falsy = value in (False, 0, "N", "n", "0", "false", "no")
    if not (truthy or falsy):
        raise RecordMappingError("not a yes/no value")
    return str(args["true"] if truthy else args["false"])


def _short_text(value: Any, args: Mapping[str, Any]) -> str | None:
    """:func:`text` with the common case (a short string) inlined, for per-entry loops."""
    if type(value) is str:
        value = value.strip()
        if len(value) > MAX_TEXT_LENGTH:
            raise RecordMappingError("text too long")
        return value or None
    return text(value, args)


def typed_values(value: Any, args: Mapping[str, Any]) -> list[dict[str, str]]:
    """A multi-value field (e-mails, phones) as ``[{"type": ..., "value": ...}]``.

    ``args.type_key``/``args.value_key`` name the vendor's keys; ``args.types`` maps vendor types to
    canonical ones; unknown vendor types become ``args.default_type``.
    """
    if value is None or value == "" or value is False:
        return []
    if not isinstance(value, list):
        raise RecordMappingError("multi-value field is not a list")
    if len(value) > MAX_LIST_LENGTH:
        raise RecordMappingError("too many values")
    types: Mapping[str, str] = args["types"]
    value_key, type_key, default = args["value_key"], args["type_key"], args["default_type"]
    result: list[dict[str, str]] = []
    for entry in value:
        if not isinstance(entry, dict):
            raise RecordMappingError("multi-value entry is not an object")
        item = _short_text(entry.get(value_key), args)
        if item is None:
            continue
        vendor_type = entry.get(type_key)
        kind = types.get(vendor_type, default) if isinstance(vendor_type, str) else default
        result.append({"type": kind, "value": item})
    return result


def addresses(value: Any, args: Mapping[str, Any]) -> list[dict[str, str | None]]:
    """Postal addresses as ``[{"type", "line1", "line2", "city", "postal_code", "region",
    "country"}]``; ``args.fields`` maps canonical keys to vendor keys, ``args.types`` the types."""
    if value is None or value == "" or value is False:
        return []
    if not isinstance(value, list):
        raise RecordMappingError("address list is not a list")
    if len(value) > MAX_LIST_LENGTH:
        raise RecordMappingError("too many addresses")
    fields = tuple(args["fields"].items())
    types: Mapping[str, str] = args["types"]
    type_key, default = args["type_key"], args["default_type"]
    result: list[dict[str, str | None]] = []
    for entry in value:
        if not isinstance(entry, dict):
            raise RecordMappingError("address is not an object")
        vendor_type = entry.get(type_key)
        key = str(vendor_type) if isinstance(vendor_type, str | int) else ""
        address: dict[str, str | None] = {"type": types.get(key, default)}
        filled = False
        for canonical, vendor in fields:
            part = address[canonical] = _short_text(entry.get(vendor), args)
            filled = filled or part is not None
        if filled:
            result.append(address)
    if len(result) > 1:  # a stable order, whatever order the CRM listed them in
        names = ("type", *(canonical for canonical, _ in fields))
        result.sort(key=lambda a: tuple(a.get(k) or "" for k in names))
    return result


TRANSFORMS: dict[str, Transform] = {
    "crm_id": crm_id,
    "ref_id": ref_id,
    "text": text,
    "upper_text": upper_text,
    "country_code": country_code,
    "timestamp": timestamp,
    "date": calendar_date,
    "string_list": string_list,
    "language_list": language_list,
    "flag": flag,
    "typed_values": typed_values,
    "addresses": addresses,
}

# Arguments each transform requires (the loader checks mapping files against this at start-up).
REQUIRED_ARGS: dict[str, frozenset[str]] = {
    "flag": frozenset({"true", "false"}),
    "typed_values": frozenset({"types", "type_key", "value_key", "default_type"}),
    "addresses": frozenset({"types", "type_key", "fields", "default_type"}),
}
