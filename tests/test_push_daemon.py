"""The running daemon delivers what the portal files, without being asked."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from connectors.crm.bitrix24.fake import FakeBitrix24
from tests.conftest import write_config
from tests.test_daemon import ROOT, count, syncd, wait_for

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x01" * 4000


def test_the_daemon_delivers_a_filed_request(tmp_path: Path) -> None:
    with FakeBitrix24(seed=31, companies=20, contacts=60, devices=30, token="t") as fake:
        config = write_config(tmp_path, fake, "[mirror]\ninterval_seconds = 1\n"
                                              "jitter_seconds = 0\n")
        cache = tmp_path / "state" / "cache.sqlite3"
        daemon = subprocess.Popen([sys.executable, "-m", "syncd", "--config", str(config), "run"],
                                  cwd=ROOT, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: count(cache, "devices") == 30, 30, "the first mirror")
            upload = tmp_path / "photo.jpg"
            upload.write_bytes(JPEG)
            key = str(uuid.uuid4())
            request = {"idempotency_key": key, "request_type": "repair",
                       "device_crm_id": sorted(fake.records("devices"), key=int)[0],
                       "contact_crm_id": sorted(fake.records("contacts"), key=int)[0],
                       "files": [{"path": str(upload), "type": "image/jpeg"}]}
            filed = syncd(config, "outbox", "enqueue", "-", stdin=json.dumps(request))
            assert filed.returncode == 0, filed.stderr

            def delivered() -> bool:
                shown = syncd(config, "outbox", "show", "1", "--json")
                return json.loads(shown.stdout)["status"] == "done"

            wait_for(delivered, 30, "the request to be delivered")
            items = [i for i in fake.service_requests().values() if i.get("xmlId") == key]
            assert len(items) == 1 and len(items[0]["_disk_files"]) == 1
            assert not (tmp_path / "state" / "spool" / key).exists()  # syncd's copy is gone
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=15) == 0
