"""Building the working parts (cache connection, CRM adapter, engine) from settings."""

from __future__ import annotations

import sqlite3
import threading

from connectors.crm.bitrix24.adapter import Bitrix24Adapter
from connectors.crm.bitrix24.client import Bitrix24Client
from connectors.http import RetryPolicy
from mappings.loader import MappingSet, load_mapping_set
from state.db import connect
from syncd.config import Settings
from syncd.errors import ConfigError
from syncd.mirror import MirrorEngine, MirrorOptions, ProgressCallback


def open_cache(settings: Settings) -> sqlite3.Connection:
    """Open the cache (creating and migrating it when needed)."""
    try:
        return connect(settings.state.cache_path)
    except OSError as error:
        raise ConfigError(
            f"state.directory: cannot open {settings.state.cache_path}: {error.strerror}"
        ) from None
    except sqlite3.DatabaseError as error:
        raise ConfigError(f"state.directory: {settings.state.cache_path}: {error}") from None


def load_mappings(settings: Settings) -> MappingSet:
    return load_mapping_set(settings.crm.vendor)


def build_adapter(
    settings: Settings, mappings: MappingSet, *, stop: threading.Event | None = None
) -> Bitrix24Adapter:
    """The configured CRM adapter; a missing URL or credential is a ConfigError."""
    crm = settings.crm
    if not crm.url:
        raise ConfigError(
            "crm.url: not set (the CRM webhook base URL, e.g. https://example.bitrix24.eu/rest/1/)"
        )
    token = settings.crm_webhook_token()
    if not token:
        raise ConfigError(
            "crm.webhook_token_file: no webhook token (set crm.webhook_token_file "
            "or provide the systemd credential crm_webhook_token)"
        )
    client = Bitrix24Client(
        f"{crm.url.rstrip('/')}/{token}/",
        connect_timeout=crm.connect_timeout_seconds,
        timeout=crm.timeout_seconds,
        retry=RetryPolicy(max_attempts=crm.max_attempts, stop=stop),
    )
    return Bitrix24Adapter(
        client,
        mappings,
        devices_entity_type_id=crm.devices_entity_type_id,
        deletion_events=crm.deletion_events == "auto",
    )


def mirror_options(settings: Settings) -> MirrorOptions:
    return MirrorOptions(
        overlap_seconds=float(settings.crm.overlap_seconds),
        delete_guard_share=settings.mirror.delete_guard_share,
        delete_guard_min=settings.mirror.delete_guard_min,
    )


def build_engine(
    settings: Settings,
    conn: sqlite3.Connection,
    *,
    stop: threading.Event | None = None,
    progress: ProgressCallback | None = None,
) -> MirrorEngine:
    mappings = load_mappings(settings)
    adapter = build_adapter(settings, mappings, stop=stop)
    return MirrorEngine(
        conn, adapter, mappings, mirror_options(settings), stop=stop, progress=progress
    )
