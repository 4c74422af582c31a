"""The in-memory CRM as a vendor plug-in (see :mod:`syncd.connectors.crm.vendor`).

Its records live in this process only, one store per ``crm.memory.store`` name, shared by every
lane's adapter and pusher; they are gone when the process ends. It serves tests and trials of
the engines without HTTP, configured by name like any vendor: ``[crm] vendor = "memory"``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from pydantic import BaseModel

from syncd.connectors.crm.memory.adapter import MemoryAdapter, MemoryRecords
from syncd.connectors.crm.memory.pusher import MemoryCRM, MemoryPusher
from syncd.connectors.crm.memory.settings import MemorySettings
from syncd.connectors.crm.vendor import Connection, FakeCrm, Redaction, Secret, own_table

if TYPE_CHECKING:
    from syncd.mappings.loader import MappingSet

__all__ = ["VENDOR", "MemoryStore", "MemoryVendor"]


@dataclass
class MemoryStore:
    """One in-memory CRM: its records (for the mirror) and its service requests (for push)."""

    records: MemoryRecords
    crm: MemoryCRM


def _table(settings: BaseModel) -> MemorySettings:
    return own_table(settings, MemorySettings)


class MemoryVendor:
    """A CRM kept in Python dicts, behind the same protocols as a real vendor."""

    name = "memory"
    title = "in-memory CRM"
    settings_model: type[BaseModel] = MemorySettings
    secrets: Final[Mapping[str, Secret]] = MappingProxyType({})
    never_echo: frozenset[str] = frozenset()
    redactions: tuple[Redaction, ...] = ()
    mappings = "memory"

    def __init__(self) -> None:
        self._stores: dict[str, MemoryStore] = {}
        self._lock = threading.Lock()

    def store(self, settings: BaseModel) -> MemoryStore:
        """The store these settings name, made and seeded on first use."""
        table = _table(settings)
        with self._lock:
            store = self._stores.get(table.store)
            if store is None:
                records = MemoryRecords()
                records.seed(
                    companies=table.companies, contacts=table.contacts, devices=table.devices,
                    seed=table.seed,
                )
                store = self._stores[table.store] = MemoryStore(records, MemoryCRM())
            return store

    def forget(self, store_name: str) -> None:
        """Drop a store (its records are gone; the next use seeds a new one)."""
        with self._lock:
            self._stores.pop(store_name, None)

    def is_configured(self, settings: BaseModel) -> bool:
        return True

    def check(self, settings: BaseModel, secret: Callable[[str], str | None]) -> None:
        _table(settings)

    def where(self, settings: BaseModel) -> str:
        return f"in this process (store {_table(settings).store!r})"

    def build_adapter(self, connection: Connection, mappings: MappingSet) -> MemoryAdapter:
        return MemoryAdapter(self.store(connection.settings).records)

    def build_pusher(self, connection: Connection) -> MemoryPusher:
        return MemoryPusher(self.store(connection.settings).crm)

    def check_online(self, connection: Connection) -> str:
        store = self.store(connection.settings)
        held = sum(len(records) for records in store.records.records.values())
        return f"{self.where(connection.settings)}, holding {held} records"

    def fake(
        self, *, seed: int, companies: int, contacts: int, devices: int
    ) -> AbstractContextManager[FakeCrm] | None:
        return None  # it is its own fake; the demo tells its story against an HTTP vendor


VENDOR: Final = MemoryVendor()
