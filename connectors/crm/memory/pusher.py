"""The in-memory CRM's service requests and files (:class:`MemoryCRM`), and the pusher over it
(:class:`MemoryPusher`)."""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

from syncd.connectors.crm.memory.adapter import CALL_LOG_LIMIT
from syncd.core.draft import ServiceRequestDraft
from syncd.core.errors import (
    AmbiguousWriteError,
    AuthError,
    RateLimitedError,
    UpstreamUnavailableError,
)

Operation = Literal["find", "create", "find_file", "upload", "attach"]
FaultKind = Literal["lost_answer", "unavailable", "rate_limited", "rejected_credentials"]
_CHUNK = 64 * 1024


@dataclass
class StoredItem:
    """A service request as the CRM holds it."""

    idempotency_key: str
    draft: ServiceRequestDraft
    file_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StoredFile:
    """An uploaded file: its name, size and the SHA-256 of its bytes."""

    name: str
    size: int
    sha256: str


@dataclass
class _Fault:
    operation: Operation
    kind: FaultKind
    times: int
    retry_after: float | None
    after: int = 0


class MemoryCRM:
    """What the in-memory CRM holds, and the faults armed against it. Thread-safe."""

    def __init__(self) -> None:
        self.items: dict[str, StoredItem] = {}
        self.files: dict[str, StoredFile] = {}
        self.calls: list[Operation] = []
        self._ids = itertools.count(1)
        self._faults: list[_Fault] = []
        self.lock = threading.Lock()

    def fail(
        self,
        operation: Operation,
        kind: FaultKind,
        *,
        times: int = 1,
        retry_after: float | None = None,
        after: int = 0,
    ) -> None:
        """Arm a fault for ``times`` calls of ``operation``, once ``after`` calls of it have gone
        through as usual: ``lost_answer`` does the write and then loses its answer
        (AmbiguousWriteError); ``unavailable`` fails before doing anything
        (UpstreamUnavailableError); ``rate_limited`` refuses with ``retry_after``
        (RateLimitedError); ``rejected_credentials`` refuses our credentials (AuthError)."""
        if times < 1 or after < 0:
            raise ValueError("times must be >= 1 and after >= 0")
        with self.lock:
            self._faults.append(_Fault(operation, kind, times, retry_after, after))

    def next_id(self) -> str:
        return str(next(self._ids))

    def take_fault(self, operation: Operation) -> _Fault | None:
        with self.lock:
            self.calls.append(operation)
            if len(self.calls) > CALL_LOG_LIMIT:  # a long trial must not grow without end
                del self.calls[: len(self.calls) - CALL_LOG_LIMIT]
            taken = None
            for fault in self._faults:
                if fault.operation != operation or fault.times <= 0:
                    continue
                if fault.after > 0:
                    fault.after -= 1  # every fault still waiting counts the call
                elif taken is None:
                    fault.times -= 1
                    taken = fault
            return taken


class MemoryPusher:
    """Implements :class:`syncd.connectors.crm.base.ServiceRequestPusher` over a
    :class:`MemoryCRM`."""

    def __init__(self, crm: MemoryCRM) -> None:
        self.crm = crm

    def close(self) -> None:
        """Nothing to release."""

    def find_service_request(self, idempotency_key: str) -> str | None:
        self._before("find")
        with self.crm.lock:
            found = [
                crm_id
                for crm_id, item in self.crm.items.items()
                if item.idempotency_key == idempotency_key
            ]
        return min(found, key=int) if found else None

    def create_service_request(self, draft: ServiceRequestDraft) -> str:
        fault = self._before("create")
        with self.crm.lock:
            crm_id = self.crm.next_id()
            self.crm.items[crm_id] = StoredItem(draft.idempotency_key, draft)
        self._after(fault, "create")
        return crm_id

    def find_file(self, name: str, size: int) -> str | None:
        self._before("find_file")
        with self.crm.lock:
            found = [i for i, f in self.crm.files.items() if f.name == name and f.size == size]
        return min(found, key=int) if found else None

    def upload_file(self, name: str, content: BinaryIO, size: int, content_type: str) -> str:
        fault = self._before("upload")
        digest, stored = hashlib.sha256(), 0
        while chunk := content.read(_CHUNK):  # streamed, as a real upload is
            digest.update(chunk)
            stored += len(chunk)
        with self.crm.lock:
            file_id = self.crm.next_id()
            self.crm.files[file_id] = StoredFile(name, stored, digest.hexdigest())
        self._after(fault, "upload")
        return file_id

    def attach_files(self, crm_id: str, file_ids: Sequence[str]) -> None:
        fault = self._before("attach")
        with self.crm.lock:
            self.crm.items[crm_id].file_ids = list(file_ids)  # the whole list, every time
        self._after(fault, "attach")

    def _before(self, operation: Operation) -> _Fault | None:
        fault = self.crm.take_fault(operation)
        if fault is None or fault.kind == "lost_answer":
            return fault
        if fault.kind == "rate_limited":
            raise RateLimitedError(
                f"memory CRM: {operation} refused (rate limit)", retry_after=fault.retry_after
            )
        if fault.kind == "rejected_credentials":
            raise AuthError(f"memory CRM: {operation} refused (credentials rejected)")
        raise UpstreamUnavailableError(f"memory CRM: {operation} failed (unavailable)")

    @staticmethod
    def _after(fault: _Fault | None, operation: Operation) -> None:
        if fault is not None and fault.kind == "lost_answer":
            raise AmbiguousWriteError(f"memory CRM: the answer to {operation} was lost")
