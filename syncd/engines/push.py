"""Delivering the outbox to the CRM: exactly once in effect.

One attempt at one request, every step safe to repeat:

1. check what the portal sent: the device and contact exist in the mirror, every file is a real,
   allowed, complete file inside the spool (a problem here is permanent: the request goes
   ``dead`` with a reason naming the file or ID, other requests go on);
2. the CRM item: the ID recorded by an earlier attempt, else the item found by the idempotency
   key, else a new one (the key travels with it), and its ID is recorded at once;
3. each file: skipped if an earlier attempt recorded it, else found by its deterministic name,
   else uploaded (streamed); each upload is recorded as its own checkpoint;
4. the item's file list, written whole; then the request is acknowledged (only by the worker
   still holding its lease) and the local files are deleted.

A crash anywhere leaves a state from which the next attempt continues without duplicating.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from syncd.connectors.crm.base import ServiceRequestPusher
from syncd.core.clock import utc_now
from syncd.core.draft import ServiceRequestDraft
from syncd.core.errors import (
    FatalError,
    RetriableError,
    SkippableError,
    SyncdError,
    UpstreamRejectedError,
)
from syncd.engines.spool import (
    FileLimits,
    ValidatedFile,
    open_in_spool,
    remove_spool_file,
    validate_file,
)
from syncd.state import outbox, references, restrictions
from syncd.state.db import data_version

log = logging.getLogger(__name__)
IDLE_CHECK_SECONDS = 0.2  # how often an idle worker asks SQLite whether the outbox changed


class PermanentDeliveryError(SkippableError):
    """The request itself is wrong (unknown device, bad file): retrying cannot help."""


RESTRICTED = (
    "the contact's processing is restricted (syncd subject restrict); the request was not sent "
    "to the CRM"
)
RESTRICTED_AFTER_CREATE = (
    "the contact's processing is restricted (syncd subject restrict); delivery stopped, the CRM "
    "item created before the restriction was left as it is"
)


@dataclass(frozen=True)
class PushOptions:
    """Tunables of delivery (from the ``[outbox]`` settings)."""

    spool: Path
    limits: FileLimits = field(default_factory=FileLimits)
    max_attempts: int = 10
    lease_seconds: float = 300.0
    skip_bad_files: bool = False  # deliver without a rejected file instead of failing
    request_types: frozenset[str] = frozenset(
        ("repair", "maintenance", "installation", "training", "other")
    )


class OutboxDelivery:
    """Delivers outbox requests through one pusher, as worker ``worker_id``."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        pusher: ServiceRequestPusher,
        options: PushOptions,
        *,
        worker_id: str | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.conn = conn
        self.pusher = pusher
        self.options = options
        self.worker_id = worker_id or f"{os.uname().nodename}:{os.getpid()}"
        self.clock = clock

    def deliver_next(self) -> outbox.OutboxRequest | None:
        """Claim and deliver one due request; returns it (as claimed), or None if none is due.

        Errors of the request end in its row (retry_wait or dead); a :class:`FatalError`
        (e.g. the CRM refused our credentials) is raised after recording, for the job's health.
        """
        request = outbox.claim(
            self.conn,
            worker=self.worker_id,
            now=self.clock(),
            lease_seconds=self.options.lease_seconds,
            max_attempts=self.options.max_attempts,
        )
        if request is None:
            self.clean_delivered_files()
            return None
        try:
            crm_id = self._deliver(request)
        except (PermanentDeliveryError, UpstreamRejectedError) as error:
            self._fail(request, str(error), permanent=True)
        except RetriableError as error:
            self._fail(request, str(error), permanent=False, retry_after=error.retry_after)
        except FatalError as error:
            self._fail(request, str(error), permanent=False)
            raise
        except SyncdError as error:
            self._fail(request, str(error), permanent=False)
        except OSError as error:
            # The spool's file system failed us (not the request's fault as far as we know):
            # this request waits and retries, the others go on.
            reason = errno.errorcode.get(error.errno or 0, type(error).__name__)
            self._fail(request, f"local file system error ({reason})", permanent=False)
        else:
            if outbox.ack(
                self.conn, request.id, worker=self.worker_id, crm_id=crm_id, now=self.clock()
            ):
                self._remove_local_files(request)
                log.info(
                    "service request #%d delivered (CRM item %s, %d file(s), attempt %d)",
                    request.id,
                    crm_id,
                    len(request.files),
                    request.attempts,
                )
            else:
                log.warning(
                    "service request #%d: lease lost before acknowledging; another "
                    "worker will find the CRM item by its key",
                    request.id,
                )
        return request

    # -- one attempt ----------------------------------------------------------------------------

    def _deliver(self, request: outbox.OutboxRequest) -> str:
        self._check_stored(request)
        self._check_not_restricted(request)
        draft = self._draft(request)
        validated = self._validate_files(request)
        crm_id = (
            request.crm_id
            or self.pusher.find_service_request(request.idempotency_key)
            or self.pusher.create_service_request(draft)
        )
        if crm_id != request.crm_id:
            outbox.record_crm_id(self.conn, request.id, crm_id=crm_id, now=self.clock())
        file_ids: list[str] = []
        for file in request.files:
            if file.crm_file_id:
                file_ids.append(file.crm_file_id)
                continue
            checked = validated.get(file.id)
            if checked is None:  # rejected, and the settings say deliver without it
                continue
            name = f"{request.idempotency_key}-{file.position}-{checked.original_name}"
            crm_file_id = self.pusher.find_file(name, checked.size)
            if crm_file_id is None:
                with open_in_spool(self.options.spool, file.path) as content:
                    crm_file_id = self.pusher.upload_file(
                        name, content, checked.size, checked.mime_type
                    )
            outbox.record_file_uploaded(
                self.conn, file.id, crm_file_id=crm_file_id, detected_type=checked.mime_type
            )
            file_ids.append(crm_file_id)
            self._keep_lease(request)
        if request.files:
            self.pusher.attach_files(crm_id, file_ids)
        return crm_id

    def _check_stored(self, request: outbox.OutboxRequest) -> None:
        """The door's field checks once more, on the row as stored: a row that did not come
        through the door (written into the table by hand) is dead with its reason, never sent."""
        stored = {
            "idempotency_key": request.idempotency_key,
            "request_type": request.request_type,
            "message": request.message,
            "contact_phone": request.contact_phone,
            "contact_email": request.contact_email,
            "contact_address": request.contact_address,
            "device_crm_id": request.device_crm_id,
            "contact_crm_id": request.contact_crm_id,
            "created_at": request.created_at,
            "files": [
                {
                    "path": f.path,
                    "original_name": f.original_name,
                    "declared_type": f.declared_type,
                    "size": f.size,
                }
                for f in request.files
            ],
        }
        try:
            outbox.validate_request(stored, request_types=self.options.request_types)
        except outbox.OutboxValidationError as error:
            raise PermanentDeliveryError(f"refused as stored: {error}") from None

    def _check_not_restricted(self, request: outbox.OutboxRequest) -> None:
        """A request of a contact whose processing is restricted is ``dead`` with the reason
        before anything reaches the CRM (the door refuses new ones; this catches a request
        queued before the restriction). ``syncd outbox retry`` sends it once it is lifted."""
        contact = request.contact_crm_id
        if contact and restrictions.is_restricted(self.conn, contact):
            raise PermanentDeliveryError(
                RESTRICTED_AFTER_CREATE if request.crm_id else RESTRICTED
            )

    def _draft(self, request: outbox.OutboxRequest) -> ServiceRequestDraft:
        device = None
        if request.device_crm_id:
            device = references.device(self.conn, request.device_crm_id)
            if device is None:
                self._unknown(
                    "devices", request.device_crm_id, f"the device {request.device_crm_id}"
                )
        company = device.company_id if device else None
        if request.contact_crm_id:
            contact = references.contact(self.conn, request.contact_crm_id)
            if contact is None:
                self._unknown(
                    "contacts", request.contact_crm_id, f"the contact {request.contact_crm_id}"
                )
            company = company or contact.company_id
        what = (
            " ".join(str(part) for part in (device.brand, device.model) if part) if device else ""
        )
        serial = f" (SN {device.serial_number})" if device and device.serial_number else ""
        title = f"{request.request_type.capitalize()}: {what or 'device'}{serial}"
        return ServiceRequestDraft(
            idempotency_key=request.idempotency_key,
            title=title[:255],
            request_type=request.request_type,
            message=request.message,
            contact_phone=request.contact_phone,
            contact_email=request.contact_email,
            contact_address=request.contact_address,
            contact_crm_id=request.contact_crm_id,
            company_crm_id=company,
            device_crm_id=request.device_crm_id,
        )

    def _unknown(self, entity: str, crm_id: str, what: str) -> NoReturn:
        """A reference the mirror does not know: permanent once that entity has been mirrored,
        but only a wait while the first mirror after installation is still running."""
        if not references.unknown_reference(self.conn, entity, crm_id):
            raise RetriableError(f"waiting for the first mirror of {entity} to check {what}")
        raise PermanentDeliveryError(f"{what} is not in the CRM mirror")

    def _validate_files(self, request: outbox.OutboxRequest) -> dict[int, ValidatedFile]:
        if len(request.files) > self.options.limits.max_files_per_request:
            raise PermanentDeliveryError(
                f"{len(request.files)} files attached; at most "
                f"{self.options.limits.max_files_per_request} are allowed"
            )
        checked: dict[int, ValidatedFile] = {}
        for file in request.files:
            if file.crm_file_id:
                continue  # delivered by an earlier attempt; its local copy may be gone
            try:
                if file.size is None:
                    raise PermanentDeliveryError(
                        f"file #{file.position}: no size was recorded (needed to tell a "
                        "complete file from a half-written one)"
                    )
                checked[file.id] = validate_file(
                    self.options.spool,
                    file.path,
                    file.original_name,
                    file.declared_type or "",
                    file.size,
                    self.options.limits,
                    label=f"file #{file.position}",
                )
            except SkippableError as error:
                outbox.reject_file(self.conn, file.id, error=str(error))
                if not self.options.skip_bad_files:
                    raise PermanentDeliveryError(f"rejected {error}") from None
                log.warning(
                    "service request #%d: file #%d left out: %s", request.id, file.position, error
                )
        return checked

    def _keep_lease(self, request: outbox.OutboxRequest) -> None:
        if not outbox.extend_lease(
            self.conn,
            request.id,
            worker=self.worker_id,
            now=self.clock(),
            lease_seconds=self.options.lease_seconds,
        ):
            raise RetriableError("lost the lease during delivery; another worker continues")

    def _fail(
        self,
        request: outbox.OutboxRequest,
        error: str,
        *,
        permanent: bool,
        retry_after: float | None = None,
    ) -> None:
        status = outbox.fail(
            self.conn,
            request.id,
            worker=self.worker_id,
            error=error,
            permanent=permanent,
            now=self.clock(),
            max_attempts=self.options.max_attempts,
            retry_after=retry_after,
        )
        if status == "dead":
            log.warning(
                "service request #%d is dead after %d attempt(s): %s",
                request.id,
                request.attempts,
                error,
            )
        else:
            log.info(
                "service request #%d attempt %d failed (%s); will retry",
                request.id,
                request.attempts,
                error,
            )

    def _remove_local_files(self, request: outbox.OutboxRequest) -> None:
        """The CRM has the files now; the privacy policy says the local copies go."""
        for file in request.files:
            self._delete_local(outbox.LocalFile(file.id, request.id, file.position, file.path))

    def _delete_local(self, file: outbox.LocalFile) -> None:
        try:
            remove_spool_file(self.options.spool, file.path)
        except (OSError, SyncdError) as error:
            log.warning(
                "service request #%d: could not delete local file #%d: %s",
                file.request_id,
                file.position,
                type(error).__name__,
            )
            return
        outbox.mark_file_deleted(self.conn, file.file_id)

    # -- housekeeping -------------------------------------------------------------------------

    def clean_delivered_files(self) -> int:
        """Delete local copies left behind by a delivery that was acknowledged just before the
        process died (deletion follows the acknowledgement, so it must be repeatable)."""
        left = outbox.delivered_files_on_disk(self.conn)
        for file in left:
            self._delete_local(file)
        return len(left)


def wait_for_outbox_change(conn: sqlite3.Connection, stop: threading.Event, timeout: float) -> bool:
    """Sleep until another connection commits to the database (``PRAGMA data_version`` moves),
    ``stop`` is set, or ``timeout`` passes. True when something changed."""
    start = data_version(conn)
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        if data_version(conn) != start:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        stop.wait(min(IDLE_CHECK_SECONDS, remaining))
    return False
