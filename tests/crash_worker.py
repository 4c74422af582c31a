"""Crash-test worker: runs mirror cycles against a fake CRM and reports each commit.

    python -m tests.crash_worker CONFIG MODE   (MODE: cycle | full | sweep)

Prints one line per committed page or cycle, so the test can SIGKILL it at a chosen point.
"""

from __future__ import annotations

import sys
from pathlib import Path

from syncd.config import load_settings
from syncd.core.entities import Entity
from syncd.runtime import build_engine, open_cache


def main(config: str, mode: str) -> None:
    settings = load_settings(Path(config))
    conn = open_cache(settings)

    def progress(entity: str, done: int, total: int | None) -> None:
        print(f"page {entity} {done}", flush=True)

    engine = build_engine(settings, conn, progress=progress)
    if mode == "full":
        report = engine.run_full(list(Entity), resume=True)
    elif mode == "sweep":
        report = engine.sweep()
    else:
        report = engine.run_cycle()
    print(f"done {report.kind}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
