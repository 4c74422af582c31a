"""What a CRM vendor plug-in is: one object per ``connectors/crm/<vendor>/`` that syncd looks up
by name (:mod:`syncd.connectors.crm.registry`) and never by import.

A vendor brings its settings model (the ``[crm.<vendor>]`` table), the secrets it reads from
files, the patterns that scrub its credentials from logs, the name of its mapping folder
(``mappings/<vendor>/``), builders for its adapter and pusher, a one-call online check and,
optionally, a fake of itself for the demo. The engines see only the adapter and pusher
protocols of :mod:`syncd.connectors.crm.base`.

A vendor's module is imported when the configuration is parsed, so it must import only what its
settings need; its builders import the client code when called.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from syncd.connectors.budget import Priority, RequestBudget
    from syncd.connectors.crm.base import CRMAdapter, ServiceRequestPusher
    from syncd.core.entities import Entity
    from syncd.mappings.loader import MappingSet

__all__ = ["Connection", "CrmVendor", "FakeCrm", "Redaction", "Secret", "own_table"]

TableT = TypeVar("TableT", bound=BaseModel)


def own_table(settings: BaseModel, model: type[TableT]) -> TableT:
    """``settings`` as the vendor's own settings model (what syncd hands a vendor is always its
    own table; anything else is a programming error)."""
    if not isinstance(settings, model):
        raise TypeError(f"expected {model.__name__}, got {type(settings).__name__}")
    return settings


@dataclass(frozen=True)
class Secret:
    """A secret a vendor reads from a file: the systemd credential it comes as, and the shape a
    usable value has (checked on reading, without ever echoing the value)."""

    credential: str
    shape: re.Pattern[str]
    what: str  # "a webhook token": for the message when the file holds something else


@dataclass(frozen=True)
class Redaction:
    """A credential pattern scrubbed from every log line: where ``needle`` occurs, ``pattern``
    is replaced by ``replacement`` (the needle keeps the common case cheap)."""

    needle: str
    pattern: re.Pattern[str]
    replacement: str


@dataclass(frozen=True)
class Connection:
    """What syncd hands a vendor's builders: the vendor's own settings, its secrets (read from
    their files on request) and the vendor-neutral ``[crm]`` tuning."""

    settings: BaseModel
    secret: Callable[[str], str | None]
    connect_timeout: float
    timeout: float
    max_attempts: int
    deletion_events: bool
    stop: threading.Event | None = None
    budget: RequestBudget | None = None
    priority: Priority = "mirror"
    on_request: Callable[[], None] | None = None


class FakeCrm(Protocol):
    """A vendor's fake of itself, running, as the demo drives it."""

    title: str
    request_count: int

    def crm_settings(self, directory: Path) -> dict[str, Any]:
        """The ``[crm]`` table (with the vendor's own) that points syncd at this fake; secrets
        are written as files under ``directory``."""

    def describe(self) -> str:
        """Where it listens and how syncd authenticates, in a few words."""

    def record_ids(self, entity: Entity) -> list[str]:
        """The IDs of ``entity`` it holds, in ascending order."""

    def mutate_random(self, *, creates: int, updates: int, deletes: int, seed: int) -> str:
        """Change random records; a short summary of what changed."""

    def delete(self, entity: Entity, record_id: str) -> None:
        """Delete one record."""

    def adapter_view(self) -> dict[str, list[dict[str, Any]]]:
        """Every record of every entity as the vendor's adapter delivers it."""

    def lose_next_create_answer(self) -> None:
        """Create the next service request but lose the answer (a dropped connection)."""

    def service_requests(self) -> dict[str, list[str]]:
        """Every service request it holds, by idempotency key: its attached file names (one
        entry per request, so a duplicate shows as a missing key count)."""

    def service_request_count(self) -> int:
        """How many service requests it holds (duplicates included)."""


class CrmVendor(Protocol):
    """One CRM vendor. Attributes describe it; the methods build its parts."""

    name: str  # the registry key and the [crm.<name>] table
    title: str  # for people: "Bitrix24"
    settings_model: type[BaseModel]
    # secret key -> how it comes; the file setting is "<key>_file" in the table
    secrets: Mapping[str, Secret]
    # keys of the table whose values never appear in an error message
    never_echo: frozenset[str]
    redactions: tuple[Redaction, ...]
    mappings: str  # the folder under mappings/

    def is_configured(self, settings: BaseModel) -> bool:
        """Whether this table configures a CRM at all (else syncd runs without one)."""

    def check(self, settings: BaseModel, secret: Callable[[str], str | None]) -> None:
        """Raise ConfigError (one line naming ``crm.<name>.<key>``) for a table syncd could
        not run with, reading the secrets through ``secret``."""

    def where(self, settings: BaseModel) -> str:
        """Where the CRM is, without credentials (a host name), for status and errors."""

    def build_adapter(self, connection: Connection, mappings: MappingSet) -> CRMAdapter:
        """The mirror's adapter."""

    def build_pusher(self, connection: Connection) -> ServiceRequestPusher:
        """The outbox's pusher (its own client: the push lane never waits on the mirror's)."""

    def check_online(self, connection: Connection) -> str:
        """One cheap call proving the CRM reachable and the credentials accepted; returns what
        was found. Raises AuthError, RetriableError or SyncdError otherwise."""

    def fake(
        self, *, seed: int, companies: int, contacts: int, devices: int
    ) -> AbstractContextManager[FakeCrm] | None:
        """A seeded fake of this CRM for the demo, or None when the vendor has none."""
