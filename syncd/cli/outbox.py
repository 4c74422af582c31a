"""``syncd outbox list|show|retry|drop|enqueue``: the operator's view of the outbox."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import stat
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from syncd.config import Settings
from syncd.core.clock import utc_now
from syncd.engines.intake import FORM_FIELDS, IncomingFile, IntakeError, canonical_key
from syncd.engines.spool import remove_spool_file
from syncd.runtime import build_intake
from syncd.state import audit, outbox

EX_OK, EX_FAILED, EX_USAGE, EX_DATAERR, EX_NOINPUT, EX_NOPERM = 0, 1, 64, 65, 66, 77
PERSONAL_FIELDS = ("message", "contact_phone", "contact_email", "contact_address")


def add_parser(commands: Any) -> None:
    """Register ``outbox`` and its subcommands on the main parser's subparsers."""
    parser = commands.add_parser(
        "outbox",
        help="inspect and manage service requests on their way to the CRM",
        description="The outbox holds the service requests the portal filed, with their "
        "files, until the CRM has them.",
    )
    sub = parser.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    listing = sub.add_parser(
        "list",
        help="list requests (newest first)",
        description="List requests, newest first, without personal data.",
    )
    listing.add_argument("--status", choices=outbox.STATUSES, help="only requests in STATUS")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    show = sub.add_parser(
        "show",
        help="show one request and its files",
        description="Show one request, its files and where it stands. The "
        "message and contact details stay hidden unless "
        "--reveal is given (which is audited).",
    )
    show.add_argument("id", type=int, help="the request's outbox ID")
    show.add_argument(
        "--reveal", action="store_true", help="also print the message and contact details (audited)"
    )
    show.add_argument("--json", action="store_true", help="print JSON")
    retry = sub.add_parser(
        "retry",
        help="send a dead request again",
        description="Give a dead request (or every dead request) a fresh attempt budget. Audited.",
    )
    target = retry.add_mutually_exclusive_group(required=True)
    target.add_argument("id", type=int, nargs="?", help="the request's outbox ID")
    target.add_argument("--all-dead", action="store_true", help="every dead request")
    drop = sub.add_parser(
        "drop",
        help="remove a request and its local files",
        description="Remove a request that is not being sent, and delete its "
        "files from the spool. Audited.",
    )
    drop.add_argument("id", type=int, help="the request's outbox ID")
    enqueue = sub.add_parser(
        "enqueue",
        help="file a request from a JSON file (with local files)",
        description="File a service request described by FILE (JSON) through the same door "
        "and checks as the portal's POST /v1/service-requests: the fields, each attached "
        "file's type by its content and its size; the files are copied into the spool. An "
        "idempotency key filed before is not filed twice. Run it as the daemon's user "
        "(sudo -u syncd), who owns the spool. The JSON: {\"idempotency_key\": UUID, "
        "\"request_type\": ..., \"message\", \"contact_phone\", \"contact_email\", "
        "\"contact_address\", \"device_crm_id\", \"contact_crm_id\" (optional), \"files\": "
        "[{\"path\": local path, \"name\": name for the CRM (default: the file's), "
        "\"type\": declared MIME type (optional)}]}. Exit status 65 when refused, 66 when a "
        "file is missing, 77 when not run as the spool's owner.",
    )
    enqueue.add_argument("file", type=Path, help="the request as JSON ('-' for stdin)")


def run(settings: Settings, conn: sqlite3.Connection, args: argparse.Namespace) -> int:
    """Dispatch one ``outbox`` action; returns the exit code."""
    action = args.outbox_command
    if action == "list":
        return _list(conn, args)
    if action == "show":
        return _show(conn, args)
    if action == "retry":
        count = outbox.retry(conn, None if args.all_dead else args.id, now=utc_now())
        audit.record(
            conn,
            "outbox.retry",
            target="all dead" if args.all_dead else str(args.id),
            details={"count": count},
        )
        print(f"{count} request(s) queued again")
        return EX_OK if count else EX_FAILED
    if action == "drop":
        return _drop(settings, conn, args.id)
    return _enqueue(settings, conn, args.file)


def _list(conn: sqlite3.Connection, args: argparse.Namespace) -> int:
    requests = outbox.list_requests(conn, status=args.status, limit=args.limit)
    if args.json:
        print(json.dumps([_public(r) for r in requests], indent=2))
        return EX_OK
    if not requests:
        print("the outbox is empty" if not args.status else f"no {args.status} requests")
        return EX_OK
    print(
        f"{'id':>6}  {'status':<10} {'type':<12} {'tries':>5}  {'created':<24} "
        f"{'crm id':<8} last error"
    )
    for r in requests:
        print(
            f"{r.id:>6}  {r.status:<10} {r.request_type:<12} {r.attempts:>5}  "
            f"{r.created_at:<24} {r.crm_id or '-':<8} {(r.last_error or '')[:60]}"
        )
    return EX_OK


def _show(conn: sqlite3.Connection, args: argparse.Namespace) -> int:
    request = outbox.get(conn, args.id)
    if request is None:
        print(f"no outbox request {args.id}", file=sys.stderr)
        return EX_NOINPUT
    data = _public(request, reveal=args.reveal)
    data["files"] = [asdict(f) for f in request.files]
    if args.reveal:
        audit.record(conn, "outbox.reveal", target=str(request.id))
    if args.json:
        print(json.dumps(data, indent=2))
        return EX_OK
    for key, value in data.items():
        if key != "files":
            print(f"{key:<16} {value if value is not None else '-'}")
    print("files")
    for f in request.files:
        print(
            f"  #{f.position} {f.status:<9} {f.original_name} ({f.declared_type or '?'}, "
            f"{f.size if f.size is not None else '?'} bytes)"
            + (f" crm file {f.crm_file_id}" if f.crm_file_id else "")
            + (f": {f.error}" if f.error else "")
        )
    return EX_OK


def _public(request: outbox.OutboxRequest, *, reveal: bool = False) -> dict[str, Any]:
    data = asdict(request)
    data.pop("files")
    for name in PERSONAL_FIELDS:
        if not reveal:
            data[name] = "<hidden>" if data[name] is not None else None
    return data


def _drop(settings: Settings, conn: sqlite3.Connection, request_id: int) -> int:
    dropped = outbox.drop(conn, request_id)
    if dropped is None:
        print(
            f"cannot drop request {request_id}: it does not exist or is being sent right now",
            file=sys.stderr,
        )
        return EX_FAILED
    spool = settings.spool_directory
    removed = 0
    for file in dropped.files:
        try:
            removed += int(remove_spool_file(spool, file.path))
        except Exception as error:  # a hostile path must not stop the drop; say so
            print(f"  file #{file.position} left in place: {error}", file=sys.stderr)
    audit.record(
        conn,
        "outbox.drop",
        target=str(request_id),
        details={"status": dropped.status, "files_removed": removed},
    )
    print(f"dropped request {request_id} ({dropped.status}); {removed} spool file(s) removed")
    return EX_OK


_ENQUEUE_KEYS = frozenset({"idempotency_key", *FORM_FIELDS, "files"})
_FILE_KEYS = frozenset({"path", "name", "type"})


def _enqueue(settings: Settings, conn: sqlite3.Connection, path: Path) -> int:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as error:
        print(f"cannot read {path}: {error.strerror}", file=sys.stderr)
        return EX_NOINPUT
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        print(
            f"{path} is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})",
            file=sys.stderr,
        )
        return EX_DATAERR
    intake = build_intake(settings, lambda: conn)
    spool_owner = _owner(intake.options.spool.parent)
    if spool_owner is not None and spool_owner != os.geteuid():
        print(
            f"run this as the owner of {intake.options.spool.parent} (the daemon's user, "
            "e.g. sudo -u syncd syncd outbox enqueue ...): files it copied into the spool "
            "must be the daemon's to delete",
            file=sys.stderr,
        )
        return EX_NOPERM
    try:
        request, files = _parse_request(data)
        key = canonical_key(request.pop("idempotency_key", None), field="idempotency_key")
        receipt = intake.file_request(key, request, files)
    except IntakeError as error:
        print(f"refused: {error}", file=sys.stderr)
        return EX_DATAERR
    except _MissingFile as error:
        print(f"cannot read {error}", file=sys.stderr)
        return EX_NOINPUT
    audit.record(
        conn, "outbox.enqueue", target=str(receipt.id), details={"created": receipt.created}
    )
    print(f"request {receipt.id} {'queued' if receipt.created else 'was already queued'}")
    return EX_OK


class _MissingFile(Exception):
    """A file the request names cannot be read (the message names it: an admin's own path)."""


def _owner(directory: Path) -> int | None:
    try:
        return directory.stat().st_uid
    except FileNotFoundError:
        return None


def _parse_request(data: Any) -> tuple[dict[str, Any], list[IncomingFile]]:
    """The JSON's fields and files; raises IntakeError for a shape the door would refuse."""
    if not isinstance(data, dict):
        raise IntakeError(422, "invalid_request", "the request must be a JSON object")
    unknown = sorted(set(data) - _ENQUEUE_KEYS)
    if unknown:
        raise IntakeError(422, "unknown_field", f"unknown field {unknown[0]!r}")
    fields = {k: (None if v is None else str(v)) for k, v in data.items() if k != "files"}
    entries = data.get("files", [])
    if not isinstance(entries, list):
        raise IntakeError(422, "invalid_files", "must be a list", field="files")
    files = []
    for position, entry in enumerate(entries):
        label = f"files[{position}]"
        if not isinstance(entry, dict) or set(entry) - _FILE_KEYS or "path" not in entry:
            raise IntakeError(
                422, "invalid_files", "must be an object with path, name and type", field=label
            )
        local = Path(str(entry["path"]))
        files.append(
            IncomingFile(
                chunks=_read_chunks(local),
                name=str(entry.get("name") or local.name),
                declared_type=str(entry.get("type") or ""),
            )
        )
    return fields, files


def _read_chunks(path: Path, size: int = 1024 * 1024) -> Iterator[bytes]:
    try:
        handle = path.open("rb")
    except OSError as error:
        raise _MissingFile(f"{path}: {error.strerror}") from None
    with handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise _MissingFile(f"{path}: not a regular file")
        while chunk := handle.read(size):
            yield chunk
