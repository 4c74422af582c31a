"""The daemon as systemd runs it: READY over NOTIFY_SOCKET, mirror cycles, resyncs handed over
from the CLI, `status`, and a clean stop on SIGTERM within 10 s."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.state import control
from syncd.state.db import connect
from tests.conftest import wait_for, write_config

ROOT = Path(__file__).parents[1]


def syncd(config: Path, *args: str, timeout: float = 120,
          stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncd", "--config", str(config), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, input=stdin)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[FakeBitrix24, Path, Path]]:
    with FakeBitrix24(seed=21, companies=40, contacts=200, devices=90, token="t") as fake:
        config = write_config(tmp_path, fake, "[mirror]\ninterval_seconds = 1\n"
                              "jitter_seconds = 0\nsweep_interval_seconds = 10\n")
        yield fake, config, tmp_path / "state" / "cache.sqlite3"


def count(cache: Path, table: str) -> int:
    if not cache.exists():
        return -1
    conn = sqlite3.connect(cache)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.OperationalError:
        return -1
    finally:
        conn.close()


def test_daemon_lifecycle(setup: tuple[FakeBitrix24, Path, Path], tmp_path: Path) -> None:
    fake, config, cache = setup
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
    daemon = subprocess.Popen([sys.executable, "-m", "syncd", "--config", str(config), "run"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        assert b"READY=1" in notify.recv(4096)
        wait_for(lambda: count(cache, "devices") == 90, 30, "the first full mirror")

        new_id = fake.create("contacts")
        wait_for(lambda: count(cache, "contacts") == 201, 30, f"contact {new_id} to arrive")

        resync = syncd(config, "--resync", "devices")
        assert resync.returncode == 0, resync.stderr
        assert "handed to the running daemon" in resync.stdout
        assert "done" in resync.stdout

        record = syncd(config, "--resync", "devices", "--record", "1")
        assert record.returncode == 0, record.stderr

        status = syncd(config, "status", "--json")
        report = json.loads(status.stdout)
        assert status.returncode == 0, report["problems"]
        assert report["entities"]["contacts"]["count"] == 201
        assert {j["job"] for j in report["jobs"]} >= {"mirror"}
        assert "daemon" in report["daemon"]

        conn = connect(cache)
        actions = [r[0] for r in conn.execute("SELECT action FROM audit_log")]
        assert actions.count("resync.request") == 2 and "daemon.start" in actions
        conn.close()
    finally:
        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=15)
        stopped_in = time.monotonic() - started
        stderr = daemon.stderr.read() if daemon.stderr else ""
        notify.close()
    assert code == 0, stderr
    assert stopped_in < 10
    assert "Traceback" not in stderr


def test_second_resync_is_refused_while_one_is_open(
    setup: tuple[FakeBitrix24, Path, Path]
) -> None:
    _fake, _config, cache = setup
    conn = connect(cache)
    request, created = control.request_resync(conn, entity="contacts", record_id=None,
                                              actor="test", now=datetime(2026, 11, 21, tzinfo=UTC))
    assert created
    again, created_again = control.request_resync(conn, entity="devices", record_id=None,
                                                  actor="test",
                                                  now=datetime(2026, 11, 21, tzinfo=UTC))
    assert not created_again and again.id == request.id
    conn.close()


def test_foreground_resync_without_a_daemon(setup: tuple[FakeBitrix24, Path, Path]) -> None:
    _fake, config, cache = setup
    result = syncd(config, "--resync", "all")
    assert result.returncode == 0, result.stderr
    assert count(cache, "contacts") == 200
    status = syncd(config, "status")
    assert status.returncode == 1  # no daemon running: needs attention
    assert "no daemon is running" in status.stdout


def test_foreground_resync_refused_while_another_holds_the_lock(
    setup: tuple[FakeBitrix24, Path, Path]
) -> None:
    _fake, config, cache = setup
    from syncd.daemon.lock import ProcessLock

    with ProcessLock(cache.parent, "foreground resync"):
        result = syncd(config, "--resync", "devices")
    assert result.returncode == 75
    assert "foreground resync" in result.stderr


def test_the_daemon_runs_without_a_crm(tmp_path: Path, short_dir: Path) -> None:
    """VIES, Omniva and the API only: no CRM lanes, service requests refused plainly."""
    from tests.conftest import make_api_client

    socket_path = short_dir / "api.sock"
    config = tmp_path / "syncd.toml"
    config.write_text(
        f'[state]\ndirectory = "{tmp_path / "state"}"\n[api]\nlisten = "unix:{socket_path}"\n'
        "[omniva]\nenabled = false\n"
        '[vies]\nendpoint = "http://127.0.0.1:9/taxation_customs/vies/services/checkVatService"\n'
    )
    daemon = subprocess.Popen([sys.executable, "-m", "syncd", "--config", str(config), "run"],
                              cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(socket_path.exists, 30, "the API socket")
        with make_api_client(f"unix:{socket_path}") as client:
            wait_for(lambda: client.get("/healthz").status_code == 200, 30, "a healthy daemon")
            health = client.get("/healthz").json()
            assert set(health["lanes"]) == {"services", "api"}  # no CRM lanes
            local = client.get("/v1/vat/EE123")  # fails the checksum: answered without VIES
            assert local.status_code == 200 and local.json()["source"] == "local"
            key = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
            refused = client.post("/v1/service-requests", headers={"Idempotency-Key": key},
                                  files=[("request_type", (None, "repair", None))])
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "service_requests_disabled"
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, stderr
    assert "no CRM configured" in stderr
    assert "Traceback" not in stderr


def test_listening_is_logged_only_once_start_up_succeeded(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    config = tmp_path / "syncd.toml"
    config.write_text(
        f'[state]\ndirectory = "{tmp_path / "state"}"\n[api]\nlisten = "127.0.0.1:{port}"\n'
        "[omniva]\nenabled = false\n"
    )
    try:
        result = syncd(config, "run", timeout=60)
    finally:
        taken.close()
    assert result.returncode == 78
    assert "api.listen" in result.stderr
    assert "listening" not in result.stderr.replace("cannot listen", "")
