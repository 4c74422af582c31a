"""Edits the demo makes to the cache by hand, to show how syncd copes: VIES answers aged as if
time had passed, and mirrored rows damaged as if by accident. Nothing else calls these."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from syncd.core.clock import iso
from syncd.state.db import write_transaction


def age_vies_answers(conn: sqlite3.Connection, country_code: str, fetched_at: datetime) -> int:
    """Pretend the stored VIES answers of ``country_code`` were fetched at ``fetched_at``;
    returns how many were changed."""
    with write_transaction(conn):
        return conn.execute(
            "UPDATE vies_answers SET fetched_at = ? WHERE country_code = ?",
            (iso(fetched_at), country_code),
        ).rowcount


def damage_devices(conn: sqlite3.Connection, count: int) -> int:
    """Spoil ``count`` mirrored device rows (a wrong location, a content hash no mapping
    makes), the way a hand edit would; returns how many were damaged."""
    with write_transaction(conn):
        return conn.execute(
            "UPDATE devices SET location = 'wrong', content_hash = 'damaged' "
            "WHERE rowid IN (SELECT rowid FROM devices LIMIT ?)",
            (count,),
        ).rowcount
