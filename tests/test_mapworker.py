"""The mapping worker process: same results as in-process mapping, and a clear error if it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from syncd.core.errors import RetriableError
from syncd.engines.mapworker import MappingWorker, map_batch, resolve
from syncd.mappings.loader import load_mapping_set

MAPPINGS = load_mapping_set("bitrix24")
RECORDS = [
    {"ID": "1", "DATE_MODIFY": "2026-11-01T10:00:00+02:00", "NAME": "Mari", "COMPANY_ID": "4",
     "EMAIL": [{"ID": "9", "VALUE_TYPE": "HOME", "VALUE": "mari@example.ee", "TYPE_ID": "EMAIL"}]},
    {"ID": "2", "DATE_MODIFY": "not a date"},
    "not even an object",
]


def test_worker_maps_exactly_like_the_engine() -> None:
    worker = MappingWorker(MAPPINGS)
    try:
        mapped = resolve(worker.submit("contacts", RECORDS))
        assert mapped == map_batch(MAPPINGS, "contacts", RECORDS)
    finally:
        worker.close()
    batch = map_batch(MAPPINGS, "contacts", RECORDS)
    assert [row[0] for row in batch.rows] == ["1"]
    assert batch.rejects == [("2", "updated_at: not an ISO 8601 timestamp"),
                              ("(no valid id)", "record is not an object")]


def test_a_dead_worker_is_a_retriable_error() -> None:
    worker = MappingWorker(MAPPINGS)
    try:
        resolve(worker.submit("contacts", RECORDS))  # started
        for child in psutil.Process().children():
            if "spawn" in " ".join(child.cmdline()):
                child.kill()
        with pytest.raises(RetriableError, match="mapping worker"):
            for _ in range(50):
                resolve(worker.submit("contacts", RECORDS))
    finally:
        worker.close()


ORPHAN_SCRIPT = """
import sys, time
from syncd.mappings.loader import load_mapping_set
from syncd.engines.mapworker import MappingWorker, resolve
worker = MappingWorker(load_mapping_set("bitrix24"))
resolve(worker.submit("contacts", []))
print("ready", flush=True)
time.sleep(60)
"""


def test_worker_exits_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).parents[1])
    assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
    children = psutil.Process(parent.pid).children(recursive=True)
    assert children
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=10)
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], "the worker outlived its parent"
    del gone
