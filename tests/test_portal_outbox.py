"""The portal files a service request through the documented PHP function (section 10 of
docs/portal-contract.md) and syncd reads it exactly as its own enqueue would have stored it."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from state import outbox
from state.db import connect

PHP_DIR = Path(__file__).parent / "php"


def php_or_skip() -> str:
    php = shutil.which("php")
    if php is None:
        pytest.skip("php-cli is not installed (.ci/run installs it)")
    modules = subprocess.run([php, "-m"], capture_output=True, text=True, check=True).stdout
    if "pdo_sqlite" not in modules:
        pytest.skip("php-sqlite3 (pdo_sqlite) is not installed (.ci/run installs it)")
    return php


def test_php_files_a_request_once(tmp_path: Path) -> None:
    php = php_or_skip()
    cache = tmp_path / "cache.sqlite3"
    connect(cache).close()
    key = str(uuid.uuid4()).upper()  # PHP libraries often produce upper-case UUIDs
    args = [php, str(PHP_DIR / "file_request.php"), str(cache), key, "17", "5",
            "req-1/handpiece.jpg", "2048"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert json.loads(again.stdout) == {"id": None}
    request_id = json.loads(first.stdout)["id"]
    conn = connect(cache)
    stored = outbox.get(conn, request_id)
    conn.close()
    assert stored is not None
    assert stored.idempotency_key == key.lower() and stored.status == "pending"
    assert stored.device_crm_id == "17" and stored.contact_crm_id == "5"
    assert [(f.position, f.path, f.size, f.status) for f in stored.files] == [
        (0, "req-1/handpiece.jpg", 2048, "pending")]
    # the portal's timestamp has the outbox's own format, so ordering by created_at works
    filed = datetime.fromisoformat(stored.created_at.replace("Z", "+00:00"))
    assert outbox.stamp(filed) == stored.created_at


def test_php_sees_its_request_reach_done_with_the_crm_id(tmp_path: Path) -> None:
    from connectors.crm.bitrix24.fake import FakeBitrix24
    from syncd.push import OutboxDelivery
    from syncd.runtime import build_engine, build_pusher, open_cache, push_options
    from tests.conftest import make_settings

    php = php_or_skip()
    with FakeBitrix24(seed=41, companies=10, contacts=30, devices=15, token="t") as fake:
        settings = make_settings(tmp_path, fake)
        conn = open_cache(settings)
        engine = build_engine(settings, conn)
        engine.run_cycle()
        options = push_options(settings)
        photo = options.spool / "req-9" / "handpiece.jpg"
        photo.parent.mkdir(parents=True)
        photo.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x07" * 2037)
        key = str(uuid.uuid4())
        device = sorted(fake.records("devices"), key=int)[0]
        contact = sorted(fake.records("contacts"), key=int)[0]
        filed = subprocess.run(
            [php, str(PHP_DIR / "file_request.php"), str(settings.state.cache_path), key, device,
             contact, "req-9/handpiece.jpg", str(photo.stat().st_size)],
            capture_output=True, text=True, timeout=30)
        assert filed.returncode == 0, filed.stderr
        pusher = build_pusher(settings)
        assert OutboxDelivery(conn, pusher, options).deliver_next() is not None
        pusher.close()
        status = subprocess.run(
            [php, str(PHP_DIR / "request_status.php"), str(settings.state.cache_path), key],
            capture_output=True, text=True, timeout=30)
        assert status.returncode == 0, status.stderr
        seen = json.loads(status.stdout)
        [item] = [i for i in fake.service_requests().values() if i.get("xmlId") == key]
        assert seen == {"status": "done", "crm_id": str(item["id"]), "last_error": None,
                        "files": 1}
        assert not photo.exists()
        engine.adapter.close()
        conn.close()
