"""The demo's second half: VAT numbers through VIES and parcel machines from Omniva, asked the
way the portal asks them, through the local HTTP API.

A fake VIES and a fake Omniva run on loopback; syncd's real VAT service, Omniva refresh and API
server run against them with the demo's cache.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from syncd.api.app import ApiServer, make_app
from syncd.api.sources import CachedLocations, DaemonHealth
from syncd.config import Settings, load_settings
from syncd.connectors.omniva.fake import FakeOmniva
from syncd.connectors.vies.fake import FakeVies
from syncd.core.clock import utc_now
from syncd.core.errors import MalformedResponseError
from syncd.engines.omniva import refresh_locations
from syncd.runtime import build_omniva_client, build_vat_service, open_cache
from syncd.state import demo_edits
from syncd.state import omniva as omniva_store
from syncd.state.db import ThreadConnections


def services_story(console: Console, base: Settings, conn: sqlite3.Connection) -> bool:
    """Run the VIES and Omniva part of the demo; True when everything behaved as expected."""
    with FakeVies() as vies, FakeOmniva() as omniva:
        settings = load_settings(
            None,
            state={"directory": base.state.directory},
            log={"level": base.log.level},
            vies={"endpoint": vies.base_url},
            omniva={"url": omniva.locations_url},
            api={"listen": "127.0.0.1:0"},
        )
        console.print(f"fake VIES (SOAP) on {vies.base_url}, fake Omniva on {omniva.locations_url}")
        ok = _omniva_story(console, settings, conn, omniva)
        connections = ThreadConnections(lambda: open_cache(settings))
        vat = build_vat_service(settings)
        server = ApiServer(
            make_app(vat, CachedLocations(connections), DaemonHealth(connections)),
            listen=settings.api.listen,
        )
        server.start()
        try:
            with httpx.Client(base_url=f"http://{server.address}", timeout=30) as api:
                console.print(f"local API listening on {server.address} (loopback only)")
                ok = _vat_story(console, api, vies, conn) and ok
                ok = _parcel_story(console, api) and ok
        finally:
            server.stop(5.0)
            vat.close()
            connections.close_all()
    return ok


def _omniva_story(
    console: Console, settings: Settings, conn: sqlite3.Connection, omniva: FakeOmniva
) -> bool:
    console.rule("7. Omniva's parcel machines: download, check, keep the last good list")
    client = build_omniva_client(settings)
    max_shrink = settings.omniva.max_shrink_share
    try:
        report = refresh_locations(conn, client, max_shrink_share=max_shrink, now=utc_now())
        console.print(f"first download: {report.summary()}")
        again = refresh_locations(conn, client, max_shrink_share=max_shrink, now=utc_now())
        console.print(f"six hours later, a conditional request: {again.summary()}")
        omniva.set_mode("html", times=1)
        try:
            refresh_locations(conn, client, max_shrink_share=max_shrink, now=utc_now())
            refused = False
        except MalformedResponseError as error:
            refused = True
            console.print(f"Omniva serves a maintenance page instead: refused ({error})")
    finally:
        client.close()
    state = omniva_store.list_state(conn)
    console.print(
        f"the stored list is kept: {state.record_count} locations "
        f"({_counts_text(omniva_store.counts(conn))})"
    )
    return refused and state.record_count == report.records


def _vat_story(
    console: Console, api: httpx.Client, vies: FakeVies, conn: sqlite3.Connection
) -> bool:
    console.rule("8. 'Verify VAT' in the portal: GET /v1/vat/{number}")
    estonian, latvian = (
        next(c for c in vies.companies if c.country_code == cc) for cc in ("EE", "LV")
    )
    table = Table(title="VAT lookups through the local API", title_justify="left")
    for column in ("asked", "HTTP", "answer", "source", "VIES calls so far"):
        table.add_column(column)
    outcomes: list[dict[str, Any]] = []

    def ask(label: str, number: str) -> dict[str, Any]:
        response = api.get(f"/v1/vat/{number}")
        body: dict[str, Any] = response.json()
        outcomes.append(body)
        if response.status_code == 200:
            answer = "valid" if body["valid"] else f"invalid: {body['invalid_reason'] or 'VIES'}"
            source = body["source"] + (
                f" ({body['age_seconds'] // 3600} h old)" if body["source"] == "stale" else ""
            )
        else:
            answer, source = body["error"]["code"], "-"
        table.add_row(label, str(response.status_code), answer, source, str(vies.call_count))
        return body

    first = ask(f"{estonian.vat_id} (a registered company)", estonian.vat_id)
    second = ask("the same number again", estonian.vat_id)
    local = ask("EE12345 (wrong length)", "EE12345")
    ask(f"{latvian.vat_id} (Latvia)", latvian.vat_id)
    # A day and a half later (the demo moves the answer's age instead of waiting) Latvia's
    # VIES node is down. The privacy policy keeps answers 24 hours, so the expired one is never
    # shown: the portal is told to try again (a deployment may enable a stale fallback, see
    # docs/privacy.md).
    demo_edits.age_vies_answers(conn, "LV", utc_now() - timedelta(hours=36))
    vies.inject("MS_UNAVAILABLE", country="LV")
    expired = ask(f"{latvian.vat_id}, 36 h later, LV down", latvian.vat_id)
    console.print(table)
    console.print(
        "the invalid number was answered locally (python-stdnum) and never sent to VIES; "
        "faults are never cached as answers; an answer older than retention.vies_answers_hours "
        "(24, the privacy policy's) is never shown, and the retention job deletes it"
    )
    return (
        first.get("source") == "live"
        and second.get("source") == "cache"
        and local.get("source") == "local"
        and expired.get("error", {}).get("code") in ("vies_unavailable", "member_state_unavailable")
    )


def _parcel_story(console: Console, api: httpx.Client) -> bool:
    console.rule("9. checkout: GET /v1/parcel-machines?country=EE|LV&type=parcel_machine")
    ok = True
    for country in ("EE", "LV"):
        response = api.get(
            "/v1/parcel-machines", params={"country": country, "type": "parcel_machine"}
        )
        body = response.json()
        ok = ok and response.status_code == 200 and body["count"] > 0
        names = ", ".join(item["name"] for item in body["locations"][:3])
        console.print(f"{country}: {body['count']} parcel machines, e.g. {names}")
    bad = api.get("/v1/parcel-machines", params={"country": "Estonia"})
    console.print(f"a bad request gets a JSON error: {bad.status_code} {bad.json()['error']}")
    return ok and bad.status_code == 400


def _counts_text(counts: dict[str, dict[str, int]]) -> str:
    return "; ".join(
        f"{country}: "
        + ", ".join(f"{n} {kind.replace('_', ' ')}s" for kind, n in kinds.items() if n)
        for country, kinds in sorted(counts.items())
    )


__all__ = ["services_story"]
