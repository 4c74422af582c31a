"""``syncd demo``: the whole daemon's work, end to end, against the built-in fakes: the CRM
mirror and the outbox against a fake Bitrix24, VAT lookups against a fake VIES, the parcel
machines from a fake Omniva through the local HTTP API, and SharePoint documentation libraries
through a fake Microsoft Graph (with a fake Entra ID login over TLS).

Everything runs on loopback with a seeded dataset; nothing leaves the machine. The demo writes a
real cache (``demo-data/cache.sqlite3``) and a DEBUG log (``demo-data/syncd.log``) that a
newcomer can open afterwards.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn

import httpx
from rich.console import Console
from rich.table import Table

from syncd.api.app import ApiServer, make_app
from syncd.api.sources import CachedLocations, DaemonHealth
from syncd.cli.status import collect, render
from syncd.config import Settings, load_settings
from syncd.connectors.crm import registry
from syncd.connectors.crm.vendor import FakeCrm
from syncd.core.entities import Entity
from syncd.core.errors import ConfigError, RetriableError
from syncd.demo.documents import documents_story
from syncd.demo.privacy import privacy_story
from syncd.demo.services import services_story
from syncd.engines.mirror import CycleReport, MirrorEngine, apply_held_deletes
from syncd.engines.push import OutboxDelivery
from syncd.engines.spool import MIB
from syncd.engines.verify import differences
from syncd.logging_setup import configure_logging
from syncd.runtime import build_engine, build_intake, build_pusher, open_cache, push_options
from syncd.state import demo_edits, outbox
from syncd.state.cache import CacheStore
from syncd.state.db import ThreadConnections
from syncd.state.db import close as close_cache

DEMO_SEED = 20261121


def run_demo(directory: Path, *, contacts: int = 2000, vendor: str = "bitrix24") -> int:
    """Tell the story against ``vendor``'s fake; returns the exit code (0: all as expected)."""
    console = Console(highlight=False)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("cache.sqlite3*"):
        stale.unlink()
    log_path = directory / "syncd.log"
    companies, devices = max(10, contacts // 6), max(10, contacts // 2)
    console.rule("[bold]syncd demo")
    plugin = registry.get(vendor)
    running = plugin.fake(seed=DEMO_SEED, companies=companies, contacts=contacts, devices=devices)
    if running is None:
        raise ConfigError(f"crm.vendor: {plugin.title} has no fake to run the demo against")
    with running as fake:
        settings = load_settings(
            None,
            crm=fake.crm_settings(directory),
            state={"directory": directory},
            log={"level": "DEBUG"},
        )
        with log_path.open("w", encoding="utf-8") as log_stream:
            configure_logging("DEBUG", "text", stream=log_stream)
            conn = open_cache(settings)
            try:
                return _story(console, fake, settings, conn, directory, log_path)
            finally:
                close_cache(conn)
                logging.getLogger().handlers.clear()


def _story(
    console: Console,
    fake: FakeCrm,
    settings: Settings,
    conn: sqlite3.Connection,
    directory: Path,
    log_path: Path,
) -> int:
    engine = build_engine(settings, conn)
    console.print(f"{fake.title} {fake.describe()}; seeded {_counts_text(fake)}")

    console.rule("1. first start: full mirror")
    report = _timed(console, engine.run_cycle, fake)
    _report_table(console, report)

    console.rule("2. the CRM changes; an incremental cycle and an ID sweep follow")
    summary = fake.mutate_random(creates=25, updates=60, deletes=12, seed=7)
    console.print(f"changed in the CRM: {summary}")
    _report_table(console, _timed(console, engine.run_cycle, fake))
    console.print(
        "deletions are not visible to an incremental query; the periodic ID sweep finds them:"
    )
    _report_table(console, _timed(console, engine.sweep, fake))

    console.rule("3. the delete guard holds a suspicious mass deletion")
    device_ids = fake.record_ids(Entity.DEVICES)
    doomed = device_ids[: len(device_ids) // 3]
    for device_id in doomed:
        fake.delete(Entity.DEVICES, device_id)
    console.print(f"{len(doomed)} devices vanish from the CRM at once (say, a permission change)")
    _report_table(console, engine.sweep())
    for entity, held in collect(conn, directory)["held_deletes"].items():
        console.print(
            f"syncd status now reports {held['count']} held {entity} deletions: {held['reason']}"
        )
    console.print(
        "an operator reviews them and applies them: [bold]syncd deletes apply devices[/bold]"
    )
    console.print(f"applied {apply_held_deletes(conn, Entity.DEVICES)} held device deletions")

    console.rule("4. a damaged mirror is repaired by a resync")
    damaged = demo_edits.damage_devices(conn, 5)
    console.print(f"{damaged} device rows damaged by hand; [bold]syncd --resync devices[/bold]:")
    _report_table(console, _timed(console, lambda: engine.run_full([Entity.DEVICES]), fake))

    console.rule("5. the cache checked against the CRM, record by record")
    problems = differences(conn, engine.mappings, fake.adapter_view())
    if problems:
        console.print(f"[red]{len(problems)} differences[/red]: " + "; ".join(problems[:5]))
    else:
        console.print(
            f"[green]the cache matches the CRM exactly[/green] ({_cache_counts_text(conn)})"
        )
    engine.adapter.close()

    console.rule("6. the portal files service requests with photos, a PDF and a video")
    _outbox_story(console, fake, settings, conn)

    services_ok = services_story(console, settings, conn)

    console.rule("10. SharePoint documentation libraries through Microsoft Graph")
    documents_ok = documents_story(console, settings, conn)

    privacy_ok = privacy_story(console, fake, settings, conn)

    console.rule("syncd status")
    console.print(
        "(the demo ran the cycles itself, so status rightly says no daemon runs; "
        "under systemd, `syncd run` keeps the jobs going)"
    )
    console.print(render(collect(conn, directory)))
    console.rule("where things are")
    cache = directory / "cache.sqlite3"
    console.print(f"cache:  {cache.resolve()}")
    console.print(f"log:    {log_path.resolve()} (DEBUG level; no personal data)")
    console.print(f'try:    sqlite3 {cache} "SELECT entity, value FROM cursors"')
    console.print(
        f'        sqlite3 {cache} "SELECT crm_id, name, vat_number, country FROM companies LIMIT 5"'
    )
    console.print(
        f'        sqlite3 {cache} "SELECT device_id, library, folder_path, name FROM '
        'device_documents LIMIT 5"'
    )
    return 1 if problems or not services_ok or not documents_ok or not privacy_ok else 0


# What the portal's users type into the service-request form in the demo: personal data that
# must never reach the log (tests/test_privacy.py looks for each value).
DEMO_REQUEST_CONTACTS: tuple[dict[str, str], ...] = (
    {"contact_phone": "+372 5341 7782", "contact_email": "Kadri.Saar@kliinik-demo.ee",
     "contact_address": "Tartu mnt 83, 10115 Tallinn"},
    {"contact_phone": "+371 2914 3360", "contact_email": "ilze.berzina@lazeri-demo.lv"},
    {"contact_email": "tomas.jonaitis@grozio-demo.lt",
     "contact_address": "Gedimino pr. 9, LT-01103 Vilnius"},
)


def _outbox_story(
    console: Console, fake: FakeCrm, settings: Settings, conn: sqlite3.Connection
) -> None:
    options = push_options(settings)
    shutil.rmtree(options.spool, ignore_errors=True)
    devices = fake.record_ids(Entity.DEVICES)
    contacts = fake.record_ids(Entity.CONTACTS)
    samples = {
        "photo.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 40,
        "invoice.pdf": b"%PDF-1.7\n" + b"0" * 20_000 + b"\n%%EOF\n",
        "clip.mp4": b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(300_000),
        "notes.jpg": b"\x7fELF\x02\x01\x01" + bytes(2000),  # an executable renamed .jpg
    }
    plans = [
        ("repair", ["photo.jpg", "clip.mp4"]),
        ("maintenance", ["invoice.pdf"]),
        ("repair", ["notes.jpg"]),
    ]
    connections = ThreadConnections(lambda: open_cache(settings))
    server = ApiServer(
        make_app(
            _NoVat(),
            CachedLocations(connections),
            DaemonHealth(connections),
            service_requests=build_intake(settings, connections.get, api=True),
            max_upload_bytes=settings.api.max_upload_mb * MIB,
        ),
        listen="127.0.0.1:0",
        max_request_bytes=settings.api.max_upload_mb * MIB,
    )
    server.start()
    filed: list[tuple[str, str]] = []
    try:
        with httpx.Client(base_url=f"http://{server.address}", timeout=60) as api:
            console.print(
                f"the portal POSTs each request to the local API on {server.address} "
                "(POST /v1/service-requests, multipart, an Idempotency-Key)"
            )
            for number, (kind, names) in enumerate(plans):
                key = str(uuid.UUID(int=DEMO_SEED * 1000 + number))
                parts: list[tuple[str, tuple[str | None, bytes | str, str | None]]] = [
                    ("request_type", (None, kind, None)),
                    ("message", (None, "Described by the client in the portal", None)),
                    ("device_crm_id", (None, devices[number], None)),
                    ("contact_crm_id", (None, contacts[number], None)),
                    *(
                        (field, (None, value, None))
                        for field, value in DEMO_REQUEST_CONTACTS[number].items()
                    ),
                ]
                parts += [("files", (name, samples[name], "image/jpeg")) for name in names
                          if name.endswith(".jpg")]
                parts += [("files", (name, samples[name], None)) for name in names
                          if not name.endswith(".jpg")]
                answer = api.post(
                    "/v1/service-requests", headers={"Idempotency-Key": key}, files=parts
                )
                body = answer.json()
                if answer.status_code == 202:
                    filed.append((key, kind))
                    again = api.post(
                        "/v1/service-requests", headers={"Idempotency-Key": key}, files=parts
                    )
                    replayed = again.headers.get("idempotent-replayed")
                    console.print(
                        f"  {kind} with {', '.join(names)}: {answer.status_code}, request "
                        f"#{body['id']}; sent again (a retry): {again.status_code}, the same "
                        f"#{again.json()['id']}, replayed={replayed}"
                    )
                else:
                    error = body["error"]
                    console.print(
                        f"  {kind} with {', '.join(names)}: [yellow]{answer.status_code} "
                        f"{error['code']}[/yellow] for {error.get('field')}: {error['message']} "
                        "(refused at the door; nothing stored)"
                    )
    finally:
        server.stop(5.0)
        connections.close_all()
    console.print("the CRM will drop the connection right after creating the first item")
    fake.lose_next_create_answer()
    pusher = build_pusher(settings)
    later = timedelta()

    def clock() -> datetime:
        return datetime.now(UTC) + later

    delivery = OutboxDelivery(conn, pusher, options, clock=clock)
    for _ in range(2):  # the second round is the retry after the dropped connection
        while delivery.deliver_next() is not None:
            pass
        later = timedelta(hours=1)  # skip the backoff instead of waiting for it
    pusher.close()
    table = Table(title="the outbox after delivery", title_justify="left")
    for column in ("request", "status", "CRM item", "files in the CRM", "why"):
        table.add_column(column)
    items = fake.service_requests()
    for key, _kind in filed:
        request = outbox.get_by_key(conn, key)
        assert request is not None  # filed through the door above
        # stored as "<uuid>-<position>-<name>": show the name
        shown = ", ".join(name.split("-", 6)[-1] for name in items.get(key, [])) or "-"
        table.add_row(
            f"#{request.id}",
            request.status,
            request.crm_id or "-",
            shown,
            request.last_error or "",
        )
    console.print(table)
    duplicates = fake.service_request_count() - len(items)
    left = sum(1 for p in options.spool.rglob("*") if p.is_file())
    console.print(
        f"CRM items per request: exactly one ({duplicates} duplicates, despite the retried POST "
        f"and the dropped connection); local files left in the spool: {left}"
    )


class _NoVat:
    """The outbox part of the demo runs the API without VIES (the next chapter has it)."""

    def lookup(self, raw: str, *, fresh: bool = False) -> NoReturn:
        raise RetriableError("VIES is shown in the next chapter")


def _timed(console: Console, step: object, fake: FakeCrm) -> CycleReport:
    before = fake.request_count
    started = time.perf_counter()
    report: CycleReport = step()  # type: ignore[operator]
    elapsed = time.perf_counter() - started
    console.print(
        f"{report.kind} cycle took {elapsed:.2f} s and {fake.request_count - before} CRM requests"
    )
    return report


def _report_table(console: Console, report: CycleReport) -> None:
    table = Table(title=f"{report.kind} cycle (run #{report.run_id})", title_justify="left")
    for column in ("entity", "fetched", "changed", "deleted", "quarantined", "held deletes"):
        table.add_column(column, justify="right" if column != "entity" else "left")
    for entity in Entity:
        table.add_row(
            entity.value,
            *(
                str(getattr(report, name).get(entity, 0))
                for name in ("fetched", "upserted", "deleted", "quarantined", "held")
            ),
        )
    console.print(table)


def _counts_text(fake: FakeCrm) -> str:
    return ", ".join(f"{len(fake.record_ids(e))} {e.value}" for e in Entity)


def _cache_counts_text(conn: sqlite3.Connection) -> str:
    store = CacheStore(conn)
    return ", ".join(f"{store.count(e)} {e.value}" for e in Entity)


__all__ = ["MirrorEngine", "run_demo"]
