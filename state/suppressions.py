"""Suppressions: erased subjects the mirror must not bring back while the CRM still holds them.

``syncd subject erase`` removes a person's rows from the cache, but the CRM is the source: its
next listing would bring them back. So the erasure records, in ``subject_suppressions``
(schema 6), keyed hashes of what it erased, never the values themselves:

* ``crm_id`` rows, ``HMAC(key, "crm_id:<ID>")`` per erased record and entity. These are what
  the mirror enforces: :meth:`syncd.state.cache.CacheStore.merge` never writes a live row whose
  ID is suppressed. They are lifted when the CRM no longer has the record (an ID sweep, a full
  resync, a deletion event, a one-record resync), or by ``syncd subject unsuppress``.
* ``email``, ``phone`` and ``vat`` rows, ``HMAC(key, "<kind>:<normalised value>")``. The mirror
  does not enforce them (an address or number may be shared, and a person may come back to
  the CRM as a new record); they let ``unsuppress`` and ``export`` find an erasure by an
  identifier. They go with their erasure: when no ``crm_id`` row of it is left.

The rows of one erasure share their ``created_at`` (to the millisecond, unique per erasure):
that is how an identifier row finds its erasure.

The key is 32 random bytes in ``suppression.key`` beside the cache, mode 0600, made on first
use: the cache is readable by the portal's group, and without a secret key a hash of a phone
number is found again by trying every number. Nothing here logs or commits: the caller owns
the transaction (every function that writes is meant to run inside one).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import stat
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

from syncd.core.clock import iso_ms
from syncd.core.errors import FatalError

__all__ = [
    "KEY_FILE_NAME",
    "SuppressionKeyError",
    "counts",
    "digest",
    "find",
    "key_path",
    "lift_after_full_listing",
    "lift_all",
    "lift_erasures",
    "lift_ids",
    "lift_unlisted",
    "load_key",
    "record",
    "suppressed_ids",
    "suppressed_in_table",
]

KEY_FILE_NAME = "suppression.key"
KEY_BYTES = 32
KINDS = ("crm_id", "email", "phone", "vat")


class SuppressionKeyError(FatalError):
    """The suppression key is missing, unreadable or unsafe while suppressions exist: erased
    subjects cannot be recognised, so the mirror stops rather than bring them back."""


def key_path(conn: sqlite3.Connection) -> Path | None:
    """Where the key of the cache ``conn`` has open lives (beside the cache file); None for a
    database without a file."""
    for _seq, name, file in conn.execute("PRAGMA database_list"):
        if name == "main":
            return Path(file).parent / KEY_FILE_NAME if file else None
    return None


def load_key(conn: sqlite3.Connection, *, create: bool = False) -> bytes | None:
    """The suppression key of the cache ``conn``; None when there is none yet and ``create`` is
    false. With ``create``, a missing key is made (atomically: two processes making it at once
    end with the same key). Raises :class:`SuppressionKeyError` when the file is unusable."""
    path = key_path(conn)
    if path is None:
        raise SuppressionKeyError("the cache has no file, so there is no suppression key")
    if create and not path.exists():
        _create_key(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise SuppressionKeyError(
            f"cannot read the suppression key {path}: {error.strerror}"
        ) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
            raise SuppressionKeyError(
                f"the suppression key {path} must be a regular file only its owner can read "
                "(chmod 600)"
            )
        key = handle.read(KEY_BYTES + 1)
    if len(key) != KEY_BYTES:
        raise SuppressionKeyError(f"the suppression key {path} is damaged (not {KEY_BYTES} bytes)")
    return key


def _create_key(path: Path) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        # link() never replaces: if another process made the key meanwhile, theirs stays.
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def digest(key: bytes, kind: str, value: str) -> str:
    """The stored form of ``<kind>:<value>``: hex HMAC-SHA256 under ``key``."""
    if kind not in KINDS:
        raise ValueError(f"unknown suppression kind {kind!r}")
    return hmac.digest(key, f"{kind}:{value}".encode(), hashlib.sha256).hex()


# -- recording and lifting (inside the caller's transaction) ------------------------------------


def record(
    conn: sqlite3.Connection,
    key: bytes,
    entries: Iterable[tuple[str, str, str]],
    *,
    now: datetime,
) -> int:
    """Record one erasure's suppressions, ``(entity, kind, value)`` each (values normalised;
    only their digests are stored). Returns how many rows are new. An identifier suppressed by
    an earlier erasure moves to this one."""
    stamp = _unique_stamp(conn, now)
    rows = sorted({(entity, digest(key, kind, value), kind) for entity, kind, value in entries})
    before = conn.total_changes
    conn.executemany(
        "INSERT INTO subject_suppressions (entity, digest, kind, created_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(entity, digest) DO UPDATE SET created_at = excluded.created_at",
        [(entity, value, kind, stamp) for entity, value, kind in rows],
    )
    return conn.total_changes - before


def _unique_stamp(conn: sqlite3.Connection, now: datetime) -> str:
    moment = now
    while conn.execute(
        "SELECT 1 FROM subject_suppressions WHERE created_at = ? LIMIT 1", (iso_ms(moment),)
    ).fetchone():
        moment += timedelta(milliseconds=1)
    return iso_ms(moment)


def lift_ids(conn: sqlite3.Connection, entity: str, ids: Iterable[str]) -> int:
    """Lift the ``crm_id`` suppressions of ``ids`` (records the CRM deleted); returns how many
    erasures' suppressions went (0 at once when none of ``entity`` exists)."""
    ids = list(ids)
    if not ids or not _any_crm_ids(conn, entity):
        return 0
    key = _key_for_enforcing(conn)
    return _lift_digests(conn, entity, {digest(key, "crm_id", i) for i in ids})


def lift_unlisted(conn: sqlite3.Connection, entity: str, listed: Iterable[str]) -> int:
    """After a complete listing of ``entity``'s IDs: lift the ``crm_id`` suppressions of every
    record the listing did not contain (the CRM no longer has it). Returns how many went."""
    if not _any_crm_ids(conn, entity):
        return 0
    key = _key_for_enforcing(conn)
    present = {digest(key, "crm_id", i) for i in listed}
    gone = {
        value
        for (value,) in conn.execute(
            "SELECT digest FROM subject_suppressions WHERE entity = ? AND kind = 'crm_id'",
            (entity,),
        )
        if value not in present
    }
    return _lift_digests(conn, entity, gone)


def lift_after_full_listing(conn: sqlite3.Connection, entity: str) -> int:
    """:func:`lift_unlisted` for a full resync about to be swapped in: the listing is what
    ``stage_<entity>`` holds plus the records quarantined during it."""
    if not _any_crm_ids(conn, entity):
        return 0
    listed = [
        row[0]
        for row in conn.execute(
            f"SELECT crm_id FROM main.stage_{_entity(entity)} "
            "UNION SELECT crm_id FROM quarantine WHERE entity = ?",
            (entity,),
        )
    ]
    return lift_unlisted(conn, entity, listed)


def lift_erasures(conn: sqlite3.Connection, digests: Iterable[str]) -> dict[str, int]:
    """Lift every erasure one of ``digests`` belongs to (any entity or kind): all rows that
    share its ``created_at``. Returns the records (``crm_id`` rows) lifted per entity."""
    wanted = sorted(set(digests))
    stamps = [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT created_at FROM subject_suppressions "
            "WHERE digest IN (SELECT value FROM json_each(?))",
            (json.dumps(wanted),),
        )
    ]
    lifted: dict[str, int] = {}
    for entity, count in conn.execute(
        "SELECT entity, count(*) FROM subject_suppressions WHERE kind = 'crm_id' "
        "AND created_at IN (SELECT value FROM json_each(?)) GROUP BY entity",
        (json.dumps(stamps),),
    ):
        lifted[entity] = int(count)
    conn.execute(
        "DELETE FROM subject_suppressions WHERE created_at IN (SELECT value FROM json_each(?))",
        (json.dumps(stamps),),
    )
    return lifted


def lift_all(conn: sqlite3.Connection) -> dict[str, int]:
    """Lift every suppression (``syncd subject unsuppress --all``); returns the records
    (``crm_id`` rows) lifted per entity."""
    lifted = counts(conn)
    conn.execute("DELETE FROM subject_suppressions")
    return lifted


def _lift_digests(conn: sqlite3.Connection, entity: str, gone: set[str]) -> int:
    if not gone:
        return 0
    conn.executemany(
        "DELETE FROM subject_suppressions WHERE entity = ? AND kind = 'crm_id' AND digest = ?",
        [(entity, value) for value in sorted(gone)],
    )
    # An identifier row goes with its erasure, once no crm_id row of it is left.
    conn.execute(
        "DELETE FROM subject_suppressions WHERE kind != 'crm_id' AND created_at NOT IN "
        "(SELECT created_at FROM subject_suppressions WHERE kind = 'crm_id')"
    )
    return len(gone)


# -- what the mirror asks -----------------------------------------------------------------------


def suppressed_ids(conn: sqlite3.Connection, entity: str, ids: Iterable[str]) -> set[str]:
    """Those of ``ids`` whose record of ``entity`` is suppressed (an empty set at once when
    ``entity`` has no suppression). Raises :class:`SuppressionKeyError` when suppressions
    exist but the key is gone."""
    if not _any_crm_ids(conn, entity):
        return set()
    key = _key_for_enforcing(conn)
    wanted = {
        value
        for (value,) in conn.execute(
            "SELECT digest FROM subject_suppressions WHERE entity = ? AND kind = 'crm_id'",
            (entity,),
        )
    }
    return {i for i in ids if digest(key, "crm_id", i) in wanted}


def suppressed_in_table(conn: sqlite3.Connection, entity: str, table: str) -> set[str]:
    """The suppressed IDs among the rows of the staging table ``table`` (``stage_<entity>`` or
    a connection's ``scratch_<entity>``); reads the table only when ``entity`` has
    suppressions."""
    if not _any_crm_ids(conn, entity):
        return set()
    if table not in (f"stage_{entity}", f"scratch_{entity}"):
        raise ValueError(table)
    staged = (row[0] for row in conn.execute(f"SELECT crm_id FROM {table}"))
    return suppressed_ids(conn, entity, staged)


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Suppressed records per entity (``crm_id`` rows; entities without any are left out)."""
    return {
        entity: int(count)
        for entity, count in conn.execute(
            "SELECT entity, count(*) FROM subject_suppressions WHERE kind = 'crm_id' "
            "GROUP BY entity"
        )
    }


def find(conn: sqlite3.Connection, digests: Iterable[str]) -> list[tuple[str, str, str]]:
    """The suppressions stored under ``digests``: ``(entity, kind, created_at)`` each."""
    return [
        (entity, kind, created_at)
        for entity, kind, created_at in conn.execute(
            "SELECT entity, kind, created_at FROM subject_suppressions "
            "WHERE digest IN (SELECT value FROM json_each(?)) ORDER BY created_at, entity, kind",
            (json.dumps(sorted(set(digests))),),
        )
    ]


def _any_crm_ids(conn: sqlite3.Connection, entity: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM subject_suppressions WHERE entity = ? AND kind = 'crm_id' LIMIT 1",
            (_entity(entity),),
        ).fetchone()
        is not None
    )


def _key_for_enforcing(conn: sqlite3.Connection) -> bytes:
    key = load_key(conn)
    if key is None:
        raise SuppressionKeyError(
            f"the suppression key {key_path(conn)} is missing while erased subjects are "
            "suppressed: they cannot be recognised. Restore the file from a backup, or lift "
            "every suppression with `syncd subject unsuppress --all`"
        )
    return key


def _entity(entity: str) -> str:
    if entity not in ("companies", "contacts", "devices"):
        raise ValueError(f"unknown entity {entity!r}")
    return str(entity)
