"""The outbox: service requests the portal filed, on their way to the CRM.

Lifecycle ``pending -> sending -> done | retry_wait | dead``. A worker *claims* a due request with
a lease (a crashed worker's lease expires and the request becomes due again), *acknowledges* it
only after the CRM confirmed it, or *fails* it: back to ``retry_wait`` with exponential backoff
and jitter (never sooner than the upstream's Retry-After), or ``dead`` after too many attempts or
at once on a permanent error. Requests of one contact are delivered in creation order.

Every function here runs its own short transaction; nothing holds the write lock while talking to
the CRM.
"""

from __future__ import annotations

import random
import re
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from syncd.core.clock import iso_ms, parse_iso_or_none
from syncd.core.errors import SkippableError
from syncd.state.db import write_transaction

STATUSES = ("pending", "sending", "done", "retry_wait", "dead")
#: What a request says, besides its key, time and files: the fields every way in takes.
REQUEST_FIELDS = (
    "request_type",
    "message",
    "contact_phone",
    "contact_email",
    "contact_address",
    "device_crm_id",
    "contact_crm_id",
)
MAX_MESSAGE_LENGTH = 10_000
MAX_FIELD_LENGTH = 500
MAX_FILES = 20
_CRM_ID = re.compile(r"^[1-9][0-9]{0,18}$")


class OutboxValidationError(SkippableError):
    """A request does not fit the outbox contract (bad UUID, unknown type, ...)."""


@dataclass(frozen=True)
class OutboxFile:
    """One attached file of a request."""

    id: int
    position: int
    path: str
    original_name: str
    declared_type: str | None
    size: int | None
    status: str
    crm_file_id: str | None
    error: str | None


@dataclass(frozen=True)
class OutboxRequest:
    """One request as stored (the message may have been dropped after retention)."""

    id: int
    idempotency_key: str
    request_type: str
    message: str | None
    contact_phone: str | None
    contact_email: str | None
    contact_address: str | None
    device_crm_id: str | None
    contact_crm_id: str | None
    created_at: str
    status: str
    attempts: int
    next_attempt_at: str | None
    lease_owner: str | None
    lease_until: str | None
    last_error: str | None
    crm_id: str | None
    delivered_at: str | None
    files: tuple[OutboxFile, ...] = ()


_REQUEST_COLUMNS = (
    "id, idempotency_key, request_type, message, contact_phone, contact_email, contact_address, "
    "device_crm_id, contact_crm_id, created_at, status, attempts, next_attempt_at, lease_owner, "
    "lease_until, last_error, crm_id, delivered_at"
)
_FILE_COLUMNS = "id, position, path, original_name, declared_type, size, status, crm_file_id, error"


# -- the portal's side: enqueue ---------------------------------------------------------------


def validate_request(data: Any, *, request_types: frozenset[str]) -> dict[str, Any]:
    """Check a request's fields (every way in: the API's door, the CLI, and the push lane again
    on the stored row); returns the normalised fields.

    Raises :class:`OutboxValidationError` naming the field (never echoing personal data).
    """
    if not isinstance(data, dict):
        raise OutboxValidationError("the request must be a JSON object")
    unknown = set(data) - {"idempotency_key", *REQUEST_FIELDS, "created_at", "files"}
    if unknown:
        raise OutboxValidationError(f"unknown field {sorted(unknown)[0]!r}")
    key = data.get("idempotency_key")
    try:
        parsed_key = uuid.UUID(str(key))
    except ValueError:
        raise OutboxValidationError("idempotency_key: not a UUID") from None
    if key is None or str(parsed_key) != str(key).lower():
        raise OutboxValidationError("idempotency_key: not a UUID in canonical form")
    request_type = data.get("request_type")
    if request_type not in request_types:
        raise OutboxValidationError(
            f"request_type: must be one of {', '.join(sorted(request_types))}"
        )
    out: dict[str, Any] = {"idempotency_key": str(parsed_key), "request_type": request_type}
    message = data.get("message")
    if message is not None and (not isinstance(message, str) or len(message) > MAX_MESSAGE_LENGTH):
        raise OutboxValidationError(
            f"message: must be text of at most {MAX_MESSAGE_LENGTH} characters"
        )
    out["message"] = message
    for name in ("contact_phone", "contact_email", "contact_address"):
        value = data.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_FIELD_LENGTH):
            raise OutboxValidationError(
                f"{name}: must be text of at most {MAX_FIELD_LENGTH} characters"
            )
        out[name] = value.strip() if isinstance(value, str) and value.strip() else None
    for name in ("device_crm_id", "contact_crm_id"):
        value = data.get(name)
        if value is not None and not _CRM_ID.match(str(value)):
            raise OutboxValidationError(f"{name}: must be a CRM ID (a positive integer)")
        out[name] = str(value) if value is not None else None
    created = data.get("created_at")
    if created is not None:
        try:
            moment = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
        except ValueError:
            raise OutboxValidationError("created_at: not an ISO 8601 timestamp") from None
        if moment.tzinfo is None:
            raise OutboxValidationError("created_at: needs a UTC offset")
        out["created_at"] = iso_ms(moment)
    out["files"] = _validate_files(data.get("files", []))
    return out


def _validate_files(files: Any) -> list[dict[str, Any]]:
    if not isinstance(files, list):
        raise OutboxValidationError("files: must be a list")
    if len(files) > MAX_FILES:
        raise OutboxValidationError(f"files: at most {MAX_FILES} files per request")
    checked = []
    for position, entry in enumerate(files):
        label = f"files[{position}]"
        if not isinstance(entry, dict) or set(entry) - {
            "path",
            "original_name",
            "declared_type",
            "size",
        }:
            raise OutboxValidationError(
                f"{label}: must be an object with path, original_name, declared_type and size"
            )
        path, name = entry.get("path"), entry.get("original_name")
        if not isinstance(path, str) or not path or len(path) > MAX_FIELD_LENGTH:
            raise OutboxValidationError(f"{label}.path: must be a path relative to the spool")
        if not isinstance(name, str) or not name or len(name) > MAX_FIELD_LENGTH:
            raise OutboxValidationError(f"{label}.original_name: must be a file name")
        size = entry.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise OutboxValidationError(f"{label}.size: must be a byte count")
        declared = entry.get("declared_type")
        if declared is not None and not isinstance(declared, str):
            raise OutboxValidationError(f"{label}.declared_type: must be a MIME type")
        checked.append(
            {
                "position": position,
                "path": path,
                "original_name": name,
                "declared_type": declared,
                "size": size,
            }
        )
    return checked


def enqueue(
    conn: sqlite3.Connection,
    data: Any,
    *,
    request_types: frozenset[str],
    now: datetime,
    before_insert: Callable[[], None] | None = None,
) -> tuple[int, bool]:
    """Validate and insert a request with its files (every way in ends here).

    Returns ``(id, created)``; a request whose idempotency key is already queued is not inserted
    again (``created`` is False), so a retry is harmless. ``before_insert`` runs inside the write
    transaction once the key is known to be new (the intake moves the request's files into place
    there); if it raises, nothing is inserted.
    """
    fields = validate_request(data, request_types=request_types)
    files = fields.pop("files")
    fields.setdefault("created_at", iso_ms(now))
    with write_transaction(conn):
        row = conn.execute(
            "SELECT id FROM outbox_requests WHERE idempotency_key = ?", (fields["idempotency_key"],)
        ).fetchone()
        if row:
            return int(row[0]), False
        if before_insert is not None:
            before_insert()
        names = ", ".join(fields)
        cursor = conn.execute(
            f"INSERT INTO outbox_requests ({names}, updated_at) "
            f"VALUES ({', '.join('?' * len(fields))}, ?)",
            (*fields.values(), iso_ms(now)),
        )
        request_id = int(cursor.lastrowid or 0)
        conn.executemany(
            "INSERT INTO outbox_files (request_id, position, path, original_name, declared_type, "
            "size) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    request_id,
                    f["position"],
                    f["path"],
                    f["original_name"],
                    f["declared_type"],
                    f["size"],
                )
                for f in files
            ],
        )
    return request_id, True


# -- the worker's side ------------------------------------------------------------------------


def claim(
    conn: sqlite3.Connection,
    *,
    worker: str,
    now: datetime,
    lease_seconds: float,
    max_attempts: int,
) -> OutboxRequest | None:
    """Lease the oldest due request whose contact has no older undelivered request.

    Due: ``pending``; ``retry_wait`` whose time has come; ``sending`` whose lease expired (its
    worker died during the attempt). An expired lease counts as a failed attempt: a request that
    has used up ``max_attempts`` that way goes ``dead`` instead of being tried forever.
    Returns None when nothing is due.
    """
    current = iso_ms(now)
    with write_transaction(conn):
        conn.execute(
            "UPDATE outbox_requests SET status = 'dead', lease_owner = NULL, lease_until = NULL, "
            "last_error = 'gave up after ' || attempts || ' attempts; the last one was "
            "interrupted (syncd stopped during delivery)', updated_at = :now "
            "WHERE status = 'sending' AND lease_until <= :now AND attempts >= :max",
            {"now": current, "max": max_attempts},
        )
        row = conn.execute(
            f"""SELECT {_REQUEST_COLUMNS} FROM outbox_requests r
            WHERE (r.status = 'pending'
                   OR (r.status = 'retry_wait' AND r.next_attempt_at <= :now)
                   OR (r.status = 'sending' AND r.lease_until <= :now))
              AND NOT EXISTS (
                  SELECT 1 FROM outbox_requests o
                  WHERE o.contact_crm_id = r.contact_crm_id
                    AND o.status IN ('pending', 'sending', 'retry_wait')
                    AND (o.created_at < r.created_at
                         OR (o.created_at = r.created_at AND o.id < r.id)))
            ORDER BY r.created_at, r.id LIMIT 1""",
            {"now": current},
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            "UPDATE outbox_requests SET status = 'sending', attempts = attempts + 1, "
            "lease_owner = ?, lease_until = ?, updated_at = ? WHERE id = ?",
            (worker, iso_ms(now + timedelta(seconds=lease_seconds)), current, row[0]),
        )
    return get(conn, int(row[0]))


def extend_lease(
    conn: sqlite3.Connection, request_id: int, *, worker: str, now: datetime, lease_seconds: float
) -> bool:
    """Keep a long delivery (a large upload) leased; False if the lease was lost."""
    with write_transaction(conn):
        cursor = conn.execute(
            "UPDATE outbox_requests SET lease_until = ? WHERE id = ? AND status = 'sending' "
            "AND lease_owner = ?",
            (iso_ms(now + timedelta(seconds=lease_seconds)), request_id, worker),
        )
    return cursor.rowcount == 1


def record_file_uploaded(
    conn: sqlite3.Connection, file_id: int, *, crm_file_id: str, detected_type: str | None
) -> None:
    """Checkpoint one uploaded file, so a restart does not upload it again."""
    with write_transaction(conn):
        conn.execute(
            "UPDATE outbox_files SET status = 'uploaded', crm_file_id = ?, detected_type = ? "
            "WHERE id = ?",
            (crm_file_id, detected_type, file_id),
        )


def reject_file(conn: sqlite3.Connection, file_id: int, *, error: str) -> None:
    """A file that failed its checks: ``rejected`` with the reason (naming it by position)."""
    with write_transaction(conn):
        conn.execute(
            "UPDATE outbox_files SET status = 'rejected', error = ? WHERE id = ?", (error, file_id)
        )


def mark_file_deleted(conn: sqlite3.Connection, file_id: int) -> None:
    """The local copy is gone (after delivery); a rejected file keeps its status and reason."""
    with write_transaction(conn):
        conn.execute(
            "UPDATE outbox_files SET status = 'deleted' WHERE id = ? AND status != 'rejected'",
            (file_id,),
        )


@dataclass(frozen=True)
class LocalFile:
    """A spool file of a request, to delete: its row, its request and where it lies."""

    file_id: int
    request_id: int
    position: int
    path: str


def delivered_files_on_disk(conn: sqlite3.Connection) -> list[LocalFile]:
    """Files of delivered requests whose local copy was not yet deleted (the process died
    between the acknowledgement and the deletion)."""
    return [
        LocalFile(*row)
        for row in conn.execute(
            "SELECT f.id, f.request_id, f.position, f.path FROM outbox_files f "
            "JOIN outbox_requests r ON r.id = f.request_id "
            "WHERE r.status = 'done' AND f.status IN ('pending', 'uploaded')"
        )
    ]


def record_crm_id(conn: sqlite3.Connection, request_id: int, *, crm_id: str, now: datetime) -> None:
    """Remember the CRM item as soon as it exists (before its files are attached)."""
    with write_transaction(conn):
        conn.execute(
            "UPDATE outbox_requests SET crm_id = ?, updated_at = ? WHERE id = ?",
            (crm_id, iso_ms(now), request_id),
        )


def ack(
    conn: sqlite3.Connection, request_id: int, *, worker: str, crm_id: str, now: datetime
) -> bool:
    """Mark delivered; only the lease holder may (False if the lease was lost meanwhile)."""
    with write_transaction(conn):
        cursor = conn.execute(
            "UPDATE outbox_requests SET status = 'done', crm_id = ?, delivered_at = ?, "
            "last_error = NULL, lease_owner = NULL, lease_until = NULL, updated_at = ? "
            "WHERE id = ? AND status = 'sending' AND lease_owner = ?",
            (crm_id, iso_ms(now), iso_ms(now), request_id, worker),
        )
    return cursor.rowcount == 1


def backoff_seconds(
    attempts: int,
    *,
    base: float = 5.0,
    cap: float = 3600.0,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with jitter for the ``attempts``-th failure, >= ``retry_after``."""
    ceiling = min(cap, base * 2 ** max(0, min(attempts - 1, 20)))
    delay = (rng or random).uniform(ceiling / 2, ceiling)
    return max(delay, retry_after or 0.0)


def fail(
    conn: sqlite3.Connection,
    request_id: int,
    *,
    worker: str,
    error: str,
    permanent: bool,
    now: datetime,
    max_attempts: int,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> str | None:
    """Record a failed attempt; returns the new status (None if the lease was lost).

    ``error`` is shown to the portal and operators: plain words, no secrets, no personal data.
    """
    with write_transaction(conn):
        row = conn.execute(
            "SELECT attempts FROM outbox_requests WHERE id = ? AND status = 'sending' "
            "AND lease_owner = ?",
            (request_id, worker),
        ).fetchone()
        if row is None:
            return None
        attempts = int(row[0])
        dead = permanent or attempts >= max_attempts
        next_at = (
            None
            if dead
            else iso_ms(
                now + timedelta(seconds=backoff_seconds(attempts, retry_after=retry_after, rng=rng))
            )
        )
        status = "dead" if dead else "retry_wait"
        conn.execute(
            "UPDATE outbox_requests SET status = ?, next_attempt_at = ?, last_error = ?, "
            "lease_owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ?",
            (status, next_at, error[:500], iso_ms(now), request_id),
        )
    return status


# -- the operator's side ----------------------------------------------------------------------


def retry(conn: sqlite3.Connection, request_id: int | None, *, now: datetime) -> int:
    """Send a dead request (or, with None, every dead request) again with a fresh budget. A
    request whose details retention already forgot (``message_dropped_at``) is not sent again:
    it would reach the CRM without its message, contact details and files."""
    where = "status = 'dead' AND message_dropped_at IS NULL" + (
        " AND id = ?" if request_id is not None else ""
    )
    with write_transaction(conn):
        cursor = conn.execute(
            "UPDATE outbox_requests SET status = 'pending', attempts = 0, next_attempt_at = NULL,"
            f" updated_at = ? WHERE {where}",
            (iso_ms(now), *(() if request_id is None else (request_id,))),
        )
    return cursor.rowcount


def drop(conn: sqlite3.Connection, request_id: int) -> OutboxRequest | None:
    """Remove a request that is not being sent (its files' rows go with it); returns what was
    dropped, so the caller can delete the spool files."""
    request = get(conn, request_id)
    if request is None or request.status == "sending":
        return None
    with write_transaction(conn):
        conn.execute(
            "DELETE FROM outbox_requests WHERE id = ? AND status != 'sending'", (request_id,)
        )
    return request


# -- reading ----------------------------------------------------------------------------------


def get(conn: sqlite3.Connection, request_id: int) -> OutboxRequest | None:
    row = conn.execute(
        f"SELECT {_REQUEST_COLUMNS} FROM outbox_requests WHERE id = ?", (request_id,)
    ).fetchone()
    if row is None:
        return None
    files = tuple(
        OutboxFile(*f)
        for f in conn.execute(
            f"SELECT {_FILE_COLUMNS} FROM outbox_files WHERE request_id = ? ORDER BY position",
            (request_id,),
        )
    )
    return replace(OutboxRequest(*row), files=files)


def id_for_key(conn: sqlite3.Connection, idempotency_key: str) -> int | None:
    """The ID of the request filed under ``idempotency_key`` (canonical lower-case UUID)."""
    row = conn.execute(
        "SELECT id FROM outbox_requests WHERE idempotency_key = ?", (idempotency_key,)
    ).fetchone()
    return None if row is None else int(row[0])


def get_by_key(conn: sqlite3.Connection, idempotency_key: str) -> OutboxRequest | None:
    """The request filed under ``idempotency_key`` (canonical lower-case UUID), with its files."""
    request_id = id_for_key(conn, idempotency_key)
    return None if request_id is None else get(conn, request_id)


def spool_directories_in_use(conn: sqlite3.Connection) -> set[str]:
    """The first path component of every spool file a request still refers to."""
    return {
        str(path).split("/", 1)[0]
        for (path,) in conn.execute(
            "SELECT path FROM outbox_files WHERE status IN ('pending', 'uploaded', 'rejected')"
        )
    }


def list_requests(
    conn: sqlite3.Connection, *, status: str | None = None, limit: int = 100
) -> list[OutboxRequest]:
    where, params = ("WHERE status = ?", (status,)) if status else ("", ())
    rows = conn.execute(
        f"SELECT {_REQUEST_COLUMNS} FROM outbox_requests {where} ORDER BY id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [OutboxRequest(*row) for row in rows]


@dataclass(frozen=True)
class OutboxDepth:
    """Requests per status and when the oldest undelivered one was filed."""

    by_status: dict[str, int]  # every status of STATUSES, in that order
    oldest_undelivered_at: datetime | None  # pending, sending or retry_wait; None: none waits

    def oldest_undelivered_age(self, now: datetime) -> float | None:
        """Seconds since the oldest undelivered request was filed; None when none waits."""
        if self.oldest_undelivered_at is None:
            return None
        return (now - self.oldest_undelivered_at).total_seconds()


def depth(conn: sqlite3.Connection) -> OutboxDepth:
    """Requests per status and the oldest undelivered one (for ``status`` and ``/metrics``)."""
    counts = dict.fromkeys(STATUSES, 0)
    counts.update(
        dict(
            conn.execute("SELECT status, count(*) FROM outbox_requests GROUP BY status").fetchall()
        )
    )
    oldest = conn.execute(
        "SELECT min(created_at) FROM outbox_requests "
        "WHERE status IN ('pending', 'sending', 'retry_wait')"
    ).fetchone()[0]
    return OutboxDepth(by_status=counts, oldest_undelivered_at=parse_iso_or_none(oldest))


def release_dead_leases(
    conn: sqlite3.Connection, *, host: str, is_alive: Callable[[int], bool], now: datetime
) -> int:
    """Expire the leases of this host's workers whose processes are gone (a restarted daemon
    resumes their requests at once instead of waiting out the lease). Returns how many."""
    rows = conn.execute(
        "SELECT id, lease_owner FROM outbox_requests WHERE status = 'sending' "
        "AND lease_owner LIKE ? || ':%'",
        (host,),
    ).fetchall()
    dead = []
    for request_id, owner in rows:
        pid = owner.rsplit(":", 1)[-1]
        if pid.isdigit() and not is_alive(int(pid)):
            dead.append(request_id)
    with write_transaction(conn):
        conn.executemany(
            "UPDATE outbox_requests SET lease_until = ? WHERE id = ? AND status = 'sending'",
            [(iso_ms(now), i) for i in dead],
        )
    return len(dead)
