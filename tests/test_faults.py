"""Every injected fault kind is survived: no crash, no corrupted cache, the right backoff."""

from __future__ import annotations

import sqlite3

import pytest

from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.connectors.crm.bitrix24.fake_view import adapter_view
from syncd.core.errors import AuthError, RetriableError
from syncd.daemon.jobs import Job
from syncd.engines.mirror import MirrorEngine
from syncd.engines.verify import differences
from tests.conftest import RecordingStop

TRANSIENT = [
    "query_limit",
    "operation_time_limit",
    "internal_error",
    "html_error",
    "drop",
    "malformed_json",
    "truncated_json",
]


@pytest.mark.parametrize("kind", TRANSIENT)
@pytest.mark.parametrize("method", ["crm.contact.list", "batch", "crm.item.list"])
def test_transient_faults_are_retried(
    kind: str, method: str, engine: MirrorEngine, cache: sqlite3.Connection, fake: FakeBitrix24
) -> None:
    engine.run_cycle()
    fake.mutate_random(creates=5, updates=10, deletes=0, seed=2)
    fake.faults.add(kind, times=2, method=method)
    report = engine.run_cycle()
    assert report.kind == "incremental"
    assert differences(cache, engine.mappings, adapter_view(fake)) == []


def test_rate_limit_honours_retry_after(
    engine: MirrorEngine, fake: FakeBitrix24, stop: RecordingStop
) -> None:
    fake.faults.add("query_limit", times=1, method="crm.company.list", retry_after=7)
    engine.run_cycle()
    assert 7.0 in stop.waits


def test_backoff_grows_between_attempts(
    engine: MirrorEngine, fake: FakeBitrix24, stop: RecordingStop
) -> None:
    fake.faults.add("internal_error", times=3, method="crm.company.list")
    engine.run_cycle()
    assert len(stop.waits) == 3
    policy = engine.adapter.client.retry  # type: ignore[attr-defined]
    for attempt, waited in enumerate(stop.waits, start=1):
        assert 0 <= waited <= policy.base_delay * 2 ** (attempt - 1)


def test_persistent_outage_fails_the_cycle_and_keeps_the_cache(
    engine: MirrorEngine, cache: sqlite3.Connection, fake: FakeBitrix24
) -> None:
    engine.run_cycle()
    before = cache.execute("SELECT count(*), max(id) FROM sync_runs").fetchone()
    fake.mutate_random(creates=5, updates=5, deletes=0, seed=4)
    fake.faults.add("internal_error", times=100, method="crm.item.list")
    job = Job("mirror", lambda: engine.run_cycle().summary(), base_backoff=0.0)
    assert job.run(cache) is False
    assert job.state == "failing"
    assert cache.execute("SELECT count(*), max(id) FROM sync_runs").fetchone() == before
    fake.faults.clear()
    assert job.run(cache) is True
    assert differences(cache, engine.mappings, adapter_view(fake)) == []


def test_slow_answer_beyond_the_timeout_is_retried(tmp_path, fake: FakeBitrix24) -> None:  # type: ignore[no-untyped-def]
    from syncd.runtime import build_engine, open_cache
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, fake)
    settings.crm.timeout_seconds = 0.3
    conn = open_cache(settings)
    engine = build_engine(settings, conn, stop=RecordingStop())
    fake.faults.add("slow", times=1, method="crm.contact.list", delay=1.0)
    engine.run_cycle()
    assert differences(conn, engine.mappings, adapter_view(fake)) == []
    engine.adapter.close()


def test_auth_error_is_fatal_and_not_retried(
    engine: MirrorEngine, fake: FakeBitrix24, cache: sqlite3.Connection
) -> None:
    fake.faults.add("auth_error", times=5)
    with pytest.raises(AuthError):
        engine.run_cycle()
    assert fake.request_count == 1
    assert cache.execute("SELECT count(*) FROM companies").fetchone()[0] == 0


def test_giving_up_raises_a_retriable_error(engine: MirrorEngine, fake: FakeBitrix24) -> None:
    fake.faults.add("drop", times=50, method="crm.company.list")
    with pytest.raises(RetriableError):
        engine.run_cycle()


# Faults aimed at chained batch listings during a full resync: one sub-command failing inside a
# halt=0 batch (with and without earlier commands of its chain having succeeded), the whole
# batch refused by the leaky bucket, and a batch answer cut off mid-body.
BATCH_FAULTS = [
    # (kind, method, matching requests let through first, whether the batch made no progress)
    ("operation_time_limit", "crm.contact.list", 1, True),  # the chain's first command fails
    ("operation_time_limit", "crm.contact.list", 3, False),  # a command inside the chain fails
    ("internal_error", "crm.item.list", 1, True),
    ("internal_error", "crm.address.list", 4, False),
    ("operation_time_limit", "crm.requisite.list", 0, False),  # addresses still progress
    ("query_limit", "batch", 1, True),
    ("truncated_json", "batch", 2, True),
    ("drop", "batch", 1, True),
]


@pytest.mark.parametrize(("kind", "method", "after", "stalled"), BATCH_FAULTS)
def test_batch_level_faults_during_a_full_resync(
    kind: str,
    method: str,
    after: int,
    stalled: bool,
    engine: MirrorEngine,
    cache: sqlite3.Connection,
    fake: FakeBitrix24,
    stop: RecordingStop,
) -> None:
    fault = fake.faults.add(kind, times=2, method=method, after=after)
    report = engine.run_cycle()
    assert report.kind == "full"
    assert fault.fired == 2
    # A batch that got nothing done is retried after a backoff; one whose failed command came
    # after others of its chain had answered goes on at once from the last trusted row.
    assert bool(stop.waits) is stalled
    assert differences(cache, engine.mappings, adapter_view(fake)) == []
