"""Benchmark of the SharePoint documents mirror and downloads (SPEC §7 "documents").

Runs the fake Microsoft Graph in its own process (so its CPU does not compete with syncd's for
the interpreter lock), 5 libraries of 10,000 files each, and measures:

1. the first enumeration of every library into a fresh cache (the syncd side in a fresh
   subprocess, so its peak RSS is its own): wall time, items/s, Graph requests as the connector
   and the fake count them, peak RSS;
2. a no-op delta of every library, repeated: requests (bar: 1 per library) and wall time of all
   libraries together (bar: < 300 ms), median and max;
3. a delta after 1 % of the files changed upstream (the fake's ``change`` helper);
4. a large file (1 GiB, added upstream and picked up by a delta) downloaded through syncd's
   local API versus a bare ``httpx`` stream of the same pre-authenticated URL
   (``GraphLibraries.download_url``), same chunk size, both read fully and discarded, in
   alternating rounds: MiB/s of each, their ratio (bar: syncd <= 1.2x the bare time) and the RSS
   of the serving process sampled every 50 ms during the syncd download (before, peak, growth;
   bar: a few MB). The API is ``syncd run`` itself over the cache the mirror step filled (no
   CRM; ``--download-via app``: ``make_app`` + ``DocumentDownloads.from_config`` + ``ApiServer``
   alone in a process). Warm-up downloads first: the first builds the API's Graph connector,
   then every API thread opens its cache connection;
5. the idle daemon with and without ``[sharepoint]`` (bench/daemon_bench.py): start to READY
   and idle RSS, side by side.

The syncd processes use the daemon's GIL switch interval (``API_SWITCH_INTERVAL_SECONDS``),
which matters a lot for the relay through waitress's threads.
The machine's load average is recorded: on a busy machine the wall times (and so the download
ratio) swing widely; the CPU seconds per GiB of each process do not.

Prints a table and writes JSON to bench/results/documents_bench.json. Only loopback is used.
``--profile DIR`` writes cProfile tables of the first enumeration and the 1 % delta.
    python bench/documents_bench.py [--libraries 5 --items 10000 --download-mib 1024]
    python bench/documents_bench.py --quick      # 5 x 1,000 files, 64 MiB, < 1 minute
                                                 # (writes documents_bench_quick.json)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import fake_process  # noqa: E402

from syncd.api.documents import CHUNK_SIZE  # noqa: E402
from syncd.connectors.sharepoint.settings import SharepointSettings  # noqa: E402

MIB = 1 << 20
API_THREADS = 8  # syncd.config.ApiSettings().threads, the daemon's default


# ------------------------------------------------------------------------------------------
# Shared helpers
# ------------------------------------------------------------------------------------------


def proc_status_mb(field: str, pid: int | str = "self") -> float:
    """A memory field of /proc/<pid>/status (VmRSS, VmHWM) in MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def vm_rss_mb(pid: int | str = "self") -> float:
    """A process's RSS now (MiB)."""
    return proc_status_mb("VmRSS", pid)


def peak_rss_mb() -> float:
    """This process's peak RSS so far (VmHWM, the same as getrusage's ru_maxrss) in MiB."""
    return proc_status_mb("VmHWM")


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:60] or "lib"


def make_settings(spec: dict[str, Any]) -> SharepointSettings:
    """``[sharepoint]`` for the fake: every library, no request budget of syncd's own."""
    return SharepointSettings.model_validate(
        {
            "tenant_id": spec["tenant_id"],
            "client_id": spec["client_id"],
            "graph_url": spec["graph_url"],
            "login_url": spec["login_url"],
            "ca_file": spec["ca_file"],
            "client_secret_file": spec["client_secret_file"],
            "requests_per_second": 0,
            "libraries": [
                {
                    "name": slug(lib["name"]),
                    "site": lib["site"],
                    "library": lib["name"],
                    "producers": [lib["name"]],
                    "permission": f"docs-{slug(lib['name'])}",
                }
                for lib in spec["libraries"]
            ],
        }
    )


def credential(spec: dict[str, Any]) -> tuple[str, str]:
    return "client_secret", Path(spec["client_secret_file"]).read_text().strip()


_CONTROL: list[httpx.Client] = []


def control(spec: dict[str, Any], verb: str, route: str, body: Any = None) -> Any:
    """A call to the fake's control API (one client kept for all of them)."""
    if not _CONTROL:
        _CONTROL.append(httpx.Client(timeout=600))
    url = spec["control"].rstrip("/") + "/" + route
    response = _CONTROL[0].request(verb, url, json=body)
    response.raise_for_status()
    return response.json()


# ------------------------------------------------------------------------------------------
# Role "mirror": steps 1-3 in a fresh process (its peak RSS is the mirror's own)
# ------------------------------------------------------------------------------------------


class TimedSource:
    """The Graph connector with the time spent in ``delta`` (request, wait, parse) summed, so
    the rest of a run is the engine's and SQLite's."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.delta_seconds = 0.0

    def resolve(self, site: str, library: str) -> Any:
        return self.inner.resolve(site, library)

    def delta(self, drive_id: str, link: str | None) -> Any:
        started = time.perf_counter()
        try:
            return self.inner.delta(drive_id, link)
        finally:
            self.delta_seconds += time.perf_counter() - started

    def download_url(self, drive_id: str, item_id: str) -> str:
        return str(self.inner.download_url(drive_id, item_id))

    def close(self) -> None:
        self.inner.close()


def profiled(fn: Any, spec: dict[str, Any], label: str) -> Any:
    """``fn()``, under cProfile when the benchmark was given ``--profile DIR`` (the engine's
    thread only: the connector's HTTP runs in its event-loop thread and shows as waiting)."""
    if not spec.get("profile"):
        return fn()
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        return fn()
    finally:
        profiler.disable()
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)
        directory = Path(spec["profile"])
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"documents_{label}.txt").write_text(text.getvalue())


def as_in_the_daemon() -> None:
    """The interpreter setting the daemon runs its lanes and API with (after READY)."""
    from syncd.daemon.service import API_SWITCH_INTERVAL_SECONDS

    sys.setswitchinterval(API_SWITCH_INTERVAL_SECONDS)


def role_mirror(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    rss_at_start = vm_rss_mb()
    from syncd.connectors.sharepoint.graph import GraphLibraries
    from syncd.engines.documents import DocumentMirror
    from syncd.state.db import connect

    as_in_the_daemon()

    settings = make_settings(spec)
    graph = GraphLibraries(settings, credential(spec), name="bench-graph")
    source = TimedSource(graph)
    conn = connect(spec["cache"])
    mirror = DocumentMirror(conn, source, settings)
    mirror.configure()
    names = mirror.names()
    fake = psutil.Process(spec["fake_pid"])
    me = psutil.Process()

    def cpu(process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    def run_all(full: bool = False) -> dict[str, Any]:
        control(spec, "POST", "reset_counters")
        graph_before, delta_before = graph.requests, source.delta_seconds
        fake_cpu, my_cpu = cpu(fake), cpu(me)
        started = time.perf_counter()
        reports = [mirror.run(name, full=full) for name in names]
        seconds = time.perf_counter() - started
        stats = control(spec, "GET", "stats")
        return {
            "seconds": seconds,
            "requests_connector": graph.requests - graph_before,
            "requests_fake": stats["requests"],
            "delta_requests_fake": stats["delta_requests"],
            "token_requests_fake": stats["token_requests"],
            "delta_seconds": source.delta_seconds - delta_before,
            "cpu_seconds": {"fake": cpu(fake) - fake_cpu, "syncd": cpu(me) - my_cpu},
            "per_library": [
                {
                    "library": r.library,
                    "kind": r.kind,
                    "pages": r.pages,
                    "requests": r.requests,
                    "upserted": r.upserted,
                    "deleted": r.deleted,
                    "item_count": r.item_count,
                    "skipped": r.skipped,
                }
                for r in reports
            ],
            "pages": sum(r.pages for r in reports),
            "upserted": sum(r.upserted for r in reports),
            "deleted": sum(r.deleted for r in reports),
            "item_count": sum(r.item_count for r in reports),
        }

    results: dict[str, Any] = {"rss_at_start_mb": rss_at_start}
    results["rss_before_enumeration_mb"] = vm_rss_mb()  # msgraph imported, connector built
    first = profiled(run_all, spec, "first_enumeration")
    first["items"] = conn.execute("SELECT count(*) FROM documents").fetchone()[0]
    first["files"] = first["item_count"]
    first["rss_after_mb"] = vm_rss_mb()
    first["peak_rss_mb"] = peak_rss_mb()
    results["first_enumeration"] = first

    noops = [run_all() for _ in range(spec["noop_repeats"])]
    results["noop_delta"] = {
        "runs": noops,
        "seconds": [run["seconds"] for run in noops],
        "requests": [run["requests_connector"] for run in noops],
        "requests_fake": [run["requests_fake"] for run in noops],
        "changed": [run["upserted"] + run["deleted"] for run in noops],
    }

    changed_upstream: dict[str, int] = {}
    for lib in spec["libraries"]:
        result = control(
            spec,
            "POST",
            "mutate",
            {
                "drive_id": lib["drive_id"],
                "op": "change",
                "percent": spec["change_percent"],
                "seed": 7,
            },
        )
        for kind, ids in result.items():
            changed_upstream[kind] = changed_upstream.get(kind, 0) + len(ids)
    changed = profiled(run_all, spec, "one_percent_delta")
    changed["changed_upstream"] = changed_upstream
    changed["rows_changed"] = changed["upserted"] + changed["deleted"]
    results["one_percent_delta"] = changed
    results["noop_after_change"] = run_all()

    # The large file for the download step, picked up by one more delta.
    target = spec["libraries"][0]
    big = control(
        spec,
        "POST",
        "mutate",
        {
            "drive_id": target["drive_id"],
            "op": "add_file",
            "name": "bench-large-video.mp4",
            "size": spec["download_bytes"],
            "kind": "mp4",
        },
    )
    pickup = run_all()
    results["large_file"] = {
        "id": big["id"],
        "drive_id": target["drive_id"],
        "size": spec["download_bytes"],
        "delta_requests": pickup["requests_connector"],
        "delta_upserted": pickup["upserted"],
    }
    results["peak_rss_mb_end"] = peak_rss_mb()
    conn.close()
    graph.close()
    json.dump(results, sys.stdout)


# ------------------------------------------------------------------------------------------
# Role "api": the local API with document downloads, in its own process
# ------------------------------------------------------------------------------------------


class _NoVat:
    def lookup(self, raw: str, *, fresh: bool = False) -> Any:
        raise AssertionError("not used by the benchmark")


class _NoLocations:
    def locations(self, country: str, kind: str | None) -> list[Any]:
        return []

    def as_of(self) -> str | None:
        return None


def role_api(spec_path: Path) -> None:
    """The local API alone (no lanes), built as the daemon builds it from the same
    configuration file: ``DocumentDownloads.from_config`` behind ``make_app`` and ``ApiServer``."""
    spec = json.loads(spec_path.read_text())
    from syncd.api.app import make_app
    from syncd.api.documents import DocumentDownloads
    from syncd.api.server import ApiServer
    from syncd.config import load_settings
    from syncd.runtime import open_cache
    from syncd.state.db import ThreadConnections

    as_in_the_daemon()
    settings = load_settings(Path(spec["config"]))
    connections = ThreadConnections(lambda: open_cache(settings))
    api = settings.api
    downloads = DocumentDownloads.from_config(
        settings, connections.get, max_concurrent=max(1, api.threads - 2)
    )
    app = make_app(_NoVat(), _NoLocations(), lambda: (True, {"status": "ok"}), documents=downloads)
    server = ApiServer(
        app,
        listen=api.listen,
        threads=api.threads,
        channel_timeout=api.request_timeout_seconds,
    )
    server.start()
    print(f"READY {server.address}", flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    server.stop(5)
    downloads.close()
    connections.close_all()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(spec: dict[str, Any], state: Path, path: Path) -> None:
    """syncd.toml for the daemon (and the API process): no CRM, the API on a free loopback
    port, Omniva off, ``[sharepoint]`` as :func:`make_settings` has it (the same library
    names, so the cache the mirror step filled is the daemon's)."""
    settings = make_settings(spec)
    text = (
        f'[state]\ndirectory = "{state}"\n'
        f'[api]\nlisten = "127.0.0.1:{free_port()}"\n[omniva]\nenabled = false\n'
        f'[sharepoint]\ntenant_id = "{settings.tenant_id}"\nclient_id = "{settings.client_id}"\n'
        f'client_secret_file = "{settings.client_secret_file}"\n'
        f'graph_url = "{settings.graph_url}"\nlogin_url = "{settings.login_url}"\n'
        f'ca_file = "{settings.ca_file}"\nrequests_per_second = 0\n'
    )
    for library in settings.libraries:
        text += (
            f'[[sharepoint.libraries]]\nname = "{library.name}"\nsite = "{library.site}"\n'
            f'library = "{library.library}"\nproducers = {json.dumps(list(library.producers))}\n'
            f'permission = "{library.permission}"\n'
        )
    path.write_text(text)


class ApiUnderTest:
    """What serves the downloads: ``syncd run`` itself (``via="daemon"``: its own documents
    lane does a delta of every library at start, waited for here) or the API alone in a
    process of its own (``via="app"``). ``pid`` is the process whose RSS is sampled."""

    def __init__(self, via: str, spec: dict[str, Any], spec_path: Path, cache: Path) -> None:
        self.via = via
        self._notify: socket.socket | None = None
        if via == "app":
            self.process = subprocess.Popen(
                [sys.executable, __file__, "--role", "api", "--spec", str(spec_path)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert self.process.stdout is not None
            line = self.process.stdout.readline().strip()
            if not line.startswith("READY "):
                self.close()
                raise SystemExit(f"the API process did not start: {line!r}")
            self.address = line.split(" ", 1)[1]
            return
        with sqlite3.connect(cache) as conn:
            before = conn.execute("SELECT max(last_delta_at) FROM document_libraries").fetchone()
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(cache.parent / "notify"))
        self._notify.settimeout(60)
        self.process = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "syncd"), "--config", spec["config"], "run"],
            cwd=ROOT,
            env={**os.environ, "NOTIFY_SOCKET": str(cache.parent / "notify")},
            stdin=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        while b"READY=1" not in self._notify.recv(4096):
            pass
        self.address = Path(spec["config"]).read_text().split('listen = "', 1)[1].split('"')[0]
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # the lane's deltas at start, then it idles
            with sqlite3.connect(cache) as conn:
                behind = conn.execute(
                    "SELECT count(*) FROM document_libraries WHERE last_delta_at <= ?", before
                ).fetchone()[0]
            if not behind:
                break
            time.sleep(0.1)
        else:
            self.close()
            raise SystemExit("the daemon's documents lane did not catch up")

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        if self.via == "app" and self.process.stdin is not None:
            self.process.stdin.close()
        else:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        if self._notify is not None:
            self._notify.close()


# ------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------


class RssSampler:
    """VmRSS of ``pid`` every ``interval`` seconds in a thread; :meth:`window` gives the
    samples between two moments."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.perf_counter(), vm_rss_mb(self.pid)))
            except (OSError, RuntimeError):
                return
            self._stop.wait(self.interval)

    def window(self, start: float, end: float) -> list[float]:
        return [rss for t, rss in list(self.samples) if start <= t <= end]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def read_stream(response: httpx.Response, digest: bool) -> tuple[int, str | None]:
    """Read ``response`` fully in CHUNK_SIZE pieces, discarding them (hashing if asked)."""
    total = 0
    hasher = hashlib.sha256() if digest else None
    for chunk in response.iter_raw(CHUNK_SIZE):
        total += len(chunk)
        if hasher is not None:
            hasher.update(chunk)
    return total, hasher.hexdigest() if hasher is not None else None


def bare_download(client: httpx.Client, url: str, digest: bool, cpu: Any = None) -> dict[str, Any]:
    """A bare httpx stream of the pre-authenticated URL (fetched beforehand, not timed)."""
    cpu_before = cpu() if cpu is not None else None
    started = time.perf_counter()
    with client.stream("GET", url) as response:
        response.raise_for_status()
        size, hexdigest = read_stream(response, digest)
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {
        "bytes": size,
        "seconds": seconds,
        "mib_per_s": size / MIB / seconds,
        "sha256": hexdigest,
    }
    if cpu is not None and cpu_before is not None:
        result["cpu_seconds"] = {k: v - cpu_before[k] for k, v in cpu().items()}
    return result


def api_download(
    client: httpx.Client,
    item_id: str,
    digest: bool,
    sampler: RssSampler | None = None,
    cpu: Any = None,
) -> dict[str, Any]:
    """The same file through syncd's local API (its Graph lookup included in the time)."""
    before = vm_rss_mb(sampler.pid) if sampler is not None else None
    cpu_before = cpu() if cpu is not None else None
    started = time.perf_counter()
    with client.stream("GET", f"/v1/documents/{item_id}/download") as response:
        response.raise_for_status()
        size, hexdigest = read_stream(response, digest)
    ended = time.perf_counter()
    seconds = ended - started
    result: dict[str, Any] = {
        "bytes": size,
        "seconds": seconds,
        "mib_per_s": size / MIB / seconds,
        "sha256": hexdigest,
    }
    if cpu is not None and cpu_before is not None:
        result["cpu_seconds"] = {k: v - cpu_before[k] for k, v in cpu().items()}
    if sampler is not None and before is not None:
        time.sleep(sampler.interval * 2)
        during = [*sampler.window(started, ended), before]
        result["api_rss_mb"] = {
            "before": before,
            "peak": max(during),
            "growth": max(during) - before,
            "after": vm_rss_mb(sampler.pid),
            "samples": len(during) - 1,
        }
    return result


def download_step(
    spec: dict[str, Any],
    large: dict[str, Any],
    cache: Path,
    args: argparse.Namespace,
    spec_path: Path,
) -> dict[str, Any]:
    from syncd.connectors.sharepoint.graph import GraphLibraries

    server = ApiUnderTest(args.download_via, spec, spec_path, cache)
    api, api_pid = server.address, server.pid
    links = GraphLibraries(make_settings(spec), credential(spec), name="bench-bare")
    sampler = RssSampler(api_pid)
    # Both clients made once, outside the timings (a client loads the CA bundle when made).
    bare_client = httpx.Client(timeout=60)
    api_client = httpx.Client(base_url=f"http://{api}", timeout=60)
    try:
        with sqlite3.connect(cache) as conn:
            small = conn.execute(
                "SELECT d.id, l.drive_id FROM documents AS d JOIN document_libraries AS l "
                "ON l.name = d.library WHERE d.kind = 'file' AND d.in_scope = 1 "
                "AND d.size BETWEEN 100000 AND 5000000 ORDER BY d.id LIMIT 1"
            ).fetchone()
        rss_started = vm_rss_mb(api_pid)
        # Warm-up: the first download builds the API's Graph connector (imports msgraph) ...
        warm = api_download(api_client, small[0], False)
        rss_connector = vm_rss_mb(api_pid)
        # ... and each API worker thread opens its own cache connection on its first request
        # (~1 MB each): let every thread serve downloads (a new connection each) first.
        for _ in range(2 * API_THREADS):
            with api_client.stream(
                "GET", f"/v1/documents/{small[0]}/download", headers={"Connection": "close"}
            ) as response:
                response.raise_for_status()
                read_stream(response, False)
        bare_download(bare_client, links.download_url(small[1], small[0]), False)
        rss_warm = vm_rss_mb(api_pid)
        processes = {
            "fake": psutil.Process(spec["fake_pid"]),
            "api": psutil.Process(api_pid),
            "client": psutil.Process(),
        }

        def cpu() -> dict[str, float]:
            return {name: sum(p.cpu_times()[:2]) for name, p in processes.items()}

        rounds = []
        for _ in range(args.download_rounds):
            url = links.download_url(large["drive_id"], large["id"])
            bare = bare_download(bare_client, url, args.hash, cpu)
            syncd = api_download(api_client, large["id"], args.hash, sampler, cpu)
            for result in (bare, syncd):
                if result["bytes"] != large["size"]:
                    raise SystemExit(f"short download: {result['bytes']} of {large['size']}")
            if args.hash and bare["sha256"] != syncd["sha256"]:
                raise SystemExit("the two downloads differ")
            rounds.append({"bare": bare, "syncd": syncd})
    finally:
        bare_client.close()
        api_client.close()
        sampler.stop()
        links.close()
        server.close()
    bare_rates = [r["bare"]["mib_per_s"] for r in rounds]
    syncd_rates = [r["syncd"]["mib_per_s"] for r in rounds]
    growths = [r["syncd"]["api_rss_mb"]["growth"] for r in rounds]
    worst = max(rounds, key=lambda r: r["syncd"]["api_rss_mb"]["growth"])["syncd"]["api_rss_mb"]
    return {
        "bytes": large["size"],
        "chunk_size": CHUNK_SIZE,
        "hashed": args.hash,
        "api_rss_mb_at_start": rss_started,
        "api_rss_mb_after_first_download": rss_connector,
        "api_rss_mb_after_warmup": rss_warm,
        "api_threads": API_THREADS,
        "served_by": "syncd run (the daemon)" if args.download_via == "daemon" else "make_app",
        "warmup_download_bytes": warm["bytes"],
        "rounds": rounds,
        "bare_mib_per_s": statistics.median(bare_rates),
        "syncd_mib_per_s": statistics.median(syncd_rates),
        # each round's syncd time over the bare time just before it (the same machine load)
        "time_ratio": statistics.median(
            r["syncd"]["seconds"] / r["bare"]["seconds"] for r in rounds
        ),
        "best_bare_mib_per_s": max(bare_rates),
        "best_syncd_mib_per_s": max(syncd_rates),
        "best_time_ratio": max(bare_rates) / max(syncd_rates),
        # CPU seconds per GiB moved, by process (median over the rounds): independent of
        # what else runs on the machine, unlike the wall times
        "cpu_seconds_per_gib": {
            path: {
                name: statistics.median(
                    r[path]["cpu_seconds"][name] * (1 << 30) / r[path]["bytes"] for r in rounds
                )
                for name in (("fake", "client") if path == "bare" else ("fake", "api", "client"))
            }
            for path in ("bare", "syncd")
        },
        "api_rss_growth_mb_max": max(growths),
        "api_rss_worst_round": worst,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--libraries", type=int, default=5)
    parser.add_argument("--items", type=int, default=10_000, help="files per library")
    parser.add_argument("--noop-repeats", type=int, default=5)
    parser.add_argument("--change-percent", type=float, default=1.0)
    parser.add_argument("--download-mib", type=int, default=1024, help="size of the large file")
    parser.add_argument(
        "--download-rounds",
        type=int,
        default=5,
        help="bare and syncd downloads, alternating, this many times each",
    )
    parser.add_argument(
        "--download-via",
        choices=("daemon", "app"),
        default="daemon",
        help="serve the downloads by `syncd run` over the mirrored cache (default), or by the "
        "API alone (make_app + DocumentDownloads.from_config + ApiServer) in its own process",
    )
    parser.add_argument(
        "--hash",
        action="store_true",
        help="sha256 both downloads' bytes (and check they are equal)",
    )
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="daemon idle sampling")
    parser.add_argument(
        "--daemon-items",
        type=int,
        default=1000,
        help="files per library for the daemon with [sharepoint]",
    )
    parser.add_argument(
        "--daemon-restarts",
        type=int,
        default=4,
        help="extra daemon starts over the same state, for start-to-READY",
    )
    parser.add_argument("--skip-daemon", action="store_true", help="leave out step 5")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="cProfile the first enumeration and the 1 %% delta (the engine's "
        "thread) into DIR/documents_*.txt",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="5 x 1,000 files, a 64 MiB file, 1 download round, 3 s idle",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: bench/results/documents_bench.json (--quick: documents_bench_quick.json)",
    )
    parser.add_argument("--role", choices=("mirror", "api"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "mirror":
        role_mirror(args.spec)
        return
    if args.role == "api":
        role_api(args.spec)
        return
    if args.out is None:
        name = "documents_bench_quick.json" if args.quick else "documents_bench.json"
        args.out = ROOT / "bench" / "results" / name
    if args.quick:
        args.items, args.download_mib, args.download_rounds = 1000, 64, 1
        args.noop_repeats, args.idle_seconds, args.daemon_restarts = 3, 3.0, 1
    run(args)


def run(args: argparse.Namespace) -> None:
    begun = time.perf_counter()
    fake, details = fake_process.start_sharepoint_fake(
        libraries=args.libraries, items=args.items, seed=1
    )
    results: dict[str, Any] = {
        "dataset": {
            "libraries": args.libraries,
            "files_per_library": args.items,
            "large_file_bytes": args.download_mib * MIB,
            "quick": args.quick,
            "change_percent": args.change_percent,
        },
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
    }
    try:
        with tempfile.TemporaryDirectory(prefix="syncd-documents-bench-") as tmp:
            state = Path(tmp) / "state"
            state.mkdir(mode=0o700)
            cache = state / "cache.sqlite3"  # the daemon's, when it serves the downloads
            config = Path(tmp) / "syncd.toml"
            spec = {
                **details,
                "cache": str(cache),
                "fake_pid": fake.pid,
                "noop_repeats": args.noop_repeats,
                "change_percent": args.change_percent,
                "download_bytes": args.download_mib * MIB,
                "profile": str(args.profile.resolve()) if args.profile else None,
            }
            spec["config"] = str(config)
            write_config(spec, state, config)
            spec_path = Path(tmp) / "spec.json"
            spec_path.write_text(json.dumps(spec))
            mirror = subprocess.run(
                [sys.executable, __file__, "--role", "mirror", "--spec", str(spec_path)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
                check=True,
            )
            results.update(json.loads(mirror.stdout))
            results["download"] = download_step(spec, results["large_file"], cache, args, spec_path)
    finally:
        fake.send_signal(signal.SIGTERM)
        try:
            fake.wait(timeout=30)
        except subprocess.TimeoutExpired:
            fake.kill()
    if not args.skip_daemon:
        import daemon_bench

        results["daemon"] = {
            "without_sharepoint": daemon_bench.measure(
                args.idle_seconds, restarts=args.daemon_restarts
            ),
            "with_sharepoint": daemon_bench.measure(
                args.idle_seconds,
                sharepoint_libraries=args.libraries,
                sharepoint_items=args.daemon_items,
                restarts=args.daemon_restarts,
            ),
        }
    results["bench_seconds"] = time.perf_counter() - begun
    results["load_average_at_end"] = os.getloadavg()
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.out}")


def print_table(results: dict[str, Any]) -> None:
    data = results["dataset"]
    first, noop, one = (
        results["first_enumeration"],
        results["noop_delta"],
        results["one_percent_delta"],
    )
    libraries = data["libraries"]
    noop_ms = [s * 1000 for s in noop["seconds"]]
    rows = [
        (
            "dataset",
            f"{libraries} libraries x {data['files_per_library']:,} files "
            f"({first['items']:,} items with folders)",
            "",
        ),
        (
            "machine",
            f"{results['cpus']} CPUs, load average "
            f"{results['load_average_at_start'][0]:.1f} at start, "
            f"{results['load_average_at_end'][0]:.1f} at end",
            "",
        ),
        (
            "first enumeration",
            f"{first['seconds']:.1f} s, {first['files'] / first['seconds']:,.0f} "
            f"files/s ({first['items'] / first['seconds']:,.0f} items/s)",
            "",
        ),
        (
            "  Graph requests: connector / fake",
            f"{first['requests_connector']:,} / {first['requests_fake']:,} "
            f"({first['pages']:,} delta pages, {first['token_requests_fake']} token)",
            "",
        ),
        (
            "  time in delta() (request + parse)",
            f"{first['delta_seconds']:.1f} s of {first['seconds']:.1f} s; rest is engine + SQLite",
            "",
        ),
        (
            "  CPU s: fake / syncd",
            f"{first['cpu_seconds']['fake']:.1f} / {first['cpu_seconds']['syncd']:.1f}",
            "",
        ),
        (
            "  RSS: before / after / peak",
            f"{results['rss_before_enumeration_mb']:.0f} / {first['rss_after_mb']:.0f} / "
            f"{first['peak_rss_mb']:.0f} MB (before: msgraph loaded, connector built)",
            "",
        ),
        (
            "no-op delta, all libraries",
            f"median {statistics.median(noop_ms):.0f} ms, max {max(noop_ms):.0f} ms "
            f"({len(noop_ms)} runs)",
            "< 300 ms",
        ),
        (
            "  requests per no-op delta",
            f"connector {sorted(set(noop['requests']))}, fake {sorted(set(noop['requests_fake']))} "
            f"for {libraries} libraries; rows changed {sorted(set(noop['changed']))}",
            f"= {libraries} (1 per library)",
        ),
        (
            f"{data['change_percent']:g} % changed delta",
            f"{one['seconds'] * 1000:.0f} ms ({one['delta_seconds'] * 1000:.0f} in delta()), "
            f"{one['requests_connector']} requests ({one['pages']} pages), "
            f"{one['rows_changed']:,} rows changed",
            "",
        ),
        (
            "  changed upstream",
            ", ".join(f"{v} {k}" for k, v in one["changed_upstream"].items()),
            "",
        ),
    ]
    if "download" in results:
        d = results["download"]
        worst = d["api_rss_worst_round"]
        server = "daemon" if d["served_by"].startswith("syncd run") else "API process"
        rows += [
            (
                f"download {d['bytes'] / MIB:,.0f} MiB: bare httpx",
                f"{d['bare_mib_per_s']:,.0f} MiB/s median, best {d['best_bare_mib_per_s']:,.0f}",
                "",
            ),
            (
                f"  through syncd's local API ({server})",
                f"{d['syncd_mib_per_s']:,.0f} MiB/s median, best {d['best_syncd_mib_per_s']:,.0f}",
                "",
            ),
            (
                "  time syncd / bare",
                f"{d['time_ratio']:.2f}x median of {len(d['rounds'])} "
                f"rounds ({d['best_time_ratio']:.2f}x best vs best); chunk "
                f"{d['chunk_size'] // 1024} KiB, {'hashed' if d['hashed'] else 'not hashed'}",
                "<= 1.2x",
            ),
            (
                f"  {server} RSS during it",
                f"before {worst['before']:.1f}, peak {worst['peak']:.1f} MB: "
                f"+{d['api_rss_growth_mb_max']:.1f} MB (worst round)",
                "a few MB",
            ),
            (
                "  CPU s/GiB bare: fake / client",
                " / ".join(f"{v:.2f}" for v in d["cpu_seconds_per_gib"]["bare"].values()),
                "",
            ),
            (
                f"  CPU s/GiB syncd: fake / {server} / client",
                " / ".join(f"{v:.2f}" for v in d["cpu_seconds_per_gib"]["syncd"].values())
                + f" ({results['cpus']} CPUs)",
                "",
            ),
            (
                f"  {server} RSS: start / 1st / warmed up",
                f"{d['api_rss_mb_at_start']:.0f} / {d['api_rss_mb_after_first_download']:.0f} / "
                f"{d['api_rss_mb_after_warmup']:.0f} MB (1st download builds the API's Graph "
                f"connector; then {d['api_threads']} threads open their cache connections)",
                "",
            ),
        ]
    if "daemon" in results:
        without, with_sp = (
            results["daemon"]["without_sharepoint"],
            results["daemon"]["with_sharepoint"],
        )
        rows += [
            ("idle daemon: without / with SharePoint", "", ""),
            (
                "  start to READY (fresh state)",
                f"{without['start_to_ready_seconds']:.2f} s / "
                f"{with_sp['start_to_ready_seconds']:.2f} s",
                "< 1 s",
            ),
            (
                "  restart to READY (median, max)",
                " / ".join(
                    f"{statistics.median(r['restart_to_ready_seconds']):.2f} s "
                    f"({max(r['restart_to_ready_seconds']):.2f})"
                    for r in (without, with_sp)
                )
                + f", {len(without['restart_to_ready_seconds'])} restarts each",
                "< 1 s",
            )
            if without.get("restart_to_ready_seconds")
            else ("  restarts", "none", ""),
            (
                "  SharePoint mirrored after start",
                f"{with_sp['sharepoint_libraries']} x "
                f"{with_sp['sharepoint_files_per_library']:,} files, "
                f"{with_sp['start_to_documents_mirrored_seconds']:.1f} s after spawn",
                "",
            ),
            (
                "  idle RSS",
                f"{without['idle_rss_mb']:.0f} MB / {with_sp['idle_rss_mb']:.0f} MB",
                "<= 80 MB without SharePoint",
            ),
            (
                "  idle CPU",
                f"{without['idle_cpu_percent']:.1f} % / {with_sp['idle_cpu_percent']:.1f} %",
                "~ 0 %",
            ),
            (
                "  msgraph imported",
                f"{without['msgraph_loaded']} / {with_sp['msgraph_loaded']}",
                "",
            ),
        ]
    width = max(len(r[0]) for r in rows)
    for name, value, bar in rows:
        print(f"{name:<{width}}  {value:<66} {bar}")


if __name__ == "__main__":
    main()
