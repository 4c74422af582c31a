"""The audit log of privileged (admin) actions. Kept two years (``retention.audit_log_days``):
the daemon's retention job prunes it (:func:`prune`, through :mod:`syncd.state.retention`)."""

from __future__ import annotations

import getpass
import json
import os
import sqlite3
from datetime import datetime
from typing import Any

from syncd.core.clock import iso, utc_now
from syncd.state.db import write_transaction


def os_user() -> str:
    """The operating-system user running this process (``sudo`` callers are named too)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid:{os.getuid()}"
    sudo_user = os.environ.get("SUDO_USER")
    return f"{sudo_user} (via sudo as {user})" if sudo_user and sudo_user != user else user


def record(
    conn: sqlite3.Connection,
    action: str,
    *,
    target: str | None = None,
    details: dict[str, Any] | None = None,
    actor: str | None = None,
) -> None:
    """Append one entry. ``details`` must not hold personal data (IDs and counts only)."""
    with write_transaction(conn):
        conn.execute(
            "INSERT INTO audit_log (at, actor, action, target, details) VALUES (?, ?, ?, ?, ?)",
            (
                iso(utc_now()),
                actor or os_user(),
                action,
                target,
                json.dumps(details or {}, sort_keys=True),
            ),
        )


def prune(conn: sqlite3.Connection, *, before: datetime) -> int:
    """Drop the entries older than ``before``, inside the caller's transaction; returns how
    many."""
    return conn.execute("DELETE FROM audit_log WHERE at < ?", (iso(before),)).rowcount
