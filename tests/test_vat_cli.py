"""``syncd vat NUMBER``: the operator's VAT check as a subprocess against a fake VIES, with a
configuration that has no [crm] section at all (a VAT check needs no CRM).

Exit codes: 0 valid, 1 invalid, 65 not a VAT number or refused by VIES, 69 VIES unavailable.
The answer goes to stdout for the operator; the log (stderr) never carries the number or the
trader's name.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.connectors.vies.fake import Company, FakeVies
from syncd.core.clock import iso, utc_now
from syncd.state import vies_cache
from syncd.state.db import connect

ROOT = Path(__file__).parents[1]
DOC: dict[str, Any] = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
ANSWER_KEYS = frozenset(DOC["components"]["schemas"]["VatAnswer"]["required"])


@pytest.fixture
def vies() -> Iterator[FakeVies]:
    with FakeVies() as fake:
        yield fake


def write_vat_config(tmp_path: Path, endpoint: str, *, level: str = "DEBUG") -> Path:
    """Only [state], [vies] and [log]: no CRM. DEBUG logging, so that the privacy checks see
    every line the CLI could write."""
    config = tmp_path / "vat.toml"
    config.write_text(
        f'[state]\ndirectory = "{tmp_path / "state"}"\n'
        f'[vies]\nendpoint = "{endpoint}"\n'
        f'[log]\nlevel = "{level}"\n'
    )
    return config


@pytest.fixture
def config(tmp_path: Path, vies: FakeVies) -> Path:
    return write_vat_config(tmp_path, vies.base_url)


def syncd_vat(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", "--config", str(config), "vat", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )


def trader(vies: FakeVies, country: str) -> Company:
    return next(c for c in vies.companies if c.country_code == country)


def assert_private(result: subprocess.CompletedProcess[str], company: Company) -> None:
    """The log on stderr names neither the number nor the trader (nor its address)."""
    assert company.vat_number not in result.stderr
    assert company.name is not None and company.name not in result.stderr
    assert company.address is not None
    assert company.address.splitlines()[0] not in result.stderr
    assert "Traceback" not in result.stderr


def cache(tmp_path: Path) -> sqlite3.Connection:
    return connect(tmp_path / "state" / "cache.sqlite3")


def test_a_registered_number_live_then_cached_then_fresh(
    tmp_path: Path, vies: FakeVies, config: Path
) -> None:
    company = trader(vies, "EE")
    assert company.name is not None and company.address is not None

    first = syncd_vat(config, company.vat_id, "--json")
    assert first.returncode == 0, first.stderr
    answer = json.loads(first.stdout)
    assert set(answer) == ANSWER_KEYS  # the API's JSON shape
    assert answer["source"] == "live"
    assert answer["valid"] is True
    assert answer["query"] == company.vat_id
    assert answer["name"] == company.name and answer["address"] == company.address
    assert answer["age_seconds"] is None and answer["invalid_reason"] is None
    assert vies.requests == [("checkVat", "EE", company.vat_number)]
    assert_private(first, company)

    second = syncd_vat(config, company.vat_id, "--json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["source"] == "cache"
    assert again["fetched_at"] == answer["fetched_at"]
    assert isinstance(again["age_seconds"], int) and 0 <= again["age_seconds"] < 300
    assert vies.call_count == 1
    assert_private(second, company)

    text = syncd_vat(config, company.vat_id)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"{company.vat_id}: VALID"
    assert company.name in text.stdout
    assert company.address.replace("\n", ", ") in text.stdout
    assert "from the cache" in text.stdout
    assert vies.call_count == 1
    assert_private(text, company)

    fresh = syncd_vat(config, company.vat_id, "--fresh")
    assert fresh.returncode == 0, fresh.stderr
    assert "VALID" in fresh.stdout and "asked VIES now" in fresh.stdout
    assert vies.call_count == 2
    assert_private(fresh, company)

    # Each run flushed its outcome to the counters `syncd status` reads.
    conn = cache(tmp_path)
    try:
        stats = vies_cache.figures(conn, datetime.now(UTC)).summary()
    finally:
        conn.close()
    assert stats["entries"] == 1
    assert stats["lookups_24h"] == 4 and stats["hits_24h"] == 2
    assert stats["hit_ratio"] == 0.5


def test_a_number_failing_the_local_check_never_reaches_vies(vies: FakeVies, config: Path) -> None:
    text = syncd_vat(config, "EE123")
    assert text.returncode == 1, text.stderr
    assert text.stdout.splitlines()[0] == "EE123: INVALID"
    assert "checked locally" in text.stdout

    as_json = syncd_vat(config, "EE123", "--json")
    assert as_json.returncode == 1, as_json.stderr
    answer = json.loads(as_json.stdout)
    assert set(answer) == ANSWER_KEYS
    assert answer["source"] == "local" and answer["valid"] is False
    assert answer["invalid_reason"] == "wrong length"
    assert vies.call_count == 0


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("hello", "HE is not the prefix of an EU member state"),
        ("GB980780684", "GB numbers are not in VIES"),
    ],
)
def test_not_a_vat_number_exits_65_with_a_clear_message(
    vies: FakeVies, config: Path, number: str, reason: str
) -> None:
    result = syncd_vat(config, number)
    assert result.returncode == 65
    assert result.stdout == ""
    assert "syncd: not a valid VAT number:" in result.stderr
    assert reason in result.stderr
    assert vies.call_count == 0


def test_input_vies_refuses_exits_65(vies: FakeVies, config: Path) -> None:
    company = trader(vies, "LT")
    vies.inject("INVALID_INPUT", number=company.vat_id)

    result = syncd_vat(config, company.vat_id)
    assert result.returncode == 65
    assert result.stdout == ""
    assert "not a valid VAT number" in result.stderr
    assert "VIES refused the number as invalid input" in result.stderr
    assert_private(result, company)
    assert vies.call_count == 1  # a refusal is not retried


def test_vies_unavailable_without_a_cached_answer_exits_69(
    tmp_path: Path, vies: FakeVies, config: Path
) -> None:
    company = trader(vies, "LV")
    vies.inject("SERVICE_UNAVAILABLE", country="LV")

    result = syncd_vat(config, company.vat_id)
    assert result.returncode == 69
    assert result.stdout == ""
    assert "VIES unavailable, try again later" in result.stderr
    assert vies.call_count >= 1
    assert_private(result, company)

    as_json = syncd_vat(config, company.vat_id, "--json")
    assert as_json.returncode == 69
    assert json.loads(as_json.stdout)["error"]["code"] == "vies_unavailable"
    assert_private(as_json, company)

    conn = cache(tmp_path)
    try:
        assert conn.execute("SELECT count(*) FROM vies_answers").fetchone()[0] == 0
    finally:
        conn.close()


def test_vies_unreachable_exits_69(tmp_path: Path) -> None:
    with FakeVies() as gone:
        endpoint = gone.base_url  # a loopback port nothing listens on once the fake stops
        company = trader(gone, "FI")
    config = write_vat_config(tmp_path, endpoint)
    result = syncd_vat(config, company.vat_id)
    assert result.returncode == 69, result.stderr
    assert "try again later" in result.stderr
    assert_private(result, company)


def test_a_stale_answer_when_the_member_state_is_down(
    tmp_path: Path, vies: FakeVies, config: Path
) -> None:
    # The stale fallback is off by default; a day of it, as a deployment may enable it.
    config.write_text(config.read_text() + "[retention]\nvies_answers_hours = 48\n")
    company = trader(vies, "FI")
    assert syncd_vat(config, company.vat_id).returncode == 0
    aged = iso(utc_now() - timedelta(hours=30))
    conn = cache(tmp_path)
    try:
        conn.execute("UPDATE vies_answers SET fetched_at = ?", (aged,))
        vies.inject("MS_UNAVAILABLE", country="FI")

        result = syncd_vat(config, company.vat_id)
        assert result.returncode == 0, result.stderr
        assert "VALID" in result.stdout
        assert "STALE: VIES is unavailable; cached answer 30 h old" in result.stdout
        assert_private(result, company)
        assert conn.execute("SELECT fetched_at FROM vies_answers").fetchall() == [(aged,)]
    finally:
        conn.close()


def test_a_block_opens_the_circuit_for_the_next_runs(vies: FakeVies, config: Path) -> None:
    blocked, other = trader(vies, "EE"), trader(vies, "LV")
    vies.inject("IP_BLOCKED", number=blocked.vat_id)

    first = syncd_vat(config, blocked.vat_id)
    assert first.returncode == 69
    assert "blocked" in first.stderr
    assert vies.call_count == 1
    assert_private(first, blocked)

    # The circuit lives in the cache: another run, another number, no VIES call.
    second = syncd_vat(config, other.vat_id, "--json")
    assert second.returncode == 69
    assert json.loads(second.stdout)["error"]["code"] == "vies_blocked"
    assert vies.call_count == 1


def test_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "vat", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "--fresh" in result.stdout and "--json" in result.stdout
    assert "NUMBER" in result.stdout
