"""Benchmark of the idle daemon (SPEC §7): start to READY, RSS and CPU between jobs.

Starts the fake Bitrix24 and `syncd run` (no SharePoint configured) with a NOTIFY_SOCKET, times
spawn -> READY=1, waits for the first mirror cycle, then samples the daemon's RSS and CPU while
it idles. Prints a table and writes bench/results/daemon.json.
    python bench/daemon_bench.py [--idle-seconds 10]

With ``--sharepoint`` it then does the same with ``[sharepoint]`` configured too (an in-process
fake Graph, 5 libraries of 1,000 files; it also waits for every library's first delta before
sampling) and prints both side by side; that pair goes to bench/results/daemon_sharepoint.json.
    python bench/daemon_bench.py --sharepoint [--sharepoint-libraries 5 --sharepoint-items 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def msgraph_loaded(process: psutil.Process) -> bool:
    """Whether the daemon has loaded the SharePoint stack (msgraph-sdk, azure-identity).

    Those are pure Python and never show in the memory maps themselves; what does is the native
    part of ``cryptography``, which azure-identity (through msal) imports and nothing else the
    daemon loads without SharePoint does."""
    paths = " ".join(m.path for m in process.memory_maps())
    return "msgraph" in paths or "cryptography/hazmat/bindings" in paths


def documents_cycle_done(cache: Path, libraries: int) -> bool:
    """Whether every configured SharePoint library has finished its first delta."""
    if not cache.exists():
        return False
    try:
        with sqlite3.connect(cache) as conn:
            done = conn.execute(
                "SELECT count(*) FROM document_libraries WHERE last_delta_at IS NOT NULL"
            ).fetchone()[0]
    except sqlite3.OperationalError:
        return False
    return bool(done >= libraries)


def sharepoint_section(fake: Any, base: Path) -> str:
    """``[sharepoint]`` pointing at ``fake`` (a started FakeGraph), one entry per library."""
    secret = base / "sharepoint_client_secret"
    secret.write_text(fake.client_secret)
    secret.chmod(0o600)
    text = (
        f'[sharepoint]\ntenant_id = "{fake.tenant_id}"\nclient_id = "{fake.client_id}"\n'
        f'client_secret_file = "{secret}"\ngraph_url = "{fake.graph_url}"\n'
        f'login_url = "{fake.login_url}"\nca_file = "{fake.ca_file}"\n'
        "requests_per_second = 0\n"  # the fake has no rate limit
    )
    for library in fake.libraries():
        name = "".join(c if c.isalnum() else "-" for c in library["name"].lower())
        text += (
            f'[[sharepoint.libraries]]\nname = "{name}"\n'
            f'site = "{library["hostname"]}:{library["site_path"]}"\n'
            f'library = "{library["name"]}"\nproducers = ["{library["name"]}"]\n'
            f'permission = "docs-{name}"\n'
        )
    return text


def start_daemon(config: Path, notify: socket.socket) -> tuple[subprocess.Popen[bytes], float]:
    """Spawn ``syncd run``; the process and the seconds until it sent READY=1."""
    env = {**os.environ, "NOTIFY_SOCKET": notify.getsockname()}
    started = time.perf_counter()
    daemon = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "syncd"), "--config", str(config), "run"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    while b"READY=1" not in notify.recv(4096):
        pass
    return daemon, time.perf_counter() - started


def measure(
    idle_seconds: float,
    *,
    sharepoint_libraries: int = 0,
    sharepoint_items: int = 1000,
    restarts: int = 0,
) -> dict[str, Any]:
    """Start the daemon against the fake CRM (and, with ``sharepoint_libraries``, a fake Graph
    with that many libraries of ``sharepoint_items`` files each), time spawn -> READY=1, wait
    for the first cycle(s), sample RSS and CPU while it idles, stop it. With ``restarts``, then
    start it that many times more over the same state (spawn -> READY=1, then SIGTERM), for
    start-up times less at the mercy of what else runs on the machine."""
    with contextlib.ExitStack() as stack:
        fake = stack.enter_context(
            FakeBitrix24(seed=1, companies=300, contacts=2000, devices=1000, token="t")
        )
        base = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        (base / "token").write_text(fake.token)
        config = base / "syncd.toml"
        text = (
            "[crm]\nrequests_per_second = 0\n"  # the fake has no rate limit
            f'[crm.bitrix24]\nurl = "{fake.base_url}"\nwebhook_token_file = "{base / "token"}"\n'
            f'[mirror]\ninterval_seconds = 60\n[state]\ndirectory = "{base / "state"}"\n'
            '[api]\nlisten = "127.0.0.1:0"\n[omniva]\nenabled = false\n'
        )
        if sharepoint_libraries:
            from syncd.connectors.sharepoint.fake import FakeGraph

            graph = stack.enter_context(FakeGraph())
            for index in range(sharepoint_libraries):
                producer = f"Producer {index + 1}"
                drive_id = graph.add_library(
                    "contoso.sharepoint.com", "/sites/Manufacturers", producer
                )
                graph.seed_library(
                    drive_id, files=sharepoint_items, producers=(producer,), seed=1 + index
                )
            text += sharepoint_section(graph, base)
        config.write_text(text)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        stack.callback(notify.close)
        notify.bind(str(base / "notify"))
        notify.settimeout(30)
        started = time.perf_counter()
        daemon, ready_seconds = start_daemon(config, notify)
        cache = base / "state" / "cache.sqlite3"
        deadline = time.monotonic() + 60
        while not first_cycle_done(cache) and time.monotonic() < deadline:
            time.sleep(0.05)
        first_cycle_seconds = time.perf_counter() - started
        documents_seconds = None
        if sharepoint_libraries:
            deadline = time.monotonic() + 300
            while (
                not documents_cycle_done(cache, sharepoint_libraries)
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)
            documents_seconds = time.perf_counter() - started
        process = psutil.Process(daemon.pid)
        time.sleep(1.0)  # let the first cycle's garbage settle before sampling
        process.cpu_percent(None)
        samples = []
        end = time.monotonic() + idle_seconds
        while time.monotonic() < end:
            time.sleep(0.5)
            samples.append(process.memory_info().rss / 2**20)
        cpu = process.cpu_percent(None)
        modules = msgraph_loaded(process)
        daemon.send_signal(signal.SIGTERM)
        stop_started = time.perf_counter()
        daemon.wait(timeout=15)
        results: dict[str, Any] = {
            "start_to_ready_seconds": ready_seconds,
            "idle_rss_mb": max(samples),
            "idle_cpu_percent": cpu,
            "idle_seconds": idle_seconds,
            "msgraph_loaded": modules,
            "stop_seconds": time.perf_counter() - stop_started,
        }
        if restarts:
            again = []
            for _ in range(restarts):
                daemon, seconds = start_daemon(config, notify)
                again.append(seconds)
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=15)
            results["restart_to_ready_seconds"] = again
        if sharepoint_libraries:
            results.update(
                sharepoint_libraries=sharepoint_libraries,
                sharepoint_files_per_library=sharepoint_items,
                start_to_first_crm_cycle_seconds=first_cycle_seconds,
                start_to_documents_mirrored_seconds=documents_seconds,
                documents_mirrored=documents_cycle_done(cache, sharepoint_libraries),
            )
    return results


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    idle = results["idle_seconds"]
    restarts = results.get("restart_to_ready_seconds")
    extra = []
    if restarts:
        extra.append(
            (
                f"restart to READY (median of {len(restarts)})",
                f"{statistics.median(restarts):.2f} s (max {max(restarts):.2f})",
                "< 1 s",
            )
        )
    return [
        ("start to READY", f"{results['start_to_ready_seconds']:.2f} s", "< 1 s"),
        *extra,
        ("idle RSS (after the first cycle)", f"{results['idle_rss_mb']:.0f} MB", "<= 80 MB"),
        ("idle CPU", f"{results['idle_cpu_percent']:.1f} % over {idle:.0f} s", "~ 0 %"),
        ("msgraph imported", str(results["msgraph_loaded"]), "no"),
        ("SIGTERM to exit", f"{results['stop_seconds']:.2f} s", "< 10 s"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "daemon.json")
    parser.add_argument(
        "--restarts",
        type=int,
        default=0,
        help="then start the daemon this many times more over the same state and report "
        "those start-to-READY times too",
    )
    parser.add_argument(
        "--sharepoint",
        action="store_true",
        help="also run with [sharepoint] configured (a fake Graph) and print both side by side; "
        "writes daemon_sharepoint.json next to --out",
    )
    parser.add_argument("--sharepoint-libraries", type=int, default=5)
    parser.add_argument(
        "--sharepoint-items", type=int, default=1000, help="files per library (--sharepoint)"
    )
    args = parser.parse_args()
    results = measure(args.idle_seconds, restarts=args.restarts)
    if not args.sharepoint:
        for name, value, bar in table_rows(results):
            print(f"{name:<34} {value:<26} {bar}")
    else:
        with_sharepoint = measure(
            args.idle_seconds,
            sharepoint_libraries=args.sharepoint_libraries,
            sharepoint_items=args.sharepoint_items,
            restarts=args.restarts,
        )
        print(f"{'':<34} {'without SharePoint':<26} {'with SharePoint':<26} bar")
        for (name, value, bar), (_, other, _) in zip(
            table_rows(results), table_rows(with_sharepoint), strict=True
        ):
            if name == "msgraph imported":
                bar = "no / yes"
            elif name.startswith("idle RSS"):
                bar = "<= 80 MB without SharePoint"
            print(f"{name:<34} {value:<26} {other:<26} {bar}")
        print(
            f"{'SharePoint libraries mirrored':<34} {'':<26} "
            f"{with_sharepoint['sharepoint_libraries']} x "
            f"{with_sharepoint['sharepoint_files_per_library']:,} files in "
            f"{with_sharepoint['start_to_documents_mirrored_seconds']:.1f} s"
        )
        sharepoint_out = args.out.with_name("daemon_sharepoint.json")
        sharepoint_out.parent.mkdir(parents=True, exist_ok=True)
        sharepoint_out.write_text(
            json.dumps(
                {"without_sharepoint": results, "with_sharepoint": with_sharepoint}, indent=2
            )
        )
        print(f"\nwritten to {sharepoint_out}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
