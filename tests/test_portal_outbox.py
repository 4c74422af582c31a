"""The portal files a service request through the documented PHP function (section 10 of
docs/portal-contract.md: the local API over its unix socket, php-curl) and reads where it stands
from the cache, read-only. The deployment-true variant, with the daemon and PHP under different
UIDs, is tests/test_deployment.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.api.app import ApiServer, make_app
from syncd.config import Settings
from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.engines.push import OutboxDelivery
from syncd.runtime import build_engine, build_intake, build_pusher, open_cache, push_options
from syncd.state import outbox
from syncd.state.db import ThreadConnections, connect
from tests.conftest import make_settings
from tests.test_api import CacheLocations, StubHealth, StubVat

PHP_DIR = Path(__file__).parent / "php"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x07" * 2037


def php_or_skip() -> str:
    php = shutil.which("php")
    if php is None:
        pytest.skip("php-cli is not installed (.ci/run installs it)")
    modules = subprocess.run([php, "-m"], capture_output=True, text=True, check=True).stdout
    for module, package in (("pdo_sqlite", "php-sqlite3"), ("curl", "php-curl")):
        if module not in modules:
            pytest.skip(f"{package} ({module}) is not installed (.ci/run installs it)")
    return php


class Portal:
    def __init__(self, php: str, socket: str, settings: Settings) -> None:
        self.php, self.socket, self.settings = php, socket, settings

    def file(self, key: str, device: str, contact: str, path: Path, *extra: str) -> Any:
        done = subprocess.run(
            [self.php, str(PHP_DIR / "file_request.php"), self.socket, key, device, contact,
             str(path), *extra], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def status(self, key: str) -> Any:
        done = subprocess.run(
            [self.php, str(PHP_DIR / "request_status.php"), str(self.settings.state.cache_path),
             key], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def fake() -> Iterator[FakeBitrix24]:
    with FakeBitrix24(seed=41, companies=10, contacts=30, devices=15, token="t") as f:
        yield f


@pytest.fixture
def portal(tmp_path: Path, short_dir: Path, fake: FakeBitrix24) -> Iterator[Portal]:
    php = php_or_skip()
    settings = make_settings(tmp_path, fake)
    conn = open_cache(settings)
    engine = build_engine(settings, conn)
    engine.run_cycle()  # the mirror knows the devices and contacts
    engine.adapter.close()
    connections = ThreadConnections(lambda: open_cache(settings))
    app = make_app(StubVat(), CacheLocations(conn), StubHealth(),
                   service_requests=build_intake(settings, connections.get),
                   max_upload_bytes=8 * 1024 * 1024)
    server = ApiServer(app, listen=f"unix:{short_dir / 'api.sock'}",
                       max_request_bytes=8 * 1024 * 1024)
    server.start()
    yield Portal(php, str(short_dir / "api.sock"), settings)
    server.stop(timeout=2)
    connections.close_all()
    conn.close()


def first_ids(fake: FakeBitrix24) -> tuple[str, str]:
    return (sorted(fake.records("devices"), key=int)[0],
            sorted(fake.records("contacts"), key=int)[0])


def test_php_files_a_request_once(portal: Portal, fake: FakeBitrix24, tmp_path: Path) -> None:
    photo = tmp_path / "upload.tmp"  # like PHP's $_FILES[...]['tmp_name']
    photo.write_bytes(JPEG)
    key = str(uuid.uuid4()).upper()  # PHP libraries often produce upper-case UUIDs
    device, contact = first_ids(fake)
    first = portal.file(key, device, contact, photo)
    assert first["status"] == 202, first
    again = portal.file(key, device, contact, photo)
    assert again == first  # the first answer again; nothing filed twice
    conn = connect(portal.settings.state.cache_path)
    stored = outbox.get(conn, first["body"]["id"])
    assert len(outbox.list_requests(conn)) == 1
    conn.close()
    assert stored is not None
    assert stored.idempotency_key == key.lower() and stored.status == "pending"
    assert stored.device_crm_id == device and stored.contact_crm_id == contact
    assert [(f.position, f.path, f.size, f.original_name, f.declared_type)
            for f in stored.files] == [
        (0, f"{key.lower()}/0.jpg", len(JPEG), "handpiece.jpg", "image/jpeg")]


def test_php_is_told_which_file_is_refused(
    portal: Portal, fake: FakeBitrix24, tmp_path: Path
) -> None:
    exe = tmp_path / "upload.tmp"
    exe.write_bytes(b"MZ\x90\x00" + b"\x00" * 4000)  # a Windows executable named .jpg
    refused = portal.file(str(uuid.uuid4()), *first_ids(fake), exe, "photo.jpg", "image/jpeg")
    assert refused["status"] == 415
    assert refused["body"]["error"]["code"] == "file_type_not_allowed"
    assert refused["body"]["error"]["field"] == "files[0]"


def test_php_sees_its_request_reach_done_with_the_crm_id(
    portal: Portal, fake: FakeBitrix24, tmp_path: Path
) -> None:
    photo = tmp_path / "upload.tmp"
    photo.write_bytes(JPEG)
    key = str(uuid.uuid4())
    filed = portal.file(key, *first_ids(fake), photo)
    assert filed["status"] == 202, filed
    assert portal.status(key)["status"] == "pending"
    conn = open_cache(portal.settings)
    pusher = build_pusher(portal.settings)
    assert OutboxDelivery(conn, pusher, push_options(portal.settings)).deliver_next() is not None
    pusher.close()
    conn.close()
    [item] = [i for i in fake.service_requests().values() if i.get("xmlId") == key]
    assert portal.status(key) == {"status": "done", "crm_id": str(item["id"]),
                                  "last_error": None, "files": 1}
    spool = push_options(portal.settings).spool
    assert [p for p in spool.rglob("*") if p.is_file()] == []  # syncd deleted its copy
