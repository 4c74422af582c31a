"""Mapping batches of raw records for storage, in process or in a worker process.

:func:`map_batch` turns raw records into a :class:`MappedBatch` (staging rows, rejects and
data-quality warnings).

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
from collections.abc import Mapping, Sequence
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
DATA_QUALITY_KEY = "_data_quality"
"""A raw record's list of data-quality warnings (texts an adapter attaches, without values)."""
MAX_WARNINGS_PER_RECORD = 10
MAX_WARNING_LENGTH = 300

_mappings: MappingSet | None = None


@dataclass(slots=True)
class MappedBatch:
    """Raw records mapped for storage: a staging row (:func:`~syncd.state.cache.row_of`) for
    each record that fits, ``(crm_id, reason)`` for each that does not (to quarantine), and
    ``(crm_id, message)`` for each data-quality warning of a record that fits (see
    :func:`data_quality`).

    Plain tuples, so that a batch crosses the worker's process boundary compactly.
    """

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    rejects: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        """How many raw records the batch covers, mapped or rejected."""
        return len(self.rows) + len(self.rejects)

    def extend(self, other: MappedBatch) -> None:
        """Append ``other``'s rows, rejects and warnings (to gather several pages)."""
        self.rows.extend(other.rows)
        self.rejects.extend(other.rejects)
        self.warnings.extend(other.warnings)


def data_quality(raw: Any) -> list[str]:
    """The data-quality warnings a raw record carries in ``_data_quality`` (a list of texts the
    adapter attached: what is wrong, never a value): distinct, in order, each cut to
    :data:`MAX_WARNING_LENGTH` characters, at most :data:`MAX_WARNINGS_PER_RECORD`. Anything
    that is not a non-empty text is ignored."""
    listed = raw.get(DATA_QUALITY_KEY) if isinstance(raw, Mapping) else None
    if not isinstance(listed, list):
        return []
    found: dict[str, None] = {}
    for message in listed:
        if isinstance(message, str) and message.strip():
            found.setdefault(message.strip()[:MAX_WARNING_LENGTH], None)
            if len(found) == MAX_WARNINGS_PER_RECORD:
                break
    return list(found)


def map_batch(mappings: MappingSet, entity: str, records: Sequence[Any]) -> MappedBatch:
    """Map raw ``records`` of ``entity``: rows for those that fit, rejects for the rest, and
    the data-quality warnings of the records that fit."""
    mapping = mappings[entity]
    rows: list[tuple[Any, ...]] = []
    rejects: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    for raw in records:
        try:
            record = mapping.map(raw)
        except RecordMappingError as error:
            record_id = mapping.record_id(raw) if isinstance(raw, dict) else None
            rejects.append((record_id or NO_ID, str(error)))
            continue
        rows.append(row_of(record))
        if raw.get(DATA_QUALITY_KEY):  # rare: most records carry none
            warnings.extend((record.crm_id, message) for message in data_quality(raw))
    return MappedBatch(rows, rejects, warnings)


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
