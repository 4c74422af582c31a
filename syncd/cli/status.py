"""``syncd status``: what is healthy and what is not, in one screen (or as JSON)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from syncd.core.clock import iso, parse_iso, utc_now
from syncd.daemon import lock
from syncd.state import control, health, omniva, outbox, vies_cache
from syncd.state.cache import ENTITIES
from syncd.state.db import database
from syncd.state.migrations import current_version, latest_version

QUARANTINE_SHOWN = 5


def collect(conn: sqlite3.Connection, state_dir: Path) -> dict[str, Any]:
    """Everything ``status`` reports, as JSON-able data; ``healthy`` says whether to exit 0."""
    daemon = lock.holder(state_dir)
    jobs = [vars(h) for h in health.load_all(conn)]
    entities = {}
    db = database(conn)
    for entity in ENTITIES:
        cursor = conn.execute("SELECT value FROM cursors WHERE entity = ?", (entity,)).fetchone()
        entities[entity] = {
            "count": db[entity].count,
            "data_as_of": _utc(cursor[0]) if cursor else None,
        }
    quarantine = [
        {"entity": e, "crm_id": i, "reason": r, "last_seen_at": s, "occurrences": n}
        for e, i, r, s, n in conn.execute(
            "SELECT entity, crm_id, reason, last_seen_at, occurrences FROM quarantine "
            "ORDER BY last_seen_at DESC"
        )
    ]
    held = {
        e: n for e, n in conn.execute("SELECT entity, count(*) FROM held_deletes GROUP BY entity")
    }
    held_reasons = {
        e: r
        for e, r in conn.execute("SELECT entity, max(reason) FROM held_deletes GROUP BY entity")
    }
    last_run = conn.execute(
        "SELECT id, kind, finished_at, upserted, deleted, quarantined, held_deletes "
        "FROM sync_runs ORDER BY id DESC LIMIT 1"
    ).fetchone()
    resync = control.open_request(conn)
    progress = {
        row[0]: {"pages": row[1], "records": row[2]}
        for row in conn.execute("SELECT entity, pages, records FROM resync_progress")
    }
    queue = outbox.depth(conn, now=utc_now())
    problems = [
        f"job {j['job']} is {j['state']}: {j['last_error']}"
        for j in jobs
        if j["state"] in ("failing", "stopped")
    ]
    problems += [f"{n} {e} deletions held by the delete guard" for e, n in held.items()]
    vies = vies_cache.stats(conn, utc_now())
    problems += [
        f"VIES circuit open ({c['scope']}): VIES answered {c['reason']}; no VIES calls until "
        f"{c['open_until']}"
        for c in vies["open_circuits"]
    ]
    parcel_list = omniva.list_state(conn)
    if daemon is None:
        problems.append("no daemon is running")
    if queue["by_status"]["dead"]:
        problems.append(
            f"{queue['by_status']['dead']} service request(s) dead in the outbox "
            "(syncd outbox list --status dead)"
        )
    return {
        "healthy": not problems,
        "problems": problems,
        "daemon": daemon,
        "cache": {
            "path": str(state_dir / "cache.sqlite3"),
            "schema_version": current_version(conn),
            "schema_expected": latest_version(),
        },
        "jobs": jobs,
        "entities": entities,
        "last_run": dict(
            zip(
                ("id", "kind", "finished_at", "upserted", "deleted", "quarantined", "held_deletes"),
                last_run,
                strict=True,
            )
        )
        if last_run
        else None,
        "quarantine": {"count": len(quarantine), "records": quarantine},
        "held_deletes": {e: {"count": n, "reason": held_reasons[e]} for e, n in held.items()},
        "resync": vars(resync) if resync else None,
        "resync_in_progress": progress,
        "outbox": queue,
        "vies": vies,
        "omniva": {
            "records": parcel_list.record_count,
            "skipped": parcel_list.skipped_count,
            "updated_at": parcel_list.updated_at,
            "checked_at": parcel_list.checked_at,
            "age_seconds": _age_seconds(parcel_list.updated_at),
            "refused_at": parcel_list.refused_at,
            "refused_reason": parcel_list.refused_reason,
            "counts": omniva.counts(conn),
        },
    }


def _age_seconds(stamp: str | None) -> int | None:
    if not stamp:
        return None
    return int((utc_now() - parse_iso(stamp)).total_seconds())


def render(report: dict[str, Any]) -> str:
    """The human-readable screen."""
    lines = [f"syncd status: {'HEALTHY' if report['healthy'] else 'NEEDS ATTENTION'}"]
    cache = report["cache"]
    lines.append(f"cache   {cache['path']} (schema {cache['schema_version']})")
    holder = report["daemon"]
    if holder is None:
        lines.append("daemon  not running")
    elif "daemon" in holder:
        lines.append(f"daemon  {holder}")
    else:  # the lock is held by a foreground resync (syncd --resync with no daemon running)
        lines.append(f"daemon  not running; a foreground resync is running ({holder})")
    lines.append("")
    lines.append("jobs")
    if not report["jobs"]:
        lines.append("  (no job has run yet)")
    for job in report["jobs"]:
        line = f"  {job['job']:<12} {job['state']:<8} last success {_ago(job['last_success_at'])}"
        if job["state"] in ("failing", "stopped"):
            line += f"; {job['consecutive_failures']} failure(s), last: {job['last_error']}"
            wait = _seconds_until(job["next_run_at"])
            if job["state"] == "failing" and wait is not None:
                line += f"; next try in {wait}s" if wait > 0 else "; next try at its next run"
        lines.append(line)
    lines.append("")
    lines.append("data")
    for entity, info in report["entities"].items():
        lines.append(f"  {entity:<10} {info['count']:>9,}  as of {info['data_as_of'] or 'never'}")
    if report["last_run"]:
        run = report["last_run"]
        lines.append(
            f"  last cycle #{run['id']} ({run['kind']}) finished {_ago(run['finished_at'])}: "
            f"{run['upserted']} changed, {run['deleted']} deleted"
        )
    queue = report["outbox"]
    counts = ", ".join(f"{n} {s}" for s, n in queue["by_status"].items() if n) or "empty"
    age = queue["oldest_undelivered_age_seconds"]
    lines.append("")
    lines.append(f"outbox  {counts}" + (f"; oldest undelivered {age:.0f}s old" if age else ""))
    lines.extend(_render_services(report))
    quarantine = report["quarantine"]
    if quarantine["count"]:
        lines.append("")
        lines.append(f"quarantined records: {quarantine['count']}")
        for item in quarantine["records"][:QUARANTINE_SHOWN]:
            lines.append(f"  {item['entity']} {item['crm_id']}: {item['reason']}")
        if quarantine["count"] > QUARANTINE_SHOWN:
            lines.append("  ... (syncd status --json lists all)")
    if report["held_deletes"]:
        lines.append("")
        lines.append("held deletions (the delete guard refused them)")
        for entity, info in report["held_deletes"].items():
            lines.append(f"  {entity}: {info['count']} - {info['reason']}")
            lines.append(
                f"    review, then: syncd deletes apply {entity}  "
                f"(or: syncd deletes discard {entity})"
            )
    if report["resync"]:
        r = report["resync"]
        total = f"/{r['progress_total']}" if r["progress_total"] else ""
        lines.append("")
        lines.append(
            f"resync #{r['id']} ({r['entity']}) {r['status']}: {r['progress_done']}{total} records"
        )
    elif report["resync_in_progress"]:
        staged = ", ".join(
            f"{e} ({p['records']} records staged)" for e, p in report["resync_in_progress"].items()
        )
        lines.append("")
        if holder is not None and "daemon" not in holder:
            lines.append(f"a full resync is running in the foreground: {staged}")
        elif holder is not None:
            lines.append(f"a full resync is in progress: {staged}")
        else:
            lines.append(f"an interrupted full resync resumes when the daemon starts: {staged}")
    if report["problems"]:
        lines.append("")
        lines.append("problems")
        lines.extend(f"  - {p}" for p in report["problems"])
    return "\n".join(lines)


def _render_services(report: dict[str, Any]) -> list[str]:
    vies = report["vies"]
    ratio = vies["hit_ratio"]
    lookups = vies["lookups_24h"]
    shown_lookups = (
        "no lookups in 24 h"
        if not lookups
        else f"{lookups:,} lookup(s) in 24 h"
        + ("" if ratio is None else f", hit ratio {ratio:.0%}")
    )
    lines = [f"vies    {vies['entries']:,} cached answer(s); {shown_lookups}"]
    lines.extend(
        f"        circuit OPEN ({c['scope']}, {c['reason']}) until {c['open_until']}"
        for c in vies["open_circuits"]
    )
    parcels = report["omniva"]
    if not parcels["records"]:
        lines.append("omniva  no parcel-machine list loaded yet")
    else:
        per_country = "; ".join(
            f"{country} "
            + ", ".join(f"{n} {kind.replace('_', ' ')}s" for kind, n in kinds.items() if n)
            for country, kinds in sorted(parcels["counts"].items())
        )
        lines.append(
            f"omniva  {parcels['records']:,} locations, list from {_ago(parcels['updated_at'])}, "
            f"checked {_ago(parcels['checked_at'])}"
        )
        lines.append(f"        {per_country}")
    if parcels["refused_at"]:
        lines.append(
            f"        last refused download {_ago(parcels['refused_at'])}: "
            f"{parcels['refused_reason']} (the stored list was kept)"
        )
    return lines


def _seconds_until(stamp: str | None) -> int | None:
    """Whole seconds from now until ``stamp`` (negative when past), or None."""
    if not stamp:
        return None
    return int((parse_iso(stamp) - utc_now()).total_seconds())


def _utc(value: str) -> str:
    return iso(parse_iso(value))


def _ago(stamp: str | None) -> str:
    if not stamp:
        return "never"
    seconds = int((utc_now() - parse_iso(stamp)).total_seconds())
    if seconds < 120:
        return f"{stamp} ({seconds}s ago)"
    if seconds < 7200:
        return f"{stamp} ({seconds // 60} min ago)"
    return f"{stamp} ({seconds // 3600} h ago)"
