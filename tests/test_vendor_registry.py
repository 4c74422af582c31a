"""The CRM vendor as a plug-in: every registered vendor is complete, ``crm.vendor`` picks one by
name, and the daemon's parts are built from it without naming any vendor in the engines."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from syncd.config import Settings, load_settings
from syncd.connectors.crm import registry
from syncd.connectors.crm.base import CRMAdapter, ServiceRequestPusher
from syncd.connectors.crm.memory.vendor import VENDOR as MEMORY
from syncd.core.entities import Entity
from syncd.core.errors import ConfigError
from syncd.engines.intake import IncomingFile
from syncd.engines.push import OutboxDelivery
from syncd.logging_setup import redact
from syncd.mappings.loader import load_mapping_set
from syncd.runtime import build_engine, build_intake, build_pusher, open_cache, push_options
from syncd.state import outbox
from syncd.state.db import close as close_cache

PHOTO = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 16


@pytest.mark.parametrize("name", registry.names())
def test_every_registered_vendor_is_complete(name: str) -> None:
    vendor = registry.get(name)
    assert vendor.name == name
    assert issubclass(vendor.settings_model, BaseModel)
    assert vendor.settings_model.model_config.get("extra") == "forbid"
    vendor.settings_model()  # every setting has a default: an absent table is valid
    for key, secret in vendor.secrets.items():
        assert f"{key}_file" in vendor.settings_model.model_fields
        assert re.fullmatch(r"[a-z0-9_]+", secret.credential)
    assert vendor.never_echo <= set(vendor.settings_model.model_fields)
    assert set(load_mapping_set(vendor.mappings).entities) == {e.value for e in Entity}


def test_an_unknown_vendor_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"^crm.vendor: unknown CRM vendor 'pipedrive' "
                                          r"\(known: bitrix24, memory\)$"):
        registry.get("pipedrive")


def test_each_vendors_redactions_apply_to_every_log_line() -> None:
    line = "POST https://b24.example/rest/7/s3cr3tToken/crm.item.add.json 200"
    assert redact(line) == "POST https://b24.example/rest/7/***/crm.item.add.json 200"


@pytest.fixture
def memory_settings(tmp_path: Path) -> Iterator[Settings]:
    store = f"registry-{uuid.uuid4()}"
    yield load_settings(
        None,
        crm={"vendor": "memory",
             "memory": {"store": store, "companies": 4, "contacts": 9, "devices": 6, "seed": 2}},
        state={"directory": tmp_path / "state"},
        outbox={"min_free_mb": 0},
    )
    MEMORY.forget(store)


def test_the_memory_vendor_configured_by_name_runs_the_engines(
    memory_settings: Settings,
) -> None:
    """``crm.vendor = "memory"``: the mirror fills the cache from it and the outbox delivers to
    it, through the same runtime the daemon uses (no HTTP anywhere)."""
    assert memory_settings.crm_configured
    memory_settings.check_complete()
    conn = open_cache(memory_settings)
    try:
        engine = build_engine(memory_settings, conn)
        assert isinstance(engine.adapter, CRMAdapter) and engine.adapter.vendor == "memory"
        engine.run_cycle()
        counts = [conn.execute(f"SELECT count(*) FROM {e.value}").fetchone()[0] for e in Entity]
        assert counts == [4, 9, 6]

        key = str(uuid.uuid4())
        device = conn.execute("SELECT crm_id FROM devices ORDER BY crm_id LIMIT 1").fetchone()[0]
        build_intake(memory_settings, lambda: conn).file_request(
            key, {"request_type": "repair", "device_crm_id": device},
            [IncomingFile([PHOTO], "photo.jpg", "image/jpeg")],
        )
        pusher = build_pusher(memory_settings)
        assert isinstance(pusher, ServiceRequestPusher)
        OutboxDelivery(conn, pusher, push_options(memory_settings)).deliver_next()
        [request] = outbox.list_requests(conn)
        assert request.status == "done"
        crm = MEMORY.store(memory_settings.crm.vendor_settings).crm
        [item] = crm.items.values()
        assert item.idempotency_key == key and item.draft.device_crm_id == device
        assert [crm.files[f].sha256 for f in item.file_ids] == [hashlib.sha256(PHOTO).hexdigest()]
    finally:
        close_cache(conn)


def test_a_table_for_another_vendor_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"\[crm.memory\] is set, but crm.vendor is 'bitrix24'"):
        load_settings(None, crm={"memory": {"contacts": 1}})
