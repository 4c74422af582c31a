"""The CRM request budget: a token bucket shared by the mirror and push lanes.

Unit tests drive an injected clock (no real sleeps): a waiter blocks on the budget's condition,
the test advances the clock and calls ``wake()``, and threads report what they got through
events. The integration tests count requests at the fake, not timings.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from syncd.config import Settings, load_settings
from syncd.connectors.budget import Priority, RequestBudget
from syncd.connectors.crm.bitrix24.client import Bitrix24Client
from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.connectors.http import RetryPolicy
from syncd.core.errors import ConfigError, RetriableError
from syncd.engines.mirror import MirrorEngine
from syncd.engines.push import OutboxDelivery
from syncd.runtime import build_budget, build_pusher, push_options
from syncd.state import outbox
from tests.conftest import RecordingStop, wait_for
from tests.test_push_e2e import JPEG, enqueue, spool_file

SETTLE = 5.0  # upper bound on real waits for a thread to reach a state; never waited out


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Taker:
    """A thread that acquires one token at ``priority``; ``done`` is set once it has it (or
    ``error`` once the acquire raised)."""

    def __init__(self, budget: RequestBudget, priority: Priority, stop: threading.Event) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            try:
                budget.acquire(priority, stop)
            except BaseException as error:  # reported to the test
                self.error = error
            self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()


def settled(condition: Callable[[], bool]) -> None:
    wait_for(condition, SETTLE, "the threads to settle", interval=0.001)


def push_waiters(budget: RequestBudget) -> int:
    with budget._cond:
        return budget._push_waiting


def drain(budget: RequestBudget, n: int, priority: Priority = "push") -> None:
    stop = threading.Event()
    for _ in range(n):
        budget.acquire(priority, stop)


# -- unit tests ------------------------------------------------------------------------------


def test_starts_full_and_grants_a_whole_burst_at_once() -> None:
    clock = FakeClock()
    budget = RequestBudget(2.0, 5, 0, clock=clock)
    drain(budget, 5, "mirror")
    assert budget.available() == pytest.approx(0.0)
    taker = Taker(budget, "mirror", threading.Event())
    assert not taker.done.wait(0.05)  # the sixth waits for the refill
    clock.advance(0.5)  # one token at 2/s
    budget.wake()
    assert taker.done.wait(SETTLE)
    assert budget.granted == {"push": 0, "mirror": 6}


def test_refills_at_the_rate_and_caps_at_the_burst() -> None:
    clock = FakeClock()
    budget = RequestBudget(2.0, 5, 0, clock=clock)
    drain(budget, 5)
    clock.advance(1.0)
    assert budget.available() == pytest.approx(2.0)
    clock.advance(3600.0)
    assert budget.available() == pytest.approx(5.0)


def test_the_mirror_leaves_the_reserve_for_push() -> None:
    clock = FakeClock()
    budget = RequestBudget(1.0, 10, 3, clock=clock)
    drain(budget, 7, "mirror")  # 10 - 7 = 3 left: exactly the reserve
    mirror = Taker(budget, "mirror", threading.Event())
    assert not mirror.done.wait(0.05)
    drain(budget, 3, "push")  # push may use the reserve down to zero
    assert budget.available() == pytest.approx(0.0)
    assert not mirror.done.is_set()
    clock.advance(3.0)  # back to the reserve: still not enough for the mirror
    budget.wake()
    assert not mirror.done.wait(0.05)
    clock.advance(1.0)  # reserve + 1
    budget.wake()
    assert mirror.done.wait(SETTLE)
    assert budget.available() == pytest.approx(3.0)


def test_a_waiting_push_goes_before_the_mirror() -> None:
    clock = FakeClock()
    budget = RequestBudget(1.0, 10, 0, clock=clock)
    drain(budget, 10, "mirror")
    mirror = Taker(budget, "mirror", threading.Event())
    assert not mirror.done.wait(0.05)
    push = Taker(budget, "push", threading.Event())
    settled(lambda: push_waiters(budget) == 1)
    clock.advance(1.0)  # one token: the push gets it, the mirror keeps waiting
    budget.wake()
    assert push.done.wait(SETTLE)
    assert not mirror.done.wait(0.05)
    assert budget.granted == {"push": 1, "mirror": 10}
    clock.advance(1.0)
    budget.wake()
    assert mirror.done.wait(SETTLE)


def test_a_waiting_push_blocks_the_mirror_even_above_the_reserve() -> None:
    # The push waits for a token that only the refill brings; meanwhile the mirror must not
    # take tokens it could otherwise take, or the push would wait behind it.
    clock = FakeClock()
    budget = RequestBudget(1.0, 10, 2, clock=clock)
    budget._push_waiting = 1  # as if a push were waiting (set under no contention)
    mirror = Taker(budget, "mirror", threading.Event())
    assert not mirror.done.wait(0.05)
    with budget._cond:
        budget._push_waiting = 0
        budget._cond.notify_all()
    assert mirror.done.wait(SETTLE)


def test_stop_interrupts_a_wait() -> None:
    clock = FakeClock()
    budget = RequestBudget(0.001, 1, 0, clock=clock)  # the next token is 1000 s away
    drain(budget, 1)
    stop = threading.Event()
    takers = [Taker(budget, "push", stop), Taker(budget, "mirror", stop)]
    assert not takers[0].done.wait(0.05)
    stop.set()
    budget.wake()
    for taker in takers:
        assert taker.done.wait(SETTLE)
        assert isinstance(taker.error, RetriableError)
    assert push_waiters(budget) == 0


def test_stop_already_set_raises_without_taking_a_token() -> None:
    budget = RequestBudget(1.0, 5, 0, clock=FakeClock())
    stop = threading.Event()
    stop.set()
    with pytest.raises(RetriableError):
        budget.acquire("push", stop)
    assert budget.available() == pytest.approx(5.0)


def test_unlimited_mode_never_waits() -> None:
    budget = RequestBudget(0, 1, 0, clock=FakeClock())
    drain(budget, 1000, "mirror")
    assert budget.unlimited


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        RequestBudget(1.0, 0, 0)
    with pytest.raises(ValueError):
        RequestBudget(1.0, 5, 5)


# -- settings ----------------------------------------------------------------------------------


def test_settings_defaults_match_bitrix24() -> None:
    crm = load_settings(None).crm
    assert (crm.requests_per_second, crm.request_burst, crm.push_reserve) == (2.0, 50, 10)
    budget = build_budget(load_settings(None))
    assert budget is not None and (budget.rate, budget.burst, budget.reserve) == (2.0, 50, 10)


def test_settings_zero_rate_disables_the_budget() -> None:
    assert build_budget(load_settings(None, crm={"requests_per_second": 0})) is None


def test_settings_reserve_must_be_below_the_burst() -> None:
    with pytest.raises(ConfigError, match="push_reserve"):
        load_settings(None, crm={"request_burst": 5, "push_reserve": 5})


# -- integration with the client and the fake --------------------------------------------------


def test_a_client_with_a_budget_sends_at_most_burst_plus_rate_times_t(
    fake: FakeBitrix24,
) -> None:
    """On a controlled clock: the burst at once, then exactly rate x t more, never another."""
    now = [0.0]
    rate, burst, step = 40.0, 10, 0.125  # five tokens a step, exact in binary floating point
    budget = RequestBudget(rate, burst, 0, clock=lambda: now[0])
    stop = threading.Event()  # also ends the client's wait for a token that never comes
    client = Bitrix24Client(
        f"{fake.base_url}{fake.token}/", budget=budget, priority="push",
        retry=RetryPolicy(max_attempts=1, stop=stop),
    )
    before = fake.request_count

    def run() -> None:
        while not stop.is_set():
            try:
                client.call("crm.contact.list", {"select": ["ID"], "start": -1})
            except RetriableError:
                return

    def blocked_after(expected: int) -> bool:
        return push_waiters(budget) == 1 and fake.request_count - before == expected

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        settled(lambda: blocked_after(burst))  # the burst is granted at once, then it waits
        for steps in range(1, 5):
            now[0] += step
            budget.wake()
            settled(lambda steps=steps: blocked_after(burst + 5 * steps))  # type: ignore[misc]
    finally:
        stop.set()
        budget.wake()
        worker.join(SETTLE)
        client.close()
    assert fake.request_count - before == burst + 20  # rate x t on top of the burst, no more
    assert budget.granted["push"] == burst + 20


@pytest.fixture
def budgeted_delivery(
    settings: Settings, cache: sqlite3.Connection, engine: MirrorEngine, stop: RecordingStop
) -> Iterator[tuple[OutboxDelivery, RequestBudget]]:
    engine.run_cycle()
    options = push_options(settings)
    options.spool.mkdir(parents=True, exist_ok=True)
    budget = RequestBudget(1000.0, 1000, 0)
    pusher = build_pusher(settings, stop=stop, budget=budget)
    yield OutboxDelivery(cache, pusher, options, worker_id="test"), budget
    pusher.close()


def test_every_request_of_a_delivery_takes_a_token_including_uploads_and_retries(
    budgeted_delivery: tuple[OutboxDelivery, RequestBudget], fake: FakeBitrix24
) -> None:
    delivery, budget = budgeted_delivery
    fake.faults.add("query_limit", times=1, method="crm.item.add")
    fake.faults.add("query_limit", times=1, method="disk.upload")
    request_id, _ = enqueue(delivery, fake, [spool_file(delivery, "a/photo.jpg", JPEG)])
    before = fake.request_count
    delivery.deliver_next()
    request = outbox.get(delivery.conn, request_id)
    assert request is not None and request.status == "done"
    sent = fake.request_count - before
    client = delivery.pusher.client  # type: ignore[attr-defined]
    assert sent == client.requests_sent
    assert budget.granted == {"push": sent, "mirror": 0}
    assert sent >= 7  # lookup, add (refused, retried), file lookup, ticket, upload x2, attach


def test_the_daemon_builds_one_budget_for_both_lanes(tmp_path: Path, fake: FakeBitrix24) -> None:
    from syncd.daemon.service import Daemon

    token = tmp_path / "token"
    token.write_text(fake.token)
    settings = load_settings(
        None,
        crm={"bitrix24": {"url": fake.base_url, "webhook_token_file": token}},
        state={"directory": tmp_path / "state"},
        api={"enabled": False},
        omniva={"enabled": False},
    )
    daemon = Daemon(settings)
    assert daemon.budget is not None
    assert daemon.lane.budget is daemon.budget
    assert daemon.push.budget is daemon.budget
