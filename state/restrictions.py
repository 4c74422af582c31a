"""Restriction of processing: contacts whose processing a person had restricted.

``syncd subject restrict|unrestrict`` keeps the set in ``subject_restrictions`` (schema 6). It is
kept apart from ``contacts`` so that a restriction survives resyncs and deletions and applies to
a contact mirrored only later; the migration's triggers keep ``contacts.restricted`` (the column
the portal reads, docs/portal-contract.md) equal to it whichever way a contact row is written.

Who reads it: the outbox's door refuses a new service request for a restricted contact, and the
push lane turns one already queued ``dead`` with its reason before anything reaches the CRM.

Each writing function runs its own short write transaction. A contact ID is the CRM's ID, never
personal data, so it may appear in errors; nothing here logs.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from syncd.core.clock import iso
from syncd.state.db import write_transaction

__all__ = ["is_restricted", "restrict", "restricted_ids", "unrestrict"]

_MAX_ID_LENGTH = 100


def _checked(contact_id: str) -> str:
    if (
        not isinstance(contact_id, str)
        or not contact_id
        or contact_id != contact_id.strip()
        or len(contact_id) > _MAX_ID_LENGTH
    ):
        raise ValueError("contact_id: must be a contact's CRM ID")
    return contact_id


def restrict(conn: sqlite3.Connection, contact_id: str, *, now: datetime) -> bool:
    """Restrict the processing of contact ``contact_id`` (in the mirror or not yet) from ``now``.

    True when it was newly restricted; False when it already was (the first time is kept).
    Sets ``contacts.restricted`` on the contact's row, now or when the mirror brings it.
    """
    with write_transaction(conn):
        cursor = conn.execute(
            "INSERT INTO subject_restrictions (contact_id, restricted_at) VALUES (?, ?) "
            "ON CONFLICT(contact_id) DO NOTHING",
            (_checked(contact_id), iso(now)),
        )
    return cursor.rowcount == 1


def unrestrict(conn: sqlite3.Connection, contact_id: str) -> bool:
    """Lift the restriction of contact ``contact_id``; True when there was one."""
    with write_transaction(conn):
        cursor = conn.execute(
            "DELETE FROM subject_restrictions WHERE contact_id = ?", (_checked(contact_id),)
        )
    return cursor.rowcount == 1


def is_restricted(conn: sqlite3.Connection, contact_id: str) -> bool:
    """Whether the processing of contact ``contact_id`` is restricted (mirrored or not)."""
    row = conn.execute(
        "SELECT 1 FROM subject_restrictions WHERE contact_id = ?", (contact_id,)
    ).fetchone()
    return row is not None


def restricted_ids(conn: sqlite3.Connection) -> set[str]:
    """The CRM IDs of every contact whose processing is restricted."""
    return {row[0] for row in conn.execute("SELECT contact_id FROM subject_restrictions")}
