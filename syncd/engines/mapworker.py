"""Mapping batches of raw records for storage, in process or in a worker process.

:func:`map_batch` turns raw records into a :class:`MappedBatch` (staging rows and rejects).

Fetching (HTTP, JSON parsing) and mapping (pure Python) both need the interpreter lock, so in one
process they take turns however they are threaded. For a full resync of many records the engine
hands each page to one spawned worker process that maps it, while the main process goes on
fetching and writing SQLite; pages come back in order. Incremental cycles are small and map in
process.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import orjson

from syncd.core.errors import RecordMappingError, RetriableError
from syncd.mappings.loader import MappingSet, load_mapping_set
from syncd.state.cache import row_of

NO_ID = "(no valid id)"
PARENT_CHECK_SECONDS = 0.5

_mappings: MappingSet | None = None


@dataclass(slots=True)
class MappedBatch:
    """Raw records mapped for storage: a staging row (:func:`~syncd.state.cache.row_of`) for
    each record that fits, ``(crm_id, reason)`` for each that does not (to quarantine).

    Plain tuples, so that a batch crosses the worker's process boundary compactly.
    """

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    rejects: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        """How many raw records the batch covers, mapped or rejected."""
        return len(self.rows) + len(self.rejects)

    def extend(self, other: MappedBatch) -> None:
        """Append ``other``'s rows and rejects (to gather several pages)."""
        self.rows.extend(other.rows)
        self.rejects.extend(other.rejects)


def map_batch(mappings: MappingSet, entity: str, records: Sequence[Any]) -> MappedBatch:
    """Map raw ``records`` of ``entity``: rows for those that fit, rejects for the rest."""
    mapping = mappings[entity]
    rows: list[tuple[Any, ...]] = []
    rejects: list[tuple[str, str]] = []
    for raw in records:
        try:
            rows.append(row_of(mapping.map(raw)))
        except RecordMappingError as error:
            record_id = mapping.record_id(raw) if isinstance(raw, dict) else None
            rejects.append((record_id or NO_ID, str(error)))
    return MappedBatch(rows, rejects)


def _load(vendor: str, directory: Any) -> None:
    global _mappings
    _mappings = load_mapping_set(vendor, directory)
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A SIGKILLed parent cannot shut the pool down; once this process is reparented, exit."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


def _map_serialised(entity: str, payload: bytes) -> MappedBatch:
    assert _mappings is not None, "worker not initialised"
    return map_batch(_mappings, entity, orjson.loads(payload))


def resolve(mapped: Future[MappedBatch] | MappedBatch) -> MappedBatch:
    """A batch's mapping, waiting for the worker when it was handed there."""
    if not isinstance(mapped, Future):
        return mapped
    try:
        return mapped.result()
    except BrokenProcessPool:
        raise RetriableError("the mapping worker process died") from None


class MappingWorker:
    """One worker process with the same mapping files as the engine."""

    def __init__(self, mappings: MappingSet) -> None:
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_load,
            initargs=(mappings.vendor, mappings.directory),
        )

    def submit(self, entity: str, records: Sequence[Any]) -> Future[MappedBatch]:
        """Hand raw ``records`` of ``entity`` to the worker to map (see :func:`map_batch`)."""
        try:
            return self._pool.submit(_map_serialised, entity, orjson.dumps(records))
        except BrokenProcessPool:
            raise RetriableError("the mapping worker process died") from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
