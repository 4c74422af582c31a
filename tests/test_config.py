"""Settings: sources and precedence, one-line errors naming the setting, secrets from files only."""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path

import pytest

from syncd.config import (
    InvalidSettingsError,
    Settings,
    load_settings,
    read_secret,
    secret_source,
)
from syncd.connectors.crm.bitrix24.settings import Bitrix24Settings
from syncd.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
TOKEN = "s3cr3tT0kenVALUE42"
SYSTEMD_VARS = ("STATE_DIRECTORY", "CREDENTIALS_DIRECTORY")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("SYNCD_") or name in SYSTEMD_VARS:
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "syncd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(*args: object, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(*args, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message, message
    assert_not_chained(info.value)
    return message


def assert_not_chained(error: BaseException) -> None:
    # A chained ValidationError would print the raw input (possibly a secret) in a traceback.
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


# -- sources and precedence ----------------------------------------------------------------------


def test_defaults_without_any_file() -> None:
    settings = load_settings()
    assert settings.crm.vendor == "bitrix24"
    assert settings.crm.vendor == "bitrix24" and not settings.crm_configured
    assert settings.crm.bitrix24.url is None
    assert settings.crm.bitrix24.devices_entity_type_id == 1040
    assert settings.crm.timeout_seconds == 30.0
    assert settings.crm.max_attempts == 5
    assert settings.crm.deletion_events == "auto"
    assert settings.mirror.interval_seconds == 60.0
    assert settings.mirror.delete_guard_share == pytest.approx(0.10)
    assert settings.mirror.delete_guard_min == 5
    assert settings.state.directory == Path("/var/lib/syncd")
    assert settings.state.cache_path == Path("/var/lib/syncd/cache.sqlite3")
    assert settings.log.level == "INFO" and settings.log.format == "text"
    assert set(settings.describe_sources().values()) == {"default"}


def test_toml_file_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [crm]
        max_attempts = 3
        [crm.bitrix24]
        url = "https://example.bitrix24.eu/rest/7"
        [mirror]
        interval_seconds = 30
        [state]
        directory = "/srv/syncd"
        [log]
        level = "debug"
        format = "json"
        """,
    )
    settings = load_settings(path)
    # trailing slash normalised
    assert settings.crm.bitrix24.url == "https://example.bitrix24.eu/rest/7/"
    assert settings.crm.max_attempts == 3
    assert settings.mirror.interval_seconds == 30.0
    assert settings.state.cache_path == Path("/srv/syncd/cache.sqlite3")
    assert settings.log.level == "DEBUG" and settings.log.format == "json"
    assert settings.describe_sources()["crm.max_attempts"] == f"file {path}"
    assert settings.describe_sources()["crm.timeout_seconds"] == "default"


def test_config_file_from_syncd_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[mirror]\njitter_seconds = 0\n")
    monkeypatch.setenv("SYNCD_CONFIG", str(path))
    assert load_settings().mirror.jitter_seconds == 0.0


def test_explicit_file_beats_syncd_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = write(tmp_path, "[mirror]\njitter_seconds = 1\n", "env.toml")
    cli_file = write(tmp_path, "[mirror]\njitter_seconds = 2\n", "cli.toml")
    monkeypatch.setenv("SYNCD_CONFIG", str(env_file))
    assert load_settings(cli_file).mirror.jitter_seconds == 2.0


def test_env_beats_file_and_overrides_beat_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path,
        '[crm]\ntimeout_seconds = 20\n[crm.bitrix24]\nurl = "https://file.example/rest/1/"\n'
        "[mirror]\ninterval_seconds = 30\njitter_seconds = 3\n",
    )
    monkeypatch.setenv("SYNCD_CRM__BITRIX24__URL", "http://127.0.0.1:8080/rest/2/")
    monkeypatch.setenv("SYNCD_MIRROR__INTERVAL_SECONDS", "45")
    monkeypatch.setenv("SYNCD_MIRROR__JITTER_SECONDS", "4")
    settings = load_settings(path, mirror={"jitter_seconds": 9})
    assert settings.crm.bitrix24.url == "http://127.0.0.1:8080/rest/2/"  # env over file
    assert settings.crm.timeout_seconds == 20.0  # file, merged with env in the same table
    assert settings.mirror.interval_seconds == 45.0  # env
    assert settings.mirror.jitter_seconds == 9.0  # override over env
    sources = settings.describe_sources()
    assert sources["crm.bitrix24.url"] == "env SYNCD_CRM__BITRIX24__URL"
    assert sources["mirror.jitter_seconds"] == "override"
    assert sources["crm.timeout_seconds"] == f"file {path}"


def test_lowercase_env_var_names_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("syncd_log__level", "warning")
    assert load_settings().log.level == "WARNING"


def test_state_directory_default_from_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/syncd-test:/var/lib/other")
    settings = load_settings()
    assert settings.state.directory == Path("/var/lib/syncd-test")
    assert settings.state.cache_path == Path("/var/lib/syncd-test/cache.sqlite3")


def test_state_directory_setting_beats_systemd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/syncd-test")
    assert load_settings(state={"directory": tmp_path}).state.directory == tmp_path


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://example.bitrix24.eu/rest/1/", "https://example.bitrix24.eu/rest/1/"),
        ("https://example.bitrix24.eu/rest/1", "https://example.bitrix24.eu/rest/1/"),
        ("HTTPS://Example.bitrix24.eu/rest/12//", "https://Example.bitrix24.eu/rest/12/"),
        ("http://127.0.0.1:8080/crm/rest/3/", "http://127.0.0.1:8080/crm/rest/3/"),
    ],
)
def test_crm_url_normalised(given: str, expected: str) -> None:
    assert Bitrix24Settings(url=given).url == expected


# -- errors: one line naming the setting ---------------------------------------------------------


def test_unknown_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[crm]\ncolour = "red"\n')
    assert config_error(path) == "crm.colour: unknown setting"


def test_unknown_section(tmp_path: Path) -> None:
    path = write(tmp_path, "[mirorr]\ninterval_seconds = 5\n")
    assert config_error(path) == "mirorr: unknown setting"


def test_bad_value(tmp_path: Path) -> None:
    path = write(tmp_path, "[mirror]\ndelete_guard_share = -1\n")
    assert config_error(path) == "mirror.delete_guard_share: must be greater than 0 (got -1)"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[crm]\ntimeout_seconds = 121", "crm.timeout_seconds: must be less than or equal to 120"),
        ("[crm]\nmax_attempts = 0", "crm.max_attempts: must be greater than or equal to 1"),
        ("[crm]\nmax_attempts = 21", "crm.max_attempts: must be less than or equal to 20"),
        ("[crm.bitrix24]\ndevices_entity_type_id = 0",
         "crm.bitrix24.devices_entity_type_id: must be greater than 0"),
        ("[crm]\noverlap_seconds = 86401", "crm.overlap_seconds: must be less than or equal to"),
        ('[crm]\nvendor = "pipedrive"',
         "crm.vendor: unknown CRM vendor (known: bitrix24, memory) (got 'pipedrive')"),
        ('[crm]\nurl = "https://example.com/rest/1/"',
         "crm.url: belongs in the CRM vendor's own table now: crm.bitrix24.url ([crm.bitrix24])"),
        ('[crm.memory]\nstore = "x"', "crm: [crm.memory] is set, but crm.vendor is 'bitrix24'"),
        ('[crm]\nvendor = "memory"\n[crm.memory]\ncontacts = -1',
         "crm.memory.contacts: must be greater than or equal to 0"),
        ('[crm]\ndeletion_events = "on"', "crm.deletion_events: must be 'auto' or 'off'"),
        ("[crm]\nconnect_timeout_seconds = 0", "crm.connect_timeout_seconds: must be greater"),
        ("[mirror]\ninterval_seconds = 0.5", "mirror.interval_seconds: must be greater than or"),
        ("[mirror]\njitter_seconds = -1", "mirror.jitter_seconds: must be greater than or equal"),
        ("[mirror]\nsweep_interval_seconds = 9", "mirror.sweep_interval_seconds: must be greater"),
        ("[mirror]\nfull_resync_interval_hours = -1", "mirror.full_resync_interval_hours: must"),
        ("[mirror]\ndelete_guard_share = 1.5", "mirror.delete_guard_share: must be less than or"),
        ("[mirror]\ndelete_guard_min = -1", "mirror.delete_guard_min: must be greater than or"),
        ("[mirror]\ninterval_seconds = nan", "mirror.interval_seconds: must be a finite number"),
        ('[mirror]\ninterval_seconds = "soon"', "mirror.interval_seconds: must be a valid number"),
        ('[log]\nlevel = "LOUD"', "log.level: must be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        ('[log]\nformat = "xml"', "log.format: must be 'text' or 'json' (got 'xml')"),
        ("crm = 5", "crm: must be a table of settings"),
        ('[crm.bitrix24]\nurl = "ftp://example.com/rest/1/"',
         "crm.bitrix24.url: must be an http:// or https:// URL"),
        ('[crm.bitrix24]\nurl = "https:///rest/1/"', "crm.bitrix24.url: must name a host"),
        ('[crm.bitrix24]\nurl = "https://example.com/"',
         "crm.bitrix24.url: must be the webhook base URL"),
        ('[crm.bitrix24]\nurl = "https://example.com/rest/1/?x=1"',
         "crm.bitrix24.url: must not contain a query"),
    ],
)
def test_each_bad_value_names_its_setting(tmp_path: Path, toml: str, expected: str) -> None:
    assert config_error(write(tmp_path, toml + "\n")).startswith(expected)


def test_several_problems_on_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[crm]\nmax_attempts = 0\n[mirror]\ndelete_guard_min = -2\n")
    with pytest.raises(InvalidSettingsError) as info:
        load_settings(path)
    assert [p.split(":")[0] for p in info.value.problems] == [
        "crm.max_attempts",
        "mirror.delete_guard_min",
    ]
    assert str(info.value) == "; ".join(info.value.problems)


def test_malformed_toml(tmp_path: Path) -> None:
    path = write(tmp_path, '[crm]\nurl = "https://x/rest/1/\n')
    message = config_error(path)
    assert message.startswith(f"config file {path} is not valid TOML: ")
    assert "line 2" in message


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert config_error(path) == f"cannot read config file {path}: No such file or directory"


def test_missing_config_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_CONFIG", str(tmp_path / "nope.toml"))
    assert config_error().startswith("cannot read config file ")


def test_config_path_is_a_directory(tmp_path: Path) -> None:
    assert config_error(tmp_path) == f"cannot read config file {tmp_path}: not a regular file"


def test_unreadable_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[log]\nlevel = 'INFO'\n")
    real_open = Path.open

    def deny(self: Path, *args: object, **kwargs: object) -> object:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    # Simulated so that the test also holds when run as root, who can read a mode-000 file.
    monkeypatch.setattr(Path, "open", deny)
    assert config_error(path) == f"cannot read config file {path}: Permission denied"


def test_env_var_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_MIRROR__INTERVAL_SECONDS", "0")
    assert config_error() == (
        "SYNCD_MIRROR__INTERVAL_SECONDS: must be greater than or equal to 1 (got '0')"
    )


def test_env_var_unknown_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_CRM__COLOUR", "red")
    assert config_error() == "SYNCD_CRM__COLOUR: unknown setting"


def test_env_var_unknown_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_MIROR__INTERVAL_SECONDS", "5")
    assert config_error() == "SYNCD_MIROR__INTERVAL_SECONDS: unknown setting (no section [miror])"


def test_env_var_single_underscore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_CRM_URL", "https://example.bitrix24.eu/rest/1/")
    assert "use a double underscore: SYNCD_CRM__URL" in config_error()


def test_env_var_bad_json_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_CRM", "{not json")
    assert config_error() == "SYNCD_CRM: is not valid JSON for the [crm] table"


def test_env_var_json_table_names_variable_and_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_MIRROR", '{"interval_seconds": 0, "bogus": 1}')
    with pytest.raises(InvalidSettingsError) as info:
        load_settings()
    assert sorted(info.value.problems) == [
        "SYNCD_MIRROR: mirror.bogus unknown setting",
        "SYNCD_MIRROR: mirror.interval_seconds must be greater than or equal to 1 (got 0)",
    ]


def test_url_value_is_never_echoed(tmp_path: Path) -> None:
    url = f"https://example.bitrix24.eu/rest/1/{TOKEN}/"
    message = config_error(write(tmp_path, f'[crm.bitrix24]\nurl = "{url}"\n'))
    assert message.startswith("crm.bitrix24.url: must end at the user id")
    assert TOKEN not in message


def test_url_with_password_refused(tmp_path: Path) -> None:
    message = config_error(
        write(tmp_path, f'[crm.bitrix24]\nurl = "https://admin:{TOKEN}@example.com/rest/1/"\n')
    )
    assert message.startswith("crm.bitrix24.url: must not contain a user name or password")
    assert TOKEN not in message


def test_override_error_names_the_setting(tmp_path: Path) -> None:
    assert config_error(mirror={"delete_guard_min": -1}).startswith("mirror.delete_guard_min: ")


# -- secrets -------------------------------------------------------------------------------------


def test_secret_in_toml_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, f'[crm.bitrix24]\nwebhook_token = "{TOKEN}"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert message.startswith(
        "crm.bitrix24.webhook_token: secrets are not accepted from the config file"
    )
    assert "crm.bitrix24.webhook_token_file" in message and "crm_webhook_token" in message
    assert TOKEN not in message and TOKEN not in repr(info.value)
    assert_not_chained(info.value)


def test_secret_in_env_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_CRM__BITRIX24__WEBHOOK_TOKEN", TOKEN)
    message = config_error()
    assert message.startswith(
        "SYNCD_CRM__BITRIX24__WEBHOOK_TOKEN: secrets are not accepted from environment variables"
    )
    assert TOKEN not in message


def test_secret_in_override_is_refused() -> None:
    message = config_error(crm={"bitrix24": {"webhook_token": TOKEN}})
    assert message.startswith("crm.bitrix24.webhook_token: secrets are not accepted")
    assert TOKEN not in message


def test_secret_in_the_shared_crm_table_is_refused_as_a_secret() -> None:
    # where the token would have gone before vendor tables: still refused as a secret
    message = config_error(crm={"webhook_token": TOKEN})
    assert message.startswith("crm.webhook_token: secrets are not accepted")
    assert "crm.bitrix24.webhook_token_file" in message
    assert TOKEN not in message


def test_token_from_credentials_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "crm_webhook_token").write_text(f"  {TOKEN}\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    settings = load_settings()
    assert settings.crm_secret("webhook_token") == TOKEN
    assert settings.redacted()["crm"]["bitrix24"]["webhook_token"] == (
        f"<set: from {tmp_path / 'crm_webhook_token'}>"
    )


def test_token_from_file_setting_beats_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "crm_webhook_token").write_text("fromCredential")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    path = write(tmp_path, f'[crm.bitrix24]\nwebhook_token_file = "{token_file}"\n')
    settings = load_settings(path)
    assert settings.crm_secret("webhook_token") == TOKEN
    assert settings.redacted()["crm"]["bitrix24"]["webhook_token"] == f"<set: from {token_file}>"


def test_token_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    monkeypatch.setenv("SYNCD_CRM__BITRIX24__WEBHOOK_TOKEN_FILE", str(token_file))
    assert load_settings().crm_secret("webhook_token") == TOKEN


def test_no_token_configured() -> None:
    settings = load_settings()
    assert settings.crm_secret("webhook_token") is None
    assert settings.redacted()["crm"]["bitrix24"]["webhook_token"] == "<not set>"


def test_token_is_read_lazily(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    # no file yet: fine
    settings = load_settings(crm={"bitrix24": {"webhook_token_file": token_file}})
    token_file.write_text(TOKEN)
    assert settings.crm_secret("webhook_token") == TOKEN


def test_missing_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "absent"
    settings = load_settings(crm={"bitrix24": {"webhook_token_file": token_file}})
    with pytest.raises(ConfigError, match=re.escape(f"cannot read secret file {token_file}: ")):
        settings.crm_secret("webhook_token")
    with pytest.raises(ConfigError):
        settings.check_secrets()


def test_empty_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(" \n")
    settings = load_settings(crm={"bitrix24": {"webhook_token_file": token_file}})
    with pytest.raises(ConfigError, match=re.escape(f"secret file {token_file} is empty")):
        settings.crm_secret("webhook_token")


def test_token_with_junk_is_refused_without_echo(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN} {TOKEN}\n")
    settings = load_settings(crm={"bitrix24": {"webhook_token_file": token_file}})
    with pytest.raises(ConfigError) as info:
        settings.crm_secret("webhook_token")
    assert str(token_file) in str(info.value) and TOKEN not in str(info.value)


def test_unreadable_secret_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0)
    if os.access(token_file, os.R_OK):  # root reads anything: make it unreadable otherwise
        token_file.unlink()
        token_file.mkdir()
        with pytest.raises(ConfigError) as info:
            read_secret("crm_webhook_token", token_file)
        assert str(info.value) == f"secret file {token_file} is not a regular file"
        return
    with pytest.raises(ConfigError) as info:
        read_secret("crm_webhook_token", token_file)
    assert str(info.value) == f"cannot read secret file {token_file}: Permission denied"


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_as_secret_file_is_refused_without_reading_it(device: str) -> None:
    with pytest.raises(ConfigError) as info:
        read_secret("crm_webhook_token", Path(device))
    assert str(info.value) == f"secret file {device} is not a regular file"


def test_a_huge_secret_file_is_refused_reading_only_its_cap(tmp_path: Path) -> None:
    huge = tmp_path / "token"
    with huge.open("wb") as handle:
        handle.truncate(1 << 32)  # 4 GiB, sparse: reading it whole would take gigabytes
    with pytest.raises(ConfigError) as info:
        read_secret("crm_webhook_token", huge)
    assert str(info.value) == f"secret file {huge} is larger than 64 KiB; it should hold one secret"


def test_read_secret_generic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_secret("graph_client_secret", None) is None
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert read_secret("graph_client_secret", None) is None  # credential not passed
    (tmp_path / "graph_client_secret").write_text("abc\n")
    assert read_secret("graph_client_secret", None) == "abc"
    assert secret_source("graph_client_secret", None) == tmp_path / "graph_client_secret"


def test_redacted_never_contains_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "crm_webhook_token").write_text(TOKEN)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    settings = load_settings(crm={"bitrix24": {"url": "https://example.bitrix24.eu/rest/1/"}})
    assert settings.crm_secret("webhook_token") == TOKEN
    dumped = json.dumps(settings.redacted())
    assert TOKEN not in dumped
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())
    data = json.loads(dumped)
    assert data["crm"]["bitrix24"]["url"] == "https://example.bitrix24.eu/rest/1/"
    assert data["mirror"]["interval_seconds"] == 60.0
    assert data["state"]["cache_path"].endswith("cache.sqlite3")


def test_settings_without_load_settings_use_env_and_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYNCD_LOG__FORMAT", "json")
    settings = Settings()
    assert settings.log.format == "json"
    assert settings.describe_sources()["log.format"] == "default"  # not tracked outside load


# -- the example file ----------------------------------------------------------------------------


EXAMPLE = REPO / "systemd" / "syncd.toml.example"


def test_example_file_as_shipped_loads_as_defaults() -> None:
    assert load_settings(EXAMPLE).model_dump() == load_settings().model_dump()


def test_example_file_documents_every_setting(tmp_path: Path) -> None:
    # Uncomment every "#key = value" line: the result must load and name each setting once.
    uncommented = re.sub(r"(?m)^#(\w+ = )", r"\1", EXAMPLE.read_text(encoding="utf-8"))
    data = tomllib.loads(uncommented)
    documented = dict(_leaves(data))
    # the in-memory CRM vendor (tests and trials) is documented in the README, not here
    leaves = {s for s in load_settings().describe_sources() if not s.startswith("crm.memory.")}
    assert set(documented) == leaves
    settings = load_settings(write(tmp_path, uncommented)).model_dump()
    defaults = load_settings().model_dump()
    examples = {"crm.bitrix24.url", "crm.bitrix24.webhook_token_file", "outbox.spool_directory",
                "vies.requester_vat", "sharepoint.tenant_id", "sharepoint.client_id",
                "sharepoint.certificate_file", "sharepoint.client_secret_file",
                "sharepoint.ca_file", "sharepoint.producer_aliases", "sharepoint.libraries"}
    for dotted in documented:
        if dotted in examples:
            continue  # examples, not defaults
        assert dict(_leaves(settings))[dotted] == dict(_leaves(defaults))[dotted], dotted


# Settings whose value is itself a table (a mapping), documented as one inline table.
_MAPPING_SETTINGS = frozenset({"sharepoint.producer_aliases"})


def _leaves(table: dict[str, object], prefix: str = "") -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = []
    for key, value in table.items():
        if isinstance(value, dict) and f"{prefix}{key}" not in _MAPPING_SETTINGS:
            found.extend(_leaves(value, f"{prefix}{key}."))
        else:
            found.append((f"{prefix}{key}", value))
    return found
