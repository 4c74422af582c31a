"""syncd.state.vies_cache: answers, circuits, counters, purge and the status figures."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncd.core.clock import iso, iso_ms, parse_iso
from syncd.state import db, vies_cache
from syncd.state.vies_cache import CachedAnswer

NOW = datetime(2025, 3, 10, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = db.connect(tmp_path / "cache.sqlite3")
    yield connection
    connection.close()


def answer(number: str = "100931558", *, valid: bool = True, **changes: object) -> CachedAnswer:
    fields: dict[str, object] = {
        "country_code": "EE",
        "vat_number": number,
        "valid": valid,
        "name": "Example OÜ",
        "address": "Tartu mnt 1\n10115 Tallinn",
        "request_date": "2025-03-10",
        "consultation_number": None,
        "fetched_at": NOW,
    }
    fields.update(changes)
    return CachedAnswer(**fields)  # type: ignore[arg-type]


def test_put_then_get_round_trips_and_replaces(conn: sqlite3.Connection) -> None:
    assert vies_cache.get(conn, "EE", "100931558") is None
    vies_cache.put(conn, answer(consultation_number="WAPIAAAAW1"), NOW)
    stored = vies_cache.get(conn, "EE", "100931558")
    assert stored == answer(consultation_number="WAPIAAAAW1")

    later = NOW + timedelta(hours=2)
    vies_cache.put(conn, answer(valid=False, name=None, address=None), later)
    replaced = vies_cache.get(conn, "EE", "100931558")
    assert replaced is not None
    assert (replaced.valid, replaced.name, replaced.address) == (False, None, None)
    assert replaced.fetched_at == datetime(2025, 3, 10, 14, 0, tzinfo=UTC)
    assert vies_cache.count_answers(conn) == 1


def test_the_key_is_country_and_number(conn: sqlite3.Connection) -> None:
    vies_cache.put(conn, answer("100931558"), NOW)
    vies_cache.put(conn, answer("100931558", country_code="LV"), NOW)
    assert vies_cache.get(conn, "LV", "100931558") is not None
    assert vies_cache.get(conn, "LT", "100931558") is None
    assert vies_cache.count_answers(conn) == 2


def test_age_is_whole_seconds_and_never_negative() -> None:
    stored = answer()
    assert stored.age_seconds(NOW + timedelta(seconds=90.7)) == 90
    assert stored.age_seconds(NOW - timedelta(minutes=5)) == 0


def test_circuits_open_expire_and_close(conn: sqlite3.Connection) -> None:
    opened = vies_cache.open_circuit(
        conn, "global", "IP_BLOCKED", now=NOW, until=NOW + timedelta(hours=1)
    )
    assert opened.open_until == datetime(2025, 3, 10, 13, 0, tzinfo=UTC)
    vies_cache.open_circuit(conn, "EE", "MS_UNAVAILABLE", now=NOW, until=NOW + timedelta(minutes=1))
    assert [c.scope for c in vies_cache.open_circuits(conn, NOW)] == ["EE", "global"]
    assert [c.scope for c in vies_cache.open_circuits(conn, NOW + timedelta(minutes=2))] == [
        "global"
    ]
    assert vies_cache.open_circuits(conn, NOW + timedelta(hours=1)) == []  # open_until exclusive
    assert len(vies_cache.circuits(conn)) == 2  # expired rows stay until purged

    # Re-opening replaces the row.
    vies_cache.open_circuit(conn, "global", "VAT_BLOCKED", now=NOW, until=NOW + timedelta(hours=3))
    (row,) = [c for c in vies_cache.circuits(conn) if c.scope == "global"]
    assert (row.reason, row.open_until) == ("VAT_BLOCKED", datetime(2025, 3, 10, 15, tzinfo=UTC))

    assert vies_cache.close_circuit(conn, "global") is True
    assert vies_cache.close_circuit(conn, "global") is False
    assert [c.scope for c in vies_cache.circuits(conn)] == ["EE"]


def test_counts_accumulate_per_day_and_outcome(conn: sqlite3.Connection) -> None:
    vies_cache.add_counts(conn, {"cache": 3, "live": 1, "stale": 0}, "2025-03-10")
    vies_cache.add_counts(conn, {"cache": 2, "unavailable": 1}, "2025-03-10")
    vies_cache.add_counts(conn, {"cache": 7}, "2025-03-09")
    vies_cache.add_counts(conn, {}, "2025-03-10")
    rows = conn.execute(
        "SELECT day, outcome, count FROM vies_lookup_counts ORDER BY day, outcome"
    ).fetchall()
    assert rows == [
        ("2025-03-09", "cache", 7),
        ("2025-03-10", "cache", 5),
        ("2025-03-10", "live", 1),
        ("2025-03-10", "unavailable", 1),
    ]  # a zero count writes no row
    assert vies_cache.counts_for_days(conn, ["2025-03-10"]) == {
        "cache": 5,
        "live": 1,
        "unavailable": 1,
    }


def test_purge_removes_old_answers_closed_circuits_and_old_counters(
    conn: sqlite3.Connection,
) -> None:
    vies_cache.put(conn, answer("100000001"), NOW - timedelta(hours=49))
    vies_cache.put(conn, answer("100000002"), NOW - timedelta(hours=47))
    vies_cache.put(conn, answer("100000003"), NOW)
    vies_cache.open_circuit(conn, "global", "IP_BLOCKED", now=NOW, until=NOW - timedelta(seconds=1))
    vies_cache.open_circuit(conn, "EE", "IP_BLOCKED", now=NOW, until=NOW + timedelta(minutes=5))
    vies_cache.add_counts(conn, {"cache": 1}, "2025-02-07")  # 31 days before
    vies_cache.add_counts(conn, {"cache": 1}, "2025-02-08")  # 30 days before: kept

    deleted = vies_cache.purge(conn, NOW - timedelta(hours=48), now=NOW)

    assert deleted == 3
    remaining = [r[0] for r in conn.execute("SELECT vat_number FROM vies_answers ORDER BY 1")]
    assert remaining == ["100000002", "100000003"]
    assert [c.scope for c in vies_cache.circuits(conn)] == ["EE"]
    assert [r[0] for r in conn.execute("SELECT day FROM vies_lookup_counts")] == ["2025-02-08"]
    assert vies_cache.purge(conn, NOW - timedelta(hours=48), now=NOW) == 0


def test_stats_with_no_lookups(conn: sqlite3.Connection) -> None:
    assert vies_cache.figures(conn, NOW).summary() == {
        "entries": 0,
        "lookups_24h": 0,
        "hits_24h": 0,
        "hit_ratio": None,
        "no_consultation_24h": 0,
        "open_circuits": [],
    }


def test_answers_without_a_consultation_number_are_no_lookups_of_their_own(
    conn: sqlite3.Connection,
) -> None:
    vies_cache.add_counts(conn, {"cache": 3, "live": 2, "no_consultation": 1}, "2025-03-10")
    vies_cache.add_counts(conn, {"live": 1, "no_consultation": 1}, "2025-03-09")
    figures = vies_cache.figures(conn, NOW)
    assert (figures.lookups_24h, figures.hit_ratio, figures.no_consultation_24h) == (6, 0.5, 2)
    assert figures.today == {"cache": 3, "live": 2, "no_consultation": 1}


def test_stats_count_today_and_yesterday_and_list_open_circuits(
    conn: sqlite3.Connection,
) -> None:
    vies_cache.put(conn, answer("100000001"), NOW)
    vies_cache.put(conn, answer("100000002"), NOW)
    vies_cache.add_counts(conn, {"cache": 6, "live": 1, "local_invalid": 4}, "2025-03-10")
    vies_cache.add_counts(conn, {"cache": 2, "stale": 1, "unavailable": 2}, "2025-03-09")
    vies_cache.add_counts(conn, {"cache": 100, "live": 100}, "2025-03-08")  # too old to count
    vies_cache.open_circuit(conn, "global", "IP_BLOCKED", now=NOW, until=NOW + timedelta(hours=1))
    vies_cache.open_circuit(conn, "EE", "VAT_BLOCKED", now=NOW, until=NOW - timedelta(hours=1))

    stats = vies_cache.figures(conn, NOW).summary()

    assert stats["entries"] == 2
    assert stats["lookups_24h"] == 16
    assert stats["hits_24h"] == 8
    assert stats["hit_ratio"] == 0.8  # 8 / (8 cache + 1 live + 1 stale)
    assert stats["open_circuits"] == [
        {"scope": "global", "reason": "IP_BLOCKED", "open_until": "2025-03-10T13:00:00Z"}
    ]


def test_timestamps_round_trip_through_the_clock() -> None:
    moment = datetime(2025, 3, 10, 14, 30, 5, 999_000, tzinfo=UTC)
    assert iso(moment) == "2025-03-10T14:30:05Z"
    assert parse_iso("2025-03-10T14:30:05Z") == moment.replace(microsecond=0)
    assert iso_ms(moment) == "2025-03-10T14:30:05.999Z"
    assert parse_iso(iso_ms(moment)) == moment
    assert parse_iso("2025-03-10T16:30:05+02:00") == moment.replace(microsecond=0)
    assert vies_cache.day_of(datetime(2025, 3, 10, 23, 59, tzinfo=UTC)) == "2025-03-10"
