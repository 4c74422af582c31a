"""The demo's privacy chapter: a person's rights answered with ``syncd subject`` (export,
restriction, erasure that the mirror respects until the CRM deletes them) and the retention job.

It prints counts and CRM IDs only: the person's data stays in the cache and the export, never in
the demo's output or log.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta

from rich.console import Console

from syncd.config import Settings
from syncd.connectors.crm.vendor import FakeCrm
from syncd.core.clock import utc_now
from syncd.core.entities import Entity
from syncd.engines.retention import purge_all
from syncd.engines.subjects import build_normaliser, erase, export_document
from syncd.runtime import build_engine, retention_options
from syncd.state import restrictions


def privacy_story(
    console: Console, fake: FakeCrm, settings: Settings, conn: sqlite3.Connection
) -> bool:
    """Run the chapter; True when every right was answered as documented."""
    console.rule("11. a person's rights: export, restriction, erasure; retention")
    found = _person_with_request(conn)
    if found is None:
        console.print("[red]no mirrored contact with an e-mail address filed a request[/red]")
        return False
    contact_id, email = found
    normaliser = build_normaliser(settings.privacy.default_phone_region)
    # Asked as the person wrote it to the company: the address in capitals is the same address.
    selector = normaliser.selector("email", email.upper())
    document = export_document(conn, selector, normaliser, now=utc_now())
    counts = ", ".join(f"{store} {n}" for store, n in document["counts"].items())
    console.print(
        f"contact {contact_id} asks what syncd holds: [bold]syncd subject export --email "
        f"ADDRESS --format json[/bold] (their address in capitals matches): {counts}"
    )
    exported_ok = document["counts"].get("contacts") == 1 and "outbox_requests" in document[
        "counts"
    ]

    restrictions.restrict(conn, contact_id, now=utc_now())
    flag = _restricted_flag(conn, contact_id)
    console.print(
        f"they restrict processing: [bold]syncd subject restrict --crm-contact {contact_id}"
        f"[/bold]; the portal reads contacts.restricted = {flag} and the API refuses their "
        "service requests (409 contact_restricted)"
    )

    result = erase(conn, selector, normaliser, spool=settings.spool_directory, now=utc_now())
    erased = ", ".join(
        f"{store} {n}" for store, n in result.counts.items() if store != "subject_suppressions"
    )
    console.print(
        f"then erasure: [bold]syncd subject erase --email ADDRESS --yes[/bold] removed {erased} "
        f"in one transaction; {result.suppressed} CRM record(s) suppressed by "
        f"{result.counts.get('subject_suppressions', 0)} keyed hash(es), never the values"
    )
    engine = build_engine(settings, conn)
    try:
        engine.sweep()
        back = _cached(conn, contact_id)
        console.print(
            f"the CRM still has contact {contact_id}; after an ID sweep the cache has it: "
            f"{'yes' if back else 'no'} (suppressed until the CRM deletes it)"
        )
        fake.delete(Entity.CONTACTS, contact_id)
        engine.sweep()
        left = _suppressions(conn)
    finally:
        engine.adapter.close()
    console.print(
        f"the operator deletes it in the CRM, as the policy says; the next sweep lifts the "
        f"suppression ({left} left)"
    )

    later = utc_now() + timedelta(days=8)
    report = purge_all(conn, retention_options(settings), now=later)
    console.print(
        "eight days on, the retention job (every "
        f"{settings.retention.purge_interval_minutes:g} min) runs: "
        f"{report.summary() or 'nothing was due'}"
    )
    return exported_ok and flag == 1 and not back and left == 0


def _person_with_request(conn: sqlite3.Connection) -> tuple[str, str] | None:
    """A mirrored contact with an e-mail address who filed a service request in chapter 6."""
    row = conn.execute(
        "SELECT c.crm_id, c.emails FROM contacts c "
        "JOIN outbox_requests r ON r.contact_crm_id = c.crm_id "
        "WHERE json_array_length(c.emails) > 0 ORDER BY r.id LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    emails = json.loads(row[1])
    return str(row[0]), str(emails[0]["value"])


def _restricted_flag(conn: sqlite3.Connection, contact_id: str) -> int:
    row = conn.execute("SELECT restricted FROM contacts WHERE crm_id = ?", (contact_id,)).fetchone()
    return int(row[0]) if row else -1


def _cached(conn: sqlite3.Connection, contact_id: str) -> bool:
    found = conn.execute("SELECT 1 FROM contacts WHERE crm_id = ?", (contact_id,)).fetchone()
    return found is not None


def _suppressions(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM subject_suppressions").fetchone()[0])


__all__ = ["privacy_story"]
