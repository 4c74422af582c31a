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


def request_file(tmp_path: Path, **fields: object) -> Path:
    data = {"idempotency_key": str(uuid.uuid4()), "request_type": "repair",
            "message": "Handpiece overheats after 10 minutes", "contact_email": "mari@example.ee",
            "device_crm_id": "17", "contact_crm_id": "5",
            "files": [{"path": "req/photo.jpg", "original_name": "photo.jpg",
                       "declared_type": "image/jpeg", "size": 4}], **fields}
    path = tmp_path / f"{data['idempotency_key']}.json"
    path.write_text(json.dumps(data))
    return path


def test_enqueue_list_show_drop(config: Path, tmp_path: Path) -> None:
    spool_file = tmp_path / "state" / "spool" / "req" / "photo.jpg"
    spool_file.parent.mkdir(parents=True)
    spool_file.write_bytes(b"\xff\xd8\xff\xe0")
    path = request_file(tmp_path)
    first = syncd(config, "outbox", "enqueue", str(path))
    assert first.returncode == 0 and "request 1 queued" in first.stdout
    again = syncd(config, "outbox", "enqueue", str(path))
    assert again.returncode == 0 and "already queued" in again.stdout

    listing = syncd(config, "outbox", "list", "--json")
    rows = json.loads(listing.stdout)
    assert [(r["id"], r["status"]) for r in rows] == [(1, "pending")]
    assert "mari@example.ee" not in listing.stdout and "overheats" not in listing.stdout

    shown = syncd(config, "outbox", "show", "1")
    assert "photo.jpg" in shown.stdout and "mari@example.ee" not in shown.stdout
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
         "idempotency_key: not a UUID"),
        (json.dumps({"idempotency_key": "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
                     "request_type": "coffee"}),
         "request_type: must be one of"),
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


def test_retry_dead_requests(config: Path, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from state import outbox
    from state.db import connect

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
