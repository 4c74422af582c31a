"""The daemon with SharePoint configured, as systemd runs it (``syncd run`` in a subprocess),
against the fake Microsoft Graph and the in-memory CRM: every library arrives in the cache and in
``syncd status``; a library whose drive answers 403 stops alone while the other libraries and the
CRM mirror go on; ``syncd --resync documents --library NAME`` is handed to the running daemon and
re-enumerates that library; ``/metrics`` shows each library. And without ``[sharepoint]``,
neither the daemon nor ``status`` nor ``check-config`` imports msgraph, azure or kiota.
"""

from __future__ import annotations

import ast
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncd.connectors.sharepoint.fake import FakeGraph
from syncd.core.clock import utc_now
from syncd.state import documents
from syncd.state.db import connect
from tests.conftest import (
    SHAREPOINT_HOST,
    SHAREPOINT_SITE_PATH,
    document_library,
    fake_documents,
    make_api_client,
    sharepoint_toml,
    wait_for,
)

ROOT = Path(__file__).parents[1]
DEVICES = 12  # in the in-memory CRM, every one made by Candela
HEAVY = ("msgraph", "msgraph_core", "azure", "kiota")

# Runs `syncd ARGS...` in this interpreter and, at exit, lists the modules of msgraph, azure and
# kiota it loaded (one line: MODULES [...]).
PROBE = """
import atexit, sys
def report():
    heavy = {HEAVY!r}
    loaded = sorted(m for m in sys.modules if m.split(".")[0].startswith(heavy))
    print("MODULES", repr(loaded), flush=True)
atexit.register(report)
from syncd.cli.main import main
sys.exit(main(sys.argv[1:]))
""".replace("{HEAVY!r}", repr(HEAVY))


def base_config(tmp_path: Path, socket_path: Path) -> str:
    """State, the API on a unix socket, no Omniva, no real VIES, the in-memory CRM."""
    return (
        f'[state]\ndirectory = "{tmp_path / "state"}"\n'
        f'[api]\nlisten = "unix:{socket_path}"\n'
        "[omniva]\nenabled = false\n"
        '[vies]\nendpoint = "http://127.0.0.1:9/taxation_customs/vies/services/checkVatService"\n'
        '[log]\nlevel = "INFO"\n'
        '[crm]\nvendor = "memory"\n'
        f'[crm.memory]\nstore = "documents-daemon"\ncompanies = 3\ncontacts = 6\n'
        f"devices = {DEVICES}\n"
        "[mirror]\ninterval_seconds = 5\njitter_seconds = 0\n"
    )


def syncd(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncd", "--config", str(config), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def probe(config: Path, *args: str) -> subprocess.Popen[str]:
    """``syncd --config CONFIG ARGS...`` that reports its heavy modules at exit."""
    return subprocess.Popen(
        [sys.executable, "-c", PROBE, "--config", str(config), *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def loaded_modules(stdout: str) -> list[str]:
    lines = [line for line in stdout.splitlines() if line.startswith("MODULES ")]
    assert len(lines) == 1, stdout
    value: list[str] = ast.literal_eval(lines[0].removeprefix("MODULES "))
    return value


def read(cache: Path, query: str, *params: Any) -> list[tuple[Any, ...]] | None:
    """Rows of ``query`` on the cache; None while it (or its schema) is not there yet."""
    if not cache.exists():
        return None
    conn = sqlite3.connect(cache, timeout=5)
    try:
        return conn.execute(query, params).fetchall()
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()


def stop_daemon(daemon: subprocess.Popen[str]) -> tuple[int, str, str]:
    daemon.send_signal(signal.SIGTERM)
    stdout, stderr = daemon.communicate(timeout=30)
    return daemon.returncode, stdout, stderr


# ------------------------------------------------------------------------------------------
# With SharePoint
# ------------------------------------------------------------------------------------------


@dataclass
class Setup:
    fake: FakeGraph
    drives: dict[str, str]
    files: dict[str, int]
    config: Path
    cache: Path
    socket: Path


LIBRARIES = (  # the 403 one sits between the others: the one after it must still run
    ("candela", "Candela", 30),
    ("lumenis", "Lumenis", 5),
    ("cynosure", "Cynosure", 12),
)


@pytest.fixture
def setup(tmp_path: Path, short_dir: Path) -> Iterator[Setup]:
    with FakeGraph(page_size=10) as fake:
        drives, files = {}, {}
        for number, (name, library, count) in enumerate(LIBRARIES):
            drives[name] = fake.add_library(SHAREPOINT_HOST, SHAREPOINT_SITE_PATH, library)
            fake.seed_library(drives[name], files=count, producers=[library], seed=number)
            files[name] = count
        fake.add_fault("forbidden", times=None, drive_id=drives["lumenis"])
        socket_path = short_dir / "api.sock"
        config = tmp_path / "syncd.toml"
        config.write_text(
            base_config(tmp_path, socket_path)
            + sharepoint_toml(fake, tmp_path, *(
                document_library(name, library, (library,)) for name, library, _ in LIBRARIES
            ), interval_seconds=10)
        )
        yield Setup(fake, drives, files, config, tmp_path / "state" / "cache.sqlite3",
                    socket_path)


def library_health(cache: Path) -> dict[str, tuple[str, int]]:
    rows = read(cache, "SELECT name, health, item_count FROM document_libraries") or []
    return {name: (health, count) for name, health, count in rows}


def library_full_at(cache: Path, name: str) -> str | None:
    rows = read(cache, "SELECT last_full_at FROM document_libraries WHERE name = ?", name)
    assert rows
    return rows[0][0]  # type: ignore[no-any-return]


def test_the_daemon_mirrors_every_library_and_one_refused_stops_alone(setup: Setup) -> None:
    daemon = probe(setup.config, "run")
    try:
        wanted = {"candela": ("ok", 30), "lumenis": ("stopped", 0), "cynosure": ("ok", 12)}
        wait_for(lambda: library_health(setup.cache) == wanted, 60,
                 f"the libraries' (health, files) to be {wanted}")
        wait_for(lambda: read(setup.cache, "SELECT count(*) FROM devices") == [(DEVICES,)], 30,
                 "the CRM mirror")

        # the cache holds exactly what the fake has
        conn = connect(setup.cache, migrate_schema=False)
        try:
            for name in ("candela", "cynosure"):
                assert documents.snapshot(conn, name) == fake_documents(
                    setup.fake, setup.drives[name]
                ), name
            assert documents.snapshot(conn, "lumenis") == {}
            lumenis = documents.load(conn, "lumenis")
            assert lumenis is not None and lumenis.delta_link is None
            assert lumenis.last_error is not None and "403" in lumenis.last_error
            # the portal's view: every Candela device sees the Candela library's files
            rows = conn.execute(
                "SELECT device_id, library, permission FROM device_documents"
            ).fetchall()
            assert {library for _, library, _ in rows} == {"candela"}
            assert {permission for _, _, permission in rows} == {"docs.candela"}
            assert len(rows) == DEVICES * setup.files["candela"]
        finally:
            conn.close()
        # the 403 was not retried over and over: one delta request, then the library stopped
        forbidden = [path for _, path in setup.fake.requests if setup.drives["lumenis"] in path]
        assert len(forbidden) == 1, forbidden

        # syncd status --json lists each library
        status = syncd(setup.config, "status", "--json")
        report = json.loads(status.stdout)
        assert status.returncode == 1  # needs attention: one library is stopped
        listed = {lib["name"]: lib for lib in report["documents"]}
        assert set(listed) == {"candela", "lumenis", "cynosure"}
        for name in ("candela", "cynosure"):
            assert listed[name]["items"] == setup.files[name]
            assert listed[name]["health"] == "ok" and listed[name]["last_delta_at"]
            assert listed[name]["last_error"] is None
        assert listed["lumenis"]["health"] == "stopped"
        assert listed["lumenis"]["last_delta_at"] is None
        assert any("lumenis" in problem for problem in report["problems"])
        assert not any(name in problem for problem in report["problems"]
                       for name in ("candela", "cynosure"))
        jobs = {job["job"]: job["state"] for job in report["jobs"]}
        assert jobs["mirror"] == "ok"
        assert jobs["documents:candela"] == "ok" and jobs["documents:cynosure"] == "ok"
        assert jobs["documents:lumenis"] == "stopped"
        assert report["entities"]["devices"]["count"] == DEVICES
        human = syncd(setup.config, "status")
        assert "documents (SharePoint libraries)" in human.stdout
        assert "lumenis" in human.stdout and "stopped" in human.stdout

        # /metrics
        with make_api_client(f"unix:{setup.socket}") as client:
            response = client.get("/metrics")
        assert response.status_code == 200
        samples = {
            (sample.name, sample.labels.get("library")): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name.startswith("syncd_document_library_")
        }
        for name, _, count in LIBRARIES:
            expected = count if name != "lumenis" else 0
            assert samples[("syncd_document_library_items", name)] == expected
            assert samples[("syncd_document_library_up", name)] == (name != "lumenis")

        # syncd --resync documents --library candela, through the running daemon
        first_pages = [path for _, path in setup.fake.requests
                       if path == f"/v1.0/drives/{setup.drives['candela']}/root/delta"]
        others_full_at = library_full_at(setup.cache, "cynosure")
        asked_at = utc_now().replace(microsecond=0)
        setup.fake.add_file(setup.drives["candela"], "Late Bulletin.pdf", content=b"late")
        resync = syncd(setup.config, "--resync", "documents", "--library", "candela")
        assert resync.returncode == 0, resync.stderr
        assert "handed to the running daemon" in resync.stdout
        assert "done" in resync.stdout and "documents candela: full" in resync.stdout
        conn = connect(setup.cache, migrate_schema=False)
        try:
            candela = documents.load(conn, "candela")
            assert candela is not None and candela.last_full_at is not None
            assert candela.last_full_at >= asked_at
            assert candela.item_count == setup.files["candela"] + 1
            assert documents.snapshot(conn, "candela") == fake_documents(
                setup.fake, setup.drives["candela"]
            )
        finally:
            conn.close()
        again = [path for _, path in setup.fake.requests
                 if path == f"/v1.0/drives/{setup.drives['candela']}/root/delta"]
        assert len(again) == len(first_pages) + 1  # enumerated from the start once more
        assert library_full_at(setup.cache, "cynosure") == others_full_at  # that library only

        unknown = syncd(setup.config, "--resync", "documents", "--library", "nope")
        assert unknown.returncode == 78 and "nope" in unknown.stderr
    finally:
        code, stdout, stderr = stop_daemon(daemon)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert any(module.startswith("msgraph") for module in loaded_modules(stdout))  # the probe
    assert setup.fake.client_secret not in stderr


# ------------------------------------------------------------------------------------------
# Without SharePoint: nothing of msgraph, azure or kiota is imported
# ------------------------------------------------------------------------------------------


@pytest.fixture
def plain_config(tmp_path: Path, short_dir: Path) -> tuple[Path, Path]:
    socket_path = short_dir / "api.sock"
    config = tmp_path / "syncd.toml"
    config.write_text(base_config(tmp_path, socket_path))
    return config, socket_path


def test_a_daemon_without_sharepoint_never_imports_graph(
    plain_config: tuple[Path, Path], tmp_path: Path
) -> None:
    config, socket_path = plain_config
    cache = tmp_path / "state" / "cache.sqlite3"
    daemon = probe(config, "run")
    try:
        wait_for(socket_path.exists, 30, "the API socket")
        wait_for(lambda: read(cache, "SELECT count(*) FROM devices") == [(DEVICES,)], 30,
                 "the first mirror cycle")
        with make_api_client(f"unix:{socket_path}") as client:
            assert client.get("/healthz").status_code == 200
            metrics = client.get("/metrics").text
        assert "syncd_document_library_items{" not in metrics
    finally:
        code, stdout, stderr = stop_daemon(daemon)
    assert code == 0, stderr
    assert loaded_modules(stdout) == []
    assert read(cache, "SELECT count(*) FROM document_libraries") == [(0,)]


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["check-config"]])
def test_status_and_check_config_without_sharepoint_never_import_graph(
    plain_config: tuple[Path, Path], command: list[str]
) -> None:
    config, _ = plain_config
    process = probe(config, *command)
    stdout, stderr = process.communicate(timeout=60)
    assert "Traceback" not in stderr
    assert process.returncode in (0, 1), stderr  # status: 1 without a running daemon
    assert loaded_modules(stdout) == []


def test_a_resync_of_documents_without_sharepoint_is_refused_plainly(
    plain_config: tuple[Path, Path],
) -> None:
    config, _ = plain_config
    process = probe(config, "--resync", "documents")
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 78
    assert "sharepoint" in stderr and "Traceback" not in stderr
    assert loaded_modules(stdout) == []


def test_status_lists_no_documents_when_none_are_configured(
    plain_config: tuple[Path, Path],
) -> None:
    config, _ = plain_config
    status = syncd(config, "status", "--json")
    report = json.loads(status.stdout)
    assert report["documents"] == []
    assert "documents (SharePoint libraries)" not in syncd(config, "status").stdout
