"""Restriction of processing (issue 12, part 4): ``syncd.state.restrictions`` and the triggers of
schema 6 that keep ``contacts.restricted`` equal to it whichever way the mirror writes a contact;
the outbox refusing a restricted contact's requests at the door (409 ``contact_restricted``) and
at delivery (``dead`` with its reason, nothing sent to the fake Bitrix24); and a PHP client that
sees the flag through the documented column, read-only, as another UID where it can.

Real SQLite files, the real mirror engine, push engine and API server throughout.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.api.app import ApiServer, make_app
from syncd.config import Settings
from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.core.entities import ENTITY_ORDER
from syncd.engines.intake import IntakeOptions, ServiceRequestIntake
from syncd.engines.mirror import MirrorEngine
from syncd.engines.push import RESTRICTED, RESTRICTED_AFTER_CREATE, OutboxDelivery
from syncd.mappings.loader import load_mapping_set
from syncd.runtime import build_engine, open_cache
from syncd.state import outbox, restrictions
from syncd.state.cache import CacheStore
from syncd.state.db import ThreadConnections, connect, write_transaction
from tests.conftest import make_api_client, make_settings, spool_file
from tests.test_api import CacheLocations, StubHealth, StubVat, check
from tests.test_portal_contract import _php_or_skip

MAPPINGS = load_mapping_set("bitrix24")
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
TYPES = frozenset({"repair", "maintenance", "installation", "training", "other"})
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 8
PHP_DIR = Path(__file__).parent / "php"
HARNESS = PHP_DIR / "restricted_contacts.php"
EXAMPLES = PHP_DIR / "portal_examples.php"


# -- the state and the triggers ---------------------------------------------------------------


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = connect(tmp_path / "cache.sqlite3")
    yield connection
    connection.close()


def contact(crm_id: str, name: str = "Mari", modified: str = "2026-11-21T10:00:00+02:00") -> Any:
    return MAPPINGS["contacts"].map({"ID": crm_id, "NAME": name, "DATE_MODIFY": modified})


def mirror(store: CacheStore, records: list[Any], *, full: bool = False) -> int:
    """Merge ``records`` into ``contacts`` the way the engine does: from the per-connection
    scratch table (an incremental cycle) or from the staging table (a full resync)."""
    table = "stage" if full else "scratch"
    with write_transaction(store.conn):
        store.ensure_scratch()
        store.clear_staging(table, "contacts")
        store.stage(table, "contacts", records)
        return store.merge(table, "contacts", run_id=1, now=NOW)


def flags(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT crm_id, restricted FROM contacts").fetchall())


def test_restrict_is_idempotent_and_unrestrict_lifts_it(conn: sqlite3.Connection) -> None:
    assert restrictions.restricted_ids(conn) == set()
    assert restrictions.restrict(conn, "5", now=NOW) is True
    assert restrictions.restrict(conn, "5", now=NOW + timedelta(days=1)) is False
    assert restrictions.restrict(conn, "6", now=NOW) is True
    assert restrictions.is_restricted(conn, "5") and not restrictions.is_restricted(conn, "7")
    assert restrictions.restricted_ids(conn) == {"5", "6"}
    # the first restriction's time is kept
    assert conn.execute(
        "SELECT restricted_at FROM subject_restrictions WHERE contact_id = '5'"
    ).fetchone()[0] == "2026-11-21T12:00:00Z"
    assert restrictions.unrestrict(conn, "5") is True
    assert restrictions.unrestrict(conn, "5") is False
    assert restrictions.restricted_ids(conn) == {"6"}
    assert not conn.in_transaction


@pytest.mark.parametrize("bad", ["", " 5", "5\n", "x" * 101])
def test_a_contact_id_is_checked(conn: sqlite3.Connection, bad: str) -> None:
    with pytest.raises(ValueError, match="contact_id"):
        restrictions.restrict(conn, bad, now=NOW)
    with pytest.raises(ValueError, match="contact_id"):
        restrictions.unrestrict(conn, bad)
    assert restrictions.restricted_ids(conn) == set()


def test_restricting_a_cached_contact_sets_its_flag_and_unrestricting_clears_it(
    conn: sqlite3.Connection,
) -> None:
    store = CacheStore(conn)
    mirror(store, [contact("1"), contact("2")])
    assert flags(conn) == {"1": 0, "2": 0}
    restrictions.restrict(conn, "1", now=NOW)
    assert flags(conn) == {"1": 1, "2": 0}
    restrictions.unrestrict(conn, "1")
    assert flags(conn) == {"1": 0, "2": 0}


def test_a_restriction_set_before_the_mirror_has_the_contact_applies_when_it_arrives(
    conn: sqlite3.Connection,
) -> None:
    restrictions.restrict(conn, "3", now=NOW)
    store = CacheStore(conn)
    mirror(store, [contact("3"), contact("4")])
    assert flags(conn) == {"3": 1, "4": 0}
    restrictions.restrict(conn, "9", now=NOW)  # on a full resync's merge, too
    mirror(store, [contact("9")], full=True)
    assert flags(conn)["9"] == 1


@pytest.mark.parametrize("full", [False, True], ids=["incremental", "full-resync"])
def test_the_mirrors_upserts_keep_the_flag(conn: sqlite3.Connection, full: bool) -> None:
    store = CacheStore(conn)
    mirror(store, [contact("1"), contact("2")])
    restrictions.restrict(conn, "1", now=NOW)
    # a changed record (ON CONFLICT DO UPDATE rewrites the row) and an unchanged one
    changed = contact("1", "Maria", "2026-11-22T10:00:00+02:00")
    assert mirror(store, [changed, contact("2")], full=full) == 1
    assert conn.execute("SELECT first_name FROM contacts WHERE crm_id = '1'").fetchone()[0] == (
        "Maria"
    )
    assert flags(conn) == {"1": 1, "2": 0}


def test_a_deleted_contact_mirrored_again_is_still_restricted(conn: sqlite3.Connection) -> None:
    store = CacheStore(conn)
    mirror(store, [contact("1"), contact("2")])
    restrictions.restrict(conn, "1", now=NOW)
    with write_transaction(conn):
        assert store.delete("contacts", ["1"]) == 1
    assert flags(conn) == {"2": 0}
    assert restrictions.is_restricted(conn, "1")  # the restriction outlives the row
    mirror(store, [contact("1")])
    assert flags(conn) == {"1": 1, "2": 0}


def test_the_real_mirror_keeps_the_flag_through_cycles_resyncs_and_deletions(
    engine: MirrorEngine, cache: sqlite3.Connection, fake: FakeBitrix24
) -> None:
    engine.run_cycle()
    first, second = sorted(fake.records("contacts"), key=int)[:2]
    restrictions.restrict(cache, first, now=NOW)
    assert flags(cache)[first] == 1
    fake.update("contacts", first, NAME="Renamed")
    engine.run_cycle()  # incremental: the changed row is upserted
    assert cache.execute(
        "SELECT first_name FROM contacts WHERE crm_id = ?", (first,)
    ).fetchone()[0] == "Renamed"
    assert flags(cache)[first] == 1
    engine.run_full(ENTITY_ORDER)
    current = flags(cache)
    assert current[first] == 1 and current[second] == 0
    assert {k for k, v in current.items() if v} == {first}
    fake.delete("contacts", first)
    engine.sweep()  # the mirror's deletion sweep removes the row
    assert first not in flags(cache)
    assert restrictions.restricted_ids(cache) == {first}


# -- the outbox: dead at delivery, refused at the door -----------------------------------------


def crm_calls(fake: FakeBitrix24, start: int) -> list[str]:
    """The methods the fake received since ``start`` (an index into its request log)."""
    return [method for method, _params in fake.request_log[start:]]


def queue(delivery: OutboxDelivery, contact_id: str, device_id: str, name: str) -> tuple[int, str]:
    """A request filed (with one photo) before any restriction, as the door stores it."""
    key = str(uuid.uuid4())
    data = {
        "idempotency_key": key,
        "request_type": "repair",
        "message": "Handpiece overheats",
        "contact_phone": "+372 5555 0101",
        "device_crm_id": device_id,
        "contact_crm_id": contact_id,
        "files": [spool_file(delivery, f"{name}/photo.jpg", JPEG)],
    }
    request_id, _ = outbox.enqueue(delivery.conn, data, request_types=TYPES, now=NOW)
    return request_id, key


def test_a_queued_request_of_a_restricted_contact_goes_dead_without_reaching_the_crm(
    delivery: OutboxDelivery, fake: FakeBitrix24
) -> None:
    restricted, other = sorted(fake.records("contacts"), key=int)[:2]
    device = sorted(fake.records("devices"), key=int)[0]
    blocked_id, blocked_key = queue(delivery, restricted, device, "blocked")
    fine_id, fine_key = queue(delivery, other, device, "fine")
    restrictions.restrict(delivery.conn, restricted, now=NOW)
    start = len(fake.request_log)

    claimed = delivery.deliver_next()
    assert claimed is not None and claimed.id == blocked_id
    stored = outbox.get(delivery.conn, blocked_id)
    assert stored is not None
    assert (stored.status, stored.last_error, stored.crm_id) == ("dead", RESTRICTED, None)
    assert crm_calls(fake, start) == []  # not even a look-up by key
    assert not any(item.get("xmlId") == blocked_key for item in fake.service_requests().values())
    assert (delivery.options.spool / "blocked/photo.jpg").exists()  # kept for retry or drop
    assert [f.status for f in stored.files] == ["pending"]
    # no personal data in the reason the portal shows
    assert "+372" not in RESTRICTED and restricted not in RESTRICTED

    # one dead request never blocks the others
    assert delivery.deliver_next() is not None
    done = outbox.get(delivery.conn, fine_id)
    assert done is not None and done.status == "done"
    assert any(item.get("xmlId") == fine_key for item in fake.service_requests().values())

    # lifted, and retried by an operator: it is delivered
    restrictions.unrestrict(delivery.conn, restricted)
    assert outbox.retry(delivery.conn, blocked_id, now=NOW) == 1
    delivery.deliver_next()
    retried = outbox.get(delivery.conn, blocked_id)
    assert retried is not None and retried.status == "done" and retried.last_error is None


def test_a_request_whose_crm_item_exists_stops_when_its_contact_is_restricted(
    delivery: OutboxDelivery, fake: FakeBitrix24
) -> None:
    """An attempt interrupted after the CRM item was created: the next one sends nothing more
    (no file upload, no attachment) once the contact is restricted, and says so."""
    restricted = sorted(fake.records("contacts"), key=int)[0]
    device = sorted(fake.records("devices"), key=int)[0]
    request_id, _key = queue(delivery, restricted, device, "half")
    outbox.record_crm_id(delivery.conn, request_id, crm_id="4242", now=NOW)
    restrictions.restrict(delivery.conn, restricted, now=NOW)
    start = len(fake.request_log)
    delivery.deliver_next()
    stored = outbox.get(delivery.conn, request_id)
    assert stored is not None
    assert (stored.status, stored.last_error) == ("dead", RESTRICTED_AFTER_CREATE)
    assert crm_calls(fake, start) == []


@dataclass
class Desk:
    """The real API server filing into the delivery's cache and spool."""

    client: httpx.Client
    server: ApiServer

    def post(self, key: str, **fields: str) -> httpx.Response:
        parts: list[tuple[str, tuple[str | None, bytes | str, str | None]]] = [
            (name, (None, value, None)) for name, value in {"request_type": "repair", **fields}
            .items()
        ]
        parts.append(("files", ("photo.jpg", JPEG, "image/jpeg")))
        return self.client.post(
            "/v1/service-requests", headers={"Idempotency-Key": key}, files=parts
        )

    def status(self, key: str) -> dict[str, Any]:
        answer = self.client.get(f"/v1/service-requests/{key}")
        assert answer.status_code == 200
        body: dict[str, Any] = check(answer, "/v1/service-requests/{key}")
        return body


@pytest.fixture
def desk(delivery: OutboxDelivery, settings: Settings) -> Iterator[Desk]:
    cache_path = settings.state.cache_path
    connections = ThreadConnections(lambda: connect(cache_path))
    intake = ServiceRequestIntake(
        connections.get,
        IntakeOptions(spool=delivery.options.spool, request_types=TYPES, min_free_bytes=0),
    )
    locations = connect(cache_path)
    app = make_app(StubVat(), CacheLocations(locations), StubHealth(), service_requests=intake)
    server = ApiServer(app, listen="127.0.0.1:0", threads=2)
    server.start()
    client = make_api_client(server.address)
    yield Desk(client, server)
    client.close()
    server.stop(timeout=2)
    connections.close_all()
    locations.close()


def test_the_door_refuses_a_restricted_contact_and_the_portal_reads_the_reason(
    desk: Desk, delivery: OutboxDelivery, fake: FakeBitrix24
) -> None:
    restricted, other = sorted(fake.records("contacts"), key=int)[:2]
    filed_before = str(uuid.uuid4())
    assert desk.post(filed_before, contact_crm_id=restricted).status_code == 202
    restrictions.restrict(delivery.conn, restricted, now=NOW)
    rows_before = outbox.list_requests(delivery.conn)

    # a new request: refused at once, documented, nothing stored
    refused = desk.post(str(uuid.uuid4()), contact_crm_id=restricted, message="Mari's laser")
    assert refused.status_code == 409
    error = check(refused, "/v1/service-requests", "post")["error"]
    assert (error["code"], error["field"]) == ("contact_restricted", "contact_crm_id")
    assert "Mari" not in refused.text and restricted not in error["message"]
    assert outbox.list_requests(delivery.conn) == rows_before
    assert not any((delivery.options.spool / ".incoming").iterdir())
    assert desk.post(str(uuid.uuid4()), contact_crm_id=other).status_code == 202

    # the one filed before the restriction: its retry gets the first answer, and delivery
    # turns it dead with the reason the portal reads through the API
    replay = desk.post(filed_before, contact_crm_id=restricted)
    assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
    start = len(fake.request_log)
    delivery.deliver_next()
    status = desk.status(filed_before)
    assert (status["status"], status["last_error"], status["crm_id"]) == ("dead", RESTRICTED, None)
    assert crm_calls(fake, start) == []


# -- the portal: a PHP client reads the flag through the contract ------------------------------

PORTAL_UID = 2742
DAEMON_GID = 2741


@dataclass(frozen=True)
class PortalCache:
    conn: sqlite3.Connection  # syncd's own connection (WAL), open while PHP reads
    path: Path
    harness: Path
    as_portal: list[str]  # the setpriv prefix, or [] when this run cannot switch users


@pytest.fixture
def portal_cache(fake: FakeBitrix24) -> Iterator[PortalCache]:
    """A cache mirrored by the real engine into a state directory laid out as deployed (0750,
    files 0640, group = the daemon's, which the portal's UID joins); where this run may switch
    users the PHP client runs as another UID, else as this one (still read-only)."""
    switch = os.geteuid() == 0 and shutil.which("setpriv") is not None
    base = Path(tempfile.mkdtemp(prefix="syncd-restricted-"))  # pytest's own tmp is 0700
    old_umask = os.umask(0o027)
    conn: sqlite3.Connection | None = None
    try:
        base.chmod(0o755)
        for script in (HARNESS, EXAMPLES):
            shutil.copy(script, base / script.name)
        state = base / "state"
        state.mkdir()
        if switch:
            os.chown(state, 0, DAEMON_GID)
        state.chmod(0o2750)  # setgid: the cache files get the directory's group
        settings = make_settings(base, fake)
        conn = open_cache(settings)
        engine = build_engine(settings, conn)
        try:
            engine.run_cycle()
        finally:
            engine.adapter.close()
        prefix = (
            ["setpriv", "--reuid", str(PORTAL_UID), "--regid", str(PORTAL_UID),
             "--groups", str(DAEMON_GID)]
            if switch
            else []
        )
        yield PortalCache(conn, settings.state.cache_path, base / HARNESS.name, prefix)
    finally:
        if conn is not None:
            conn.close()
        os.umask(old_umask)
        shutil.rmtree(base, ignore_errors=True)


def run_portal(php: str, side: PortalCache, request: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [*side.as_portal, php, "-d", "display_errors=stderr", "-d", "error_reporting=-1",
         str(side.harness)],
        input=json.dumps({"path": str(side.path), **request}),
        capture_output=True, text=True, timeout=60, cwd="/",
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr[-2000:]
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def test_a_php_client_sees_the_restriction_through_the_documented_column(
    portal_cache: PortalCache,
) -> None:
    php = _php_or_skip()
    conn = portal_cache.conn
    company, restricted, other, email = _company_with_two_contacts(conn)
    restrictions.restrict(conn, restricted, now=NOW)
    restrictions.restrict(conn, "999999999", now=NOW)  # not in the cache: no row to flag
    request = {"company": company, "contacts": [restricted, other, "999999999"], "email": email}

    seen = run_portal(php, portal_cache, request)
    if portal_cache.as_portal:
        assert seen["uid"] == PORTAL_UID
    assert seen["write"] == "refused"  # the cache is read-only for the portal
    column = dict(seen["column"])
    assert column[restricted] == 1 and column[other] == 0
    assert {crm_id for crm_id, flag in column.items() if flag != 0} == {restricted}
    assert all(flag in (0, 1) and isinstance(flag, int) for flag in column.values())
    page = dict(seen["page"])  # example 9.3
    assert page[restricted] is True and page[other] is False
    assert sum(page.values()) == 1
    assert dict(seen["by_email"])[restricted] is True  # example 9.4
    assert dict(seen["asked"]) == {restricted: True, other: False, "999999999": False}

    restrictions.unrestrict(conn, restricted)
    lifted = run_portal(php, portal_cache, request)
    assert not any(flag for _crm_id, flag in lifted["column"])
    assert dict(lifted["page"])[restricted] is False
    assert dict(lifted["asked"])[restricted] is False


def _company_with_two_contacts(conn: sqlite3.Connection) -> tuple[str, str, str, str]:
    """A company with at least two contacts, one of which has an e-mail address: the company,
    that contact, another of its contacts, and the address."""
    rows = conn.execute(
        "SELECT c.company_id, c.crm_id, c.emails FROM contacts c WHERE c.company_id IN "
        "(SELECT company_id FROM contacts WHERE company_id IS NOT NULL "
        " GROUP BY company_id HAVING count(*) >= 2) ORDER BY c.company_id, c.crm_id"
    ).fetchall()
    for company, crm_id, emails in rows:
        addresses = json.loads(emails)
        if addresses:
            other = next(r[1] for r in rows if r[0] == company and r[1] != crm_id)
            return company, crm_id, other, addresses[0]["value"]
    pytest.fail("the fake's dataset has no company with two contacts and an e-mail address")


def test_the_harness_uses_only_the_documented_examples() -> None:
    """The PHP client reads ``contacts.restricted`` through the contract's examples (9.3, 9.4)
    and the documented column, never the internal ``subject_restrictions``."""
    code = HARNESS.read_text(encoding="utf-8")
    assert "require __DIR__ . '/portal_examples.php';" in code
    assert "subject_restrictions" not in code
    for function in ("syncd_company_page", "syncd_find_contacts_by_email",
                     "syncd_contact_restricted", "syncd_open", "syncd_read"):
        assert f"{function}(" in code
