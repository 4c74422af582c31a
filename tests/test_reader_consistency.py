"""A reader process queries the cache throughout a full sync and incremental cycles; every
snapshot it sees must be a finished cycle's (counts match what that cycle committed, no dangling
links)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.runtime import build_engine, open_cache
from tests.conftest import make_settings

READER = r"""
import json, os, sqlite3, sys
path, stop_file = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(path, timeout=10, isolation_level=None)
conn.execute("PRAGMA busy_timeout = 10000")
seen, violations = {}, []
while not os.path.exists(stop_file):
    conn.execute("BEGIN")
    run = conn.execute("SELECT max(id) FROM sync_runs").fetchone()[0]
    counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("companies", "contacts", "devices")]
    dangling = conn.execute(
        "SELECT (SELECT count(*) FROM devices d WHERE d.company_id IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM companies c WHERE c.crm_id = d.company_id)) + "
        "(SELECT count(*) FROM devices d WHERE d.contact_id IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM contacts c WHERE c.crm_id = d.contact_id)) + "
        "(SELECT count(*) FROM contacts p WHERE p.company_id IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM companies c WHERE c.crm_id = p.company_id))").fetchone()[0]
    conn.execute("COMMIT")
    if dangling:
        violations.append(f"run {run}: {dangling} dangling links")
    seen.setdefault(str(run), set()).add(tuple(counts))
print(json.dumps({"seen": {k: sorted(v) for k, v in seen.items()}, "violations": violations}))
"""


def test_reader_sees_only_whole_cycles(tmp_path: Path) -> None:
    with FakeBitrix24(seed=17, companies=200, contacts=1500, devices=700, token="t") as fake:
        settings = make_settings(tmp_path, fake)
        conn = open_cache(settings)
        stop_file = tmp_path / "stop"
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(settings.state.cache_path), str(stop_file)],
            stdout=subprocess.PIPE, text=True)
        engine = build_engine(settings, conn)
        committed: dict[str, tuple[int, int, int]] = {"None": (0, 0, 0)}

        def note() -> None:
            run = conn.execute("SELECT max(id) FROM sync_runs").fetchone()[0]
            committed[str(run)] = tuple(  # type: ignore[assignment]
                conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("companies", "contacts", "devices"))

        engine.run_cycle()
        note()
        for seed in range(4):
            fake.mutate_random(creates=30, updates=80, deletes=10, seed=seed)
            engine.run_cycle()
            note()
            engine.sweep()
            note()
        stop_file.touch()
        result = json.loads(reader.communicate(timeout=60)[0])
        engine.adapter.close()
        conn.close()
    assert result["violations"] == []
    assert len(result["seen"]) >= 2, "the reader should have seen several cycles"
    for run, snapshots in result["seen"].items():
        assert [list(committed[run])] == snapshots, f"run {run}: saw {snapshots}"
