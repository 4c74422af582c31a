"""The watchdog's eyes: a lane inside work without progress past its deadline is hung, an idle
lane is not, a dead lane thread is; and the daemon stops pinging systemd's watchdog while a lane
is hung (systemd then restarts it), says so once, and pings again once the lane recovers."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.daemon.liveness import Heartbeat, Liveness
from tests.conftest import make_api_client, write_config

ROOT = Path(__file__).parents[1]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_idle_lane_is_well_however_long_it_waits() -> None:
    clock = Clock()
    beat = Heartbeat("crm", 10, clock=clock)
    clock.now += 3600
    assert beat.check() is None


def test_work_without_a_beat_past_the_deadline_is_hung_and_a_beat_cures_it() -> None:
    clock = Clock()
    liveness = Liveness({"crm": 10}, clock=clock)
    beat = liveness.heartbeat("crm")
    with beat.working("a full resync"):
        clock.now += 9
        assert liveness.hung() == []
        clock.now += 2
        [hung] = liveness.hung()
        assert hung.lane == "crm" and "a full resync" in hung.why and "11 s" in hung.why
        assert liveness.report() == {"crm": hung.why}
        beat.beat()
        assert liveness.hung() == []
    clock.now += 100
    assert liveness.report() == {"crm": "ok"}


def test_a_lane_whose_thread_ended_is_hung() -> None:
    liveness = Liveness()
    beat = liveness.heartbeat("push")
    thread = threading.Thread(target=lambda: None)
    beat.thread = thread
    thread.start()
    thread.join()
    [hung] = liveness.hung()
    assert "thread has ended" in hung.why


def test_the_daemon_stops_pinging_the_watchdog_while_a_lane_hangs(
    tmp_path: Path, short_dir: Path
) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = short_dir / "notify.sock"
    notify.bind(str(notify_path))
    notify.settimeout(0.2)
    api_socket = short_dir / "api.sock"
    with FakeBitrix24(seed=5, companies=5, contacts=20, devices=10, token="t") as fake:
        config = write_config(tmp_path, fake, "[mirror]\ninterval_seconds = 1\njitter_seconds = 0\n"
                              "[watchdog]\ncrm_lane_seconds = 2\n")
        config.write_text(config.read_text().replace('listen = "127.0.0.1:0"',
                                                     f'listen = "unix:{api_socket}"'))
        # the first mirror cycle's first request hangs for 6 s (the client's timeout is 30 s)
        fake.faults.add("slow", times=1, delay=6.0)
        env = {"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "200000",
               "PATH": "/usr/bin:/bin"}
        daemon = subprocess.Popen([sys.executable, "-m", "syncd", "--config", str(config), "run"],
                                  cwd=ROOT, stderr=subprocess.PIPE, text=True, env=env)
        messages: list[tuple[float, str]] = []
        health_while_hung = None
        try:
            started = time.monotonic()
            hung = False
            while time.monotonic() - started < 30:  # ends once the lane has recovered
                with contextlib.suppress(TimeoutError):
                    messages.append((time.monotonic() - started, notify.recv(4096).decode()))
                hung = hung or any("HUNG" in m for _, m in messages)
                if hung and health_while_hung is None:
                    with make_api_client(f"unix:{api_socket}") as client:
                        health_while_hung = client.get("/healthz")
                if hung and messages[-1][1] == "WATCHDOG=1":
                    break
        finally:
            daemon.send_signal(signal.SIGTERM)
            _, stderr = daemon.communicate(timeout=30)
            notify.close()
    assert daemon.returncode == 0, stderr
    hung_at = next(t for t, m in messages if "STATUS=HUNG" in m)
    pings = [t for t, m in messages if m == "WATCHDOG=1"]
    assert any(t < hung_at for t in pings)  # pinged while all was well
    recovered_at = next(t for t, m in messages if t > hung_at and m == "WATCHDOG=1")
    assert recovered_at - hung_at > 2  # no pings while the lane hung ...
    assert "no progress" in stderr and "systemd will restart syncd" in stderr
    assert stderr.count("no more watchdog pings") == 1  # said once
    assert "every lane is making progress again" in stderr  # ... and again after it recovered
    assert health_while_hung is not None and health_while_hung.status_code == 503
    assert health_while_hung.json()["lanes"]["crm"] != "ok"
    status = subprocess.run([sys.executable, "-m", "syncd", "--config", str(config), "status",
                             "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    [watchdog] = [j for j in json.loads(status.stdout)["jobs"] if j["job"] == "watchdog"]
    assert watchdog["state"] == "ok"  # recovered, and the problem kept for the record
    assert "no progress" in watchdog["last_error"]
