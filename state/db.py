"""Opening the cache database: WAL, busy timeout, foreign keys, migrations."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from syncd.state.migrations import migrate

BUSY_TIMEOUT_MS = 5000


def connect(path: Path | str, *, migrate_schema: bool = True) -> sqlite3.Connection:
    """Open (creating if needed) the cache at ``path`` with syncd's connection settings.

    The connection is in autocommit mode (``isolation_level=None``); write transactions are
    explicit through :func:`write_transaction`, so a transaction's extent is visible in the code.
    """
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=5.0)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL is durable against process crashes in WAL mode; only a power loss may lose the
    # last commits, and then the cursors roll back together with the data they cover.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    if migrate_schema:
        migrate(conn)
    return conn


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: ``BEGIN IMMEDIATE`` (take the write lock up front, so a busy
    database fails at the start rather than half-way), commit on success, roll back on error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def data_version(conn: sqlite3.Connection) -> int:
    """SQLite's ``PRAGMA data_version`` of ``conn``: it changes whenever another connection
    commits to the database (a cheap way to notice the portal's writes without reading tables)."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def close(conn: sqlite3.Connection) -> None:
    """Close ``conn``, leaving the file readable by read-only users when it was the last one.

    In WAL mode SQLite deletes ``-wal`` and ``-shm`` when the last connection closes, and a
    read-only reader (the portal's user) cannot create them again, so every read would fail while
    syncd is stopped. Switching back to the rollback journal first avoids that; it only succeeds
    when no other connection is open (otherwise they keep the WAL files alive), and
    :func:`connect` switches to WAL again.
    """
    # Fails (busy/locked) while another connection is open; then the WAL files stay anyway.
    # No busy wait: closing must never hold up a shutdown.
    with contextlib.suppress(sqlite3.OperationalError):
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()


class ThreadConnections:
    """One cache connection per thread, made on first use by ``connect``; ``close_all`` closes
    every one of them."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def opened(self) -> list[sqlite3.Connection]:
        """The connections open now (one per thread that asked)."""
        with self._lock:
            return list(self._all)

    def close_all(self) -> None:
        with self._lock:
            connections, self._all = self._all, []
            self._local = threading.local()  # a later get() opens a fresh one
        for conn in connections:
            close(conn)
