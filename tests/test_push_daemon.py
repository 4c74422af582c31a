"""The running daemon delivers what the portal files, without being asked."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
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


def test_bad_input_to_the_running_daemon_is_refused_and_delays_nothing(
    tmp_path: Path, short_dir: Path
) -> None:
    """Every kind of bad input the issue names, sent to the daemon as deployed: each gets a 4xx
    JSON error, the daemon stays up and healthy, and a good request filed right after them is
    delivered as fast as ever."""
    import socket as sockets
    from contextlib import closing

    from tests.conftest import make_api_client

    api_socket = short_dir / "api.sock"
    with FakeBitrix24(seed=33, companies=10, contacts=30, devices=15, token="t") as fake:
        config = write_config(tmp_path, fake, "[mirror]\ninterval_seconds = 1\n")
        config.write_text(config.read_text().replace(
            'listen = "127.0.0.1:0"', f'listen = "unix:{api_socket}"'))
        cache = tmp_path / "state" / "cache.sqlite3"
        daemon = subprocess.Popen([sys.executable, "-m", "syncd", "--config", str(config), "run"],
                                  cwd=ROOT, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: count(cache, "devices") == 15, 30, "the first mirror")
            device = sorted(fake.records("devices"), key=int)[0]

            def post(key: str, files: list[tuple[str, bytes, str]], **fields: str) -> Any:
                parts = [(n, (None, v, None)) for n, v in
                         {"request_type": "repair", "device_crm_id": device, **fields}.items()]
                parts += [("files", f) for f in files]
                return client.post("/v1/service-requests", headers={"Idempotency-Key": key},
                                   files=parts)

            def raw(request: bytes) -> bytes:
                """The whole answer to ``request`` (it asks the server to close after it)."""
                with closing(sockets.socket(sockets.AF_UNIX)) as conn:
                    conn.settimeout(30)
                    conn.connect(str(api_socket))
                    conn.sendall(request)
                    answer = b""
                    while chunk := conn.recv(65536):  # headers and body may come apart
                        answer += chunk
                    return answer

            with make_api_client(f"unix:{api_socket}", timeout=30) as client:
                refusals = [
                    post("not-a-uuid", [("a.jpg", JPEG, "image/jpeg")]),
                    post(str(uuid.uuid4()), [("a.jpg", b"\x7fELF\x02\x01" + bytes(9000),
                                              "image/jpeg")]),
                    post(str(uuid.uuid4()), [("a.jpg", JPEG, "image/jpeg")],
                         request_type="'; DROP TABLE x;--"),
                    post(str(uuid.uuid4()), [("a.jpg", JPEG, "image/jpeg")],
                         message="m" * 20_000),
                    post(str(uuid.uuid4()), [("a.jpg", JPEG, "image/jpeg")],
                         device_crm_id="999999"),
                    post(str(uuid.uuid4()), [(f"\x1b[31m{i}.jpg", JPEG, "image/jpeg")
                                             for i in range(25)]),
                ]
                for answer in refusals:
                    assert 400 <= answer.status_code < 500, answer.text
                    assert answer.json()["error"]["code"], answer.text
                for head in (b"Host: evil.com localhost", b"Host: localhost:80@evil.com",
                             "Host: l\u043ecalhost".encode()):
                    reply = raw(b"GET /healthz HTTP/1.1\r\n" + head + b"\r\nConnection: close"
                                b"\r\n\r\n")
                    assert reply.startswith(b"HTTP/1.1 403") and b"forbidden_host" in reply
                assert raw(b"GET http://evil.example/healthz HTTP/1.1\r\nHost: localhost\r\n"
                           b"Connection: close\r\n\r\n").startswith(b"HTTP/1.1 403")

                started = time.monotonic()
                good = post(str(uuid.uuid4()), [("handpiece.jpg", JPEG, "image/jpeg")])
                assert good.status_code == 202, good.text
                status_url = good.json()["status_url"]
                wait_for(lambda: client.get(status_url).json()["status"] == "done", 30,
                         "the good request's delivery")
                delivered_after = time.monotonic() - started
                assert client.get("/healthz").status_code == 200
            assert daemon.poll() is None  # alive throughout
        finally:
            daemon.send_signal(signal.SIGTERM)
            _, stderr = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, stderr
    assert delivered_after < 5, delivered_after  # nothing was held up by the bad input
    assert "Traceback" not in stderr
    assert len(fake.service_requests()) == 1  # no bad request reached the CRM
