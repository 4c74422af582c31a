"""What the outbox needs of the mirror: the device and contact a service request names, and
whether an ID the mirror lacks is certainly unknown to the CRM.

Read-only; the mirror engine owns these tables (see :mod:`syncd.state.cache`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceRef:
    """The mirrored device a request is about: what names it, and its company."""

    brand: str | None
    model: str | None
    serial_number: str | None
    company_id: str | None


@dataclass(frozen=True)
class ContactRef:
    """The mirrored contact who filed a request, and their company."""

    company_id: str | None


def device(conn: sqlite3.Connection, crm_id: str) -> DeviceRef | None:
    """The mirrored device ``crm_id``; None when the mirror does not have it."""
    row = conn.execute(
        "SELECT brand, model, serial_number, company_id FROM devices WHERE crm_id = ?", (crm_id,)
    ).fetchone()
    return None if row is None else DeviceRef(*row)


def contact(conn: sqlite3.Connection, crm_id: str) -> ContactRef | None:
    """The mirrored contact ``crm_id``; None when the mirror does not have it."""
    row = conn.execute("SELECT company_id FROM contacts WHERE crm_id = ?", (crm_id,)).fetchone()
    return None if row is None else ContactRef(*row)


def unknown_reference(conn: sqlite3.Connection, table: str, crm_id: str) -> bool:
    """Whether ``crm_id`` is certainly not in the mirrored ``table`` (``devices`` or
    ``contacts``): the table has been mirrored at least once and has no such row. While the
    first mirror after installation still runs, nothing is certain (False)."""
    if table not in ("devices", "contacts"):
        raise ValueError(f"not a mirrored table: {table}")
    if conn.execute(f"SELECT 1 FROM {table} WHERE crm_id = ?", (crm_id,)).fetchone():
        return False
    return conn.execute("SELECT 1 FROM cursors WHERE entity = ?", (table,)).fetchone() is not None
