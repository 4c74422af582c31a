"""The ``syncd`` command line.

Exit codes follow sysexits where they fit: 0 success, 1 unhealthy/failed, 64 usage,
65 bad input data, 66 no such input, 69 upstream unavailable, 70 internal error, 75 busy (try
again later), 78 configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from syncd import __version__
from syncd.core.errors import ConfigError, FatalError, ResyncBusyError, RetriableError
from syncd.core.identifiers import CRM_ID_PATTERN

EX_OK, EX_UNHEALTHY, EX_USAGE, EX_UNAVAILABLE, EX_SOFTWARE, EX_TEMPFAIL, EX_CONFIG = (
    0,
    1,
    64,
    69,
    70,
    75,
    78,
)
RESYNC_TARGETS = ("contacts", "companies", "devices", "all", "documents")
log = logging.getLogger("syncd")


class _Parser(argparse.ArgumentParser):
    """argparse with sysexits: a usage error exits 64 (EX_USAGE), not argparse's 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def _record_id(value: str) -> str:
    if not CRM_ID_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(
            "must be a CRM record ID (letters, digits, '-' or '_', at most 64 characters)"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="syncd",
        description="CRM synchronisation daemon for the Baltic Lasers client portal: mirrors the "
        "CRM into a local SQLite cache the portal reads, delivers service requests, validates "
        "VAT numbers at VIES and keeps Omniva's parcel-machine list.",
        epilog="Exit codes: 0 ok, 1 unhealthy or failed, 64 usage, 65 bad input data, 66 no such "
        "input, 69 upstream unavailable, 70 internal error, 75 busy (try again), "
        "78 configuration error.",
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML configuration file (default: $SYNCD_CONFIG, else built-in defaults)",
    )
    parser.add_argument(
        "--resync",
        choices=RESYNC_TARGETS,
        metavar="ENTITY",
        help="resync ENTITY (contacts, companies, devices, all, or documents: the "
        "SharePoint libraries): through the running daemon, or in the foreground when none "
        "runs",
    )
    parser.add_argument(
        "--library",
        metavar="NAME",
        help="with --resync documents: only this document library (its name in "
        "[[sharepoint.libraries]])",
    )
    parser.add_argument(
        "--record",
        metavar="ID",
        type=_record_id,
        help="with --resync: only this CRM record (re-fetched; removed from the "
        "cache if the CRM no longer has it)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="with --resync: print only the result as JSON on stdout (progress and prose go to "
        "stderr)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    commands.add_parser(
        "run",
        help="run the daemon (what the systemd unit starts)",
        description="Run the daemon until SIGTERM/SIGINT: scheduled mirror "
        "cycles, ID sweeps, full resyncs and requested resyncs.",
    )
    status = commands.add_parser(
        "status",
        help="show health, data freshness and problems",
        description="Per-job health, per-entity counts and 'data as "
        "of', quarantined records, held deletions. Exits 1 "
        "when something needs attention.",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    check = commands.add_parser(
        "check-config",
        help="validate the configuration and print it",
        description="Validate settings, credentials and mapping files; "
        "print the effective configuration with secrets "
        "redacted. Exits 78 on a bad configuration (anything 'run' would refuse); with "
        "--online, 69 when an upstream is unreachable or refuses syncd's credentials.",
    )
    check.add_argument("--json", action="store_true", help="print JSON instead of TOML-like text")
    check.add_argument(
        "--online",
        action="store_true",
        help="also make one cheap call to each configured upstream (CRM, VIES, Omniva) and say "
        "which is unreachable or refuses the credentials (exit 69 if any)",
    )
    demo = commands.add_parser(
        "demo",
        help="run the demo against a built-in fake CRM",
        description="Start a fake Bitrix24 on loopback with a seeded "
        "dataset, mirror it, change it, mirror again, resync, "
        "and show what happened.",
    )
    demo.add_argument(
        "--dir",
        type=Path,
        default=Path("demo-data"),
        help="where the demo keeps its cache (default: ./demo-data)",
    )
    demo.add_argument("--contacts", type=int, default=2000, help="contacts to seed (default 2000)")
    from syncd.cli.outbox import add_parser as add_outbox_parser

    add_outbox_parser(commands)
    from syncd.cli.vat import add_parser as add_vat_parser

    add_vat_parser(commands)
    from syncd.cli.subject import add_parser as add_subject_parser

    add_subject_parser(commands)
    deletes = commands.add_parser(
        "deletes",
        help="review or apply deletions the guard held",
        description="The delete guard holds sweeps that would delete "
        "too much; list them, apply them or discard them.",
    )
    deletes.add_argument(
        "action",
        choices=("list", "apply", "discard"),
        help="list held deletions, apply them, or discard them",
    )
    deletes.add_argument(
        "entity",
        nargs="?",
        choices=("contacts", "companies", "devices"),
        help="the entity (required for apply and discard)",
    )
    deletes.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resync and args.command:
        parser.error("--resync cannot be combined with a command")
    if args.json and not args.resync and args.command is None:
        parser.error("--json before a command needs --resync; put it after the command")
    if args.record and not args.resync:
        parser.error("--record needs --resync ENTITY")
    if args.record and args.resync in ("all", "documents"):
        parser.error(f"--record needs a single CRM entity, not {args.resync!r}")
    if args.library and args.resync != "documents":
        parser.error("--library needs --resync documents")
    if not args.resync and not args.command:
        parser.print_help()
        return EX_USAGE
    try:
        return _dispatch(args)
    except ConfigError as error:
        print(f"syncd: configuration error: {error}", file=sys.stderr)
        return EX_CONFIG
    except ResyncBusyError as error:
        print(f"syncd: busy: {error}", file=sys.stderr)
        return EX_TEMPFAIL
    except RetriableError as error:
        print(f"syncd: upstream unavailable: {error}", file=sys.stderr)
        return EX_UNAVAILABLE
    except FatalError as error:
        print(f"syncd: {error}", file=sys.stderr)
        return EX_UNHEALTHY
    except KeyboardInterrupt:
        print("syncd: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from syncd.demo.story import run_demo

        exit_code: int = run_demo(args.dir, contacts=args.contacts)
        return exit_code
    from syncd.config import load_settings
    from syncd.logging_setup import configure_logging

    settings = load_settings(args.config)
    configure_logging(settings.log.level, settings.log.format)
    if args.command == "check-config":
        return _check_config(settings, as_json=args.json, online=args.online)
    if args.command == "run":
        from syncd.daemon.service import Daemon

        settings.check_complete()
        return Daemon(settings).run()
    if args.command == "vat":
        from syncd.cli.vat import run as run_vat

        return run_vat(settings, args)
    from syncd.runtime import open_cache
    from syncd.state.db import close as close_cache

    conn = open_cache(settings)
    try:
        if args.resync:
            from syncd.cli.resync import run_resync

            return run_resync(
                settings,
                conn,
                args.resync,
                args.library if args.resync == "documents" else args.record,
                out=sys.stderr if args.json else sys.stdout,
                emit_json=_print_json if args.json else None,
            )
        if args.command == "status":
            from syncd.cli.status import collect, render

            report = collect(conn, settings.state.cache_path.parent, settings.retention)
            if args.json:
                _print_json(report)
            else:
                print(render(report))
            return EX_OK if report["healthy"] else EX_UNHEALTHY
        if args.command == "outbox":
            from syncd.cli.outbox import run as run_outbox

            return run_outbox(settings, conn, args)
        if args.command == "deletes":
            return _deletes(conn, args)
        if args.command == "subject":
            from syncd.cli.subject import run as run_subject

            return run_subject(settings, conn, args)
    finally:
        close_cache(conn)
    raise AssertionError(f"unhandled command {args.command}")


def _check_config(settings: Any, *, as_json: bool, online: bool = False) -> int:
    from syncd.runtime import load_mappings

    settings.check_complete()
    mappings = load_mappings(settings)
    effective = settings.redacted()
    effective["mappings"] = {
        e: f"mappings/{mappings.vendor}/{e}.toml (valid)" for e in mappings.entities
    }
    failed = False
    if online:
        from syncd.cli.online_check import check_upstreams

        results = check_upstreams(settings)
        failed = not all(r.ok for r in results)
    if as_json:
        if online:
            effective["online"] = {r.upstream: {"ok": r.ok, "detail": r.detail} for r in results}
        _print_json(effective)
    else:
        for section, values in effective.items():
            _print_table(section, values)
        if online:
            for result in results:
                print(f"{'ok  ' if result.ok else 'FAIL'} {result.upstream}: {result.detail}")
        print("configuration OK" + ("; an upstream check failed" if failed else ""))
    return EX_UNAVAILABLE if failed else EX_OK


def _print_table(name: str, values: Any) -> None:
    """One TOML-like table of the effective configuration; a nested table (the CRM vendor's
    own) follows as ``[crm.<vendor>]``."""
    print(f"[{name}]")
    if not isinstance(values, dict):
        print(json.dumps(values, default=str))
        print()
        return
    nested = {key: value for key, value in values.items() if isinstance(value, dict)}
    for key, value in values.items():
        if key not in nested:
            print(f"{key} = {json.dumps(value, default=str)}")
    print()
    for key, value in nested.items():
        _print_table(f"{name}.{key}", value)


def _deletes(conn: Any, args: argparse.Namespace) -> int:
    from syncd.core.entities import Entity
    from syncd.state import audit
    from syncd.state.cache import CacheStore

    store = CacheStore(conn)
    if args.action == "list":
        held = {e.value: store.held_deletes(e) for e in Entity}
        held = {e: ids for e, ids in held.items() if ids}
        if args.json:
            _print_json(held)
        elif not held:
            print("no held deletions")
        else:
            for entity, ids in held.items():
                shown = ", ".join(ids[:20]) + (" ..." if len(ids) > 20 else "")
                print(f"{entity}: {len(ids)} held: {shown}")
        return EX_OK
    if not args.entity:
        print(f"syncd: deletes {args.action} needs an entity", file=sys.stderr)
        return EX_USAGE
    entity = Entity(args.entity)
    if args.action == "discard":
        count = store.clear_held_deletes(entity)
        audit.record(conn, "deletes.discard", target=entity.value, details={"count": count})
        print(f"discarded {count} held {entity.value} deletions (the next sweep re-checks)")
        return EX_OK
    from syncd.engines.mirror import apply_held_deletes

    count = apply_held_deletes(conn, entity)
    audit.record(conn, "deletes.apply", target=entity.value, details={"count": count})
    print(f"applied {count} held {entity.value} deletions")
    return EX_OK


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


if __name__ == "__main__":
    sys.exit(main())
