"""Retention: each store purged to exactly its window (a row just past it goes, one just inside
stays), the outbox's requests cleared but never while being sent, the VIES stale fallback off by
default, the settings, ``syncd status`` and ``/metrics`` showing each store's oldest row, and the
daemon's retention job running on its own."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from syncd.api.metrics import CacheCollector
from syncd.cli.status import collect, render
from syncd.config import RetentionSettings, Settings, load_settings
from syncd.connectors.vies.errors import ViesUnavailableError
from syncd.core.clock import iso, iso_ms, utc_now
from syncd.core.errors import ConfigError
from syncd.daemon.jobs import Job
from syncd.daemon.services_lane import ServicesLane
from syncd.engines.retention import RetentionError, RetentionOptions, purge_all
from syncd.engines.vat import VatOptions, VatService, VatUnavailableError
from syncd.runtime import retention_options
from syncd.state import audit, health, outbox, vies_cache
from syncd.state import retention as stores
from syncd.state.cache import CacheStore
from syncd.state.db import connect, write_transaction
from tests.conftest import wait_for

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
MS = timedelta(milliseconds=1)
TYPES = frozenset({"repair"})
DEFAULTS = RetentionSettings()
WINDOWS = DEFAULTS.windows()


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = connect(tmp_path / "cache.sqlite3")
    yield connection
    connection.close()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    path = tmp_path / "spool"
    path.mkdir()
    return path


def options(spool: Path, **windows: timedelta) -> RetentionOptions:
    return RetentionOptions(
        windows={**WINDOWS, **windows}, purge_interval=timedelta(minutes=15), spool=spool
    )


def column(conn: sqlite3.Connection, sql: str) -> list[Any]:
    return [row[0] for row in conn.execute(sql)]


# -- the stores and their windows -------------------------------------------------------------


def test_every_store_has_a_window_setting_and_the_defaults_are_the_policys(
    conn: sqlite3.Connection,
) -> None:
    assert set(stores.STORES) == set(RetentionSettings.window_fields()) == set(WINDOWS)
    assert WINDOWS["vies_answers"] == timedelta(hours=24)  # "cached for 24 hours"
    assert WINDOWS["audit_log"] == timedelta(days=730)  # "audit log kept two years"
    assert WINDOWS["delivered_requests"] == timedelta(days=7)
    with pytest.raises(ValueError, match="no retention window for audit_log"):
        purge_all(conn, RetentionOptions(
            windows={k: v for k, v in WINDOWS.items() if k != "audit_log"},
            purge_interval=timedelta(minutes=15), spool=Path("/nonexistent"),
        ), now=NOW)


def answer(number: str) -> vies_cache.CachedAnswer:
    return vies_cache.CachedAnswer("EE", number, True, "Example OÜ", "Tartu mnt 1", "2026-06-01",
                                   None, NOW)


def test_vies_answers_go_24_hours_after_the_lookup(conn: sqlite3.Connection, spool: Path) -> None:
    vies_cache.put(conn, answer("100000001"), NOW - timedelta(hours=24) - SECOND)
    vies_cache.put(conn, answer("100000002"), NOW - timedelta(hours=24))  # at the cutoff
    vies_cache.put(conn, answer("100000003"), NOW - timedelta(hours=1))
    report = purge_all(conn, options(spool), now=NOW)
    assert report.purged["vies_answers"] == 1
    assert column(conn, "SELECT vat_number FROM vies_answers ORDER BY 1") == [
        "100000002", "100000003"
    ]


def test_audit_entries_go_after_two_years(conn: sqlite3.Connection) -> None:
    cutoff = NOW - timedelta(days=730)
    for moment, action in ((cutoff - SECOND, "old"), (cutoff, "edge"), (NOW, "new")):
        audit.record(conn, action, actor="root")
        conn.execute("UPDATE audit_log SET at = ? WHERE action = ?", (iso(moment), action))
    assert stores.purge_audit_log(conn, before=cutoff) == 1
    assert column(conn, "SELECT action FROM audit_log ORDER BY id") == ["edge", "new"]


# -- the outbox -------------------------------------------------------------------------------


def file_request(conn: sqlite3.Connection, spool: Path, at: datetime) -> int:
    """A request with one attached file (in the spool), filed at ``at``."""
    key = str(uuid.uuid4())
    (spool / key).mkdir()
    (spool / key / "0.jpg").write_bytes(b"jpg")
    request_id, created = outbox.enqueue(
        conn,
        {
            "idempotency_key": key,
            "request_type": "repair",
            "message": "The laser does not start",
            "contact_phone": "+372 5555 0101",
            "contact_email": "mari@example.ee",
            "contact_address": "Tartu mnt 1, Tallinn",
            "contact_crm_id": "5",
            "files": [{"path": f"{key}/0.jpg", "original_name": "Mari Maasikas.jpg",
                       "declared_type": "image/jpeg", "size": 3}],
        },
        request_types=TYPES,
        now=at,
    )
    assert created
    return request_id


def claim(conn: sqlite3.Connection, request_id: int, at: datetime) -> None:
    claimed = outbox.claim(conn, worker="w", now=at, lease_seconds=60, max_attempts=5)
    assert claimed is not None and claimed.id == request_id


def delivered(conn: sqlite3.Connection, spool: Path, at: datetime) -> int:
    request_id = file_request(conn, spool, at - timedelta(minutes=1))
    claim(conn, request_id, at)
    assert outbox.ack(conn, request_id, worker="w", crm_id=f"9{request_id}", now=at)
    return request_id


def dead(conn: sqlite3.Connection, spool: Path, at: datetime) -> int:
    request_id = file_request(conn, spool, at - timedelta(minutes=1))
    claim(conn, request_id, at)
    status = outbox.fail(conn, request_id, worker="w", error="the device 17 is not in the CRM",
                         permanent=True, now=at, max_attempts=5)
    assert status == "dead"
    return request_id


def assert_cleared(request: outbox.OutboxRequest | None) -> None:
    assert request is not None
    assert (request.message, request.contact_phone, request.contact_email,
            request.contact_address) == (None, None, None, None)
    assert [f.original_name for f in request.files] == [""]


def assert_untouched(request: outbox.OutboxRequest | None) -> None:
    assert request is not None
    assert request.message == "The laser does not start"
    assert request.contact_email == "mari@example.ee"
    assert [f.original_name for f in request.files] == ["Mari Maasikas.jpg"]


def dropped_at(conn: sqlite3.Connection, request_id: int) -> str | None:
    row = conn.execute(
        "SELECT message_dropped_at FROM outbox_requests WHERE id = ?", (request_id,)
    ).fetchone()
    return None if row[0] is None else str(row[0])


def test_delivered_requests_keep_only_their_status_after_7_days(
    conn: sqlite3.Connection, spool: Path
) -> None:
    cutoff = NOW - timedelta(days=7)
    old = delivered(conn, spool, cutoff - MS)
    edge = delivered(conn, spool, cutoff)
    report = purge_all(conn, options(spool), now=NOW)
    assert report.purged["delivered_requests"] == 1
    cleared = outbox.get(conn, old)
    assert_cleared(cleared)
    assert cleared is not None
    assert (cleared.status, cleared.crm_id, cleared.delivered_at) == (
        "done", f"9{old}", iso_ms(cutoff - MS)
    )
    assert cleared.idempotency_key and cleared.created_at
    assert dropped_at(conn, old) == iso_ms(NOW)
    assert_untouched(outbox.get(conn, edge))
    assert purge_all(conn, options(spool), now=NOW).purged["delivered_requests"] == 0


def test_dead_requests_lose_details_and_files_after_their_window_never_while_sending(
    conn: sqlite3.Connection, spool: Path
) -> None:
    cutoff = NOW - timedelta(days=30)
    old = dead(conn, spool, cutoff - MS)
    edge = dead(conn, spool, cutoff)
    sending = file_request(conn, spool, cutoff - timedelta(days=5))
    claim(conn, sending, NOW - timedelta(minutes=1))  # its lease runs until after NOW

    report = purge_all(conn, options(spool), now=NOW)

    assert report.purged["dead_requests"] == 1 and report.files_deleted == 1
    cleared = outbox.get(conn, old)
    assert_cleared(cleared)
    assert cleared is not None
    assert (cleared.status, cleared.last_error) == ("dead", "the device 17 is not in the CRM")
    assert [f.status for f in cleared.files] == ["deleted"]
    assert not (spool / cleared.idempotency_key).exists()  # the file and its directory
    kept = outbox.get(conn, edge)
    assert_untouched(kept)
    assert kept is not None and (spool / kept.files[0].path).exists()
    leased = outbox.get(conn, sending)
    assert leased is not None and leased.status == "sending"
    assert_untouched(leased)
    assert (spool / leased.files[0].path).exists()
    # A request whose details are gone is never sent again; the younger one still can be.
    assert outbox.retry(conn, old, now=NOW) == 0
    assert outbox.retry(conn, None, now=NOW) == 1
    assert outbox.get(conn, edge).status == "pending"  # type: ignore[union-attr]


def test_dead_request_files_left_by_a_crash_are_deleted_by_the_next_run(
    conn: sqlite3.Connection, spool: Path
) -> None:
    old = dead(conn, spool, NOW - timedelta(days=31))
    stores.clear_dead_requests(conn, before=NOW - timedelta(days=30), now=NOW)  # then a crash
    request = outbox.get(conn, old)
    assert request is not None and (spool / request.files[0].path).exists()
    report = purge_all(conn, options(spool), now=NOW)
    assert (report.purged["dead_requests"], report.files_deleted) == (0, 1)
    assert not (spool / request.files[0].path).exists()


def test_a_file_that_cannot_be_deleted_fails_the_job_after_the_other_stores(
    conn: sqlite3.Connection, spool: Path
) -> None:
    old = dead(conn, spool, NOW - timedelta(days=31))
    request = outbox.get(conn, old)
    assert request is not None
    path = spool / request.files[0].path
    path.unlink()
    path.mkdir()  # not a regular file: never removed
    audit.record(conn, "old", actor="root")
    conn.execute("UPDATE audit_log SET at = ?", (iso(NOW - timedelta(days=731)),))
    with pytest.raises(RetentionError, match="not purged this time: 1 spool file"):
        purge_all(conn, options(spool), now=NOW)
    assert column(conn, "SELECT count(*) FROM audit_log") == [0]  # the others were purged
    assert_cleared(outbox.get(conn, old))


def test_request_rows_go_a_year_after_they_ended(conn: sqlite3.Connection, spool: Path) -> None:
    cutoff = NOW - timedelta(days=365)
    old_done = delivered(conn, spool, cutoff - MS)
    old_dead = dead(conn, spool, cutoff - MS)
    edge = delivered(conn, spool, cutoff)
    report = purge_all(conn, options(spool), now=NOW)
    assert report.purged["request_rows"] == 2
    assert column(conn, "SELECT id FROM outbox_requests") == [edge]
    assert column(conn, "SELECT request_id FROM outbox_files") == [edge]  # with their files
    assert old_done and old_dead


# -- the mirror's bookkeeping -----------------------------------------------------------------


def test_sync_runs_go_after_30_days_but_the_newest_stays(conn: sqlite3.Connection) -> None:
    cutoff = NOW - timedelta(days=30)
    store = CacheStore(conn)
    with write_transaction(conn):
        for moment in (cutoff - SECOND, cutoff, cutoff - timedelta(days=9)):
            store.start_run("incremental", ["contacts"], started_at=moment, now=moment)
    assert stores.purge_sync_runs(conn, before=cutoff) == 1
    # The newest run (by ID) is the portal's "data as of": it stays however old it is.
    assert column(conn, "SELECT finished_at FROM sync_runs ORDER BY id") == [
        iso(cutoff), iso(cutoff - timedelta(days=9))
    ]
    assert stores.purge_sync_runs(conn, before=NOW + timedelta(days=999)) == 1
    assert column(conn, "SELECT count(*) FROM sync_runs") == [1]


def test_finished_control_requests_go_after_30_days(conn: sqlite3.Connection) -> None:
    cutoff = NOW - timedelta(days=30)
    rows = [("done", cutoff - SECOND), ("failed", cutoff - SECOND), ("done", cutoff),
            ("pending", None)]
    conn.executemany(
        "INSERT INTO control_requests (action, entity, requested_by, requested_at, status, "
        "finished_at) VALUES ('resync', 'contacts', 'root', ?, ?, ?)",
        [(iso(cutoff - timedelta(days=99)), status, iso(at) if at else None)
         for status, at in rows],
    )
    assert stores.purge_control_requests(conn, before=cutoff) == 2
    assert column(conn, "SELECT status FROM control_requests ORDER BY id") == ["done", "pending"]


def test_quarantine_and_held_deletes_go_after_their_windows(
    conn: sqlite3.Connection, spool: Path
) -> None:
    quarantine_cutoff, held_cutoff = NOW - timedelta(days=30), NOW - timedelta(days=14)
    for crm_id, moment in (("1", quarantine_cutoff - SECOND), ("2", quarantine_cutoff)):
        conn.execute(
            "INSERT INTO quarantine (entity, crm_id, reason, first_seen_at, last_seen_at) "
            "VALUES ('contacts', ?, 'no name', ?, ?)",
            (crm_id, iso(moment - timedelta(days=50)), iso(moment)),
        )
    for crm_id, moment in (("3", held_cutoff - SECOND), ("4", held_cutoff)):
        conn.execute(
            "INSERT INTO held_deletes (entity, crm_id, detected_at, reason) "
            "VALUES ('devices', ?, ?, 'over the guard')",
            (crm_id, iso(moment)),
        )
    report = purge_all(conn, options(spool), now=NOW)
    assert (report.purged["quarantine"], report.purged["held_deletes"]) == (1, 1)
    assert column(conn, "SELECT crm_id FROM quarantine") == ["2"]
    assert column(conn, "SELECT crm_id FROM held_deletes") == ["4"]


def stage_contact(conn: sqlite3.Connection, crm_id: str) -> None:
    conn.execute(
        "INSERT INTO stage_contacts (crm_id, content_hash, synced_at) VALUES (?, 'h', '')",
        (crm_id,),
    )


def test_a_resync_never_resumed_is_discarded_after_7_days(conn: sqlite3.Connection) -> None:
    cutoff = NOW - timedelta(days=7)
    store = CacheStore(conn)
    conn.execute("INSERT INTO contacts (crm_id, content_hash, synced_at) VALUES ('1', 'h', ?)",
                 (iso(NOW),))
    with write_transaction(conn):
        store.begin_resync(["contacts", "devices"], now=cutoff)
    stage_contact(conn, "2")
    conn.executemany(
        "INSERT INTO data_quality (entity, crm_id, message, first_seen, last_seen) "
        "VALUES ('contacts', ?, 'some warning', ?, ?)",
        [(crm_id, iso(NOW), iso(NOW)) for crm_id in ("1", "2")],
    )
    # Started at the cutoff: not yet abandoned.
    assert stores.purge_resync_progress(conn, before=cutoff) == 0
    assert set(store.resync_progress()) == {"contacts", "devices"}

    assert stores.purge_resync_progress(conn, before=cutoff + SECOND) == 3  # 2 entities, 1 row
    assert store.resync_progress() == {}
    assert column(conn, "SELECT count(*) FROM stage_contacts") == [0]
    # The live contact's warning stays; the staged one's, which never reached the cache, goes.
    assert column(conn, "SELECT crm_id FROM data_quality") == ["1"]


# -- VIES: the stale fallback is off by default -----------------------------------------------


class DownVies:
    """A VIES client whose every call fails as a transport failure would."""

    calls = 0

    def check(self, country_code: str, vat_number: str) -> Any:
        self.calls += 1
        raise ViesUnavailableError("VIES: transport failure (timeout)", code="timeout")

    def close(self) -> None:
        pass


def test_by_default_an_expired_answer_is_never_shown_and_is_gone_after_the_purge(
    tmp_path: Path, spool: Path
) -> None:
    path = tmp_path / "cache.sqlite3"
    conn = connect(path)
    number = "100931558"
    vies_cache.put(conn, answer(number), NOW - timedelta(hours=24, minutes=30))
    client = DownVies()
    defaults = load_settings(None, state={"directory": tmp_path})
    assert defaults.vies_stale_hours == 0
    service = VatService(
        lambda: connect(path),
        client,
        VatOptions(keep_hours=defaults.retention.vies_answers_hours, max_attempts=1,
                   retry_base_delay=0.01),
        clock=lambda: NOW,
    )
    try:
        with pytest.raises(VatUnavailableError):  # stored, expired: not shown
            service.lookup(f"EE{number}")
        purge_all(conn, options(spool), now=NOW)
        assert vies_cache.get(conn, "EE", number) is None
        with pytest.raises(VatUnavailableError):
            service.lookup(f"EE{number}")
        assert client.calls == 2
    finally:
        service.close()
        conn.close()


# -- settings ---------------------------------------------------------------------------------


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNCD_CONFIG", raising=False)


def refused(tmp_path: Path, text: str) -> str:
    config = tmp_path / "syncd.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    return str(caught.value)


@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[vies]\nstale_max_hours = 24\n",
         "vies.stale_max_hours: moved: the stale fallback is now retention.vies_answers_hours "
         "minus vies.cache_hours (0 by default: off)"),
        ("[vies]\npurge_interval_minutes = 60\n",
         "vies.purge_interval_minutes: moved: retention.purge_interval_minutes"),
        ("[outbox]\nmessage_retention_days = 90\n",
         "outbox.message_retention_days: moved: retention.delivered_requests_days"),
        ("[retention]\nvies_answers_hours = 12\n",
         "retention.vies_answers_hours: 12 is below vies.cache_hours (24); an answer cannot be "
         "reused longer than it is kept"),
        ("[retention]\nrequest_rows_days = 20\n",
         "retention.request_rows_days: 20 is below retention.dead_requests_days (30)"),
        ("[retention]\naudit_log_days = 0\n",
         "retention.audit_log_days: must be greater than or equal to 1 (got 0)"),
    ],
)
def test_settings_that_moved_or_do_not_fit_are_refused_in_one_line(
    tmp_path: Path, text: str, message: str
) -> None:
    error = refused(tmp_path, text)
    assert error.startswith(message), error
    assert "\n" not in error


@pytest.mark.usefixtures("no_env")
def test_a_stale_window_is_the_difference_and_reaches_the_vat_service(tmp_path: Path) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text("[vies]\ncache_hours = 12\n[retention]\nvies_answers_hours = 36\n")
    settings = load_settings(config)
    assert settings.vies_stale_hours == 24
    from syncd.runtime import vat_options

    assert (vat_options(settings).cache_hours, vat_options(settings).keep_hours) == (12, 36)
    assert retention_options(settings).windows["vies_answers"] == timedelta(hours=36)


# -- status and /metrics ----------------------------------------------------------------------


def seed_for_status(conn: sqlite3.Connection) -> None:
    """An audit entry past its window by more than a purge interval (the purge is not working),
    and a VIES answer well inside its own."""
    now = utc_now()
    audit.record(conn, "outbox.retry", actor="root")
    conn.execute("UPDATE audit_log SET at = ?", (iso(now - timedelta(days=731)),))
    vies_cache.put(conn, answer("100931558"), now - timedelta(hours=1))


def test_status_shows_each_stores_oldest_row_and_warns_when_the_purge_lags(
    conn: sqlite3.Connection, tmp_path: Path
) -> None:
    seed_for_status(conn)
    Job("retention", lambda: None).run(conn)
    report = collect(conn, tmp_path, RetentionSettings(audit_log_days=800))
    kept = {s["store"]: s for s in report["retention"]["stores"]}
    assert set(kept) == set(stores.STORES)
    assert kept["audit_log"]["rows"] == 1 and not kept["audit_log"]["overdue"]
    assert kept["audit_log"]["window_seconds"] == 800 * 86_400

    report = collect(conn, tmp_path)  # the default windows
    kept = {s["store"]: s for s in report["retention"]["stores"]}
    assert kept["audit_log"]["overdue"] is True
    assert 731 * 86_400 <= kept["audit_log"]["oldest_age_seconds"] < 732 * 86_400
    assert kept["vies_answers"]["rows"] == 1 and kept["vies_answers"]["overdue"] is False
    assert kept["held_deletes"] == {
        "store": "held_deletes", "rows": 0, "oldest_at": None, "oldest_age_seconds": None,
        "window_seconds": 14 * 86_400, "overdue": False,
    }
    assert not report["healthy"]
    assert any(p.startswith("retention: the oldest audit_log row is 731 d old, past its window "
                            "(730 d)") for p in report["problems"]), report["problems"]
    text = render(report)
    assert "retention  purge job ok, last success" in text and "every 15 min" in text
    assert "  audit_log" in text and "oldest 731 d (window 730 d)  OVERDUE: not purged" in text
    assert "  vies_answers" in text and "(window 24 h)" in text
    assert "  held_deletes" not in text  # empty stores are left out


def test_metrics_show_each_stores_rows_oldest_row_and_whether_it_is_overdue(
    conn: sqlite3.Connection,
) -> None:
    seed_for_status(conn)
    now = utc_now()
    families = {
        f.name: {s.labels["store"]: s.value for s in f.samples}
        for f in CacheCollector(lambda: conn, clock=lambda: now).collect()
        if f.name.startswith("syncd_retention_")
    }
    assert set(families) == {"syncd_retention_rows", "syncd_retention_oldest_age_seconds",
                             "syncd_retention_window_seconds", "syncd_retention_overdue"}
    assert families["syncd_retention_rows"]["audit_log"] == 1
    assert families["syncd_retention_oldest_age_seconds"]["audit_log"] >= 731 * 86_400
    assert families["syncd_retention_oldest_age_seconds"]["held_deletes"] == 0
    assert families["syncd_retention_window_seconds"]["vies_answers"] == 86_400
    assert families["syncd_retention_overdue"] == {
        store: (1.0 if store == "audit_log" else 0.0) for store in stores.STORES
    }


# -- the daemon's job -------------------------------------------------------------------------


def test_the_services_lane_runs_the_retention_job_without_a_crm(tmp_path: Path) -> None:
    settings: Settings = load_settings(
        None, state={"directory": tmp_path / "state"}, omniva={"enabled": False}
    )
    assert not settings.crm_configured
    conn = connect(settings.state.cache_path)
    seed_for_status(conn)
    vies_cache.put(conn, answer("100000001"), utc_now() - timedelta(hours=25))
    stop = threading.Event()
    lane = ServicesLane(settings, stop, vat=None)
    assert set(lane.jobs) == {"retention"}
    lane.start()

    def purged() -> bool:
        job = health.load(conn, "retention")
        return (
            job is not None
            and job.state == "ok"
            and column(conn, "SELECT count(*) FROM audit_log") == [0]
        )

    try:
        wait_for(purged, 30, "the retention job to purge the audit log")
        assert column(conn, "SELECT vat_number FROM vies_answers") == ["100931558"]
    finally:
        stop.set()
        assert lane.shutdown(10)
        conn.close()
