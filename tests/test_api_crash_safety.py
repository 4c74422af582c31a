"""The API write path under crash: the portal's PHP client files 50 requests with files while
the daemon is SIGKILLed at random 20 times (during start-up, mid-POST, mid-delivery), retrying
each request with its own key. Exactly one CRM item per key, with exactly its files; nothing
uploaded twice; no spool leftovers."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import closing
from pathlib import Path

import pytest

from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from tests.conftest import write_config

ROOT = Path(__file__).parents[1]
PHP_DIR = ROOT / "tests" / "php"
REQUESTS = 50
KILLS = 20


def _php() -> str:
    php = shutil.which("php")
    modules = subprocess.run([php, "-m"], capture_output=True, text=True).stdout if php else ""
    if php is None or "curl" not in modules:
        if os.environ.get("CI"):
            pytest.fail("php-cli with php-curl is needed (.ci/run installs them)")
        pytest.skip("needs php-cli with php-curl")
    return php


def _undelivered(cache: Path) -> int:
    if not cache.exists():
        return REQUESTS
    try:
        with closing(sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=5)) as conn:
            done = conn.execute(
                "SELECT count(*) FROM outbox_requests WHERE status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:
        return REQUESTS
    return REQUESTS - int(done)


@pytest.mark.slow
def test_filing_through_the_api_survives_sigkill(tmp_path: Path, short_dir: Path) -> None:
    php = _php()
    rng = random.Random(20261206)
    socket_path = short_dir / "api.sock"
    with FakeBitrix24(seed=17, companies=20, contacts=80, devices=40, token="t") as fake:
        config = write_config(tmp_path, fake, "[mirror]\ninterval_seconds = 2\n")
        config.write_text(config.read_text().replace(
            'listen = "127.0.0.1:0"', f'listen = "unix:{socket_path}"'))
        devices = sorted(fake.records("devices"), key=int)
        contacts = sorted(fake.records("contacts"), key=int)
        work = tmp_path / "portal"
        work.mkdir()
        plan, expected = [], {}
        for number in range(REQUESTS):
            key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            photo = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + key.encode() + os.urandom(400_000)
            pdf = b"%PDF-1.7\n" + key.encode() + os.urandom(20_000) + b"\n%%EOF\n"
            (work / f"{number}.jpg").write_bytes(photo)
            (work / f"{number}.pdf").write_bytes(pdf)
            plan.append({"key": key, "device": devices[number % len(devices)],
                         "contact": contacts[number % len(contacts)],
                         "photo": str(work / f"{number}.jpg"), "pdf": str(work / f"{number}.pdf")})
            expected[key] = sorted(hashlib.sha256(c).hexdigest() for c in (photo, pdf))
        (work / "plan.json").write_text(json.dumps(plan))
        client = subprocess.Popen(
            [php, str(PHP_DIR / "crash_client.php"), str(socket_path), str(work / "plan.json"),
             str(work), "250"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        log = (tmp_path / "daemon.log").open("a")
        run = [sys.executable, "-m", "syncd", "--config", str(config), "run"]
        try:
            for _ in range(KILLS):
                daemon = subprocess.Popen(run, cwd=ROOT, stdout=log, stderr=log)
                time.sleep(rng.uniform(0.3, 1.6))  # a random kill point, not a wait
                daemon.send_signal(signal.SIGKILL)
                daemon.wait(30)
            daemon = subprocess.Popen(run, cwd=ROOT, stdout=log, stderr=log)
            out, err = client.communicate(timeout=240)
            assert client.returncode == 0, err
            assert out.splitlines()[-1] == "done"
            cache = tmp_path / "state" / "cache.sqlite3"
            deadline = time.monotonic() + 120
            while _undelivered(cache) and time.monotonic() < deadline:
                time.sleep(0.2)  # polling another process's database
            assert _undelivered(cache) == 0
        finally:
            if client.poll() is None:
                client.kill()
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
            log.close()
        items = [i for i in fake.service_requests().values() if i.get("xmlId") in expected]
        assert sorted(str(i["xmlId"]) for i in items) == sorted(expected)  # one item per key
        for item in items:
            uploaded = sorted(str(f["sha256"]) for f in item["_disk_files"])
            assert uploaded == expected[str(item["xmlId"])], item["xmlId"]
        assert len(fake.disk_files()) == 2 * REQUESTS  # nothing uploaded twice
        spool = tmp_path / "state" / "spool"
        leftovers = [p for p in spool.rglob("*") if p.is_file()]
        assert leftovers == [], leftovers
