"""Exactly once in effect: SIGKILL the delivering process at random points (and drop the
connection after the CRM committed), at least 20 times; every request then exists exactly once
at the CRM with exactly its files, and none is lost."""

from __future__ import annotations

import os
import random
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncd.config import load_settings
from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.runtime import build_engine, open_cache
from syncd.state import outbox
from syncd.state.db import connect
from tests.conftest import run_and_kill, write_config

ROOT = Path(__file__).parents[1]
REQUESTS = 60
ROUNDS = 28


def run_worker(config: Path, days: int, lines: int | None, jitter: float) -> bool:
    """The delivery worker, killed after ``lines`` finished attempts (None: until all done)."""
    args = ["tests.push_crash_worker", str(config), str(days)]
    return run_and_kill([*args, "--until-empty"] if lines is None else args, lines, jitter)


@pytest.mark.slow
def test_sigkill_during_delivery_never_loses_or_duplicates(tmp_path: Path) -> None:
    rng = random.Random(31)
    with FakeBitrix24(seed=33, companies=15, contacts=40, devices=20, token="t") as fake:
        config = write_config(tmp_path, fake)
        settings = load_settings(config)
        conn = open_cache(settings)
        engine = build_engine(settings, conn)
        engine.run_cycle()
        engine.adapter.close()
        spool = tmp_path / "state" / "spool"
        expected: dict[str, set[str]] = {}
        devices = sorted(fake.records("devices"), key=int)
        contacts = sorted(fake.records("contacts"), key=int)
        for n in range(REQUESTS):
            key = str(uuid.uuid4())
            files = []
            for position in range(rng.randint(1, 3)):
                relative = f"{key}/photo{position}.jpg"
                (spool / key).mkdir(parents=True, exist_ok=True)
                body = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(rng.randint(2000, 40000))
                (spool / relative).write_bytes(body)
                files.append({"path": relative, "original_name": f"photo{position}.jpg",
                              "declared_type": "image/jpeg", "size": len(body)})
            outbox.enqueue(conn, {"idempotency_key": key, "request_type": "repair",
                                  "device_crm_id": devices[n % len(devices)],
                                  "contact_crm_id": contacts[n % len(contacts)], "files": files},
                           request_types=frozenset({"repair"}), now=datetime.now(UTC))
            expected[key] = {f"{key}-{i}-{f['original_name']}" for i, f in enumerate(files)}
        fake.faults.add("drop_after_processing", times=4, method="crm.item.add", after=2)
        fake.faults.add("drop_after_processing", times=4, method="disk.upload", after=5)
        kills = 0
        for round_number in range(1, ROUNDS + 1):
            # after 1-2 finished attempts, plus a little: the kill lands inside the next one
            lines = rng.choice((1, 1, 1, 2))
            if not run_worker(config, round_number, lines,
                              jitter=rng.choice((0.0, 0.002, 0.01, 0.03))):
                kills += 1
        assert kills >= 20
        assert run_worker(config, ROUNDS + 10, None, 0.0)

        rows = conn.execute("SELECT id, status, attempts, last_error FROM outbox_requests "
                            "WHERE status != 'done'").fetchall()
        assert rows == [], f"undelivered: {rows}"
        items = fake.service_requests().values()
        by_key: dict[str, list[dict[str, object]]] = {}
        for item in items:
            by_key.setdefault(str(item.get("xmlId")), []).append(item)
        assert set(by_key) == set(expected)
        assert all(len(found) == 1 for found in by_key.values()), "a request was duplicated"
        for key, names in expected.items():
            attached = {f["name"] for f in by_key[key][0]["_disk_files"]}  # type: ignore[union-attr]
            assert attached == names
        uploaded = [f["name"] for f in fake.disk_files().values()]
        assert len(uploaded) == len(set(uploaded)), "a file was uploaded twice"
        assert not any(spool.rglob("*.jpg")), "local files were not removed"
        conn.close()
        assert connect(settings.state.cache_path).execute(
            "PRAGMA integrity_check").fetchone()[0] == "ok"
