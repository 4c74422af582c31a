"""The portal's side of the new services, run with the real PHP client: example 9.6 reads the
parcel machines from the cache, and section 12's functions ask the local API to verify VAT
numbers (docs/portal-contract.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncd.api.app import ApiServer, make_app
from syncd.api.sources import CachedLocations, DaemonHealth
from syncd.config import load_settings
from syncd.connectors.omniva.client import OmnivaClient
from syncd.connectors.omniva.fake import FakeOmniva
from syncd.connectors.vies.fake import FakeVies
from syncd.engines.omniva import refresh_locations
from syncd.runtime import build_vat_service
from syncd.state import omniva as omniva_store
from syncd.state.db import ThreadConnections, connect
from syncd.state.db import close as close_cache
from tests.test_portal_contract import EXAMPLES, run_php

HARNESS = """<?php
declare(strict_types=1);
require $argv[1];
$request = json_decode(stream_get_contents(STDIN), true);
$out = [];
if (isset($request['path'])) {
    $db = syncd_open($request['path']);
    $out['machines'] = array_column(syncd_parcel_machines($db, 'ee'), 'location_id');
    $out['all_lv'] = count(syncd_parcel_machines($db, 'LV', null));
    $out['offices_ee'] = count(syncd_parcel_machines($db, 'EE', 'post_office'));
    $everything = array_merge(
        syncd_parcel_machines($db, 'EE', null), syncd_parcel_machines($db, 'LV', null)
    );
    $out['states'] = array_count_values(array_column($everything, 'state'));
    $out['marked'] = array_values(array_filter($everything, fn ($m) => $m['state'] !== 'normal'));
}
if (isset($request['base'])) {
    foreach ($request['numbers'] as $number) {
        try {
            $answer = syncd_verify_vat($request['base'], $number);
            $out['vat'][] = $answer === null ? 'unavailable'
                : [$answer['valid'], $answer['source'], $answer['name']];
        } catch (InvalidArgumentException $e) {
            $out['vat'][] = 'error:' . $e->getMessage();
        }
    }
}
echo json_encode($out), "\\n";
"""


@pytest.fixture
def php_harness(tmp_path: Path) -> tuple[str, Path]:
    from tests.test_portal_contract import _php_or_skip

    harness = tmp_path / "services.php"
    harness.write_text(HARNESS, encoding="utf-8")
    return _php_or_skip(), harness


def test_example_9_6_lists_the_parcel_machines_syncd_stored(
    php_harness: tuple[str, Path], tmp_path: Path
) -> None:
    php, harness = php_harness
    path = tmp_path / "cache.sqlite3"
    conn = connect(path)
    with FakeOmniva() as fake, OmnivaClient(fake.locations_url, connect_timeout=5, timeout=10) as c:
        refresh_locations(conn, c, max_shrink_share=0.2, now=datetime(2026, 11, 22, tzinfo=UTC))
    expected = [row["id"] for row in omniva_store.list_locations(conn, "EE", "parcel_machine")]
    states = dict(conn.execute("SELECT state, count(*) FROM parcel_machines GROUP BY state"))
    close_cache(conn)
    status, [out] = run_php(php, str(harness), str(EXAMPLES), stdin=json.dumps({"path": str(path)}))
    assert status == 0
    assert len(out["machines"]) == 89 and sorted(out["machines"]) == sorted(expected)
    assert out["all_lv"] == 86 and out["offices_ee"] == 86
    # Omniva's name markers reach the portal as a state, and the names come without them
    assert out["states"] == states and set(states) - {"normal"}, states
    for machine in out["marked"]:
        assert machine["state_note"] and machine["state_note"] not in machine["name"], machine


@dataclass
class RunningApi:
    base: str
    vies: FakeVies


@pytest.fixture
def api(tmp_path: Path) -> Iterator[RunningApi]:
    with FakeVies() as vies:
        settings = load_settings(
            None, state={"directory": tmp_path / "state"}, vies={"endpoint": vies.base_url}
        )
        connections = ThreadConnections(lambda: connect(settings.state.cache_path))
        vat = build_vat_service(settings)
        app = make_app(vat, CachedLocations(connections), DaemonHealth(connections))
        server = ApiServer(app, listen="127.0.0.1:0", threads=2)
        server.start()
        try:
            yield RunningApi(f"http://{server.address}", vies)
        finally:
            server.stop(5.0)
            vat.close()
            connections.close_all()


def test_php_verifies_vat_numbers_through_the_local_api(
    php_harness: tuple[str, Path], api: RunningApi
) -> None:
    php, harness = php_harness
    company = next(c for c in api.vies.companies if c.country_code == "EE")
    down = next(c for c in api.vies.companies if c.country_code == "LV")
    api.vies.inject("MS_UNAVAILABLE", country="LV")
    numbers = [company.vat_id, company.vat_id, "EE12345", "not a number", down.vat_id]
    request = json.dumps({"base": api.base, "numbers": numbers})
    status, [out] = run_php(php, str(harness), str(EXAMPLES), stdin=request)
    assert status == 0
    assert out["vat"] == [
        [True, "live", company.name],
        [True, "cache", company.name],
        [False, "local", None],
        "error:malformed_vat_number",
        "unavailable",  # a 503: "cannot verify right now", never "invalid"
    ]
    # one live call for the company; the local and malformed answers never reached VIES, and the
    # member state that is down was asked max_attempts (2) times
    asked = [(r.country_code, r.vat_number) for r in api.vies.requests]
    assert asked.count((company.country_code, company.vat_number)) == 1
    assert {cc for cc, _ in asked} == {"EE", "LV"} and len(asked) == 3
