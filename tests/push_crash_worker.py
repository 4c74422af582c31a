"""Crash-test worker for the outbox: delivers requests, printing a line per attempt, so the test
can SIGKILL it mid-delivery.

    python -m tests.push_crash_worker CONFIG DAYS_AHEAD [--until-empty]

The worker's clock runs DAYS_AHEAD days ahead of real time, so leases held by killed workers
have expired and retry_wait requests are due, without the test sleeping.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from syncd.config import load_settings
from syncd.engines.push import OutboxDelivery, PushOptions
from syncd.runtime import build_pusher, open_cache, push_options


def main(config: str, days_ahead: int, until_empty: bool) -> None:
    settings = load_settings(Path(config))
    conn = open_cache(settings)
    base = push_options(settings)
    options = PushOptions(spool=base.spool, max_attempts=1000, lease_seconds=600)
    offset = timedelta(days=days_ahead)
    delivery = OutboxDelivery(conn, build_pusher(settings), options,
                              clock=lambda: datetime.now(UTC) + offset)
    jumps = 0
    while True:
        request = delivery.deliver_next()
        if request is None:
            remaining = conn.execute(
                "SELECT count(*) FROM outbox_requests WHERE status NOT IN ('done', 'dead')"
            ).fetchone()[0]
            jumps += 1
            if not until_empty or remaining == 0 or jumps > 50:
                break
            offset += timedelta(hours=3)  # jump past any backoff
            continue
        print(f"attempt {request.id}", flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), "--until-empty" in sys.argv)
