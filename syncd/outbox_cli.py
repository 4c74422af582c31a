"""``syncd outbox list|show|retry|drop|enqueue``: the operator's view of the outbox."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from state import audit, outbox
from syncd.config import Settings
from syncd.spool import remove_spool_file

EX_OK, EX_FAILED, EX_USAGE, EX_DATAERR, EX_NOINPUT = 0, 1, 64, 65, 66
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
        help="insert a request from a JSON file",
        description="Validate FILE as the outbox contract says and insert "
        "it exactly as the portal would (docs/portal-contract"
        ".md). An already queued idempotency key is not "
        "inserted twice.",
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
        count = outbox.retry(conn, None if args.all_dead else args.id, now=_now())
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


def _now() -> datetime:
    return datetime.now(UTC)


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
    spool = settings.outbox.spool_directory or settings.state.default_spool
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
    try:
        request_id, created = outbox.enqueue(
            conn, data, request_types=frozenset(settings.outbox.request_types), now=_now()
        )
    except outbox.OutboxValidationError as error:
        print(f"refused: {error}", file=sys.stderr)
        return EX_DATAERR
    audit.record(conn, "outbox.enqueue", target=str(request_id), details={"created": created})
    print(f"request {request_id} {'queued' if created else 'was already queued'}")
    return EX_OK
