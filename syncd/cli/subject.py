"""``syncd subject export|erase|unsuppress|restrict|unrestrict``: a data subject's rights of
access and portability, erasure and restriction, as the privacy policy promises them
(docs/privacy.md, "Subject requests").

Local only: no command here calls the CRM or any other upstream. Every command is audited,
naming no personal data. A selector's value is never repeated in a message: it is what the
person asked about.

Exit codes: 0 done, 1 nothing matched (restrict, unsuppress), 64 usage, 65 a selector that is
not what it says, 73 the output file exists, 75 busy (a request of the subject is being sent),
77 not run as the owner of the state directory (erase).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from syncd.config import Settings
from syncd.core.clock import utc_now
from syncd.core.identifiers import (
    KIND_NAMES,
    InvalidIdentifierError,
    Normaliser,
    Selector,
    SelectorKind,
    check_region,
)
from syncd.state import audit

EX_OK, EX_NOTHING, EX_USAGE, EX_DATAERR, EX_CANTCREAT, EX_TEMPFAIL, EX_NOPERM = (
    0, 1, 64, 65, 73, 75, 77,
)
_SELECTORS: tuple[tuple[str, SelectorKind, str, str], ...] = (
    ("--email", "email", "ADDR", "an e-mail address (compared ignoring letter case)"),
    ("--phone", "phone", "NUMBER", "a phone number, in any format (compared in E.164; without "
     "a leading + it is read as a number of --region)"),
    ("--crm-contact", "crm_contact", "ID", "a contact's CRM ID (cached or not)"),
    ("--vat", "vat", "NUMBER", "a company's VAT number with its country prefix (cleaned as "
     "`syncd vat` cleans it)"),
)
CRM_NOTICE = (
    "The CRM is the source of this data and still holds it: delete the record(s) there, as the "
    "privacy policy says. Until the CRM no longer has them, the mirror will not bring them back "
    "(suppressed); the suppression ends by itself when the CRM deletes them, or with "
    "`syncd subject unsuppress`."
)


def add_parser(commands: Any) -> None:
    """Register ``subject`` and its actions on the main parser's subparsers."""
    parser = commands.add_parser(
        "subject",
        help="answer a data subject's request: export, erase, restrict",
        description="A person's (or a company's) rights under the privacy policy, for the data "
        "syncd holds: access and portability (export), erasure (with a suppression that keeps "
        "the mirror from bringing them back until the CRM deletes them), restriction. Select "
        "the subject with exactly one of --email, --phone, --crm-contact or --vat. Local only: "
        "no upstream is called. Every action is audited without personal data. "
        "docs/privacy.md explains what is matched and what each action does.",
    )
    sub = parser.add_subparsers(dest="subject_command", metavar="ACTION", required=True)
    export = sub.add_parser(
        "export",
        help="everything syncd holds about the subject, as JSON",
        description="Collect everything syncd holds about the subject from every store (the "
        "mirrored contacts, companies and devices, service requests and their files' metadata, "
        "VIES answers, restrictions, audit entries naming them, ...), each item with its store "
        "and time, and the mirror's 'data as of'. The JSON document follows "
        "docs/subject-export.schema.json. Without --format json or --output, prints counts "
        "per store only.",
    )
    _selector_options(export)
    export.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: counts per store (no personal data); json: the export document on stdout "
        "(default: text)",
    )
    export.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="write the JSON document to FILE (created with mode 0600; an existing file is "
        "never overwritten: exit 73)",
    )
    erase = sub.add_parser(
        "erase",
        help="remove the subject's data from syncd (dry run unless --yes)",
        description="Remove the subject's data from syncd's own stores in one transaction: "
        "cached CRM records, the devices only they are linked to, their service requests and "
        "spool files, VIES answers, restriction and satellite rows; audit entries naming them "
        "keep their action and time but no longer name them. A suppression (keyed hashes, "
        "never the values) keeps the mirror from bringing them back until the CRM deletes "
        "them. Without --yes, only shows what would go. Run it as the daemon's user "
        "(sudo -u syncd). Exits 75 while one of their requests is being sent, 77 when not "
        "run as the state directory's owner.",
    )
    _selector_options(erase)
    erase.add_argument("--yes", action="store_true", help="really erase (default: a dry run)")
    unsuppress = sub.add_parser(
        "unsuppress",
        help="lift the suppression of an erased subject",
        description="Lift the suppression an erasure recorded for the subject (all of that "
        "erasure's suppressions), so that the mirror brings their records back from the CRM "
        "at its next ID sweep or full resync if the CRM still has them. --all lifts every "
        "suppression (for instance after the suppression key was lost). Exits 1 when nothing "
        "matched.",
    )
    _selector_options(unsuppress, allow_all=True)
    for name, verb, effect in (
        ("restrict", "restrict", "shows the contact as restricted to the portal (the "
         "contacts.restricted column) and refuses new service requests for them"),
        ("unrestrict", "lift the restriction of", "lifts the restriction"),
    ):
        action = sub.add_parser(
            name,
            help=f"{verb} the processing of a contact's data",
            description=f"{verb.capitalize()} the processing of the selected contacts' data: "
            f"{effect}. --email and --phone select the cached contacts holding the identifier; "
            "--crm-contact works for a contact the cache does not have (yet). Audited. Exits 1 "
            "when no contact matched.",
        )
        _selector_options(action, contacts_only=True)


def _selector_options(
    parser: argparse.ArgumentParser, *, allow_all: bool = False, contacts_only: bool = False
) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    for option, kind, metavar, text in _SELECTORS:
        if contacts_only and kind == "vat":
            continue
        group.add_argument(option, dest=f"select_{kind}", metavar=metavar, help=text)
    if allow_all:
        group.add_argument("--all", action="store_true", help="every suppression")
    parser.add_argument(
        "--region",
        type=_region,
        metavar="CC",
        help="the region of phone numbers written without + (ISO 3166-1 alpha-2; default: "
        "privacy.default_phone_region)",
    )


def _region(value: str) -> str:
    try:
        return check_region(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# -- running --------------------------------------------------------------------------------------


def run(settings: Settings, conn: sqlite3.Connection, args: argparse.Namespace) -> int:
    """Dispatch one ``subject`` action; returns the exit code."""
    from syncd.engines.subjects import build_normaliser

    normaliser = build_normaliser(args.region or settings.privacy.default_phone_region)
    action = args.subject_command
    if action == "unsuppress" and args.all:
        return _unsuppress(conn, None)
    try:
        selector = _selector(args, normaliser)
    except InvalidIdentifierError as error:
        print(f"syncd subject {action}: {error}", file=sys.stderr)
        return EX_DATAERR
    if action == "export":
        return _export(conn, selector, normaliser, args)
    if action == "erase":
        return _erase(settings, conn, selector, normaliser, confirmed=args.yes)
    if action == "unsuppress":
        return _unsuppress(conn, selector)
    return _restrict(conn, selector, normaliser, lift=action == "unrestrict")


def _selector(args: argparse.Namespace, normaliser: Normaliser) -> Selector:
    for _option, kind, _metavar, _text in _SELECTORS:
        raw = getattr(args, f"select_{kind}", None)
        if raw is not None:
            return normaliser.selector(kind, raw)
    raise AssertionError("argparse requires one selector")


def _export(
    conn: sqlite3.Connection, selector: Selector, normaliser: Normaliser, args: argparse.Namespace
) -> int:
    from syncd.engines.subjects import export_document

    document = export_document(conn, selector, normaliser, now=utc_now())
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if args.output is not None:
        try:
            fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            print(f"syncd subject export: {args.output} exists; not overwritten", file=sys.stderr)
            return EX_CANTCREAT
        except OSError as error:
            print(f"syncd subject export: cannot create {args.output}: {error.strerror}",
                  file=sys.stderr)
            return EX_CANTCREAT
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    audit.record(conn, "subject.export", details={
        "selector": selector.kind, "items": len(document["items"]),
        "to": "file" if args.output is not None else args.format,
    })
    if args.format == "json" and args.output is None:
        sys.stdout.write(text)
        return EX_OK
    print(_summary(document))
    if args.output is not None:
        print(f"written to {args.output} (mode 0600)")
    else:
        print("the document itself: --format json, or --output FILE")
    return EX_OK


def _summary(document: dict[str, Any]) -> str:
    what = KIND_NAMES[document["selector"]["kind"]]
    lines = [f"export by {what}: {len(document['items'])} item(s)"]
    for store, count in document["counts"].items():
        lines.append(f"  {store:<22} {count}")
    if not document["items"]:
        lines.append("  syncd holds nothing about this subject")
    as_of = ", ".join(f"{e} {t or 'never mirrored'}" for e, t in document["data_as_of"].items())
    lines.append(f"data as of: {as_of}")
    return "\n".join(lines)


def _erase(
    settings: Settings,
    conn: sqlite3.Connection,
    selector: Selector,
    normaliser: Normaliser,
    *,
    confirmed: bool,
) -> int:
    from syncd.engines.subjects import erase, preview
    from syncd.state.subjects import SubjectBusyError

    if not confirmed:
        scope, counts = preview(conn, selector, normaliser)
        return _dry_run(scope, counts)
    state_dir = settings.state.directory
    owner = _owner(state_dir)
    if owner is not None and owner != os.geteuid():
        print(
            f"syncd subject erase: run this as the owner of {state_dir} (the daemon's user, e.g. "
            "sudo -u syncd syncd subject erase ...): the suppression key it may create must be "
            "the daemon's to read",
            file=sys.stderr,
        )
        return EX_NOPERM
    try:
        result = erase(conn, selector, normaliser, spool=settings.spool_directory, now=utc_now())
    except SubjectBusyError as error:
        print(f"syncd: busy: {error}", file=sys.stderr)
        return EX_TEMPFAIL
    if not result.counts:
        print("nothing to erase: syncd holds nothing about this subject")
        return EX_OK
    print("erased (rows per store; the audit log's entries were rewritten, not removed):")
    for store, count in result.counts.items():
        if store != "subject_suppressions":
            print(f"  {store:<22} {count}")
    hashes = result.counts.get("subject_suppressions", 0)
    if hashes:
        print(f"suppression: {hashes} keyed hash(es) recorded; the mirror keeps "
              f"{result.suppressed} CRM record(s) out until the CRM deletes them")
    print(f"spool files removed: {result.files_removed}")
    for problem in result.file_errors:
        print(f"  {problem}", file=sys.stderr)
    if result.crm_records:
        records = "; ".join(f"{e} {', '.join(ids)}" for e, ids in result.crm_records.items())
        print(f"CRM records to delete in the CRM: {records}")
        print(CRM_NOTICE)
    return EX_OK if not result.file_errors else EX_NOTHING


def _dry_run(scope: Any, counts: dict[str, int]) -> int:
    if not counts and not any(scope.erased().values()):
        print("dry run: nothing to erase; syncd holds nothing about this subject")
        return EX_OK
    print("dry run: an erasure would remove (rows per store; audit entries are rewritten):")
    for store, count in counts.items():
        print(f"  {store:<22} {count}")
    records = {e: len(ids) for e, ids in scope.erased().items() if ids}
    if records:
        listed = ", ".join(f"{e} {n}" for e, n in records.items())
        print(f"and suppress {sum(records.values())} CRM record(s) ({listed}) until the CRM "
              "deletes them")
    if scope.carriers:
        print(f"kept: {len(scope.carriers)} company record(s) that also hold this identifier "
              "(a company's record is not the person's; change it in the CRM if it must go)")
    shared = len(scope.devices - scope.owned_devices)
    if shared:
        print(f"kept: {shared} device(s) linked to others too (only the link to the subject "
              "goes)")
    print("nothing changed; run again with --yes to erase")
    return EX_OK


def _unsuppress(conn: sqlite3.Connection, selector: Selector | None) -> int:
    from syncd.engines.subjects import unsuppress

    lifted = unsuppress(conn, selector, everything=selector is None)
    audit.record(conn, "subject.unsuppress", details={
        "selector": "all" if selector is None else selector.kind, "lifted": lifted,
    })
    if not lifted:
        print("no suppression matches")
        return EX_NOTHING
    listed = ", ".join(f"{e} {n}" for e, n in sorted(lifted.items()))
    print(f"lifted the suppression of {sum(lifted.values())} erased record(s) ({listed}); the "
          "mirror brings them back at its next ID sweep or full resync if the CRM still has "
          "them")
    return EX_OK


def _restrict(
    conn: sqlite3.Connection, selector: Selector, normaliser: Normaliser, *, lift: bool
) -> int:
    from syncd.state import restrictions
    from syncd.state.subjects import contact_ids

    ids = sorted(contact_ids(conn, selector, normaliser))
    if not ids:
        print(f"no cached contact holds this {selector.what}; use --crm-contact ID for a "
              "contact the cache does not have", file=sys.stderr)
        return EX_NOTHING
    now = utc_now()
    for contact_id in ids:
        if lift:
            changed = restrictions.unrestrict(conn, contact_id)
        else:
            changed = restrictions.restrict(conn, contact_id, now=now)
        audit.record(conn, "subject.unrestrict" if lift else "subject.restrict",
                     target=f"contacts record {contact_id}", details={"changed": changed})
        if lift:
            print(f"contact {contact_id}: " + ("restriction lifted" if changed
                                               else "was not restricted"))
        else:
            print(f"contact {contact_id}: " + ("restricted" if changed else "already restricted"))
    return EX_OK


def _owner(directory: Path) -> int | None:
    try:
        return directory.stat().st_uid
    except FileNotFoundError:
        return None
