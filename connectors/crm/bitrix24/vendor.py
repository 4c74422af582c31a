"""Bitrix24 as a CRM vendor plug-in (see :mod:`syncd.connectors.crm.vendor`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel

from syncd.connectors.crm.bitrix24.settings import Bitrix24Settings
from syncd.connectors.crm.vendor import Connection, Redaction, Secret, own_table
from syncd.core.entities import Entity
from syncd.core.errors import ConfigError

if TYPE_CHECKING:
    from syncd.connectors.crm.bitrix24.adapter import Bitrix24Adapter
    from syncd.connectors.crm.bitrix24.client import Bitrix24Client
    from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
    from syncd.connectors.crm.bitrix24.push import Bitrix24Pusher
    from syncd.mappings.loader import MappingSet

__all__ = ["VENDOR", "Bitrix24Vendor"]

_TOKEN_CREDENTIAL: Final = "crm_webhook_token"
_NO_TOKEN: Final = (
    "crm.bitrix24.webhook_token_file: no webhook token (set crm.bitrix24.webhook_token_file "
    "or provide the systemd credential crm_webhook_token)"
)
_NO_URL: Final = (
    "crm.bitrix24.url: not set (the CRM webhook base URL, e.g. "
    "https://example.bitrix24.eu/rest/1/)"
)


def _table(settings: BaseModel) -> Bitrix24Settings:
    return own_table(settings, Bitrix24Settings)


class Bitrix24Vendor:
    """Bitrix24 through an incoming webhook: REST over HTTPS, a token in the URL path."""

    name = "bitrix24"
    title = "Bitrix24"
    settings_model: type[BaseModel] = Bitrix24Settings
    secrets: Final[Mapping[str, Secret]] = {
        "webhook_token": Secret(
            _TOKEN_CREDENTIAL, re.compile(r"[A-Za-z0-9_.~-]+"), "a webhook token"
        ),
    }
    never_echo = frozenset({"url"})
    # https://portal/rest/<user id>/<token>/<method> -> /rest/<user id>/***/<method>
    redactions = (
        Redaction("/rest/", re.compile(r"(/rest/\d+/)(?!\*\*\*(?:[/?#\s]|$))[^/\s?#\"'<>]+"),
                  r"\1***"),
    )
    mappings = "bitrix24"

    def is_configured(self, settings: BaseModel) -> bool:
        return _table(settings).url is not None

    def check(self, settings: BaseModel, secret: Callable[[str], str | None]) -> None:
        table = _table(settings)
        token = secret("webhook_token")
        if table.url and token is None:
            raise ConfigError(_NO_TOKEN)
        if not table.url and table.webhook_token_file is not None:
            raise ConfigError(
                "crm.bitrix24.url: not set, although crm.bitrix24.webhook_token_file is (the "
                "CRM webhook base URL, e.g. https://example.bitrix24.eu/rest/1/)"
            )

    def where(self, settings: BaseModel) -> str:
        url = _table(settings).url or ""
        return url.split("/")[2] if url.count("/") >= 2 else "(not configured)"

    def _client(self, connection: Connection) -> Bitrix24Client:
        from syncd.connectors.crm.bitrix24.client import Bitrix24Client
        from syncd.connectors.http import RetryPolicy

        table = _table(connection.settings)
        if not table.url:
            raise ConfigError(_NO_URL)
        token = connection.secret("webhook_token")
        if not token:
            raise ConfigError(_NO_TOKEN)
        return Bitrix24Client(
            f"{table.url.rstrip('/')}/{token}/",
            connect_timeout=connection.connect_timeout,
            timeout=connection.timeout,
            retry=RetryPolicy(max_attempts=connection.max_attempts, stop=connection.stop),
            budget=connection.budget,
            priority=connection.priority,
            on_request=connection.on_request,
        )

    def build_adapter(self, connection: Connection, mappings: MappingSet) -> Bitrix24Adapter:
        from syncd.connectors.crm.bitrix24.adapter import Bitrix24Adapter
        from syncd.connectors.crm.bitrix24.chains import BatchSizing

        table = _table(connection.settings)
        return Bitrix24Adapter(
            self._client(connection),
            mappings,
            devices_entity_type_id=table.devices_entity_type_id,
            deletion_events=connection.deletion_events,
            sizing=BatchSizing(
                max_commands=table.batch_commands,
                max_bytes=table.batch_max_bytes,
                max_seconds=table.batch_max_seconds,
            ),
        )

    def build_pusher(self, connection: Connection) -> Bitrix24Pusher:
        from syncd.connectors.crm.bitrix24.push import Bitrix24Pusher
        from syncd.mappings.outbound import load_service_request_mapping

        table = _table(connection.settings)
        return Bitrix24Pusher(
            self._client(connection),
            load_service_request_mapping(self.mappings),
            entity_type_id=table.service_requests_entity_type_id,
            disk_folder_id=table.disk_folder_id,
        )

    def check_online(self, connection: Connection) -> str:
        from dataclasses import replace

        client = self._client(replace(connection, max_attempts=1, budget=None))
        try:
            client.call(
                "crm.contact.list",
                {"select": ["ID"], "order": {"ID": "ASC"}, "filter": {">ID": 0}, "start": -1},
            )
        finally:
            client.close()
        return (
            f"reachable at {self.where(connection.settings)}; the webhook token is accepted "
            "with the crm scope"
        )

    @contextmanager
    def fake(
        self, *, seed: int, companies: int, contacts: int, devices: int
    ) -> Iterator[FakeBitrix24Crm]:
        from syncd.connectors.crm.bitrix24.fake import FakeBitrix24

        with FakeBitrix24(
            seed=seed, companies=companies, contacts=contacts, devices=devices,
            token="demo-webhook-token",
        ) as fake:
            yield FakeBitrix24Crm(fake)


class FakeBitrix24Crm:
    """The loopback fake Bitrix24 as the demo drives it (:class:`~syncd.connectors.crm.vendor.
    FakeCrm`)."""

    title = "fake Bitrix24"

    def __init__(self, fake: FakeBitrix24) -> None:
        self.fake = fake

    @property
    def request_count(self) -> int:
        return self.fake.request_count

    def crm_settings(self, directory: Path) -> dict[str, Any]:
        token_file = directory / _TOKEN_CREDENTIAL
        token_file.write_text(self.fake.token)
        token_file.chmod(0o600)
        return {
            "vendor": VENDOR.name,
            "bitrix24": {"url": self.fake.base_url, "webhook_token_file": token_file},
            "requests_per_second": 0,  # the in-process fake has no rate limit
        }

    def describe(self) -> str:
        return f"listening on {self.fake.base_url} (webhook token from a file, as in production)"

    def record_ids(self, entity: Entity) -> list[str]:
        return sorted(self.fake.records(entity.value), key=int)

    def mutate_random(self, *, creates: int, updates: int, deletes: int, seed: int) -> str:
        summary = self.fake.mutate_random(
            creates=creates, updates=updates, deletes=deletes, seed=seed
        )
        return "; ".join(
            f"{kind} " + ", ".join(f"{len(ids)} {entity}" for entity, ids in per.items() if ids)
            for kind, per in summary.items()
            if any(per.values())
        )

    def delete(self, entity: Entity, record_id: str) -> None:
        self.fake.delete(entity.value, record_id)

    def adapter_view(self) -> dict[str, list[dict[str, Any]]]:
        from syncd.connectors.crm.bitrix24.fake_view import adapter_view

        return adapter_view(self.fake)

    def lose_next_create_answer(self) -> None:
        self.fake.faults.add("drop_after_processing", times=1, method="crm.item.add")

    def service_requests(self) -> dict[str, list[str]]:
        return {
            str(item.get("xmlId")): [str(f["name"]) for f in item["_disk_files"]]
            for item in self.fake.service_requests().values()
        }

    def service_request_count(self) -> int:
        return len(self.fake.service_requests())


VENDOR: Final = Bitrix24Vendor()
