"""syncd's settings: a TOML file, ``SYNCD_*`` environment variables and secrets from files.

Sources, highest priority first:

1. keyword arguments to :func:`load_settings` (the CLI's own overrides);
2. ``SYNCD_*`` environment variables, nested with ``__`` (``SYNCD_CRM__BITRIX24__URL``,
   ``SYNCD_MIRROR__INTERVAL_SECONDS``);
3. the TOML file named by ``--config FILE`` or else ``$SYNCD_CONFIG`` (read by pydantic-settings'
   :class:`~pydantic_settings.TomlConfigSettingsSource`); no file at all means defaults;
4. the defaults below.

The CRM vendor is a plug-in (:mod:`syncd.connectors.crm.registry`): ``[crm]`` holds what every
vendor shares and ``crm.vendor``; each registered vendor's own settings are the table
``[crm.<vendor>]``, validated by the model the vendor brings.

Secrets are never settings values. They are read, lazily, from a file: a ``*_file`` setting
(``crm.bitrix24.webhook_token_file``) or the systemd credential of the same name in
``$CREDENTIALS_DIRECTORY`` (``LoadCredential=crm_webhook_token:...``). A secret's value in the TOML
file or in the environment is refused with a message saying where to put it instead.

Every problem becomes one :class:`~syncd.core.errors.ConfigError` whose message is a single line
naming the setting (``crm.colour: unknown setting``) or the environment variable
(``SYNCD_MIRROR__INTERVAL_SECONDS: must be greater than or equal to 1 (got 0)``). Messages never
contain a secret's value; values of settings that could carry one (URLs) are never echoed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from syncd.connectors.crm import registry
from syncd.connectors.crm.vendor import CrmVendor
from syncd.connectors.sharepoint import settings as sharepoint_settings
from syncd.connectors.sharepoint.settings import SharepointSettings
from syncd.core.errors import ConfigError

__all__ = [
    "CONFIG_ENV_VAR",
    "ENV_PREFIX",
    "ApiSettings",
    "CrmSettings",
    "InvalidSettingsError",
    "LogSettings",
    "MirrorSettings",
    "OmnivaSettings",
    "RetentionSettings",
    "Settings",
    "SharepointSettings",
    "StateSettings",
    "ViesSettings",
    "WatchdogSettings",
    "load_settings",
    "read_secret",
    "secret_source",
]

ENV_PREFIX: Final = "SYNCD_"
ENV_NESTED_DELIMITER: Final = "__"
CONFIG_ENV_VAR: Final = "SYNCD_CONFIG"
CREDENTIALS_ENV_VAR: Final = "CREDENTIALS_DIRECTORY"
STATE_DIRECTORY_ENV_VAR: Final = "STATE_DIRECTORY"
DEFAULT_STATE_DIRECTORY: Final = Path("/var/lib/syncd")
CACHE_FILE_NAME: Final = "cache.sqlite3"
MAX_SECRET_BYTES: Final = 64 * 1024  # a token, a client secret or a PEM certificate fits

# Secrets syncd knows: where the forbidden inline setting would be (its table's path and key)
# -> systemd credential name. The file setting is always "<key>_file" in the same table. Each
# CRM vendor declares its own.
_SECRETS: Final[dict[tuple[str, ...], str]] = {
    **{
        ("crm", vendor.name, key): secret.credential
        for vendor in registry.all_vendors()
        for key, secret in vendor.secrets.items()
    },
    **{("sharepoint", key): name for key, name in sharepoint_settings.SECRETS.items()},
}

# Settings that moved: what the one-line error says instead of "unknown setting".
_MOVED: Final[dict[tuple[str, ...], str]] = {
    ("vies", "stale_max_hours"): (
        "moved: the stale fallback is now retention.vies_answers_hours minus vies.cache_hours "
        "(0 by default: off)"
    ),
    ("vies", "purge_interval_minutes"): (
        "moved: retention.purge_interval_minutes (one retention job purges every store)"
    ),
    ("outbox", "message_retention_days"): (
        "moved: retention.delivered_requests_days (days after delivery until a request's "
        "message and contact details are forgotten)"
    ),
}

# Settings whose values are never repeated in an error message (they may embed a credential).
_NEVER_ECHO: Final[frozenset[str]] = frozenset(
    f"crm.{vendor.name}.{key}" for vendor in registry.all_vendors() for key in vendor.never_echo
)

_SECTION_CONFIG: Final = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)


class InvalidSettingsError(ConfigError):
    """A :class:`ConfigError` from validating settings; ``problems`` lists each one-line problem.

    ``str(error)`` is all problems joined on one line with ``"; "``.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("; ".join(self.problems))


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------

class _CrmShared(BaseModel):
    """``[crm]``: which CRM vendor, and what every vendor's client shares (timeouts, retries,
    the request budget). The vendor's own settings are the table ``[crm.<vendor>]``."""

    model_config = _SECTION_CONFIG

    vendor: str = "bitrix24"
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    timeout_seconds: float = Field(default=30.0, gt=0, le=120)
    max_attempts: int = Field(default=5, ge=1, le=20)
    overlap_seconds: int = Field(default=300, ge=0, le=86_400)
    deletion_events: Literal["auto", "off"] = "auto"
    # The client-side request budget shared by the mirror and push lanes (Bitrix24 allows a
    # webhook about 2 requests/s with a burst of 50); 0 requests/s disables it.
    requests_per_second: float = Field(default=2.0, ge=0)
    request_burst: int = Field(default=50, ge=1)
    push_reserve: int = Field(default=10, ge=0)

    @field_validator("vendor")
    @classmethod
    def _check_vendor(cls, value: str) -> str:
        if value not in registry.names():
            raise ValueError(f"unknown CRM vendor (known: {', '.join(registry.names())})")
        return value

    @model_validator(mode="after")
    def _check_reserve(self) -> _CrmShared:
        if self.push_reserve >= self.request_burst:
            raise ValueError(
                f"push_reserve ({self.push_reserve}) must be less than "
                f"request_burst ({self.request_burst})"
            )
        others = [
            name for name in registry.names()
            if name != self.vendor and name in self.model_fields_set
        ]
        if others:
            raise ValueError(
                f"[crm.{others[0]}] is set, but crm.vendor is {self.vendor!r}; remove the table "
                "or choose that vendor"
            )
        return self

    @property
    def vendor_plugin(self) -> CrmVendor:
        """The configured vendor (from the registry)."""
        return registry.get(self.vendor)

    @property
    def vendor_settings(self) -> BaseModel:
        """The configured vendor's own table, ``[crm.<vendor>]`` (defaults when absent)."""
        table: BaseModel = getattr(self, self.vendor)
        return table


if TYPE_CHECKING:
    CrmSettings = _CrmShared
else:
    CrmSettings = create_model(
        "CrmSettings",
        __base__=_CrmShared,
        __doc__=_CrmShared.__doc__,
        **{
            vendor.name: (vendor.settings_model, Field(default_factory=vendor.settings_model))
            for vendor in registry.all_vendors()
        },
    )


class MirrorSettings(BaseModel):
    """``[mirror]``: how often the CRM is mirrored and how deletions are guarded."""

    model_config = _SECTION_CONFIG

    interval_seconds: float = Field(default=60.0, ge=1)
    jitter_seconds: float = Field(default=5.0, ge=0)
    sweep_interval_seconds: float = Field(default=3600.0, ge=10)
    full_resync_interval_hours: float = Field(default=24.0, ge=0)  # 0 disables it
    delete_guard_share: float = Field(default=0.10, gt=0, le=1)
    delete_guard_min: int = Field(default=5, ge=0)


def _default_state_directory() -> Path:
    # systemd's StateDirectory= sets $STATE_DIRECTORY (colon-separated if there are several).
    from_systemd = os.environ.get(STATE_DIRECTORY_ENV_VAR, "").split(":")[0]
    return Path(from_systemd) if from_systemd else DEFAULT_STATE_DIRECTORY


class StateSettings(BaseModel):
    """``[state]``: where the SQLite files live."""

    model_config = _SECTION_CONFIG

    directory: Path = Field(default_factory=_default_state_directory)

    @field_validator("directory")
    @classmethod
    def _expand_directory(cls, value: Path) -> Path:
        if not str(value).strip():
            raise ValueError("must not be empty")
        return value.expanduser()

    @property
    def cache_path(self) -> Path:
        """The cache database the portal reads."""
        return self.directory / CACHE_FILE_NAME

    @property
    def default_spool(self) -> Path:
        """Where the portal's attached files wait, unless ``outbox.spool_directory`` says."""
        return self.directory / "spool"


class OutboxSettings(BaseModel):
    """``[outbox]``: service requests on their way to the CRM."""

    model_config = _SECTION_CONFIG

    # Where syncd keeps attached files until the CRM has them; None means <state.directory>/spool.
    spool_directory: Path | None = None
    request_types: tuple[str, ...] = ("repair", "maintenance", "installation", "training",
                                      "other")
    max_attempts: int = Field(default=10, ge=1, le=100)
    lease_seconds: float = Field(default=300.0, ge=10)
    max_image_mb: int = Field(default=25, ge=1, le=2000)
    max_video_mb: int = Field(default=500, ge=1, le=2000)
    max_document_mb: int = Field(default=50, ge=1, le=2000)
    max_files_per_request: int = Field(default=20, ge=1, le=100)
    # The free space the spool's file system keeps: a request that would leave less is refused
    # at the door (507) rather than filling the disk.
    min_free_mb: int = Field(default=1024, ge=0)
    # What a rejected file (wrong type, too large, missing, outside the spool) does to its
    # request: "dead" stops the request with the reason; "skip" delivers it without the file.
    on_bad_file: Literal["dead", "skip"] = "dead"

    @field_validator("request_types")
    @classmethod
    def _non_empty_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or any(not item.strip() for item in value):
            raise ValueError("must list at least one request type, none empty")
        return value


class ViesSettings(BaseModel):
    """``[vies]``: EU VAT number validation at VIES and its cache."""

    model_config = _SECTION_CONFIG

    endpoint: str = "https://ec.europa.eu/taxation_customs/vies/services/checkVatService"
    # Our own VAT number (with prefix): with it, lookups use checkVatApprox and keep VIES's
    # consultation number as proof of the check.
    requester_vat: str | None = None
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    timeout_seconds: float = Field(default=15.0, gt=0, le=120)
    max_attempts: int = Field(default=2, ge=1, le=5)
    cache_hours: float = Field(default=24.0, gt=0, le=24 * 31)
    max_concurrent_calls: int = Field(default=4, ge=1, le=32)
    max_calls_per_member_state: int = Field(default=1, ge=1, le=8)
    lookup_wait_seconds: float = Field(default=20.0, gt=0, le=120)
    circuit_open_minutes: float = Field(default=60.0, gt=0, le=24 * 60)

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("requester_vat")
    @classmethod
    def _check_requester(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from stdnum.eu import vat  # a light import, only when a requester is configured

        compact = vat.compact(value)
        if not vat.is_valid(compact):
            raise ValueError("is not a valid EU VAT number (with its country prefix)")
        return str(compact)


class OmnivaSettings(BaseModel):
    """``[omniva]``: Omniva's parcel-machine list."""

    model_config = _SECTION_CONFIG

    enabled: bool = True
    url: str = "https://www.omniva.ee/locations.json"
    interval_hours: float = Field(default=6.0, gt=0, le=24 * 7)
    connect_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    max_shrink_share: float = Field(default=0.2, gt=0, le=1)
    max_body_mb: int = Field(default=20, ge=1, le=200)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return _http_url(value)


class RetentionSettings(BaseModel):
    """``[retention]``: how long each store keeps what it holds (docs/privacy.md has the table
    with each store's legal basis). The defaults are the privacy policy's. Each ``*_hours`` or
    ``*_days`` setting is the window of the store it is named after; the daemon's ``retention``
    job enforces them every ``purge_interval_minutes``."""

    model_config = _SECTION_CONFIG

    purge_interval_minutes: float = Field(default=15.0, ge=1, le=24 * 60)
    # VIES answers are reused for vies.cache_hours and deleted after this; the difference (0 by
    # default) is how long an expired answer may still stand in, flagged stale, while VIES is down.
    vies_answers_hours: float = Field(default=24.0, gt=0, le=24 * 62)
    audit_log_days: int = Field(default=730, ge=1, le=3650)
    # Outbox requests: message, contact details and file names forgotten this long after
    # delivery / after going dead (dead ones lose their spool files too) ...
    delivered_requests_days: int = Field(default=7, ge=0, le=3650)
    dead_requests_days: int = Field(default=30, ge=1, le=3650)
    # ... and the rows themselves (key, status, CRM ID, times) removed after this.
    request_rows_days: int = Field(default=365, ge=1, le=3650)
    sync_runs_days: int = Field(default=30, ge=1, le=3650)
    control_requests_days: int = Field(default=30, ge=1, le=3650)
    quarantine_days: int = Field(default=30, ge=1, le=3650)
    held_deletes_days: int = Field(default=14, ge=1, le=3650)
    resync_progress_days: int = Field(default=7, ge=1, le=365)

    @model_validator(mode="after")
    def _rows_outlive_their_details(self) -> RetentionSettings:
        for name in ("delivered_requests_days", "dead_requests_days"):
            if getattr(self, name) > self.request_rows_days:
                raise ValueError(
                    f"retention.request_rows_days: {self.request_rows_days} is below "
                    f"retention.{name} ({getattr(self, name)}); a request's row must outlive "
                    "its details"
                )
        return self

    @classmethod
    def window_fields(cls) -> dict[str, str]:
        """Store name -> the setting holding its window (``{"audit_log": "audit_log_days"}``):
        every field in hours or days; the store is the field's name without its unit."""
        return {
            name.rsplit("_", 1)[0]: name
            for name in cls.model_fields
            if name.endswith(("_hours", "_days"))
        }

    def windows(self) -> dict[str, timedelta]:
        """Each store's retention window, by store name."""
        return {
            store: timedelta(**{name.rsplit("_", 1)[1]: getattr(self, name)})
            for store, name in self.window_fields().items()
        }


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiSettings(BaseModel):
    """``[api]``: the local HTTP API the portal calls (loopback or a unix socket only)."""

    model_config = _SECTION_CONFIG

    enabled: bool = True
    # "127.0.0.1:8787", "[::1]:8787", "localhost:8787" or "unix:/run/syncd/api.sock"
    listen: str = "127.0.0.1:8787"
    unix_socket_mode: str = "0660"
    threads: int = Field(default=8, ge=1, le=64)
    max_request_bytes: int = Field(default=8192, ge=0, le=1_048_576)
    request_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    # POST /v1/service-requests: the largest body (all files of one request), and how many
    # requests and megabytes the portal may file per hour (a runaway portal cannot fill the disk).
    max_upload_mb: int = Field(default=1024, ge=1, le=16_384)
    max_service_requests_per_hour: int = Field(default=300, ge=1)
    max_upload_mb_per_hour: int = Field(default=4096, ge=1)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("unix:"):
            if not value[len("unix:"):].startswith("/"):
                raise ValueError("a unix socket must be an absolute path: unix:/run/syncd/api.sock")
            return value
        host, sep, port = value.rpartition(":")
        host = host.strip("[]")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT on loopback or unix:/path/to/socket")
        if not _is_loopback(host):
            raise ValueError(
                "must be a loopback address (127.0.0.1, ::1, localhost) or a unix socket; "
                "the API is for the portal on this host only"
            )
        return value

    @field_validator("unix_socket_mode")
    @classmethod
    def _check_mode(cls, value: str) -> str:
        if not re.fullmatch(r"0?[0-7]{3}", value.strip()):
            raise ValueError("must be an octal file mode like \"0660\"")
        return value.strip()


def _http_url(value: str) -> str:
    value = value.strip()
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL naming a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain a user name or password")
    return value


class WatchdogSettings(BaseModel):
    """``[watchdog]``: how long each lane may be inside one piece of work without progress
    before syncd stops pinging systemd's watchdog (which then restarts it)."""

    model_config = _SECTION_CONFIG

    crm_lane_seconds: float = Field(default=900.0, ge=1)
    push_lane_seconds: float = Field(default=900.0, ge=1)
    services_lane_seconds: float = Field(default=300.0, ge=1)
    documents_lane_seconds: float = Field(default=900.0, ge=1)
    api_loop_seconds: float = Field(default=60.0, ge=1)

    def deadlines(self) -> dict[str, float]:
        """Deadline per lane name (``crm``, ``push``, ``services``, ``api``)."""
        return {
            "crm": self.crm_lane_seconds,
            "push": self.push_lane_seconds,
            "services": self.services_lane_seconds,
            "documents": self.documents_lane_seconds,
            "api": self.api_loop_seconds,
        }


class LogSettings(BaseModel):
    """``[log]``: log level and format (the log goes to stderr, i.e. the journal)."""

    model_config = _SECTION_CONFIG

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"

    @field_validator("level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("format", mode="before")
    @classmethod
    def _lower_format(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


class PrivacySettings(BaseModel):
    """``[privacy]``: answering data subjects' requests (``syncd subject``, docs/privacy.md)."""

    model_config = _SECTION_CONFIG

    # The region a phone number written without "+" belongs to, when a selector or a stored
    # number is read (ISO 3166-1 alpha-2). Estonia: where Baltic Lasers and most clients are.
    default_phone_region: str = "EE"

    @field_validator("default_phone_region")
    @classmethod
    def _check_region(cls, value: str) -> str:
        value = value.strip().upper()
        if value == "EE":
            return value  # the default; phonenumbers (about 45 ms to import) is not needed
        from syncd.core.identifiers import check_region

        return check_region(value)


# --------------------------------------------------------------------------------------------
# The TOML source
# --------------------------------------------------------------------------------------------


@dataclass
class _LoadContext:
    """What one :func:`load_settings` call hands to ``settings_customise_sources``."""

    toml_file: Path | None
    toml_data: dict[str, Any] = field(default_factory=dict)


_LOAD_CONTEXT: ContextVar[_LoadContext | None] = ContextVar("syncd_config_load", default=None)


class _TomlSource(TomlConfigSettingsSource):
    """pydantic-settings' TOML source, with read and parse errors turned into ConfigErrors."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        try:
            data = super()._read_file(file_path)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file_path} is not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(
                f"cannot read config file {file_path}: {exc.strerror or exc}"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {file_path} is not valid UTF-8") from None
        context = _LOAD_CONTEXT.get()
        if context is not None:
            context.toml_data = data
        return data


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


class Settings(BaseSettings):
    """The effective configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        validate_default=True,
    )

    crm: CrmSettings = Field(default_factory=CrmSettings)
    mirror: MirrorSettings = Field(default_factory=MirrorSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    vies: ViesSettings = Field(default_factory=ViesSettings)
    omniva: OmnivaSettings = Field(default_factory=OmnivaSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    sharepoint: SharepointSettings = Field(default_factory=SharepointSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    watchdog: WatchdogSettings = Field(default_factory=WatchdogSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)

    # dotted setting -> where its value came from; filled in by load_settings()
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # No .env files and no pydantic secrets_dir: secrets go through read_secret() only.
        context = _LOAD_CONTEXT.get()
        if context is None or context.toml_file is None:
            return (init_settings, env_settings)
        return (init_settings, env_settings, _TomlSource(settings_cls, toml_file=context.toml_file))

    @model_validator(mode="after")
    def _check_vies_retention(self) -> Settings:
        if self.retention.vies_answers_hours < self.vies.cache_hours:
            raise ValueError(
                f"retention.vies_answers_hours: {self.retention.vies_answers_hours:g} is below "
                f"vies.cache_hours ({self.vies.cache_hours:g}); an answer cannot be reused "
                "longer than it is kept"
            )
        return self

    @property
    def vies_stale_hours(self) -> float:
        """How long past ``vies.cache_hours`` an expired VIES answer may stand in while VIES is
        down: ``retention.vies_answers_hours - vies.cache_hours`` (0 by default: never)."""
        return self.retention.vies_answers_hours - self.vies.cache_hours

    # -- secrets ----------------------------------------------------------------------------

    def crm_secret(self, key: str) -> str | None:
        """The configured CRM vendor's secret ``key``, read now from its file (the
        ``crm.<vendor>.<key>_file`` setting or the systemd credential); None if not configured."""
        secret = self.crm.vendor_plugin.secrets[key]
        file_setting = getattr(self.crm.vendor_settings, f"{key}_file")
        value = read_secret(secret.credential, file_setting)
        if value is not None and not secret.shape.fullmatch(value):
            raise ConfigError(
                f"secret file {secret_source(secret.credential, file_setting)} does not hold "
                f"{secret.what}"
            )
        return value

    @property
    def crm_configured(self) -> bool:
        """Whether a CRM is configured; without one the daemon serves VIES, Omniva and the API
        only."""
        return self.crm.vendor_plugin.is_configured(self.crm.vendor_settings)

    def check_secrets(self) -> None:
        """Read every configured secret once, raising ConfigError for any unusable one."""
        for key in self.crm.vendor_plugin.secrets:
            self.crm_secret(key)
        if self.sharepoint.configured:
            self.sharepoint_credential()

    def sharepoint_secret(self, key: str) -> str | None:
        """The SharePoint secret ``key`` (``certificate`` or ``client_secret``), read now from
        its file; None if not configured."""
        credential = sharepoint_settings.SECRETS[key]
        file_setting = getattr(self.sharepoint, f"{key}_file")
        value = read_secret(credential, file_setting)
        shape, what = {
            "certificate": (
                sharepoint_settings.CERTIFICATE_SHAPE,
                "a PEM private key and certificate",
            ),
            "client_secret": (sharepoint_settings.CLIENT_SECRET_SHAPE, "a client secret"),
        }[key]
        if value is not None and not shape.fullmatch(value):
            raise ConfigError(
                f"secret file {secret_source(credential, file_setting)} does not hold {what}"
            )
        return value

    def sharepoint_credential(self) -> tuple[str, str]:
        """``("certificate", PEM)`` or ``("client_secret", secret)``: the app's credential for
        SharePoint, read now. ConfigError when neither or both are configured."""
        certificate = self.sharepoint_secret("certificate")
        secret = self.sharepoint_secret("client_secret")
        if certificate is not None and secret is not None:
            raise ConfigError(
                "sharepoint: both a certificate and a client secret are configured; keep one "
                "(a certificate is recommended)"
            )
        if certificate is not None:
            return "certificate", certificate
        if secret is not None:
            return "client_secret", secret
        raise ConfigError(
            "sharepoint.certificate_file: no credential for SharePoint; set certificate_file "
            "(recommended) or client_secret_file, or pass the systemd credential "
            "'sharepoint_certificate' or 'sharepoint_client_secret' (LoadCredential=)"
        )

    def check_complete(self) -> None:
        """Raise :class:`ConfigError` (one line naming the setting) for anything ``syncd run``
        would refuse: an unusable secret, a CRM half configured, an upload limit that no
        allowed file fits. A CRM not configured at all is fine: the daemon then serves VIES,
        Omniva and the API only."""
        sharepoint = self.sharepoint
        if sharepoint.configured:  # what is missing first, then whether the credential reads
            for setting in ("tenant_id", "client_id"):
                if getattr(sharepoint, setting) is None:
                    raise ConfigError(
                        f"sharepoint.{setting}: required once [sharepoint] is configured"
                    )
            if not sharepoint.libraries:
                raise ConfigError(
                    "sharepoint.libraries: [sharepoint] is configured but lists no library "
                    "([[sharepoint.libraries]] with name, site, library, producers, permission)"
                )
        self.check_secrets()
        self.crm.vendor_plugin.check(self.crm.vendor_settings, self.crm_secret)
        largest = max(
            self.outbox.max_image_mb, self.outbox.max_video_mb, self.outbox.max_document_mb
        )
        if self.api.enabled and self.api.max_upload_mb < largest:
            raise ConfigError(
                f"api.max_upload_mb: {self.api.max_upload_mb} is below the largest file "
                f"limit in [outbox] ({largest} MB); such a file could never be filed"
            )
        if self.api.enabled and self.api.max_upload_mb_per_hour < self.api.max_upload_mb:
            raise ConfigError(
                f"api.max_upload_mb_per_hour: {self.api.max_upload_mb_per_hour} is below "
                f"api.max_upload_mb ({self.api.max_upload_mb}); the largest request could never "
                "be filed"
            )

    @property
    def spool_directory(self) -> Path:
        """Where attached files wait for delivery (``outbox.spool_directory`` or the default)."""
        return self.outbox.spool_directory or self.state.default_spool

    def _secret_files(self) -> Iterator[tuple[tuple[str, ...], str, str, Path | None]]:
        """(table path, key, credential name, file setting) for every known secret."""
        for (*table, key), credential in _SECRETS.items():
            node: Any = self
            for part in table:
                node = getattr(node, part)
            yield tuple(table), key, credential, getattr(node, f"{key}_file")

    # -- reporting --------------------------------------------------------------------------

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as JSON-able data, each secret shown only by its source.

        A secret appears as ``"<set: from /path>"`` or ``"<not set>"``; its value is never read.
        """
        data: dict[str, Any] = self.model_dump(mode="json")
        for vendor in registry.names():  # only the configured vendor's own table
            if vendor != self.crm.vendor:
                del data["crm"][vendor]
        for table, key, credential, file_setting in self._secret_files():
            node = data
            for part in table:
                node = node.get(part, {})
            if not node:  # another vendor's table, left out above
                continue
            source = secret_source(credential, file_setting)
            node[key] = "<not set>" if source is None else f"<set: from {source}>"
            if file_setting is None:  # the path it is read from, not null
                node[f"{key}_file"] = str(source) if source else "<not set>"
        data["state"]["cache_path"] = str(self.state.cache_path)
        data["outbox"]["spool_directory"] = str(self.spool_directory)
        if not self.crm_configured:
            data["crm"]["configured"] = "no CRM; mirror and service requests off"
        return data

    def describe_sources(self) -> dict[str, str]:
        """Where each setting's value came from: "default", "file <path>", "env <VAR>", "override".

        Only meaningful on an instance made by :func:`load_settings`.
        """
        return {
            dotted: self._origins.get(dotted, "default") for dotted in _leaf_settings(type(self))
        }


def _leaf_settings(model: type[BaseModel], prefix: str = "") -> list[str]:
    names: list[str] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.extend(_leaf_settings(annotation, f"{prefix}{name}."))
        else:
            names.append(f"{prefix}{name}")
    return names


# --------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------


def secret_source(name: str, file_setting: Path | None) -> Path | None:
    """The file a secret would be read from, without reading it.

    ``file_setting`` (an explicit ``*_file`` setting) wins; otherwise the systemd credential
    ``$CREDENTIALS_DIRECTORY/<name>`` if that file exists; otherwise None.
    """
    if file_setting is not None:
        return file_setting
    credentials = os.environ.get(CREDENTIALS_ENV_VAR)
    if credentials:
        candidate = Path(credentials) / name
        if candidate.exists():
            return candidate
    return None


def read_secret(name: str, file_setting: Path | None) -> str | None:
    """Read the secret ``name`` from ``file_setting`` or the systemd credential ``name``.

    Returns the content with surrounding whitespace stripped, or None when neither source is
    configured. An explicit file that is missing, unreadable or empty is a ConfigError naming the
    file (never its content).
    """
    path = secret_source(name, file_setting)
    if path is None:
        return None
    try:
        # O_NONBLOCK: a FIFO must not hang start-up; the size cap: /dev/zero must not fill memory.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError(f"secret file {path} is not a regular file")
            raw = os.read(fd, MAX_SECRET_BYTES + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_SECRET_BYTES:
        raise ConfigError(
            f"secret file {path} is larger than {MAX_SECRET_BYTES // 1024} KiB; it should hold "
            "one secret"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"secret file {path} is not valid UTF-8 text") from None
    value = text.strip()
    if not value:
        raise ConfigError(f"secret file {path} is empty")
    return value


# --------------------------------------------------------------------------------------------
# Loading and error messages
# --------------------------------------------------------------------------------------------


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the effective settings; any problem raises ConfigError with one line naming it.

    ``config_file`` is the CLI's ``--config FILE``; without it ``$SYNCD_CONFIG`` is used, and
    without that no file is read. ``overrides`` are nested like the TOML file
    (``load_settings(state={"directory": path})``) and win over every other source.
    """
    toml_file = _config_file_path(config_file)
    _check_env_names(os.environ)
    context = _LoadContext(toml_file=toml_file)
    token = _LOAD_CONTEXT.set(context)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = [_describe_error(err, overrides) for err in exc.errors()]
        raise InvalidSettingsError(problems) from None
    except SettingsError as exc:
        raise ConfigError(_describe_settings_error(exc)) from None
    finally:
        _LOAD_CONTEXT.reset(token)
    settings._origins = _origins(overrides, context, toml_file)
    return settings


def _config_file_path(config_file: Path | None) -> Path | None:
    if config_file is None:
        from_env = os.environ.get(CONFIG_ENV_VAR)
        if not from_env:
            return None
        config_file = Path(from_env)
    path = Path(config_file).expanduser()
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"cannot read config file {path}: not a regular file")
    return path


def _section_names() -> frozenset[str]:
    return frozenset(Settings.model_fields)


def _check_env_names(environ: Mapping[str, str]) -> None:
    """Refuse SYNCD_* variables that look like settings but match none, and inline secrets.

    pydantic-settings silently ignores environment variables it cannot place; a misspelt section
    or a single underscore where two belong would then do nothing.
    """
    sections = _section_names()
    problems: list[str] = []
    for var in sorted(environ):
        upper = var.upper()
        if not upper.startswith(ENV_PREFIX) or upper == CONFIG_ENV_VAR:
            continue
        rest = upper[len(ENV_PREFIX):].lower()
        if ENV_NESTED_DELIMITER in rest:
            path = tuple(rest.split(ENV_NESTED_DELIMITER))
            section = path[0]
            if path in _SECRETS:
                problems.append(_secret_message(var, path, via_env=True))
            elif section not in sections:
                problems.append(f"{var}: unknown setting (no section [{section}])")
            continue
        for section in sections:
            if rest.startswith(section + "_"):
                suggestion = ENV_PREFIX + section.upper() + "__" + rest[len(section) + 1:].upper()
                problems.append(
                    f"{var}: unknown setting (nested settings use a double underscore: "
                    f"{suggestion})"
                )
                break
    if problems:
        raise InvalidSettingsError(problems)


def _secret_message(where: str, path: tuple[str, ...], *, via_env: bool) -> str:
    credential = _SECRETS[path]
    origin = "environment variables" if via_env else "the config file"
    return (
        f"{where}: secrets are not accepted from {origin}; write it to a file readable only by "
        f"syncd and set {'.'.join(path)}_file, or pass the systemd credential '{credential}' "
        f"(LoadCredential=)"
    )


def _vendor_home(loc: tuple[str, ...]) -> tuple[str, ...] | None:
    """Where a vendor's setting written directly in ``[crm]`` (as before vendor tables) belongs
    now, e.g. ``("crm", "bitrix24", "url")``; None if no vendor has such a setting."""
    if len(loc) != 2 or loc[0] != "crm":
        return None
    for vendor in registry.all_vendors():
        if loc[1] in vendor.settings_model.model_fields or loc[1] in vendor.secrets:
            return ("crm", vendor.name, loc[1])
    return None


def _env_var_for(loc: tuple[str, ...]) -> str | None:
    """The environment variable that supplied the setting at ``loc``, if one did."""
    environ = {name.upper(): name for name in os.environ}
    for depth in range(len(loc), 0, -1):
        candidate = _env_name(loc[:depth])
        if candidate in environ:
            return environ[candidate]
    return None


def _in_mapping(data: Mapping[str, Any], loc: tuple[str, ...]) -> bool:
    node: Any = data
    for part in loc:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _describe_error(err: Mapping[str, Any], overrides: Mapping[str, Any]) -> str:
    loc = tuple(str(part) for part in err.get("loc", ()))
    dotted = ".".join(loc) or "settings"
    error_type = str(err.get("type", ""))
    from_override = _in_mapping(overrides, loc)
    env_var = None if from_override else _env_var_for(loc)
    where = env_var or dotted
    # An environment variable holding a whole table (SYNCD_CRM='{"url": ...}') names it, then
    # the setting inside it.
    inner = "" if env_var is None or env_var.upper() == _env_name(loc) else f"{dotted} "

    if error_type == "extra_forbidden":
        if loc in _SECRETS:
            return _secret_message(where, loc, via_env=env_var is not None)
        home = _vendor_home(loc)
        if home in _SECRETS:
            return _secret_message(where, home, via_env=env_var is not None)
        if home is not None:
            return (
                f"{where}: {inner}belongs in the CRM vendor's own table now: "
                f"{'.'.join(home)} ([{'.'.join(home[:-1])}])"
            )
        if loc in _MOVED:
            return f"{where}: {inner}{_MOVED[loc]}"
        return f"{where}: {inner}unknown setting"
    named = _NAMED_PROBLEM.match(_short_message(err))
    if len(loc) <= 1 and named and named.group(1) in _leaf_settings(Settings):
        # A check across settings names the setting itself ("retention.vies_answers_hours: ...").
        return _short_message(err)
    return f"{where}: {inner}{_short_message(err)}{_echo_value(err, dotted)}"


_NAMED_PROBLEM: Final = re.compile(r"([a-z_]+(?:\.[a-z_0-9]+)+): ")


def _env_name(loc: tuple[str, ...]) -> str:
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(loc).upper()


def _short_message(err: Mapping[str, Any]) -> str:
    error_type = str(err.get("type", ""))
    msg = str(err.get("msg", "is invalid"))
    if error_type in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a table of settings"
    if error_type == "missing":
        return "is required"
    if msg.startswith("Value error, "):
        return msg[len("Value error, "):]
    if msg.startswith("Input should be "):
        msg = "must be " + msg[len("Input should be "):]
        if error_type.endswith("_parsing") or error_type.endswith("_type"):
            msg = msg.split(",", 1)[0]
        return msg
    return msg[:1].lower() + msg[1:]


def _echo_value(err: Mapping[str, Any], dotted: str) -> str:
    """`` (got X)`` for short, plainly non-secret inputs; empty otherwise."""
    if dotted in _NEVER_ECHO or str(err.get("type", "")) in ("missing", "extra_forbidden"):
        return ""
    value = err.get("input")
    if isinstance(value, bool):
        shown = "true" if value else "false"
    elif isinstance(value, int | float) or (
        isinstance(value, str) and len(value) <= 40 and value.isprintable()
    ):
        shown = repr(value)
    else:
        return ""
    return f" (got {shown})"


def _describe_settings_error(exc: SettingsError) -> str:
    # pydantic-settings: 'error parsing value for field "crm" from source "EnvSettingsSource"'
    match = re.search(r'field "([^"]+)" from source "(\w+)"', str(exc))
    if match and match.group(2) == "EnvSettingsSource":
        var = _env_var_for((match.group(1),)) or ENV_PREFIX + match.group(1).upper()
        return f"{var}: is not valid JSON for the [{match.group(1)}] table"
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"settings: {first_line}"


def _origins(
    overrides: Mapping[str, Any], context: _LoadContext, toml_file: Path | None
) -> dict[str, str]:
    origins: dict[str, str] = {}
    for dotted in _leaf_settings(Settings):
        loc = tuple(dotted.split("."))
        if _in_mapping(overrides, loc):
            origins[dotted] = "override"
        elif (var := _env_var_for(loc)) is not None:
            origins[dotted] = f"env {var}"
        elif toml_file is not None and _in_mapping(context.toml_data, loc):
            origins[dotted] = f"file {toml_file}"
    return origins
