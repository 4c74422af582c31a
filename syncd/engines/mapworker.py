"""Mapping pages in a worker process during large full resyncs.

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
from typing import Any

import orjson

from syncd.core.errors import RecordMappingError, RetriableError
from syncd.mappings.loader import MappingSet, load_mapping_set
from syncd.state.cache import row_of

NO_ID = "(no valid id)"
PARENT_CHECK_SECONDS = 0.5
MappedPage = tuple[list[tuple[Any, ...]], list[tuple[str, str]]]  # (rows, (crm_id, reason))

_mappings: MappingSet | None = None


def map_page(mappings: MappingSet, entity: str, records: Sequence[Any]) -> MappedPage:
    """Map one page: staging rows for the records that fit, ``(crm_id, reason)`` for the rest."""
    mapping = mappings[entity]
    rows: list[tuple[Any, ...]] = []
    rejects: list[tuple[str, str]] = []
    for raw in records:
        try:
            rows.append(row_of(mapping.map(raw)))
        except RecordMappingError as error:
            record_id = mapping.record_id(raw) if isinstance(raw, dict) else None
            rejects.append((record_id or NO_ID, str(error)))
    return rows, rejects


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


def _map_serialised(entity: str, payload: bytes) -> MappedPage:
    assert _mappings is not None, "worker not initialised"
    return map_page(_mappings, entity, orjson.loads(payload))


def resolve(mapped: Future[MappedPage] | MappedPage) -> MappedPage:
    """A page's mapping, waiting for the worker when it was handed there."""
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

    def submit(self, entity: str, records: Sequence[Any]) -> Future[MappedPage]:
        try:
            return self._pool.submit(_map_serialised, entity, orjson.dumps(records))
        except BrokenProcessPool:
            raise RetriableError("the mapping worker process died") from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
