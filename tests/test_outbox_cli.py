"""`syncd outbox ...` end to end through the real CLI (subprocesses, real cache, real spool)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "syncd.toml"
    path.write_text(f'[state]\ndirectory = "{tmp_path / "state"}"\n')
    return path


def syncd(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncd", "--config", str(config), *args],
                          cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=60)


JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 8


def request_file(tmp_path: Path, **fields: object) -> Path:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(JPEG)
    data = {"idempotency_key": str(uuid.uuid4()), "request_type": "repair",
            "message": "Handpiece overheats after 10 minutes", "contact_email": "mari@example.ee",
            "device_crm_id": "17", "contact_crm_id": "5",
            "files": [{"path": str(photo), "name": "Mari photo.jpg", "type": "image/jpeg"}],
            **fields}
    path = tmp_path / f"{data['idempotency_key']}.json"
    path.write_text(json.dumps(data))
    return path


def test_enqueue_list_show_drop(config: Path, tmp_path: Path) -> None:
    path = request_file(tmp_path)
    first = syncd(config, "outbox", "enqueue", str(path))
    assert first.returncode == 0 and "request 1 queued" in first.stdout, first.stderr
    key = json.loads(path.read_text())["idempotency_key"]
    spool_file = tmp_path / "state" / "spool" / key / "0.jpg"
    assert spool_file.read_bytes() == JPEG  # copied into the spool by syncd
    again = syncd(config, "outbox", "enqueue", str(path))
    assert again.returncode == 0 and "already queued" in again.stdout

    listing = syncd(config, "outbox", "list", "--json")
    rows = json.loads(listing.stdout)
    assert [(r["id"], r["status"]) for r in rows] == [(1, "pending")]
    assert "mari@example.ee" not in listing.stdout and "overheats" not in listing.stdout

    shown = syncd(config, "outbox", "show", "1")
    assert "image/jpeg" in shown.stdout and "mari@example.ee" not in shown.stdout
    revealed = syncd(config, "outbox", "show", "1", "--reveal")
    assert "mari@example.ee" in revealed.stdout

    status = syncd(config, "status", "--json")
    assert json.loads(status.stdout)["outbox"]["by_status"]["pending"] == 1

    dropped = syncd(config, "outbox", "drop", "1")
    assert dropped.returncode == 0 and "1 spool file(s) removed" in dropped.stdout
    assert not spool_file.exists() and not spool_file.parent.exists()
    audit = syncd(config, "outbox", "list")
    assert "the outbox is empty" in audit.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"idempotency_key": ', "is not valid JSON"),
        (json.dumps({"idempotency_key": "nope", "request_type": "repair"}),
         "idempotency_key: must be a UUID"),
        (json.dumps({"idempotency_key": "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
                     "request_type": "coffee"}),
         "request_type: must be one of"),
        (json.dumps({"idempotency_key": "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
                     "request_type": "repair", "message": "x" * 20_000}),
         "message: must be text of at most"),
        (json.dumps({"idempotency_key": "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
                     "request_type": "repair", "colour": "blue"}),
         "unknown field 'colour'"),
    ],
)
def test_enqueue_refuses_bad_input(config: Path, tmp_path: Path, content: str,
                                   message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    result = syncd(config, "outbox", "enqueue", str(path))
    assert result.returncode == 65
    assert message in result.stderr and "Traceback" not in result.stderr


def test_enqueue_from_stdin_and_missing_file(config: Path, tmp_path: Path) -> None:
    body = request_file(tmp_path).read_text()
    assert syncd(config, "outbox", "enqueue", "-", stdin=body).returncode == 0
    missing = syncd(config, "outbox", "enqueue", str(tmp_path / "nope.json"))
    assert missing.returncode == 66 and "cannot read" in missing.stderr
    gone = request_file(tmp_path, files=[{"path": str(tmp_path / "gone.jpg")}])
    missing_attachment = syncd(config, "outbox", "enqueue", str(gone))
    assert missing_attachment.returncode == 66, missing_attachment.stderr
    assert "gone.jpg" in missing_attachment.stderr


def test_enqueue_refuses_a_disguised_executable_at_the_door(config: Path, tmp_path: Path) -> None:
    exe = tmp_path / "holiday.jpg"
    exe.write_bytes(b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 9000)
    path = request_file(tmp_path)
    data = json.loads(path.read_text())
    data["files"] = [{"path": str(exe), "type": "image/jpeg"}]
    path.write_text(json.dumps(data))
    refused = syncd(config, "outbox", "enqueue", str(path))
    assert refused.returncode == 65
    assert "files[0]: The content is not an allowed type" in refused.stderr
    assert [p for p in (tmp_path / "state" / "spool").rglob("*") if p.is_file()] == []


def test_retry_dead_requests(config: Path, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from syncd.state import outbox
    from syncd.state.db import connect

    assert syncd(config, "outbox", "enqueue", str(request_file(tmp_path))).returncode == 0
    conn = connect(tmp_path / "state" / "cache.sqlite3")
    now = datetime.now(UTC)
    outbox.claim(conn, worker="w", now=now, lease_seconds=60, max_attempts=3)
    outbox.fail(conn, 1, worker="w", error="the device 17 is not in the CRM", permanent=True,
                now=now, max_attempts=3)
    conn.close()
    status = syncd(config, "status")
    assert "1 dead" in status.stdout and "dead in the outbox" in status.stdout
    assert syncd(config, "outbox", "retry", "--all-dead").returncode == 0
    assert json.loads(syncd(config, "outbox", "show", "1", "--json").stdout)["status"] == "pending"
