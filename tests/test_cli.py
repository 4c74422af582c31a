"""The CLI: every command has --help, the README documents every command, exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from syncd.cli.main import build_parser, main

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
    for flag in ("--resync", "--record", "--config", "--json", "--online", "--reveal"):
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
        f'[crm.bitrix24]\nurl = "https://b24.example/rest/1/"\nwebhook_token_file = "{token}"\n'
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
    # the configured vendor's own table follows [crm] as a table of its own; no other vendor's
    tables = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert tables[:3] == ["[crm]", "[crm.bitrix24]", "[mirror]"]
    assert "[crm.memory]" not in tables
    assert f'webhook_token = "<set: from {token}>"' in result.stdout


def test_resync_record_needs_one_entity() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--resync", "all", "--record", "5"])
    assert caught.value.code == 64


@pytest.mark.parametrize(
    "argv",
    [
        ["--resync", "planets"],
        ["--resync", "devices", "--record", "5; rm -rf /"],
        ["--resync", "devices", "--record", ""],
        ["--resync", "devices", "--record", "x" * 65],
        ["--record", "5"],
        ["--json"],
        ["status", "--colour"],
        ["outbox", "list", "--limit", "many"],
        ["outbox"],
        ["deletes", "apply", "planets"],
        ["no-such-command"],
    ],
)
def test_usage_errors_exit_64(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 64
    assert "usage:" in capsys.readouterr().err


def _syncd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncd", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.mark.parametrize(
    ("toml", "setting"),
    [
        ('[crm.bitrix24]\nurl = "https://b24.example/rest/1/"\n',
         "crm.bitrix24.webhook_token_file"),
        ('[crm.bitrix24]\nwebhook_token_file = "TOKEN"\n', "crm.bitrix24.url"),
        ('[crm.bitrix24]\nwebhook_token_file = "/dev/zero"\nurl = "https://b24.example/rest/1/"\n',
         "/dev/zero"),
        ("[api]\nmax_upload_mb = 10\n", "api.max_upload_mb"),
        ("[api]\nmax_upload_mb_per_hour = 600\n", "api.max_upload_mb_per_hour"),
    ],
    ids=["url-without-token", "token-without-url", "token-from-a-device", "upload-below-video",
         "hourly-below-one-request"],
)
def test_check_config_refuses_what_run_refuses(tmp_path: Path, toml: str, setting: str) -> None:
    token = tmp_path / "token"
    token.write_text("t0k3n")
    config = tmp_path / "syncd.toml"
    config.write_text(toml.replace("TOKEN", str(token))
                      + f'[state]\ndirectory = "{tmp_path / "state"}"\n')
    for command in (["check-config"], ["run"]):
        result = _syncd(config, *command)
        assert result.returncode == 78, (command, result.stderr)
        assert setting in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_check_config_prints_effective_paths(tmp_path: Path) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text(f'[state]\ndirectory = "{tmp_path / "state"}"\n')
    result = _syncd(config, "check-config", "--json")
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective["outbox"]["spool_directory"] == str(tmp_path / "state" / "spool")
    assert effective["state"]["cache_path"] == str(tmp_path / "state" / "cache.sqlite3")
    assert effective["crm"]["bitrix24"]["webhook_token_file"] == "<not set>"
    assert "no CRM" in effective["crm"]["configured"]


def test_resync_json_prints_only_json_on_stdout(tmp_path: Path) -> None:
    from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
    from tests.conftest import write_config

    with FakeBitrix24(seed=5, companies=5, contacts=10, devices=5, token="t") as fake:
        config = write_config(tmp_path, fake)
        result = _syncd(config, "--resync", "devices", "--json")
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)  # nothing else on stdout
        assert answer["ok"] is True
        assert "full" in result.stderr  # the prose summary went to stderr
        failed = _syncd(config, "--resync", "devices", "--record", "999999", "--json")
        assert json.loads(failed.stdout)["ok"] in (True, False)


def test_resync_without_a_crm_is_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text(f'[state]\ndirectory = "{tmp_path / "state"}"\n')
    result = _syncd(config, "--resync", "devices")
    assert result.returncode == 78
    assert "crm.bitrix24: no CRM configured" in result.stderr


def test_check_config_online_says_which_upstream_fails(tmp_path: Path) -> None:
    from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
    from syncd.connectors.omniva.fake import FakeOmniva
    from syncd.connectors.vies.fake import FakeVies

    with (
        FakeBitrix24(seed=5, companies=2, contacts=3, devices=2, token="right") as crm,
        FakeVies() as vies,
        FakeOmniva() as omniva,
    ):
        token = tmp_path / "token"
        config = tmp_path / "syncd.toml"

        def write(secret: str, omniva_url: str) -> None:
            token.write_text(secret)
            config.write_text(
                f'[crm.bitrix24]\nurl = "{crm.base_url}"\nwebhook_token_file = "{token}"\n'
                f'[vies]\nendpoint = "{vies.base_url}"\n[omniva]\nurl = "{omniva_url}"\n'
                f'[state]\ndirectory = "{tmp_path / "state"}"\n')

        write("right", omniva.locations_url)
        good = _syncd(config, "check-config", "--online", "--json")
        assert good.returncode == 0, good.stdout + good.stderr
        assert {u: r["ok"] for u, r in json.loads(good.stdout)["online"].items()} == {
            "crm": True, "vies": True, "omniva": True, "sharepoint": True}  # skipped: not set

        write("wrong", "http://127.0.0.1:9/locations.json")  # a closed loopback port
        bad = _syncd(config, "check-config", "--online")
        assert bad.returncode == 69, bad.stdout + bad.stderr
        lines = bad.stdout.splitlines()
        assert any(line.startswith("FAIL crm: credentials refused") for line in lines), lines
        assert any(line.startswith("ok   vies: reachable") for line in lines), lines
        assert any(line.startswith("FAIL omniva: unreachable") for line in lines), lines
        assert "wrong" not in bad.stdout + bad.stderr  # the token is never shown


@pytest.mark.parametrize(
    "module",
    [
        "syncd.connectors.crm.bitrix24.fake",
        "syncd.connectors.vies.fake",
        "syncd.connectors.omniva.fake",
    ],
)
def test_every_fake_option_is_described_with_its_default(module: str) -> None:
    import argparse
    import importlib

    parser = importlib.import_module(f"{module}.__main__").build_parser()
    assert parser.formatter_class is argparse.ArgumentDefaultsHelpFormatter  # shows defaults
    assert parser.description
    for action in parser._actions:
        assert action.help, f"{module} {action.option_strings} has no description"
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0 and "(default:" in result.stdout, result.stderr


def test_readme_enqueue_example_is_what_enqueue_accepts(tmp_path: Path) -> None:
    from syncd.cli.outbox import _parse_request

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Try it by hand", 1)[1].split("\n## ", 1)[0]
    [example] = re.findall(r"```json\n(.*?)```", section, flags=re.DOTALL)
    fields, files = _parse_request(json.loads(example))
    assert fields["request_type"] == "repair" and len(files) == 1
