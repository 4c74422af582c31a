"""Outbox delivery over the in-memory CRM: no HTTP, no fake server. The push engine's own
guarantees, which any vendor shows: a bad file, or an unknown device, kills only its request; an
unknown device waits for the first mirror; skip mode delivers without a bad file; a failed
upload resumes with the files not yet uploaded; files left by a crash are cleaned; a file-system
error is retried; a rate limit's retry-after is honoured; rejected credentials stop the job;
personal data in a file name stays out of errors and logs.

The CRM is configured by name (``[crm] vendor = "memory"``) and the mirror and pusher are built
through the registry, as the daemon builds them. What only Bitrix24 over HTTP shows (a dropped
connection, the client's retries within an attempt, the name on the CRM's disk) and the
end-to-end happy path stay in tests/test_push_e2e.py.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncd.config import Settings
from syncd.connectors.crm.memory import MemoryCRM, MemoryRecords
from syncd.connectors.crm.memory.pusher import StoredItem
from syncd.connectors.crm.memory.vendor import VENDOR as MEMORY
from syncd.core.entities import Entity
from syncd.core.errors import AuthError
from syncd.engines.push import OutboxDelivery
from syncd.runtime import build_pusher, push_options
from syncd.state import outbox
from tests.conftest import memory_settings, spool_file

TYPES = frozenset({"repair", "maintenance", "installation", "training", "other"})
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 8
PDF = b"%PDF-1.7\n" + b"0" * 3000 + b"\n%%EOF\n"


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    """The in-memory vendor by name (overrides conftest's, so its ``cache`` and ``engine`` are
    built over this store)."""
    store = f"push-{tmp_path.name}"
    yield memory_settings(tmp_path, store, companies=5, contacts=10, devices=5, seed=3)
    MEMORY.forget(store)


@pytest.fixture
def records(settings: Settings) -> MemoryRecords:
    """The companies, contacts and devices the CRM holds."""
    return MEMORY.store(settings.crm.vendor_settings).records


@pytest.fixture
def crm(settings: Settings) -> MemoryCRM:
    """The service requests and files the CRM holds, and its fault hooks."""
    return MEMORY.store(settings.crm.vendor_settings).crm


def ids(records: MemoryRecords, entity: Entity) -> list[str]:
    return sorted(records.records[entity], key=int)


def enqueue(delivery: OutboxDelivery, records: MemoryRecords, files: list[dict[str, object]],
            **fields: object) -> tuple[int, str]:
    key = str(uuid.uuid4())
    data = {"idempotency_key": key, "request_type": "repair", "message": "Handpiece overheats",
            "device_crm_id": ids(records, Entity.DEVICES)[0],
            "contact_crm_id": ids(records, Entity.CONTACTS)[0], "files": files, **fields}
    request_id, _ = outbox.enqueue(delivery.conn, data, request_types=TYPES,
                                   now=datetime.now(UTC))
    return request_id, key


def crm_items_with_key(crm: MemoryCRM, key: str) -> list[StoredItem]:
    return [item for item in crm.items.values() if item.idempotency_key == key]


def test_a_failed_upload_resumes_with_the_files_not_yet_attached(
    delivery: OutboxDelivery, records: MemoryRecords, crm: MemoryCRM
) -> None:
    contents = [JPEG + bytes([n]) for n in range(3)]
    files = [spool_file(delivery, f"r3/{n}.jpg", content) for n, content in enumerate(contents)]
    request_id, key = enqueue(delivery, records, files)
    crm.fail("upload", "unavailable", after=1)  # the second upload fails
    delivery.deliver_next()
    stored = outbox.get(delivery.conn, request_id)
    assert stored is not None and stored.status == "retry_wait"
    assert [f.status for f in stored.files] == ["uploaded", "pending", "pending"]
    delivery.clock = lambda: datetime.now(UTC) + timedelta(hours=2)
    delivery.deliver_next()
    [item] = crm_items_with_key(crm, key)
    assert len(item.file_ids) == 3
    assert len(crm.files) == 3  # nothing uploaded twice
    assert [crm.files[f].sha256 for f in item.file_ids] == [
        hashlib.sha256(content).hexdigest() for content in contents]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: spool_file(d, "bad/x.jpg", b"\x7fELF\x02\x01\x01" + b"\x00" * 100),
         "not an allowed type"),
        (lambda d: {"path": "../../etc/passwd", "original_name": "passwd.jpg", "size": 10},
         "escapes the spool"),
        (lambda d: {"path": "bad/missing.pdf", "original_name": "missing.pdf", "size": 10},
         "missing"),
    ],
)
def test_a_bad_file_kills_its_request_only(delivery: OutboxDelivery, records: MemoryRecords,
                                           crm: MemoryCRM, make: object, reason: str) -> None:
    bad_id, _ = enqueue(delivery, records, [make(delivery)])  # type: ignore[operator]
    good_id, _ = enqueue(delivery, records, [spool_file(delivery, "good/a.jpg", JPEG)],
                         contact_crm_id=ids(records, Entity.CONTACTS)[1])
    delivery.deliver_next()
    delivery.deliver_next()
    bad = outbox.get(delivery.conn, bad_id)
    assert bad is not None and bad.status == "dead" and reason in (bad.last_error or "")
    assert outbox.get(delivery.conn, good_id).status == "done"  # type: ignore[union-attr]
    assert not any(item.idempotency_key == bad.idempotency_key for item in crm.items.values())


def test_an_unknown_device_is_dead_with_its_reason(delivery: OutboxDelivery,
                                                   records: MemoryRecords) -> None:
    request_id, _ = enqueue(delivery, records, [], device_crm_id="999999")
    delivery.deliver_next()
    stored = outbox.get(delivery.conn, request_id)
    assert stored is not None and stored.status == "dead"
    assert stored.last_error == "the device 999999 is not in the CRM mirror"


def test_rate_limit_waits_at_least_retry_after(delivery: OutboxDelivery, records: MemoryRecords,
                                               crm: MemoryCRM) -> None:
    request_id, _ = enqueue(delivery, records, [])
    crm.fail("find", "rate_limited", times=10, retry_after=120)
    started = datetime.now(UTC)
    delivery.deliver_next()
    stored = outbox.get(delivery.conn, request_id)
    assert stored is not None and stored.status == "retry_wait"
    due = datetime.fromisoformat(stored.next_attempt_at.replace("Z", "+00:00"))  # type: ignore[union-attr]
    assert due - started >= timedelta(seconds=119)


def test_rejected_credentials_stop_the_job_but_keep_the_request(
    delivery: OutboxDelivery, records: MemoryRecords, crm: MemoryCRM
) -> None:
    request_id, _ = enqueue(delivery, records, [])
    crm.fail("find", "rejected_credentials", times=5)
    with pytest.raises(AuthError):
        delivery.deliver_next()
    assert outbox.get(delivery.conn, request_id).status == "retry_wait"  # type: ignore[union-attr]


def test_an_unknown_device_waits_for_the_first_mirror(settings: Settings,
                                                      cache: sqlite3.Connection,
                                                      records: MemoryRecords) -> None:
    options = push_options(settings)
    pusher = build_pusher(settings)
    delivery = OutboxDelivery(cache, pusher, options, worker_id="test")
    request_id, _ = enqueue(delivery, records, [])
    delivery.deliver_next()
    stored = outbox.get(cache, request_id)
    assert stored is not None and stored.status == "retry_wait"
    assert "waiting for the first mirror of devices" in (stored.last_error or "")
    pusher.close()


def test_skip_mode_delivers_without_the_bad_file(delivery: OutboxDelivery, records: MemoryRecords,
                                                 crm: MemoryCRM) -> None:
    from dataclasses import replace

    from syncd.engines.spool import FileLimits

    delivery.options = replace(delivery.options, skip_bad_files=True,
                               limits=FileLimits(document=1000))
    files = [spool_file(delivery, "r9/a.jpg", JPEG), spool_file(delivery, "r9/big.pdf", PDF)]
    request_id, key = enqueue(delivery, records, files)
    delivery.deliver_next()
    stored = outbox.get(delivery.conn, request_id)
    assert stored is not None and stored.status == "done"
    assert [f.status for f in stored.files] == ["deleted", "rejected"]
    assert "over the" in (stored.files[1].error or "")
    [item] = crm_items_with_key(crm, key)
    assert [crm.files[f].name for f in item.file_ids] == [f"{key}-0-a.jpg"]


def test_files_left_by_a_crash_after_the_ack_are_cleaned(delivery: OutboxDelivery,
                                                         records: MemoryRecords) -> None:
    request_id, _ = enqueue(delivery, records, [spool_file(delivery, "r7/a.jpg", JPEG)])
    claimed = outbox.claim(delivery.conn, worker="dead", now=datetime.now(UTC),
                           lease_seconds=60, max_attempts=5)
    assert claimed is not None
    # the CRM confirmed and the worker acknowledged, then died before deleting the file
    assert outbox.ack(delivery.conn, request_id, worker="dead", crm_id="5",
                      now=datetime.now(UTC))
    assert (delivery.options.spool / "r7" / "a.jpg").exists()
    assert delivery.deliver_next() is None
    assert not (delivery.options.spool / "r7").exists()
    assert [f.status for f in outbox.get(delivery.conn, request_id).files] == ["deleted"]  # type: ignore[union-attr]


def test_a_file_name_holding_personal_data_stays_out_of_errors_and_logs(
    delivery: OutboxDelivery, records: MemoryRecords, caplog: pytest.LogCaptureFixture
) -> None:
    name = "Mari Tamm +372 5555 1234 mari@example.ee.jpg"
    bad = spool_file(delivery, "pd/x.jpg", b"\x7fELF\x02\x01\x01" + b"\x00" * 100)
    bad["original_name"] = name
    with caplog.at_level(logging.DEBUG):
        request_id, _ = enqueue(delivery, records, [bad])
        delivery.deliver_next()
    stored = outbox.get(delivery.conn, request_id)
    assert stored is not None and stored.status == "dead"
    assert stored.last_error is not None and "file #0" in stored.last_error
    for text in (stored.last_error, stored.files[0].error or "",
                 *(r.getMessage() for r in caplog.records)):
        assert "Mari" not in text and "5555" not in text and "example.ee" not in text


def test_a_file_system_error_is_a_retried_failure_of_that_request_only(
    delivery: OutboxDelivery, records: MemoryRecords, monkeypatch: pytest.MonkeyPatch
) -> None:
    import syncd.engines.push

    real = syncd.engines.push.validate_file
    broken_id, _ = enqueue(delivery, records, [spool_file(delivery, "io/a.jpg", JPEG)])
    good_id, _ = enqueue(delivery, records, [spool_file(delivery, "ok/a.jpg", JPEG)],
                         contact_crm_id=ids(records, Entity.CONTACTS)[1])

    def failing(spool: Path, relative: str, *args: object, **kwargs: object) -> object:
        if relative.startswith("io/"):
            raise OSError(errno.EIO, "Input/output error")
        return real(spool, relative, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(syncd.engines.push, "validate_file", failing)
    delivery.deliver_next()
    delivery.deliver_next()
    broken = outbox.get(delivery.conn, broken_id)
    assert broken is not None and broken.status == "retry_wait"  # not stuck in 'sending'
    assert broken.last_error == "local file system error (EIO)"
    assert outbox.get(delivery.conn, good_id).status == "done"  # type: ignore[union-attr]
