"""``[sharepoint]``: the documentation libraries mirrored from SharePoint Online through Graph.

Only pydantic here: the configuration is validated without importing msgraph or azure (they
load only when the daemon actually mirrors a library).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .producers import producer_key

_CONFIG: Final = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)
_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_LABEL: Final = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
_HOSTNAME: Final = re.compile(rf"{_LABEL}(\.{_LABEL})+|localhost|127\.0\.0\.1")
_TENANT_DOMAIN: Final = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")

# Secrets of [sharepoint]: key -> systemd credential name (the file setting is "<key>_file").
SECRETS: Final[dict[str, str]] = {
    "client_secret": "sharepoint_client_secret",
    "certificate": "sharepoint_certificate",
}
CERTIFICATE_SHAPE: Final = re.compile(
    r"(?s)(?=.*-----BEGIN [A-Z ]*PRIVATE KEY-----)(?=.*-----BEGIN CERTIFICATE-----).*"
)
CLIENT_SECRET_SHAPE: Final = re.compile(r"[\x21-\x7e]{8,512}")


class DocumentLibrary(BaseModel):
    """One ``[[sharepoint.libraries]]`` entry: a document library in a site, the producers it
    serves and the portal permission that may read it."""

    model_config = _CONFIG

    name: str  # syncd's own name for it: status, --library, the cache's document_libraries.name
    # "contoso.sharepoint.com:/sites/Manufacturers" or "https://contoso.sharepoint.com/sites/..."
    site: str
    library: str = "Documents"  # the library's (drive's) name in the site
    producers: tuple[str, ...] = ()
    folder: str = ""  # "/Manuals/Lasers": only what is below it is shown; "" = everything
    permission: str

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                "must be 1-64 lower-case letters, digits, '-' or '_', starting with a letter "
                "or digit"
            )
        return value

    @field_validator("site")
    @classmethod
    def _check_site(cls, value: str) -> str:
        return normalise_site(value)

    @field_validator("library", "permission")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value or len(value) > 255:
            raise ValueError("must be 1-255 characters")
        return value

    @field_validator("producers")
    @classmethod
    def _check_producers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not producer_key(item) for item in value):
            raise ValueError("must not contain an empty producer")
        return value

    @field_validator("folder")
    @classmethod
    def _check_folder(cls, value: str) -> str:
        return normalise_folder(value)

    @property
    def hostname(self) -> str:
        return self.site.split(":", 1)[0]

    @property
    def site_path(self) -> str:
        return self.site.split(":", 1)[1]


class SharepointSettings(BaseModel):
    """``[sharepoint]``: app-only access to SharePoint Online through Microsoft Graph.

    Off unless ``tenant_id``, ``client_id`` and at least one library are set. The credential is a
    certificate (recommended; PEM with private key and certificate) or a client secret, each
    only from a file: ``certificate_file``/``client_secret_file`` or the systemd credentials
    ``sharepoint_certificate``/``sharepoint_client_secret``.
    """

    model_config = _CONFIG

    tenant_id: str | None = None  # a GUID or the tenant's domain (contoso.onmicrosoft.com)
    client_id: str | None = None  # the app registration's application (client) ID
    certificate_file: Path | None = None
    client_secret_file: Path | None = None
    graph_url: str = "https://graph.microsoft.com/v1.0"
    login_url: str = "https://login.microsoftonline.com"
    # An extra CA bundle (PEM) to trust for login and Graph, e.g. a TLS-inspecting proxy's.
    ca_file: Path | None = None
    interval_seconds: float = Field(default=300.0, ge=10)
    connect_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    max_attempts: int = Field(default=4, ge=1, le=10)
    # Graph throttles per app and tenant; syncd keeps its own budget below that.
    requests_per_second: float = Field(default=10.0, ge=0)
    request_burst: int = Field(default=20, ge=1)
    max_retry_after_seconds: float = Field(default=300.0, gt=0, le=3600)
    producer_aliases: dict[str, str] = Field(default_factory=dict)
    libraries: tuple[DocumentLibrary, ...] = ()

    @field_validator("tenant_id")
    @classmethod
    def _check_tenant(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if _is_guid(value) or _TENANT_DOMAIN.fullmatch(value):
            return value
        raise ValueError("must be the tenant's ID (a GUID) or its domain")

    @field_validator("client_id")
    @classmethod
    def _check_client(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not _is_guid(value.strip()):
            raise ValueError("must be the app registration's application ID (a GUID)")
        return value.strip()

    @field_validator("graph_url", "login_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL naming a host")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("must not contain a user name, password, query or fragment")
        return value

    @field_validator("producer_aliases")
    @classmethod
    def _check_aliases(cls, value: dict[str, str]) -> dict[str, str]:
        for alias, producer in value.items():
            if not producer_key(alias) or not producer_key(producer):
                raise ValueError("must map non-empty spellings to non-empty producers")
        return value

    @model_validator(mode="after")
    def _check_libraries(self) -> SharepointSettings:
        names = [library.name for library in self.libraries]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"libraries: the name {duplicates[0]!r} is used twice")
        places = [(lib.site.lower(), lib.library.casefold()) for lib in self.libraries]
        for index, place in enumerate(places):
            if place in places[:index]:
                raise ValueError(
                    f"libraries: {self.libraries[index].name!r} names the same site and "
                    "library as another entry; give one entry the producers of both"
                )
        return self

    @property
    def configured(self) -> bool:
        """Whether SharePoint is configured at all (otherwise nothing of it is imported)."""
        return bool(self.tenant_id or self.client_id or self.libraries)

    @property
    def parsed_graph_url(self) -> tuple[str, str]:
        """(scheme://host[:port], path) of the Graph endpoint."""
        parts = urlsplit(self.graph_url)
        return f"{parts.scheme}://{parts.netloc}", parts.path

    def library(self, name: str) -> DocumentLibrary:
        """The library called ``name``; KeyError if none is."""
        for library in self.libraries:
            if library.name == name:
                return library
        raise KeyError(name)

    def alias_keys(self) -> dict[str, str]:
        """``producer_aliases`` with both sides normalised."""
        return {producer_key(alias): producer_key(name) for alias, name in
                self.producer_aliases.items()}


def normalise_site(value: str) -> str:
    """``host:/server/relative/path`` from that form or from the site's URL."""
    value = value.strip()
    if value.lower().startswith("https://"):
        parts = urlsplit(value)
        host, path = parts.hostname or "", unquote(parts.path)
    elif ":" in value:
        host, path = value.split(":", 1)
    else:
        raise ValueError(
            "must be the site as 'host:/sites/Name' or its URL 'https://host/sites/Name'"
        )
    host = host.strip().lower()
    path = "/" + path.strip().strip("/")
    if not _HOSTNAME.fullmatch(host):
        raise ValueError("must name the SharePoint host (contoso.sharepoint.com)")
    if path == "/":
        return f"{host}:/"
    if any(part in ("", ".", "..") for part in path[1:].split("/")):
        raise ValueError("has an empty or relative path segment")
    return f"{host}:{path}"


def normalise_folder(value: str) -> str:
    """A folder scope as ``/A/B`` ('' for the whole library)."""
    value = value.strip().strip("/")
    if not value:
        return ""
    parts = value.split("/")
    if any(part.strip() in ("", ".", "..") for part in parts):
        raise ValueError("has an empty or relative path segment")
    return "/" + "/".join(part.strip() for part in parts)


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36
