"""The mirrored tables and their bookkeeping: staging, merge, deletions, cursors, quarantine,
data-quality warnings, held deletes and ``sync_runs``.

Nothing here opens or commits a transaction: the engine decides a transaction's extent (see
:func:`syncd.state.db.write_transaction`) so that data and the cursor covering it always commit
together.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from syncd.core.clock import iso, iso_or_none, parse_iso
from syncd.core.entities import CANONICAL_FIELDS, CanonicalRecord
from syncd.state import suppressions

ENTITIES = tuple(CANONICAL_FIELDS)
_BOOK_COLUMNS = ("crm_updated_at", "content_hash", "synced_at", "sync_run_id")

Fingerprint = tuple[str, tuple[str | None, ...]]
"""What tells a cached row's version: ``(content_hash, links)``, the links (``ref`` fields) in
canonical order."""


def _check(entity: str) -> str:
    if entity not in CANONICAL_FIELDS:
        raise ValueError(f"unknown entity {entity!r}")
    return entity


def _columns(entity: str) -> tuple[str, ...]:
    return ("crm_id", *(f.name for f in CANONICAL_FIELDS[entity]), *_BOOK_COLUMNS)


def row_of(record: CanonicalRecord) -> tuple[Any, ...]:
    """The staging row of a canonical record (what :meth:`CacheStore.stage_rows` takes)."""
    return (record.crm_id, *record.values, record.updated_at, record.content_hash, "", None)


@dataclass(frozen=True)
class RunCounts:
    """What one committed cycle did."""

    upserted: int = 0
    deleted: int = 0
    quarantined: int = 0
    held_deletes: int = 0


@dataclass(frozen=True)
class QuarantinedRecord:
    """A record the mapper refused (the reason only, never the record's data)."""

    entity: str
    crm_id: str
    reason: str
    last_seen_at: datetime
    occurrences: int


@dataclass(frozen=True)
class DataQualitySummary:
    """One data-quality message of one entity: how many records carry it (the message says
    what is wrong, never a value), a few of their IDs, and when it was first and last seen."""

    entity: str
    message: str
    records: int
    examples: tuple[str, ...]  # up to DATA_QUALITY_EXAMPLES record IDs, the lowest first
    first_seen: datetime
    last_seen: datetime


DATA_QUALITY_EXAMPLES = 5


@dataclass(frozen=True)
class HeldDeletes:
    """The deletions of one entity the delete guard holds for an operator."""

    entity: str
    count: int
    reason: str


@dataclass(frozen=True)
class SyncRun:
    """A committed cycle's figures as ``sync_runs`` records them."""

    id: int
    kind: str
    finished_at: datetime
    upserted: int
    deleted: int
    quarantined: int
    held_deletes: int
    requests: int | None = None  # sent to the CRM; None for runs before schema 5


@dataclass(frozen=True)
class ResyncProgress:
    """How far an interrupted full resync got with one entity."""

    entity: str
    resume_after: str | None  # the listing continues after this ID; None before the first page
    server_time: datetime | None  # the CRM's clock at the first page (the entity's new cursor)
    pages: int
    records: int
    complete: bool
    started_at: datetime


class CacheStore:
    """Operations on the cache tables through one connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    # -- staging ------------------------------------------------------------------------------

    def ensure_scratch(self) -> None:
        """Per-connection TEMP tables for incremental cycles, shaped like the staging tables
        (a paused full resync keeps its own staging untouched)."""
        for entity in ENTITIES:
            self.conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS scratch_{entity} AS "
                f"SELECT * FROM main.stage_{entity} WHERE 0"
            )
            self.conn.execute(
                f"CREATE UNIQUE INDEX IF NOT EXISTS temp.scratch_{entity}_pk "
                f"ON scratch_{entity}(crm_id)"
            )

    def stage(self, table: str, entity: str, records: Iterable[CanonicalRecord]) -> int:
        """Insert canonical records into a staging table (``stage`` or ``scratch``); last wins."""
        return self.stage_rows(table, entity, [row_of(r) for r in records])

    def stage_rows(self, table: str, entity: str, rows: Sequence[tuple[Any, ...]]) -> int:
        """Insert rows made by :func:`row_of` into a staging table; last wins."""
        _check(entity)
        if table not in ("stage", "scratch"):
            raise ValueError(table)
        columns = _columns(entity)
        self.conn.executemany(
            f"INSERT OR REPLACE INTO {table}_{entity} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})",
            rows,
        )
        return len(rows)

    def clear_staging(self, table: str, entity: str) -> None:
        if table not in ("stage", "scratch"):
            raise ValueError(table)
        self.conn.execute(f"DELETE FROM {table}_{_check(entity)}")

    def staged_count(self, table: str, entity: str) -> int:
        return int(
            self.conn.execute(f"SELECT count(*) FROM {table}_{_check(entity)}").fetchone()[0]
        )

    def merge(self, table: str, entity: str, *, run_id: int, now: datetime) -> int:
        """Upsert staged rows into the live table; returns how many rows changed.

        Links to other entities are kept only when the target exists (a link to a record the
        mirror does not have is stored as NULL rather than breaking the foreign key). Unchanged
        rows (same content hash and links) are not rewritten. Rows of erased subjects are left
        out while suppressed (:mod:`syncd.state.suppressions`).
        """
        fields = CANONICAL_FIELDS[_check(entity)]
        suppressed = suppressions.suppressed_in_table(self.conn, entity, f"{table}_{entity}")
        select = ["s.crm_id"]
        for spec in fields:
            if spec.kind == "ref":
                select.append(
                    f"(SELECT t.crm_id FROM main.{spec.references} t "
                    f"WHERE t.crm_id = s.{spec.name})"
                )
            else:
                select.append(f"s.{spec.name}")
        select += ["s.crm_updated_at", "s.content_hash", ":now", ":run_id"]
        columns = _columns(entity)
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
        changed = " OR ".join(
            [f"main.{entity}.content_hash IS NOT excluded.content_hash"]
            + [
                f"main.{entity}.{f.name} IS NOT excluded.{f.name}"
                for f in fields
                if f.kind == "ref"
            ]
        )
        cursor = self.conn.execute(
            f"INSERT INTO main.{entity} ({', '.join(columns)}) "
            f"SELECT {', '.join(select)} FROM {table}_{entity} s "
            "WHERE s.crm_id NOT IN (SELECT value FROM json_each(:suppressed)) "
            f"ON CONFLICT(crm_id) DO UPDATE SET {updates} WHERE {changed}",
            {"now": iso(now), "run_id": run_id, "suppressed": json.dumps(sorted(suppressed))},
        )
        merged = cursor.rowcount
        self.conn.execute(
            "DELETE FROM quarantine WHERE entity = ? AND crm_id IN "
            f"(SELECT crm_id FROM {table}_{entity})",
            (entity,),
        )
        return merged

    def ids_missing_from_stage(self, entity: str) -> list[str]:
        """Live IDs absent from ``stage_<entity>`` (candidates for deletion after a full listing),
        leaving out records quarantined during the listing (present upstream, just unmappable)."""
        return [
            row[0]
            for row in self.conn.execute(
                f"SELECT crm_id FROM main.{_check(entity)} l WHERE NOT EXISTS "
                f"(SELECT 1 FROM main.stage_{entity} s WHERE s.crm_id = l.crm_id) "
                "AND NOT EXISTS "
                "(SELECT 1 FROM quarantine q WHERE q.entity = ? AND q.crm_id = l.crm_id)",
                (entity,),
            )
        ]

    # -- live rows ----------------------------------------------------------------------------

    def delete(self, entity: str, ids: Iterable[str]) -> int:
        """Delete live rows of ``entity`` (and their data-quality warnings); returns how many
        rows were deleted."""
        ids = list(ids)
        # rowcount, unlike total_changes, leaves out the rows the foreign keys' SET NULL touched.
        cursor = self.conn.executemany(
            f"DELETE FROM main.{_check(entity)} WHERE crm_id = ?", ((i,) for i in ids)
        )
        deleted = max(cursor.rowcount, 0)
        self.forget_data_quality(entity, ids)
        return deleted

    def live_ids(self, entity: str) -> set[str]:
        return {row[0] for row in self.conn.execute(f"SELECT crm_id FROM main.{_check(entity)}")}

    def count(self, entity: str) -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM main.{_check(entity)}").fetchone()[0])

    def fingerprints(self, entity: str) -> dict[str, Fingerprint]:
        """``crm_id -> (content_hash, links)`` of every live row of ``entity``."""
        refs = [f.name for f in CANONICAL_FIELDS[_check(entity)] if f.kind == "ref"]
        columns = ", ".join(["crm_id", "content_hash", *refs])
        return {
            crm_id: (content_hash, tuple(links))
            for crm_id, content_hash, *links in self.conn.execute(
                f"SELECT {columns} FROM main.{entity}"
            )
        }

    # -- cursors ------------------------------------------------------------------------------

    def cursor(self, entity: str) -> datetime | None:
        row = self.conn.execute("SELECT value FROM cursors WHERE entity = ?", (entity,)).fetchone()
        return datetime.fromisoformat(row[0]) if row else None

    def set_cursor(self, entity: str, value: datetime, *, now: datetime) -> None:
        """Move the change cursor forward (never backwards)."""
        current = self.cursor(entity)
        if current is not None and value <= current:
            return
        self.conn.execute(
            "INSERT INTO cursors (entity, value, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(entity) DO UPDATE SET "
            "value = excluded.value, updated_at = excluded.updated_at",
            (_check(entity), value.isoformat(), iso(now)),
        )

    # -- quarantine ---------------------------------------------------------------------------

    def quarantine(self, entity: str, crm_id: str, reason: str, *, now: datetime) -> None:
        self.conn.execute(
            "INSERT INTO quarantine (entity, crm_id, reason, first_seen_at, last_seen_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(entity, crm_id) DO UPDATE SET "
            "reason = excluded.reason, last_seen_at = excluded.last_seen_at, "
            "occurrences = occurrences + 1",
            (_check(entity), crm_id, reason, iso(now), iso(now)),
        )

    def quarantined_ids(self, entity: str) -> set[str]:
        """The IDs of the quarantined records of ``entity``."""
        return {
            crm_id
            for (crm_id,) in self.conn.execute(
                "SELECT crm_id FROM quarantine WHERE entity = ?", (_check(entity),)
            )
        }

    def quarantine_counts(self) -> dict[str, int]:
        """Quarantined records per entity (entities without any are left out)."""
        return {
            entity: int(count)
            for entity, count in self.conn.execute(
                "SELECT entity, count(*) FROM quarantine GROUP BY entity"
            )
        }

    def quarantined(self) -> list[QuarantinedRecord]:
        """Every quarantined record, the most recently seen first."""
        return [
            QuarantinedRecord(entity, crm_id, reason, parse_iso(last_seen_at), int(occurrences))
            for entity, crm_id, reason, last_seen_at, occurrences in self.conn.execute(
                "SELECT entity, crm_id, reason, last_seen_at, occurrences FROM quarantine "
                "ORDER BY last_seen_at DESC"
            )
        ]

    def release_quarantine(self, entity: str, ids: Iterable[str]) -> None:
        self.conn.executemany(
            "DELETE FROM quarantine WHERE entity = ? AND crm_id = ?", ((entity, i) for i in ids)
        )

    def forget_quarantine_not_seen_since(self, entity: str, since: datetime) -> None:
        """Drop quarantine rows a complete listing did not meet again (gone upstream)."""
        self.conn.execute(
            "DELETE FROM quarantine WHERE entity = ? AND last_seen_at < ?", (entity, iso(since))
        )

    # -- data-quality warnings ----------------------------------------------------------------

    def record_data_quality(
        self,
        entity: str,
        crm_ids: Iterable[str],
        warnings: Iterable[tuple[str, str]],
        *,
        now: datetime,
    ) -> int:
        """Make the stored warnings of the records ``crm_ids`` (just applied or staged) exactly
        ``warnings`` (``(crm_id, message)``): those met again keep their first sighting and are
        seen ``now``, new ones are added, and the ones these records no longer carry are
        forgotten. Returns how many warnings the records carry."""
        _check(entity)
        current = set(warnings)
        if self.conn.execute(
            "SELECT 1 FROM data_quality WHERE entity = ? LIMIT 1", (entity,)
        ).fetchone():
            ids = sorted({*crm_ids, *(crm_id for crm_id, _ in current)})
            stale = [
                (entity, crm_id, message)
                for crm_id, message in self.conn.execute(
                    "SELECT crm_id, message FROM data_quality WHERE entity = ? "
                    "AND crm_id IN (SELECT value FROM json_each(?))",
                    (entity, json.dumps(ids)),
                )
                if (crm_id, message) not in current
            ]
            self.conn.executemany(
                "DELETE FROM data_quality WHERE entity = ? AND crm_id = ? AND message = ?", stale
            )
        stamp = iso(now)
        self.conn.executemany(
            "INSERT INTO data_quality (entity, crm_id, message, first_seen, last_seen) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(entity, crm_id, message) DO UPDATE SET "
            "last_seen = excluded.last_seen",
            ((entity, crm_id, message, stamp, stamp) for crm_id, message in sorted(current)),
        )
        return len(current)

    def forget_data_quality(self, entity: str, ids: Iterable[str]) -> None:
        """Forget every warning of the records ``ids`` (deleted ones)."""
        self.conn.executemany(
            "DELETE FROM data_quality WHERE entity = ? AND crm_id = ?",
            ((_check(entity), i) for i in ids),
        )

    def forget_data_quality_not_seen_since(self, entity: str, since: datetime) -> None:
        """Drop warnings a complete listing did not meet again (their records are gone, or
        were quarantined)."""
        self.conn.execute(
            "DELETE FROM data_quality WHERE entity = ? AND last_seen < ?",
            (_check(entity), iso(since)),
        )

    def data_quality_counts(self) -> dict[str, int]:
        """Data-quality warnings (record and message) per entity (entities without any are left
        out)."""
        return {
            entity: int(count)
            for entity, count in self.conn.execute(
                "SELECT entity, count(*) FROM data_quality GROUP BY entity"
            )
        }

    def data_quality_summary(self, entity: str | None = None) -> list[DataQualitySummary]:
        """The warnings per entity and message (of ``entity``, or of all): entities in
        ``ENTITIES`` order, the messages most records carry first."""
        where, params = ("WHERE entity = ?", (_check(entity),)) if entity else ("", ())
        groups = self.conn.execute(
            "SELECT entity, message, count(*), min(first_seen), max(last_seen) "
            f"FROM data_quality {where} GROUP BY entity, message",
            params,
        ).fetchall()
        order = {name: n for n, name in enumerate(ENTITIES)}
        groups.sort(key=lambda g: (order.get(g[0], len(order)), g[0], -g[2], g[1]))
        return [
            DataQualitySummary(
                entity=name,
                message=message,
                records=int(count),
                examples=tuple(
                    crm_id
                    for (crm_id,) in self.conn.execute(
                        "SELECT crm_id FROM data_quality WHERE entity = ? AND message = ? "
                        "ORDER BY CAST(crm_id AS INTEGER), crm_id LIMIT ?",
                        (name, message, DATA_QUALITY_EXAMPLES),
                    )
                ),
                first_seen=parse_iso(first_seen),
                last_seen=parse_iso(last_seen),
            )
            for name, message, count, first_seen, last_seen in groups
        ]

    # -- held deletes -------------------------------------------------------------------------

    def hold_deletes(
        self, entity: str, ids: Sequence[str], reason: str, *, now: datetime
    ) -> None:
        """Replace the held deletions of ``entity`` with ``ids``."""
        self.conn.execute("DELETE FROM held_deletes WHERE entity = ?", (_check(entity),))
        self.conn.executemany(
            "INSERT INTO held_deletes (entity, crm_id, detected_at, reason) VALUES (?, ?, ?, ?)",
            ((entity, i, iso(now), reason) for i in ids),
        )

    def held_deletes(self, entity: str) -> list[str]:
        return [
            row[0]
            for row in self.conn.execute(
                "SELECT crm_id FROM held_deletes WHERE entity = ? ORDER BY CAST(crm_id AS INTEGER)",
                (_check(entity),),
            )
        ]

    def held_summary(self) -> dict[str, HeldDeletes]:
        """The held deletions per entity (entities without any are left out)."""
        return {
            entity: HeldDeletes(entity, int(count), reason)
            for entity, count, reason in self.conn.execute(
                "SELECT entity, count(*), max(reason) FROM held_deletes GROUP BY entity"
            )
        }

    def clear_held_deletes(self, entity: str) -> int:
        cursor = self.conn.execute("DELETE FROM held_deletes WHERE entity = ?", (_check(entity),))
        return cursor.rowcount

    # -- sync runs ----------------------------------------------------------------------------

    def start_run(
        self, kind: str, entities: Sequence[str], *, started_at: datetime, now: datetime
    ) -> int:
        """Insert the run's row (inside the cycle's transaction) and return its ID."""
        cursor = self.conn.execute(
            "INSERT INTO sync_runs (kind, entities, started_at, finished_at) VALUES (?, ?, ?, ?)",
            (kind, ",".join(entities), iso(started_at), iso(now)),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def finish_run(
        self,
        run_id: int,
        counts: RunCounts,
        *,
        data_as_of: datetime | None,
        details: dict[str, Any],
        requests: int | None = None,
    ) -> None:
        """Complete the run's row (``requests``: what it sent to the CRM, when known)."""
        self.conn.execute(
            "UPDATE sync_runs SET data_as_of = ?, upserted = ?, deleted = ?, quarantined = ?, "
            "held_deletes = ?, details = ?, requests = ? WHERE id = ?",
            (
                iso_or_none(data_as_of),
                counts.upserted,
                counts.deleted,
                counts.quarantined,
                counts.held_deletes,
                json.dumps(details, sort_keys=True),
                requests,
                run_id,
            ),
        )

    def last_run(self) -> SyncRun | None:
        """The newest committed cycle; None before the first one."""
        row = self.conn.execute(
            "SELECT id, kind, finished_at, upserted, deleted, quarantined, held_deletes, requests "
            "FROM sync_runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        run_id, kind, finished_at, upserted, deleted, quarantined, held, requests = row
        return SyncRun(
            run_id, kind, parse_iso(finished_at), upserted, deleted, quarantined, held, requests
        )

    def requests_per_kind(self, limit: int = 20) -> dict[str, dict[str, int]]:
        """Requests the recent runs sent, per kind: ``{"incremental": {"runs", "last",
        "median", "max"}}`` over the newest ``limit`` runs of each kind that recorded them."""
        figures: dict[str, dict[str, int]] = {}
        kinds = [k for (k,) in self.conn.execute("SELECT DISTINCT kind FROM sync_runs")]
        for kind in sorted(kinds):
            counts = [
                int(n)
                for (n,) in self.conn.execute(
                    "SELECT requests FROM sync_runs WHERE kind = ? AND requests IS NOT NULL "
                    "ORDER BY id DESC LIMIT ?",
                    (kind, limit),
                )
            ]
            if counts:
                ordered = sorted(counts)
                figures[kind] = {
                    "runs": len(counts),
                    "last": counts[0],
                    "median": ordered[len(ordered) // 2],
                    "max": ordered[-1],
                }
        return figures

    # -- full-resync progress -----------------------------------------------------------------

    def resync_progress(self) -> dict[str, ResyncProgress]:
        """The progress of an interrupted (or running) full resync per entity; empty when none
        is under way."""
        rows = self.conn.execute(
            "SELECT entity, resume_after, server_time, pages, records, complete, started_at "
            "FROM resync_progress"
        ).fetchall()
        return {
            entity: ResyncProgress(
                entity=entity,
                resume_after=resume_after,
                server_time=datetime.fromisoformat(server_time) if server_time else None,
                pages=int(pages),
                records=int(records),
                complete=bool(complete),
                started_at=parse_iso(started_at),
            )
            for entity, resume_after, server_time, pages, records, complete, started_at in rows
        }

    def begin_resync(self, entities: Sequence[str], *, now: datetime) -> None:
        self.conn.execute("DELETE FROM resync_progress")
        for entity in entities:
            self.clear_staging("stage", entity)
            self.conn.execute(
                "INSERT INTO resync_progress (entity, started_at) VALUES (?, ?)",
                (entity, iso(now)),
            )

    def save_progress(
        self,
        entity: str,
        *,
        resume_after: str | None,
        server_time: datetime | None,
        records: int,
        complete: bool,
    ) -> None:
        """Record one staged page of ``entity``: where the listing resumes, the CRM's clock at
        the first page (kept as the CRM gave it, like a cursor), and how many records came."""
        self.conn.execute(
            "UPDATE resync_progress SET resume_after = ?, server_time = coalesce(server_time, ?), "
            "pages = pages + 1, records = records + ?, complete = ? WHERE entity = ?",
            (
                resume_after,
                server_time.isoformat() if server_time else None,
                records,
                int(complete),
                entity,
            ),
        )

    def end_resync(self) -> None:
        for entity in ENTITIES:
            self.clear_staging("stage", entity)
        self.conn.execute("DELETE FROM resync_progress")
