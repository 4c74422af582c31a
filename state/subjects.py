"""A data subject's rows in every store of the cache: found (for access and portability) and
erased (for erasure), from one normalised selector.

What a request is about (docs/privacy.md, "Subject requests"):

* the **person** (``--email``, ``--phone``, ``--crm-contact``): the contacts whose e-mail
  addresses or phone numbers hold the identifier once normalised (or the contact with that CRM
  ID, cached or not), and their rows everywhere: the devices assigned to them, the service
  requests they filed (linked to them, or giving the identifier as contact details) with their
  files' metadata, the audit entries and resync requests naming their records, their
  quarantine, data-quality and held-deletion rows, their restriction. Company records whose
  e-mail or phone lists hold the identifier are shown too (they hold it), but not the
  company's other people, and the person's company only as the ``company_id`` reference;
* the **company** (``--vat``): the companies whose VAT number is the selector's once cleaned by
  the VAT service's cleaner, their VIES answers and their devices; not their people.

Erasure removes the subject's own records: the matched contacts, the companies matched by VAT,
the devices no one else is linked to, the subject's service requests (their spool files are for
the caller to delete after the commit), VIES answers, satellites; audit entries naming an erased
record keep their action and time but no longer name it. Company records that merely hold the
identifier, and devices linked to someone else too, stay. All of it in one write transaction,
with the suppressions (:mod:`syncd.state.suppressions`) and the audit entry of the erasure.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from syncd.core.clock import iso, parse_iso
from syncd.core.errors import SyncdError
from syncd.core.identifiers import Normaliser, Selector
from syncd.state import audit, suppressions
from syncd.state.db import write_transaction

__all__ = [
    "Erasure",
    "Item",
    "Scope",
    "SubjectBusyError",
    "contact_ids",
    "data_as_of",
    "erase",
    "erasure_counts",
    "items",
    "resolve",
    "snapshot",
    "suppression_items",
]

ENTITIES = ("companies", "contacts", "devices")
# Columns holding JSON text, decoded in an export.
JSON_COLUMNS = frozenset(
    {"emails", "phones", "addresses", "languages", "newsletters", "handpieces", "details"}
)
# The column that says when each store's item was stored or last changed.
TIME_COLUMNS = {
    "companies": "synced_at",
    "contacts": "synced_at",
    "devices": "synced_at",
    "stage_companies": "crm_updated_at",  # staged rows are not written to the mirror yet
    "stage_contacts": "crm_updated_at",
    "stage_devices": "crm_updated_at",
    "outbox_requests": "coalesce(updated_at, created_at)",
    "vies_answers": "fetched_at",
    "audit_log": "at",
    "control_requests": "requested_at",
    "quarantine": "last_seen_at",
    "data_quality": "last_seen",
    "held_deletes": "detected_at",
    "subject_restrictions": "restricted_at",
}
ERASED_RECORD = "{entity} record (erased)"
ERASED_REQUEST = "outbox request (erased)"
_MATCH_FUNCTION = "syncd_subject_match"


class SubjectBusyError(SyncdError):
    """The subject's data is in use right now (a request being sent, a resync of their record
    under way); erasing it must wait."""


@dataclass
class Scope:
    """The records a subject request is about (CRM IDs as text, outbox row IDs)."""

    selector: Selector
    contacts: set[str] = field(default_factory=set)  # the person's contact records
    companies: set[str] = field(default_factory=set)  # the company selected by VAT
    carriers: set[str] = field(default_factory=set)  # companies merely holding the identifier
    devices: set[str] = field(default_factory=set)  # devices linked to the subject
    owned_devices: set[str] = field(default_factory=set)  # ... and to no one else
    requests: set[int] = field(default_factory=set)  # outbox_requests.id
    vies: set[tuple[str, str]] = field(default_factory=set)  # (country_code, vat_number)

    def erased(self) -> dict[str, set[str]]:
        """The records an erasure removes, per entity."""
        return {"companies": self.companies, "contacts": self.contacts,
                "devices": self.owned_devices}


@dataclass(frozen=True)
class Item:
    """One stored item about the subject: its store (table), key, time and data."""

    store: str
    key: str
    time: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class Erasure:
    """What an erasure did: rows per store (no values) and the spool files to delete."""

    counts: dict[str, int]
    records: dict[str, tuple[str, ...]]  # entity -> the CRM IDs erased (the CRM still has them)
    spool_files: tuple[str, ...]
    suppressed: int  # records the mirror now keeps out


# -- finding ------------------------------------------------------------------------------------


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One read transaction: what is read inside it is one consistent state of the cache."""
    conn.execute("BEGIN DEFERRED")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


@contextmanager
def _matching(
    conn: sqlite3.Connection, normaliser: Normaliser, selector: Selector
) -> Iterator[None]:
    """Registers ``syncd_subject_match(value, country)`` on ``conn`` for the duration."""
    predicate = normaliser.matcher(selector)

    def match(value: Any, country: Any) -> int:
        if not isinstance(value, str):
            return 0
        return int(predicate(value, country if isinstance(country, str) else None))

    conn.create_function(_MATCH_FUNCTION, 2, match, deterministic=True)
    try:
        yield
    finally:
        conn.create_function(_MATCH_FUNCTION, 2, None)


def resolve(conn: sqlite3.Connection, selector: Selector, normaliser: Normaliser) -> Scope:
    """The records ``selector`` is about, in the mirror, its staging and the outbox."""
    scope = Scope(selector)
    with _matching(conn, normaliser, selector):
        if selector.kind in ("email", "phone"):
            column = "emails" if selector.kind == "email" else "phones"
            scope.contacts = _ids_holding(conn, "contacts", column)
            scope.carriers = _ids_holding(conn, "companies", column)
        elif selector.kind == "crm_contact":
            scope.contacts = {selector.value}
        elif selector.kind == "vat":
            scope.companies = _ids(conn, "companies", f"{_MATCH_FUNCTION}(vat_number, country)")
            scope.vies = _vies_keys(conn, selector.value)
        scope.devices, scope.owned_devices = _devices(conn, scope.contacts, scope.companies)
        scope.requests = _requests(conn, selector, scope.contacts)
    return scope


def _ids(
    conn: sqlite3.Connection, entity: str, where: str, params: tuple[Any, ...] = ()
) -> set[str]:
    found: set[str] = set()
    for table in (entity, f"stage_{entity}"):
        found.update(
            row[0] for row in conn.execute(f"SELECT crm_id FROM main.{table} WHERE {where}", params)
        )
    return found


def _ids_holding(conn: sqlite3.Connection, entity: str, column: str) -> set[str]:
    return _ids(
        conn,
        entity,
        f"EXISTS (SELECT 1 FROM json_each({column}) j "
        f"WHERE {_MATCH_FUNCTION}(json_extract(j.value, '$.value'), NULL))",
    )


def _vies_keys(conn: sqlite3.Connection, vat: str) -> set[tuple[str, str]]:
    return {
        (country, number)
        for country, number in conn.execute(
            "SELECT country_code, vat_number FROM vies_answers "
            "WHERE country_code = ? AND vat_number = ?",
            (vat[:2], vat[2:]),
        )
    }


def _devices(
    conn: sqlite3.Connection, contacts: set[str], companies: set[str]
) -> tuple[set[str], set[str]]:
    """Devices linked to the subject, and those linked to no one else (erased with it)."""
    linked: set[str] = set()
    owned: set[str] = set()
    params = (json.dumps(sorted(contacts)), json.dumps(sorted(companies)))
    mine = "{col} IN (SELECT value FROM json_each(?{n}))"
    for table in ("devices", "stage_devices"):
        for crm_id, contact_id, company_id in conn.execute(
            f"SELECT crm_id, contact_id, company_id FROM main.{table} "
            f"WHERE {mine.format(col='contact_id', n=1)} OR {mine.format(col='company_id', n=2)}",
            params,
        ):
            linked.add(crm_id)
            if (contact_id is None or contact_id in contacts) and (
                company_id is None or company_id in companies
            ):
                owned.add(crm_id)
    return linked, owned


def _requests(conn: sqlite3.Connection, selector: Selector, contacts: set[str]) -> set[int]:
    where = "contact_crm_id IN (SELECT value FROM json_each(?))"
    if selector.kind in ("email", "phone"):
        column = "contact_email" if selector.kind == "email" else "contact_phone"
        where += f" OR {_MATCH_FUNCTION}({column}, NULL)"
    return {
        int(row[0])
        for row in conn.execute(
            f"SELECT id FROM outbox_requests WHERE {where}", (json.dumps(sorted(contacts)),)
        )
    }


def _audit_targets(scope: Scope) -> tuple[list[str], list[str]]:
    """Audit targets naming the subject's records (``contacts record 17``, as ``--resync`` and
    ``subject restrict`` write them) and its outbox requests (the row ID, as ``outbox ...``
    writes it)."""
    records = [
        f"{entity} record {crm_id}"
        for entity, ids in scope.erased().items()
        for crm_id in sorted(ids)
    ]
    return records, [str(i) for i in sorted(scope.requests)]


_AUDIT_WHERE = (
    "target IN (SELECT value FROM json_each(?)) OR "
    "(action LIKE 'outbox.%' AND target IN (SELECT value FROM json_each(?)))"
)


# -- exporting ----------------------------------------------------------------------------------


def items(conn: sqlite3.Connection, scope: Scope) -> list[Item]:
    """Every stored item about the subject, store by store (no file contents)."""
    found: list[Item] = []
    ids = {
        "contacts": scope.contacts,
        "companies": scope.companies | scope.carriers,
        "devices": scope.devices,
    }
    for entity in ENTITIES:
        for table in (entity, f"stage_{entity}"):
            found += _rows(conn, table, "crm_id IN (SELECT value FROM json_each(?))",
                           (json.dumps(sorted(ids[entity])),), key=("crm_id",))
    requests = json.dumps(sorted(scope.requests))
    found += _rows(conn, "outbox_requests", "id IN (SELECT value FROM json_each(?))",
                   (requests,), key=("id",))
    found += [
        Item("outbox_files", str(row["id"]), time, row)
        for time, row in _dicts(
            conn,
            "SELECT r.created_at, f.* FROM outbox_files f JOIN outbox_requests r "
            "ON r.id = f.request_id WHERE f.request_id IN (SELECT value FROM json_each(?)) "
            "ORDER BY f.request_id, f.position",
            (requests,),
        )
    ]
    for country, number in sorted(scope.vies):
        found += _rows(conn, "vies_answers", "country_code = ? AND vat_number = ?",
                       (country, number), key=("country_code", "vat_number"))
    found += _satellites(conn, scope)
    return found


def _satellites(conn: sqlite3.Connection, scope: Scope) -> list[Item]:
    found: list[Item] = []
    records, requests = _audit_targets(scope)
    found += _rows(conn, "audit_log", _AUDIT_WHERE, (json.dumps(records), json.dumps(requests)),
                   key=("id",))
    for entity, ids in scope.erased().items():
        wanted = json.dumps(sorted(ids))
        found += _rows(conn, "control_requests",
                       "entity = ? AND record_id IN (SELECT value FROM json_each(?))",
                       (entity, wanted), key=("id",))
        for table, key in (("quarantine", ("entity", "crm_id")),
                           ("data_quality", ("entity", "crm_id", "message")),
                           ("held_deletes", ("entity", "crm_id"))):
            found += _rows(conn, table,
                           "entity = ? AND crm_id IN (SELECT value FROM json_each(?))",
                           (entity, wanted), key=key)
    found += _rows(conn, "subject_restrictions",
                   "contact_id IN (SELECT value FROM json_each(?))",
                   (json.dumps(sorted(scope.contacts)),), key=("contact_id",))
    return found


def suppression_items(conn: sqlite3.Connection, digests: list[str]) -> list[Item]:
    """The suppressions stored under ``digests`` (an earlier erasure of the subject)."""
    return [
        Item("subject_suppressions", f"{entity}:{kind}", created_at,
             {"entity": entity, "kind": kind, "created_at": created_at})
        for entity, kind, created_at in suppressions.find(conn, digests)
    ]


def _rows(
    conn: sqlite3.Connection,
    table: str,
    where: str,
    params: tuple[Any, ...],
    *,
    key: tuple[str, ...],
) -> list[Item]:
    query = f"SELECT {TIME_COLUMNS[table]}, * FROM main.{table} WHERE {where}"
    return [
        Item(table, ":".join(str(row[k]) for k in key), time, row)
        for time, row in _dicts(conn, query, params)
    ]


def _dicts(
    conn: sqlite3.Connection, query: str, params: tuple[Any, ...]
) -> Iterator[tuple[str | None, dict[str, Any]]]:
    cursor = conn.execute(query, params)
    names = [d[0] for d in cursor.description][1:]
    for time, *values in cursor:
        row = dict(zip(names, values, strict=True))
        for name in JSON_COLUMNS.intersection(row):
            if isinstance(row[name], str):
                row[name] = json.loads(row[name])
        yield (time or None), row


def data_as_of(conn: sqlite3.Connection) -> dict[str, str | None]:
    """Per mirrored entity, the mirror's "data as of" (its change cursor, the CRM's clock, in
    UTC); None for an entity never mirrored."""
    cursors = {
        entity: iso(parse_iso(value))
        for entity, value in conn.execute("SELECT entity, value FROM cursors")
    }
    return {entity: cursors.get(entity) for entity in ENTITIES}


# -- erasing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """Rows of one store an erasure touches: ``where`` selects them; ``rewrite`` (an audit
    target) keeps them but renames what they name; ``cascade`` ones go with their parent."""

    store: str
    where: str
    params: tuple[Any, ...]
    rewrite: str | None = None
    cascade: bool = False


def _targets(scope: Scope) -> list[_Target]:
    erased = {entity: json.dumps(sorted(ids)) for entity, ids in scope.erased().items()}
    requests = json.dumps(sorted(scope.requests))
    in_list = "{} IN (SELECT value FROM json_each(?))"
    records, request_targets = _audit_targets(scope)
    targets = [
        _Target("outbox_files", in_list.format("request_id"), (requests,), cascade=True),
        _Target("outbox_requests", in_list.format("id"), (requests,)),
        _Target("vies_answers", "country_code || vat_number IN (SELECT value FROM json_each(?))",
                (json.dumps(sorted(c + n for c, n in scope.vies)),)),
        _Target("subject_restrictions", in_list.format("contact_id"), (erased["contacts"],)),
        _Target("audit_log", "action LIKE 'outbox.%' AND " + in_list.format("target"),
                (json.dumps(request_targets),), rewrite=ERASED_REQUEST),
    ]
    for entity in ENTITIES:
        targets.append(_Target("audit_log", in_list.format("target"),
                               (json.dumps([r for r in records if r.startswith(entity + " ")]),),
                               rewrite=ERASED_RECORD.format(entity=entity)))
        # Finished resync requests only: an open one makes the erasure wait (SubjectBusyError).
        targets.append(_Target("control_requests",
                               "entity = ? AND status IN ('done', 'failed') AND "
                               + in_list.format("record_id"), (entity, erased[entity])))
        for table in ("quarantine", "data_quality", "held_deletes"):
            targets.append(_Target(table, "entity = ? AND " + in_list.format("crm_id"),
                                   (entity, erased[entity])))
    # Children before parents, so that no foreign key points at a row about to go.
    for entity in ("devices", "contacts", "companies"):
        for table in (f"stage_{entity}", entity):
            targets.append(_Target(table, in_list.format("crm_id"), (erased[entity],)))
    return targets


def erasure_counts(conn: sqlite3.Connection, scope: Scope) -> dict[str, int]:
    """Rows per store an erasure of ``scope`` would remove (or rewrite, for the audit log);
    stores without any are left out. Writes nothing."""
    counts: dict[str, int] = {}
    for target in _targets(scope):
        (count,) = conn.execute(
            f"SELECT count(*) FROM main.{target.store} WHERE {target.where}", target.params
        ).fetchone()
        if count:
            counts[target.store] = counts.get(target.store, 0) + int(count)
    return counts


def erase(
    conn: sqlite3.Connection,
    selector: Selector,
    normaliser: Normaliser,
    *,
    key: bytes,
    now: datetime,
    actor: str | None = None,
) -> Erasure:
    """Erase the subject of ``selector`` from every store in one write transaction: their rows
    (resolved inside it, so nothing filed meanwhile is missed), the suppressions that keep the
    mirror from bringing them back, and one ``subject.erase`` audit entry with counts only.

    Raises :class:`SubjectBusyError` (nothing changed) while one of the subject's requests is
    being sent or a resync of one of their records is pending or running. The spool files of
    the erased requests are returned for the caller to delete after the commit.
    """
    with write_transaction(conn):
        scope = resolve(conn, selector, normaliser)
        _check_not_busy(conn, scope)
        spool_files = tuple(
            row[0]
            for row in conn.execute(
                "SELECT path FROM outbox_files WHERE request_id IN "
                "(SELECT value FROM json_each(?)) ORDER BY request_id, position",
                (json.dumps(sorted(scope.requests)),),
            )
        )
        entries = _suppression_entries(conn, scope, normaliser)
        counts = _apply(conn, scope)
        suppressed = sum(1 for _, kind, _ in entries if kind == "crm_id")
        if suppressed:
            counts["subject_suppressions"] = suppressions.record(conn, key, entries, now=now)
        conn.execute(
            "INSERT INTO audit_log (at, actor, action, target, details) VALUES (?, ?, ?, ?, ?)",
            (iso(now), actor or audit.os_user(), "subject.erase", None,
             json.dumps({"selector": selector.kind, "counts": counts}, sort_keys=True)),
        )
    records = {entity: tuple(sorted(ids)) for entity, ids in scope.erased().items() if ids}
    return Erasure(counts, records, spool_files, suppressed)


def _check_not_busy(conn: sqlite3.Connection, scope: Scope) -> None:
    sending = conn.execute(
        "SELECT count(*) FROM outbox_requests WHERE status = 'sending' AND id IN "
        "(SELECT value FROM json_each(?))",
        (json.dumps(sorted(scope.requests)),),
    ).fetchone()[0]
    if sending:
        raise SubjectBusyError(
            f"{sending} of the subject's service requests is being sent to the CRM right now; "
            "try again when it is done"
        )
    for entity, ids in scope.erased().items():
        if conn.execute(
            "SELECT 1 FROM control_requests WHERE status IN ('pending', 'running') "
            "AND entity = ? AND record_id IN (SELECT value FROM json_each(?))",
            (entity, json.dumps(sorted(ids))),
        ).fetchone():
            raise SubjectBusyError(
                "a resync of one of the subject's records is under way; try again when it is "
                "done"
            )


def _suppression_entries(
    conn: sqlite3.Connection, scope: Scope, normaliser: Normaliser
) -> list[tuple[str, str, str]]:
    """``(entity, kind, value)`` to suppress: each erased record's CRM ID, and (only alongside
    those) the normalised identifiers of the selector and of the erased records."""
    entries = [
        (entity, "crm_id", crm_id)
        for entity, ids in scope.erased().items()
        for crm_id in sorted(ids)
    ]
    if not entries:
        return []
    selector = scope.selector
    if selector.kind != "crm_contact":
        entity = "companies" if selector.kind == "vat" else "contacts"
        entries.append((entity, selector.kind, selector.value))
    identifiers = _identifiers(conn, "contacts", scope.contacts, normaliser)
    identifiers += _identifiers(conn, "companies", scope.companies, normaliser)
    return sorted(set(entries + identifiers))


def _identifiers(
    conn: sqlite3.Connection, entity: str, ids: set[str], normaliser: Normaliser
) -> list[tuple[str, str, str]]:
    found: list[tuple[str, str, str]] = []
    vat = ", vat_number, country" if entity == "companies" else ", NULL, NULL"
    for table in (entity, f"stage_{entity}"):
        for emails, phones, vat_number, country in conn.execute(
            f"SELECT emails, phones{vat} FROM main.{table} "
            "WHERE crm_id IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(ids)),),
        ):
            for kind, column in (("email", emails), ("phone", phones)):
                for entry in _entries(column):
                    value = normaliser.key(kind, entry)
                    if value:
                        found.append((entity, kind, value))
            value = normaliser.key("vat", vat_number, country)
            if value:
                found.append((entity, "vat", value))
    return found


def _entries(column: Any) -> Iterator[str]:
    try:
        entries = json.loads(column) if isinstance(column, str) else []
    except ValueError:
        return
    for entry in entries if isinstance(entries, list) else []:
        value = entry.get("value") if isinstance(entry, dict) else None
        if isinstance(value, str):
            yield value


def _apply(conn: sqlite3.Connection, scope: Scope) -> dict[str, int]:
    erased = {entity: json.dumps(sorted(ids)) for entity, ids in scope.erased().items()}
    # Staged rows may still link to an erased record: the link goes, as the live FKs do it.
    for column, entity in (("contact_id", "contacts"), ("company_id", "companies")):
        conn.execute(
            f"UPDATE main.stage_devices SET {column} = NULL "
            f"WHERE {column} IN (SELECT value FROM json_each(?))",
            (erased[entity],),
        )
    conn.execute(
        "UPDATE main.stage_contacts SET company_id = NULL "
        "WHERE company_id IN (SELECT value FROM json_each(?))",
        (erased["companies"],),
    )
    counts: dict[str, int] = {}
    for target in _targets(scope):
        if target.cascade:
            (changed,) = conn.execute(
                f"SELECT count(*) FROM main.{target.store} WHERE {target.where}", target.params
            ).fetchone()
        elif target.rewrite is not None:
            changed = conn.execute(
                f"UPDATE main.{target.store} SET target = ? WHERE {target.where}",
                (target.rewrite, *target.params),
            ).rowcount
        else:
            changed = conn.execute(
                f"DELETE FROM main.{target.store} WHERE {target.where}", target.params
            ).rowcount
        if changed:
            counts[target.store] = counts.get(target.store, 0) + int(changed)
    return counts


# -- restricting --------------------------------------------------------------------------------


def contact_ids(conn: sqlite3.Connection, selector: Selector, normaliser: Normaliser) -> set[str]:
    """The contacts ``selector`` names (``--crm-contact``: that ID, cached or not)."""
    if selector.kind == "crm_contact":
        return {selector.value}
    if selector.kind == "vat":
        return set()
    column = "emails" if selector.kind == "email" else "phones"
    with _matching(conn, normaliser, selector):
        return _ids_holding(conn, "contacts", column)

