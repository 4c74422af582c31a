"""``[crm.bitrix24]``: where the Bitrix24 portal is and which of its objects syncd uses."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["Bitrix24Settings"]

_WEBHOOK_PATH = re.compile(r"(?P<prefix>.*?/rest/\d+)(?P<rest>/.*)?")


class Bitrix24Settings(BaseModel):
    """``[crm.bitrix24]``: the incoming webhook and the portal's smart processes and folder."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)

    # Webhook base URL up to and including the user id: https://example.bitrix24.eu/rest/1/
    url: str | None = None
    webhook_token_file: Path | None = None
    devices_entity_type_id: int = Field(default=1040, gt=0)
    service_requests_entity_type_id: int = Field(default=1044, gt=0)
    disk_folder_id: int = Field(default=1, gt=0)
    # Listings run as chained batches (see README, "How a mirror spends its requests"): at most
    # this many commands of 50 rows in one request (Bitrix24 takes 50) ...
    batch_commands: int = Field(default=50, ge=1, le=50)
    # ... fewer when the answer would be larger than this (memory) ...
    batch_max_bytes: int = Field(default=16 * 1024 * 1024, ge=256 * 1024)
    # ... or the CRM would work on it longer than this (its limit per request is 60 s).
    batch_max_seconds: float = Field(default=20.0, gt=0, le=55)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        try:
            parts = urlsplit(value)
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            raise ValueError("is not a valid URL") from None
        if parts.scheme.lower() not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        if not host:
            raise ValueError("must name a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "must not contain a user name or password; credentials belong in a file"
            )
        if parts.query or parts.fragment:
            raise ValueError("must not contain a query string or fragment")
        match = _WEBHOOK_PATH.fullmatch(parts.path.rstrip("/"))
        if match is None:
            raise ValueError(
                "must be the webhook base URL up to and including the user id, "
                "like https://example.bitrix24.eu/rest/1/"
            )
        if match.group("rest"):
            raise ValueError(
                "must end at the user id (…/rest/<user id>/); put the webhook token in "
                "crm.bitrix24.webhook_token_file or the systemd credential "
                "'crm_webhook_token', not in the URL"
            )
        normalised: str = urlunsplit(
            (parts.scheme.lower(), parts.netloc, match.group("prefix") + "/", "", "")
        )
        return normalised

    @field_validator("webhook_token_file")
    @classmethod
    def _expand_file(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()
