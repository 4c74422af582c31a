"""VIES answers without a consultation number (the proof of a checkVatApprox check): counted in
``vies_lookup_counts`` beside the outcomes, shown by ``syncd status`` and ``/metrics``."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from syncd.api.metrics import CacheCollector
from syncd.cli.status import collect, render
from syncd.core.clock import utc_now
from syncd.state import vies_cache
from syncd.state.db import connect

WARNING = "answers without a consultation number (24 h): 3 - proof of the check is missing"


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = connect(tmp_path / "state" / "cache.sqlite3")
    yield connection
    connection.close()


def add_today(conn: sqlite3.Connection, counts: dict[str, int]) -> None:
    vies_cache.add_counts(conn, counts, vies_cache.day_of(utc_now()))


def test_status_warns_about_answers_without_a_consultation_number(
    conn: sqlite3.Connection, tmp_path: Path
) -> None:
    add_today(conn, {"live": 4, "cache": 4, "no_consultation": 2})
    yesterday = vies_cache.day_of(utc_now() - timedelta(days=1))
    vies_cache.add_counts(conn, {"live": 1, "no_consultation": 1}, yesterday)
    report = collect(conn, tmp_path / "state")
    vies = report["vies"]
    assert (vies["no_consultation_24h"], vies["lookups_24h"], vies["hit_ratio"]) == (3, 9, 0.4444)
    text = render(report)
    assert f"WARNING: {WARNING}" in text
    assert "9 lookup(s) in 24 h, hit ratio 44%" in text
    # A warning, not a problem: the verdicts stand, the daemon is not unhealthy for it.
    assert not any("consultation" in problem for problem in report["problems"])


def test_status_is_silent_when_every_answer_has_its_consultation_number(
    conn: sqlite3.Connection, tmp_path: Path
) -> None:
    add_today(conn, {"live": 4})
    report = collect(conn, tmp_path / "state")
    assert report["vies"]["no_consultation_24h"] == 0
    assert "consultation" not in render(report)


def test_metrics_count_answers_without_a_consultation_number_apart(
    conn: sqlite3.Connection,
) -> None:
    add_today(conn, {"live": 4, "no_consultation": 3})
    families = {f.name: f for f in CacheCollector(lambda: conn).collect()}
    (sample,) = families["syncd_vies_answers_without_consultation_today"].samples
    assert sample.value == 3
    outcomes = {s.labels["outcome"]: s.value for s in families["syncd_vies_lookups_today"].samples}
    assert outcomes["live"] == 4
    assert "no_consultation" not in outcomes  # not a lookup outcome: sums stay the lookups


def test_metrics_report_zero_without_any(conn: sqlite3.Connection) -> None:
    families = {f.name: f for f in CacheCollector(lambda: conn).collect()}
    (sample,) = families["syncd_vies_answers_without_consultation_today"].samples
    assert sample.value == 0
