"""The portal's side of the documents, run with the real PHP client (docs/portal-contract.md,
section 13): example 13.1 lists a device's documents from the cache (producers matched through
normalisation and aliases, filtered by the user's permissions), and 13.2's stream_document(),
served by ``php -S``, checks the permission in the cache and then relays the local API's
download (a real ApiServer on a unix socket, the Graph connector against the fake Graph) to an
HTTP client standing in for the browser."""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from syncd.api.app import make_app
from syncd.api.documents import make_download_client
from syncd.api.server import ApiServer
from syncd.connectors.sharepoint.fake import FakeGraph
from syncd.core.documents import DocumentItem
from syncd.state import documents as store
from syncd.state.db import ThreadConnections, connect, write_transaction
from tests.conftest import wait_for
from tests.test_api import StubHealth, StubVat
from tests.test_document_downloads import (
    LIBRARY,
    NOW,
    PERMISSION,
    Graph,
    SpyDownloads,
    build_graph,
    seed_cache,
)
from tests.test_portal_contract import EXAMPLES, PHP_DIR, _php_or_skip, run_php

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

OTHER = "lumenis"
OTHER_PERMISSION = "docs-lumenis"
ROUTER = PHP_DIR / "document_download.php"
LISTING = PHP_DIR / "device_documents.php"


@pytest.fixture(scope="module")
def php() -> str:
    php = _php_or_skip()
    modules = subprocess.run([php, "-m"], capture_output=True, text=True, timeout=30).stdout
    if "curl" not in modules.lower().split():
        pytest.skip("PHP's curl is not installed (.ci/run installs php-curl)")
    return php


@pytest.fixture(scope="module")
def graph() -> Iterator[Graph]:
    with FakeGraph() as fake:
        built = build_graph(fake)
        try:
            yield built
        finally:
            getattr(built.links.inner, "close", lambda: None)()


# ------------------------------------------------------------------------------------------
# 13.1: a device's documents
# ------------------------------------------------------------------------------------------

DEVICES = {
    # crm_id: producer as people type it in the CRM
    "101": "  CANDELA ",
    "102": "Candela Corp.",
    "103": "candela\t CORP.",
    "104": "Candela",
    "201": "Lumenis\u00a0",
    "301": "Cutera",
    "302": None,
    "303": "Candéla",  # an accent is not folded: no alias, no documents
}


def seed_devices_and_a_second_library(path: Path, graph: Graph) -> None:
    """Devices with messy producers, and a second library (Lumenis) next to the fake's
    Candela library, with its own permission."""
    conn = connect(path)
    try:
        libraries = [
            store.LibraryConfig(
                name=LIBRARY,
                site="contoso.sharepoint.com:/sites/Manufacturers",
                library="Documents",
                folder="/Manuals",
                permission=PERMISSION,
                producer_keys=("candela",),
                producers=("Candela",),
            ),
            store.LibraryConfig(
                name=OTHER,
                site="contoso.sharepoint.com:/sites/Lumenis",
                library="Documents",
                folder="",
                permission=OTHER_PERMISSION,
                producer_keys=("lumenis",),
                producers=("Lumenis",),
            ),
        ]
        store.configure(conn, libraries, {"candela corp.": "candela"})
        store.set_drive(conn, OTHER, site_id="site-2", drive_id="drive-2")
        store.finish(
            conn,
            OTHER,
            "full",
            [
                DocumentItem(id="L0", kind="root", name="root"),
                DocumentItem(id="L1", kind="folder", parent_id="L0", name="M22"),
                DocumentItem(id="L2", kind="file", parent_id="L1", name="M22 manual.pdf",
                             size=10, mime_type="application/pdf"),
                DocumentItem(id="L3", kind="file", parent_id="L0", name="Brochure.pdf",
                             size=10, mime_type="application/pdf"),
            ],
            "delta-2",
            now=NOW,
        )
        with write_transaction(conn):
            conn.executemany(
                "INSERT INTO devices (crm_id, producer, content_hash, synced_at) "
                "VALUES (?, ?, 'x', '2026-11-22T12:00:00Z')",
                list(DEVICES.items()),
            )
    finally:
        conn.close()


def candela_files(path: Path) -> list[list[str]]:
    """The Candela library's files in scope as 13.1 should list them (sorted in Python)."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT id, library, folder_path, name FROM documents "
            "WHERE library = ? AND kind = 'file' AND in_scope = 1",
            (LIBRARY,),
        ).fetchall()
    finally:
        conn.close()
    ordered = sorted(rows, key=lambda row: (row[2], row[3], row[0]))
    return [[item_id, library, folder] for item_id, library, folder, _ in ordered]


def test_php_lists_a_devices_documents_for_the_users_permissions(
    php: str, graph: Graph, tmp_path: Path
) -> None:
    path = tmp_path / "cache.sqlite3"
    seed_cache(path, graph)
    seed_devices_and_a_second_library(path, graph)
    candela = candela_files(path)
    in_scope = {graph.files[label] for label in graph.files if label not in ("outside", "folder")}
    assert {row[0] for row in candela} == in_scope  # the deleted one is still listed: as cached
    both = [PERMISSION, OTHER_PERMISSION]
    queries = [
        ["101", [PERMISSION]],
        ["102", [PERMISSION]],
        ["103", both],
        ["104", [OTHER_PERMISSION]],  # the wrong permission: nothing
        ["201", both],
        ["201", [PERMISSION]],
        ["301", both],
        ["302", both],
        ["303", both],
        ["999", both],
        ["101", []],
    ]
    status, lines = run_php(
        php, str(LISTING), str(EXAMPLES), stdin=json.dumps({"path": str(path), "queries": queries})
    )
    assert status == 0 and len(lines) == 1
    answers: Any = lines[0]  # the harness prints a JSON list
    lumenis = [["L3", OTHER, "/"], ["L2", OTHER, "/M22"]]
    assert answers == [candela, candela, candela, [], lumenis, [], [], [], [], [], []]


# ------------------------------------------------------------------------------------------
# 13.2: stream_document() behind php -S
# ------------------------------------------------------------------------------------------


class CountingApp:
    """The API's WSGI app, counting the requests it is asked."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app
        self.requests = 0
        self._lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        with self._lock:
            self.requests += 1
        return self.app(environ, start_response)


@dataclass
class Portal:
    base: str
    api: CountingApp
    downloads: SpyDownloads
    graph: Graph
    process: subprocess.Popen[str]
    socket_path: Path

    def get(self, document: str, permissions: str, **kwargs: Any) -> httpx.Response:
        document_id = self.graph.files.get(document, document)
        with httpx.Client(base_url=self.base, timeout=60, trust_env=False) as client:
            return client.get("/", params={"id": document_id, "permissions": permissions},
                              **kwargs)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture
def portal(php: str, graph: Graph, tmp_path: Path, short_dir: Path) -> Iterator[Portal]:
    cache = tmp_path / "cache.sqlite3"
    seed_cache(cache, graph)
    connections = ThreadConnections(lambda: connect(cache))
    downloads = SpyDownloads(
        connections.get,
        lambda: graph.links,
        make_download_client(connect_timeout=5, read_timeout=30, ca_file=graph.settings.ca_file),
    )
    api = CountingApp(make_app(StubVat(), _NoLocations(), StubHealth(), documents=downloads))
    socket_path = short_dir / "api.sock"
    server = ApiServer(api, listen=f"unix:{socket_path}", threads=4)
    server.start()
    port = _free_port()
    process = subprocess.Popen(
        [php, "-d", "display_errors=stderr", "-d", "error_reporting=-1", "-d", "log_errors=0",
         "-d", "output_buffering=4096", "-S", f"127.0.0.1:{port}", str(ROUTER)],
        env={"PATH": "/usr/bin:/bin", "SYNCD_TEST_CACHE": str(cache),
             "SYNCD_TEST_SOCKET": str(socket_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: _listening(port) or process.poll() is not None, 10, "php -S to listen")
        assert process.poll() is None, "php -S did not start"
        yield Portal(f"http://127.0.0.1:{port}", api, downloads, graph, process, socket_path)
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=10)
        server.stop(timeout=5)
        downloads._client.close()
        connections.close_all()
    problems = [line for line in errors.splitlines()
                if any(word in line for word in ("Warning", "Notice", "Deprecated", "Fatal",
                                                 "Error", "error"))]
    assert not problems, problems


class _NoLocations:
    def locations(self, country: str, kind: str | None) -> list[dict[str, Any]]:
        return []

    def as_of(self) -> str | None:
        return None


def test_php_streams_a_document_to_the_browser(portal: Portal, graph: Graph) -> None:
    response = portal.get("manual", PERMISSION)
    assert response.status_code == 200
    expected = graph.content("manual")
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(expected).digest()
    headers = response.headers
    assert headers["content-type"] == "application/pdf"
    assert headers["content-length"] == "300000"
    assert headers["accept-ranges"] == "bytes"
    assert headers["etag"].startswith('"{')
    assert headers["cache-control"] == "private, no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-disposition"].startswith('attachment; filename="GentleMax manual.pdf"')
    assert portal.api.requests == 1


def test_php_passes_the_browsers_range_on(portal: Portal, graph: Graph) -> None:
    response = portal.get("manual", PERMISSION, headers={"Range": "bytes=1000-1999"})
    assert response.status_code == 206
    assert response.headers["content-range"] == "bytes 1000-1999/300000"
    assert response.content == graph.content("manual")[1000:2000]
    beyond = portal.get("manual", PERMISSION, headers={"Range": "bytes=400000-400001"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == "bytes */300000"
    # If-Range is not evaluated by syncd: the range is dropped and the whole file sent
    resumed = portal.get("tiny", PERMISSION, headers={"Range": "bytes=10-", "If-Range": '"x"'})
    assert resumed.status_code == 200 and resumed.content == graph.content("tiny")


def test_php_head_relays_the_headers_only(portal: Portal) -> None:
    with httpx.Client(base_url=portal.base, timeout=30, trust_env=False) as client:
        response = client.head(
            "/", params={"id": portal.graph.files["manual"], "permissions": PERMISSION}
        )
    assert response.status_code == 200
    assert response.headers["content-length"] == "300000"
    assert response.content == b""


def test_php_streams_a_large_file_chunk_by_chunk(portal: Portal, graph: Graph) -> None:
    digest = hashlib.sha256()
    size = 0
    with httpx.Client(base_url=portal.base, timeout=60, trust_env=False) as client, \
            client.stream("GET", "/", params={"id": graph.files["big"],
                                              "permissions": PERMISSION}) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(64 * 1024 * 1024)
        for chunk in response.iter_raw(65536):
            digest.update(chunk)
            size += len(chunk)
    expected = hashlib.sha256()
    for chunk in graph.fake.iter_content(graph.drive_id, graph.files["big"]):
        expected.update(chunk)
    assert size == 64 * 1024 * 1024 and digest.digest() == expected.digest()


@pytest.mark.parametrize(
    ("document", "permissions", "status"),
    [
        ("manual", OTHER_PERMISSION, 403),  # the library's permission is missing
        ("manual", "", 403),
        ("manual", f"{PERMISSION.upper()}", 403),  # keys are compared exactly
        ("outside", PERMISSION, 404),  # not in the folder scope
        ("folder", PERMISSION, 404),
        ("01NOSUCHITEM0000000000000000000000", PERMISSION, 404),
        ("../etc/passwd", PERMISSION, 404),
    ],
)
def test_php_refuses_before_calling_the_api(
    portal: Portal, document: str, permissions: str, status: int
) -> None:
    calls = portal.graph.links.calls
    response = portal.get(document, permissions)
    assert response.status_code == status
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert portal.api.requests == 0 and portal.downloads.opened == []
    assert portal.graph.links.calls == calls


def test_php_relays_the_apis_refusals_as_its_own(portal: Portal) -> None:
    gone = portal.get("deleted", PERMISSION)  # the cache lists it, SharePoint deleted it
    assert gone.status_code == 404
    assert gone.text == "No such document.\n"
    portal.graph.fake.add_fault("throttle", retry_after=9, path="/_download/*")
    busy = portal.get("manual", PERMISSION)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "9"
    assert "sharepoint" not in busy.text and "{" not in busy.text  # no JSON to the browser
    portal.graph.fake.add_fault("forbidden", path="/_download/*")
    refused = portal.get("manual", PERMISSION)
    assert refused.status_code == 502
    assert portal.api.requests == 3


def test_php_says_unavailable_when_syncd_does_not_answer(portal: Portal) -> None:
    portal.socket_path.rename(portal.socket_path.with_name("moved.sock"))
    try:
        response = portal.get("manual", PERMISSION)
    finally:
        portal.socket_path.with_name("moved.sock").rename(portal.socket_path)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "60"
    assert portal.api.requests == 0
