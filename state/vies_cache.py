"""The VIES cache tables: definite answers, open circuits and lookup counters.

Tables (state/migrations/003_vies_omniva.sql): ``vies_answers`` holds definite answers only
(valid or invalid; a fault is never an answer), keyed by the member-state code and the cleaned
number *we asked for*; ``vies_circuits`` holds circuits opened because VIES blocked us;
``vies_lookup_counts`` counts lookup outcomes per UTC day.

Every writing function runs its own short write transaction
(:func:`syncd.state.db.write_transaction`); nothing here talks to VIES. Times are aware UTC
``datetime`` objects in the API and ISO text (``YYYY-MM-DDTHH:MM:SSZ``) in the tables.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from syncd.core.clock import iso, parse_iso
from syncd.state.db import write_transaction

OUTCOMES = ("cache", "live", "stale", "local_invalid", "rejected", "unavailable")
"""The outcomes counted in ``vies_lookup_counts``: each lookup counts as exactly one."""

NO_CONSULTATION = "no_consultation"
"""Counted in ``vies_lookup_counts`` beside the outcomes, not a lookup of its own: a live
checkVatApprox answer that the number is valid (also counted ``live``) which came without a
consultation number."""

NOTES = (NO_CONSULTATION,)
"""Rows of ``vies_lookup_counts`` that flag some lookups rather than count them."""

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
    fetched_at: datetime  # when syncd received the answer (to the second, as stored)

    def age_seconds(self, now: datetime) -> int:
        """Whole seconds since the answer was fetched (never negative, even if clocks step)."""
        return max(0, int((now - self.fetched_at).total_seconds()))


@dataclass(frozen=True)
class Circuit:
    """An open (or expired, not yet purged) circuit: no VIES calls in ``scope`` until
    ``open_until``."""

    scope: str  # 'global' or a member-state code
    reason: str  # the VIES fault code that opened it
    opened_at: datetime
    open_until: datetime

    def is_open(self, now: datetime) -> bool:
        """Whether the circuit still stops VIES calls at ``now``."""
        return self.open_until > now


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
        fetched_at=parse_iso(row[7]),
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
    """Open (or re-open, replacing the previous row) the circuit of ``scope``; returns it as
    stored (its times to the second)."""
    opened_at, open_until = iso(now), iso(until)
    with write_transaction(conn):
        conn.execute(
            "INSERT OR REPLACE INTO vies_circuits (scope, reason, opened_at, open_until) "
            "VALUES (?, ?, ?, ?)",
            (scope, reason, opened_at, open_until),
        )
    return Circuit(scope, reason, parse_iso(opened_at), parse_iso(open_until))


def circuits(conn: sqlite3.Connection) -> list[Circuit]:
    """Every circuit row, open or expired (cheap: the table holds a handful of rows)."""
    rows = conn.execute(
        "SELECT scope, reason, opened_at, open_until FROM vies_circuits ORDER BY scope"
    ).fetchall()
    return [
        Circuit(scope, reason, parse_iso(opened_at), parse_iso(open_until))
        for scope, reason, opened_at, open_until in rows
    ]


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


@dataclass(frozen=True)
class ViesFigures:
    """What ``syncd status`` and ``/metrics`` show of the VIES tables at one moment.

    The counters are kept per UTC day, so the "24h" figures cover today's and yesterday's rows
    (between 24 and 48 hours, as flushed so far by the daemon).
    """

    answers: int  # stored answers, fresh or stale
    open_circuits: tuple[Circuit, ...]
    today: dict[str, int]  # outcome → lookups in the current UTC day
    last_24h: dict[str, int]  # outcome → lookups today and yesterday

    @property
    def lookups_24h(self) -> int:
        """Every lookup of the 24h window (local answers and failures included)."""
        return sum(n for outcome, n in self.last_24h.items() if outcome not in NOTES)

    @property
    def no_consultation_24h(self) -> int:
        """Live checkVatApprox answers of the 24h window without a consultation number."""
        return self.last_24h.get(NO_CONSULTATION, 0)

    @property
    def hits_24h(self) -> int:
        """Lookups of the 24h window answered from the fresh cache."""
        return self.last_24h.get("cache", 0)

    @property
    def hit_ratio(self) -> float | None:
        """``cache / (cache + live + stale)``, the share of the lookups that needed a VIES answer
        which the cache served (to four places), or None when there were none."""
        answered = self.hits_24h + self.last_24h.get("live", 0) + self.last_24h.get("stale", 0)
        return round(self.hits_24h / answered, 4) if answered else None

    def summary(self) -> dict[str, Any]:
        """The figures as plain data (``syncd status --json`` shows them so):
        ``{"entries", "lookups_24h", "hits_24h", "hit_ratio", "no_consultation_24h",
        "open_circuits": [{"scope", "reason", "open_until"}]}``, times as stored."""
        return {
            "entries": self.answers,
            "lookups_24h": self.lookups_24h,
            "hits_24h": self.hits_24h,
            "hit_ratio": self.hit_ratio,
            "no_consultation_24h": self.no_consultation_24h,
            "open_circuits": [
                {"scope": c.scope, "reason": c.reason, "open_until": iso(c.open_until)}
                for c in self.open_circuits
            ],
        }


def figures(conn: sqlite3.Connection, now: datetime) -> ViesFigures:
    """The VIES figures at ``now``."""
    today = day_of(now)
    last_24h = counts_for_days(conn, [day_of(now - timedelta(days=1)), today])
    return ViesFigures(
        answers=count_answers(conn),
        open_circuits=tuple(open_circuits(conn, now)),
        today=counts_for_days(conn, [today]),
        last_24h=last_24h,
    )
