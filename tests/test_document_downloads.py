"""Document downloads through the local API (``GET``/``HEAD /v1/documents/{id}/download``): the
real ApiServer on loopback, the real Graph connector against the fake Microsoft Graph (its
pre-authenticated download URLs, ranges and injected faults), a cache seeded through
syncd.state.documents. MockTransport appears only in the narrow tests of how an upstream
status maps to an error.

What must hold besides the bytes: the download URL (a credential) never reaches a log line,
an exception text or an answer; a portal that hangs up frees the upstream connection; a large
download streams in bounded memory.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import jsonschema_rs
import pytest
from werkzeug.test import Client as WsgiClient

from syncd.api.app import ApiError, make_app
from syncd.api.documents import (
    CHUNK_SIZE,
    DocumentDownloads,
    Download,
    LinkProvider,
    content_disposition,
    make_download_client,
    single_range,
)
from syncd.api.server import ApiServer
from syncd.config import load_settings
from syncd.connectors.sharepoint.fake import FakeGraph
from syncd.connectors.sharepoint.graph import GraphLibraries
from syncd.connectors.sharepoint.settings import DocumentLibrary, SharepointSettings
from syncd.core.documents import DocumentItem
from syncd.core.errors import (
    AuthError,
    ConfigError,
    MalformedResponseError,
    RateLimitedError,
    UpstreamNotFoundError,
    UpstreamUnavailableError,
)
from syncd.state import documents as store
from syncd.state.db import ThreadConnections, connect, write_transaction
from tests.conftest import RecordingStop, make_api_client, wait_for
from tests.test_api import DOC, StubHealth, StubVat, check

HOST = "contoso.sharepoint.com"
SITE_PATH = "/sites/Manufacturers"
LIBRARY = "manuals"
PERMISSION = "docs-candela"
DOWNLOAD = "/v1/documents/{id}/download"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NASTY_NAMES = (
    'Report "final"\r\nSet-Cookie: stolen=1.pdf',
    "Инструкция по эксплуатации GentleMax.pdf",
    "🔥 Laser 🔥 safety.pdf",
    "..\\..\\etc/passwd",
    "tab\there\x00nul\x1f\x7fdel\u0085nel.pdf",
    "\u202egnp.exe",  # a right-to-left override that would show "exe.png"
    "Ünïcödé Straße — Übersicht.pdf",
    "  . ",
    "a;b=c; filename=evil.pdf",
    "%22quoted%22.pdf",
)


def _url(path_id: str) -> str:
    return f"/v1/documents/{path_id}/download"


# ------------------------------------------------------------------------------------------
# The fake Graph, the connector and the cache
# ------------------------------------------------------------------------------------------


class RecordingLinks:
    """The Graph connector, with every download URL it handed out remembered (so the tests can
    look for them where they must never be)."""

    def __init__(self, inner: LinkProvider) -> None:
        self.inner = inner
        self.urls: list[str] = []
        self.calls = 0

    def download_url(self, drive_id: str, item_id: str) -> str:
        self.calls += 1
        url = self.inner.download_url(drive_id, item_id)
        self.urls.append(url)
        return url

    def secrets(self) -> list[str]:
        """The URLs and their tokens."""
        return [*self.urls, *(url.rsplit("/", 1)[1] for url in self.urls)]


@dataclass
class Graph:
    fake: FakeGraph
    drive_id: str
    files: dict[str, str]  # label -> item id
    items: list[DocumentItem]  # the library as the cache should hold it
    settings: SharepointSettings
    links: RecordingLinks

    def content(self, label: str) -> bytes:
        return self.fake.content(self.drive_id, self.files[label])


def sharepoint_settings(fake: FakeGraph, **changes: Any) -> SharepointSettings:
    return SharepointSettings(
        tenant_id=fake.tenant_id,
        client_id=fake.client_id,
        graph_url=fake.graph_url,
        login_url=fake.login_url,
        ca_file=fake.ca_file,
        libraries=(
            DocumentLibrary(
                name=LIBRARY,
                site=f"{HOST}:{SITE_PATH}",
                library="Documents",
                folder="/Manuals",
                producers=("Candela",),
                permission=PERMISSION,
            ),
        ),
        **changes,
    )


def library_items(fake: FakeGraph, drive_id: str) -> list[DocumentItem]:
    """The fake's library as one delta would report it (the root first)."""
    snapshot = fake.snapshot(drive_id)
    parents = {entry["parent_id"] for entry in snapshot.values()}
    [root] = parents - set(snapshot)
    items = [DocumentItem(id=root, kind="root", name="root")]
    for item_id, entry in snapshot.items():
        items.append(
            DocumentItem(
                id=item_id,
                kind=entry["kind"],
                parent_id=entry["parent_id"],
                name=entry["name"],
                size=entry["size"],
                mime_type=entry["mime_type"],
                quick_xor_hash=entry["quick_xor_hash"],
                etag=entry["etag"],
                ctag=entry["ctag"],
                created_at=entry["created_at"],
                modified_at=entry["modified_at"],
                web_url=entry["web_url"],
            )
        )
    return items


def build_graph(fake: FakeGraph, *, big_size: int = 64 * 1024 * 1024) -> Graph:
    """A library "Documents" with a folder scope /Manuals: a PDF, a tiny file with known bytes,
    a big video, files whose cache names are nasty, a file SharePoint deletes after the cache
    listed it, a folder, and a file outside the scope."""
    fake.add_site(HOST, SITE_PATH)
    drive_id = fake.add_library(HOST, SITE_PATH, "Documents")
    manuals = fake.add_folder(drive_id, "Manuals")
    candela = fake.add_folder(drive_id, "Candela", manuals)
    other = fake.add_folder(drive_id, "Other")
    files = {
        "manual": fake.add_file(drive_id, "GentleMax manual.pdf", candela, size=300_000),
        "tiny": fake.add_file(drive_id, "tiny.bin", manuals, content=bytes(range(256)) * 4),
        "big": fake.add_file(drive_id, "Service video.mp4", candela, size=big_size),
        "deleted": fake.add_file(drive_id, "Withdrawn.pdf", manuals, size=5_000),
        "outside": fake.add_file(drive_id, "secret.pdf", other, size=1_000),
        "folder": candela,
    }
    for number in range(len(NASTY_NAMES)):
        files[f"nasty{number}"] = fake.add_file(
            drive_id, f"nasty-{number}.pdf", manuals, size=100
        )
    items = library_items(fake, drive_id)
    fake.delete(drive_id, files["deleted"])  # the cache still lists it
    settings = sharepoint_settings(fake, max_attempts=2)
    connector = GraphLibraries(
        settings,
        ("client_secret", fake.client_secret),
        stop=RecordingStop(),  # retry backoffs return at once
        priority="push",
        name="graph-test-downloads",
    )
    return Graph(fake, drive_id, files, items, settings, RecordingLinks(connector))


@pytest.fixture(scope="module")
def graph() -> Iterator[Graph]:
    with FakeGraph() as fake:
        built = build_graph(fake)
        try:
            yield built
        finally:
            close = getattr(built.links.inner, "close", None)
            if callable(close):
                close()


@pytest.fixture(autouse=True)
def _no_leftover_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "graph" in request.fixturenames:
        request.getfixturevalue("graph").fake.clear_faults()


def seed_cache(path: Path, graph: Graph) -> None:
    """The library in the cache as the documents lane stores it (configure, drive, one full
    enumeration); then the nasty names of the nasty-N files."""
    conn = connect(path)
    try:
        store.configure(
            conn,
            [
                store.LibraryConfig(
                    name=LIBRARY,
                    site=f"{HOST}:{SITE_PATH}",
                    library="Documents",
                    folder="/Manuals",
                    permission=PERMISSION,
                    producer_keys=("candela",),
                    producers=("Candela",),
                )
            ],
            {"candela corp.": "candela"},
        )
        store.set_drive(conn, LIBRARY, site_id="site-id", drive_id=graph.drive_id)
        store.finish(conn, LIBRARY, "full", graph.items, "delta-link", now=NOW)
        with write_transaction(conn):
            for number, name in enumerate(NASTY_NAMES):
                conn.execute(
                    "UPDATE documents SET name = ? WHERE id = ?",
                    (name, graph.files[f"nasty{number}"]),
                )
    finally:
        conn.close()


@pytest.fixture
def cache_path(tmp_path: Path, graph: Graph) -> Path:
    path = tmp_path / "cache.sqlite3"
    seed_cache(path, graph)
    return path


class SpyDownloads(DocumentDownloads):
    """DocumentDownloads that keeps every download it opened (to see their bodies closed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opened: list[Download] = []

    def open(self, document_id: str, range_header: str | None, *, head: bool) -> Download:
        download = super().open(document_id, range_header, head=head)
        self.opened.append(download)
        return download


@dataclass
class Running:
    server: ApiServer
    client: httpx.Client
    downloads: SpyDownloads
    graph: Graph
    connections: ThreadConnections
    clients: list[httpx.Client] = field(default_factory=list)

    def get(self, label_or_id: str, **kwargs: Any) -> httpx.Response:
        document_id = self.graph.files.get(label_or_id, label_or_id)
        return self.client.get(_url(document_id), **kwargs)


def start_downloads_api(
    cache: Path,
    graph: Graph,
    *,
    listen: str = "127.0.0.1:0",
    links: Callable[[], LinkProvider] | None = None,
    max_concurrent: int | None = None,
) -> Running:
    connections = ThreadConnections(lambda: connect(cache))
    downloads = SpyDownloads(
        connections.get,
        links or (lambda: graph.links),
        make_download_client(
            connect_timeout=graph.settings.connect_timeout_seconds,
            read_timeout=graph.settings.timeout_seconds,
            ca_file=graph.settings.ca_file,
        ),
        max_concurrent=max_concurrent,
    )
    app = make_app(StubVat(), _NoLocations(), StubHealth(), documents=downloads)
    server = ApiServer(app, listen=listen, threads=4)
    server.start()
    return Running(server, make_api_client(server.address), downloads, graph, connections)


def stop_downloads_api(running: Running) -> None:
    running.client.close()
    for client in running.clients:
        client.close()
    running.server.stop(timeout=5)
    # the connector belongs to the module's fixture: close only the download client
    running.downloads._client.close()
    running.connections.close_all()


@pytest.fixture
def api(cache_path: Path, graph: Graph) -> Iterator[Running]:
    running = start_downloads_api(cache_path, graph)
    yield running
    stop_downloads_api(running)


# ------------------------------------------------------------------------------------------
# Checking a download answer against docs/openapi.yaml
# ------------------------------------------------------------------------------------------


def _header_schema(status: int, name: str) -> dict[str, Any]:
    node: dict[str, Any] = DOC["paths"][DOWNLOAD]["get"]["responses"][str(status)]["headers"][name]
    while "$ref" in node:
        target: Any = DOC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def check_download(response: httpx.Response) -> None:
    """The documented headers of a 200/206 download are there and as documented."""
    assert response.status_code in (200, 206)
    documented = DOC["paths"][DOWNLOAD]["get"]["responses"][str(response.status_code)]["headers"]
    for name in documented:
        header = _header_schema(response.status_code, name)
        if name not in response.headers:
            assert not header.get("required"), f"missing header {name}"
            continue
        value: object = response.headers[name]
        if header["schema"].get("type") == "integer":
            assert str(value).isdigit()
            value = int(str(value))
        validator = jsonschema_rs.Draft202012Validator(header["schema"])
        assert validator.is_valid(value), (name, value)
    assert response.headers["server"] == "syncd"
    assert "set-cookie" not in response.headers


# ------------------------------------------------------------------------------------------
# Whole files, ranges, HEAD
# ------------------------------------------------------------------------------------------


def test_whole_file_with_its_headers_and_bytes(api: Running, graph: Graph) -> None:
    response = api.get("manual")
    assert response.status_code == 200
    check_download(response)
    expected = graph.content("manual")
    assert hashlib.sha256(response.content).hexdigest() == hashlib.sha256(expected).hexdigest()
    headers = response.headers
    assert headers["content-type"] == "application/pdf"
    assert headers["content-length"] == str(len(expected)) == "300000"
    assert headers["accept-ranges"] == "bytes"
    assert headers["etag"].startswith('"{')
    assert headers["cache-control"] == "private, no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-disposition"] == (
        "attachment; filename=\"GentleMax manual.pdf\"; "
        "filename*=UTF-8''GentleMax%20manual.pdf"
    )
    assert "content-range" not in headers
    [download] = api.downloads.opened
    # exhausted: the upstream answer is closed (waitress closes the body after the last write)
    wait_for(lambda: download.body.closed, 10, "the download's body to be closed")


def test_known_bytes_are_relayed_exactly(api: Running, graph: Graph) -> None:
    response = api.get("tiny")
    assert response.status_code == 200
    assert response.content == bytes(range(256)) * 4
    assert response.headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize(
    ("header", "start", "end", "content_range"),
    [
        ("bytes=0-99", 0, 100, "bytes 0-99/300000"),
        ("bytes=100-", 100, 300_000, "bytes 100-299999/300000"),
        ("bytes=-50", 299_950, 300_000, "bytes 299950-299999/300000"),
        ("bytes=299990-400000", 299_990, 300_000, "bytes 299990-299999/300000"),
        ("bytes=0065536-0131071", 65_536, 131_072, "bytes 65536-131071/300000"),
        ("BYTES = 7-7", 7, 8, "bytes 7-7/300000"),
    ],
)
def test_a_single_range_is_206_with_the_right_bytes(
    api: Running, graph: Graph, header: str, start: int, end: int, content_range: str
) -> None:
    response = api.get("manual", headers={"Range": header})
    assert response.status_code == 206
    check_download(response)
    assert response.headers["content-range"] == content_range
    assert response.headers["content-length"] == str(end - start)
    assert response.content == graph.content("manual")[start:end]


# (bytes=300000- belongs here too, but the fake Graph answers it with the whole file)
@pytest.mark.parametrize("header", ["bytes=300000-300010", "bytes=500000-600000", "bytes=-0"])
def test_an_unsatisfiable_range_is_416_with_the_size(api: Running, header: str) -> None:
    response = api.get("manual", headers={"Range": header})
    assert response.status_code == 416
    assert check(response, DOWNLOAD)["error"]["code"] == "range_not_satisfiable"
    assert response.headers["content-range"] == "bytes */300000"


@pytest.mark.parametrize(
    "header",
    [
        "bytes=0-1,5-6",  # several ranges
        "bytes=0-1, bytes=5-6",  # two headers, as waitress joins them
        "items=0-5",  # another unit
        "bytes=5-3",  # last before first
        "bytes=abc",
        "bytes=",
        "bytes=-",
        "bytes=1-2-3",
        "bytes=99999999999999999999-",  # more digits than any file has bytes
        "bytes=0-\r\nX: y",
    ],
)
def test_a_range_that_is_not_one_valid_range_is_ignored(
    api: Running, graph: Graph, header: str
) -> None:
    if "\r" in header:
        # httpx refuses to send it; the API's parser refuses it the same way
        assert single_range(header) is None
        return
    response = api.get("tiny", headers={"Range": header})
    assert response.status_code == 200
    assert response.content == graph.content("tiny")
    assert "content-range" not in response.headers


def test_head_answers_the_headers_without_the_body(api: Running, graph: Graph) -> None:
    whole = api.client.head(_url(graph.files["manual"]))
    assert whole.status_code == 200 and whole.content == b""
    assert whole.headers["content-length"] == "300000"
    assert whole.headers["content-type"] == "application/pdf"
    assert whole.headers["content-disposition"].startswith("attachment; ")
    part = api.client.head(_url(graph.files["manual"]), headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == b""
    assert part.headers["content-range"] == "bytes 10-19/300000"
    assert part.headers["content-length"] == "10"
    missing = api.client.head(_url(graph.files["deleted"]))
    assert missing.status_code == 404 and missing.content == b""
    assert len(api.downloads.opened) == 2
    assert all(download.body.closed for download in api.downloads.opened)  # at once


# ------------------------------------------------------------------------------------------
# Unknown documents
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "document_id",
    ["01NOSUCHITEM0000000000000000000000", "b!notanitem", "ABC!123", "x"],
)
def test_an_id_the_cache_does_not_list_is_404(api: Running, document_id: str) -> None:
    calls = api.graph.links.calls
    response = api.get(document_id)
    assert response.status_code == 404
    assert check(response, DOWNLOAD)["error"]["code"] == "unknown_document"
    assert api.graph.links.calls == calls  # Graph was not asked


@pytest.mark.parametrize("label", ["folder", "outside"])
def test_folders_and_files_outside_the_scope_are_404(api: Running, label: str) -> None:
    calls = api.graph.links.calls
    response = api.get(label)
    assert response.status_code == 404
    assert check(response, DOWNLOAD)["error"]["code"] == "unknown_document"
    assert api.graph.links.calls == calls  # Graph was not asked


@pytest.mark.parametrize(
    "path_id",
    [
        "a" * 257,
        "01ABC.pdf",
        "01ABC%2F..%2Fsecret",
        "a/b",
        "..",
        "%00",
        "01ABC%20",
        "%C3%A9",
        "it's",
    ],
)
def test_an_id_of_the_wrong_shape_is_404_before_the_cache_is_asked(
    graph: Graph, path_id: str
) -> None:
    asked: list[str] = []

    def connection() -> sqlite3.Connection:
        asked.append("cache")
        raise AssertionError("the cache must not be asked")

    downloads = DocumentDownloads(
        connection, lambda: graph.links, httpx.Client(transport=_refuse_all())
    )
    app = make_app(StubVat(), _NoLocations(), StubHealth(), documents=downloads)
    response = WsgiClient(app).get(_url(path_id), headers={"Host": "localhost"})
    assert response.status_code == 404
    assert response.json is not None and response.json["error"]["code"] == "unknown_document"
    assert asked == []
    with pytest.raises(ApiError) as raised:
        downloads.open(unquote(path_id), None, head=False)
    assert raised.value.code == "unknown_document" and asked == []


def test_a_document_graph_deleted_since_the_last_delta_is_404(api: Running) -> None:
    response = api.get("deleted")
    assert response.status_code == 404
    assert check(response, DOWNLOAD)["error"]["code"] == "unknown_document"


def test_a_document_deleted_between_link_and_download_is_404(api: Running) -> None:
    api.graph.fake.add_fault("not_found", path="/_download/*")
    response = api.get("manual")
    assert response.status_code == 404
    assert check(response, DOWNLOAD)["error"]["code"] == "unknown_document"


def test_unknown_query_parameters_are_refused(api: Running, graph: Graph) -> None:
    response = api.client.get(_url(graph.files["manual"]), params={"inline": "1"})
    assert response.status_code == 400
    assert check(response, DOWNLOAD)["error"]["code"] == "invalid_parameter"


def test_without_documents_the_endpoint_says_not_configured() -> None:
    app = make_app(StubVat(), _NoLocations(), StubHealth())
    response = WsgiClient(app).get(_url("01ABC"), headers={"Host": "localhost"})
    assert response.status_code == 404
    assert response.json is not None
    assert response.json["error"]["code"] == "documents_not_configured"


def test_a_connector_that_cannot_be_built_for_configuration_says_not_configured(
    cache_path: Path, graph: Graph, caplog: pytest.LogCaptureFixture
) -> None:
    built: list[int] = []

    def factory() -> LinkProvider:
        built.append(1)
        raise ConfigError("sharepoint: the SharePoint extra is not installed (msgraph)")

    running = start_downloads_api(cache_path, graph, links=factory)
    try:
        for _ in range(3):
            response = running.get("manual")
            assert response.status_code == 404
            assert check(response, DOWNLOAD)["error"]["code"] == "documents_not_configured"
    finally:
        stop_downloads_api(running)
    assert built == [1]  # tried once, said once
    assert sum("downloads are off" in r.getMessage() for r in caplog.records) == 1


def test_the_connector_is_built_on_the_first_download_only(
    cache_path: Path, graph: Graph
) -> None:
    built: list[int] = []

    def factory() -> LinkProvider:
        built.append(1)
        return graph.links

    running = start_downloads_api(cache_path, graph, links=factory)
    try:
        assert running.client.get("/healthz").status_code == 200
        assert running.get("01NOSUCHITEM0000000000000000000000").status_code == 404
        assert built == []  # nothing to download yet: Graph's connector is not even built
        assert running.get("tiny").status_code == 200
        assert running.get("manual").status_code == 200
        assert built == [1]
    finally:
        stop_downloads_api(running)


# ------------------------------------------------------------------------------------------
# Upstream failures through the real connector and the fake
# ------------------------------------------------------------------------------------------


def test_graph_throttling_is_503_with_its_retry_after(api: Running) -> None:
    api.graph.fake.add_fault("throttle", times=None, retry_after=120, path="/v1.0/drives/*")
    response = api.get("manual")
    assert response.status_code == 503
    assert check(response, DOWNLOAD)["error"]["code"] == "sharepoint_unavailable"
    assert response.headers["retry-after"] == "120"


def test_throttled_download_is_503_with_its_retry_after(api: Running) -> None:
    api.graph.fake.add_fault("throttle", retry_after=17, path="/_download/*")
    response = api.get("manual")
    assert response.status_code == 503
    assert check(response, DOWNLOAD)["error"]["code"] == "sharepoint_unavailable"
    assert response.headers["retry-after"] == "17"
    assert api.get("manual").status_code == 200  # the fault fired once


@pytest.mark.parametrize("kind", ["unavailable", "gateway_timeout", "html", "drop"])
def test_sharepoint_down_during_the_download_is_503(api: Running, kind: str) -> None:
    api.graph.fake.add_fault(kind, path="/_download/*")
    response = api.get("manual")
    assert response.status_code == 503
    assert check(response, DOWNLOAD)["error"]["code"] == "sharepoint_unavailable"
    assert int(response.headers["retry-after"]) >= 1


@pytest.mark.parametrize("path", ["/v1.0/drives/*", "/_download/*"])
def test_access_denied_is_502_refused(api: Running, path: str) -> None:
    api.graph.fake.add_fault("forbidden", times=None, path=path)
    response = api.get("manual")
    assert response.status_code == 502
    assert check(response, DOWNLOAD)["error"]["code"] == "sharepoint_refused"


def test_an_expired_download_url_is_502_refused(api: Running) -> None:
    # A URL is fetched for every download, so an expired one can only be SharePoint's fault.
    api.graph.fake.downloads.lifetime = -10
    try:
        response = api.get("manual")
    finally:
        api.graph.fake.downloads.lifetime = 3600
    assert response.status_code == 502
    assert check(response, DOWNLOAD)["error"]["code"] == "sharepoint_refused"


def test_a_download_broken_off_midway_ends_short_and_closes(api: Running) -> None:
    api.graph.fake.add_fault("truncate", path="/_download/*")
    with pytest.raises(httpx.RemoteProtocolError):
        api.get("manual")
    wait_for(lambda: bool(api.downloads.opened) and api.downloads.opened[-1].body.closed, 10,
             "the broken download to be closed")
    assert api.get("manual").status_code == 200  # and the next one works


# ------------------------------------------------------------------------------------------
# File names
# ------------------------------------------------------------------------------------------

_DISPOSITION = re.compile(
    r"attachment; filename=\"(?P<ascii>[\x20-\x7e]*)\"; "
    r"filename\*=UTF-8''(?P<encoded>[A-Za-z0-9%._~-]+)"
)


@pytest.mark.parametrize("number", range(len(NASTY_NAMES)))
def test_nasty_names_give_a_safe_content_disposition(api: Running, number: int) -> None:
    response = api.get(f"nasty{number}")
    assert response.status_code == 200
    check_download(response)
    raw_headers = [name.lower() for name, _ in response.headers.raw]
    assert b"set-cookie" not in raw_headers and "set-cookie" not in response.headers
    match = _DISPOSITION.fullmatch(response.headers["content-disposition"])
    assert match, response.headers["content-disposition"]
    fallback, name = match["ascii"], unquote(match["encoded"])
    for text in (fallback, name):
        assert not any(char in text for char in '"\\/\r\n\x00')
        assert not any(ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 for char in text)
        assert "\u202e" not in text and "\u0085" not in text
        assert not text.startswith((".", " ")) and text
    assert fallback.isascii() and "%" not in fallback and ";" not in fallback


def test_content_disposition_keeps_what_is_readable() -> None:
    assert content_disposition("Инструкция.pdf") == (
        "attachment; filename=\"document.pdf\"; "
        "filename*=UTF-8''%D0%98%D0%BD%D1%81%D1%82%D1%80%D1%83%D0%BA%D1%86%D0%B8%D1%8F.pdf"
    )
    assert content_disposition("Café Straße.pdf").startswith(
        'attachment; filename="Cafe Stra_e.pdf"; '
    )
    assert content_disposition("🔥 hot.pdf").startswith('attachment; filename="hot.pdf"; ')
    assert content_disposition('a"\r\nSet-Cookie: x') == (
        "attachment; filename=\"aSet-Cookie: x\"; filename*=UTF-8''aSet-Cookie%3A%20x"
    )
    assert content_disposition("../../etc/passwd").startswith('attachment; filename="etcpasswd"')
    assert content_disposition("") == (
        "attachment; filename=\"document\"; filename*=UTF-8''document"
    )
    assert content_disposition("...") == content_disposition("")
    assert content_disposition("x" * 1000).count("x") == 2 * 255


# ------------------------------------------------------------------------------------------
# Streaming: disconnects, memory, concurrency
# ------------------------------------------------------------------------------------------


def test_a_client_that_hangs_up_mid_download_frees_the_upstream(
    api: Running, graph: Graph
) -> None:
    size = 64 * 1024 * 1024
    with api.client.stream("GET", _url(graph.files["big"])) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(size)
        first = next(response.iter_raw(CHUNK_SIZE))
        expected = graph.fake.iter_content(graph.drive_id, graph.files["big"], 0, len(first))
        assert first == b"".join(expected)
    # closing a response that was not read to the end closes the connection
    [download] = api.downloads.opened
    wait_for(lambda: download.body.closed, 15, "the download's body to be closed")
    assert download.body.bytes_sent < size
    upstream = download.body._response
    assert upstream is not None and upstream.is_closed


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_a_large_download_streams_in_bounded_memory(cache_path: Path) -> None:
    """1 GiB through the API (the fake generates it on the fly) while a sampler records the
    process's RSS; every byte is counted and hashed on the way."""
    size = 1 << 30
    with FakeGraph() as fake:
        big = build_graph(fake, big_size=size)
        seed_cache(cache_path, big)
        running = start_downloads_api(cache_path, big)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.01):
                peak[0] = max(peak[0], _rss())

        sampler = threading.Thread(target=sample, daemon=True)
        try:
            gc.collect()
            received = 0
            digest = hashlib.sha256()
            with running.client.stream("GET", _url(big.files["big"])) as response:
                assert response.status_code == 200
                chunks = response.iter_raw(CHUNK_SIZE)
                for chunk in chunks:  # warm up: buffers, connections, the first pages
                    received += len(chunk)
                    digest.update(chunk)
                    if received >= 32 * 1024 * 1024:
                        break
                baseline = _rss()
                sampler.start()
                for chunk in chunks:
                    received += len(chunk)
                    digest.update(chunk)
            done.set()
            sampler.join(5)
            expected = hashlib.sha256()
            for chunk in fake.iter_content(big.drive_id, big.files["big"]):
                expected.update(chunk)
        finally:
            done.set()
            stop_downloads_api(running)
            getattr(big.links.inner, "close", lambda: None)()
    assert received == size
    assert digest.hexdigest() == expected.hexdigest()
    growth = peak[0] - baseline
    assert growth < 8 * 1024 * 1024, f"RSS grew by {growth / 1e6:.1f} MB during the download"


def test_downloads_past_the_limit_are_503_busy(cache_path: Path, graph: Graph) -> None:
    running = start_downloads_api(cache_path, graph, max_concurrent=1)
    try:
        with running.client.stream("GET", _url(graph.files["big"])) as first:
            assert first.status_code == 200
            busy = running.get("tiny")
            assert busy.status_code == 503
            assert check(busy, DOWNLOAD)["error"]["code"] == "downloads_busy"
            assert busy.headers["retry-after"] == "5"
        # the slot comes back once the first download is closed
        wait_for(lambda: running.downloads.opened[0].body.closed, 15, "the first download")
        assert running.get("tiny").status_code == 200
    finally:
        stop_downloads_api(running)


# ------------------------------------------------------------------------------------------
# The download URL stays secret
# ------------------------------------------------------------------------------------------


def test_no_download_url_in_any_log_record_or_answer(
    api: Running, graph: Graph, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("", "httpx", "httpcore", "syncd", "waitress"):
        caplog.set_level(logging.DEBUG, logger=name or None)
    answers: list[httpx.Response] = [
        api.get("manual"),
        api.get("manual", headers={"Range": "bytes=0-9"}),
        api.get("manual", headers={"Range": "bytes=900000-"}),
        api.get("deleted"),
    ]
    for kind in ("forbidden", "throttle", "html", "not_found", "drop"):
        graph.fake.add_fault(kind, path="/_download/*")
        answers.append(api.get("manual"))
    graph.fake.add_fault("truncate", path="/_download/*")
    with pytest.raises(httpx.RemoteProtocolError):
        api.get("tiny")
    graph.fake.add_fault("unavailable", times=None, path="/v1.0/drives/*")
    answers.append(api.get("manual"))
    graph.fake.clear_faults()
    wait_for(lambda: all(d.body.closed for d in api.downloads.opened), 10, "every download")
    secrets = graph.links.secrets()
    assert len(graph.links.urls) >= 9
    records = caplog.records
    assert any("withheld" in record.getMessage() for record in records if record.name == "httpx")
    for record in records:
        text = " ".join(
            [record.getMessage(), str(record.args), str(record.exc_text), str(record.exc_info)]
        )
        assert not any(secret in text for secret in secrets), record.getMessage()
    for answer in answers:
        shown = answer.content.decode("latin-1") + str(answer.headers)
        assert not any(secret in shown for secret in secrets)
        assert "/_download/" not in shown


# ------------------------------------------------------------------------------------------
# Narrow units: status -> error, link errors -> error, Range syntax
# ------------------------------------------------------------------------------------------


class _NoLocations:
    def locations(self, country: str, kind: str | None) -> list[dict[str, Any]]:
        return []

    def as_of(self) -> str | None:
        return None


def _refuse_all() -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request was expected")

    return httpx.MockTransport(handler)


class StaticLinks:
    """A link provider that answers one URL, or raises ``error``."""

    def __init__(self, url: str = "https://tenant.sharepoint.invalid/dl?tempauth=SECRET") -> None:
        self.url = url
        self.error: Exception | None = None

    def download_url(self, drive_id: str, item_id: str) -> str:
        if self.error is not None:
            raise self.error
        return self.url


def _mock_downloads(
    cache_path: Path, handler: Callable[[httpx.Request], httpx.Response], links: StaticLinks
) -> tuple[DocumentDownloads, sqlite3.Connection]:
    conn = connect(cache_path)
    client = httpx.Client(transport=httpx.MockTransport(handler), follow_redirects=False)
    return DocumentDownloads(lambda: conn, lambda: links, client), conn


@pytest.mark.parametrize(
    ("status", "headers", "code", "http_status", "retry_after"),
    [
        (401, {}, "sharepoint_refused", 502, None),
        (403, {}, "sharepoint_refused", 502, None),
        (404, {}, "unknown_document", 404, None),
        (410, {}, "unknown_document", 404, None),
        (429, {"Retry-After": "42"}, "sharepoint_unavailable", 503, "42"),
        (429, {}, "sharepoint_unavailable", 503, "60"),
        (503, {"Retry-After": "0.5"}, "sharepoint_unavailable", 503, "60"),
        (503, {"Retry-After": "3"}, "sharepoint_unavailable", 503, "3"),
        (500, {}, "sharepoint_unavailable", 503, "60"),
        (502, {}, "sharepoint_unavailable", 503, "60"),
        (504, {}, "sharepoint_unavailable", 503, "60"),
        (400, {}, "sharepoint_bad_response", 502, None),
        (204, {}, "sharepoint_bad_response", 502, None),
        (206, {}, "sharepoint_bad_response", 502, None),  # a part nobody asked for
        (302, {"Location": "http://tenant.sharepoint.invalid/x"}, "sharepoint_bad_response", 502,
         None),
        (302, {}, "sharepoint_bad_response", 502, None),
        (416, {"Content-Range": "nonsense"}, "range_not_satisfiable", 416, None),
    ],
)
def test_upstream_status_maps_to_a_stable_error(
    cache_path: Path,
    graph: Graph,
    status: int,
    headers: dict[str, str],
    code: str,
    http_status: int,
    retry_after: str | None,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers, content=b"{}")

    downloads, conn = _mock_downloads(cache_path, handler, StaticLinks())
    try:
        with pytest.raises(ApiError) as raised:
            downloads.open(graph.files["manual"], None, head=False)
    finally:
        conn.close()
    error = raised.value
    assert (error.status, error.code) == (http_status, code)
    assert dict(error.headers).get("Retry-After") == retry_after
    if code == "range_not_satisfiable":
        assert dict(error.headers)["Content-Range"] == "bytes */300000"
    assert "SECRET" not in str(error) and "SECRET" not in error.message


def test_redirects_are_followed_to_https_twice_at_most(cache_path: Path, graph: Graph) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        hop = len(seen)
        if hop <= 3:
            return httpx.Response(302, headers={"Location": f"https://cdn.invalid/{hop}"})
        return httpx.Response(200, stream=httpx.ByteStream(b"x"))

    downloads, conn = _mock_downloads(cache_path, handler, StaticLinks())
    try:
        with pytest.raises(ApiError) as raised:
            downloads.open(graph.files["manual"], None, head=False)
        assert raised.value.code == "sharepoint_bad_response" and len(seen) == 3
        seen.clear()
        seen.append("skip one hop")
        download = downloads.open(graph.files["manual"], "bytes=0-0", head=False)
        assert download.status == 200 and b"".join(download.body) == b"x"
        assert seen[1:] == ["https://tenant.sharepoint.invalid/dl?tempauth=SECRET",
                            "https://cdn.invalid/2", "https://cdn.invalid/3"]
    finally:
        conn.close()


def test_the_range_and_no_compression_are_asked_for(cache_path: Path, graph: Graph) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(
            206,
            headers={
                "Content-Range": "bytes 5-9/300000",
                "Content-Type": "application/pdf",
                "ETag": '"v1"',
                "Last-Modified": "Sun, 22 Nov 2026 12:00:00 GMT",
                "Set-Cookie": "FedAuth=abc",
                "Content-Length": "5",
            },
            stream=httpx.ByteStream(b"abcde"),
        )

    downloads, conn = _mock_downloads(cache_path, handler, StaticLinks())
    try:
        download = downloads.open(graph.files["manual"], " bytes = 5-9 ", head=False)
        assert b"".join(download.body) == b"abcde"
    finally:
        conn.close()
    [request] = sent
    assert request.headers["range"] == "bytes=5-9"
    assert request.headers["accept-encoding"] == "identity"
    headers = dict(download.headers)
    assert download.status == 206
    assert headers["Content-Range"] == "bytes 5-9/300000"
    assert headers["ETag"] == '"v1"'
    assert headers["Last-Modified"] == "Sun, 22 Nov 2026 12:00:00 GMT"
    assert "Set-Cookie" not in headers and "set-cookie" not in {k.lower() for k in headers}


def test_the_cached_type_stands_in_for_a_missing_or_odd_one(
    cache_path: Path, graph: Graph
) -> None:
    answers = iter([None, "not a type", "text/plain; charset=utf-8"])

    def handler(request: httpx.Request) -> httpx.Response:
        content_type = next(answers)
        headers = {"Content-Type": content_type} if content_type else {}
        return httpx.Response(200, headers=headers, stream=httpx.ByteStream(b"%PDF"))

    downloads, conn = _mock_downloads(cache_path, handler, StaticLinks())
    try:
        types = [
            dict(downloads.open(graph.files["manual"], None, head=True).headers)["Content-Type"]
            for _ in range(3)
        ]
    finally:
        conn.close()
    assert types == ["application/pdf", "application/pdf", "text/plain; charset=utf-8"]


@pytest.mark.parametrize(
    ("error", "code", "status", "retry_after"),
    [
        (UpstreamNotFoundError("document: not found (404)"), "unknown_document", 404, None),
        (AuthError("document: access denied (403)"), "sharepoint_refused", 502, None),
        (RateLimitedError("throttled", retry_after=30.2), "sharepoint_unavailable", 503, "31"),
        (UpstreamUnavailableError("down"), "sharepoint_unavailable", 503, "60"),
        (MalformedResponseError("no URL"), "sharepoint_bad_response", 502, None),
    ],
)
def test_link_errors_map_to_stable_errors(
    cache_path: Path,
    graph: Graph,
    error: Exception,
    code: str,
    status: int,
    retry_after: str | None,
) -> None:
    links = StaticLinks()
    links.error = error
    downloads, conn = _mock_downloads(
        cache_path, lambda request: httpx.Response(200), links
    )
    try:
        with pytest.raises(ApiError) as raised:
            downloads.open(graph.files["manual"], None, head=False)
    finally:
        conn.close()
    assert (raised.value.status, raised.value.code) == (status, code)
    assert dict(raised.value.headers).get("Retry-After") == retry_after


def test_network_failures_are_503_and_free_the_slot(cache_path: Path, graph: Graph) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    conn = connect(cache_path)
    client = httpx.Client(transport=httpx.MockTransport(handler))
    downloads = DocumentDownloads(
        lambda: conn, lambda: StaticLinks(), client, max_concurrent=1
    )
    try:
        for _ in range(3):  # the one slot is released after each failure
            with pytest.raises(ApiError) as raised:
                downloads.open(graph.files["manual"], None, head=False)
            assert raised.value.code == "sharepoint_unavailable"
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("header", "sent"),
    [
        (None, None),
        ("bytes=0-99", "bytes=0-99"),
        ("bytes=100-", "bytes=100-"),
        ("bytes=-50", "bytes=-50"),
        ("Bytes=007-008", "bytes=7-8"),
        (" bytes = 1 - 2 ", "bytes=1-2"),
        ("bytes=5-5", "bytes=5-5"),
        ("bytes=-0", "bytes=-0"),
        ("bytes=5-4", None),
        ("bytes=0-1,2-3", None),
        ("bytes=0-1,", None),
        ("items=0-1", None),
        ("bytes 0-1", None),
        ("bytes=-", None),
        ("bytes=1", None),
        ("bytes=١-٢", None),  # Arabic-Indic digits are digits to Python, not to HTTP
        ("bytes=" + "9" * 19 + "-", None),
    ],
)
def test_single_range(header: str | None, sent: str | None) -> None:
    assert single_range(header) == sent


# ------------------------------------------------------------------------------------------
# Construction as the daemon does it
# ------------------------------------------------------------------------------------------


def test_from_config_builds_the_graph_connector_on_the_first_download(
    cache_path: Path, graph: Graph, tmp_path: Path
) -> None:
    secret = tmp_path / "sharepoint_client_secret"
    secret.write_text(graph.fake.client_secret)
    options = graph.settings.model_dump(mode="json")
    options.update(client_secret_file=str(secret), requests_per_second=0)
    settings = load_settings(None, state={"directory": tmp_path / "state"}, sharepoint=options)
    connections = ThreadConnections(lambda: connect(cache_path))
    downloads = DocumentDownloads.from_config(settings, connections.get, stop=RecordingStop())
    try:
        assert downloads._links is None  # nothing built before a download
        download = downloads.open(graph.files["tiny"], "bytes=0-9", head=False)
        assert download.status == 206 and b"".join(download.body) == bytes(range(10))
        assert download.body.closed
        graph.fake.add_fault("throttle", retry_after=5, path="/v1.0/drives/*")
        with pytest.raises(ApiError) as raised:  # one attempt: answered at once, not retried
            downloads.open(graph.files["tiny"], None, head=False)
        assert raised.value.code == "sharepoint_unavailable"
        assert dict(raised.value.headers)["Retry-After"] == "5"
    finally:
        downloads.close()
        connections.close_all()
    with pytest.raises(ConfigError):
        DocumentDownloads.from_config(
            load_settings(None, state={"directory": tmp_path / "state"}), connections.get
        )


def test_the_api_does_not_import_msgraph_until_a_download() -> None:
    probe = (
        "import sys\n"
        "import syncd.api.app, syncd.api.documents, syncd.api.server\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('msgraph', 'azure', "
        "'kiota_abstractions') or m == 'syncd.connectors.sharepoint.graph')\n"
        "print(heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
