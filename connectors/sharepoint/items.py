"""Reading Graph's ``driveItem`` delta pages into :class:`~syncd.core.documents.DeltaPage`.

Pure JSON handling (orjson), no msgraph models: a delta page of 200 items parses in well under a
millisecond this way, where the SDK's model parse costs seconds of imports and far more per item.
Only the metadata the cache keeps is read; ``createdBy``/``lastModifiedBy`` (people) are ignored.
"""

from __future__ import annotations

from typing import Any

import orjson

from syncd.core.documents import DeltaPage, DocumentItem, ItemKind
from syncd.core.errors import MalformedResponseError

_MAX_NAME = 400  # SharePoint allows 400 characters in a full path


def parse_delta_page(body: bytes) -> DeltaPage:
    """One delta page from its JSON body.

    Raises :class:`MalformedResponseError` for a body that is not a delta page (truncated JSON,
    an HTML error page, neither a next nor a delta link). A single item that cannot be read is
    skipped and counted in ``DeltaPage.skipped``; the rest of the page is kept.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedResponseError("Graph delta page: not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("value"), list):
        raise MalformedResponseError("Graph delta page: no 'value' list")
    next_link = _link(data.get("@odata.nextLink"))
    delta_link = _link(data.get("@odata.deltaLink"))
    if (next_link is None) == (delta_link is None):
        raise MalformedResponseError(
            "Graph delta page: expected exactly one of @odata.nextLink and @odata.deltaLink"
        )
    items = []
    skipped = 0
    for raw in data["value"]:
        item = parse_item(raw)
        if item is None:
            skipped += 1
        else:
            items.append(item)
    return DeltaPage(tuple(items), next_link, delta_link, skipped)


def parse_item(raw: Any) -> DocumentItem | None:
    """One ``driveItem``; None when it lacks what every item has (an ID, a name unless
    deleted, a kind)."""
    if not isinstance(raw, dict):
        return None
    item_id = raw.get("id")
    if not isinstance(item_id, str) or not item_id or len(item_id) > 256:
        return None
    parent = raw.get("parentReference")
    parent_id = parent.get("id") if isinstance(parent, dict) else None
    if not isinstance(parent_id, str) or not parent_id:
        parent_id = None
    kind: ItemKind
    if isinstance(raw.get("root"), dict):
        kind = "root"
    elif isinstance(raw.get("folder"), dict) or isinstance(raw.get("package"), dict):
        kind = "folder"
    elif isinstance(raw.get("file"), dict):
        kind = "file"
    elif raw.get("deleted") is not None:
        kind = "file"  # a deleted item may carry no facet; the kind no longer matters
    else:
        return None
    if raw.get("deleted") is not None:
        return DocumentItem(id=item_id, kind=kind, deleted=True, parent_id=parent_id)
    name = raw.get("name")
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME or "/" in name:
        if kind != "root":
            return None
        name = ""
    file = raw.get("file") if kind == "file" else None
    hashes = file.get("hashes") if isinstance(file, dict) else None
    return DocumentItem(
        id=item_id,
        kind=kind,
        parent_id=None if kind == "root" else parent_id,
        name=name,
        # A folder's size is the sum below it, and Graph does not report a folder again when
        # something below it changes: kept only for files, so no stale figure is shown.
        size=_int(raw.get("size")) if kind == "file" else None,
        mime_type=_text(file.get("mimeType")) if isinstance(file, dict) else None,
        quick_xor_hash=_text(hashes.get("quickXorHash")) if isinstance(hashes, dict) else None,
        etag=_text(raw.get("eTag")),
        ctag=_text(raw.get("cTag")),
        created_at=_text(raw.get("createdDateTime")),
        modified_at=_text(raw.get("lastModifiedDateTime")),
        web_url=_text(raw.get("webUrl")),
    )


def _link(value: Any) -> str | None:
    return value if isinstance(value, str) and value.startswith(("https://", "http://")) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) <= 2048 else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value
