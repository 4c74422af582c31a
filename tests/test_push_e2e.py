"""Outbox delivery end to end against the fake Bitrix24 over loopback."""

from __future__ import annotations

import errno
import hashlib
import logging
import sqlite3
import unicodedata
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncd.config import Settings
from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.core.errors import AuthError
from syncd.engines.mirror import MirrorEngine
from syncd.engines.push import OutboxDelivery
from syncd.runtime import build_pusher, push_options
from syncd.state import outbox

TYPES = frozenset({"repair", "maintenance", "installation", "training", "other"})
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 8
PDF = b"%PDF-1.7\n" + b"0" * 3000 + b"\n%%EOF\n"
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 5000


@pytest.fixture
def delivery(settings: Settings, cache: sqlite3.Connection,
             engine: MirrorEngine) -> Iterator[OutboxDelivery]:
    engine.run_cycle()  # the mirror knows the devices and contacts the requests refer to
    options = push_options(settings)
    options.spool.mkdir(parents=True, exist_ok=True)
    pusher = build_pusher(settings)
    yield OutboxDelivery(cache, pusher, options, worker_id="test")
    pusher.close()


def spool_file(delivery: OutboxDelivery, relative: str, content: bytes) -> dict[str, object]:
    path = delivery.options.spool / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return {"path": relative, "original_name": Path(relative).name,
            "declared_type": None, "size": len(content)}


def enqueue(delivery: OutboxDelivery, fake: FakeBitrix24, files: list[dict[str, object]],
            **fields: object) -> tuple[int, str]:
    device_id = sorted(fake.records("devices"), key=int)[0]
    contact_id = sorted(fake.records("contacts"), key=int)[0]
    key = str(uuid.uuid4())
    data = {"idempotency_key": key, "request_type": "repair", "message": "Handpiece overheats",
            "device_crm_id": device_id, "contact_crm_id": contact_id, "files": files, **fields}
    request_id, _ = outbox.enqueue(delivery.conn, data, request_types=TYPES,
                                   now=datetime.now(UTC))
    return request_id, key


def crm_items_with_key(fake: FakeBitrix24, key: str) -> list[dict[str, object]]:
    return [item for item in fake.service_requests().values() if item.get("xmlId") == key]


def test_a_request_with_files_arrives_once_and_local_files_go(
    delivery: OutboxDelivery, fake: FakeBitrix24
) -> None:
    files = [spool_file(delivery, "r1/photo.jpg", JPEG), spool_file(delivery, "r1/report.pdf", PDF),
             spool_file(delivery, "r1/clip.mp4", MP4)]
    request_id, key = enqueue(delivery, fake, files)
    assert delivery.deliver_next() is not None
    stored = outbox.get(delivery.conn, request_id)
    assert stored is not None and stored.status == "done" and stored.crm_id
    [item] = crm_items_with_key(fake, key)
    assert str(item["id"]) == stored.crm_id
    assert str(item["parentId1040"]) == stored.device_crm_id
    assert str(item["contactId"]) == stored.contact_crm_id
    uploaded = {f["name"]: f["sha256"] for f in item["_disk_files"]}  # type: ignore[union-attr]
    assert uploaded == {
        f"{key}-0-photo.jpg": hashlib.sha256(JPEG).hexdigest(),
        f"{key}-1-report.pdf": hashlib.sha256(PDF).hexdigest(),
        f"{key}-2-clip.mp4": hashlib.sha256(MP4).hexdigest(),
    }
    assert [f.status for f in stored.files] == ["deleted"] * 3
    assert not (delivery.options.spool / "r1").exists()
    assert delivery.deliver_next() is None


def test_create_then_dropped_connection_is_adopted_not_duplicated(
    delivery: OutboxDelivery, fake: FakeBitrix24
) -> None:
    request_id, key = enqueue(delivery, fake, [spool_file(delivery, "r2/a.jpg", JPEG)])
    fake.faults.add("drop_after_processing", times=1, method="crm.item.add")
    delivery.deliver_next()
    assert outbox.get(delivery.conn, request_id).status == "retry_wait"  # type: ignore[union-attr]
    delivery.clock = lambda: datetime.now(UTC) + timedelta(hours=2)
    delivery.deliver_next()
    assert outbox.get(delivery.conn, request_id).status == "done"  # type: ignore[union-attr]
    assert len(crm_items_with_key(fake, key)) == 1


def test_a_failed_upload_resumes_with_the_files_not_yet_attached(
    delivery: OutboxDelivery, fake: FakeBitrix24
) -> None:
    files = [spool_file(delivery, f"r3/{n}.jpg", JPEG + bytes([n])) for n in range(3)]
    request_id, key = enqueue(delivery, fake, files)
    fake.faults.add("internal_error", times=1, method="disk.upload", after=1)
    delivery.deliver_next()
    stored = outbox.get(delivery.conn, request_id)
    assert stored is not None and stored.status == "retry_wait"
    assert [f.status for f in stored.files] == ["uploaded", "pending", "pending"]
    delivery.clock = lambda: datetime.now(UTC) + timedelta(hours=2)
    delivery.deliver_next()
    [item] = crm_items_with_key(fake, key)
    assert len(item["_disk_files"]) == 3  # type: ignore[arg-type]
    assert len(fake.disk_files()) == 3  # nothing uploaded twice


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
def test_a_bad_file_kills_its_request_only(delivery: OutboxDelivery, fake: FakeBitrix24,
                                           make: object, reason: str) -> None:
    bad_id, _ = enqueue(delivery, fake, [make(delivery)])  # type: ignore[operator]
    good_id, _ = enqueue(delivery, fake, [spool_file(delivery, "good/a.jpg", JPEG)],
                         contact_crm_id=sorted(fake.records("contacts"), key=int)[1])
    delivery.deliver_next()
    delivery.deliver_next()
    bad = outbox.get(delivery.conn, bad_id)
    assert bad is not None and bad.status == "dead" and reason in (bad.last_error or "")
    assert outbox.get(delivery.conn, good_id).status == "done"  # type: ignore[union-attr]
    assert not any(item.get("xmlId") == bad.idempotency_key
                   for item in fake.service_requests().values())


def test_an_unknown_device_is_dead_with_its_reason(delivery: OutboxDelivery,
                                                   fake: FakeBitrix24) -> None:
    request_id, _ = enqueue(delivery, fake, [], device_crm_id="999999")
    delivery.deliver_next()
    stored = outbox.get(delivery.conn, request_id)
    assert stored is not None and stored.status == "dead"
    assert stored.last_error == "the device 999999 is not in the CRM mirror"


def test_rate_limit_waits_at_least_retry_after(delivery: OutboxDelivery,
                                               fake: FakeBitrix24) -> None:
    request_id, _ = enqueue(delivery, fake, [])
    fake.faults.add("query_limit", times=10, method="crm.item.list", retry_after=120)
    started = datetime.now(UTC)
    delivery.deliver_next()
    stored = outbox.get(delivery.conn, request_id)
    assert stored is not None and stored.status == "retry_wait"
    due = datetime.fromisoformat(stored.next_attempt_at.replace("Z", "+00:00"))  # type: ignore[union-attr]
    assert due - started >= timedelta(seconds=119)


def test_rejected_credentials_stop_the_job_but_keep_the_request(
    delivery: OutboxDelivery, fake: FakeBitrix24
) -> None:
    request_id, _ = enqueue(delivery, fake, [])
    fake.faults.add("auth_error", times=5)
    with pytest.raises(AuthError):
        delivery.deliver_next()
    assert outbox.get(delivery.conn, request_id).status == "retry_wait"  # type: ignore[union-attr]


def test_an_unknown_device_waits_for_the_first_mirror(settings: Settings,
                                                      cache: sqlite3.Connection,
                                                      fake: FakeBitrix24) -> None:
    options = push_options(settings)
    pusher = build_pusher(settings)
    delivery = OutboxDelivery(cache, pusher, options, worker_id="test")
    request_id, _ = enqueue(delivery, fake, [])
    delivery.deliver_next()
    stored = outbox.get(cache, request_id)
    assert stored is not None and stored.status == "retry_wait"
    assert "waiting for the first mirror of devices" in (stored.last_error or "")
    pusher.close()


def test_skip_mode_delivers_without_the_bad_file(delivery: OutboxDelivery,
                                                 fake: FakeBitrix24) -> None:
    from dataclasses import replace

    from syncd.engines.spool import FileLimits

    delivery.options = replace(delivery.options, skip_bad_files=True,
                               limits=FileLimits(document=1000))
    files = [spool_file(delivery, "r9/a.jpg", JPEG), spool_file(delivery, "r9/big.pdf", PDF)]
    request_id, key = enqueue(delivery, fake, files)
    delivery.deliver_next()
    stored = outbox.get(delivery.conn, request_id)
    assert stored is not None and stored.status == "done"
    assert [f.status for f in stored.files] == ["deleted", "rejected"]
    assert "over the" in (stored.files[1].error or "")
    [item] = crm_items_with_key(fake, key)
    assert [f["name"] for f in item["_disk_files"]] == [f"{key}-0-a.jpg"]  # type: ignore[union-attr]


def test_files_left_by_a_crash_after_the_ack_are_cleaned(delivery: OutboxDelivery,
                                                         fake: FakeBitrix24) -> None:
    request_id, _ = enqueue(delivery, fake, [spool_file(delivery, "r7/a.jpg", JPEG)])
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


def test_a_rate_limited_create_is_retried_within_the_attempt(
    settings: Settings, cache: sqlite3.Connection, engine: MirrorEngine, fake: FakeBitrix24
) -> None:
    from tests.conftest import RecordingStop

    engine.run_cycle()
    stop = RecordingStop()
    pusher = build_pusher(settings, stop=stop)
    delivery = OutboxDelivery(cache, pusher, push_options(settings), worker_id="test")
    delivery.options.spool.mkdir(parents=True, exist_ok=True)
    request_id, key = enqueue(delivery, fake, [spool_file(delivery, "r8/a.jpg", JPEG)])
    fake.faults.add("query_limit", times=2, method="crm.item.add")
    fake.faults.add("query_limit", times=1, method="disk.upload")
    delivery.deliver_next()
    pusher.close()
    stored = outbox.get(cache, request_id)
    assert stored is not None and stored.status == "done" and stored.attempts == 1
    assert len(crm_items_with_key(fake, key)) == 1
    assert len(stop.waits) == 3  # the policy's pauses, none of them slept for real


def test_a_file_name_holding_personal_data_stays_out_of_errors_and_logs(
    delivery: OutboxDelivery, fake: FakeBitrix24, caplog: pytest.LogCaptureFixture
) -> None:
    name = "Mari Tamm +372 5555 1234 mari@example.ee.jpg"
    bad = spool_file(delivery, "pd/x.jpg", b"\x7fELF\x02\x01\x01" + b"\x00" * 100)
    bad["original_name"] = name
    with caplog.at_level(logging.DEBUG):
        request_id, _ = enqueue(delivery, fake, [bad])
        delivery.deliver_next()
    stored = outbox.get(delivery.conn, request_id)
    assert stored is not None and stored.status == "dead"
    assert stored.last_error is not None and "file #0" in stored.last_error
    for text in (stored.last_error, stored.files[0].error or "",
                 *(r.getMessage() for r in caplog.records)):
        assert "Mari" not in text and "5555" not in text and "example.ee" not in text


def test_control_characters_never_reach_the_crm_disk_name(
    delivery: OutboxDelivery, fake: FakeBitrix24
) -> None:
    photo = spool_file(delivery, "cc/a.jpg", JPEG)
    photo["original_name"] = "\x1b[31mred\x1b[0m\u202egpj.exe\x07\x9b.jpg"
    _, key = enqueue(delivery, fake, [photo])
    delivery.deliver_next()
    [item] = crm_items_with_key(fake, key)
    [disk] = item["_disk_files"]  # type: ignore[misc]
    assert not any(unicodedata.category(ch) in ("Cc", "Cf") for ch in disk["name"]), disk["name"]
    assert disk["name"].endswith("-0-[31mred[0mgpj.exe.jpg")


def test_a_file_system_error_is_a_retried_failure_of_that_request_only(
    delivery: OutboxDelivery, fake: FakeBitrix24, monkeypatch: pytest.MonkeyPatch
) -> None:
    import syncd.engines.push

    real = syncd.engines.push.validate_file
    broken_id, _ = enqueue(delivery, fake, [spool_file(delivery, "io/a.jpg", JPEG)])
    good_id, _ = enqueue(delivery, fake, [spool_file(delivery, "ok/a.jpg", JPEG)],
                         contact_crm_id=sorted(fake.records("contacts"), key=int)[1])

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
