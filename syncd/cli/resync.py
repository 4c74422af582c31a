"""``syncd --resync ENTITY [--record ID]``: hand the request to the running daemon and follow its
progress, or, when no daemon runs, resync in the foreground with a progress bar."""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from syncd.cli.jsonable import jsonable
from syncd.config import Settings
from syncd.core.clock import utc_now
from syncd.core.entities import Entity
from syncd.core.errors import ConfigError, ResyncBusyError, SyncdError
from syncd.daemon import lock
from syncd.engines.mirror import CycleReport
from syncd.engines.progress import ResyncEstimate, format_duration
from syncd.runtime import build_budget, build_engine
from syncd.state import audit, control

FOLLOW_POLL_SECONDS = 0.25


def run_resync(
    settings: Settings,
    conn: sqlite3.Connection,
    entity: str,
    record_id: str | None,
    *,
    out: TextIO = sys.stdout,
    emit_json: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Returns an exit code: 0 done, 1 failed, 75 busy (another resync or lock holder).

    For ``entity == "documents"``, ``record_id`` is the library's name (None: every library).
    """
    if entity == "documents":
        if not settings.sharepoint.configured:
            raise ConfigError("sharepoint: not configured; there are no document libraries")
        if record_id is not None:
            try:
                settings.sharepoint.library(record_id)
            except KeyError:
                names = ", ".join(lib.name for lib in settings.sharepoint.libraries)
                raise ConfigError(
                    f"sharepoint.libraries: no library called {record_id!r} (configured: "
                    f"{names})"
                ) from None
    elif not settings.crm_configured:
        raise ConfigError(
            f"crm.{settings.crm.vendor}: no CRM configured; there is nothing to resync from"
        )
    state_dir = settings.state.cache_path.parent
    what = "library" if entity == "documents" else "record"
    target = entity + (f" {what} {record_id}" if record_id else "")
    audit.record(conn, "resync.request", target=target)
    holder = lock.holder(state_dir)
    if holder is not None and "daemon" in holder:
        request, created = control.request_resync(
            conn, entity=entity, record_id=record_id, actor=audit.os_user(), now=utc_now()
        )
        if not created:
            print(
                f"a resync is already in progress: request #{request.id} ({request.entity}, "
                f"{request.status}); try again when it is done",
                file=sys.stderr,
            )
            return 75
        print(f"resync request #{request.id} handed to the running daemon ({holder})", file=out)
        return _follow(conn, request.id, state_dir, out, emit_json)
    return _foreground(settings, conn, entity, record_id, state_dir, out, emit_json)


def _follow(
    conn: sqlite3.Connection,
    request_id: int,
    state_dir: Path,
    out: TextIO,
    emit_json: Callable[[dict[str, Any]], None] | None,
) -> int:
    with _bar(out) as bar:
        task = bar.add_task("resync", total=None)
        lines = _PlainProgress(out)
        while True:
            request = control.get(conn, request_id)
            assert request is not None
            detail = f"{request.progress_requests:,} requests"
            if request.progress_eta_seconds is not None:
                detail += f" · about {format_duration(request.progress_eta_seconds)} left"
            bar.update(
                task,
                completed=request.progress_done,
                total=request.progress_total,
                description=f"{request.entity} ({request.status}) · {detail}",
            )
            counted = (
                f"{request.progress_done:,}/{request.progress_total:,}"
                if request.progress_total is not None
                else f"{request.progress_done:,}"
            )
            lines.show(request.status, f"{counted} records · {detail}")
            if request.finished:
                break
            if lock.holder(state_dir) is None:
                print(
                    "the daemon stopped; the request stays queued and runs when it starts",
                    file=sys.stderr,
                )
                return 75
            time.sleep(FOLLOW_POLL_SECONDS)
    ok = request.status == "done"
    if emit_json:
        emit_json({"request": jsonable(request), "ok": ok})
    print(f"resync #{request.id} {request.status}: {request.message}", file=out)
    return 0 if ok else 1


def _foreground(
    settings: Settings,
    conn: sqlite3.Connection,
    entity: str,
    record_id: str | None,
    state_dir: Path,
    out: TextIO,
    emit_json: Callable[[dict[str, Any]], None] | None,
) -> int:
    try:
        process_lock = lock.ProcessLock(state_dir, "foreground resync")
        process_lock.acquire()
    except ResyncBusyError as error:
        print(f"cannot resync now: {error}", file=sys.stderr)
        return 75
    try:
        if entity == "documents":
            return _documents_foreground(settings, conn, record_id, out, emit_json)
        with _bar(out) as bar:
            task = bar.add_task(entity, total=None)
            estimate = ResyncEstimate(settings.crm.requests_per_second)

            lines = _PlainProgress(out)

            def progress(name: str, done: int, total: int | None) -> None:
                estimate.update(name, done, total, engine.adapter.requests_made)
                bar.update(
                    task,
                    completed=estimate.records,
                    total=estimate.total,
                    description=f"{name}: {estimate.describe()}",
                )
                lines.show(name, estimate.describe())

            # Its own budget: this process shares no client with a daemon's lanes.
            engine = build_engine(settings, conn, progress=progress, budget=build_budget(settings))
            try:
                report = _run(engine, entity, record_id)
            except SyncdError as error:
                if emit_json:
                    emit_json({"ok": False, "error": str(error)})
                raise
            finally:
                engine.adapter.close()
    finally:
        process_lock.release()
    if emit_json:
        emit_json({"ok": True, "report": jsonable(report)})
    print(report.summary(), file=out)
    return 0


def _documents_foreground(
    settings: Settings,
    conn: sqlite3.Connection,
    library: str | None,
    out: TextIO,
    emit_json: Callable[[dict[str, Any]], None] | None,
) -> int:
    """Enumerate the document libraries again in this process (no daemon runs)."""
    from syncd.engines.documents import DocumentMirror
    from syncd.runtime import build_document_budget, build_document_source

    source = build_document_source(settings, budget=build_document_budget(settings))
    reports = []
    try:
        mirror = DocumentMirror(conn, source, settings.sharepoint)
        mirror.configure()
        with _bar(out) as bar:
            tasks: dict[str, Any] = {}

            def progress(name: str, _pages: int, items: int) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(f"documents {name}", total=None)
                bar.update(tasks[name], completed=items)

            mirror.progress = progress
            for name in [library] if library else mirror.names():
                try:
                    reports.append(mirror.run(name, full=True))
                except SyncdError as error:
                    if emit_json:
                        emit_json({"ok": False, "library": name, "error": str(error)})
                    raise
    finally:
        source.close()
    if emit_json:
        emit_json({"ok": True, "reports": [jsonable(report) for report in reports]})
    for report in reports:
        print(report.summary(), file=out)
    return 0


def _run(engine: Any, entity: str, record_id: str | None) -> CycleReport:
    if record_id:
        result: CycleReport = engine.resync_record(Entity(entity), record_id)
        return result
    entities = list(Entity) if entity == "all" else [Entity(entity)]
    full: CycleReport = engine.run_full(entities)
    return full


class _PlainProgress:
    """Progress as plain lines when the output is not a terminal (a log, a pipe): one when the
    stage changes, else at most one every ``every`` seconds."""

    def __init__(self, out: TextIO, every: float = 5.0) -> None:
        self.out = out
        self.enabled = not out.isatty()
        self.every = every
        self._stage: str | None = None
        self._last = 0.0

    def show(self, stage: str, text: str) -> None:
        now = time.monotonic()
        if not self.enabled or (stage == self._stage and now - self._last < self.every):
            return
        self._stage, self._last = stage, now
        print(f"resync {stage}: {text}", file=self.out, flush=True)


def _bar(out: TextIO) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
        console=Console(file=out),
        disable=not out.isatty(),
    )
