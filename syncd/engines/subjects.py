"""Data subjects' requests: access and portability (an export), erasure (with suppression) and
the lifting of suppressions. Local only: nothing here calls an upstream.

The stores and what counts as "about the subject" are :mod:`syncd.state.subjects`; the
suppressions and their key :mod:`syncd.state.suppressions`; the export's format
``docs/subject-export.schema.json`` and docs/privacy.md.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from syncd import __version__
from syncd.core.clock import iso
from syncd.core.identifiers import Normaliser, Selector
from syncd.engines.spool import remove_spool_file
from syncd.engines.vat import MalformedVatNumberError, check_locally
from syncd.state import subjects, suppressions
from syncd.state.db import write_transaction

__all__ = [
    "EXPORT_SCHEMA",
    "ErasureResult",
    "build_normaliser",
    "clean_vat",
    "erase",
    "export_document",
    "preview",
    "selector_digests",
    "unsuppress",
]

EXPORT_SCHEMA = "syncd-subject-export/1"
# The order stores appear in an export (a store not listed here comes last).
STORE_ORDER = (
    "contacts", "companies", "devices", "stage_contacts", "stage_companies", "stage_devices",
    "outbox_requests", "outbox_files", "vies_answers", "subject_restrictions", "audit_log",
    "control_requests", "quarantine", "data_quality", "held_deletes", "subject_suppressions",
)


def clean_vat(raw: str) -> str:
    """A VAT number cleaned by the VAT service's own cleaner, as ``<prefix><number>``
    (``EE100931558``; Greece ``EL``). A number whose checksum fails is still a number here (the
    CRM stores numbers unvalidated); ValueError for something that is not one at all."""
    try:
        local = check_locally(raw)
    except MalformedVatNumberError as error:
        raise ValueError(str(error)) from None
    return local.query


def build_normaliser(region: str) -> Normaliser:
    """The normaliser of subject requests: phone numbers without ``+`` read as of ``region``,
    VAT numbers through :func:`clean_vat`."""
    return Normaliser(region=region, vat_cleaner=clean_vat)


def selector_digests(key: bytes, selector: Selector) -> list[str]:
    """The suppression digests a selector is stored under."""
    kind = "crm_id" if selector.kind == "crm_contact" else selector.kind
    return [suppressions.digest(key, kind, selector.value)]


# -- access and portability ----------------------------------------------------------------------


def export_document(
    conn: sqlite3.Connection, selector: Selector, normaliser: Normaliser, *, now: datetime
) -> dict[str, Any]:
    """Everything the cache holds about the subject of ``selector``, as one document of
    ``docs/subject-export.schema.json``. Reads in one transaction (a consistent snapshot)."""
    with subjects.snapshot(conn):
        scope = subjects.resolve(conn, selector, normaliser)
        items = subjects.items(conn, scope)
        key = suppressions.load_key(conn)
        if key is not None:
            items += subjects.suppression_items(conn, selector_digests(key, selector))
        data_as_of = subjects.data_as_of(conn)
    order = {store: n for n, store in enumerate(STORE_ORDER)}
    items.sort(key=lambda item: (order.get(item.store, len(order)), item.store, item.key))
    counts: dict[str, int] = {}
    for item in items:
        counts[item.store] = counts.get(item.store, 0) + 1
    return {
        "schema": EXPORT_SCHEMA,
        "generated_at": iso(now),
        "generator": f"syncd {__version__}",
        "selector": {"kind": selector.kind, "value": selector.value},
        "data_as_of": data_as_of,
        "counts": counts,
        "items": [
            {"store": item.store, "key": item.key, "time": item.time, "data": item.data}
            for item in items
        ],
    }


# -- erasure -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErasureResult:
    """What an erasure did: rows per store, the CRM records the CRM must still delete, the
    spool files removed and those that could not be (by position in the list, never by name)."""

    counts: dict[str, int]
    crm_records: dict[str, list[str]]  # entity -> CRM IDs (for the operator to delete there)
    suppressed: int
    files_removed: int
    file_errors: list[str]


def preview(
    conn: sqlite3.Connection, selector: Selector, normaliser: Normaliser
) -> tuple[subjects.Scope, dict[str, int]]:
    """What an erasure would do, without doing it: the scope and rows per store."""
    with subjects.snapshot(conn):
        scope = subjects.resolve(conn, selector, normaliser)
        counts = subjects.erasure_counts(conn, scope)
    return scope, counts


def erase(
    conn: sqlite3.Connection,
    selector: Selector,
    normaliser: Normaliser,
    *,
    spool: Path,
    now: datetime,
) -> ErasureResult:
    """Erase the subject (one transaction; see :func:`syncd.state.subjects.erase`), then delete
    the spool files of their erased requests. Raises
    :class:`syncd.state.subjects.SubjectBusyError` when it must wait."""
    key = suppressions.load_key(conn, create=True)
    assert key is not None
    erasure = subjects.erase(conn, selector, normaliser, key=key, now=now)
    removed = 0
    errors: list[str] = []
    for position, relative in enumerate(erasure.spool_files):
        try:
            removed += int(remove_spool_file(spool, relative))
        except Exception as error:  # a hostile path must not stop the rest; say so
            # The reason without the path: a spool file's name carries the client's file name.
            reason = getattr(error, "strerror", None) or type(error).__name__
            errors.append(f"spool file #{position} left in place: {reason}")
    return ErasureResult(
        counts=erasure.counts,
        crm_records={
            entity: sorted(ids, key=_id_order) for entity, ids in erasure.records.items()
        },
        suppressed=erasure.suppressed,
        files_removed=removed,
        file_errors=errors,
    )


def _id_order(crm_id: str) -> tuple[int, str]:
    return (int(crm_id), "") if crm_id.isdigit() else (0, crm_id)


# -- lifting suppressions ------------------------------------------------------------------------


def unsuppress(
    conn: sqlite3.Connection, selector: Selector | None, *, everything: bool = False
) -> dict[str, int]:
    """Lift the erasures ``selector`` names (every suppression with ``everything``); returns
    the records lifted per entity. The mirror brings those records back at its next ID sweep
    or full resync, if the CRM still has them."""
    with write_transaction(conn):
        if everything:
            return suppressions.lift_all(conn)
        assert selector is not None
        key = suppressions.load_key(conn)
        if key is None:
            return {}
        return suppressions.lift_erasures(conn, selector_digests(key, selector))
