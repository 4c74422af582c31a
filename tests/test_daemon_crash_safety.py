"""The mirror as deployed under crash: ``syncd run`` itself is SIGKILLed at random 20+ times
while the CRM keeps changing (during the run, not only between kills) and resyncs are handed to
it by ``syncd --resync``; the dataset is large enough for the full resync's mapping worker.
Afterwards the daemon converges: the cache equals the CRM record by record, cursors never moved
backwards, and the database is intact."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.connectors.crm.bitrix24.fake_view import adapter_view
from syncd.daemon import lock
from syncd.engines.verify import differences
from syncd.mappings.loader import load_mapping_set
from syncd.state.db import connect
from tests.conftest import write_config

ROOT = Path(__file__).parents[1]
ROUNDS = 22


def _read(cache: Path, query: str, *args: object) -> list[tuple[object, ...]]:
    if not cache.exists():
        return []
    try:
        with closing(sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=5)) as conn:
            return conn.execute(query, args).fetchall()
    except sqlite3.OperationalError:
        return []


def _cursors(cache: Path) -> dict[str, datetime]:
    return {str(e): datetime.fromisoformat(str(v))
            for e, v in _read(cache, "SELECT entity, value FROM cursors")}


def _caught_up(cache: Path, since: str) -> bool:
    """A sweep and an incremental cycle both began after ``since`` and after the last full
    resync ended, and nothing is left half done."""
    if _read(cache, "SELECT 1 FROM resync_progress") or _read(
            cache, "SELECT 1 FROM control_requests WHERE status IN ('pending', 'running')"):
        return False
    last_full = _read(cache, "SELECT max(finished_at) FROM sync_runs WHERE kind = 'full'")
    after = max(since, str(last_full[0][0] or "")) if last_full else since
    kinds = {str(k) for (k,) in _read(
        cache, "SELECT kind FROM sync_runs WHERE started_at > ?", after)}
    return {"incremental", "sweep"} <= kinds


@pytest.mark.slow
def test_the_daemon_killed_while_mirroring_and_resyncing_converges(tmp_path: Path) -> None:
    rng = random.Random(20261206)
    with FakeBitrix24(seed=29, companies=1200, contacts=6000, devices=2500, token="t") as fake:
        config = write_config(tmp_path, fake, "[mirror]\ninterval_seconds = 1\n"
                              "jitter_seconds = 0\nsweep_interval_seconds = 10\n")
        state = tmp_path / "state"
        cache = state / "cache.sqlite3"
        stop_changes = threading.Event()
        changes = {"batches": 0}

        def keep_changing() -> None:
            dice = random.Random(7)
            while not stop_changes.wait(0.1):  # the pace of the CRM's users, not a wait
                fake.mutate_random(creates=dice.randint(0, 2), updates=dice.randint(1, 15),
                                   deletes=dice.randint(0, 1), seed=changes["batches"])
                changes["batches"] += 1

        changer = threading.Thread(target=keep_changing)
        changer.start()
        log = (tmp_path / "daemon.log").open("a")
        run = [sys.executable, "-m", "syncd", "--config", str(config), "run"]
        kills, handed, previous = 0, 0, {}
        try:
            for round_number in range(ROUNDS):
                daemon = subprocess.Popen(run, cwd=ROOT, stdout=log, stderr=log)
                resync = None
                if round_number % 3 == 1:
                    deadline = time.monotonic() + 30
                    while "daemon" not in (lock.holder(state) or ""):
                        assert time.monotonic() < deadline and daemon.poll() is None
                        time.sleep(0.02)  # until the daemon holds its lock
                    target = rng.choice(("devices", "contacts", "all"))
                    resync = subprocess.Popen(
                        [sys.executable, "-m", "syncd", "--config", str(config),
                         "--resync", target, "--json"],
                        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    handed += 1
                time.sleep(rng.uniform(0.4, 3.0))  # a random kill point, not a wait
                daemon.send_signal(signal.SIGKILL)
                daemon.wait(30)
                kills += 1
                if resync is not None:
                    _, err = resync.communicate(timeout=30)
                    # done before the kill (0), or still queued for the next daemon (75)
                    assert resync.returncode in (0, 75), err
                now = _cursors(cache)
                for entity, value in previous.items():
                    assert now.get(entity, value) >= value, "a cursor moved backwards"
                previous = now
            stop_changes.set()
            changer.join()
            last_change = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
            daemon = subprocess.Popen(run, cwd=ROOT, stdout=log, stderr=log)
            deadline = time.monotonic() + 180
            while not _caught_up(cache, last_change):
                assert time.monotonic() < deadline, "the daemon did not catch up"
                assert daemon.poll() is None, "the daemon died"
                time.sleep(0.2)  # polling another process's database
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(30) == 0
        finally:
            stop_changes.set()
            changer.join()
            if daemon.poll() is None:
                daemon.kill()
            log.close()
        assert kills >= 20 and handed >= 7 and changes["batches"] > 50
        conn = connect(cache)
        try:
            assert differences(conn, load_mapping_set("bitrix24"), adapter_view(fake)) == []
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
            assert conn.execute("SELECT count(*) FROM held_deletes").fetchone()[0] == 0
        finally:
            conn.close()
        text = (tmp_path / "daemon.log").read_text()
        assert "mapping in a worker process" in text  # the large-resync path was exercised
        assert "resync request" in text and "accepted" in text  # handed to the daemon
        assert "Traceback" not in text
