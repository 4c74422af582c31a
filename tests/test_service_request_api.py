"""``POST /v1/service-requests`` and ``GET /v1/service-requests/{key}``: the portal's one way to
file a request. Real SQLite, a real spool, the real server (waitress) over TCP and a unix
socket; the answers are checked against docs/openapi.yaml by the tests of test_api.py's
helpers."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.api.app import ApiServer, make_app
from syncd.engines.intake import IntakeOptions, ServiceRequestIntake, UploadBudget
from syncd.engines.spool import MIB, FileLimits
from syncd.state import outbox
from syncd.state.db import ThreadConnections, connect
from tests.conftest import make_api_client
from tests.test_api import CacheLocations, StubHealth, StubVat, check, raw_exchange

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 40
PDF = b"%PDF-1.7\n" + b"0" * 3000 + b"\n%%EOF\n"
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 20_000
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 9000
TYPES = frozenset({"repair", "maintenance", "installation", "training", "other"})
LIMITS = FileLimits(image=64 * 1024, video=MIB, document=64 * 1024, max_files_per_request=3)


@dataclass
class Desk:
    client: httpx.Client
    server: ApiServer
    cache: Path
    spool: Path
    intake: ServiceRequestIntake

    def post(
        self,
        key: str | None,
        files: list[tuple[str, bytes, str]] = (),  # type: ignore[assignment]
        **fields: str,
    ) -> httpx.Response:
        headers = {} if key is None else {"Idempotency-Key": key}
        data = {"request_type": "repair", **fields}
        # always multipart, as the portal sends it (fields as parts without a file name)
        parts: list[tuple[str, tuple[str | None, bytes | str, str | None]]] = [
            (name, (None, value, None)) for name, value in data.items()
        ]
        parts += [("files", (name, content, mime)) for name, content, mime in files]
        return self.client.post("/v1/service-requests", headers=headers, files=parts)

    def rows(self) -> list[outbox.OutboxRequest]:
        conn = connect(self.cache)
        try:
            return [outbox.get(conn, r.id) for r in outbox.list_requests(conn)]  # type: ignore[misc]
        finally:
            conn.close()

    def spool_files(self) -> list[str]:
        return sorted(str(p.relative_to(self.spool)) for p in self.spool.rglob("*") if p.is_file())


def start_desk(
    tmp_path: Path,
    listen: str,
    *,
    budget: UploadBudget | None = None,
    min_free_bytes: int = 0,
) -> Desk:
    cache = tmp_path / "cache.sqlite3"
    connect(cache).close()
    spool = tmp_path / "spool"
    connections = ThreadConnections(lambda: connect(cache))
    intake = ServiceRequestIntake(
        connections.get,
        IntakeOptions(spool=spool, request_types=TYPES, limits=LIMITS,
                      min_free_bytes=min_free_bytes),
        budget=budget,
    )
    app = make_app(StubVat(), CacheLocations(connect(cache)), StubHealth(),
                   service_requests=intake, max_upload_bytes=4 * MIB)
    server = ApiServer(app, listen=listen, threads=4, max_request_bytes=4 * MIB)
    server.start()
    return Desk(make_api_client(server.address), server, cache, spool, intake)


@pytest.fixture(params=["tcp", "unix"])
def desk(request: pytest.FixtureRequest, tmp_path: Path, short_dir: Path) -> Iterator[Desk]:
    listen = "127.0.0.1:0" if request.param == "tcp" else f"unix:{short_dir / 'api.sock'}"
    started = start_desk(tmp_path, listen)
    yield started
    started.client.close()
    started.server.stop(timeout=2)


@pytest.fixture
def tcp_desk(tmp_path: Path) -> Iterator[Desk]:
    started = start_desk(tmp_path, "127.0.0.1:0")
    yield started
    started.client.close()
    started.server.stop(timeout=2)


def documented(response: httpx.Response) -> Any:
    """The body, after checking the answer against docs/openapi.yaml."""
    if response.request.method == "POST":
        return check(response, "/v1/service-requests", "post")
    return check(response, "/v1/service-requests/{key}")


def error_of(response: httpx.Response) -> dict[str, str]:
    error: dict[str, str] = documented(response)["error"]
    return error


# -- filing -----------------------------------------------------------------------------------


def test_a_request_with_files_is_filed_and_reported(desk: Desk) -> None:
    key = str(uuid.uuid4())
    answer = desk.post(
        key,
        [("Jüri \x1b[31mfoto.jpg", JPEG, "image/jpeg"), ("manual.pdf", PDF, "application/pdf")],
        message="The handpiece overheats", device_crm_id="17", contact_crm_id="5",
    )
    assert answer.status_code == 202, answer.text
    body = documented(answer)
    assert body["idempotency_key"] == key
    assert body["status_url"] == f"/v1/service-requests/{key}"
    assert answer.headers["location"] == body["status_url"]
    assert "idempotent-replayed" not in answer.headers

    [row] = desk.rows()
    assert row.id == body["id"] and row.status == "pending"
    assert (row.request_type, row.message, row.device_crm_id) == (
        "repair", "The handpiece overheats", "17")
    # stored by syncd under the key, named by position and type; the name is kept, cleaned
    assert [(f.path, f.size, f.declared_type) for f in row.files] == [
        (f"{key}/0.jpg", len(JPEG), "image/jpeg"),
        (f"{key}/1.pdf", len(PDF), "application/pdf"),
    ]
    assert row.files[0].original_name == "Jüri [31mfoto.jpg"  # no ESC survives
    assert (desk.spool / key / "0.jpg").read_bytes() == JPEG
    assert desk.spool_files() == [f"{key}/0.jpg", f"{key}/1.pdf"]

    status = desk.client.get(body["status_url"])
    assert status.status_code == 200
    shown = documented(status)
    assert shown["status"] == "pending" and shown["attempts"] == 0 and shown["crm_id"] is None
    assert [f["type"] for f in shown["files"]] == ["image/jpeg", "application/pdf"]
    assert "message" not in shown and "Jüri" not in status.text  # no personal data


def test_an_upper_case_key_is_the_same_request(desk: Desk) -> None:
    key = str(uuid.uuid4())
    first = desk.post(key.upper(), [("a.jpg", JPEG, "image/jpeg")])
    assert first.status_code == 202
    assert first.json()["idempotency_key"] == key
    assert desk.client.get(f"/v1/service-requests/{key.upper()}").status_code == 200


def test_a_retried_post_returns_the_first_answer_and_files_nothing_twice(desk: Desk) -> None:
    key = str(uuid.uuid4())
    first = desk.post(key, [("a.jpg", JPEG, "image/jpeg")])
    again = desk.post(key, [("a.jpg", JPEG, "image/jpeg")])
    assert (first.status_code, again.status_code) == (202, 202)
    assert documented(again) == documented(first)
    assert again.headers["idempotent-replayed"] == "true"
    assert len(desk.rows()) == 1
    assert desk.spool_files() == [f"{key}/0.jpg"]


def test_concurrent_posts_with_one_key_file_once(tcp_desk: Desk) -> None:
    key = str(uuid.uuid4())
    barrier = threading.Barrier(6)
    answers: list[httpx.Response] = []

    def post() -> None:
        with make_api_client(tcp_desk.server.address) as client:
            barrier.wait()
            answers.append(client.post(
                "/v1/service-requests", headers={"Idempotency-Key": key},
                data={"request_type": "repair"},
                files=[("files", ("v.mp4", MP4, "video/mp4"))]))

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(a.status_code for a in answers) == [202] * 6
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum("idempotent-replayed" not in a.headers for a in answers) == 1
    assert len(tcp_desk.rows()) == 1
    assert tcp_desk.spool_files() == [f"{key}/0.mp4"]


# -- refusals at the door ---------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "not-a-uuid", "3f2a6c1e8d4b4c1a9e7f0b1c2d3e4f5a"])
def test_a_missing_or_malformed_key_is_refused(desk: Desk, key: str | None) -> None:
    answer = desk.post(key, [("a.jpg", JPEG, "image/jpeg")])
    assert answer.status_code == 400
    assert error_of(answer) | {"message": ""} == {
        "code": "invalid_idempotency_key", "field": "Idempotency-Key", "message": ""}
    assert desk.rows() == [] and desk.spool_files() == []


@pytest.mark.parametrize(
    ("files", "status", "code", "field"),
    [
        ([("a.jpg", JPEG, "image/jpeg"), ("b.jpg", ELF, "image/jpeg")], 415,
         "file_type_not_allowed", "files[1]"),
        ([("a.pdf", JPEG, "application/pdf")], 415, "file_type_mismatch", "files[0]"),
        ([("a.jpg", JPEG + b"\x00" * 64 * 1024, "image/jpeg")], 413, "file_too_large",
         "files[0]"),
        ([("a.jpg", b"", "image/jpeg")], 422, "empty_file", "files[0]"),
        ([("a.jpg", JPEG, "image/jpeg")] * 4, 413, "too_many_files", "files"),
    ],
    ids=["disguised-executable", "declared-mismatch", "too-large", "empty", "too-many"],
)
def test_a_bad_file_is_refused_naming_it_and_nothing_is_kept(
    desk: Desk, files: list[tuple[str, bytes, str]], status: int, code: str, field: str
) -> None:
    answer = desk.post(str(uuid.uuid4()), files)
    assert answer.status_code == status, answer.text
    error = error_of(answer)
    assert (error["code"], error["field"]) == (code, field)
    assert "a.jpg" not in answer.text and "b.jpg" not in answer.text  # names are not echoed
    assert desk.rows() == [] and desk.spool_files() == []


@pytest.mark.parametrize(
    ("fields", "status", "code", "field"),
    [
        ({"request_type": "'; DROP TABLE x;--"}, 422, "invalid_request_type", "request_type"),
        ({"message": "x" * 20_000}, 422, "invalid_message", "message"),
        ({"message": "x" * 50_000}, 413, "field_too_large", "message"),
        ({"device_crm_id": "abc"}, 422, "invalid_device_crm_id", "device_crm_id"),
        ({"contact_phone": "5" * 600}, 422, "invalid_contact_phone", "contact_phone"),
    ],
)
def test_a_bad_field_is_refused_naming_it(
    desk: Desk, fields: dict[str, str], status: int, code: str, field: str
) -> None:
    answer = desk.post(str(uuid.uuid4()), [("a.jpg", JPEG, "image/jpeg")], **fields)
    assert answer.status_code == status, answer.text
    error = error_of(answer)
    assert (error["code"], error["field"]) == (code, field)
    assert desk.rows() == [] and desk.spool_files() == []


def test_an_unknown_form_part_is_refused(desk: Desk) -> None:
    answer = desk.post(str(uuid.uuid4()), [("a.jpg", JPEG, "image/jpeg")], colour="blue")
    assert answer.status_code == 400
    assert error_of(answer)["code"] == "unknown_field"
    assert "colour" not in answer.text


def test_a_device_the_mirror_does_not_have_is_refused(desk: Desk) -> None:
    conn = connect(desk.cache)
    conn.execute("INSERT INTO cursors (entity, value, updated_at) VALUES ('devices', 'x', 'x')")
    conn.execute("INSERT INTO devices (crm_id, content_hash, synced_at) VALUES ('17', 'h', 't')")
    conn.close()
    assert desk.post(str(uuid.uuid4()), device_crm_id="17").status_code == 202
    answer = desk.post(str(uuid.uuid4()), device_crm_id="18")
    assert answer.status_code == 422
    assert error_of(answer) | {"message": ""} == {
        "code": "unknown_device", "field": "device_crm_id", "message": ""}


def test_a_body_that_is_not_multipart_is_refused(desk: Desk) -> None:
    answer = desk.client.post("/v1/service-requests", headers={
        "Idempotency-Key": str(uuid.uuid4())}, json={"request_type": "repair"})
    assert answer.status_code == 415
    assert error_of(answer)["code"] == "unsupported_media_type"


def test_a_truncated_body_is_refused_and_leaves_nothing(tcp_desk: Desk) -> None:
    boundary = b"XyZ"
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"request_type\"\r\n\r\nrepair\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n" + JPEG)  # no closing boundary
    status, _headers, raw = raw_exchange(
        tcp_desk.server.address,
        b"POST /v1/service-requests HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        b"Idempotency-Key: " + str(uuid.uuid4()).encode() + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body,
    )
    assert status == 400
    assert b"malformed_body" in raw
    assert tcp_desk.rows() == [] and tcp_desk.spool_files() == []


def test_the_hourly_budget_refuses_with_retry_after(tmp_path: Path) -> None:
    desk = start_desk(tmp_path, "127.0.0.1:0", budget=UploadBudget(2, 10 * MIB))
    try:
        for _ in range(2):
            assert desk.post(str(uuid.uuid4()), [("a.jpg", JPEG, "image/jpeg")]).status_code == 202
        key = str(uuid.uuid4())
        refused = desk.post(key, [("a.jpg", JPEG, "image/jpeg")])
        assert refused.status_code == 429
        assert error_of(refused)["code"] == "too_many_requests"
        assert 1 <= int(refused.headers["retry-after"]) <= 3600
        assert len(desk.rows()) == 2
    finally:
        desk.client.close()
        desk.server.stop(timeout=2)


def test_a_spool_short_of_space_refuses_with_507(tmp_path: Path) -> None:
    desk = start_desk(tmp_path, "127.0.0.1:0", min_free_bytes=1 << 62)
    try:
        refused = desk.post(str(uuid.uuid4()), [("a.jpg", JPEG, "image/jpeg")])
        assert refused.status_code == 507
        assert error_of(refused)["code"] == "insufficient_storage"
        assert "retry-after" in refused.headers
        assert desk.rows() == []
    finally:
        desk.client.close()
        desk.server.stop(timeout=2)


def test_status_of_an_unknown_or_malformed_key(desk: Desk) -> None:
    missing = desk.client.get(f"/v1/service-requests/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "unknown_service_request"
    malformed = desk.client.get("/v1/service-requests/not-a-key")
    assert malformed.status_code == 400
    assert error_of(malformed)["code"] == "invalid_idempotency_key"


def test_other_endpoints_still_refuse_a_body_over_their_limit(desk: Desk) -> None:
    answer = desk.client.request("GET", "/healthz", content=b"x" * 20_000)
    assert answer.status_code == 413


def test_orphans_of_a_crash_are_swept_but_not_filed_requests(desk: Desk) -> None:
    key = str(uuid.uuid4())
    assert desk.post(key, [("a.jpg", JPEG, "image/jpeg")]).status_code == 202
    stray = desk.spool / str(uuid.uuid4())
    stray.mkdir()
    (stray / "0.jpg").write_bytes(JPEG)
    draft = desk.spool / ".incoming" / "x.1234"
    draft.mkdir(parents=True)
    assert desk.intake.sweep_orphans(older_than=3600) == 0  # young: maybe still arriving
    assert desk.intake.sweep_orphans(older_than=-1) == 2
    assert desk.spool_files() == [f"{key}/0.jpg"]


def test_a_request_written_into_the_table_by_hand_is_checked_before_delivery(
    tmp_path: Path,
) -> None:
    """A row that did not come through the door meets the same checks at the push lane."""
    from syncd.engines.push import OutboxDelivery, PushOptions

    conn = connect(tmp_path / "cache.sqlite3")
    conn.execute(
        "INSERT INTO outbox_requests (idempotency_key, request_type, message, created_at) "
        "VALUES ('not-a-uuid', '''; DROP TABLE x;--', ?, '2026-12-01T00:00:00.000Z')",
        ("m" * 20_000,),
    )

    class NoPusher:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"the CRM was called ({name})")

    options = PushOptions(spool=tmp_path / "spool", request_types=TYPES)
    delivery = OutboxDelivery(conn, NoPusher(), options, worker_id="w")  # type: ignore[arg-type]
    assert delivery.deliver_next() is not None
    [row] = outbox.list_requests(conn)
    assert row.status == "dead"
    assert row.last_error is not None and row.last_error.startswith("refused as stored:")
    assert "m" * 50 not in row.last_error
    conn.close()


def test_a_post_whose_connection_dropped_after_the_commit_is_answered_on_retry(
    tcp_desk: Desk,
) -> None:
    """The portal sent everything and lost the connection before the answer: syncd filed it;
    the retry with the same key gets the first answer and files nothing twice."""
    import socket

    key = str(uuid.uuid4())
    boundary = b"b0undary"
    body = (b"--b0undary\r\nContent-Disposition: form-data; name=\"request_type\"\r\n\r\nrepair"
            b"\r\n--b0undary\r\nContent-Disposition: form-data; name=\"files\"; "
            b"filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n" + JPEG +
            b"\r\n--b0undary--\r\n")
    host, port = tcp_desk.server.address.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(b"POST /v1/service-requests HTTP/1.1\r\nHost: localhost\r\n"
                    b"Idempotency-Key: " + key.encode() + b"\r\n"
                    b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        raw.shutdown(socket.SHUT_RDWR)  # gone before the answer
    deadline = time.monotonic() + 10
    while not tcp_desk.rows():  # syncd files it although nobody waits for the answer
        assert time.monotonic() < deadline, "the dropped POST was not filed"
        time.sleep(0.02)
    [first] = tcp_desk.rows()
    retry = tcp_desk.post(key, [("a.jpg", JPEG, "image/jpeg")])
    assert retry.status_code == 202
    assert documented(retry)["id"] == first.id
    assert retry.headers["idempotent-replayed"] == "true"
    assert len(tcp_desk.rows()) == 1 and tcp_desk.spool_files() == [f"{key}/0.jpg"]
