"""The systemd unit: its essential settings, `systemd-analyze verify`, its security exposure."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "syncd.service"
EXEC_START = "/opt/syncd/.venv/bin/syncd --config /etc/syncd/syncd.toml run"
MAX_EXPOSURE = 2.0

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze not installed (Debian: apt-get install systemd)",
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> every value assigned, in order (continuation lines not used here)."""
    result: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        result.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return result


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C.UTF-8"}
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.fixture
def testable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at a fake executable (verify checks that it exists)."""
    fake = tmp_path / "bin" / "syncd"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    text = UNIT.read_text(encoding="utf-8")
    assert f"ExecStart={EXEC_START}\n" in text
    unit = tmp_path / "syncd.service"
    unit.write_text(
        text.replace("ExecStart=/opt/syncd/.venv/bin/syncd ", f"ExecStart={fake} "),
        encoding="utf-8",
    )
    return unit


def test_essential_settings() -> None:
    settings = unit_settings(UNIT.read_text(encoding="utf-8"))

    def one(key: str) -> str:
        values = settings.get(key, [])
        assert len(values) == 1, f"{key}: {values}"
        return values[0]

    assert one("Service.Type") == "notify"
    assert one("Service.NotifyAccess") == "main"
    assert one("Service.ExecStart") == EXEC_START
    assert one("Service.WatchdogSec") == "60"
    assert one("Service.Restart") == "on-failure"
    assert one("Service.RestartSec") == "5"
    assert one("Service.TimeoutStopSec") == "15"
    assert one("Service.User") == "syncd" and one("Service.Group") == "syncd"
    assert "Service.DynamicUser" not in settings  # the portal joins the static group syncd
    assert one("Service.StateDirectory") == "syncd"
    assert one("Service.StateDirectoryMode") == "0750"
    assert one("Service.UMask") == "0027"
    assert one("Service.LoadCredential") == (
        "crm_webhook_token:/etc/syncd/credentials/crm_webhook_token"
    )
    assert one("Service.CapabilityBoundingSet") == ""
    assert one("Service.ProtectSystem") == "strict"
    assert one("Service.RestrictAddressFamilies") == "AF_UNIX AF_INET AF_INET6"
    # The CRM and the other upstreams are on the internet: no IP allow-list, no private network.
    assert "Service.IPAddressDeny" not in settings
    assert "Service.PrivateNetwork" not in settings
    for key in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateUsers",
        "MemoryDenyWriteExecute",
        "LockPersonality",
        "RestrictRealtime",
        "RestrictNamespaces",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "RemoveIPC",
    ):
        assert one(f"Service.{key}") == "yes", key
    assert one("Service.ProtectProc") == "invisible"
    assert one("Service.ProcSubset") == "pid"
    assert settings["Service.SystemCallFilter"] == ["@system-service", "~@privileged @resources"]


@needs_systemd
def test_verify_is_clean(testable_unit: Path) -> None:
    result = analyze("verify", str(testable_unit))
    output = _ANSI.sub("", result.stdout + result.stderr)
    about_unit = [line for line in output.splitlines() if testable_unit.name in line]
    assert about_unit == [], output
    assert result.returncode == 0, output


@needs_systemd
def test_verify_of_the_shipped_unit_only_misses_the_installed_program(tmp_path: Path) -> None:
    unit = tmp_path / "syncd.service"
    shutil.copy(UNIT, unit)
    result = analyze("verify", str(unit))
    lines = [
        line
        for line in _ANSI.sub("", result.stdout + result.stderr).splitlines()
        if unit.name in line
    ]
    assert all("/opt/syncd/.venv/bin/syncd" in line for line in lines), lines


@needs_systemd
def test_security_exposure(testable_unit: Path) -> None:
    result = analyze("security", "--offline=true", "--no-pager", str(testable_unit))
    output = _ANSI.sub("", result.stdout + result.stderr)
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", output)
    assert match, output
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, output
