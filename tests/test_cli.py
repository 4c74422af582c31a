"""The CLI: every command has --help, the README documents every command, exit codes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from syncd.cli import build_parser, main

ROOT = Path(__file__).parents[1]


def commands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._subparsers._group_actions)  # type: ignore[union-attr]
    return sorted(action.choices)


@pytest.mark.parametrize("command", commands())
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert f"syncd {command}" in out
    assert len(out.splitlines()) >= 3


def test_readme_documents_every_command_and_flag() -> None:
    readme = (ROOT / "README.md").read_text()
    for command in commands():
        assert re.search(rf"syncd[^\n`]* {command}\b", readme), f"README lacks `syncd {command}`"
    for flag in ("--resync", "--record", "--config", "--json"):
        assert flag in readme


def test_readme_first_section_has_exactly_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first = readme.split("\n## ", 2)[1]
    commands_shown = re.findall(r"^\s*(make \w+)\s*$", first, flags=re.MULTILINE)
    assert commands_shown == ["make demo", "make test"]


def test_no_command_prints_usage() -> None:
    assert main([]) == 64


def test_bad_config_exits_78_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text("[mirror]\ndelete_guard_share = -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "--config", str(config), "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 78
    assert "mirror.delete_guard_share" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_check_config_redacts_the_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cr3t-webhook-token\n")
    config = tmp_path / "syncd.toml"
    config.write_text(
        f'[crm]\nurl = "https://b24.example/rest/1/"\nwebhook_token_file = "{token}"\n'
        f'[state]\ndirectory = "{tmp_path / "state"}"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "--config", str(config), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "s3cr3t" not in result.stdout + result.stderr
    assert "configuration OK" in result.stdout


def test_resync_record_needs_one_entity() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--resync", "all", "--record", "5"])
    assert caught.value.code == 2
