"""Bitrix24's PHP-style query encoding, used inside ``batch`` commands.

Bitrix24 parses parameters the way PHP does: nested keys use brackets
(``filter[>ID]=5&select[0]=ID``). ``batch`` takes each command as ``method?query`` with the query in
this form, so both the adapter (encoding) and the fake (decoding) need it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote


def php_query_encode(params: dict[str, Any]) -> str:
    """Encode nested dicts/lists as a PHP-style query string (like ``http_build_query``)."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        _flatten(str(key), value, pairs)
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}[{key}]", item, out)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _flatten(f"{prefix}[{index}]", item, out)
    elif value is None:
        out.append((prefix, ""))
    elif isinstance(value, bool):
        out.append((prefix, "Y" if value else "N"))
    else:
        out.append((prefix, str(value)))


def php_query_decode(query: str) -> dict[str, Any]:
    """Decode a PHP-style query string into nested dicts.

    Keys that are all consecutive integers from 0 become lists, as PHP arrays do when
    serialised to JSON.
    """
    root: dict[str, Any] = {}
    for raw_key, value in parse_qsl(query, keep_blank_values=True):
        parts = _split_key(raw_key)
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        last = parts[-1]
        if last == "":
            last = str(sum(1 for k in node if k.isdigit()))
        node[last] = value
    return _listify(root)  # type: ignore[no-any-return]


def _split_key(raw_key: str) -> list[str]:
    head, sep, rest = raw_key.partition("[")
    parts = [head]
    if sep:
        parts.extend(segment for segment in rest.rstrip("]").split("]["))
    return parts


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _listify(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        indices = sorted(int(key) for key in converted)
        if indices == list(range(len(indices))):
            return [converted[str(i)] for i in indices]
    return converted
