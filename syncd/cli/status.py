"""``syncd status``: what is healthy and what is not, in one screen (or as JSON)."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from syncd.cli.jsonable import jsonable
from syncd.config import RetentionSettings
from syncd.core.clock import iso, iso_or_none, parse_iso, utc_now
from syncd.daemon import lock
from syncd.engines.retention import store_health
from syncd.state import overview, restrictions, suppressions

QUARANTINE_SHOWN = 5
DATA_QUALITY_SHOWN = 10


def collect(
    conn: sqlite3.Connection, state_dir: Path, retention: RetentionSettings | None = None
) -> dict[str, Any]:
    """Everything ``status`` reports, as JSON-able data; ``healthy`` says whether to exit 0.

    ``retention`` gives the stores' windows (the defaults when not given)."""
    daemon = lock.holder(state_dir)
    now = utc_now()
    seen = overview.read(conn, now)
    jobs = [jsonable(h) for h in seen.jobs]
    entities = {
        entity: {"count": figures.records, "data_as_of": iso_or_none(figures.data_as_of)}
        for entity, figures in seen.entities.items()
    }
    quarantine = [
        {
            "entity": q.entity,
            "crm_id": q.crm_id,
            "reason": q.reason,
            "last_seen_at": iso(q.last_seen_at),
            "occurrences": q.occurrences,
        }
        for q in seen.quarantined
    ]
    data_quality = [
        {
            "entity": d.entity,
            "message": d.message,
            "records": d.records,
            "examples": list(d.examples),
            "first_seen_at": iso(d.first_seen),
            "last_seen_at": iso(d.last_seen),
        }
        for d in seen.data_quality
    ]
    held = {e: figures.held for e, figures in seen.entities.items() if figures.held is not None}
    queue: dict[str, Any] = {
        "by_status": seen.outbox.by_status,
        "oldest_undelivered_age_seconds": seen.outbox.oldest_undelivered_age(now),
    }
    problems = [
        f"job {j['job']} is {j['state']}: {j['last_error']}"
        for j in jobs
        if j["state"] in ("failing", "stopped")
    ]
    problems += [f"{h.count} {e} deletions held by the delete guard" for e, h in held.items()]
    vies = seen.vies.summary()
    problems += [
        f"VIES circuit open ({c['scope']}): VIES answered {c['reason']}; no VIES calls until "
        f"{c['open_until']}"
        for c in vies["open_circuits"]
    ]
    parcel_list = seen.omniva.list_state
    libraries = [
        {
            "name": library.name,
            "site": library.site,
            "library": library.library,
            "items": library.item_count,
            "last_delta_at": iso_or_none(library.last_delta_at),
            "age_seconds": _age_seconds(library.last_delta_at, now),
            "last_full_at": iso_or_none(library.last_full_at),
            "health": library.health,
            "last_error": library.last_error if library.health != "ok" else None,
            "enumerating": (
                {"kind": library.enumeration_kind, "pages": library.enumeration_pages}
                if library.enumeration_kind else None
            ),
        }
        for library in seen.libraries
    ]
    problems += [
        f"document library {lib['name']} is {lib['health']}: {lib['last_error']}"
        for lib in libraries
        if lib["health"] in ("failing", "stopped")
    ]
    kept = _retention(conn, retention or RetentionSettings(), now)
    problems += [
        f"retention: the oldest {store['store']} row is {_span(store['oldest_age_seconds'])} "
        f"old, past its window ({_span(store['window_seconds'])}) and a purge interval: the "
        "retention job is not purging it"
        for store in kept["stores"]
        if store["overdue"]
    ]
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
            "schema_version": seen.schema_version,
            "schema_expected": seen.schema_expected,
        },
        "jobs": jobs,
        "entities": entities,
        "last_run": jsonable(seen.last_run) if seen.last_run else None,
        "requests_per_run": seen.requests_per_run,
        "quarantine": {"count": len(quarantine), "records": quarantine},
        "data_quality": {
            "count": sum(d["records"] for d in data_quality),
            "warnings": data_quality,
        },
        "held_deletes": {e: {"count": h.count, "reason": h.reason} for e, h in held.items()},
        "resync": jsonable(seen.resync_request) if seen.resync_request else None,
        "resync_in_progress": {
            entity: {"pages": staged.pages, "records": staged.records}
            for entity, staged in seen.resync_staged.items()
        },
        "outbox": queue,
        "vies": vies,
        "omniva": {
            "records": parcel_list.record_count,
            "skipped": parcel_list.skipped_count,
            "updated_at": iso_or_none(parcel_list.updated_at),
            "checked_at": iso_or_none(parcel_list.checked_at),
            "age_seconds": _age_seconds(parcel_list.updated_at, now),
            "refused_at": iso_or_none(parcel_list.refused_at),
            "refused_reason": parcel_list.refused_reason,
            "counts": seen.omniva.counts,
        },
        "documents": libraries,
        "retention": kept,
        "subjects": {
            "restricted_contacts": len(restrictions.restricted_ids(conn)),
            "suppressed_records": suppressions.counts(conn),
        },
    }


def _retention(
    conn: sqlite3.Connection, retention: RetentionSettings, now: datetime
) -> dict[str, Any]:
    """Per store: the rows its window applies to, the oldest one's age, the window, and whether
    the oldest is overdue (older than the window plus one purge interval)."""
    interval = timedelta(minutes=retention.purge_interval_minutes)
    return {
        "purge_interval_seconds": interval.total_seconds(),
        "stores": [
            {
                "store": h.store,
                "rows": h.rows,
                "oldest_at": iso_or_none(h.oldest),
                "oldest_age_seconds": h.age_seconds,
                "window_seconds": h.window_seconds,
                "overdue": h.overdue,
            }
            for h in store_health(conn, retention.windows(), interval, now)
        ],
    }


def _age_seconds(moment: datetime | None, now: datetime) -> int | None:
    return None if moment is None else int((now - moment).total_seconds())


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
            + (f", {run['requests']} CRM requests" if run.get("requests") is not None else "")
        )
    if report["requests_per_run"]:
        lines.append(
            "  CRM requests per run: "
            + "; ".join(
                f"{kind} median {f['median']}, max {f['max']} (last {f['runs']})"
                for kind, f in report["requests_per_run"].items()
            )
        )
    queue = report["outbox"]
    counts = ", ".join(f"{n} {s}" for s, n in queue["by_status"].items() if n) or "empty"
    age = queue["oldest_undelivered_age_seconds"]
    lines.append("")
    lines.append(f"outbox  {counts}" + (f"; oldest undelivered {age:.0f}s old" if age else ""))
    lines.extend(_render_services(report))
    lines.extend(_render_documents(report["documents"]))
    lines.extend(_render_retention(report["retention"], report["jobs"]))
    lines.extend(_render_subjects(report["subjects"]))
    quarantine = report["quarantine"]
    if quarantine["count"]:
        lines.append("")
        lines.append(f"quarantined records: {quarantine['count']}")
        for item in quarantine["records"][:QUARANTINE_SHOWN]:
            lines.append(f"  {item['entity']} {item['crm_id']}: {item['reason']}")
        if quarantine["count"] > QUARANTINE_SHOWN:
            lines.append("  ... (syncd status --json lists all)")
    lines.extend(_render_data_quality(report["data_quality"]))
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


def _render_data_quality(data_quality: dict[str, Any]) -> list[str]:
    """Records mirrored with a data-quality warning: per entity and message, how many (and a
    few of their IDs)."""
    if not data_quality["count"]:
        return []
    lines = ["", f"data quality warnings: {data_quality['count']}"]
    warnings = data_quality["warnings"]
    for item in warnings[:DATA_QUALITY_SHOWN]:
        more = ", ..." if item["records"] > len(item["examples"]) else ""
        lines.append(
            f"  {item['records']} {item['entity']}: {item['message']} "
            f"(e.g. {', '.join(item['examples'])}{more})"
        )
    if len(warnings) > DATA_QUALITY_SHOWN:
        lines.append("  ... (syncd status --json lists all)")
    return lines


def _render_retention(kept: dict[str, Any], jobs: list[dict[str, Any]]) -> list[str]:
    """The retention job's state, then one line per store holding rows."""
    job = next((j for j in jobs if j["job"] == "retention"), None)
    state = "has not run yet" if job is None else f"{job['state']}, last success " + _ago(
        job["last_success_at"]
    )
    lines = ["", f"retention  purge job {state}; every {_span(kept['purge_interval_seconds'])}"]
    for store in kept["stores"]:
        if not store["rows"]:
            continue
        line = (
            f"  {store['store']:<20} {store['rows']:>7,} row(s), oldest "
            f"{_span(store['oldest_age_seconds'])} (window {_span(store['window_seconds'])})"
        )
        lines.append(line + ("  OVERDUE: not purged" if store["overdue"] else ""))
    return lines


def _render_subjects(subjects: dict[str, Any]) -> list[str]:
    """Restrictions and erasures in force (counts only), when there are any."""
    suppressed = subjects["suppressed_records"]
    if not subjects["restricted_contacts"] and not suppressed:
        return []
    held = ", ".join(f"{n} {entity}" for entity, n in sorted(suppressed.items())) or "none"
    return [
        "",
        f"subjects   {subjects['restricted_contacts']} restricted contact(s); erased and kept "
        f"out of the mirror until the CRM deletes them: {held}",
    ]


def _span(seconds: float | None) -> str:
    """A duration in its largest whole unit: ``45 s``, ``15 min``, ``23 h``, ``730 d``."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def _render_documents(libraries: list[dict[str, Any]]) -> list[str]:
    if not libraries:
        return []
    lines = ["", "documents (SharePoint libraries)"]
    for lib in libraries:
        line = (
            f"  {lib['name']:<16} {lib['items']:>7,} file(s)  {lib['health']:<8} "
            f"last delta {_ago(lib['last_delta_at'])}"
        )
        enumerating = lib["enumerating"]
        if enumerating:
            line += f"; {enumerating['kind']} enumeration at page {enumerating['pages']}"
        if lib["last_error"]:
            line += f"; last error: {lib['last_error']}"
        lines.append(line)
    return lines


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
    if vies["no_consultation_24h"]:
        lines.append(
            "        WARNING: answers without a consultation number (24 h): "
            f"{vies['no_consultation_24h']:,} - proof of the check is missing"
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


def _ago(stamp: str | None) -> str:
    if not stamp:
        return "never"
    seconds = int((utc_now() - parse_iso(stamp)).total_seconds())
    if seconds < 120:
        return f"{stamp} ({seconds}s ago)"
    if seconds < 7200:
        return f"{stamp} ({seconds // 60} min ago)"
    return f"{stamp} ({seconds // 3600} h ago)"
