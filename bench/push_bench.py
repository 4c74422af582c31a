"""Benchmark of the outbox push path (SPEC §7): filed -> CRM accepted, idle and during a resync,
and the local API's POST itself.

Runs the fake Bitrix24 in its own process (one dataset for every phase, sized by the
--resync-* flags) and the real daemon (`syncd run`, mirror interval one hour so it only mirrors
once at start) as a subprocess, waits for the first mirror, then files service requests the way
the portal does (`POST /v1/service-requests` over the daemon's unix socket, multipart with the
file streamed from the portal's disk, an Idempotency-Key) and measures:

* the POST itself (sent -> 202) for a 1 MB photo and a 200 MB video, p50/p95, with the daemon's
  peak RSS while it takes them;
* idle latency: N paced requests (one small JPEG each), POST sent -> `delivered_at`;
* the same while full resyncs run through the daemon (`syncd --resync all`, handed over; a new
  one is started whenever the last one finished, so every request is filed during a resync);
* backlog throughput: 1,000 requests filed at once, until all are delivered;
* peak RSS of the daemon (and its children) while it pushes one large MP4, and its upload time;
  the fake's stored copy is checked by size and SHA-256.

Latency is from the moment the portal starts its POST to the outbox row's `delivered_at`, so
the upload to syncd and syncd's checks count. A failed attempt (`retry_wait`) is
counted and waited for; a dead request ends the run. The fake has no rate limit unless
`--rate-limit BURST DRAIN` is given (a real portal: 50 2; then pace with e.g. `--spacing 5` and
keep the counts small, every delivery costs six CRM requests).

Prints a table and writes JSON to bench/results/push.json.
    python bench/push_bench.py [--idle-requests 50 --resync-contacts 20000 --backlog 1000
                                --video-mb 200]
    quick: python bench/push_bench.py --backlog 50 --video-mb 20 --resync-contacts 2000
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import math
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import fake_process  # noqa: E402

from syncd.config import load_settings  # noqa: E402
from syncd.state.db import close as close_cache  # noqa: E402
from syncd.state.db import connect  # noqa: E402

SYNCD = ROOT / ".venv" / "bin" / "syncd"
TOKEN = "bench-token"
POLL_SECONDS = 0.02  # how often the outbox is read back
SPACING_SECONDS = 0.2  # between paced requests (--spacing)
MIB = 2**20
# A minimal JPEG-shaped file (SOI + APP0/JFIF), a few KB; the tail varies per request.
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
# An ISO-BMFF ftyp box: size 24, major brand mp42, minor version 0, compatible mp42 + isom.
FTYP = (24).to_bytes(4, "big") + b"ftypmp42" + b"\x00\x00\x00\x00" + b"mp42isom"


def start_fake(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    extra = ["--rate-limit", *map(str, args.rate_limit)] if args.rate_limit else []
    return fake_process.start_fake(
        companies=args.resync_companies,
        contacts=args.resync_contacts,
        devices=args.resync_devices,
        token=TOKEN,
        extra=extra,
    )


def write_config(base: Path, webhook: str, rate_limit: list[float] | None = None) -> Path:
    """The daemon's config; with the fake's ``rate_limit`` (BURST, DRAIN) the daemon's CRM
    request budget matches it, as on a real portal, else the budget is off."""
    token = base / "crm_webhook_token"
    token.write_text(TOKEN)
    url = webhook.rsplit("/", 2)[0] + "/"  # .../rest/1/ without the token
    if rate_limit:
        burst, drain = rate_limit
        budget = f"requests_per_second = {drain:g}\nrequest_burst = {int(burst)}\n"
    else:
        budget = "requests_per_second = 0\n"
    config = base / "syncd.toml"
    config.write_text(
        f'[crm]\n{budget}[crm.bitrix24]\nurl = "{url}"\nwebhook_token_file = "{token}"\n'
        "[mirror]\ninterval_seconds = 3600\n"
        f'[state]\ndirectory = "{base / "state"}"\n'
        "[outbox]\n"
        f'[api]\nlisten = "unix:{base / "api.sock"}"\n'
        # the backlog phase files a thousand requests at once: lift the hourly budget
        "max_service_requests_per_hour = 1000000\nmax_upload_mb_per_hour = 1000000\n"
        "[omniva]\nenabled = false\n"
    )
    return config


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def first_mirror_done(cache: Path) -> bool:
    if not cache.exists():
        return False
    try:
        conn = sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=1)
        try:
            entities = {row[0] for row in conn.execute("SELECT entity FROM cursors")}
            runs = conn.execute("SELECT count(*) FROM sync_runs").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return False
    return {"devices", "contacts"} <= entities and runs > 0


def parse_stamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def cpu_seconds(process: psutil.Process) -> float:
    """CPU time of a process and its children (the mapping worker), live or reaped."""
    total = 0.0
    with contextlib.suppress(psutil.NoSuchProcess):
        times = process.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
    return float(total)


def tree_rss(process: psutil.Process) -> int:
    rss = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            rss += child.memory_info().rss
    return int(rss)


class RssSampler:
    """Samples the RSS of a process plus its children every 50 ms in a thread."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            with contextlib.suppress(psutil.NoSuchProcess):
                self.peak = max(self.peak, tree_rss(self.process))
                self.samples += 1
            if self._stop.wait(0.05):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Portal:
    """Files service requests like the portal: POST /v1/service-requests over the daemon's unix
    socket, the file streamed from the portal's own directory."""

    def __init__(self, conn: sqlite3.Connection, socket: Path, work: Path) -> None:
        self.conn = conn
        self.work = work
        self.rng = random.Random(7)
        self.pairs: list[tuple[str, str]] = conn.execute(
            "SELECT crm_id, contact_id FROM devices WHERE contact_id IS NOT NULL ORDER BY crm_id"
        ).fetchall()
        if not self.pairs:
            raise RuntimeError("the mirror has no device with a contact")
        self.api = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket)),
            base_url="http://localhost",
            timeout=httpx.Timeout(600, connect=10),
            trust_env=False,
        )
        self.busy_retries = 0  # 429/503/507 answers retried
        self.keys: dict[int, str] = {}
        self.filed_at: dict[int, datetime] = {}

    def close(self) -> None:
        self.api.close()

    def write_jpeg(self, relative: str, size: int | None = None) -> int:
        path = self.work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        length = size - len(JPEG_HEAD) - 2 if size else 3000 + self.rng.randrange(2000)
        body = JPEG_HEAD + self.rng.randbytes(length) + b"\xff\xd9"
        path.write_bytes(body)
        return len(body)

    def write_video(self, relative: str, size: int) -> str:
        """An MP4-shaped file of ``size`` bytes written in 1 MiB chunks; returns its SHA-256."""
        path = self.work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        chunk = bytes(MIB)
        with path.open("wb") as out:
            out.write(FTYP)
            digest.update(FTYP)
            left = size - len(FTYP)
            while left > 0:
                piece = chunk[: min(MIB, left)]
                out.write(piece)
                digest.update(piece)
                left -= len(piece)
        return digest.hexdigest()

    def file(self, relative: str, name: str, declared: str, size: int) -> tuple[int, float]:
        """POST one request with one file; returns its id and how long the POST took."""
        device, contact = self.rng.choice(self.pairs)
        key = str(uuid.uuid4())
        fields = {
            "request_type": "repair",
            "message": "The handpiece makes a clicking noise. Please call me back.",
            "device_crm_id": device,
            "contact_crm_id": contact,
        }
        now = datetime.now(UTC)
        started = time.perf_counter()
        for attempt in range(10):
            with (self.work / relative).open("rb") as content:
                answer = self.api.post(
                    "/v1/service-requests",
                    headers={"Idempotency-Key": key},
                    data=fields,
                    files={"files": (name, content, declared)},
                )
            if answer.status_code == 202:
                break
            if answer.status_code not in (429, 503, 507) or attempt == 9:
                raise RuntimeError(f"POST refused: {answer.status_code} {answer.text[:300]}")
            self.busy_retries += 1
            time.sleep(1.0)
        took = time.perf_counter() - started
        request_id = int(answer.json()["id"])
        self.keys[request_id] = key
        self.filed_at[request_id] = now
        return request_id, took

    def file_jpeg(self, label: str) -> tuple[int, float]:
        relative = f"bench/{label}/photo.jpg"
        size = self.write_jpeg(relative)
        return self.file(relative, "photo.jpg", "image/jpeg", size)


class Tracker:
    """Reads the outbox back every 20 ms: when each request was first seen `sending` and its
    `created_at`/`delivered_at` once `done`; a failed attempt (`retry_wait`) is counted, a dead
    request stops the benchmark."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.open: set[int] = set()
        self.done: dict[int, tuple[datetime, datetime]] = {}
        self.seen_sending: dict[int, datetime] = {}
        self.attempts: dict[int, int] = {}
        self._failed: set[tuple[int, int]] = set()
        self.retry_errors: collections.Counter[str] = collections.Counter()
        self.on_done: Callable[[int], None] | None = None
        self.patience = 1.0  # deadline multiplier (rate-limited runs are slow by design)
        self.filed_at: dict[int, datetime] = {}  # the portal's, shared

    def add(self, request_id: int) -> None:
        self.open.add(request_id)

    def poll(self) -> None:
        if not self.open:
            return
        observed = datetime.now(UTC)
        low, high = min(self.open), max(self.open)
        rows = self.conn.execute(
            "SELECT id, status, created_at, delivered_at, last_error, attempts "
            "FROM outbox_requests "
            "WHERE id BETWEEN ? AND ? AND status != 'pending'",
            (low, high),
        ).fetchall()
        for request_id, status, created, delivered, error, attempts in rows:
            if request_id not in self.open:
                continue
            if status == "sending":
                self.seen_sending.setdefault(request_id, observed)
            elif status == "done":
                self.done[request_id] = (parse_stamp(created), parse_stamp(delivered))
                self.attempts[request_id] = int(attempts)
                self.open.discard(request_id)
                if self.on_done:
                    self.on_done(request_id)
            elif status == "retry_wait" and (request_id, attempts) not in self._failed:
                self._failed.add((request_id, attempts))
                self.retry_errors[str(error).split(":")[0][:60]] += 1
            elif status == "dead":
                raise RuntimeError(f"request #{request_id} went dead: {error}")

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` while polling."""
        end = time.monotonic() + seconds
        while True:
            self.poll()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(POLL_SECONDS, left))

    def wait_all(self, timeout: float, what: str) -> None:
        timeout *= self.patience
        deadline = time.monotonic() + timeout
        while self.open:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"timed out after {timeout:.0f} s: {len(self.open)} request(s) of {what} "
                    "not delivered"
                )
            self.sleep(POLL_SECONDS)

    def latencies(self, ids: list[int]) -> list[float]:
        return [(self.done[i][1] - self.filed(i)).total_seconds() for i in ids]

    def filed(self, request_id: int) -> datetime:
        """When the portal began filing ``request_id`` (its POST), else the row's created_at."""
        return self.filed_at.get(request_id, self.done[request_id][0])

    def retried(self, ids: list[int]) -> int:
        """How many of ``ids`` needed more than one attempt."""
        return sum(1 for i in ids if self.attempts.get(i, 1) > 1)

    def pickups(self, ids: list[int]) -> list[float]:
        """created_at -> first seen `sending` (the push lane noticing), where it was seen."""
        return [
            (self.seen_sending[i] - self.filed(i)).total_seconds()
            for i in ids
            if i in self.seen_sending
        ]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))
    return ordered[index]  # nearest rank


def summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "p50": None, "p95": None, "max": None}
    return {
        "count": len(values),
        "p50": statistics.median(values),
        "p95": percentile(values, 0.95),
        "max": max(values),
    }


def paced(
    portal: Portal, tracker: Tracker, count: int, label: str, spacing: float
) -> tuple[list[int], list[float]]:
    ids, enqueue_seconds = [], []
    for i in range(count):
        request_id, took = portal.file_jpeg(f"{label}-{i}")
        tracker.add(request_id)
        ids.append(request_id)
        enqueue_seconds.append(took)
        tracker.sleep(max(0.0, spacing - took))
    return ids, enqueue_seconds


class ResyncDriver:
    """Keeps a full resync running in the daemon: `syncd --resync all` (handed over through
    `control_requests`); when one finishes, the next is started. Records each one's window."""

    def __init__(self, config: Path, conn: sqlite3.Connection, log_dir: Path) -> None:
        self.config = config
        self.conn = conn
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.request_id: int | None = None
        self.started = 0.0
        self.rounds: list[dict[str, Any]] = []

    def status(self) -> str | None:
        if self.request_id is None:
            return None
        row = self.conn.execute(
            "SELECT status FROM control_requests WHERE id = ?", (self.request_id,)
        ).fetchone()
        return str(row[0]) if row else None

    def running(self) -> bool:
        return self.status() == "running"

    def start(self) -> None:
        before = self.conn.execute("SELECT coalesce(max(id), 0) FROM control_requests").fetchone()
        log = (self.log_dir / f"resync-{len(self.rounds) + 1}.log").open("wb")
        self.process = subprocess.Popen(
            [str(SYNCD), "--config", str(self.config), "--resync", "all"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

        def handed_and_running() -> bool:
            row = self.conn.execute(
                "SELECT id, status FROM control_requests WHERE id > ? ORDER BY id LIMIT 1",
                (before[0],),
            ).fetchone()
            if row is None:
                return False
            self.request_id = int(row[0])
            return str(row[1]) != "pending"

        wait_until(handed_and_running, 60, "the daemon to start the resync")
        self.started = time.monotonic()

    def finish_round(self, timeout: float = 600) -> None:
        """Wait for the current resync (subprocess and control row) and record it."""
        if self.process is None:
            return
        code = self.process.wait(timeout=timeout)
        row = self.conn.execute(
            "SELECT status, started_at, finished_at, message FROM control_requests WHERE id = ?",
            (self.request_id,),
        ).fetchone()
        self.rounds.append(
            {
                "control_request": self.request_id,
                "exit_code": code,
                "status": row[0],
                "seconds_observed": time.monotonic() - self.started,
                "started_at": row[1],
                "finished_at": row[2],
                "message": row[3],
            }
        )
        if row[0] != "done":
            raise RuntimeError(f"resync #{self.request_id} {row[0]}: {row[3]}")
        self.process = None

    def keep_running(self) -> None:
        if self.process is not None and self.running():
            return
        if self.process is not None:
            self.finish_round()
        self.start()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)


def fake_get(webhook: str, route: str) -> Any:
    root = webhook.split("/rest/")[0]
    response = httpx.get(f"{root}/_fake/{route}", timeout=120)
    response.raise_for_status()
    return response.json()


def phase_idle(portal: Portal, tracker: Tracker, count: int, spacing: float) -> dict[str, Any]:
    ids, enqueue = paced(portal, tracker, count, "idle", spacing)
    tracker.wait_all(60 + 5 * count, "the idle phase")
    return {
        "requests": count,
        "latency_seconds": summary(tracker.latencies(ids)),
        "pickup_seconds": summary(tracker.pickups(ids)),
        "needed_retries": tracker.retried(ids),
        "enqueue_seconds": summary(enqueue),
    }


def phase_resync(
    portal: Portal, tracker: Tracker, resync: ResyncDriver, count: int, spacing: float
) -> dict[str, Any]:
    filed_during: set[int] = set()
    delivered_during: set[int] = set()

    def on_done(request_id: int) -> None:
        if resync.running():
            delivered_during.add(request_id)

    ids: list[int] = []
    enqueue: list[float] = []
    tracker.on_done = on_done
    try:
        for i in range(count):
            resync.keep_running()  # the next one (waiting until it runs) if the last finished
            request_id, took = portal.file_jpeg(f"resync-{i}")
            if resync.running():
                filed_during.add(request_id)
            tracker.add(request_id)
            ids.append(request_id)
            enqueue.append(took)
            tracker.sleep(max(0.0, spacing - took))
        tracker.wait_all(120 + 10 * count, "the resync phase")
    finally:
        tracker.on_done = None
    resync.finish_round()  # let the last one end, so the backlog phase runs idle
    return {
        "requests": count,
        "latency_seconds": summary(tracker.latencies(ids)),
        "pickup_seconds": summary(tracker.pickups(ids)),
        "needed_retries": tracker.retried(ids),
        "enqueue_seconds": summary(enqueue),
        "filed_while_resync_running": len(filed_during),
        "delivered_while_resync_running": len(delivered_during),
        "resyncs": resync.rounds,
    }


def phase_backlog(portal: Portal, tracker: Tracker, count: int) -> dict[str, Any]:
    files = [f"backlog-{i}" for i in range(count)]
    sizes = [portal.write_jpeg(f"bench/{label}/photo.jpg") for label in files]
    ids = []
    started = time.perf_counter()
    for label, size in zip(files, sizes, strict=True):
        request_id, _ = portal.file(f"bench/{label}/photo.jpg", "photo.jpg", "image/jpeg", size)
        tracker.add(request_id)
        ids.append(request_id)
    enqueue_seconds = time.perf_counter() - started
    delivered_while_filing = conn_count_done(portal.conn, ids[0], ids[-1])
    tracker.wait_all(120 + count, "the backlog")
    wall = time.perf_counter() - started
    first = min(tracker.filed(i) for i in ids)
    last = max(tracker.done[i][1] for i in ids)
    span = (last - first).total_seconds()
    return {
        "requests": count,
        "enqueue_all_seconds": enqueue_seconds,
        "delivered_while_filing": delivered_while_filing,
        "first_filed_to_last_delivered_seconds": span,
        "wall_seconds_observed": wall,
        "requests_per_second": count / span if span > 0 else None,
        "latency_seconds": summary(tracker.latencies(ids)),
        "needed_retries": tracker.retried(ids),
    }


def conn_count_done(conn: sqlite3.Connection, low: int, high: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM outbox_requests WHERE id BETWEEN ? AND ? AND status = 'done'",
        (low, high),
    ).fetchone()
    return int(row[0])


def phase_post(
    portal: Portal, tracker: Tracker, daemon: psutil.Process, photos: int, videos: int,
    video_mb: int,
) -> dict[str, Any]:
    """The POST itself (sent -> 202): 1 MB photos, then videos, with the daemon's peak RSS."""
    results: dict[str, Any] = {}
    for label, count, size in (("photo_1mb", photos, MIB), ("video", videos, video_mb * MIB)):
        paths = []
        for i in range(count):
            relative = f"bench/post-{label}-{i}/file"
            if label == "video":
                portal.write_video(relative, size)
            else:
                portal.write_jpeg(relative, size)
            paths.append(relative)
        tracker.wait_all(600, "earlier requests")  # the daemon idle before measuring
        before = tree_rss(daemon)
        took = []
        with RssSampler(daemon) as sampler:
            for relative in paths:
                name, declared = ("clip.mp4", "video/mp4") if label == "video" else (
                    "photo.jpg", "image/jpeg")
                request_id, seconds = portal.file(relative, name, declared, size)
                took.append(seconds)
                tracker.add(request_id)
                if label == "video":  # one video at a time through syncd: the RSS is its own
                    tracker.wait_all(600, "a video")
        tracker.wait_all(600, f"the {label} posts")
        results[label] = {
            "bytes": size,
            "post_seconds": summary(took),
            "rss_before_mb": before / MIB,
            "peak_rss_mb": sampler.peak / MIB,
        }
    return results


def phase_video(
    portal: Portal, tracker: Tracker, daemon: psutil.Process, webhook: str, megabytes: int
) -> dict[str, Any]:
    size = megabytes * MIB
    relative = "bench/video/clip.mp4"
    written = time.perf_counter()
    sha256 = portal.write_video(relative, size)
    write_seconds = time.perf_counter() - written
    time.sleep(0.5)
    before = tree_rss(daemon)
    with RssSampler(daemon) as sampler:
        started = time.perf_counter()
        request_id, post_seconds = portal.file(relative, "clip.mp4", "video/mp4", size)
        tracker.add(request_id)
        tracker.wait_all(600, "the video")
        wall = time.perf_counter() - started
    _, delivered = tracker.done[request_id]
    filed = tracker.filed(request_id)
    name = f"{portal.keys[request_id]}-0-clip.mp4"
    stored = [f for f in fake_get(webhook, "disk-files").values() if f["name"] == name]
    return {
        "bytes": size,
        "write_to_portal_disk_seconds": write_seconds,
        "post_seconds": post_seconds,
        "rss_before_mb": before / MIB,
        "peak_rss_mb": sampler.peak / MIB,
        "rss_samples": sampler.samples,
        "enqueue_to_delivered_seconds": (delivered - filed).total_seconds(),
        "wall_seconds_observed": wall,
        "throughput_mb_per_second": size / MIB / (delivered - filed).total_seconds(),
        "fake_stored": stored[0] if stored else None,
        "fake_stored_ok": bool(
            len(stored) == 1 and stored[0]["size"] == size and stored[0]["sha256"] == sha256
        ),
    }


@contextlib.contextmanager
def cpu_meter(
    processes: dict[str, psutil.Process], out: dict[str, Any], key: str
) -> Iterator[None]:
    before = {name: cpu_seconds(p) for name, p in processes.items()}
    started = time.perf_counter()
    yield
    out[key] = {
        "wall": time.perf_counter() - started,
        **{name: cpu_seconds(p) - before[name] for name, p in processes.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--idle-requests",
        type=int,
        default=50,
        help="paced requests per latency phase (idle, and during the resync)",
    )
    parser.add_argument("--resync-contacts", type=int, default=20_000)
    parser.add_argument(
        "--resync-companies", type=int, default=None, help="default: a fifth of --resync-contacts"
    )
    parser.add_argument(
        "--resync-devices", type=int, default=None, help="default: half of --resync-contacts"
    )
    parser.add_argument("--backlog", type=int, default=1000)
    parser.add_argument("--video-mb", type=int, default=200, help="video size in MiB")
    parser.add_argument(
        "--post-photos", type=int, default=20, help="1 MB photos POSTed for the POST figures"
    )
    parser.add_argument(
        "--post-videos", type=int, default=3, help="videos POSTed for the POST figures"
    )
    parser.add_argument(
        "--spacing", type=float, default=SPACING_SECONDS, help="seconds between paced requests"
    )
    parser.add_argument(
        "--rate-limit",
        nargs=2,
        type=float,
        metavar=("BURST", "DRAIN"),
        help="give the fake Bitrix24's leaky bucket (real portals: 50 2); off by default",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "push.json")
    args = parser.parse_args()
    if args.resync_companies is None:
        args.resync_companies = max(1, args.resync_contacts // 5)
    if args.resync_devices is None:
        args.resync_devices = max(1, args.resync_contacts // 2)
    results: dict[str, Any] = {
        "dataset": {
            "contacts": args.resync_contacts,
            "companies": args.resync_companies,
            "devices": args.resync_devices,
        },
        "spacing_seconds": args.spacing,
        "fake_rate_limit": args.rate_limit,
    }
    fake, webhook = start_fake(args)
    daemon: subprocess.Popen[bytes] | None = None
    resync: ResyncDriver | None = None
    conn: sqlite3.Connection | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="push-bench-") as tmp:
            base = Path(tmp)
            config = write_config(base, webhook, args.rate_limit)
            settings = load_settings(config)
            cache = settings.state.cache_path
            spool = settings.spool_directory
            daemon_log = base / "daemon.log"
            try:
                with daemon_log.open("wb") as log:
                    started = time.perf_counter()
                    daemon = subprocess.Popen(
                        [str(SYNCD), "--config", str(config), "run"],
                        cwd=ROOT,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                wait_until(lambda: first_mirror_done(cache), 600, "the first mirror")
                results["first_mirror_seconds"] = time.perf_counter() - started
                time.sleep(1.0)  # let the first cycle finish its bookkeeping
                conn = connect(cache, migrate_schema=False)
                portal = Portal(conn, base / "api.sock", base / "portal")
                tracker = Tracker(conn)
                tracker.filed_at = portal.filed_at
                if args.rate_limit:
                    tracker.patience = 10.0
                process = psutil.Process(daemon.pid)
                processes = {"daemon": process, "fake": psutil.Process(fake.pid)}
                cpu: dict[str, Any] = {}
                results["cpu_seconds"] = cpu
                results["daemon_rss_after_first_mirror_mb"] = tree_rss(process) / MIB

                if args.rate_limit:  # start idle with the bucket the first mirror filled drained
                    burst, drain = args.rate_limit
                    time.sleep(burst / drain + 1)
                with cpu_meter(processes, cpu, "idle"):
                    results["idle"] = phase_idle(portal, tracker, args.idle_requests, args.spacing)
                resync = ResyncDriver(config, conn, base)
                with cpu_meter(processes, cpu, "resync"):
                    results["during_resync"] = phase_resync(
                        portal, tracker, resync, args.idle_requests, args.spacing
                    )
                with cpu_meter(processes, cpu, "backlog"):
                    results["backlog"] = phase_backlog(portal, tracker, args.backlog)
                with cpu_meter(processes, cpu, "video"):
                    results["video"] = phase_video(portal, tracker, process, webhook, args.video_mb)
                with cpu_meter(processes, cpu, "post"):
                    results["post"] = phase_post(
                        portal, tracker, process, args.post_photos, args.post_videos,
                        args.video_mb,
                    )
                filed = len(portal.keys)
                stats = fake_get(webhook, "stats")
                results["checks"] = {
                    "requests_filed": filed,
                    "fake_service_requests": stats["counts"]["service_requests"],
                    "fake_disk_files": stats["counts"]["disk_files"],
                    "post_retries_429_503_507": portal.busy_retries,
                    "failed_attempts_by_error": dict(tracker.retry_errors),
                    "spool_files_left": sum(1 for p in spool.rglob("*") if p.is_file()),
                    "daemon_log_warnings": sum(
                        1
                        for line in daemon_log.read_text(errors="replace").splitlines()
                        if " WARNING " in line or " ERROR " in line or "Traceback" in line
                    ),
                }
            except BaseException:
                if daemon_log.exists():
                    print("--- daemon log (tail) ---", file=sys.stderr)
                    print(daemon_log.read_text(errors="replace")[-4000:], file=sys.stderr)
                raise
            finally:
                if resync is not None:
                    resync.kill()
                if conn is not None:
                    close_cache(conn)
                if "portal" in locals():
                    portal.close()
                if daemon is not None:
                    daemon.terminate()
                    try:
                        daemon.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        daemon.kill()
                        daemon.wait(timeout=10)
    finally:
        fake.terminate()
        try:
            fake.wait(timeout=30)
        except subprocess.TimeoutExpired:
            fake.kill()
            fake.wait(timeout=10)
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwritten to {args.out}")


def seconds(stats: dict[str, Any]) -> str:
    return f"{stats['p50']:.2f} / {stats['p95']:.2f} / {stats['max']:.2f} s"


def print_table(results: dict[str, Any]) -> None:
    idle, during = results["idle"], results["during_resync"]
    backlog, video, checks = results["backlog"], results["video"], results["checks"]
    cpu = results["cpu_seconds"]
    rounds = during["resyncs"]
    stored = video["fake_stored"]
    post = results["post"]
    rows = [
        ("dataset", ", ".join(f"{v:,} {k}" for k, v in results["dataset"].items()), ""),
        (
            "POST 1 MB photo: sent -> 202 p50/p95",
            f"{post['photo_1mb']['post_seconds']['p50'] * 1000:.0f} / "
            f"{post['photo_1mb']['post_seconds']['p95'] * 1000:.0f} ms "
            f"({post['photo_1mb']['post_seconds']['count']} POSTs); daemon peak RSS "
            f"{post['photo_1mb']['peak_rss_mb']:.0f} MB",
            "",
        ),
        (
            f"POST {post['video']['bytes'] // MIB} MiB video: sent -> 202 p50/p95",
            f"{post['video']['post_seconds']['p50']:.2f} / "
            f"{post['video']['post_seconds']['p95']:.2f} s "
            f"({post['video']['post_seconds']['count']} POSTs); daemon peak RSS "
            f"{post['video']['peak_rss_mb']:.0f} MB (before "
            f"{post['video']['rss_before_mb']:.0f} MB)",
            "flat",
        ),
        (
            "pacing; fake's rate limit",
            f"{results['spacing_seconds']} s apart; "
            + (
                "burst {:g}, drain {:g}/s".format(*results["fake_rate_limit"])
                if results["fake_rate_limit"]
                else "none"
            ),
            "",
        ),
        ("first mirror (daemon start)", f"{results['first_mirror_seconds']:.1f} s", ""),
        (
            "idle: POST -> accepted p50/p95/max",
            seconds(idle["latency_seconds"]) + f" ({idle['requests']} requests)",
            "p95 < 2 s",
        ),
        ("idle: POST -> picked up p50/p95", _pickup(idle), ""),
        (
            "resync: POST -> accepted p50/p95/max",
            seconds(during["latency_seconds"]) + f" ({during['requests']} requests)",
            "p95 < 5 s",
        ),
        ("resync: POST -> picked up p50/p95", _pickup(during), ""),
        (
            "resync: the portal's POST p50/max",
            f"{during['enqueue_seconds']['p50'] * 1000:.1f} / "
            f"{during['enqueue_seconds']['max'] * 1000:.0f} ms "
            f"(idle {idle['enqueue_seconds']['p50'] * 1000:.1f} / "
            f"{idle['enqueue_seconds']['max'] * 1000:.0f} ms)",
            "",
        ),
        (
            "resync running while measuring",
            f"filed {during['filed_while_resync_running']}/{during['requests']}, delivered "
            f"{during['delivered_while_resync_running']}/{during['requests']}; "
            f"{len(rounds)} full resync(s) of "
            + ", ".join(f"{r['seconds_observed']:.1f}" for r in rounds)
            + " s",
            "",
        ),
        (
            "backlog throughput",
            f"{backlog['requests_per_second']:.1f} requests/s ({backlog['requests']:,} in "
            f"{backlog['first_filed_to_last_delivered_seconds']:.1f} s; filing took "
            f"{backlog['enqueue_all_seconds']:.2f} s)",
            "",
        ),
        (
            f"video {video['bytes'] // MIB} MiB: POST -> accepted",
            f"{video['enqueue_to_delivered_seconds']:.1f} s "
            f"({video['throughput_mb_per_second']:.0f} MiB/s; "
            f"the POST {video['post_seconds']:.1f} s)",
            "",
        ),
        (
            "video: daemon peak RSS (+ children)",
            f"{video['peak_rss_mb']:.0f} MB (before: {video['rss_before_mb']:.0f} MB, "
            f"{video['rss_samples']} samples)",
            "streamed: ~ flat",
        ),
        (
            "video: stored by the fake",
            f"{stored['size'] if stored else 0:,} bytes, sha256 "
            f"{'matches' if video['fake_stored_ok'] else 'MISMATCH'}",
            "= sent",
        ),
        (
            "requests needing > 1 attempt",
            f"idle {idle['needed_retries']}, resync {during['needed_retries']}, backlog "
            f"{backlog['needed_retries']}"
            + "".join(f"; {n}x {e}" for e, n in checks["failed_attempts_by_error"].items()),
            "",
        ),
        (
            "exactly once: items in the CRM / filed",
            f"{checks['fake_service_requests']:,} / {checks['requests_filed']:,}; spool files "
            f"left {checks['spool_files_left']}; daemon log warnings "
            f"{checks['daemon_log_warnings']}",
            "equal, 0, 0",
        ),
        (
            "CPU s daemon / fake (wall)",
            "; ".join(
                f"{phase} {c['daemon']:.1f} / {c['fake']:.1f} ({c['wall']:.0f})"
                for phase, c in cpu.items()
            ),
            "",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, bar in rows:
        print(f"{name:<{width}}  {value:<64} {bar}")


def _pickup(phase: dict[str, Any]) -> str:
    pickup = phase["pickup_seconds"]
    if not pickup["count"]:
        return "not observed"
    return (
        f"{pickup['p50']:.2f} / {pickup['p95']:.2f} s "
        f"(seen 'sending' for {pickup['count']}/{phase['requests']})"
    )


if __name__ == "__main__":
    main()
