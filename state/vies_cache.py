"""The VIES cache tables: definite answers, open circuits and lookup counters.

Tables (state/migrations/003_vies_omniva.sql): ``vies_answers`` holds definite answers only
(valid or invalid; a fault is never an answer), keyed by the member-state code and the cleaned
number *we asked for*; ``vies_circuits`` holds circuits opened because VIES blocked us;
``vies_lookup_counts`` counts lookup outcomes per UTC day.

Every writing function runs its own short write transaction (:func:`syncd.state.db.write_transaction`);
nothing here talks to VIES. Times are aware ``datetime`` objects in the API and UTC ISO text
(``YYYY-MM-DDTHH:MM:SSZ``) in the tables.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from syncd.state.db import write_transaction
from syncd.core.clock import iso, parse_iso

OUTCOMES = ("cache", "live", "stale", "local_invalid", "rejected", "unavailable")
"""The outcomes counted in ``vies_lookup_counts``."""

COUNTS_KEEP_DAYS = 30
"""Days of lookup counters :func:`purge` keeps."""

_ANSWER_COLUMNS = (
    "country_code, vat_number, valid, name, address, request_date, consultation_number, fetched_at"
)


def day_of(moment: datetime) -> str:
    """The UTC day (``YYYY-MM-DD``) of ``moment``, as ``vies_lookup_counts`` keys it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


class AnswerFields(Protocol):
    """What :func:`put` needs of an answer (``syncd.connectors.vies.client.ViesAnswer`` fits)."""

    @property
    def country_code(self) -> str: ...
    @property
    def vat_number(self) -> str: ...
    @property
    def valid(self) -> bool: ...
    @property
    def name(self) -> str | None: ...
    @property
    def address(self) -> str | None: ...
    @property
    def request_date(self) -> str: ...
    @property
    def consultation_number(self) -> str | None: ...


@dataclass(frozen=True)
class CachedAnswer:
    """One stored VIES answer."""

    country_code: str
    vat_number: str
    valid: bool
    name: str | None
    address: str | None
    request_date: str
    consultation_number: str | None
    fetched_at: str  # UTC ISO, when syncd received the answer

    def age_seconds(self, now: datetime) -> int:
        """Whole seconds since the answer was fetched (never negative, even if clocks step)."""
        return max(0, int((now - parse_iso(self.fetched_at)).total_seconds()))


@dataclass(frozen=True)
class Circuit:
    """An open (or expired, not yet purged) circuit: no VIES calls in ``scope`` until
    ``open_until``."""

    scope: str  # 'global' or a member-state code
    reason: str  # the VIES fault code that opened it
    opened_at: str
    open_until: str

    def is_open(self, now: datetime) -> bool:
        return parse_iso(self.open_until) > now


# -- answers ----------------------------------------------------------------------------------


def get(conn: sqlite3.Connection, country_code: str, vat_number: str) -> CachedAnswer | None:
    """The stored answer for a number, whatever its age (the caller judges freshness)."""
    row = conn.execute(
        f"SELECT {_ANSWER_COLUMNS} FROM vies_answers WHERE country_code = ? AND vat_number = ?",
        (country_code, vat_number),
    ).fetchone()
    if row is None:
        return None
    return CachedAnswer(
        country_code=row[0],
        vat_number=row[1],
        valid=bool(row[2]),
        name=row[3],
        address=row[4],
        request_date=row[5],
        consultation_number=row[6],
        fetched_at=row[7],
    )


def put(conn: sqlite3.Connection, answer: AnswerFields, fetched_at: datetime) -> None:
    """Store (or replace) a definite answer, keyed by ``answer.country_code`` and
    ``answer.vat_number``: pass the cleaned number that was asked for, not VIES's echo."""
    with write_transaction(conn):
        conn.execute(
            f"INSERT OR REPLACE INTO vies_answers ({_ANSWER_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                answer.country_code,
                answer.vat_number,
                int(answer.valid),
                answer.name,
                answer.address,
                answer.request_date,
                answer.consultation_number,
                iso(fetched_at),
            ),
        )


def purge(conn: sqlite3.Connection, older_than: datetime, *, now: datetime) -> int:
    """Delete answers fetched before ``older_than``, circuits whose ``open_until`` has passed
    and lookup counters older than :data:`COUNTS_KEEP_DAYS` days, in one transaction.

    Returns the number of rows deleted (all three tables together).
    """
    oldest_day = day_of(now - timedelta(days=COUNTS_KEEP_DAYS))
    with write_transaction(conn):
        answers = conn.execute(
            "DELETE FROM vies_answers WHERE fetched_at < ?", (iso(older_than),)
        ).rowcount
        circuits = conn.execute(
            "DELETE FROM vies_circuits WHERE open_until <= ?", (iso(now),)
        ).rowcount
        counts = conn.execute(
            "DELETE FROM vies_lookup_counts WHERE day < ?", (oldest_day,)
        ).rowcount
    return int(answers + circuits + counts)


def count_answers(conn: sqlite3.Connection) -> int:
    """How many answers are stored (fresh or stale)."""
    return int(conn.execute("SELECT COUNT(*) FROM vies_answers").fetchone()[0])


# -- circuits ---------------------------------------------------------------------------------


def open_circuit(
    conn: sqlite3.Connection, scope: str, reason: str, *, now: datetime, until: datetime
) -> Circuit:
    """Open (or re-open, replacing the previous row) the circuit of ``scope``."""
    circuit = Circuit(scope=scope, reason=reason, opened_at=iso(now), open_until=iso(until))
    with write_transaction(conn):
        conn.execute(
            "INSERT OR REPLACE INTO vies_circuits (scope, reason, opened_at, open_until) "
            "VALUES (?, ?, ?, ?)",
            (circuit.scope, circuit.reason, circuit.opened_at, circuit.open_until),
        )
    return circuit


def circuits(conn: sqlite3.Connection) -> list[Circuit]:
    """Every circuit row, open or expired (cheap: the table holds a handful of rows)."""
    rows = conn.execute(
        "SELECT scope, reason, opened_at, open_until FROM vies_circuits ORDER BY scope"
    ).fetchall()
    return [Circuit(*row) for row in rows]


def open_circuits(conn: sqlite3.Connection, now: datetime) -> list[Circuit]:
    """The circuits still open at ``now``."""
    return [c for c in circuits(conn) if c.is_open(now)]


def close_circuit(conn: sqlite3.Connection, scope: str) -> bool:
    """Close the circuit of ``scope`` at once (an operator's decision); True if one existed."""
    with write_transaction(conn):
        deleted = conn.execute("DELETE FROM vies_circuits WHERE scope = ?", (scope,)).rowcount
    return bool(deleted)


# -- counters ---------------------------------------------------------------------------------


def add_counts(conn: sqlite3.Connection, counts: Mapping[str, int], day: str) -> None:
    """Add ``counts`` (outcome → lookups) to the counters of UTC ``day`` (``YYYY-MM-DD``)."""
    rows = [(day, outcome, n) for outcome, n in counts.items() if n]
    if not rows:
        return
    with write_transaction(conn):
        conn.executemany(
            "INSERT INTO vies_lookup_counts (day, outcome, count) VALUES (?, ?, ?) "
            "ON CONFLICT(day, outcome) DO UPDATE SET count = count + excluded.count",
            rows,
        )


def counts_for_days(conn: sqlite3.Connection, days: list[str]) -> dict[str, int]:
    """Outcome → lookups summed over ``days``."""
    marks = ", ".join("?" for _ in days)
    rows = conn.execute(
        f"SELECT outcome, SUM(count) FROM vies_lookup_counts WHERE day IN ({marks}) "
        "GROUP BY outcome",
        days,
    ).fetchall()
    return {str(outcome): int(total) for outcome, total in rows}


def stats(conn: sqlite3.Connection, now: datetime) -> dict[str, Any]:
    """The VIES figures ``syncd status`` shows.

    ``{"entries": n, "lookups_24h": n, "hits_24h": n, "hit_ratio": float | None,
    "open_circuits": [{"scope", "reason", "open_until"}]}``

    The counters are kept per UTC day, so the "24h" figures cover today's and yesterday's rows
    (between 24 and 48 hours, as flushed so far by the daemon). ``lookups_24h`` counts every
    outcome (local answers and failures included); ``hits_24h`` counts answers from the fresh
    cache; ``hit_ratio`` is ``cache / (cache + live + stale)`` — the share of the lookups that
    needed a VIES answer which the cache served — or None when there were none.
    """
    by_outcome = counts_for_days(conn, [day_of(now - timedelta(days=1)), day_of(now)])
    hits = by_outcome.get("cache", 0)
    answered = hits + by_outcome.get("live", 0) + by_outcome.get("stale", 0)
    return {
        "entries": count_answers(conn),
        "lookups_24h": sum(by_outcome.values()),
        "hits_24h": hits,
        "hit_ratio": round(hits / answered, 4) if answered else None,
        "open_circuits": [
            {"scope": c.scope, "reason": c.reason, "open_until": c.open_until}
            for c in open_circuits(conn, now)
        ],
    }
