"""Comparing the cache with what the CRM holds, record by record (demo, tests, benchmarks)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from syncd.core.entities import CANONICAL_FIELDS, CanonicalRecord
from syncd.core.errors import RecordMappingError
from syncd.mappings.loader import MappingSet
from syncd.state.cache import CacheStore, Fingerprint


def expected_fingerprints(
    mappings: MappingSet, raw: Mapping[str, Iterable[Mapping[str, Any]]]
) -> dict[str, dict[str, Fingerprint]]:
    """What the cache should hold for the CRM's ``raw`` records (as the adapter delivers them):
    records that do not map are left out (they are quarantined), links to records that are not
    there become None."""
    mapped: dict[str, dict[str, CanonicalRecord]] = {}
    for entity in CANONICAL_FIELDS:
        mapped[entity] = {}
        for record in raw.get(entity, []):
            try:
                result = mappings[entity].map(record)
            except RecordMappingError:
                continue
            mapped[entity][result.crm_id] = result
    expected: dict[str, dict[str, Fingerprint]] = {}
    for entity, records in mapped.items():
        refs = [(i, f) for i, f in enumerate(CANONICAL_FIELDS[entity]) if f.kind == "ref"]
        expected[entity] = {
            crm_id: (
                record.content_hash,
                tuple(
                    record.values[i] if record.values[i] in mapped[str(f.references)] else None
                    for i, f in refs
                ),
            )
            for crm_id, record in records.items()
        }
    return expected


def differences(
    conn: sqlite3.Connection, mappings: MappingSet, raw: Mapping[str, Iterable[Mapping[str, Any]]]
) -> list[str]:
    """Human-readable differences between the cache and the CRM (IDs only, no data)."""
    problems: list[str] = []
    for entity, expected in expected_fingerprints(mappings, raw).items():
        actual = CacheStore(conn).fingerprints(entity)
        missing = sorted(set(expected) - set(actual), key=int)
        extra = sorted(set(actual) - set(expected), key=int)
        stale = sorted(
            (i for i in set(expected) & set(actual) if expected[i] != actual[i]), key=int
        )
        for label, ids in (("missing", missing), ("extra", extra), ("stale", stale)):
            if ids:
                problems.append(f"{entity}: {len(ids)} {label} (e.g. {', '.join(ids[:5])})")
    return problems
