"""The public services end to end: VAT lookups through the local API on a real VatService
against the fake VIES (single flight, the circuit, stale answers), and ``syncd run`` serving
the API on a unix socket with the fake CRM, a fake VIES and a fake Omniva, then ``syncd status``.

Nothing here sleeps to let something happen: waits are on the fakes' gates, the service's
waiting counter, NOTIFY_SOCKET, or bounded polls of a condition.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from syncd.api.app import ApiServer, make_app
from syncd.api.sources import CachedLocations, DaemonHealth
from syncd.cli.status import collect, render
from syncd.config import Settings, load_settings
from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.connectors.omniva.fake import FakeOmniva
from syncd.connectors.vies.fake import Company, FakeVies
from syncd.core.clock import iso, utc_now
from syncd.daemon.service import STOP_GRACE_SECONDS
from syncd.engines.vat import VatService
from syncd.runtime import build_vat_service, open_cache
from syncd.state import vies_cache
from syncd.state.db import ThreadConnections
from syncd.state.db import close as close_cache
from tests.conftest import make_api_client, wait_for

ROOT = Path(__file__).parents[1]
WAIT = 20.0  # an upper bound for waits on things that should happen within a second or two
DOC: dict[str, Any] = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
ANSWER_KEYS = frozenset(DOC["components"]["schemas"]["VatAnswer"]["required"])


def company(vies: FakeVies, country: str, index: int = 0) -> Company:
    return [c for c in vies.companies if c.country_code == country][index]


# ------------------------------------------------------------------------------------------
# The API in process: real VatService, real cache, fake VIES over loopback
# ------------------------------------------------------------------------------------------


@dataclass
class Stack:
    settings: Settings
    vies: FakeVies
    vat: VatService
    server: ApiServer
    client: httpx.Client
    conn: sqlite3.Connection  # the test's own look at the cache

    @property
    def state_dir(self) -> Path:
        return self.settings.state.cache_path.parent


@contextmanager
def api_stack(
    tmp_path: Path, vies: FakeVies, *, threads: int = 8, vies_answers_hours: float = 24.0
) -> Iterator[Stack]:
    settings = load_settings(
        None,
        state={"directory": tmp_path / "state"},
        vies={"endpoint": vies.base_url},
        retention={"vies_answers_hours": vies_answers_hours},
        api={"listen": "127.0.0.1:0", "threads": threads},
        omniva={"enabled": False},
    )
    conn = open_cache(settings)
    connections = ThreadConnections(lambda: open_cache(settings))
    vat = build_vat_service(settings)
    server = ApiServer(
        make_app(vat, CachedLocations(connections), DaemonHealth(connections)),
        listen=settings.api.listen,
        threads=threads,
    )
    server.start()
    client = make_api_client(server.address, timeout=30)
    try:
        yield Stack(settings, vies, vat, server, client, conn)
    finally:
        client.close()
        vies.release()  # never leave a lookup hanging on the gate
        server.stop(5.0)
        vat.close()
        connections.close_all()
        close_cache(conn)


@pytest.fixture
def vies() -> Iterator[FakeVies]:
    with FakeVies() as fake:
        yield fake


def answers_in_cache(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT country_code, vat_number, valid, fetched_at FROM vies_answers ORDER BY 1, 2"
    ).fetchall()


def test_fifty_simultaneous_lookups_make_one_vies_call(tmp_path: Path, vies: FakeVies) -> None:
    threads, callers = 16, 50
    trader = company(vies, "EE")
    with api_stack(tmp_path, vies, threads=threads) as stack:
        vies.hold()
        barrier = threading.Barrier(callers)
        results: list[tuple[int, dict[str, Any]] | BaseException | None] = [None] * callers

        def ask(index: int) -> None:
            try:
                with make_api_client(stack.server.address, timeout=60) as client:
                    barrier.wait(timeout=WAIT)
                    response = client.get(f"/v1/vat/{trader.vat_id}")
                    results[index] = (response.status_code, response.json())
            except BaseException as error:  # reported by the assertions below
                results[index] = error

        workers = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(callers)]
        for worker in workers:
            worker.start()
        try:
            # Every API worker thread is inside a lookup; exactly one of them called VIES.
            assert stack.vat.wait_for_waiting(threads, WAIT), stack.vat.waiting_lookups()
            assert vies.wait_for_waiting(1, WAIT)
            assert stack.vat.waiting_lookups() == threads
            assert vies.gate.waiting == 1
            assert vies.call_count == 1
        finally:
            vies.release()
            for worker in workers:
                worker.join(WAIT)
        assert not any(worker.is_alive() for worker in workers)

        errors = [r for r in results if not isinstance(r, tuple)]
        assert not errors, errors[:3]
        answers = [r for r in results if isinstance(r, tuple)]
        assert [status for status, _ in answers] == [200] * callers
        bodies = [body for _, body in answers]
        assert all(set(body) == ANSWER_KEYS for body in bodies)
        # The callers inside a lookup shared the one live answer; the ones queued behind them
        # in the server were answered from the cache it filled.
        assert Counter(body["source"] for body in bodies) == {
            "live": threads,
            "cache": callers - threads,
        }
        same = {
            json.dumps(
                {k: v for k, v in body.items() if k not in ("source", "age_seconds")},
                sort_keys=True,
            )
            for body in bodies
        }
        assert len(same) == 1
        first = bodies[0]
        assert first["valid"] is True
        assert first["query"] == trader.vat_id
        assert first["name"] == trader.name
        assert vies.requests == [("checkVat", "EE", trader.vat_number)]
        assert vies.call_count == 1

        again = stack.client.get(f"/v1/vat/{trader.vat_id}")
        assert again.status_code == 200
        assert again.json()["source"] == "cache"
        assert again.json()["fetched_at"] == first["fetched_at"]
        assert vies.call_count == 1
        assert len(answers_in_cache(stack.conn)) == 1


def test_ip_blocked_opens_the_circuit_for_every_lookup(tmp_path: Path, vies: FakeVies) -> None:
    blocked, other = company(vies, "EE", 1), company(vies, "LV")
    with api_stack(tmp_path, vies) as stack:
        vies.inject("IP_BLOCKED", number=blocked.vat_id)
        first = stack.client.get(f"/v1/vat/{blocked.vat_id}")
        assert first.status_code == 503
        assert first.json()["error"]["code"] == "vies_blocked"
        assert 3000 < int(first.headers["Retry-After"]) <= 3600  # circuit_open_minutes = 60
        assert vies.call_count == 1  # a block is not retried
        calls = vies.call_count

        second = stack.client.get(f"/v1/vat/{other.vat_id}")
        assert second.status_code == 503
        assert second.json()["error"]["code"] == "vies_blocked"
        assert 3000 < int(second.headers["Retry-After"]) <= 3600
        assert vies.call_count == calls  # no VIES call while the circuit is open

        # A number that fails the local check is still answered, without VIES.
        local = stack.client.get("/v1/vat/EE123")
        assert local.status_code == 200 and local.json()["source"] == "local"
        assert vies.call_count == calls

        assert answers_in_cache(stack.conn) == []  # faults are never stored as answers
        report = collect(stack.conn, stack.state_dir)
        assert [c["reason"] for c in report["vies"]["open_circuits"]] == ["IP_BLOCKED"]
        assert report["vies"]["open_circuits"][0]["scope"] == "global"
        assert not report["healthy"]
        assert any(
            p.startswith("VIES circuit open (global)") and "IP_BLOCKED" in p
            for p in report["problems"]
        ), report["problems"]
        assert "circuit OPEN (global, IP_BLOCKED)" in render(report)
        health = stack.client.get("/healthz")  # the API's monitor sees it too
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert [c["reason"] for c in health.json()["vies_circuits"]] == ["IP_BLOCKED"]


def test_a_stale_answer_when_the_member_state_is_down(tmp_path: Path, vies: FakeVies) -> None:
    trader = company(vies, "LV")
    # The stale fallback is off by default; a day of it, as a deployment may enable it.
    with api_stack(tmp_path, vies, vies_answers_hours=48) as stack:
        live = stack.client.get(f"/v1/vat/{trader.vat_id}")
        assert live.status_code == 200 and live.json()["source"] == "live"

        aged = iso(utc_now() - timedelta(hours=30))
        stack.conn.execute("UPDATE vies_answers SET fetched_at = ?", (aged,))
        vies.inject("MS_UNAVAILABLE", country="LV")
        calls = vies.call_count

        stale = stack.client.get(f"/v1/vat/{trader.vat_id}")
        assert stale.status_code == 200, stale.text
        body = stale.json()
        assert body["source"] == "stale"
        assert abs(body["age_seconds"] - 30 * 3600) < 120
        assert body["valid"] is True and body["name"] == trader.name
        assert body["fetched_at"] == aged
        assert vies.call_count > calls  # VIES was asked (and failed) before the stale answer
        assert vies.requests[-1] == ("checkVat", "LV", trader.vat_number)
        # The failure wrote nothing: the entry keeps its age.
        assert answers_in_cache(stack.conn) == [("LV", trader.vat_number, 1, aged)]


# ------------------------------------------------------------------------------------------
# The daemon: syncd run with the API on a unix socket, the services lane and syncd status
# ------------------------------------------------------------------------------------------


def syncd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", "--config", str(config), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def daemon_config(
    tmp_path: Path, crm: FakeBitrix24, vies: FakeVies, omniva: FakeOmniva, socket_path: Path
) -> Path:
    token = tmp_path / "crm_webhook_token"
    token.write_text(crm.token)
    config = tmp_path / "syncd.toml"
    config.write_text(
        "[crm]\nrequests_per_second = 0\n"
        f'[crm.bitrix24]\nurl = "{crm.base_url}"\nwebhook_token_file = "{token}"\n'
        f'[state]\ndirectory = "{tmp_path / "state"}"\n'
        f'[api]\nlisten = "unix:{socket_path}"\n'
        f'[vies]\nendpoint = "{vies.base_url}"\n'
        # about a second between Omniva checks, so the test sees the re-check and a refusal
        f'[omniva]\nurl = "{omniva.locations_url}"\ninterval_hours = 0.0003\n'
    )
    return config


class Drain:
    """Reads a pipe to the end in a thread (so the daemon never blocks on a full pipe)."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)

    def text(self, timeout: float = 5.0) -> str:
        self._thread.join(timeout)
        return "".join(self.lines)


def test_the_daemon_serves_vat_and_parcel_machines_on_a_unix_socket(
    tmp_path: Path, short_dir: Path, fake: FakeBitrix24
) -> None:
    socket_path = short_dir / "api.sock"
    notify_path = short_dir / "notify.sock"
    with FakeVies() as vies, FakeOmniva() as omniva:
        config = daemon_config(tmp_path, fake, vies, omniva, socket_path)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify.settimeout(WAIT)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "syncd", "--config", str(config), "run"],
            cwd=ROOT,
            env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            errors="replace",
        )
        log = Drain(daemon.stderr)
        api = make_api_client(f"unix:{socket_path}", timeout=30)
        stopped_in: float | None = None
        try:
            assert b"READY=1" in notify.recv(4096)  # sent once the API listens
            assert socket_path.is_socket()
            health = api.get("/healthz")
            assert health.status_code == 200
            assert health.json()["status"] in ("ok", "degraded")

            def parcel_list_loaded() -> bool:
                response = api.get("/v1/parcel-machines", params={"country": "EE"})
                if response.status_code == 503:
                    assert response.json()["error"]["code"] == "parcel_list_unavailable"
                    return False
                assert response.status_code == 200, response.text
                return True

            wait_for(parcel_list_loaded, WAIT, "the services lane to store Omniva's list")

            def count(country: str, kind: str | None = None) -> int:
                params = {"country": country} | ({"type": kind} if kind else {})
                response = api.get("/v1/parcel-machines", params=params)
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["count"] == len(body["locations"])
                return int(body["count"])

            assert count("EE", "parcel_machine") == 89
            assert count("EE", "post_office") == 86
            assert count("LV", "parcel_machine") == 86
            assert count("EE") == 175
            as_of = api.get("/v1/parcel-machines", params={"country": "LV"}).json()["as_of"]

            trader = company(vies, "EE")
            live = api.get(f"/v1/vat/{trader.vat_id}")
            assert live.status_code == 200 and live.json()["source"] == "live"
            assert live.json()["name"] == trader.name
            cached = api.get(f"/v1/vat/{trader.vat_id}")
            assert cached.status_code == 200 and cached.json()["source"] == "cache"
            local = api.get("/v1/vat/EE123")
            assert local.status_code == 200
            assert local.json()["source"] == "local" and local.json()["valid"] is False
            assert vies.requests == [("checkVat", "EE", trader.vat_number)]

            # The first download carried no validators; the re-check a second later did.
            wait_for(lambda: omniva.request_count >= 2, WAIT, "Omniva's list to be re-checked")
            first, second = omniva.requests[:2]
            assert first.if_none_match is None and first.if_modified_since is None
            assert first.status == 200
            assert second.if_none_match is not None and second.status == 304

            # Omniva serves a maintenance page: refused, the last good list is kept.
            before = omniva.request_count
            omniva.set_mode("html")

            def omniva_failing() -> bool:
                jobs: dict[str, str] = api.get("/healthz").json().get("jobs", {})
                return jobs.get("omniva") == "failing"

            wait_for(omniva_failing, WAIT, "the Omniva job to fail on the HTML page")
            assert omniva.request_count > before
            assert omniva.requests[-1].status == 200  # the page itself, not an error status
            assert count("EE") == 175 and count("LV") == 86
            after = api.get("/v1/parcel-machines", params={"country": "LV"}).json()["as_of"]
            assert after == as_of
            degraded = api.get("/healthz")
            assert degraded.status_code == 200 and degraded.json()["status"] == "degraded"

            status = syncd(config, "status", "--json")
            assert status.returncode == 1, status.stderr  # a failing job needs attention
            report = json.loads(status.stdout)
            assert report["vies"]["entries"] == 1
            assert report["vies"]["open_circuits"] == []
            parcels = report["omniva"]
            assert parcels["records"] == 261
            assert parcels["counts"] == {
                "EE": {"parcel_machine": 89, "post_office": 86},
                "LV": {"parcel_machine": 86, "post_office": 0},
            }
            assert parcels["refused_at"] is not None
            assert "HTML" in parcels["refused_reason"]
            jobs = {job["job"]: job for job in report["jobs"]}
            assert jobs["omniva"]["state"] == "failing"
            assert "HTML" in jobs["omniva"]["last_error"]
            assert any(p.startswith("job omniva is failing") for p in report["problems"])
            assert report["daemon"]  # the running daemon holds the lock

            text = syncd(config, "status")
            assert text.returncode == 1
            assert "vies    1 cached answer(s)" in text.stdout
            assert "omniva  261 locations" in text.stdout
            assert "EE 89 parcel machines, 86 post offices" in text.stdout
            assert "last refused download" in text.stdout
            assert "(the stored list was kept)" in text.stdout
        finally:
            api.close()
            started = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            try:
                code = daemon.wait(timeout=STOP_GRACE_SECONDS + 9)
            except subprocess.TimeoutExpired:
                daemon.kill()
                code = daemon.wait(timeout=10)
            stopped_in = time.monotonic() - started
            notify.close()
        stderr = log.text()
    assert code == 0, stderr[-3000:]
    assert stopped_in is not None and stopped_in < STOP_GRACE_SECONDS
    assert not socket_path.exists()  # the daemon removed its socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe, pytest.raises(OSError):
        probe.connect(str(socket_path))
    assert "Traceback" not in stderr
    # The log names outcomes and country codes, never a number or a trader.
    assert trader.name is not None
    assert trader.vat_number not in stderr and trader.name not in stderr
    assert "local API listening on unix:" in stderr
    # The lookup counters were flushed on the way out: live, cache and local.
    conn = open_cache(load_settings(config))
    try:
        stats = vies_cache.figures(conn, datetime.now(UTC)).summary()
    finally:
        close_cache(conn)
    assert stats["lookups_24h"] == 3 and stats["hits_24h"] == 1
