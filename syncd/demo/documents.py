"""The demo's SharePoint chapter: manufacturers' documentation libraries mirrored through
Microsoft Graph, matched to the devices' producers, and a document streamed through the local
API.

A fake Graph (HTTP) and a fake Entra ID login endpoint (HTTPS, with a certificate made at start)
run on loopback; azure-identity, MSAL and msgraph-sdk run for real against them.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from syncd.api.app import ApiServer, make_app
from syncd.api.sources import CachedLocations, DaemonHealth
from syncd.config import Settings, load_settings
from syncd.connectors.sharepoint.quickxor import quickxor_b64
from syncd.engines.documents import DocumentMirror, LibraryReport
from syncd.runtime import build_document_source, build_vat_service, open_cache
from syncd.state import documents
from syncd.state.db import ThreadConnections

HOST = "baltic-lasers.sharepoint.com"
SITE = "/sites/Manufacturers"
# (syncd's name, library in SharePoint, producers it serves, permission key, files)
LIBRARIES = (
    ("candela", "Candela", ("Candela",), "docs.candela", 120),
    ("cynosure", "Cynosure", ("Cynosure",), "docs.cynosure", 80),
    ("lumenis", "Lumenis", ("Lumenis",), "docs.lumenis", 60),
)
ALIASES = {"Candela Corporation": "Candela", "Cynosure LLC": "Cynosure"}


def documents_story(console: Console, base: Settings, conn: sqlite3.Connection) -> bool:
    """Run the SharePoint chapter; True when the cache matched the fake at every check."""
    from syncd.connectors.sharepoint.fake import FakeGraph

    with FakeGraph(page_size=50) as fake:
        fake.add_site(HOST, SITE)
        drives = {}
        for name, library, producers, _permission, count in LIBRARIES:
            drives[name] = fake.add_library(HOST, SITE, library)
            fake.seed_library(drives[name], files=count, producers=producers, seed=len(name))
        secret_file = _write_secret(base.state.directory, fake.client_secret)
        settings = load_settings(
            None,
            state={"directory": base.state.directory},
            log={"level": base.log.level},
            api={"listen": "127.0.0.1:0"},
            sharepoint={
                "tenant_id": fake.tenant_id,
                "client_id": fake.client_id,
                "client_secret_file": secret_file,
                "graph_url": fake.graph_url,
                "login_url": fake.login_url,
                "ca_file": fake.ca_file,
                "producer_aliases": ALIASES,
                "libraries": [
                    {"name": name, "site": f"{HOST}:{SITE}", "library": library,
                     "producers": list(producers), "permission": permission}
                    for name, library, producers, permission, _files in LIBRARIES
                ],
            },
        )
        console.print(
            f"fake Graph on {fake.graph_url}, fake Entra ID login on {fake.login_url} (TLS); "
            f"{len(LIBRARIES)} libraries in {HOST}{SITE}"
        )
        source = build_document_source(settings)
        try:
            mirror = DocumentMirror(conn, source, settings.sharepoint)
            mirror.configure()
            console.print("first run: every library enumerated page by page, swapped in whole")
            _reports(console, [_timed(mirror, name) for name in mirror.names()])
            ok = _matches(console, conn, fake, drives)

            console.print("upstream: a file added, one renamed, one moved, one deleted")
            drive = drives["candela"]
            snapshot = fake.snapshot(drive)
            files = sorted(i for i, item in snapshot.items() if item["kind"] == "file")
            folders = sorted(i for i, item in snapshot.items() if item["kind"] == "folder")
            fake.add_file(drive, "GentleMax Pro Quick Guide (LV).pdf", folders[0], kind="pdf")
            fake.rename(drive, files[0], "GentleMax Pro Service Manual rev B.pdf")
            fake.move(drive, files[1], folders[-1])
            fake.delete(drive, files[2])
            _reports(console, [_timed(mirror, name) for name in mirror.names()])
            ok = _matches(console, conn, fake, drives) and ok

            console.print(
                "Graph expires the candela library's change cursor (410 resyncRequired): the "
                "library is enumerated again through staging, the portal keeps reading meanwhile"
            )
            fake.expire_delta_tokens(drive)
            _reports(console, [_timed(mirror, "candela")])
            ok = _matches(console, conn, fake, drives) and ok

            ok = _device_documents(console, conn) and ok
            ok = _download(console, settings, conn, fake, drives) and ok
        finally:
            source.close()
    return ok


def _write_secret(directory: Path, secret: str) -> Path:
    path = directory / "sharepoint-client-secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(secret)
    return path


def _timed(mirror: DocumentMirror, name: str) -> tuple[LibraryReport, float]:
    started = time.perf_counter()
    report = mirror.run(name)
    return report, time.perf_counter() - started


def _reports(console: Console, reports: list[tuple[LibraryReport, float]]) -> None:
    table = Table("library", "run", "pages", "requests", "changed", "removed", "files", "time")
    for report, seconds in reports:
        kind = report.kind + (" (after 410)" if report.restarted else "")
        table.add_row(
            report.library, kind, str(report.pages), str(report.requests),
            str(report.upserted), str(report.deleted), str(report.item_count),
            f"{seconds * 1000:.0f} ms",
        )
    console.print(table)


def _matches(
    console: Console, conn: sqlite3.Connection, fake: Any, drives: dict[str, str]
) -> bool:
    """Whether every library in the cache equals the fake: the same items, names, folder paths
    (rebuilt from the parent chain), sizes and hashes."""
    problems = []
    for name, drive in drives.items():
        upstream = fake.snapshot(drive)
        cached = documents.snapshot(conn, name)
        if set(upstream) != set(cached):
            problems.append(f"{name}: {len(set(upstream) ^ set(cached))} item(s) differ")
            continue
        for item_id, item in upstream.items():
            row = cached[item_id]
            size = item["size"] if item["kind"] == "file" else None  # folders: not kept
            if (row["name"], row["folder_path"], row["size"], row["quick_xor_hash"]) != (
                item["name"], item["path"], size, item["quick_xor_hash"]
            ):
                problems.append(f"{name}: item {item_id} differs")
                break
    if problems:
        console.print("[red]the cache does not match SharePoint[/red]: " + "; ".join(problems))
        return False
    console.print("[green]every library in the cache matches SharePoint exactly[/green]")
    return True


def _device_documents(console: Console, conn: sqlite3.Connection) -> bool:
    """A device's documents, found through its producer as the CRM spells it."""
    row = conn.execute(
        "SELECT d.crm_id, d.producer, count(dd.document_id) FROM devices AS d "
        "JOIN device_documents AS dd ON dd.device_id = d.crm_id "
        "GROUP BY d.crm_id ORDER BY d.producer DESC, d.crm_id LIMIT 1"
    ).fetchone()
    if row is None:
        console.print("[red]no device matched a documentation library[/red]")
        return False
    device_id, producer, count = row
    console.print(
        f"device {device_id} (producer in the CRM: {producer!r}) has {count} document(s); "
        "the portal asks: SELECT ... FROM device_documents WHERE device_id = ? AND permission "
        "IN (<the user's permissions>)"
    )
    table = Table("library", "permission", "folder", "name", "size")
    for library, permission, folder, name, size in conn.execute(
        "SELECT library, permission, folder_path, name, size FROM device_documents "
        "WHERE device_id = ? ORDER BY folder_path, name LIMIT 5",
        (device_id,),
    ):
        table.add_row(library, permission, folder, name, f"{size:,}")
    console.print(table)
    matched = conn.execute(
        "SELECT count(DISTINCT device_id) FROM device_documents"
    ).fetchone()[0]
    console.print(f"{matched} device(s) in the cache match a library by producer")
    return True


def _download(
    console: Console,
    settings: Settings,
    conn: sqlite3.Connection,
    fake: Any,
    drives: dict[str, str],
) -> bool:
    """A document streamed through the local API (whole, then a range), its hash checked
    against the one Graph reported."""
    from syncd.api.documents import DocumentDownloads

    row = conn.execute(
        "SELECT id, name, size, quick_xor_hash FROM documents WHERE library = 'candela' "
        "AND kind = 'file' AND in_scope = 1 AND mime_type = 'application/pdf' "
        "ORDER BY size LIMIT 1"
    ).fetchone()
    document_id, name, size, expected_hash = row
    connections = ThreadConnections(lambda: open_cache(settings))
    vat = build_vat_service(settings)
    downloads = DocumentDownloads.from_config(settings, connections.get)
    server = ApiServer(
        make_app(
            vat, CachedLocations(connections), DaemonHealth(connections), documents=downloads
        ),
        listen=settings.api.listen,
    )
    server.start()
    try:
        with httpx.Client(base_url=f"http://{server.address}", timeout=60) as api:
            path = f"/v1/documents/{document_id}/download"
            whole = api.get(path)
            ranged = api.get(path, headers={"Range": "bytes=0-1023"})
    finally:
        server.stop(5.0)
        downloads.close()
        vat.close()
        connections.close_all()
    got_hash = quickxor_b64(whole.content)
    ok = (
        whole.status_code == 200
        and len(whole.content) == size
        and got_hash == expected_hash
        and ranged.status_code == 206
        and ranged.content == whole.content[:1024]
    )
    colour = "green" if ok else "red"
    console.print(
        f"GET {path}: {whole.status_code}, {len(whole.content):,} bytes of {name!r} "
        f"({whole.headers.get('content-type')}), quickXorHash {got_hash} "
        f"[{colour}]{'matches' if got_hash == expected_hash else 'DOES NOT match'}[/{colour}] "
        f"the cache; Range bytes=0-1023: {ranged.status_code}, {len(ranged.content)} bytes"
    )
    return ok
