"""``[sharepoint]``: what is accepted, what is refused with which message, and that the
credential only ever comes from a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from syncd.config import Settings, load_settings
from syncd.connectors.sharepoint.producers import producer_key
from syncd.core.errors import ConfigError

TENANT = "baltic-lasers.onmicrosoft.com"
CLIENT = "11111111-2222-3333-4444-555555555555"
LIBRARY = (
    '[[sharepoint.libraries]]\nname = "candela"\n'
    'site = "https://baltic-lasers.sharepoint.com/sites/Manufacturers"\nlibrary = "Candela"\n'
    'producers = ["Candela"]\npermission = "docs.candela"\n'
)
PEM = (
    "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"
    "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"
)


def settings_from(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "syncd.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path)


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        settings_from(tmp_path, text).check_complete()
    return str(info.value)


def head(extra: str = "") -> str:
    return f'[sharepoint]\ntenant_id = "{TENANT}"\nclient_id = "{CLIENT}"\n{extra}'


def test_without_the_section_sharepoint_is_off(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, "")
    assert not settings.sharepoint.configured
    settings.check_complete()


def test_a_complete_section_with_a_certificate_file(tmp_path: Path) -> None:
    pem = tmp_path / "sp.pem"
    pem.write_text(PEM)
    settings = settings_from(tmp_path, head(f'certificate_file = "{pem}"\n') + LIBRARY)
    settings.check_complete()
    assert settings.sharepoint_credential() == ("certificate", PEM.strip())
    library = settings.sharepoint.library("candela")
    assert (library.hostname, library.site_path) == (
        "baltic-lasers.sharepoint.com", "/sites/Manufacturers",
    )
    shown = json.dumps(settings.redacted())
    assert "MIIB" not in shown and f"<set: from {pem}>" in shown


def test_the_credential_from_the_systemd_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sharepoint_client_secret").write_text("s3cr3t-value~x\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    settings = settings_from(tmp_path, head() + LIBRARY)
    assert settings.sharepoint_credential() == ("client_secret", "s3cr3t-value~x")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (head('client_secret = "abc"\n') + LIBRARY, "secrets are not accepted"),
        (head() + LIBRARY, "no credential for SharePoint"),
        ('[sharepoint]\nclient_id = "' + CLIENT + '"\n' + LIBRARY, "sharepoint.tenant_id"),
        (head(), "sharepoint.libraries"),
        ('[sharepoint]\ntenant_id = "not a tenant"\n', "tenant"),
        ('[sharepoint]\ntenant_id = "' + TENANT + '"\nclient_id = "app"\n', "client_id"),
        (head() + LIBRARY + LIBRARY, "used twice"),
        (head() + LIBRARY.replace('"candela"', '"Bad Name"'), "libraries"),
        (head() + LIBRARY.replace("https://baltic-lasers.sharepoint.com/sites/", "Manu"),
         "site"),
        (head() + LIBRARY.replace('"Candela"]', '" "]'), "empty producer"),
        (head() + LIBRARY + 'folder = "/a/../b"\n', "relative"),
        (head('graph_url = "ftp://graph"\n') + LIBRARY, "graph_url"),
    ],
)
def test_refused_with_a_message_naming_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    assert message in refused(tmp_path, text)


def test_the_same_site_and_library_twice_is_refused(tmp_path: Path) -> None:
    second = LIBRARY.replace('"candela"', '"candela-2"').replace(
        "https://baltic-lasers.sharepoint.com/sites/Manufacturers",
        "baltic-lasers.sharepoint.com:/sites/Manufacturers/",
    )
    assert "same site and library" in refused(tmp_path, head() + LIBRARY + second)


def test_both_credentials_at_once_are_refused(tmp_path: Path) -> None:
    pem, secret = tmp_path / "sp.pem", tmp_path / "secret"
    pem.write_text(PEM)
    secret.write_text("a-client-secret")
    text = head(f'certificate_file = "{pem}"\nclient_secret_file = "{secret}"\n') + LIBRARY
    assert "keep one" in refused(tmp_path, text)


def test_a_file_that_holds_no_certificate_is_refused_without_echoing_it(tmp_path: Path) -> None:
    pem = tmp_path / "sp.pem"
    pem.write_text("hunter2-not-a-pem")
    message = refused(tmp_path, head(f'certificate_file = "{pem}"\n') + LIBRARY)
    assert "does not hold a PEM" in message and "hunter2" not in message


def test_aliases_are_kept_normalised(tmp_path: Path) -> None:
    settings = settings_from(
        tmp_path,
        head('producer_aliases = { "  CANDELA\tCorp. " = "Candela", "Cynosure" = "Cynosure" }\n')
        + LIBRARY,
    )
    assert settings.sharepoint.alias_keys() == {"candela corp.": "candela", "cynosure": "cynosure"}


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("Candela", "candela"),
        ("  CANDELA  ", "candela"),
        ("Candela\t\u00a0 Corp.", "candela corp."),
        ("Ästhetik GmbH", "Ästhetik gmbh"),  # SQLite's lower() is ASCII only, and so is this
        ("   ", ""),
    ],
)
def test_producer_keys(raw: str, key: str) -> None:
    assert producer_key(raw) == key
