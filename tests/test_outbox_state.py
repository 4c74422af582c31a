"""The outbox state machine (claim / ack / fail / lease expiry / retry) against a simple model,
and the validation of what the portal inserts."""

from __future__ import annotations

import random
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from syncd.state import outbox
from syncd.state.db import connect

TYPES = frozenset({"repair", "maintenance", "installation", "training", "other"})
START = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
LEASE = 60.0
MAX_ATTEMPTS = 3


def request(key: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "idempotency_key": key or str(uuid.uuid4()),
        "request_type": "repair",
        "message": "Laser does not start",
        "device_crm_id": "17",
        "contact_crm_id": "5",
        **fields,
    }


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return connect(tmp_path / "cache.sqlite3")


def test_uppercase_uuid_is_normalised(conn: sqlite3.Connection) -> None:
    key = str(uuid.uuid4())
    first, _ = outbox.enqueue(conn, request(key.upper()), request_types=TYPES, now=START)
    again, created = outbox.enqueue(conn, request(key), request_types=TYPES, now=START)
    assert again == first and not created


def test_a_request_whose_worker_keeps_dying_goes_dead(conn: sqlite3.Connection) -> None:
    request_id, _ = outbox.enqueue(conn, request(), request_types=TYPES, now=START)
    now = START
    for _ in range(MAX_ATTEMPTS):
        claimed = outbox.claim(
            conn, worker="w", now=now, lease_seconds=LEASE, max_attempts=MAX_ATTEMPTS
        )
        assert claimed is not None
        now += timedelta(seconds=LEASE + 1)  # the worker died; its lease runs out
    assert (
        outbox.claim(conn, worker="w", now=now, lease_seconds=LEASE, max_attempts=MAX_ATTEMPTS)
        is None
    )
    stored = outbox.get(conn, request_id)
    assert stored is not None and stored.status == "dead"
    assert "interrupted" in (stored.last_error or "")


def test_enqueue_is_idempotent(conn: sqlite3.Connection) -> None:
    key = str(uuid.uuid4())
    first = outbox.enqueue(
        conn,
        request(
            key,
            files=[
                {
                    "path": "a/b.jpg",
                    "original_name": "b.jpg",
                    "declared_type": "image/jpeg",
                    "size": 3,
                }
            ],
        ),
        request_types=TYPES,
        now=START,
    )
    again = outbox.enqueue(conn, request(key), request_types=TYPES, now=START)
    assert first == (first[0], True) and again == (first[0], False)
    stored = outbox.get(conn, first[0])
    assert stored is not None and [f.path for f in stored.files] == ["a/b.jpg"]
    assert stored.status == "pending"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("[]", "must be a JSON object"),
        ({**request(), "idempotency_key": "42"}, "idempotency_key: not a UUID"),
        ({**request(), "idempotency_key": "{" + str(uuid.uuid4()) + "}"}, "canonical form"),
        ({**request(), "request_type": "coffee"}, "request_type: must be one of"),
        ({**request(), "device_crm_id": "../1"}, "device_crm_id: must be a CRM ID"),
        ({**request(), "message": "x" * 10_001}, "message: must be text"),
        ({**request(), "files": [{"path": "", "original_name": "a"}]}, r"files\[0\]\.path"),
        (
            {**request(), "files": [{"path": "a", "original_name": "a", "size": -1}]},
            r"files\[0\]\.size",
        ),
        ({**request(), "colour": "red"}, "unknown field 'colour'"),
        ({**request(), "created_at": "yesterday"}, "created_at"),
    ],
)
def test_bad_requests_are_refused_with_the_field_named(
    conn: sqlite3.Connection, data: Any, message: str
) -> None:
    with pytest.raises(outbox.OutboxValidationError, match=message):
        outbox.enqueue(conn, data, request_types=TYPES, now=START)
    assert conn.execute("SELECT count(*) FROM outbox_requests").fetchone()[0] == 0


def test_requests_of_one_contact_go_in_creation_order(conn: sqlite3.Connection) -> None:
    first, _ = outbox.enqueue(conn, request(contact_crm_id="5"), request_types=TYPES, now=START)
    second, _ = outbox.enqueue(
        conn, request(contact_crm_id="5"), request_types=TYPES, now=START + timedelta(seconds=1)
    )
    other, _ = outbox.enqueue(
        conn, request(contact_crm_id="6"), request_types=TYPES, now=START + timedelta(seconds=2)
    )
    claimed = outbox.claim(
        conn, worker="w", now=START, lease_seconds=LEASE, max_attempts=MAX_ATTEMPTS
    )
    assert claimed is not None and claimed.id == first
    nxt = outbox.claim(conn, worker="w", now=START, lease_seconds=LEASE, max_attempts=MAX_ATTEMPTS)
    assert nxt is not None and nxt.id == other  # contact 5 waits for its first request
    assert (
        outbox.claim(conn, worker="w", now=START, lease_seconds=LEASE, max_attempts=MAX_ATTEMPTS)
        is None
    )
    assert outbox.ack(conn, first, worker="w", crm_id="100", now=START)
    last = outbox.claim(conn, worker="w", now=START, lease_seconds=LEASE, max_attempts=MAX_ATTEMPTS)
    assert last is not None and last.id == second


def test_failures_back_off_then_die(conn: sqlite3.Connection) -> None:
    request_id, _ = outbox.enqueue(conn, request(), request_types=TYPES, now=START)
    now = START
    statuses = []
    for _ in range(MAX_ATTEMPTS):
        claimed = outbox.claim(
            conn, worker="w", now=now, lease_seconds=LEASE, max_attempts=MAX_ATTEMPTS
        )
        assert claimed is not None
        statuses.append(
            outbox.fail(
                conn,
                request_id,
                worker="w",
                error="CRM unavailable",
                permanent=False,
                now=now,
                max_attempts=MAX_ATTEMPTS,
                retry_after=30,
                rng=random.Random(1),
            )
        )
        stored = outbox.get(conn, request_id)
        assert stored is not None
        if stored.next_attempt_at:
            assert (
                outbox.claim(
                    conn, worker="w", now=now, lease_seconds=LEASE, max_attempts=MAX_ATTEMPTS
                )
                is None
            )
            now = datetime.fromisoformat(stored.next_attempt_at.replace("Z", "+00:00"))
            assert (now - START).total_seconds() >= 30
    assert statuses == ["retry_wait", "retry_wait", "dead"]
    assert outbox.retry(conn, None, now=now) == 1
    assert outbox.get(conn, request_id).status == "pending"  # type: ignore[union-attr]


def test_permanent_error_is_dead_at_once(conn: sqlite3.Connection) -> None:
    request_id, _ = outbox.enqueue(conn, request(), request_types=TYPES, now=START)
    outbox.claim(conn, worker="w", now=START, lease_seconds=LEASE, max_attempts=MAX_ATTEMPTS)
    assert (
        outbox.fail(
            conn,
            request_id,
            worker="w",
            error="the device 17 is not in the CRM",
            permanent=True,
            now=START,
            max_attempts=MAX_ATTEMPTS,
        )
        == "dead"
    )


class OutboxMachine(RuleBasedStateMachine):
    """Random interleavings of portal inserts, two workers, crashes (lease expiry), operator
    retries; checked against a model of what each request's status must be."""

    requests = Bundle("requests")

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self._dir = tempfile.TemporaryDirectory()
        self.conn = connect(Path(self._dir.name) / "c.sqlite3")
        self.now = START
        self.model: dict[int, dict[str, Any]] = {}  # id -> status, contact, attempts, owner
        self.tick = 0

    def teardown(self) -> None:
        self.conn.close()
        self._dir.cleanup()

    @rule(target=requests, contact=st.sampled_from(["1", "2", "3"]))
    def enqueue(self, contact: str) -> int:
        self.tick += 1
        request_id, created = outbox.enqueue(
            self.conn,
            request(contact_crm_id=contact),
            request_types=TYPES,
            now=self.now + timedelta(microseconds=self.tick * 1000),
        )
        assert created
        self.model[request_id] = {
            "status": "pending",
            "contact": contact,
            "attempts": 0,
            "owner": None,
            "lease_until": None,
            "due": None,
            "created": self.tick,
        }
        return request_id

    def _due(self, request_id: int) -> bool:
        entry = self.model[request_id]
        if entry["status"] == "pending":
            return True
        if entry["status"] == "retry_wait":
            return bool(entry["due"] <= self.now)
        if entry["status"] == "sending":
            return bool(entry["lease_until"] <= self.now)
        return False

    def _blocked(self, request_id: int) -> bool:
        entry = self.model[request_id]
        return any(
            other["contact"] == entry["contact"]
            and other["created"] < entry["created"]
            and other["status"] in ("pending", "sending", "retry_wait")
            for other in self.model.values()
        )

    @rule(worker=st.sampled_from(["a", "b"]))
    def claim(self, worker: str) -> None:
        for entry in self.model.values():  # interrupted attempts that used up the budget
            if (
                entry["status"] == "sending"
                and entry["lease_until"] <= self.now
                and entry["attempts"] >= MAX_ATTEMPTS
            ):
                entry.update(status="dead", owner=None)
        claimed = outbox.claim(
            self.conn, worker=worker, now=self.now, lease_seconds=LEASE, max_attempts=MAX_ATTEMPTS
        )
        candidates = [i for i in self.model if self._due(i) and not self._blocked(i)]
        if not candidates:
            assert claimed is None
            return
        expected = min(candidates, key=lambda i: self.model[i]["created"])
        assert claimed is not None and claimed.id == expected
        entry = self.model[expected]
        entry.update(
            status="sending",
            owner=worker,
            attempts=entry["attempts"] + 1,
            lease_until=self.now + timedelta(seconds=LEASE),
        )

    @rule(request_id=requests, worker=st.sampled_from(["a", "b"]))
    def ack(self, request_id: int, worker: str) -> None:
        entry = self.model[request_id]
        ok = outbox.ack(self.conn, request_id, worker=worker, crm_id=f"c{request_id}", now=self.now)
        holds = entry["status"] == "sending" and entry["owner"] == worker
        assert ok == holds
        if holds:
            entry.update(status="done", owner=None)

    @rule(request_id=requests, worker=st.sampled_from(["a", "b"]), permanent=st.booleans())
    def fail(self, request_id: int, worker: str, permanent: bool) -> None:
        entry = self.model[request_id]
        status = outbox.fail(
            self.conn,
            request_id,
            worker=worker,
            error="boom",
            permanent=permanent,
            now=self.now,
            max_attempts=MAX_ATTEMPTS,
            rng=random.Random(0),
        )
        if not (entry["status"] == "sending" and entry["owner"] == worker):
            assert status is None
            return
        dead = permanent or entry["attempts"] >= MAX_ATTEMPTS
        assert status == ("dead" if dead else "retry_wait")
        stored = outbox.get(self.conn, request_id)
        assert stored is not None
        due = (
            datetime.fromisoformat(stored.next_attempt_at.replace("Z", "+00:00"))
            if stored.next_attempt_at
            else None
        )
        entry.update(status=status, owner=None, due=due)

    @rule(seconds=st.sampled_from([1, 30, 61, 600, 7200]))
    def advance_time(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @precondition(lambda self: any(e["status"] == "dead" for e in self.model.values()))
    @rule()
    def retry_all_dead(self) -> None:
        dead = [i for i, e in self.model.items() if e["status"] == "dead"]
        assert outbox.retry(self.conn, None, now=self.now) == len(dead)
        for request_id in dead:
            self.model[request_id].update(status="pending", attempts=0, due=None)

    @rule(request_id=consumes(requests))
    def drop(self, request_id: int) -> None:
        entry = self.model[request_id]
        dropped = outbox.drop(self.conn, request_id)
        if entry["status"] == "sending":
            assert dropped is None
        else:
            assert dropped is not None
            del self.model[request_id]

    @invariant()
    def statuses_match_the_model(self) -> None:
        stored = dict(self.conn.execute("SELECT id, status FROM outbox_requests").fetchall())
        assert stored == {i: e["status"] for i, e in self.model.items()}

    @invariant()
    def attempts_stay_within_the_budget(self) -> None:
        worst = self.conn.execute("SELECT max(attempts) FROM outbox_requests").fetchone()[0]
        assert worst is None or worst <= MAX_ATTEMPTS


OutboxMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestOutboxMachine = OutboxMachine.TestCase


def test_leases_of_dead_local_workers_are_released(conn: sqlite3.Connection) -> None:
    mine, _ = outbox.enqueue(conn, request(contact_crm_id="1"), request_types=TYPES, now=START)
    other, _ = outbox.enqueue(conn, request(contact_crm_id="2"), request_types=TYPES, now=START)
    foreign, _ = outbox.enqueue(conn, request(contact_crm_id="3"), request_types=TYPES, now=START)
    for worker in ("web1:4242", "web1:777", "web2:4242"):
        outbox.claim(conn, worker=worker, now=START, lease_seconds=LEASE,
                     max_attempts=MAX_ATTEMPTS)
    released = outbox.release_dead_leases(conn, host="web1", is_alive=lambda pid: pid == 777,
                                          now=START)
    assert released == 1
    resumed = outbox.claim(conn, worker="web1:9", now=START, lease_seconds=LEASE,
                           max_attempts=MAX_ATTEMPTS)
    assert resumed is not None and resumed.id == mine
    assert outbox.claim(conn, worker="web1:9", now=START, lease_seconds=LEASE,
                        max_attempts=MAX_ATTEMPTS) is None  # 777 lives, web2 is another host
    del other, foreign
