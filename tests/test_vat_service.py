"""syncd.engines.vat: local checks, the cache, single flight, slots, retries, stale answers, the
circuit.

The first half drives :class:`VatService` with an in-test stand-in for the VIES client (answers
and errors chosen per number, a gate to hold calls); the second half runs it against the real
fake VIES over loopback.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.connectors.vies.client import ViesAnswer, ViesClient
from syncd.connectors.vies.errors import (
    ViesError,
    ViesMalformedError,
    ViesUnavailableError,
    fault_error,
)
from syncd.connectors.vies.fake import FakeVies
from syncd.engines.vat import (
    MalformedVatNumberError,
    VatOptions,
    VatRejectedError,
    VatResult,
    VatService,
    VatUnavailableError,
    check_locally,
)
from syncd.state import db, vies_cache
from tests.conftest import RecordingStop

NOW = datetime(2025, 3, 10, 12, 0, 0, tzinfo=UTC)
WAIT = 10.0  # seconds: an upper bound for waits on events that should happen at once

# Numbers that pass python-stdnum.
EE_1, EE_2, EE_3 = "EE100931558", "EE100931503", "EE100931516"
LV_1 = "LV40003009497"
FI_1 = "FI20096687"
DE_1 = "DE123456704"


class Clock:
    """The service's injectable clock, moved by hand."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def vies_fault(code: str) -> ViesError:
    """The connector's error for a VIES fault string or a transport kind."""
    known = fault_error(code, "EE")
    if known is not None:
        return known
    if code in ("http_error", "timeout", "connection"):
        return ViesUnavailableError(f"VIES: transport failure ({code})", code=code)
    return ViesMalformedError(f"VIES: unusable answer ({code})", code=code)


@dataclass
class StandIn:
    """A stand-in for ``ViesClient``: answers valid by default, or what ``script`` says for a
    number (a list is consumed one item per call, the last item repeats); records every call
    and the most calls in flight at once; ``hold()`` keeps calls waiting until ``release()``."""

    script: dict[str, list[ViesAnswer | Exception]] = field(default_factory=dict)
    echo: tuple[str, str] | None = None  # answer with this (country, number) instead
    name: str | None = "Example OÜ"
    address: str | None = "Tartu mnt 1\n10115 Tallinn"
    calls: list[tuple[str, str]] = field(default_factory=list)
    closed: bool = False

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._open = threading.Event()
        self._open.set()
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.max_total = 0

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def wait_for_calls(self, count: int, in_flight: bool = False) -> bool:
        """Until ``count`` calls were made (or are in flight now)."""

        def reached() -> bool:
            return (sum(self.in_flight.values()) if in_flight else len(self.calls)) >= count

        with self._cond:
            return self._cond.wait_for(reached, WAIT)

    def check(self, country_code: str, vat_number: str) -> ViesAnswer:
        with self._cond:
            self.calls.append((country_code, vat_number))
            self.in_flight[country_code] += 1
            self.max_in_flight[country_code] = max(
                self.max_in_flight[country_code], self.in_flight[country_code]
            )
            self.max_total = max(self.max_total, sum(self.in_flight.values()))
            self._cond.notify_all()
        try:
            assert self._open.wait(WAIT), "the stand-in was never released"
            outcomes = self.script.get(country_code + vat_number)
            if outcomes:
                outcome = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
                if isinstance(outcome, Exception):
                    raise outcome
                return outcome
            country, number = self.echo or (country_code, vat_number)
            return ViesAnswer(
                country_code=country,
                vat_number=number,
                valid=True,
                name=self.name,
                address=self.address,
                request_date="2025-03-10",
                consultation_number=None,
            )
        finally:
            with self._cond:
                self.in_flight[country_code] -= 1
                self._cond.notify_all()

    def close(self) -> None:
        self.closed = True


@dataclass
class Harness:
    service: VatService
    client: StandIn
    clock: Clock
    stop: RecordingStop
    path: Path
    statements: list[str]

    def rows(self) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path)
        try:
            return conn.execute(
                "SELECT country_code, vat_number, valid, name, address FROM vies_answers "
                "ORDER BY 1, 2"
            ).fetchall()
        finally:
            conn.close()

    def table(self, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def seed(self, vat_id: str, *, age: timedelta, valid: bool = True) -> None:
        """Store an answer for ``vat_id`` fetched ``age`` before the clock's now."""
        conn = db.connect(self.path)
        try:
            fetched = self.clock.now - age
            vies_cache.put(
                conn,
                vies_cache.CachedAnswer(
                    country_code=vat_id[:2],
                    vat_number=vat_id[2:],
                    valid=valid,
                    name="Seeded OÜ",
                    address="Seeded street 1",
                    request_date=fetched.strftime("%Y-%m-%d"),
                    consultation_number=None,
                    fetched_at=fetched,
                ),
                fetched,
            )
        finally:
            conn.close()


def make_harness(
    tmp_path: Path, client: Any, *, clock: Clock | None = None, **options: Any
) -> Harness:
    path = tmp_path / "cache.sqlite3"
    statements: list[str] = []
    lock = threading.Lock()

    def trace(statement: str) -> None:
        with lock:
            statements.append(statement)

    def connect() -> sqlite3.Connection:
        conn = db.connect(path)
        conn.set_trace_callback(trace)
        return conn

    db.connect(path).close()  # migrate before tracing
    # A day of stale fallback, configured explicitly (the default, keep_hours == cache_hours,
    # has none: tests/test_retention.py).
    opts = {
        "max_attempts": 3,
        "retry_base_delay": 0.01,
        "lookup_wait_seconds": WAIT,
        "keep_hours": 48.0,
        **options,
    }
    stop = RecordingStop()
    clock = clock or Clock()
    service = VatService(connect, client, VatOptions(**opts), stop=stop, clock=clock)
    return Harness(service, client, clock, stop, path, statements)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = make_harness(tmp_path, StandIn())
    yield h
    h.service.close()


def in_threads(count: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run ``fn(i)`` on ``count`` threads at once; results (or raised errors) in order."""

    def guarded(i: int) -> Any:
        try:
            return fn(i)
        except Exception as error:
            return error

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(guarded, range(count)))


# -- the local check --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "EE" + "1" * 31,  # 33 characters
        "EE100931558!",
        "EE_100931558",
        "EE\t100931558",
        "ÉE100931558",
        "EE１００９３１５５８",  # full-width digits
        "100931558",
        "1E100931558",
        "E",
        "GB980780684",  # not in VIES since Brexit
        "US123456789",
        "EU372000041",  # an OSS number, not a VIES member state
    ],
)
def test_not_a_vat_number_is_refused_without_vies(harness: Harness, raw: str) -> None:
    with pytest.raises(MalformedVatNumberError) as caught:
        harness.service.lookup(raw)
    assert caught.value.code == "malformed_vat_number"
    assert harness.client.calls == []


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("EE10093155", "wrong length"),
        ("EE", "wrong length"),
        ("FR6195450607", "wrong length"),
        ("EE100931559", "checksum does not match"),
        ("ESX1234567R", "checksum does not match"),
        ("EL ABC 123 456", "invalid format"),
        ("DE12345678A", "invalid format"),
        ("NL805734958B0A", "invalid format"),
    ],
)
def test_number_failing_stdnum_is_answered_locally(harness: Harness, raw: str, reason: str) -> None:
    result = harness.service.lookup(raw)
    assert (result.valid, result.source, result.invalid_reason) == (False, "local", reason)
    assert result.query == result.country_code + result.vat_number
    assert (result.request_date, result.fetched_at, result.age_seconds) == (None, None, None)
    assert harness.client.calls == []
    assert harness.rows() == []
    harness.service.flush_counts()
    assert harness.table("SELECT outcome, count FROM vies_lookup_counts") == [("local_invalid", 1)]


@pytest.mark.parametrize(
    ("raw", "query", "asked"),
    [
        ("ee 100.931-558", "EE100931558", ("EE", "100931558")),
        ("GR094259216", "EL094259216", ("EL", "094259216")),  # Greece is EL at VIES
        ("el 094 259 216", "EL094259216", ("EL", "094259216")),
        ("XI 980 7806 84", "XI980780684", ("XI", "980780684")),  # Northern Ireland
        ("be697449992", "BE0697449992", ("BE", "0697449992")),  # stdnum's compact form
        ("  NL805734958B01  ", "NL805734958B01", ("NL", "805734958B01")),
    ],
)
def test_numbers_are_cleaned_before_vies(
    harness: Harness, raw: str, query: str, asked: tuple[str, str]
) -> None:
    result = harness.service.lookup(raw)
    assert (result.query, result.source, result.valid) == (query, "live", True)
    assert (result.country_code, result.vat_number) == asked
    assert harness.client.calls == [asked]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40) | st.from_regex(r"[A-Za-z]{2}[0-9A-Za-z .\-]{0,14}", fullmatch=True))
def test_local_check_either_answers_or_refuses(raw: str) -> None:
    try:
        checked = check_locally(raw)
    except MalformedVatNumberError:
        return
    assert checked.country_code.isalpha() and len(checked.country_code) == 2
    assert checked.invalid_reason in (
        None,
        "wrong length",
        "invalid format",
        "checksum does not match",
    )


# -- cache ------------------------------------------------------------------------------------


def test_live_answer_is_cached_then_expires(harness: Harness) -> None:
    live = harness.service.lookup(EE_1)
    assert (live.source, live.age_seconds, live.fetched_at) == (
        "live",
        None,
        "2025-03-10T12:00:00Z",
    )
    assert (live.name, live.address, live.request_date) == (
        "Example OÜ",
        "Tartu mnt 1\n10115 Tallinn",
        "2025-03-10",
    )

    harness.clock.advance(hours=23, minutes=59)
    cached = harness.service.lookup(EE_1)
    assert (cached.source, cached.age_seconds) == ("cache", 23 * 3600 + 59 * 60)
    assert cached.fetched_at == live.fetched_at and cached.name == live.name
    assert len(harness.client.calls) == 1

    harness.clock.advance(minutes=1)  # 24 h: no longer fresh
    again = harness.service.lookup(EE_1)
    assert (again.source, again.fetched_at) == ("live", "2025-03-11T12:00:00Z")
    assert len(harness.client.calls) == 2


def test_cache_hours_is_configurable(tmp_path: Path) -> None:
    h = make_harness(tmp_path, StandIn(), cache_hours=1.0)
    h.service.lookup(EE_1)
    h.clock.advance(minutes=59)
    assert h.service.lookup(EE_1).source == "cache"
    h.clock.advance(minutes=1)
    assert h.service.lookup(EE_1).source == "live"
    h.service.close()


def test_fresh_skips_the_fresh_cache(harness: Harness) -> None:
    harness.service.lookup(EE_1)
    assert harness.service.lookup(EE_1, fresh=True).source == "live"
    assert len(harness.client.calls) == 2


def test_invalid_answers_are_cached_too(harness: Harness) -> None:
    harness.client.script[EE_1] = [
        ViesAnswer("EE", "100931558", False, None, None, "2025-03-10", None)
    ]
    first = harness.service.lookup(EE_1)
    second = harness.service.lookup(EE_1)
    assert (first.valid, first.source, second.valid, second.source) == (
        False,
        "live",
        False,
        "cache",
    )
    assert harness.rows() == [("EE", "100931558", 0, None, None)]


def test_answers_are_keyed_by_what_was_asked_and_placeholders_mean_not_shared(
    tmp_path: Path,
) -> None:
    # An echo that differs only in spacing, or in naming Greece GR, is about the number asked.
    client = StandIn(echo=("GR", " 094 259 216 "), name="---", address="")
    h = make_harness(tmp_path, client)
    result = h.service.lookup("GR094259216")
    assert (result.country_code, result.vat_number, result.name, result.address) == (
        "EL",
        "094259216",
        None,
        None,
    )
    assert h.rows() == [("EL", "094259216", 1, None, None)]
    assert h.service.lookup("EL094259216").source == "cache"
    h.service.close()


@pytest.mark.parametrize(
    ("echo", "part"),
    [(("LV", "100931558"), "country"), (("EE", "100931557"), "number"), (("EE", ""), "number")],
)
def test_an_answer_about_another_number_is_never_a_verdict(
    harness: Harness, caplog: pytest.LogCaptureFixture, echo: tuple[str, str], part: str
) -> None:
    harness.client.echo = echo
    caplog.set_level(logging.DEBUG)
    with pytest.raises(VatUnavailableError) as caught:
        harness.service.lookup(EE_1)
    assert (caught.value.code, caught.value.retry_after) == ("vies_bad_response", 60)
    assert len(harness.client.calls) == 3  # a bad response is retried like any other
    assert harness.rows() == []  # never cached
    harness.service.flush_counts()
    assert harness.table("SELECT outcome, count FROM vies_lookup_counts") == [("unavailable", 1)]
    what = "country code" if part == "country" else "VAT number"
    assert any(f"another {what}" in r.getMessage() for r in caplog.records)
    for message in [r.getMessage() for r in caplog.records] + [str(caught.value)]:
        assert "100931558" not in message and "100931557" not in message, message


def test_an_answer_about_another_number_falls_back_to_a_stale_entry(tmp_path: Path) -> None:
    h = make_harness(tmp_path, StandIn(echo=("EE", "100931503")), keep_hours=48.0)
    h.seed(EE_1, age=timedelta(hours=30))
    stale = h.service.lookup(EE_1)
    assert (stale.source, stale.name, stale.age_seconds) == ("stale", "Seeded OÜ", 30 * 3600)
    assert h.table("SELECT fetched_at FROM vies_answers") == [("2025-03-09T06:00:00Z",)]
    h.service.close()


def test_an_answer_without_a_consultation_number_is_kept_and_counted(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    bare = ViesAnswer("EE", "100931558", True, "Example OÜ", None, "2025-03-10", None, approx=True)
    proven = ViesAnswer("LV", "40003009497", True, "Example SIA", None, "2025-03-10", "WAPI1")
    # An invalid number needs no proof: its missing consultation number is no warning.
    invalid = ViesAnswer("FI", "20096687", False, None, None, "2025-03-10", None, approx=True)
    harness.client.script[EE_1] = [bare]
    harness.client.script[LV_1] = [proven]
    harness.client.script[FI_1] = [invalid]
    caplog.set_level(logging.DEBUG)
    first = harness.service.lookup(EE_1)
    assert (first.source, first.valid, first.consultation_number) == ("live", True, None)
    assert harness.service.lookup(EE_1).source == "cache"  # counted once, when VIES answered
    assert harness.service.lookup(LV_1).consultation_number == "WAPI1"
    assert harness.service.lookup(FI_1).valid is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "VIES lookup (EE): checkVatApprox answered without a consultation number; the verdict "
        "is kept without proof of the check"
    ]
    assert harness.rows()[0][:3] == ("EE", "100931558", 1)

    harness.service.flush_counts()
    counts = "SELECT outcome, count FROM vies_lookup_counts ORDER BY outcome"
    assert harness.table(counts) == [("cache", 1), ("live", 3), ("no_consultation", 1)]
    conn = db.connect(harness.path)
    stats = vies_cache.figures(conn, harness.clock.now).summary()
    conn.close()
    # A flag on a live answer, not a lookup of its own: the totals and the ratio ignore it.
    assert (stats["lookups_24h"], stats["hits_24h"], stats["hit_ratio"]) == (4, 1, 0.25)
    assert stats["no_consultation_24h"] == 1


def test_a_cache_hit_never_writes_to_sqlite(harness: Harness) -> None:
    harness.service.lookup(EE_1)
    harness.service.lookup("EE10093155")  # local answer
    harness.statements.clear()
    for _ in range(20):
        assert harness.service.lookup(EE_1).source == "cache"
    harness.service.lookup("EE10093155")
    writes = [s for s in harness.statements if not s.lstrip().upper().startswith("SELECT")]
    assert writes == []
    assert harness.statements  # the cache was read

    harness.service.flush_counts()
    assert any(s.startswith("INSERT INTO vies_lookup_counts") for s in harness.statements)


def test_to_json_has_the_api_shape(harness: Harness) -> None:
    answer = harness.service.lookup(EE_1).to_json()
    assert answer == {
        "query": "EE100931558",
        "country_code": "EE",
        "vat_number": "100931558",
        "valid": True,
        "name": "Example OÜ",
        "address": "Tartu mnt 1\n10115 Tallinn",
        "request_date": "2025-03-10",
        "consultation_number": None,
        "fetched_at": "2025-03-10T12:00:00Z",
        "source": "live",
        "age_seconds": None,
        "invalid_reason": None,
    }


# -- failures ---------------------------------------------------------------------------------

RETRIED = [
    ("SERVICE_UNAVAILABLE", "vies_unavailable", 60),
    ("MS_UNAVAILABLE", "member_state_unavailable", 60),
    ("TIMEOUT", "member_state_unavailable", 60),
    ("GLOBAL_MAX_CONCURRENT_REQ", "vies_busy", 120),
    ("GLOBAL_MAX_CONCURRENT_REQ_TIME", "vies_busy", 120),
    ("MS_MAX_CONCURRENT_REQ", "vies_busy", 120),
    ("MS_MAX_CONCURRENT_REQ_TIME", "vies_busy", 120),
    ("http_error", "vies_unavailable", 60),
    ("timeout", "vies_unavailable", 60),
    ("connection", "vies_unavailable", 60),
    ("invalid_xml", "vies_bad_response", 60),
    ("html", "vies_bad_response", 60),
    ("redirect", "vies_bad_response", 60),
    ("unexpected", "vies_bad_response", 60),
]


@pytest.mark.parametrize(("fault", "code", "retry_after"), RETRIED)
def test_retriable_faults_are_retried_then_unavailable(
    harness: Harness, fault: str, code: str, retry_after: int
) -> None:
    harness.client.script[EE_1] = [vies_fault(fault)]
    with pytest.raises(VatUnavailableError) as caught:
        harness.service.lookup(EE_1)
    assert (caught.value.code, caught.value.retry_after) == (code, retry_after)
    assert "100931558" not in str(caught.value)
    assert len(harness.client.calls) == 3  # max_attempts
    assert len(harness.stop.waits) == 2  # a backoff between attempts
    assert harness.rows() == []  # a fault is never an answer


def test_a_retry_that_succeeds_answers_live(harness: Harness) -> None:
    harness.client.script[EE_1] = [
        vies_fault("MS_UNAVAILABLE"),
        ViesAnswer("EE", "100931558", True, "Example OÜ", None, "2025-03-10", None),
    ]
    result = harness.service.lookup(EE_1)
    assert (result.source, result.valid) == ("live", True)
    assert len(harness.client.calls) == 2


@pytest.mark.parametrize("fault", ["SERVICE_UNAVAILABLE", "MS_UNAVAILABLE", "html", "http_error"])
def test_failure_falls_back_to_a_stale_answer_with_its_age(harness: Harness, fault: str) -> None:
    harness.seed(EE_1, age=timedelta(hours=30))
    harness.client.script[EE_1] = [vies_fault(fault)]
    result = harness.service.lookup(EE_1)
    assert (result.source, result.age_seconds, result.name) == ("stale", 30 * 3600, "Seeded OÜ")
    assert len(harness.client.calls) == 3
    assert harness.table("SELECT fetched_at FROM vies_answers") == [("2025-03-09T06:00:00Z",)]


def test_a_stale_answer_is_not_used_past_its_maximum_age(harness: Harness) -> None:
    harness.seed(EE_1, age=timedelta(hours=48))  # keep_hours
    harness.client.script[EE_1] = [vies_fault("SERVICE_UNAVAILABLE")]
    with pytest.raises(VatUnavailableError):
        harness.service.lookup(EE_1)


def test_the_stale_window_is_keep_hours_minus_cache_hours(tmp_path: Path) -> None:
    h = make_harness(tmp_path, StandIn(), keep_hours=26.0)
    h.seed(EE_1, age=timedelta(hours=25, minutes=59))
    h.seed(EE_2, age=timedelta(hours=26))
    h.client.script[EE_1] = h.client.script[EE_2] = [vies_fault("TIMEOUT")]
    assert h.service.lookup(EE_1).source == "stale"
    with pytest.raises(VatUnavailableError) as caught:
        h.service.lookup(EE_2)
    assert caught.value.code == "member_state_unavailable"
    h.service.close()


def test_fresh_lookup_falls_back_to_the_fresh_entry(harness: Harness) -> None:
    harness.service.lookup(EE_1)
    harness.clock.advance(minutes=5)
    harness.client.script[EE_1] = [vies_fault("SERVICE_UNAVAILABLE")]
    result = harness.service.lookup(EE_1, fresh=True)
    assert (result.source, result.age_seconds) == ("stale", 300)


def test_invalid_input_is_rejected_not_retried_not_cached(harness: Harness) -> None:
    harness.seed(EE_1, age=timedelta(hours=30))
    harness.client.script[EE_1] = [vies_fault("INVALID_INPUT")]
    with pytest.raises(VatRejectedError) as caught:
        harness.service.lookup(EE_1)
    assert caught.value.code == "vies_rejected_input"
    assert len(harness.client.calls) == 1
    assert harness.table("SELECT count(*) FROM vies_answers") == [(1,)]  # the seed only


def test_invalid_requester_info_is_our_fault_not_the_number(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.client.script[EE_1] = [vies_fault("INVALID_REQUESTER_INFO")]
    with (
        caplog.at_level(logging.ERROR, logger="syncd.engines.vat"),
        pytest.raises(VatUnavailableError),
    ):
        harness.service.lookup(EE_1)
    assert len(harness.client.calls) == 1
    assert any("requester" in r.getMessage() for r in caplog.records)


def test_a_shutdown_during_backoff_ends_the_lookup(harness: Harness) -> None:
    harness.client.script[EE_1] = [vies_fault("SERVICE_UNAVAILABLE")]
    harness.stop.set()
    with pytest.raises(VatUnavailableError) as caught:
        harness.service.lookup(EE_1)
    assert caught.value.code == "vies_unavailable"
    assert len(harness.client.calls) == 1


# -- the circuit ------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["IP_BLOCKED", "VAT_BLOCKED"])
def test_a_block_opens_the_circuit_and_stops_calls(
    harness: Harness, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    harness.client.script[EE_1] = [vies_fault(fault)]
    with caplog.at_level(logging.DEBUG, logger="syncd.engines.vat"):
        with pytest.raises(VatUnavailableError) as caught:
            harness.service.lookup(EE_1)
        assert (caught.value.code, caught.value.retry_after) == ("vies_blocked", 3600)
        assert len(harness.client.calls) == 1  # never retried

        # Other numbers and countries: no VIES call while open, a stale answer if one exists.
        harness.clock.advance(minutes=30)
        with pytest.raises(VatUnavailableError) as again:
            harness.service.lookup(LV_1)
        assert (again.value.code, again.value.retry_after) == ("vies_blocked", 1800)
        harness.seed(FI_1, age=timedelta(hours=25))
        stale = harness.service.lookup(FI_1, fresh=True)
        assert (stale.source, stale.age_seconds) == ("stale", 25 * 3600)
        assert len(harness.client.calls) == 1

    assert harness.table("SELECT scope, reason, opened_at, open_until FROM vies_circuits") == [
        ("global", fault, "2025-03-10T12:00:00Z", "2025-03-10T13:00:00Z")
    ]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert (
        errors[0]
        .getMessage()
        .startswith(
            f"VIES has blocked this server ({fault}); no VIES calls until 2025-03-10T13:00:00Z"
        )
    )

    # The circuit closes by itself at open_until.
    harness.clock.advance(minutes=30)
    assert harness.service.lookup(LV_1).source == "live"
    assert len(harness.client.calls) == 2


def test_a_circuit_opened_by_another_process_is_honoured(harness: Harness) -> None:
    harness.service.circuit_refresh_seconds = 0.0
    harness.service.lookup(EE_1)  # reads the (empty) circuit table
    conn = db.connect(harness.path)
    vies_cache.open_circuit(
        conn, "global", "IP_BLOCKED", now=NOW, until=NOW + timedelta(minutes=10)
    )
    with pytest.raises(VatUnavailableError) as caught:
        harness.service.lookup(EE_2)
    assert (caught.value.code, caught.value.retry_after) == ("vies_blocked", 600)
    assert len(harness.client.calls) == 1

    vies_cache.close_circuit(conn, "global")  # an operator lifts it
    conn.close()
    assert harness.service.lookup(EE_2).source == "live"


def test_a_member_state_circuit_only_stops_that_member_state(harness: Harness) -> None:
    conn = db.connect(harness.path)
    vies_cache.open_circuit(conn, "EE", "MS_UNAVAILABLE", now=NOW, until=NOW + timedelta(hours=1))
    conn.close()
    with pytest.raises(VatUnavailableError):
        harness.service.lookup(EE_1)
    assert harness.service.lookup(LV_1).source == "live"
    assert harness.client.calls == [("LV", LV_1[2:])]


# -- concurrency ------------------------------------------------------------------------------


def test_concurrent_lookups_of_one_number_share_one_call(harness: Harness) -> None:
    harness.client.hold()
    with ThreadPoolExecutor(max_workers=50) as pool:
        futures = [pool.submit(harness.service.lookup, EE_1) for _ in range(50)]
        assert harness.service.wait_for_waiting(50, WAIT)
        assert harness.client.wait_for_calls(1)
        harness.client.release()
        results = [f.result(timeout=WAIT) for f in futures]
    assert len(harness.client.calls) == 1
    assert {r.source for r in results} == {"live"}
    assert len(set(results)) == 1
    assert harness.service.waiting_lookups() == 0
    harness.service.flush_counts()
    assert harness.table("SELECT outcome, count FROM vies_lookup_counts") == [("live", 50)]


def test_lookups_sharing_a_failed_call_share_its_error(harness: Harness) -> None:
    harness.client.script[EE_1] = [vies_fault("MS_MAX_CONCURRENT_REQ")]
    harness.client.hold()
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(harness.service.lookup, EE_1) for _ in range(8)]
        assert harness.service.wait_for_waiting(8, WAIT)
        harness.client.release()
        errors = [f.exception(timeout=WAIT) for f in futures]
    assert all(isinstance(e, VatUnavailableError) and e.code == "vies_busy" for e in errors)
    assert len(harness.client.calls) == 3  # one caller's attempts, shared by all


def test_one_call_per_member_state_while_another_proceeds(harness: Harness) -> None:
    harness.client.hold()
    with ThreadPoolExecutor(max_workers=3) as pool:
        first = pool.submit(harness.service.lookup, EE_1)
        assert harness.client.wait_for_calls(1, in_flight=True)
        second = pool.submit(harness.service.lookup, EE_2)
        assert harness.service.wait_for_waiting(2, WAIT)
        other = pool.submit(harness.service.lookup, LV_1)
        assert harness.client.wait_for_calls(2, in_flight=True)  # LV goes out beside EE
        assert {c for c, _ in harness.client.calls} == {"EE", "LV"}
        assert ("EE", EE_2[2:]) not in harness.client.calls
        harness.client.release()
        results = [f.result(timeout=WAIT) for f in (first, second, other)]
    assert [r.source for r in results] == ["live", "live", "live"]
    assert harness.client.max_in_flight["EE"] == 1
    assert len(harness.client.calls) == 3


def test_global_cap_on_calls_in_flight(tmp_path: Path) -> None:
    h = make_harness(tmp_path, StandIn(), max_concurrent_calls=2)
    numbers = [EE_1, LV_1, FI_1, DE_1, "NL805734958B01", "XI980780684"]
    h.client.hold()
    with ThreadPoolExecutor(max_workers=len(numbers)) as pool:
        futures = [pool.submit(h.service.lookup, n) for n in numbers]
        assert h.service.wait_for_waiting(len(numbers), WAIT)
        assert h.client.wait_for_calls(2, in_flight=True)
        h.client.release()
        assert all(f.result(timeout=WAIT).source == "live" for f in futures)
    assert h.client.max_total == 2
    assert len(h.client.calls) == len(numbers)
    h.service.close()


def test_waiting_too_long_for_a_slot_is_busy_or_stale(tmp_path: Path) -> None:
    h = make_harness(tmp_path, StandIn(), lookup_wait_seconds=0.2)
    h.seed(EE_3, age=timedelta(hours=30))
    h.client.hold()
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(h.service.lookup, EE_1)
        assert h.client.wait_for_calls(1, in_flight=True)
        with pytest.raises(VatUnavailableError) as caught:
            h.service.lookup(EE_2)  # the EE slot stays taken
        assert (caught.value.code, caught.value.retry_after) == ("vies_busy", 1)
        assert h.service.lookup(EE_3).source == "stale"
        h.client.release()
        assert first.result(timeout=WAIT).source == "live"
    assert h.client.calls == [("EE", EE_1[2:])]
    h.service.close()


def test_a_follower_stops_waiting_at_its_deadline(tmp_path: Path) -> None:
    h = make_harness(tmp_path, StandIn(), lookup_wait_seconds=0.2)
    h.client.hold()
    with ThreadPoolExecutor(max_workers=1) as pool:
        leader = pool.submit(h.service.lookup, EE_1)
        assert h.client.wait_for_calls(1, in_flight=True)
        with pytest.raises(VatUnavailableError) as caught:
            h.service.lookup(EE_1)
        assert caught.value.code == "vies_busy"
        h.client.release()
        assert leader.result(timeout=WAIT).source == "live"
    assert len(h.client.calls) == 1
    h.service.close()


# -- counters, purge, close, privacy ----------------------------------------------------------


def test_counters_are_flushed_per_utc_day(harness: Harness) -> None:
    harness.service.lookup(EE_1)  # live
    harness.service.lookup(EE_1)  # cache
    harness.service.lookup(EE_1)  # cache
    harness.service.lookup("EE10093155")  # local_invalid
    harness.client.script[LV_1] = [vies_fault("INVALID_INPUT")]
    with pytest.raises(VatRejectedError):
        harness.service.lookup(LV_1)
    harness.client.script[FI_1] = [vies_fault("SERVICE_UNAVAILABLE")]
    with pytest.raises(VatUnavailableError):
        harness.service.lookup(FI_1)
    harness.seed(DE_1, age=timedelta(hours=30))
    harness.client.script[DE_1] = [vies_fault("SERVICE_UNAVAILABLE")]
    harness.service.lookup(DE_1)  # stale
    with pytest.raises(MalformedVatNumberError):
        harness.service.lookup("nonsense!")  # not counted

    assert harness.table("SELECT * FROM vies_lookup_counts") == []  # nothing until a flush
    harness.service.flush_counts()
    harness.service.flush_counts()  # nothing new: no double counting
    counts = "SELECT day, outcome, count FROM vies_lookup_counts ORDER BY day, outcome"
    assert harness.table(counts) == [
        ("2025-03-10", "cache", 2),
        ("2025-03-10", "live", 1),
        ("2025-03-10", "local_invalid", 1),
        ("2025-03-10", "rejected", 1),
        ("2025-03-10", "stale", 1),
        ("2025-03-10", "unavailable", 1),
    ]
    harness.clock.advance(days=1)
    harness.service.lookup(EE_1)
    harness.service.flush_counts()
    assert harness.table(counts)[-1] == ("2025-03-11", "live", 1)

    conn = db.connect(harness.path)
    stats = vies_cache.figures(conn, harness.clock.now).summary()
    conn.close()
    assert (stats["hits_24h"], stats["hit_ratio"]) == (2, 0.4)  # 2 / (2 cache + 2 live + 1 stale)


def test_purge_keeps_stale_entries_until_their_maximum_age(harness: Harness) -> None:
    harness.seed(EE_1, age=timedelta(hours=47, minutes=59))
    harness.seed(EE_2, age=timedelta(hours=48, seconds=1))
    harness.seed(EE_3, age=timedelta(hours=1))
    assert harness.service.purge() == 1
    assert sorted(r[1] for r in harness.rows()) == sorted([EE_1[2:], EE_3[2:]])
    harness.clock.advance(minutes=2)
    assert harness.service.purge() == 1
    assert harness.service.purge() == 0


def test_purge_removes_closed_circuits_and_calls_resume(harness: Harness) -> None:
    harness.client.script[EE_1] = [vies_fault("IP_BLOCKED")]
    with pytest.raises(VatUnavailableError):
        harness.service.lookup(EE_1)
    harness.clock.advance(hours=1)
    assert harness.service.purge() == 1
    assert harness.table("SELECT * FROM vies_circuits") == []
    assert harness.service.lookup(EE_2).source == "live"


def test_close_closes_connections_and_the_client(tmp_path: Path) -> None:
    h = make_harness(tmp_path, StandIn())
    in_threads(4, lambda i: h.service.lookup(EE_1))
    connections = h.service._connections.opened()
    assert 1 <= len(connections) <= 4
    h.service.close()
    assert h.client.closed
    for conn in connections:
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")
    # close flushed the counters; one call served all four (shared in flight, or the cache)
    counts = dict(h.table("SELECT outcome, count FROM vies_lookup_counts"))
    assert sum(counts.values()) == 4 and set(counts) <= {"cache", "live"}
    assert len(h.client.calls) == 1


def test_logs_never_carry_numbers_or_names(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    secrets = ["100931558", "40003009497", "20096687", "123456704", "Example", "Seeded", "Tartu"]
    caplog.set_level(logging.DEBUG)
    harness.service.lookup(EE_1)
    harness.service.lookup(EE_1)
    harness.service.lookup("EE100931559")
    harness.client.script[LV_1] = [vies_fault("INVALID_INPUT")]
    with pytest.raises(VatRejectedError):
        harness.service.lookup(LV_1)
    harness.seed(FI_1, age=timedelta(hours=30))
    harness.client.script[FI_1] = [vies_fault("MS_UNAVAILABLE")]
    harness.service.lookup(FI_1)
    harness.client.script[DE_1] = [vies_fault("IP_BLOCKED")]
    with pytest.raises(VatUnavailableError) as caught:
        harness.service.lookup(DE_1)
    messages = [r.getMessage() for r in caplog.records] + [str(caught.value)]
    assert any("stale" in m for m in messages) and any("blocked" in m for m in messages)
    for message in messages:
        assert not any(secret in message for secret in secrets), message


def test_results_are_equal_values(harness: Harness) -> None:
    first = harness.service.lookup(EE_1)
    assert isinstance(first, VatResult)
    assert first == VatResult(**{**first.to_json()})


# -- against the fake VIES over loopback ------------------------------------------------------

FAKE_DATE = date(2025, 3, 10)
EE_A, EE_B = "EE101819093", "EE105597971"  # traders in the fake's register
LV_A = "LV40957117777"
DE_A = "DE159425947"  # Germany shares neither name nor address
EL_A = "EL562418057"
XI_A = "XI384702496"

# (injected kind, expected outcome: an unavailable code or "rejected", VIES calls made)
FAKE_FAULTS = [
    ("INVALID_INPUT", "rejected", 1),
    ("INVALID_REQUESTER_INFO", "vies_unavailable", 1),
    ("SERVICE_UNAVAILABLE", "vies_unavailable", 3),
    ("MS_UNAVAILABLE", "member_state_unavailable", 3),
    ("TIMEOUT", "member_state_unavailable", 3),
    ("GLOBAL_MAX_CONCURRENT_REQ", "vies_busy", 3),
    ("GLOBAL_MAX_CONCURRENT_REQ_TIME", "vies_busy", 3),
    ("MS_MAX_CONCURRENT_REQ", "vies_busy", 3),
    ("MS_MAX_CONCURRENT_REQ_TIME", "vies_busy", 3),
    ("VAT_BLOCKED", "vies_blocked", 1),
    ("IP_BLOCKED", "vies_blocked", 1),
    ("http_500", "vies_unavailable", 3),
    ("invalid_xml", "vies_bad_response", 3),
    ("html", "vies_bad_response", 3),  # HTTP 200 with a maintenance page
    ("redirect", "vies_bad_response", 3),  # 302 to an HTML page, never followed
    ("truncated", "vies_unavailable", 3),
    ("drop", "vies_unavailable", 3),
    ("echo_country", "vies_bad_response", 3),  # the true verdict, about another member state
    ("echo_number", "vies_bad_response", 3),  # ... or about another number
]


@pytest.fixture
def fake() -> Iterator[FakeVies]:
    with FakeVies(request_date=FAKE_DATE) as f:
        yield f


def fake_harness(
    tmp_path: Path, fake: FakeVies, *, timeout: float = 5.0, **options: Any
) -> Harness:
    client = ViesClient(fake.base_url, connect_timeout=2.0, timeout=timeout)
    return make_harness(tmp_path, client, **options)


@pytest.fixture
def live(tmp_path: Path, fake: FakeVies) -> Iterator[Harness]:
    h = fake_harness(tmp_path, fake)
    yield h
    h.service.close()


def test_fake_answers_live_then_from_the_cache(live: Harness, fake: FakeVies) -> None:
    greek = live.service.lookup("GR 562 418 057")
    assert (greek.query, greek.valid, greek.source) == ("EL562418057", True, "live")
    assert greek.name == "ΑΙΓΑΙΟ ΑΙΣΘΗΤΙΚΗ ΜΟΝΟΠΡΟΣΩΠΗ Ι.Κ.Ε."
    assert greek.address == "ΛΕΩΦ. ΣΥΓΓΡΟΥ 120\n11745 - ΑΘΗΝΑ"
    assert greek.request_date == "2025-03-10"
    german = live.service.lookup(DE_A)
    assert (german.valid, german.name, german.address) == (True, None, None)  # "---"
    unknown = live.service.lookup(EE_1)  # well-formed, not registered
    assert (unknown.valid, unknown.name, unknown.address) == (False, None, None)
    northern_ireland = live.service.lookup(XI_A.lower())
    assert (northern_ireland.valid, northern_ireland.name) == (True, "LAGAN SKIN CLINIC LTD")
    assert [(r.country_code, r.vat_number) for r in fake.requests] == [
        ("EL", "562418057"),
        ("DE", "159425947"),
        ("EE", "100931558"),
        ("XI", "384702496"),
    ]

    live.clock.advance(hours=1)
    for number in (EL_A, DE_A, EE_1, XI_A):
        again = live.service.lookup(number)
        assert (again.source, again.age_seconds) == ("cache", 3600)
    assert len(fake.requests) == 4
    assert live.rows() == [
        ("DE", "159425947", 1, None, None),
        ("EE", "100931558", 0, None, None),
        ("EL", "562418057", 1, greek.name, greek.address),
        ("XI", "384702496", 1, "LAGAN SKIN CLINIC LTD", northern_ireland.address),
    ]

    live.clock.advance(hours=23)  # 24 h after the answer: expired
    assert live.service.lookup(EL_A).source == "live"
    assert len(fake.requests) == 5


def test_fake_consultation_number_is_kept(tmp_path: Path, fake: FakeVies) -> None:
    client = ViesClient(
        fake.base_url, connect_timeout=2.0, timeout=5.0, requester=("EE", "101819093")
    )
    h = make_harness(tmp_path, client)
    first = h.service.lookup(LV_A)
    assert first.consultation_number is not None and first.consultation_number.startswith("WAPI")
    assert h.service.lookup(LV_A).consultation_number == first.consultation_number
    assert [r.operation for r in fake.requests] == ["checkVatApprox"]
    h.service.close()


def test_fake_answer_without_a_consultation_number_is_kept_and_counted(
    tmp_path: Path, fake: FakeVies
) -> None:
    client = ViesClient(
        fake.base_url, connect_timeout=2.0, timeout=5.0, requester=("EE", "101819093")
    )
    h = make_harness(tmp_path, client)
    fake.inject("no_consultation", times=1)
    bare = h.service.lookup(LV_A)
    assert (bare.source, bare.valid, bare.consultation_number) == ("live", True, None)
    proven = h.service.lookup(LV_A, fresh=True)
    assert proven.consultation_number is not None and proven.consultation_number.startswith("WAPI")
    assert h.table("SELECT consultation_number FROM vies_answers") == [
        (proven.consultation_number,)
    ]
    h.service.flush_counts()
    counts = dict(h.table("SELECT outcome, count FROM vies_lookup_counts"))
    assert counts == {"live": 2, "no_consultation": 1}
    h.service.close()


def test_fake_never_sees_numbers_failing_the_local_check(live: Harness, fake: FakeVies) -> None:
    for raw in ("EE10181909", "EE101819094", "EL56241805X", "XI384702497", "NL805734958B0A"):
        assert live.service.lookup(raw).source == "local"
    for raw in ("", "GB980780684", "EE101819093; DROP TABLE", "US123", "EE" + "1" * 40):
        with pytest.raises(MalformedVatNumberError):
            live.service.lookup(raw)
    assert fake.requests == []
    assert fake.call_count == 0
    assert live.rows() == []


@pytest.mark.parametrize(("kind", "outcome", "calls"), FAKE_FAULTS)
def test_fake_fault_maps_to_its_outcome(
    live: Harness, fake: FakeVies, kind: str, outcome: str, calls: int
) -> None:
    fake.inject(kind, number=EE_A)
    expected: type[Exception] = VatRejectedError if outcome == "rejected" else VatUnavailableError
    with pytest.raises(expected) as caught:
        live.service.lookup(EE_A)
    if outcome != "rejected":
        assert isinstance(caught.value, VatUnavailableError)
        assert caught.value.code == outcome
        assert caught.value.retry_after is not None and caught.value.retry_after >= 60
    assert [(r.country_code, r.vat_number) for r in fake.requests] == [("EE", "101819093")] * calls
    assert live.rows() == []  # no fault ever becomes an answer
    blocked = live.table("SELECT reason FROM vies_circuits")
    assert blocked == ([(kind,)] if outcome == "vies_blocked" else [])


@pytest.mark.parametrize(
    ("kind", "outcome", "calls"), [f for f in FAKE_FAULTS if f[1] != "rejected"]
)
def test_fake_fault_with_a_stale_entry_answers_stale(
    live: Harness, fake: FakeVies, kind: str, outcome: str, calls: int
) -> None:
    assert live.service.lookup(EE_A).source == "live"
    live.clock.advance(hours=30)
    fake.reset()
    fake.inject(kind, number=EE_A)
    stale = live.service.lookup(EE_A)
    assert (stale.source, stale.age_seconds, stale.valid) == ("stale", 30 * 3600, True)
    assert stale.name == "Põhjala Laserkliinik OÜ"
    assert stale.fetched_at == "2025-03-10T12:00:00Z"  # the entry was not touched
    assert len(fake.requests) == calls
    assert live.table("SELECT fetched_at FROM vies_answers") == [("2025-03-10T12:00:00Z",)]


def test_fake_timeout_is_retried_then_unavailable(tmp_path: Path, fake: FakeVies) -> None:
    h = fake_harness(tmp_path, fake, timeout=0.3, max_attempts=2)
    fake.inject("slow", number=EE_A, delay=3.0)
    with pytest.raises(VatUnavailableError) as caught:
        h.service.lookup(EE_A)
    assert caught.value.code == "vies_unavailable"
    assert len(fake.requests) == 2
    assert h.rows() == []
    h.service.close()


def test_fake_fault_that_clears_is_answered_live_after_a_retry(
    live: Harness, fake: FakeVies
) -> None:
    fake.inject("MS_UNAVAILABLE", number=EE_A, times=2)
    result = live.service.lookup(EE_A)
    assert (result.source, result.valid) == ("live", True)
    assert len(fake.requests) == 3
    assert len(live.stop.waits) == 2


def test_fake_fifty_concurrent_lookups_make_one_call(live: Harness, fake: FakeVies) -> None:
    fake.hold()
    with ThreadPoolExecutor(max_workers=50) as pool:
        futures = [pool.submit(live.service.lookup, LV_A) for _ in range(50)]
        assert fake.wait_for_waiting(1, WAIT)
        assert live.service.wait_for_waiting(50, WAIT)  # all 50 wait before the answer
        assert len(fake.requests) == 1
        fake.release()
        results = [f.result(timeout=WAIT) for f in futures]
    assert len(fake.requests) == 1
    assert len(set(results)) == 1
    assert results[0].source == "live" and results[0].name == 'SIA "Daugavas Estētikas Centrs"'
    assert live.table("SELECT count(*) FROM vies_answers") == [(1,)]


def test_fake_one_call_per_member_state_while_another_proceeds(
    live: Harness, fake: FakeVies
) -> None:
    fake.hold()
    with ThreadPoolExecutor(max_workers=3) as pool:
        first = pool.submit(live.service.lookup, EE_A)
        assert fake.wait_for_waiting(1, WAIT)
        second = pool.submit(live.service.lookup, EE_B)
        latvian = pool.submit(live.service.lookup, LV_A)
        assert fake.wait_for_waiting(2, WAIT)  # LV is in flight beside the first EE call
        assert live.service.wait_for_waiting(3, WAIT)
        in_flight = sorted((r.country_code, r.vat_number) for r in fake.requests)
        assert in_flight == [("EE", "101819093"), ("LV", "40957117777")]  # not EE_B
        fake.release()
        results = [f.result(timeout=WAIT) for f in (first, second, latvian)]
    assert [r.source for r in results] == ["live", "live", "live"]
    assert [r.valid for r in results] == [True, True, True]
    assert (fake.requests[-1].country_code, fake.requests[-1].vat_number) == ("EE", "105597971")


def test_fake_ip_blocked_opens_the_circuit_for_everyone(
    tmp_path: Path, live: Harness, fake: FakeVies
) -> None:
    live.service.lookup(LV_A)  # cached before the block
    fake.inject("IP_BLOCKED")
    with pytest.raises(VatUnavailableError) as caught:
        live.service.lookup(EE_A)
    assert caught.value.code == "vies_blocked"
    assert len(fake.requests) == 2

    # The next lookups make no VIES call: errors, stale or fresh cache answers.
    with pytest.raises(VatUnavailableError):
        live.service.lookup(EE_B)
    live.clock.advance(minutes=30)
    assert live.service.lookup(LV_A).source == "cache"
    stale = live.service.lookup(LV_A, fresh=True)
    assert (stale.source, stale.age_seconds) == ("stale", 1800)
    assert len(fake.requests) == 2

    # Another process (the CLI) on the same cache sees the circuit through the table.
    cli_client = ViesClient(fake.base_url, connect_timeout=2.0, timeout=5.0)
    cli = VatService(
        lambda: db.connect(live.path),
        cli_client,
        VatOptions(),
        clock=live.clock,
    )
    with pytest.raises(VatUnavailableError) as seen:
        cli.lookup(EL_A)
    assert (seen.value.code, seen.value.retry_after) == ("vies_blocked", 1800)
    cli.close()
    assert len(fake.requests) == 2

    conn = db.connect(live.path)
    status = vies_cache.figures(conn, live.clock.now).summary()
    conn.close()
    assert status["open_circuits"] == [
        {"scope": "global", "reason": "IP_BLOCKED", "open_until": "2025-03-10T13:00:00Z"}
    ]


def test_fake_counters_flush_and_purge_expires(live: Harness, fake: FakeVies) -> None:
    live.service.lookup(EE_A)
    live.service.lookup(EE_A)
    live.service.lookup(EE_A)
    live.service.lookup("EE101819094")  # checksum fails
    live.clock.advance(hours=1)
    live.service.lookup(LV_A)
    live.service.flush_counts()
    conn = db.connect(live.path)
    try:
        stats = vies_cache.figures(conn, live.clock.now).summary()
        assert (stats["entries"], stats["lookups_24h"], stats["hits_24h"]) == (2, 5, 2)
        assert stats["hit_ratio"] == 0.5  # 2 cache / (2 cache + 2 live)

        live.clock.advance(hours=47, minutes=30)  # EE_A is 48.5 h old, LV_A 47.5 h
        assert live.service.purge() == 1
        assert [r[:2] for r in live.rows()] == [("LV", "40957117777")]
        fake.inject("SERVICE_UNAVAILABLE")
        with pytest.raises(VatUnavailableError):
            live.service.lookup(EE_A)  # purged: nothing stale to fall back on
        assert live.service.lookup(LV_A).source == "stale"
    finally:
        conn.close()
