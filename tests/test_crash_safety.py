"""Crash safety: SIGKILL the syncing process at random points of full and incremental syncs,
then let it finish; the cache must equal the fake CRM exactly, cursors never move backwards."""

from __future__ import annotations

import random
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest

from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.connectors.crm.bitrix24.fake_view import adapter_view
from syncd.engines.verify import differences
from syncd.mappings.loader import load_mapping_set
from syncd.state.db import connect
from tests.conftest import run_and_kill, write_config

ROOT = Path(__file__).parents[1]
ROUNDS = 32


def run_until(config: Path, mode: str, lines: int | None, jitter: float = 0.0) -> bool:
    """The mirror worker, killed after ``lines`` progress lines (fetching, staging, a commit)."""
    return run_and_kill(["tests.crash_worker", str(config), mode], lines, jitter)


def cursors(path: Path) -> dict[str, datetime]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT entity, value FROM cursors").fetchall()
        return {entity: datetime.fromisoformat(value) for entity, value in rows}
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()


@pytest.mark.slow
def test_sigkill_at_random_points_converges(tmp_path: Path) -> None:
    rng = random.Random(20261121)
    with FakeBitrix24(seed=13, companies=120, contacts=500, devices=260, token="t") as fake:
        # One command per chained batch: a full resync takes ~20 pages to be killed between.
        config = write_config(tmp_path, fake, '[log]\nlevel = "WARNING"\n', batch_commands=1)
        cache = tmp_path / "state" / "cache.sqlite3"
        previous: dict[str, datetime] = {}
        kills = 0
        for round_number in range(ROUNDS):
            mode = ("full", "cycle", "cycle", "sweep")[round_number % 4]
            fake.mutate_random(creates=rng.randint(0, 8), updates=rng.randint(1, 60),
                               deletes=rng.randint(0, 3), seed=round_number)
            # a full resync of this dataset reports ~20 pages, a cycle or sweep 3 to ~30
            lines = rng.randint(1, 20) if mode == "full" else rng.randint(1, 4)
            if not run_until(config, mode, lines, jitter=rng.choice((0.0, 0.0, 0.005, 0.02))):
                kills += 1
            now = cursors(cache)
            for entity, value in previous.items():
                assert now.get(entity, value) >= value, "a cursor moved backwards"
            previous = now
        assert kills >= 20
        # The first cycle may resume a full resync killed mid-way: its pages staged before later
        # changes are swapped in as they were, and its cursor stays at the listing's start, so
        # the next (incremental) cycle picks those changes up. Then the sweep finds deletions.
        assert run_until(config, "cycle", None)
        assert run_until(config, "cycle", None)
        assert run_until(config, "sweep", None)
        conn = connect(cache)
        assert differences(conn, load_mapping_set("bitrix24"), adapter_view(fake)) == []
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        conn.close()
