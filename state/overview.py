"""The read model: what operators and monitors are shown of the cache.

``syncd status`` renders all of it (:func:`read`), ``GET /metrics`` exports its figures and
``GET /healthz`` reads its health (:func:`health`). Each part comes from the module that owns its
tables, so every table is queried one way. Times are aware UTC ``datetime`` values.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

from syncd.state import control, documents, omniva, outbox, vies_cache
from syncd.state.cache import (
    ENTITIES,
    CacheStore,
    DataQualitySummary,
    HeldDeletes,
    QuarantinedRecord,
    ResyncProgress,
    SyncRun,
)
from syncd.state.control import ControlRequest
from syncd.state.documents import LibraryState
from syncd.state.health import JobHealth, load_all
from syncd.state.migrations import current_version, latest_version
from syncd.state.omniva import OmnivaListState
from syncd.state.outbox import OutboxDepth
from syncd.state.vies_cache import Circuit, ViesFigures


@dataclass(frozen=True)
class EntityFigures:
    """One mirrored entity: its records, how fresh they are, and what waits for an operator."""

    records: int
    data_as_of: datetime | None  # the change cursor (the CRM's clock); None: never mirrored
    quarantined: int
    held: HeldDeletes | None  # deletions the delete guard holds; None when it holds none
    data_quality: int = 0  # data-quality warnings (record and message) of mirrored records


@dataclass(frozen=True)
class OmnivaFigures:
    """Omniva's stored list: where it came from, and its locations per country and kind."""

    list_state: OmnivaListState
    counts: dict[str, dict[str, int]]  # country → kind → locations


@dataclass(frozen=True)
class Health:
    """What ``/healthz`` judges by: the jobs, the open VIES circuits and the schema."""

    jobs: tuple[JobHealth, ...]
    open_circuits: tuple[Circuit, ...]
    schema_version: int


@dataclass(frozen=True)
class Overview:
    """Everything ``syncd status`` shows, read at ``at``."""

    at: datetime
    schema_version: int
    schema_expected: int
    jobs: tuple[JobHealth, ...]
    entities: dict[str, EntityFigures]  # in ENTITIES order
    quarantined: tuple[QuarantinedRecord, ...]  # the most recently seen first
    data_quality: tuple[DataQualitySummary, ...]  # per entity and message, the commonest first
    last_run: SyncRun | None
    # Requests recent runs sent to the CRM, per kind of run (see CacheStore.requests_per_kind).
    requests_per_run: dict[str, dict[str, int]]
    resync_request: ControlRequest | None  # pending or running
    resync_staged: dict[str, ResyncProgress]  # an interrupted or running full resync
    outbox: OutboxDepth
    vies: ViesFigures
    omniva: OmnivaFigures
    libraries: tuple[LibraryState, ...]  # SharePoint document libraries, by name


def jobs(conn: sqlite3.Connection) -> tuple[JobHealth, ...]:
    """Every job's health, by job name."""
    return tuple(load_all(conn))


def entities(conn: sqlite3.Connection) -> dict[str, EntityFigures]:
    """The figures of every mirrored entity, in ``ENTITIES`` order."""
    store = CacheStore(conn)
    quarantined = store.quarantine_counts()
    data_quality = store.data_quality_counts()
    held = store.held_summary()
    figures = {}
    for entity in ENTITIES:
        cursor = store.cursor(entity)
        figures[entity] = EntityFigures(
            records=store.count(entity),
            data_as_of=cursor.astimezone(UTC) if cursor else None,
            quarantined=quarantined.get(entity, 0),
            held=held.get(entity),
            data_quality=data_quality.get(entity, 0),
        )
    return figures


def omniva_figures(conn: sqlite3.Connection) -> OmnivaFigures:
    """Omniva's stored list and its counts."""
    return OmnivaFigures(list_state=omniva.list_state(conn), counts=omniva.counts(conn))


def health(conn: sqlite3.Connection, now: datetime) -> Health:
    """The jobs, the VIES circuits open at ``now`` and the schema version."""
    return Health(
        jobs=jobs(conn),
        open_circuits=tuple(vies_cache.open_circuits(conn, now)),
        schema_version=current_version(conn),
    )


def read(conn: sqlite3.Connection, now: datetime) -> Overview:
    """The whole overview at ``now``."""
    store = CacheStore(conn)
    return Overview(
        at=now,
        schema_version=current_version(conn),
        schema_expected=latest_version(),
        jobs=jobs(conn),
        entities=entities(conn),
        quarantined=tuple(store.quarantined()),
        data_quality=tuple(store.data_quality_summary()),
        last_run=store.last_run(),
        requests_per_run=store.requests_per_kind(),
        resync_request=control.open_request(conn),
        resync_staged=store.resync_progress(),
        outbox=outbox.depth(conn),
        vies=vies_cache.figures(conn, now),
        omniva=omniva_figures(conn),
        libraries=tuple(documents.all_libraries(conn)),
    )


def libraries(conn: sqlite3.Connection) -> tuple[LibraryState, ...]:
    """The SharePoint document libraries in the cache (empty when none is configured)."""
    return tuple(documents.all_libraries(conn))
