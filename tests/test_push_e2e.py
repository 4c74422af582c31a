"""Outbox delivery end to end against the fake Bitrix24 over loopback: the happy path (a
request with files arrives once) and what only Bitrix24 over HTTP shows (a connection dropped
after the CRM did the write, the client's retries within an attempt, the name that reaches the
CRM's disk).

The push engine's own guarantees that any vendor shows (a failed upload resuming, bad files,
unknown devices, skip mode, crash leftovers, file-system errors, retry-after, rejected
credentials, personal data in errors) are tested over the in-memory CRM, without HTTP, in
tests/test_push_memory.py.
"""

from __future__ import annotations

import hashlib
import sqlite3
import unicodedata
import uuid
from datetime import UTC, datetime, timedelta

from syncd.config import Settings
from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.engines.mirror import MirrorEngine
from syncd.engines.push import OutboxDelivery
from syncd.runtime import build_pusher, push_options
from syncd.state import outbox
from tests.conftest import spool_file

TYPES = frozenset({"repair", "maintenance", "installation", "training", "other"})
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 8
PDF = b"%PDF-1.7\n" + b"0" * 3000 + b"\n%%EOF\n"
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 5000


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
