"""What the local HTTP API reads, backed by the cache: the parcel-machine list and the daemon's
health. Every API worker thread reads through its own SQLite connection (WAL readers never
block the lanes' writers)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from syncd.core.clock import iso, iso_or_none, utc_now
from syncd.state import omniva, overview
from syncd.state.db import ThreadConnections


class CachedLocations:
    """Omniva's locations as stored by the services lane.

    Building one country's answer from the table costs about 20 ms of CPU (sorting names
    without accents, shaping each location), which under load would hold the interpreter lock
    from the VAT lookups. The shaped lists are kept in memory, per country and type, until the
    stored list changes (``omniva_list.updated_at``).
    """

    MAX_ENTRIES = 32  # countries x types; unknown countries are cached too (as empty lists)

    def __init__(self, connections: ThreadConnections) -> None:
        self._connections = connections
        self._lock = threading.Lock()
        self._cache: dict[
            tuple[str, str | None], tuple[datetime | None, list[dict[str, Any]]]
        ] = {}

    def locations(self, country: str, kind: str | None) -> list[dict[str, Any]]:
        conn = self._connections.get()
        version = omniva.list_state(conn).updated_at
        key = (country.strip().upper(), kind)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        shaped = omniva.list_locations(conn, country, kind)
        with self._lock:
            if len(self._cache) >= self.MAX_ENTRIES:
                self._cache.clear()
            self._cache[key] = (version, shaped)
        return shaped

    def as_of(self) -> str | None:
        """When the stored list last changed; None when no list has been loaded yet."""
        state = omniva.list_state(self._connections.get())
        return iso_or_none(state.updated_at) if state.record_count else None


class DaemonHealth:
    """``/healthz``: healthy while no job has stopped for good; degraded while one is failing or
    VIES has blocked us (an open circuit: VAT checks answer from the cache or 503)."""

    def __init__(
        self,
        connections: ThreadConnections,
        *,
        lanes: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self._connections = connections
        self._lanes = lanes

    def __call__(self) -> tuple[bool, dict[str, Any]]:
        seen = overview.health(self._connections.get(), utc_now())
        jobs = {job.job: job.state for job in seen.jobs}
        stopped = sorted(name for name, state in jobs.items() if state == "stopped")
        failing = sorted(name for name, state in jobs.items() if state == "failing")
        circuits = seen.open_circuits
        lanes = self._lanes() if self._lanes is not None else {}
        hung = any(state != "ok" for state in lanes.values())
        unhealthy = bool(stopped) or hung
        status = "unhealthy" if unhealthy else "degraded" if failing or circuits else "ok"
        return not unhealthy, {
            "status": status,
            "jobs": jobs,
            "lanes": lanes,
            "vies_circuits": [
                {"scope": c.scope, "reason": c.reason, "open_until": iso(c.open_until)}
                for c in circuits
            ],
            "schema_version": seen.schema_version,
        }
