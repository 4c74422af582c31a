"""Versioned schema migrations.

Each ``NNN_name.sql`` file beside this module is one version. They run in order, each in its own
transaction together with the ``PRAGMA user_version`` bump, so a crash leaves the schema at a
whole version. The portal checks ``PRAGMA user_version`` against the version it was written for.
"""

from __future__ import annotations

import re
import sqlite3
from importlib import resources

_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def available_migrations() -> list[tuple[int, str, str]]:
    """``(version, file name, SQL)`` of every shipped migration, in order."""
    found = []
    for entry in resources.files(__name__).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    for expected, (version, name, _) in enumerate(found, start=1):
        if version != expected:
            raise RuntimeError(f"migration {name} is out of sequence (expected {expected:03d})")
    return found


def latest_version() -> int:
    """The schema version this code writes."""
    return len(available_migrations())


def current_version(conn: sqlite3.Connection) -> int:
    """The schema version of the open database."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date; returns the resulting version.

    Refuses to open a database written by a newer syncd rather than guessing.
    """
    migrations = available_migrations()
    version = current_version(conn)
    if version > len(migrations):
        raise RuntimeError(
            f"the cache has schema version {version}, newer than this syncd knows "
            f"({len(migrations)}); upgrade syncd"
        )
    for number, _name, sql in migrations[version:]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if current_version(conn) >= number:  # another process migrated meanwhile
                conn.execute("ROLLBACK")
                continue
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return current_version(conn)


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (executescript would commit on its own)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        raise RuntimeError("migration script ends with an incomplete statement")
    return statements
