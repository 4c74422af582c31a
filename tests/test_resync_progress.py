"""What a resync says while it runs: records and CRM requests so far and the time left under
the configured request rate; and what ``syncd status`` says a cycle cost in requests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.engines.progress import ResyncEstimate, format_duration
from syncd.runtime import build_engine, open_cache
from tests.conftest import make_settings, write_config

ROOT = Path(__file__).parents[1]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_estimate_is_bound_by_the_request_rate() -> None:
    clock = Clock()
    estimate = ResyncEstimate(2.0, clock=clock)
    estimate.update("companies", 0, 20_000, requests_made=10)
    estimate.update("contacts", 0, 100_000, requests_made=12)
    estimate.update("devices", 0, 50_000, requests_made=13)
    assert estimate.seconds_left() is None  # nothing done yet: nothing to extrapolate
    clock.now += 10.0
    estimate.update("companies", 20_000, 20_000, requests_made=13 + 32)
    # 32 requests for 20,000 records: 150,000 left take 240 more requests, 120 s at 2/s; the
    # 10 s per 20,000 records so far would say 75 s, so the rate bounds it.
    assert estimate.requests == 35
    assert estimate.total == 170_000
    assert estimate.seconds_left() == pytest.approx(35 / 20_000 * 150_000 / 2.0)
    assert "20,000/170,000 records · 35 requests · about" in estimate.describe()


def test_without_a_rate_the_estimate_follows_the_time_so_far() -> None:
    clock = Clock()
    estimate = ResyncEstimate(0.0, clock=clock)
    estimate.update("devices", 0, 1000, requests_made=0)
    clock.now += 4.0
    estimate.update("devices", 250, 1000, requests_made=2)
    assert estimate.seconds_left() == pytest.approx(12.0)


def test_an_entity_not_counted_yet_leaves_the_total_open() -> None:
    estimate = ResyncEstimate(2.0, clock=Clock())
    estimate.update("contacts", 50, None, requests_made=1)
    assert estimate.total is None and estimate.seconds_left() is None
    assert estimate.describe() == "50 records · 0 requests"


@pytest.mark.parametrize(
    ("seconds", "text"), [(4.4, "4 s"), (185, "3 min 05 s"), (3720, "1 h 02 min")]
)
def test_durations_read_well(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_a_foreground_resync_shows_requests_and_the_time_left(tmp_path: Path) -> None:
    with FakeBitrix24(seed=5, companies=40, contacts=300, devices=200, token="t") as fake:
        config = write_config(tmp_path, fake, batch_commands=2)
        result = subprocess.run(
            [sys.executable, "-m", "syncd", "--config", str(config), "--resync", "all"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr
        shown = result.stdout + result.stderr
        assert "requests" in shown and "records" in shown
        assert "left" in shown
        status = subprocess.run(
            [sys.executable, "-m", "syncd", "--config", str(config), "status", "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        report = json.loads(status.stdout)
        full = report["requests_per_run"]["full"]
        assert report["last_run"]["requests"] == full["last"] > 3
        assert full["last"] <= fake.request_count


def test_every_run_records_the_requests_it_sent(tmp_path: Path) -> None:
    with FakeBitrix24(seed=6, companies=20, contacts=60, devices=30, token="t") as fake:
        settings = make_settings(tmp_path, fake)
        conn = open_cache(settings)
        engine = build_engine(settings, conn)
        try:
            before = fake.request_count
            full = engine.run_cycle()
            assert full.requests == fake.request_count - before
            engine.run_cycle()  # finds out that deletion events are not for this webhook
            before = fake.request_count
            noop = engine.run_cycle()
            assert noop.kind == "incremental"
            assert noop.requests == fake.request_count - before <= 3
            sweep = engine.sweep()
            rows = conn.execute("SELECT kind, requests FROM sync_runs ORDER BY id").fetchall()
        finally:
            engine.adapter.close()
            conn.close()
    assert rows[0] == ("full", full.requests)
    assert rows[2:] == [("incremental", noop.requests), ("sweep", sweep.requests)]
    assert "requests" in noop.summary()
