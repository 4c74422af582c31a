"""The Graph API resources the fake serves (``/v1.0/…``, already authorised), and downloads.

- ``sites/{hostname}:{path}`` (a trailing ``:`` or ``:/drives`` too), ``sites/{site-id}``,
  ``…/drives``, ``…/drive``;
- ``drives/{d}``, ``drives/{d}/root``, ``drives/{d}/items/{id}`` (``$select``; files carry
  ``@microsoft.graph.downloadUrl``), ``…/children``, ``…/content`` (302 to the download URL);
- delta: ``drives/{d}/root/delta``, ``root/delta()``, ``items/root/delta[()]``,
  ``items/{root id}/delta[()]``, ``delta(token='…')``; ``token=`` (or ``$deltatoken``/
  ``$skiptoken``), ``$top``; ``$select`` is ignored;
- ``/_download/<token>``: GET/HEAD, ``Range`` (206/416), streamed in 64 KiB chunks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, unquote

from .content import MIME_TYPES, Content
from .delta import MAX_PAGE_SIZE, TokenExpired, TokenInvalid, delta_page
from .downloads import DownloadTokenError, Unsatisfiable, parse_range
from .faults import STATUS_FAULTS
from .library import Item, Library, Site
from .wire import PLAIN_JSON, Reply, RequestIds, dumps, graph_error, json_reply

if TYPE_CHECKING:
    from .server import FakeGraph

_DELTA_CALL: Final = re.compile(r"^delta(?:\((?:token='([^']*)')?\))?$")
DOWNLOAD_URL: Final = "@microsoft.graph.downloadUrl"


def _not_found(ids: RequestIds, message: str = "The resource could not be found.") -> Reply:
    return graph_error(404, "itemNotFound", message, ids)


def _bad_request(ids: RequestIds, message: str, code: str = "invalidRequest") -> Reply:
    return graph_error(400, code, message, ids)


def _select(query: dict[str, list[str]]) -> set[str] | None:
    values = query.get("$select")
    if not values:
        return None
    return {field.strip() for value in values for field in value.split(",") if field.strip()}


class GraphRoutes:
    """Answers authorised Graph calls from the fake's data (under its lock)."""

    def __init__(self, fake: FakeGraph) -> None:
        self.fake = fake

    def handle(
        self,
        verb: str,
        path: str,
        query: dict[str, list[str]],
        ids: RequestIds,
        repeat_item: Callable[[str], bool],
    ) -> Reply:
        """Answer ``verb path`` (``path`` raw, after ``/v1.0/``). ``repeat_item(drive_id)``
        says whether a delta page should repeat an earlier item."""
        if verb not in ("GET", "HEAD"):
            return graph_error(405, "BadRequest", "The HTTP method is not allowed.", ids)
        if path.startswith("sites/"):
            return self._sites(path[len("sites/"):], query, ids)
        if path.startswith("drives/"):
            segments = [unquote(segment) for segment in path[len("drives/"):].split("/")]
            return self._drive(segments, query, ids, repeat_item)
        first = unquote(path.split("/", 1)[0])
        return _bad_request(ids, f"Resource not found for the segment '{first}'.", "BadRequest")

    # --- sites --------------------------------------------------------------------------------

    def _sites(self, raw: str, query: dict[str, list[str]], ids: RequestIds) -> Reply:
        decoded = unquote(raw)
        colon, slash = decoded.find(":"), decoded.find("/")
        with self.fake.lock:
            site: Site | None
            if colon != -1 and (slash == -1 or colon < slash):
                hostname, remainder = decoded[:colon], decoded[colon + 1:]
                site_path, _, sub = remainder.partition(":")
                site = self.fake.directory.site_at(hostname, site_path or "/")
            else:
                site_id, _, tail = decoded.partition("/")
                sub = "/" + tail if tail else ""
                site = self.fake.directory.site(site_id)
            if site is None:
                return _not_found(ids, "Requested site could not be found")
            sub = sub.rstrip("/")
            base = self.fake.graph_url
            if sub == "":
                payload = {"@odata.context": f"{base}/$metadata#sites/$entity", **site.to_json()}
                return json_reply(_filtered(payload, _select(query)), ids)
            libraries = [self.fake.directory.libraries[d] for d in site.drive_ids]
            if sub == "/drives":
                drives = [_filtered(lib.drive_json(), _select(query)) for lib in libraries]
                return json_reply(
                    {"@odata.context": f"{base}/$metadata#drives", "value": drives}, ids
                )
            if sub == "/drive" and libraries:
                return json_reply(
                    {"@odata.context": f"{base}/$metadata#drives/$entity",
                     **libraries[0].drive_json()},
                    ids,
                )
        return _bad_request(ids, f"Resource not found for the segment '{sub}'.", "BadRequest")

    # --- drives and items ---------------------------------------------------------------------

    def _drive(
        self,
        segments: list[str],
        query: dict[str, list[str]],
        ids: RequestIds,
        repeat_item: Callable[[str], bool],
    ) -> Reply:
        drive_id, rest = segments[0], [s for s in segments[1:] if s]
        with self.fake.lock:
            library = self.fake.directory.libraries.get(drive_id)
            if library is None:
                return _not_found(ids, "The drive could not be found.")
            if not rest:
                payload = {"@odata.context": f"{self.fake.graph_url}/$metadata#drives/$entity",
                           **library.drive_json()}
                return json_reply(_filtered(payload, _select(query)), ids)
            if rest[0] == "root":
                target, tail = library.root_id, rest[1:]
            elif rest[0] == "items" and len(rest) >= 2:
                target, tail = rest[1], rest[2:]
            else:
                return _bad_request(ids, f"Resource not found for the segment '{rest[0]}'.")
            if tail and _DELTA_CALL.match(tail[0]) and len(tail) == 1:
                return self._delta(library, target, tail[0], query, ids, repeat_item)
            try:
                item = library.live(target)
            except KeyError:
                return _not_found(ids, "Item not found")
            if not tail:
                return json_reply(self._item_json(library, item, _select(query)), ids)
            if tail == ["children"]:
                return self._children(library, item, query, ids)
            if tail == ["content"]:
                if item.is_folder:
                    return _bad_request(ids, "Cannot download a folder.")
                location = self.fake.download_url(library.id, item.id)
                return Reply(302, b"", PLAIN_JSON, {**ids.headers(), "Location": location})
        return _bad_request(ids, f"Resource not found for the segment '{tail[0]}'.")

    def _item_json(self, library: Library, item: Item, select: set[str] | None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "@odata.context": f"{self.fake.graph_url}/$metadata#drives('{quote(library.id)}')"
            "/items/$entity",
        }
        if not item.is_folder and (select is None or DOWNLOAD_URL in select):
            payload[DOWNLOAD_URL] = self.fake.download_url(library.id, item.id)
        payload.update(_filtered(library.fields(item, full_parent=True), select))
        return payload

    def _children(
        self, library: Library, folder: Item, query: dict[str, list[str]], ids: RequestIds
    ) -> Reply:
        if not folder.is_folder:
            return json_reply({"value": []}, ids)
        select = _select(query)
        children = [library.items[child] for child in (folder.children or {}).values()]
        children.sort(key=lambda child: (not child.is_folder, child.name.casefold()))
        return json_reply(
            {
                "@odata.context": f"{self.fake.graph_url}/$metadata#drives('{quote(library.id)}')"
                f"/items('{folder.id}')/children",
                "value": [_filtered(library.fields(c, full_parent=True), select)
                          for c in children],
            },
            ids,
        )

    # --- delta --------------------------------------------------------------------------------

    def _delta(
        self,
        library: Library,
        target: str,
        call: str,
        query: dict[str, list[str]],
        ids: RequestIds,
        repeat_item: Callable[[str], bool],
    ) -> Reply:
        if target not in ("root", library.root_id):
            return _bad_request(ids, "Delta is only supported on the root of a drive.")
        match = _DELTA_CALL.match(call)
        token = (match.group(1) if match else None) or _first(query, "token", "$deltatoken",
                                                               "$skiptoken")
        top = self.fake.page_size
        if "$top" in query:
            try:
                top = max(1, min(MAX_PAGE_SIZE, int(query["$top"][0])))
            except ValueError:
                return _bad_request(ids, "Invalid value for $top.")
        try:
            page = delta_page(library, token, top, lambda: repeat_item(library.id))
        except TokenExpired:
            code, message = STATUS_FAULTS["resync"][1:]
            return graph_error(410, code, message, ids, inner_code="resyncChangesApplyDifferences")
        except TokenInvalid as exc:
            return _bad_request(ids, str(exc))
        base = self.fake.graph_url
        link_base = f"{base}/drives/{library.id}/root/delta?token="
        if page.next_token is not None:
            link = b'"@odata.nextLink":"' + (link_base + page.next_token).encode() + b'"'
        else:
            assert page.delta_token is not None
            link = b'"@odata.deltaLink":"' + (link_base + page.delta_token).encode() + b'"'
        body = b"".join([
            b'{"@odata.context":', dumps(f"{base}/$metadata#Collection(driveItem)"), b",",
            link, b',"value":[', b",".join(page.items), b"]}",
        ])
        return json_reply(body, ids)

    # --- downloads ----------------------------------------------------------------------------

    def download(
        self, verb: str, token: str, range_header: str | None, ids: RequestIds
    ) -> Reply:
        """Answer ``GET``/``HEAD /_download/<token>``: 401 for an invalid or expired token,
        404 for an item deleted since, else the content (206 for a range, 416 outside it)."""
        try:
            target = self.fake.downloads.check(token)
        except DownloadTokenError:
            body = dumps({"error_description": "Invalid or expired download URL (tempauth)."})
            return Reply(401, body, PLAIN_JSON, ids.headers())
        if verb not in ("GET", "HEAD"):
            return graph_error(405, "BadRequest", "The HTTP method is not allowed.", ids)
        with self.fake.lock:
            library = self.fake.directory.libraries.get(target.drive_id)
            try:
                if library is None:
                    raise KeyError(target.drive_id)
                item = library.live(target.item_id)
            except KeyError:
                return _not_found(ids, "File Not Found.")
            content, etag = item.content, item.etag
            mime = "application/octet-stream" if item.is_folder else _mime(item)
        if content is None:
            return _not_found(ids, "File Not Found.")
        size = content.size
        headers = {**ids.headers(), "Accept-Ranges": "bytes", "ETag": etag,
                   "Content-Disposition": "attachment"}
        try:
            wanted = parse_range(range_header, size)
        except Unsatisfiable:
            return Reply(416, b"", mime, {**headers, "Content-Range": f"bytes */{size}"})
        if wanted is None:
            return Reply(200, b"", mime, headers, stream=_chunks(content, 0, size), length=size)
        first, last = wanted
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        return Reply(206, b"", mime, headers, stream=_chunks(content, first, last + 1),
                     length=last + 1 - first)


def _chunks(content: Content, start: int, end: int) -> Iterator[bytes]:
    return content.iter_bytes(start, end)


def _mime(item: Item) -> str:
    return MIME_TYPES[item.kind]


def _first(query: dict[str, list[str]], *names: str) -> str | None:
    for name in names:
        values = query.get(name)
        if values and values[0]:
            return values[0]
    return None


def _filtered(payload: dict[str, Any], select: set[str] | None) -> dict[str, Any]:
    if select is None:
        return payload
    return {key: value for key, value in payload.items() if key in select or key.startswith("@")}
