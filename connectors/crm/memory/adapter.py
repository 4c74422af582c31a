"""The in-memory CRM's records and the mirror adapter over them (:class:`MemoryAdapter`).

Records are plain dicts in the memory vendor's own shape (``mappings/memory/*.toml`` maps them:
the canonical field names, an ``id`` and an ``updated_at``). The CRM has its own clock, which
moves forward one second with every change, so "changed since" listings are exact; deletions are
queued as events the adapter reads and acknowledges, as an app-context Bitrix24 would.

Fault hooks for engine tests, in the style of :meth:`MemoryCRM.fail
<syncd.connectors.crm.memory.pusher.MemoryCRM.fail>`: :meth:`MemoryRecords.fail` arms a listing
that ends early without saying so (``truncated``) or breaks off with an error (``unavailable``)
after a number of pages; :attr:`MemoryRecords.listings` records every listing asked for (where it
resumed). A record that cannot be mapped needs no hook: give it a bad value
(``records.update(Entity.CONTACTS, "61", birth_date="31.02.1985")``).
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from syncd.connectors.crm.base import (
    Capabilities,
    ChangeTracking,
    DeletionDetection,
    DeletionEvents,
    Page,
    RawRecord,
)
from syncd.core.clock import iso, parse_iso
from syncd.core.entities import Entity
from syncd.core.errors import UpstreamUnavailableError

PAGE_SIZE = 50
CALL_LOG_LIMIT = 10_000  # the newest listings (and pusher calls) kept for inspection

ListingOperation = Literal["list_changed", "list_ids"]
ListingFaultKind = Literal["truncated", "unavailable"]


@dataclass(frozen=True)
class Listing:
    """One listing the adapter was asked for: which, of what, changed since when (``list_changed``
    only) and after which resume point (None: from the start)."""

    operation: ListingOperation
    entity: Entity
    since: datetime | None = None
    resume_after: str | None = None


@dataclass
class _ListingFault:
    operation: ListingOperation
    kind: ListingFaultKind
    after_pages: int
    entity: Entity | None
    times: int


class MemoryRecords:
    """The companies, contacts and devices the in-memory CRM holds. Thread-safe."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self.records: dict[Entity, dict[str, dict[str, Any]]] = {e: {} for e in Entity}
        self.deletions: list[tuple[int, Entity, str]] = []  # (event id, entity, record id)
        self.listings: list[Listing] = []  # every listing asked for, in order
        self._ids = itertools.count(1)
        self._events = itertools.count(1)
        self._faults: list[_ListingFault] = []
        self.lock = threading.Lock()

    def fail(
        self,
        operation: ListingOperation,
        kind: ListingFaultKind,
        *,
        after_pages: int = 0,
        entity: Entity | None = None,
        times: int = 1,
    ) -> None:
        """Arm a fault for the next ``times`` listings by ``operation`` (of ``entity``, or of
        any entity): each yields ``after_pages`` pages as usual, then ``truncated`` ends it
        quietly as if nothing followed (a CRM that cuts a listing short without saying so: the
        delete guard must notice), and ``unavailable`` raises UpstreamUnavailableError instead of
        the next page (a listing, say a full resync, broken off halfway)."""
        if after_pages < 0 or times < 1:
            raise ValueError("after_pages must be >= 0 and times >= 1")
        with self.lock:
            self._faults.append(_ListingFault(operation, kind, after_pages, entity, times))

    def start_listing(self, listing: Listing) -> _ListingFault | None:
        """Record ``listing`` and take the fault armed for it, if any (see :meth:`fail`)."""
        with self.lock:
            self.listings.append(listing)
            if len(self.listings) > CALL_LOG_LIMIT:  # a long trial must not grow without end
                del self.listings[: len(self.listings) - CALL_LOG_LIMIT]
            for fault in self._faults:
                if (
                    fault.operation == listing.operation
                    and fault.entity in (None, listing.entity)
                    and fault.times > 0
                ):
                    fault.times -= 1
                    return fault
        return None

    def tick(self) -> datetime:
        """The CRM's clock, one second on (every change gets its own time)."""
        self.now += timedelta(seconds=1)
        return self.now

    def create(self, entity: Entity, **fields: Any) -> str:
        with self.lock:
            record_id = str(next(self._ids))
            self.records[entity][record_id] = {
                **fields, "id": record_id, "updated_at": iso(self.tick())
            }
            return record_id

    def update(self, entity: Entity, record_id: str, **fields: Any) -> None:
        with self.lock:
            self.records[entity][record_id].update(fields, updated_at=iso(self.tick()))

    def seed(self, *, companies: int, contacts: int, devices: int, seed: int = 1) -> None:
        """Fill the CRM with linked, plausible records (made-up names, no real people)."""
        dice = random.Random(seed)
        company_ids = [
            self.create(
                Entity.COMPANIES,
                name=f"Salon {n}",
                legal_name=f"Salon {n} OÜ",
                registration_number=f"{10_000_000 + n}",
                vat_number=f"EE{100_000_000 + n}",
                country=dice.choice(("EE", "LV", "LT")),
                addresses=[{"type": "registered", "line1": f"Street {n}", "city": "Tallinn"}],
                phones=[{"type": "work", "value": f"+372 5000 {n:04d}"}],
                emails=[{"type": "work", "value": f"info{n}@salon.example"}],
            )
            for n in range(companies)
        ]
        contact_ids = [
            self.create(
                Entity.CONTACTS,
                first_name=f"Client{n}",
                last_name="Example",
                birth_date="1990-01-01",
                emails=[{"type": "personal", "value": f"client{n}@mail.example"}],
                phones=[{"type": "mobile", "value": f"+372 5100 {n:04d}"}],
                languages=["et", "en"],
                addresses=[],
                newsletters=["news"] if n % 2 else [],
                company_id=dice.choice(company_ids) if company_ids else None,
            )
            for n in range(contacts)
        ]
        for n in range(devices):
            self.create(
                Entity.DEVICES,
                name=f"Laser {n}",
                brand="Candela",
                model="GentleMax Pro",
                serial_number=f"SN{n:06d}",
                warranty_start="2025-06-01",
                rental=bool(n % 3 == 0),
                handpieces=["HP-755"],
                location="Tallinn",
                producer="Candela",
                company_id=dice.choice(company_ids) if company_ids else None,
                contact_id=dice.choice(contact_ids) if contact_ids else None,
            )

    def delete(self, entity: Entity, record_id: str) -> None:
        with self.lock:
            del self.records[entity][record_id]
            self.deletions.append((next(self._events), entity, record_id))
            self.tick()


class MemoryAdapter:
    """Implements :class:`syncd.connectors.crm.base.CRMAdapter` over :class:`MemoryRecords`."""

    vendor = "memory"

    def __init__(self, records: MemoryRecords, *, page_size: int = PAGE_SIZE) -> None:
        self.store = records
        self.page_size = page_size
        self.requests_made = 0  # one per page, count, lookup or event read

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            change_tracking=ChangeTracking.MODIFIED_SINCE,
            deletion_detection=frozenset({DeletionDetection.ID_SWEEP, DeletionDetection.EVENTS}),
            page_size=self.page_size,
            rate_limit="none (in memory)",
        )

    def server_time(self) -> datetime:
        self.requests_made += 1
        with self.store.lock:
            return self.store.now

    def list_changed(
        self, entity: Entity, since: datetime | None, resume_after: str | None = None
    ) -> Iterator[Page]:
        fault = self.store.start_listing(Listing("list_changed", entity, since, resume_after))
        started = self.server_time()
        after = int(resume_after) if resume_after else 0
        for pages in itertools.count():
            if _broken_off(fault, entity, pages):
                return
            self.requests_made += 1
            with self.store.lock:
                ids = sorted(
                    int(i)
                    for i, record in self.store.records[entity].items()
                    if int(i) > after
                    and (since is None or parse_iso(record["updated_at"]) > since)
                )[: self.page_size + 1]
                page = [dict(self.store.records[entity][str(i)]) for i in ids[: self.page_size]]
            more = len(ids) > self.page_size
            after = ids[min(len(ids), self.page_size) - 1] if ids else after
            yield Page(records=page, resume_after=str(after) if more else None,
                       server_time=started)
            if not more:
                return

    def list_ids(self, entity: Entity) -> Iterator[list[str]]:
        fault = self.store.start_listing(Listing("list_ids", entity))
        with self.store.lock:
            ids = sorted(self.store.records[entity], key=int)
        for pages, start in enumerate(range(0, len(ids), self.page_size)):
            if _broken_off(fault, entity, pages):
                return
            self.requests_made += 1
            yield ids[start : start + self.page_size]

    def count(self, entity: Entity) -> int:
        self.requests_made += 1
        with self.store.lock:
            return len(self.store.records[entity])

    def get_records(self, entity: Entity, ids: Sequence[str]) -> list[RawRecord]:
        self.requests_made += 1
        with self.store.lock:
            held = self.store.records[entity]
            return [dict(held[i]) for i in ids if i in held]

    def read_deletions(self) -> DeletionEvents:
        self.requests_made += 1
        with self.store.lock:
            events = list(self.store.deletions)
        if not events:
            return DeletionEvents()
        deleted: dict[Entity, set[str]] = {}
        for _event, entity, record_id in events:
            deleted.setdefault(entity, set()).add(record_id)
        return DeletionEvents(deleted=deleted, ack_token=str(events[-1][0]))

    def acknowledge_deletions(self, ack_token: str) -> None:
        last = int(ack_token)
        with self.store.lock:
            self.store.deletions = [e for e in self.store.deletions if e[0] > last]

    def close(self) -> None:
        """Nothing to release."""


def _broken_off(fault: _ListingFault | None, entity: Entity, pages: int) -> bool:
    """Whether an armed listing ``fault`` ends the listing before its page number ``pages``
    (counted from 0): True when truncated; raises when the CRM is to be unavailable."""
    if fault is None or pages < fault.after_pages:
        return False
    if fault.kind == "unavailable":
        raise UpstreamUnavailableError(
            f"memory CRM: {fault.operation} of {entity.value} failed after {pages} page(s)"
        )
    return True
