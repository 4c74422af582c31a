"""A portal-like reader for benchmarks: runs typical portal queries against the cache in a loop
until a stop file appears, timing each, and counts invariant violations (dangling links).

    python bench/portal_reader.py CACHE STOP_FILE   -> one JSON line on stdout
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import time
from pathlib import Path

QUERIES = (
    "SELECT count(*) FROM companies",
    "SELECT d.crm_id, d.brand, c.name FROM devices d "
    "LEFT JOIN companies c ON c.crm_id = d.company_id "
    "WHERE d.company_id = (SELECT crm_id FROM companies ORDER BY random() LIMIT 1)",
    "SELECT crm_id, first_name, last_name, emails FROM contacts "
    "WHERE company_id = (SELECT crm_id FROM companies ORDER BY random() LIMIT 1)",
)
PACE_SECONDS = 0.002
DANGLING = (
    "SELECT count(*) FROM devices d WHERE d.company_id IS NOT NULL "
    "AND NOT EXISTS (SELECT 1 FROM companies c WHERE c.crm_id = d.company_id)"
)


def main(cache: str, stop_file: str) -> None:
    while not Path(cache).exists() and not Path(stop_file).exists():
        time.sleep(0.01)
    conn = sqlite3.connect(cache, timeout=5, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    latencies: list[float] = []
    violations = 0
    while not Path(stop_file).exists():
        for sql in QUERIES:
            started = time.perf_counter()
            try:
                conn.execute(sql).fetchall()
            except sqlite3.OperationalError:  # schema not created yet
                time.sleep(0.01)
                continue
            latencies.append((time.perf_counter() - started) * 1000)
        with contextlib.suppress(sqlite3.OperationalError):
            violations += int(conn.execute(DANGLING).fetchone()[0] > 0)
        time.sleep(PACE_SECONDS)  # a portal's request rate, not a busy loop stealing a core
    print(json.dumps({"latencies_ms": latencies, "violations": violations}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
