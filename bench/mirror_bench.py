"""Benchmark of the CRM mirror against the loopback fake Bitrix24 (SPEC §7).

Runs the fake in its own process (so its CPU does not compete with the engine for the GIL),
seeds it with the large dataset and measures:

* a full mirror into a fresh cache: wall time, records/s overall and for the apply side alone
  (wall time minus the time the engine waited for the next page), peak RSS, request count,
* the bare fetch-and-parse time of the same requests (the chained batches the mirror sent,
  replayed with plain httpx + orjson: the floor the mirror is compared with),
* p50/p99 latency of portal-like read queries run by a separate process throughout a second
  full resync over the populated cache (and the invariants that reader checks),
* a no-op incremental cycle and one after 1 % of the records changed,
* the same under Bitrix24's real limits (a second fake with the leaky bucket, burst 50 draining
  2/s, and the per-method operating-time budget, 480 s per 10 min): a full mirror while a
  service request is pushed every few seconds through the same request budget (its delivery
  latency), an ID sweep, a no-op and a 1 %-changed cycle.

Prints a table and writes JSON to bench/results/mirror.json.
    python bench/mirror_bench.py [--contacts 100000 --companies 20000 --devices 50000]
        [--no-limited] [--operating-cost 0.05]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import fake_process  # noqa: E402

from syncd.connectors.budget import RequestBudget  # noqa: E402
from syncd.connectors.crm.base import Page  # noqa: E402
from syncd.connectors.crm.bitrix24.adapter import Bitrix24Adapter  # noqa: E402
from syncd.connectors.crm.bitrix24.client import Bitrix24Client  # noqa: E402
from syncd.connectors.crm.bitrix24.push import Bitrix24Pusher  # noqa: E402
from syncd.connectors.http import RetryPolicy  # noqa: E402
from syncd.core.draft import ServiceRequestDraft  # noqa: E402
from syncd.core.entities import ENTITY_ORDER, Entity  # noqa: E402
from syncd.engines.mirror import MirrorEngine, MirrorOptions  # noqa: E402
from syncd.mappings.loader import load_mapping_set  # noqa: E402
from syncd.mappings.outbound import load_service_request_mapping  # noqa: E402
from syncd.state.db import connect  # noqa: E402


def start_fake(
    args: argparse.Namespace, extra: Sequence[str] = ()
) -> tuple[subprocess.Popen[str], str]:
    return fake_process.start_fake(
        companies=args.companies, contacts=args.contacts, devices=args.devices,
        token="bench-token", extra=extra,
    )


def make_adapter(
    webhook: str, budget: RequestBudget | None = None, stop: threading.Event | None = None
) -> Bitrix24Adapter:
    retry = RetryPolicy(max_attempts=8, stop=stop) if stop is not None else None
    client = Bitrix24Client(webhook, timeout=60, budget=budget, priority="mirror", retry=retry)
    return Bitrix24Adapter(
        client, load_mapping_set("bitrix24"), devices_entity_type_id=1040, deletion_events=False
    )


def record_requests(adapter: Bitrix24Adapter) -> list[tuple[str, Any]]:
    """Keep (URL, JSON body) of every request the adapter's client sends from now on."""
    recorded: list[tuple[str, Any]] = []
    http = adapter.client._http
    original = http.post

    def post(url: Any, **kwargs: Any) -> httpx.Response:
        recorded.append((str(url), kwargs.get("json")))
        return original(url, **kwargs)

    http.post = post  # type: ignore[method-assign]
    return recorded


def replay_bare(recorded: list[tuple[str, Any]]) -> tuple[float, int]:
    """Send the same requests with a plain httpx client and parse each answer with orjson:
    the fetch-and-parse floor of the mirror's own requests. Returns (seconds, bytes)."""
    received = 0
    with httpx.Client(timeout=120) as http:
        started = time.perf_counter()
        for url, body in recorded:
            response = http.post(
                url, content=orjson.dumps(body), headers={"Content-Type": "application/json"}
            )
            received += len(response.content)
            orjson.loads(response.content)
        return time.perf_counter() - started, received


class ReplayAdapter:
    """Serves pages fetched earlier from memory: the engine's apply side, timed alone."""

    vendor = "bitrix24"

    def __init__(self, inner: Bitrix24Adapter, pages: dict[Entity, list[Page]]) -> None:
        self.inner = inner
        self.pages = pages
        self.capabilities = inner.capabilities
        self.requests_made = 0  # pages come from memory

    def list_changed(self, entity: Entity, since: Any, resume_after: Any = None) -> Iterator[Page]:
        yield from self.pages[entity]

    def count(self, entity: Entity) -> int:
        return sum(len(page.records) for page in self.pages[entity])


def replay_apply(webhook: str, records_per_entity: int, threshold: int) -> dict[str, float]:
    """Apply throughput on pages already in memory (no fetching competes for the CPU)."""
    adapter = make_adapter(webhook)
    pages: dict[Entity, list[Page]] = {}
    for entity in ENTITY_ORDER:
        pages[entity] = []
        for page in adapter.list_changed(entity, None):
            pages[entity].append(page)
            if sum(len(p.records) for p in pages[entity]) >= records_per_entity:
                pages[entity][-1].resume_after = None
                break
    adapter.close()
    records = sum(len(p.records) for entity_pages in pages.values() for p in entity_pages)
    with tempfile.TemporaryDirectory() as tmp:
        conn = connect(Path(tmp) / "cache.sqlite3")
        engine = MirrorEngine(
            conn,
            ReplayAdapter(adapter, pages),  # type: ignore[arg-type]
            load_mapping_set("bitrix24"),
            MirrorOptions(map_worker_threshold=threshold),
        )
        started = time.perf_counter()
        engine.run_full(list(ENTITY_ORDER))
        seconds = time.perf_counter() - started
        conn.close()
    return {"records": records, "seconds": seconds, "records_per_second": records / seconds}


def peak_rss_sampler(stop: threading.Event, out: dict[str, float], fake_pid: int) -> None:
    """Peak RSS of this process plus its children (the mapping worker), not the fake CRM."""
    process = psutil.Process()
    while not stop.wait(0.05):
        rss = process.memory_info().rss
        for child in process.children(recursive=True):
            if child.pid == fake_pid:
                continue
            with contextlib.suppress(psutil.NoSuchProcess):
                rss += child.memory_info().rss
        out["peak"] = max(out.get("peak", 0.0), rss / 2**20)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


def fake_stats(base: str) -> dict[str, Any]:
    root = base.split("/rest/")[0]
    return dict(httpx.get(f"{root}/_fake/stats", timeout=30).json())


def pusher_loop(
    webhook: str,
    budget: RequestBudget,
    stop: threading.Event,
    every: float,
    latencies: list[float],
) -> None:
    """File a service request every ``every`` seconds through the shared budget (priority push):
    the lookup of its key and its creation, as the outbox delivers one; records each latency."""
    client = Bitrix24Client(webhook, timeout=60, budget=budget, priority="push",
                            retry=RetryPolicy(max_attempts=8, stop=stop))
    pusher = Bitrix24Pusher(
        client, load_service_request_mapping("bitrix24"), entity_type_id=1044, disk_folder_id=1
    )
    number = 0
    try:
        while not stop.wait(every):
            number += 1
            draft = ServiceRequestDraft(
                idempotency_key=f"bench-{os.getpid()}-{number}", title="Bench request",
                request_type="repair", message="Handpiece does not fire", contact_phone=None,
                contact_email=None, contact_address=None, contact_crm_id=None,
                company_crm_id=None, device_crm_id=None,
            )
            started = time.perf_counter()
            if pusher.find_service_request(draft.idempotency_key) is None:
                pusher.create_service_request(draft)
            latencies.append(time.perf_counter() - started)
    finally:
        pusher.close()


def percentile(values: list[float], share: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else None


def limited_run(args: argparse.Namespace) -> dict[str, Any]:
    """Full mirror, sweep and incremental cycles against a fake with Bitrix24's real limits,
    a service request pushed every few seconds through the same budget meanwhile."""
    extra = ["--rate-limit", "50", "2", "--operating-limit", "480",
             "--operating-cost", str(args.operating_cost)]
    fake, webhook = start_fake(args, extra)
    base = webhook.rsplit("/", 2)[0] + "/"
    root = base.split("/rest/")[0]
    out: dict[str, Any] = {"operating_cost_per_command": args.operating_cost}
    budget = RequestBudget(2.0, 50, reserve=10)  # syncd's defaults for Bitrix24
    stop = threading.Event()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            conn = connect(Path(tmp) / "cache.sqlite3")
            adapter = make_adapter(webhook, budget)
            engine = MirrorEngine(conn, adapter, load_mapping_set("bitrix24"), MirrorOptions())
            latencies: list[float] = []
            pusher = threading.Thread(
                target=pusher_loop, args=(webhook, budget, stop, args.push_every, latencies),
                daemon=True,
            )
            pusher.start()
            started = time.perf_counter()
            report = engine.run_cycle()
            seconds = time.perf_counter() - started
            stop.set()
            pusher.join(timeout=120)
            stats = fake_stats(base)
            out["full_mirror"] = {
                "seconds": seconds,
                "records": sum(report.fetched.values()),
                "requests": report.requests,
                "pushed": len(latencies),
                "push_p50_s": percentile(latencies, 0.5),
                "push_p95_s": percentile(latencies, 0.95),
                "push_max_s": max(latencies) if latencies else None,
                "refusals": stats.get("refusals"),
                "operating_seconds": stats.get("operating"),
            }
            started = time.perf_counter()
            sweep = engine.sweep()
            out["id_sweep"] = {
                "seconds": time.perf_counter() - started,
                "ids": sum(sweep.fetched.values()),
                "requests": sweep.requests,
            }
            for label, share in (("noop_incremental", None), ("one_percent_incremental", 0.01)):
                if share:
                    changes = int((args.contacts + args.companies + args.devices) * share)
                    httpx.post(f"{root}/_fake/mutate", json={"updates": changes, "seed": 5},
                               timeout=120).raise_for_status()
                started = time.perf_counter()
                cycle = engine.run_incremental()
                out[label] = {
                    "seconds": time.perf_counter() - started,
                    "requests": cycle.requests,
                    "changed": sum(cycle.upserted.values()),
                }
            out["refusals_total"] = fake_stats(base).get("refusals")
            conn.close()
            adapter.close()
    finally:
        stop.set()
        fake.terminate()
        fake.wait(timeout=30)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--companies", type=int, default=20_000)
    parser.add_argument("--devices", type=int, default=50_000)
    parser.add_argument(
        "--map-worker-threshold",
        type=int,
        default=MirrorOptions().map_worker_threshold,
        help="listings at least this long are mapped in a worker process",
    )
    parser.add_argument(
        "--no-limited", dest="limited", action="store_false",
        help="skip the run under Bitrix24's real limits (it takes a few minutes)",
    )
    parser.add_argument(
        "--operating-cost", type=float, default=0.05,
        help="server seconds the limited fake charges per command on top of its own time",
    )
    parser.add_argument(
        "--push-every", type=float, default=3.0,
        help="seconds between service requests pushed during the limited full mirror",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mirror.json")
    args = parser.parse_args()
    fake, webhook = start_fake(args)
    base = webhook.rsplit("/", 2)[0] + "/"
    results: dict[str, Any] = {
        "map_worker_threshold": args.map_worker_threshold,
        "dataset": {
            "contacts": args.contacts,
            "companies": args.companies,
            "devices": args.devices,
        },
    }
    fake_process, me = psutil.Process(fake.pid), psutil.Process()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "cache.sqlite3"
            conn = connect(cache)
            adapter = make_adapter(webhook)
            recorded = record_requests(adapter)
            options = MirrorOptions(map_worker_threshold=args.map_worker_threshold)
            engine = MirrorEngine(conn, adapter, load_mapping_set("bitrix24"), options)
            rss: dict[str, float] = {}
            stop = threading.Event()
            sampler = threading.Thread(
                target=peak_rss_sampler, args=(stop, rss, fake.pid), daemon=True
            )
            sampler.start()
            fake_cpu, my_cpu = cpu_seconds(fake_process), cpu_seconds(me)
            started = time.perf_counter()
            report = engine.run_cycle()
            full_seconds = time.perf_counter() - started
            results["cpu_seconds_full_mirror"] = {
                "fake": cpu_seconds(fake_process) - fake_cpu,
                "syncd_and_worker": cpu_seconds(me) - my_cpu,
            }
            stop.set()
            sampler.join()
            sent = list(recorded)
            recorded.clear()
            fake_cpu, my_cpu = cpu_seconds(fake_process), cpu_seconds(me)
            fetch_seconds, fetch_bytes = replay_bare(sent)
            results["cpu_seconds_bare_fetch"] = {
                "fake": cpu_seconds(fake_process) - fake_cpu,
                "syncd": cpu_seconds(me) - my_cpu,
            }
            results["bare_fetch"] = {
                "seconds": fetch_seconds,
                "requests": len(sent),
                "bytes": fetch_bytes,
            }
            records = sum(report.fetched.values())
            # what the engine did not spend waiting for the CRM's pages: mapping and SQLite
            apply_seconds = full_seconds - engine.prefetcher.waited
            results["full_mirror"] = {
                "seconds": full_seconds,
                "records": records,
                "records_per_second": records / full_seconds,
                "waited_for_pages_seconds": engine.prefetcher.waited,
                "apply_seconds": apply_seconds,
                "apply_records_per_second": records / apply_seconds if apply_seconds > 0 else None,
                "ratio_to_bare_fetch": full_seconds / fetch_seconds,
                "requests": adapter.client.requests_sent,
                "requests_per_1000_records": adapter.client.requests_sent / records * 1000,
                "peak_rss_mb": rss.get("peak"),
            }
            # A second full resync, now over a populated cache, with a portal-like reader
            # querying throughout (its latency and the invariants it checks).
            stop_file = Path(tmp) / "stop"
            reader = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "bench" / "portal_reader.py"),
                    str(cache),
                    str(stop_file),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            started = time.perf_counter()
            engine.run_full(list(ENTITY_ORDER))
            resync_seconds = time.perf_counter() - started
            stop_file.touch()
            reader_out = json.loads(reader.communicate(timeout=60)[0])
            latencies = sorted(reader_out["latencies_ms"])
            results["reader_during_full_resync"] = {
                "resync_seconds": resync_seconds,
                "queries": len(latencies),
                "p50_ms": latencies[len(latencies) // 2] if latencies else None,
                "p99_ms": latencies[int(len(latencies) * 0.99)] if latencies else None,
                "max_ms": latencies[-1] if latencies else None,
                "invariant_violations": reader_out["violations"],
            }
            for label, mutation in (("noop_incremental", None), ("one_percent_incremental", 0.01)):
                if mutation:
                    changes = int((args.contacts + args.companies + args.devices) * mutation)
                    root = base.split("/rest/")[0]
                    httpx.post(
                        f"{root}/_fake/mutate", json={"updates": changes, "seed": 3}, timeout=120
                    ).raise_for_status()
                before = adapter.client.requests_sent
                started = time.perf_counter()
                inc = engine.run_incremental()
                results[label] = {
                    "seconds": time.perf_counter() - started,
                    "requests": adapter.client.requests_sent - before,
                    "changed": sum(inc.upserted.values()),
                    "fetched": sum(inc.fetched.values()),
                }
            conn.close()
            adapter.close()
        # last: holding replayed pages in memory would raise the RSS measured above
        results["apply_replayed"] = {
            "in_process": replay_apply(webhook, 20_000, threshold=10**9),
            "with_worker": replay_apply(webhook, 20_000, threshold=1),
        }
    finally:
        fake.terminate()
        fake.wait(timeout=30)
    if args.limited:
        results["limited"] = limited_run(args)
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.out}")


def print_table(results: dict[str, Any]) -> None:
    full, bare = results["full_mirror"], results["bare_fetch"]
    reader = results["reader_during_full_resync"]
    replayed = results["apply_replayed"]
    noop, one = results["noop_incremental"], results["one_percent_incremental"]
    rows = [
        ("dataset", ", ".join(f"{v:,} {k}" for k, v in results["dataset"].items()), ""),
        (
            "bare fetch-and-parse, same requests",
            f"{bare['seconds']:.1f} s, {bare['requests']:,} requests, "
            f"{bare['bytes'] / 2**20:,.0f} MiB",
            "",
        ),
        (
            "full mirror wall time",
            f"{full['seconds']:.1f} s ({full['ratio_to_bare_fetch']:.2f}x bare)",
            "<= 1.5x bare",
        ),
        ("full mirror records/s", f"{full['records_per_second']:,.0f}", ""),
        (
            "apply throughput, replayed pages",
            f"{replayed['in_process']['records_per_second']:,.0f} records/s in process, "
            f"{replayed['with_worker']['records_per_second']:,.0f} with the worker",
            ">= 20,000",
        ),
        (
            "apply throughput during the mirror",
            f"{full['apply_records_per_second']:,.0f} records/s (CPU shared with fetching)",
            "",
        ),
        ("peak RSS (syncd + worker)", f"{full['peak_rss_mb']:.0f} MB", "<= 150 MB"),
        (
            "CPU s: fake / syncd, bare fetch",
            f"{results['cpu_seconds_bare_fetch']['fake']:.1f} / "
            f"{results['cpu_seconds_bare_fetch']['syncd']:.1f} (2 cores)",
            "",
        ),
        (
            "CPU s: fake / syncd, full mirror",
            f"{results['cpu_seconds_full_mirror']['fake']:.1f} / "
            f"{results['cpu_seconds_full_mirror']['syncd_and_worker']:.1f} (2 cores)",
            "",
        ),
        (
            "requests, full mirror",
            f"{full['requests']:,} ({full['requests_per_1000_records']:.2f} per 1,000 records)",
            "<= 2 per 1,000",
        ),
        ("second full resync", f"{reader['resync_seconds']:.1f} s, reader running", ""),
        (
            "reader p50 / p99 / max",
            f"{reader['p50_ms']:.2f} / {reader['p99_ms']:.2f} / {reader['max_ms']:.1f} ms "
            f"({reader['queries']:,} queries)",
            "p99 < 20 ms",
        ),
        ("reader invariant violations", str(reader["invariant_violations"]), "0"),
        (
            "no-op incremental",
            f"{noop['seconds'] * 1000:.0f} ms, {noop['requests']} requests",
            "< 300 ms, <= 3 requests",
        ),
        (
            "1 % changed incremental",
            f"{one['seconds']:.2f} s, {one['requests']} requests, {one['changed']:,} changed",
            "",
        ),
    ]
    limited = results.get("limited")
    if limited:
        lf, sweep = limited["full_mirror"], limited["id_sweep"]
        rows += [
            ("UNDER REAL LIMITS", "burst 50, 2 req/s, operating budget 480 s/10 min", ""),
            (
                "full mirror",
                f"{lf['seconds']:.0f} s, {lf['requests']:,} requests, "
                f"refusals {lf['refusals']}",
                "<= 180 s",
            ),
            (
                "push latency during it",
                f"p50 {lf['push_p50_s']:.2f} s, p95 {lf['push_p95_s']:.2f} s, max "
                f"{lf['push_max_s']:.2f} s ({lf['pushed']} pushed)"
                if lf["pushed"] else "none pushed",
                "p95 < 5 s",
            ),
            ("ID sweep", f"{sweep['seconds']:.0f} s, {sweep['requests']} requests", ""),
            (
                "no-op / 1 % cycle",
                f"{limited['noop_incremental']['requests']} / "
                f"{limited['one_percent_incremental']['requests']} requests, "
                f"{limited['one_percent_incremental']['seconds']:.1f} s for 1 %",
                "<= 3 / <= 10",
            ),
        ]
    width = max(len(r[0]) for r in rows)
    for name, value, bar in rows:
        print(f"{name:<{width}}  {value:<52} {bar}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
