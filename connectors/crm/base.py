"""The vendor-neutral CRM adapter interface.

An adapter lists raw vendor records page by page; the engine maps them with the vendor's
declarative mapping (``mappings/<vendor>/``) and applies them. Pages are the unit of checkpointing:
a page's ``resume_after`` is what the engine stores so that an interrupted listing continues after
the last page it committed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, BinaryIO, Protocol, runtime_checkable

from syncd.core.draft import ServiceRequestDraft
from syncd.core.entities import ENTITY_ORDER, Entity

__all__ = [
    "ENTITY_ORDER",
    "CRMAdapter",
    "Capabilities",
    "ChangeTracking",
    "DeletionDetection",
    "DeletionEvents",
    "Entity",
    "Page",
    "RawRecord",
    "ServiceRequestDraft",
    "ServiceRequestPusher",
]

RawRecord = dict[str, Any]


class ChangeTracking(StrEnum):
    """How an upstream exposes changed records."""

    MODIFIED_SINCE = "modified_since"  # filter by a server-side modification timestamp


class DeletionDetection(StrEnum):
    """How an upstream exposes deletions."""

    ID_SWEEP = "id_sweep"  # list every ID cheaply and diff against the cache
    EVENTS = "events"  # a queue of deletion events the adapter can read and acknowledge


@dataclass(frozen=True)
class Capabilities:
    """What an adapter can do; the engine plans its work from this, never from the vendor name."""

    change_tracking: ChangeTracking
    deletion_detection: frozenset[DeletionDetection]
    page_size: int
    rate_limit: str  # a short human description, shown by `syncd status`
    max_ids_per_lookup: int = 50


@dataclass
class Page:
    """One page of a listing."""

    records: list[RawRecord]
    # Opaque token to continue the listing after this page; None when the listing is exhausted.
    resume_after: str | None
    # The upstream's own clock when the listing started (for change cursors; never our clock).
    server_time: datetime | None = None


@dataclass
class DeletionEvents:
    """Deletions reported by the upstream since the last acknowledged batch."""

    deleted: dict[Entity, set[str]] = field(default_factory=dict)
    ack_token: str | None = None  # pass to ``acknowledge_deletions`` after committing


@runtime_checkable
class CRMAdapter(Protocol):
    """What the mirror engine needs from a CRM."""

    vendor: str

    @property
    def capabilities(self) -> Capabilities:
        """What this adapter can do now (deletion events may turn out unavailable)."""

    @property
    def requests_made(self) -> int:
        """Requests sent to the upstream so far (a batch of commands counts once): what the
        upstream's rate limit counts, for progress estimates and ``syncd status``."""

    def server_time(self) -> datetime:
        """The upstream's current time (used to start change cursors)."""

    def list_changed(
        self, entity: Entity, since: datetime | None, resume_after: str | None = None
    ) -> Iterator[Page]:
        """Records of ``entity`` modified after ``since`` (all records when ``since`` is None),
        in a stable order, continuing after ``resume_after`` when given."""

    def list_ids(self, entity: Entity) -> Iterator[list[str]]:
        """Every ID of ``entity``, cheaply, in pages. Raises if the listing cannot be completed."""

    def count(self, entity: Entity) -> int:
        """How many records of ``entity`` the upstream says it has."""

    def get_records(self, entity: Entity, ids: Sequence[str]) -> list[RawRecord]:
        """The records with these IDs (missing IDs are simply absent from the result)."""

    def read_deletions(self) -> DeletionEvents:
        """Pending deletion events. Only called when ``EVENTS`` is among the capabilities."""

    def acknowledge_deletions(self, ack_token: str) -> None:
        """Tell the upstream the events behind ``ack_token`` are applied."""

    def close(self) -> None:
        """Release network resources."""


@runtime_checkable
class ServiceRequestPusher(Protocol):
    """What the outbox delivery needs from a CRM. Every operation is safe to repeat: creates are
    preceded by a lookup of the idempotency key, uploads by a lookup of the file's name."""

    def find_service_request(self, idempotency_key: str) -> str | None:
        """The CRM ID of the request carrying this idempotency key, if it exists."""

    def create_service_request(self, draft: ServiceRequestDraft) -> str:
        """Create the request; returns its CRM ID. May raise AmbiguousWriteError."""

    def find_file(self, name: str, size: int) -> str | None:
        """The CRM file ID of an already uploaded file with this name and size, if any."""

    def upload_file(self, name: str, content: BinaryIO, size: int, content_type: str) -> str:
        """Upload one file (streamed); returns its CRM file ID. May raise AmbiguousWriteError."""

    def attach_files(self, crm_id: str, file_ids: Sequence[str]) -> None:
        """Set the request's files to exactly ``file_ids`` (the whole list, every time)."""

    def close(self) -> None:
        """Release network resources."""
