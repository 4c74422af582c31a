"""The service-request pusher contract: what every CRM's pusher must do for the outbox to
deliver exactly once, whatever the vendor.

Like the adapter contract (``tests/test_crm_contract.py``): a base class of tests that use only
the :class:`~syncd.connectors.crm.base.ServiceRequestPusher` protocol plus an ``upstream`` that
reads
what the CRM holds and loses the answer to one write. Bitrix24 (through its HTTP fake) and the
in-memory CRM run every test unchanged.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, Protocol

import pytest

from syncd.config import Settings, load_settings
from syncd.connectors.crm.base import ServiceRequestPusher
from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.connectors.crm.memory import MemoryCRM, MemoryPusher
from syncd.connectors.crm.memory.vendor import VENDOR as MEMORY
from syncd.core.draft import ServiceRequestDraft
from syncd.core.errors import AmbiguousWriteError, RetriableError
from syncd.runtime import build_pusher
from tests.conftest import make_settings

Write = Literal["create", "upload", "attach"]


class Upstream(Protocol):
    """What the contract reads from, and does to, the vendor's CRM."""

    def keys(self) -> dict[str, str]:
        """Idempotency key of every service request, by CRM ID."""
        ...

    def attached(self, crm_id: str) -> list[str]:
        """SHA-256 of each file attached to the request, in order."""
        ...

    def lose_answer(self, write: Write) -> None:
        """The next ``write`` is done, but its answer never arrives."""
        ...


def draft(key: str | None = None) -> ServiceRequestDraft:
    return ServiceRequestDraft(
        idempotency_key=key or str(uuid.uuid4()), title="Repair: Candela GentleMax (SN 1)",
        request_type="repair", message="The handpiece overheats", contact_phone=None,
        contact_email=None, contact_address=None, contact_crm_id=None, company_crm_id=None,
        device_crm_id=None,
    )


def upload(pusher: ServiceRequestPusher, name: str, content: bytes) -> str:
    return pusher.upload_file(name, io.BytesIO(content), len(content), "image/jpeg")


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


PHOTO = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 64
PDF = b"%PDF-1.7\n" + b"0" * 5000 + b"\n%%EOF\n"


class ServiceRequestPusherContract:
    """Tests every pusher must pass. Subclasses provide ``pusher`` and ``upstream``."""

    def test_an_unknown_key_is_not_found(self, pusher: ServiceRequestPusher) -> None:
        assert pusher.find_service_request(str(uuid.uuid4())) is None

    def test_a_created_request_is_found_by_its_key(
        self, pusher: ServiceRequestPusher, upstream: Upstream
    ) -> None:
        key = str(uuid.uuid4())
        crm_id = pusher.create_service_request(draft(key))
        assert pusher.find_service_request(key) == crm_id
        assert upstream.keys()[crm_id] == key

    def test_an_uploaded_file_is_stored_whole_and_found_by_name_and_size(
        self, pusher: ServiceRequestPusher, upstream: Upstream
    ) -> None:
        name = f"{uuid.uuid4()}-0-photo.jpg"
        file_id = upload(pusher, name, PHOTO)
        assert pusher.find_file(name, len(PHOTO)) == file_id
        assert pusher.find_file(name, len(PHOTO) + 1) is None  # a half upload is not it
        assert pusher.find_file(f"{uuid.uuid4()}-0-photo.jpg", len(PHOTO)) is None
        crm_id = pusher.create_service_request(draft())
        pusher.attach_files(crm_id, [file_id])
        assert upstream.attached(crm_id) == [sha(PHOTO)]

    def test_attaching_sets_exactly_the_list_given(
        self, pusher: ServiceRequestPusher, upstream: Upstream
    ) -> None:
        crm_id = pusher.create_service_request(draft())
        photo = upload(pusher, f"{uuid.uuid4()}-0-photo.jpg", PHOTO)
        pdf = upload(pusher, f"{uuid.uuid4()}-1-log.pdf", PDF)
        pusher.attach_files(crm_id, [photo, pdf])
        pusher.attach_files(crm_id, [photo, pdf])  # repeating it changes nothing
        assert upstream.attached(crm_id) == [sha(PHOTO), sha(PDF)]
        pusher.attach_files(crm_id, [pdf])
        assert upstream.attached(crm_id) == [sha(PDF)]

    def test_a_create_whose_answer_was_lost_is_adopted_by_its_key(
        self, pusher: ServiceRequestPusher, upstream: Upstream
    ) -> None:
        key = str(uuid.uuid4())
        upstream.lose_answer("create")
        with pytest.raises(AmbiguousWriteError):
            pusher.create_service_request(draft(key))
        found = pusher.find_service_request(key)  # what the next attempt does first
        assert found is not None and upstream.keys()[found] == key
        assert list(upstream.keys().values()).count(key) == 1

    def test_an_upload_whose_answer_was_lost_is_found_instead_of_repeated(
        self, pusher: ServiceRequestPusher, upstream: Upstream
    ) -> None:
        name = f"{uuid.uuid4()}-0-photo.jpg"
        upstream.lose_answer("upload")
        with pytest.raises(RetriableError):
            upload(pusher, name, PHOTO)
        assert pusher.find_file(name, len(PHOTO)) is not None

    def test_an_attach_whose_answer_was_lost_can_be_repeated(
        self, pusher: ServiceRequestPusher, upstream: Upstream
    ) -> None:
        crm_id = pusher.create_service_request(draft())
        photo = upload(pusher, f"{uuid.uuid4()}-0-photo.jpg", PHOTO)
        upstream.lose_answer("attach")
        with pytest.raises(RetriableError):
            pusher.attach_files(crm_id, [photo])
        pusher.attach_files(crm_id, [photo])
        assert upstream.attached(crm_id) == [sha(PHOTO)]


# -- Bitrix24, through its HTTP fake --------------------------------------------------------------

_BITRIX24_WRITES = {"create": "crm.item.add", "upload": "disk.upload", "attach": "crm.item.update"}


class Bitrix24Upstream:
    def __init__(self, fake: FakeBitrix24) -> None:
        self.fake = fake

    def keys(self) -> dict[str, str]:
        return {crm_id: str(item["xmlId"]) for crm_id, item in self.fake.service_requests().items()}

    def attached(self, crm_id: str) -> list[str]:
        item = self.fake.service_requests()[crm_id]
        return [str(f["sha256"]) for f in item["_disk_files"]]  # type: ignore[union-attr]

    def lose_answer(self, write: Write) -> None:
        self.fake.faults.add("drop_after_processing", times=1, method=_BITRIX24_WRITES[write])


class TestBitrix24Pusher(ServiceRequestPusherContract):
    @pytest.fixture
    def fake(self) -> Iterator[FakeBitrix24]:
        with FakeBitrix24(seed=5, companies=2, contacts=3, devices=2, token="t") as fake:
            yield fake

    @pytest.fixture
    def pusher(self, fake: FakeBitrix24, tmp_path: Path) -> Iterator[ServiceRequestPusher]:
        pusher = build_pusher(make_settings(tmp_path, fake))
        yield pusher
        pusher.close()

    @pytest.fixture
    def upstream(self, fake: FakeBitrix24) -> Bitrix24Upstream:
        return Bitrix24Upstream(fake)


# -- the in-memory CRM ---------------------------------------------------------------------------


class MemoryUpstream:
    def __init__(self, crm: MemoryCRM) -> None:
        self.crm = crm

    def keys(self) -> dict[str, str]:
        return {crm_id: item.idempotency_key for crm_id, item in self.crm.items.items()}

    def attached(self, crm_id: str) -> list[str]:
        return [self.crm.files[f].sha256 for f in self.crm.items[crm_id].file_ids]

    def lose_answer(self, write: Write) -> None:
        self.crm.fail(write, "lost_answer")


class TestMemoryPusher(ServiceRequestPusherContract):
    """The in-memory vendor, configured by name and built through the registry."""

    @pytest.fixture
    def settings(self, tmp_path: Path) -> Iterator[Settings]:
        store = f"pusher-{tmp_path.name}"
        yield load_settings(None, crm={"vendor": "memory", "memory": {"store": store}})
        MEMORY.forget(store)

    @pytest.fixture
    def crm(self, settings: Settings) -> MemoryCRM:
        return MEMORY.store(settings.crm.vendor_settings).crm

    @pytest.fixture
    def pusher(self, settings: Settings) -> Iterator[ServiceRequestPusher]:
        pusher = build_pusher(settings)
        yield pusher
        pusher.close()

    @pytest.fixture
    def upstream(self, crm: MemoryCRM) -> MemoryUpstream:
        return MemoryUpstream(crm)


def test_the_memory_pusher_is_a_service_request_pusher() -> None:
    assert isinstance(MemoryPusher(MemoryCRM()), ServiceRequestPusher)


def test_the_outbox_delivers_exactly_once_through_the_memory_crm(tmp_path: Path) -> None:
    """The push engine over the in-memory CRM, no HTTP: every write's answer lost once, the
    request still ends in the CRM once, with each file once."""
    from datetime import UTC, datetime, timedelta

    from syncd.engines.intake import IncomingFile, IntakeOptions, ServiceRequestIntake
    from syncd.engines.push import OutboxDelivery, PushOptions
    from syncd.state import outbox
    from syncd.state.db import connect

    conn = connect(tmp_path / "cache.sqlite3")
    types = frozenset({"repair"})
    intake = ServiceRequestIntake(
        lambda: conn, IntakeOptions(spool=tmp_path / "spool", request_types=types,
                                    min_free_bytes=0))
    key = str(uuid.uuid4())
    intake.file_request(key, {"request_type": "repair"}, [
        IncomingFile([PHOTO], "photo.jpg", "image/jpeg"), IncomingFile([PDF], "log.pdf")])
    crm = MemoryCRM()
    for write in ("create", "upload", "attach"):
        crm.fail(write, "lost_answer")  # type: ignore[arg-type]
    later = [datetime.now(UTC)]
    delivery = OutboxDelivery(conn, MemoryPusher(crm),
                              PushOptions(spool=tmp_path / "spool", request_types=types),
                              clock=lambda: later[0])
    for _ in range(6):
        delivery.deliver_next()
        later[0] += timedelta(hours=2)  # past any backoff
    [request] = outbox.list_requests(conn)
    assert request.status == "done" and request.attempts == 4  # three lost answers, then done
    assert [item.idempotency_key for item in crm.items.values()] == [key]
    [item] = crm.items.values()
    assert [crm.files[f].sha256 for f in item.file_ids] == [sha(PHOTO), sha(PDF)]
    assert len(crm.files) == 2  # the lost upload was found by its name, not repeated
    assert [p for p in (tmp_path / "spool").rglob("*") if p.is_file()] == []
    conn.close()
