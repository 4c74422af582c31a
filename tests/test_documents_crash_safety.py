"""Crash safety of the documents mirror: SIGKILL the mirroring process at random points of first
enumerations, incremental deltas (with changes between runs) and re-enumerations after an
expired cursor (410), then let it finish: every library in the cache must equal the fake Graph
exactly (nothing lost, stale or resurrected), and the stored delta link is never ahead of the
items it covers.

The fake Graph runs in this process; the worker (``tests/documents_crash_worker.py``) is a
``syncd`` process of its own that reaches it through a config file (its URLs, its CA, the client
secret in a file), as the daemon would.
"""

from __future__ import annotations

import math
import random
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from syncd.connectors.sharepoint.fake import FakeGraph
from syncd.state import documents
from syncd.state.db import connect
from tests.conftest import (
    LOCAL_ONLY,
    SHAREPOINT_HOST,
    SHAREPOINT_SITE_PATH,
    document_library,
    fake_documents,
    run_and_kill,
    settled,
    sharepoint_toml,
)

PAGE_SIZE = 6
KILLS_PER_TEST = 11  # two tests: at least 22 kills in all
MAX_ROUNDS = 30
LIBRARIES = {"candela": ("Candela", 45), "cynosure": ("Cynosure", 20)}  # name: (library, files)


@dataclass(frozen=True)
class Seen:
    """One library in the cache between two runs of the worker."""

    delta_link: str | None
    enumeration_kind: str | None
    enumeration_link: str | None
    last_full_at: Any
    items: dict[str, dict[str, Any]]
    staged: int


def observe(cache: Path) -> dict[str, Seen]:
    """Every library in the cache (none before the worker first got that far)."""
    if not cache.exists():
        return {}
    conn = connect(cache, migrate_schema=False)
    try:
        return {
            state.name: Seen(
                state.delta_link,
                state.enumeration_kind,
                state.enumeration_link,
                state.last_full_at,
                documents.snapshot(conn, state.name),
                documents.staged_count(conn, state.name),
            )
            for state in documents.all_libraries(conn)
        }
    except sqlite3.OperationalError:  # killed before the schema was in place
        return {}
    finally:
        conn.close()


def check_run(
    before: dict[str, Seen], after: dict[str, Seen], fake: FakeGraph, drives: dict[str, str],
    mode: str,
) -> None:
    """What must hold after any run, killed or not (the fake does not change during a run)."""
    for name, drive_id in drives.items():
        old, new = before.get(name), after.get(name)
        if new is None:
            continue
        if new.enumeration_kind is None:
            assert new.staged == 0, f"{name}: staged rows without an enumeration"
        if new.delta_link is None or (old is not None and new.delta_link == old.delta_link):
            # no new cursor: the items are still the previous complete state, untouched
            assert new.items == (old.items if old else {}), f"{name}: items moved without a cursor"
            continue
        # A new cursor came with the items it covers. An enumeration a killed predecessor began
        # (at an older state of the fake) may briefly lack or keep what changed since; the next
        # delta settles that, and the final check proves it.
        if mode == "delta" and old is not None and old.enumeration_link is not None:
            continue
        upstream = fake_documents(fake, drive_id)
        if old is None or new.last_full_at != old.last_full_at:
            assert new.items == upstream, f"{name}: a full enumeration differs from the fake"
        else:
            assert settled(new.items) == settled(upstream), f"{name}: a delta left a difference"


def mutate(fake: FakeGraph, drive_id: str, rng: random.Random, round_number: int) -> None:
    """Changes between two runs: files modified, renamed, moved, deleted and added, and now and
    then a folder added (with files), renamed, moved or deleted (with what is below it)."""
    fake.change_files(drive_id, rng.uniform(3.0, 15.0), seed=round_number)
    snapshot = fake.snapshot(drive_id)
    folders = sorted(item_id for item_id, row in snapshot.items() if row["kind"] == "folder")
    deep = [item_id for item_id in folders if snapshot[item_id]["path"].count("/") >= 2]
    action = rng.choice(("none", "add", "rename", "move", "delete"))
    try:
        if action == "add":
            new = fake.add_folder(drive_id, f"Bulletins {round_number}", rng.choice(folders))
            for number in range(rng.randint(1, 4)):
                fake.add_file(drive_id, f"Bulletin {round_number}-{number}.pdf", new,
                              size=rng.randint(1_000, 90_000))
        elif action == "rename":
            target = rng.choice(folders)
            fake.rename(drive_id, target, f"{snapshot[target]['name']} r{round_number}")
        elif action == "move":
            fake.move(drive_id, rng.choice(folders), rng.choice(folders))
        elif action == "delete" and deep:
            fake.delete(drive_id, rng.choice(deep))
    except ValueError:  # a folder into itself, or a name already taken there: no change
        pass


def expected_lines(fake: FakeGraph, drives: dict[str, str], seen: dict[str, Seen],
                   mode: str, expired: str | None) -> int:
    """About how many pages (progress lines) the next run commits: a whole enumeration of a
    library without a cursor (or with an expired one), a page or two of changes otherwise."""
    lines = 0
    for name, drive_id in drives.items():
        state = seen.get(name)
        if mode == "full" or state is None or state.delta_link is None or name == expired:
            lines += math.ceil((len(fake.snapshot(drive_id)) + 1) / PAGE_SIZE)
        else:
            lines += 1
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("seed", [20261206, 20261207])
def test_sigkill_at_random_points_converges(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    with FakeGraph(page_size=PAGE_SIZE) as fake:
        drives = {}
        for number, (name, (library, files)) in enumerate(LIBRARIES.items()):
            drives[name] = fake.add_library(SHAREPOINT_HOST, SHAREPOINT_SITE_PATH, library)
            fake.seed_library(drives[name], files=files, producers=[library], seed=seed + number)
        config = tmp_path / "syncd.toml"
        config.write_text(
            f'[state]\ndirectory = "{tmp_path / "state"}"\n{LOCAL_ONLY}[log]\nlevel = "WARNING"\n'
            + sharepoint_toml(fake, tmp_path, *(
                document_library(name, library, (library,))
                for name, (library, _) in LIBRARIES.items()
            ))
        )
        cache = tmp_path / "state" / "cache.sqlite3"
        kills: Counter[str] = Counter()
        seen = observe(cache)
        round_number = 0
        while sum(kills.values()) < KILLS_PER_TEST:
            round_number += 1
            assert round_number <= MAX_ROUNDS, f"only {sum(kills.values())} kills: {kills}"
            phase = "first" if len(seen) < len(drives) or any(
                state.delta_link is None for state in seen.values()
            ) else "delta"
            mode = "full" if round_number % 7 == 0 else "delta"
            expired = None
            if phase == "delta":
                for drive_id in drives.values():
                    if rng.random() < 0.8:
                        mutate(fake, drive_id, rng, round_number)
                if round_number % 4 == 2:  # an expired cursor: the library is enumerated again
                    expired = rng.choice(sorted(drives))
                    fake.expire_delta_tokens(drives[expired])
                    phase = "410"
            if mode == "full":
                phase = "full"
            lines = rng.randint(1, expected_lines(fake, drives, seen, mode, expired))
            finished = run_and_kill(
                ["tests.documents_crash_worker", str(config), mode], lines,
                jitter=rng.choice((0.0, 0.0, 0.003, 0.02)),
            )
            if not finished:
                kills[phase] += 1
            now = observe(cache)
            check_run(seen, now, fake, drives, mode)
            seen = now
        assert kills["first"] >= 1 and kills["delta"] + kills["410"] >= 1, kills
        print(f"{round_number} rounds, kills by phase: {dict(kills)}")

        # Finish: the first run may complete an enumeration begun before the last changes (so
        # briefly without them); the second, a delta, brings those. Then all must be exact.
        assert run_and_kill(["tests.documents_crash_worker", str(config), "delta"], None)
        assert run_and_kill(["tests.documents_crash_worker", str(config), "delta"], None)
        final = observe(cache)
        for name, drive_id in drives.items():
            assert settled(final[name].items) == settled(fake_documents(fake, drive_id)), name
            assert final[name].enumeration_kind is None and final[name].staged == 0
        # and a full enumeration brings what delta never reports (folder sizes, web URLs)
        assert run_and_kill(["tests.documents_crash_worker", str(config), "full"], None)
        final = observe(cache)
        for name, drive_id in drives.items():
            assert final[name].items == fake_documents(fake, drive_id), name
        conn = connect(cache)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        files = sum(1 for drive_id in drives.values()
                    for row in fake.snapshot(drive_id).values() if row["kind"] == "file")
        assert conn.execute(
            "SELECT sum(item_count) FROM document_libraries"
        ).fetchone() == (files,)
        conn.close()
