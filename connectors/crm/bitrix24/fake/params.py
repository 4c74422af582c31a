"""Reading request parameters the way Bitrix24 does (any case, PHP-decoded maps as lists)."""

from __future__ import annotations

from typing import Any


def param(params: dict[str, Any], name: str) -> Any:
    """A top-level parameter, whatever its case (``FILTER``/``filter``, ``entityTypeId``)."""
    if name in params:
        return params[name]
    lowered = name.lower()
    for key, value in params.items():
        if key.lower() == lowered:
            return value
    return None


def start_of(params: dict[str, Any]) -> int:
    """The ``start`` offset (0 when absent or unreadable; negative means keyset mode)."""
    raw = param(params, "start")
    try:
        return int(str(raw).strip()) if raw not in (None, "") else 0
    except ValueError:
        return 0


def int_or_none(value: Any) -> int | None:
    """A positive integer, or None."""
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def values(raw: Any) -> list[Any]:
    """A parameter that may be a list, a PHP-decoded map or a single value, as a list."""
    if isinstance(raw, dict):
        return list(raw.values())
    if isinstance(raw, list):
        return raw
    return [] if raw is None else [raw]


def flag(value: Any, default: bool) -> bool:
    """A boolean parameter: ``1``/``Y``/``true`` (any case) or a JSON boolean."""
    if value is None or value == "":
        return default
    return str(value).strip().lower() in ("1", "y", "true")
