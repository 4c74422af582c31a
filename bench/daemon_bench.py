"""Benchmark of the idle daemon (SPEC §7): start to READY, RSS and CPU between jobs.

Starts the fake Bitrix24 and `syncd run` (no SharePoint configured) with a NOTIFY_SOCKET, times
spawn -> READY=1, waits for the first mirror cycle, then samples the daemon's RSS and CPU while
it idles. Prints a table and writes bench/results/daemon.json.
    python bench/daemon_bench.py [--idle-seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from syncd.connectors.crm.bitrix24.fake import FakeBitrix24  # noqa: E402


def first_cycle_done(cache: Path) -> bool:
    if not cache.exists():
        return False
    try:
        with sqlite3.connect(cache) as conn:
            return bool(conn.execute("SELECT count(*) FROM sync_runs").fetchone()[0])
    except sqlite3.OperationalError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "daemon.json")
    args = parser.parse_args()
    with (
        FakeBitrix24(seed=1, companies=300, contacts=2000, devices=1000, token="t") as fake,
        tempfile.TemporaryDirectory() as tmp,
    ):
        base = Path(tmp)
        (base / "token").write_text(fake.token)
        config = base / "syncd.toml"
        config.write_text(
            "[crm]\nrequests_per_second = 0\n"  # the fake has no rate limit
            f'[crm.bitrix24]\nurl = "{fake.base_url}"\nwebhook_token_file = "{base / "token"}"\n'
            f'[mirror]\ninterval_seconds = 60\n[state]\ndirectory = "{base / "state"}"\n'
            '[api]\nlisten = "127.0.0.1:0"\n[omniva]\nenabled = false\n'
        )
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(base / "notify"))
        notify.settimeout(30)
        env = {**os.environ, "NOTIFY_SOCKET": str(base / "notify")}
        started = time.perf_counter()
        daemon = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "syncd"), "--config", str(config), "run"],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        while b"READY=1" not in notify.recv(4096):
            pass
        ready_seconds = time.perf_counter() - started
        cache = base / "state" / "cache.sqlite3"
        deadline = time.monotonic() + 60
        while not first_cycle_done(cache) and time.monotonic() < deadline:
            time.sleep(0.05)
        process = psutil.Process(daemon.pid)
        time.sleep(1.0)  # let the first cycle's garbage settle before sampling
        process.cpu_percent(None)
        samples = []
        end = time.monotonic() + args.idle_seconds
        while time.monotonic() < end:
            time.sleep(0.5)
            samples.append(process.memory_info().rss / 2**20)
        cpu = process.cpu_percent(None)
        modules = "msgraph" in " ".join(m.path for m in process.memory_maps())
        daemon.send_signal(signal.SIGTERM)
        stop_started = time.perf_counter()
        daemon.wait(timeout=15)
        results = {
            "start_to_ready_seconds": ready_seconds,
            "idle_rss_mb": max(samples),
            "idle_cpu_percent": cpu,
            "idle_seconds": args.idle_seconds,
            "msgraph_loaded": modules,
            "stop_seconds": time.perf_counter() - stop_started,
        }
    rows = [
        ("start to READY", f"{results['start_to_ready_seconds']:.2f} s", "< 1 s"),
        ("idle RSS (after the first cycle)", f"{results['idle_rss_mb']:.0f} MB", "<= 80 MB"),
        (
            "idle CPU",
            f"{results['idle_cpu_percent']:.1f} % over {args.idle_seconds:.0f} s",
            "~ 0 %",
        ),
        ("msgraph imported", str(results["msgraph_loaded"]), "no"),
        ("SIGTERM to exit", f"{results['stop_seconds']:.2f} s", "< 10 s"),
    ]
    for name, value, bar in rows:
        print(f"{name:<34} {value:<26} {bar}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
