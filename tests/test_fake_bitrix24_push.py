"""The push side of the fake Bitrix24 (service requests going up to the CRM), exercised over
real loopback HTTP with httpx (no mocks): the service-request smart process, file UF
semantics, Bitrix Disk uploads and the faults a pushing client must survive."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from syncd.connectors.crm.bitrix24.fake import FakeBitrix24

FIXTURES = Path(__file__).parent / "fixtures" / "bitrix24"
DEVICES = 1040
REQUESTS = 1044
FOLDER = 1
DROPPED = (httpx.RemoteProtocolError, httpx.ReadError)
DISK_OBJECT_KEYS = {
    "ID", "NAME", "CODE", "STORAGE_ID", "TYPE", "PARENT_ID", "DELETED_TYPE", "CREATE_TIME",
    "UPDATE_TIME", "DELETE_TIME", "CREATED_BY", "UPDATED_BY", "DELETED_BY", "DOWNLOAD_URL",
    "DETAIL_URL", "SIZE", "FILE_ID",
}


def fixture(name: str) -> Any:
    """A reference body from Bitrix24's docs."""
    return json.loads((FIXTURES / name).read_text())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(size: int, seed: int = 7) -> bytes:
    """Deterministic pseudo-random bytes (incompressible, like a video)."""
    return random.Random(seed).randbytes(size)


@pytest.fixture()
def fake() -> Iterator[FakeBitrix24]:
    with FakeBitrix24(seed=5, companies=6, contacts=12, devices=8) as fake:
        yield fake


@pytest.fixture()
def client(fake: FakeBitrix24) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.webhook_url, timeout=10) as client:
        yield client


def call(client: httpx.Client, method: str, **params: Any) -> Any:
    response = client.post(f"{method}.json", json=params)
    assert response.status_code == 200, response.text
    return response.json()


def error(client: httpx.Client, method: str, status: int, **params: Any) -> dict[str, Any]:
    response = client.post(f"{method}.json", json=params)
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "error_description"}
    return body


def add_request(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    item: dict[str, Any] = call(client, "crm.item.add", entityTypeId=REQUESTS,
                                fields=fields)["result"]["item"]
    return item


def by_xml_id(client: httpx.Client, xml_id: str | list[str], etid: int = REQUESTS) -> list[int]:
    key = "@xmlId" if isinstance(xml_id, list) else "xmlId"
    body = call(client, "crm.item.list", entityTypeId=etid, filter={key: xml_id},
                select=["id", "xmlId"])
    return [row["id"] for row in body["result"]["items"]]


def upload_url(client: httpx.Client, **params: Any) -> str:
    result = call(client, "disk.folder.uploadfile", id=FOLDER, **params)["result"]
    assert set(result) == {"field", "uploadUrl"} and result["field"] == "file"
    url: str = result["uploadUrl"]
    return url


def post_file(client: httpx.Client, url: str, name: str, data: bytes) -> httpx.Response:
    """The second upload step: a multipart POST to an absolute URL, streamed from a file
    object."""
    return client.post(url, files={"file": (name, io.BytesIO(data), "video/mp4")}, timeout=30)


# --- the service-request smart process -------------------------------------------------------


def test_service_request_crud_with_real_envelopes(fake: FakeBitrix24,
                                                  client: httpx.Client) -> None:
    reference = fixture("crm.item.add.response.json")
    device = next(iter(fake.records("devices").values()))
    fields = {
        "title": "Handpiece overheats", "xmlId": "7d0c7d1e-3c1a-4f0e-9a53-0f3c9a1b2c3d",
        "contactId": "3", "companyId": 2, f"parentId{DEVICES}": device["id"],
        "ufCrm9RequestType": "repair", "ufCrm9Message": "Stops after 10 minutes",
        "ufCrm9ContactPhone": "+372 5555 0101", "ufCrm9ContactEmail": "mari@example.ee",
        "ufCrm9ContactAddress": "Tartu mnt 1, Tallinn", "ufCrm9DiskFileIds": ["12", "13"],
        "id": 999, "createdTime": "2000-01-01T00:00:00+02:00",  # read-only: ignored
    }
    body = call(client, "crm.item.add", entityTypeId=REQUESTS, fields=fields)
    assert list(body) == ["result", "time"] and list(body["result"]) == list(reference["result"])
    item = body["result"]["item"]
    assert isinstance(item["id"], int) and item["id"] != 999
    assert item["entityTypeId"] == REQUESTS and item["stageId"] == "DT1044_9:NEW"
    assert item["contactId"] == 3 and item["companyId"] == 2
    assert item[f"parentId{DEVICES}"] == device["id"]
    assert item["ufCrm9DiskFileIds"] == ["12", "13"] and item["ufCrm9Files"] == []
    assert item["createdTime"] == item["updatedTime"] != "2000-01-01T00:00:00+02:00"

    got = call(client, "crm.item.get", entityTypeId=REQUESTS, id=item["id"])["result"]
    assert got == {"item": item}
    listed = call(client, "crm.item.list", entityTypeId=REQUESTS, filter={"=id": item["id"]})
    assert listed["result"]["items"] == [item] and listed["total"] == 1
    upper = call(client, "crm.item.get", entityTypeId=REQUESTS, id=item["id"])
    assert upper["result"]["item"]["ufCrm9Message"] == "Stops after 10 minutes"

    updated = call(client, "crm.item.update", entityTypeId=REQUESTS, id=item["id"],
                   fields={"UF_CRM_9_MESSAGE": "Fixed by a reboot", "ufCrm9RequestType": "other"})
    assert updated["result"]["item"]["ufCrm9Message"] == "Fixed by a reboot"
    assert updated["result"]["item"]["ufCrm9RequestType"] == "other"
    assert updated["result"]["item"]["title"] == "Handpiece overheats"
    stored = fake.service_requests()[str(item["id"])]
    assert stored["ufCrm9Message"] == "Fixed by a reboot" and stored["_files"] == []

    assert call(client, "crm.item.delete", entityTypeId=REQUESTS, id=item["id"])["result"] == []
    gone = error(client, "crm.item.get", 400, entityTypeId=REQUESTS, id=item["id"])
    assert gone == {"error": "NOT_FOUND", "error_description": "Element not found"}
    assert fake.service_requests() == {}
    assert error(client, "crm.item.add", 400, entityTypeId=1046, fields={})["error"] == "NOT_FOUND"
    bad_link = error(client, "crm.item.add", 400, entityTypeId=REQUESTS,
                     fields={"contactId": "Mari"})
    assert bad_link["error"] == "CRM_FIELD_ERROR_VALUE_NOT_VALID"


def test_type_list_names_both_smart_processes(client: httpx.Client) -> None:
    body = call(client, "crm.type.list")
    types = {t["entityTypeId"]: t for t in body["result"]["types"]}
    assert body["total"] == 2 and set(types) == {DEVICES, REQUESTS}
    assert (types[DEVICES]["id"], types[REQUESTS]["id"]) == (8, 9)
    assert set(types[REQUESTS]) <= set(fixture("crm.type.list.response.json")["result"]
                                       ["types"][0])


def test_xml_id_lookups_exact_and_in(fake: FakeBitrix24, client: httpx.Client) -> None:
    first = add_request(client, title="A", xmlId="uuid-a")["id"]
    second = add_request(client, title="B", xmlId="uuid-b")["id"]
    add_request(client, title="C")
    assert by_xml_id(client, "uuid-a") == [first]
    assert by_xml_id(client, ["uuid-a", "uuid-b", "uuid-missing"]) == [first, second]
    assert by_xml_id(client, "uuid-missing") == []
    again = add_request(client, title="A again", xmlId="uuid-a")["id"]  # not unique: look up first
    assert by_xml_id(client, "uuid-a") == [first, again]

    device = call(client, "crm.item.add", entityTypeId=DEVICES,
                  fields={"title": "Alma Harmony", "xmlId": "dev-1"})["result"]["item"]
    assert by_xml_id(client, "dev-1", DEVICES) == [device["id"]]
    assert by_xml_id(client, ["dev-1", "uuid-a"], DEVICES) == [device["id"]]
    assert by_xml_id(client, "uuid-a", DEVICES) == []


# --- file UF semantics -----------------------------------------------------------------------


def test_file_field_add_read_and_download(fake: FakeBitrix24, client: httpx.Client) -> None:
    reference = fixture("crm.item.add.multiple-files.request.json")["fields"]["ufCrm_123456"]
    photo, invoice = payload(40_000, seed=1), b"%PDF-1.4 invoice"
    value = [[reference[0][0], b64(photo)], ["invoice.pdf", b64(invoice)]]
    item = add_request(client, title="With files", xmlId="u-files", ufCrm9Files=value)
    files = item["ufCrm9Files"]
    sample = fixture("crm.item.list.spa-file-field.response.json")["result"]["items"][0]
    assert [set(f) for f in files] == [set(sample["ufCrm_7_1739432938"][0])] * 2
    assert all(isinstance(f["id"], int) for f in files) and files[0]["id"] != files[1]["id"]
    for entry in files:
        for key in ("url", "urlMachine"):
            assert urlsplit(entry[key]).netloc == f"127.0.0.1:{fake.port}"
        assert "/rest/crm.controller.item.getFile.json?auth=" in entry["urlMachine"]
        assert "&token=crm%7C" in entry["urlMachine"]
        assert f"fieldName=UF_CRM_9_FILES&fileId={entry['id']}" in entry["url"]
    stored = fake.service_requests()[str(item["id"])]["_files"]
    assert stored == [
        {"name": "green_pixel.png", "size": 40_000, "sha256": sha(photo)},
        {"name": "invoice.pdf", "size": len(invoice), "sha256": sha(invoice)},
    ]
    download = client.get(files[0]["urlMachine"])
    assert download.status_code == 200 and download.content == photo
    forged = files[0]["urlMachine"].replace("auth=", "auth=x")
    assert client.get(forged).status_code == 404
    assert fake.file_bytes(files[1]["id"]) == invoice
    listed = call(client, "crm.item.list", entityTypeId=REQUESTS, filter={"xmlId": "u-files"},
                  select=["id", "ufCrm9Files"])["result"]["items"]
    assert listed == [{"id": item["id"], "ufCrm9Files": files}]
    # a lone ["name", "<base64>"] pair is one file
    single = add_request(client, ufCrm9Files=["note.txt", b64(b"hi")])
    assert fake.service_requests()[str(single["id"])]["_files"][0]["name"] == "note.txt"
    rejected = error(client, "crm.item.list", 400, entityTypeId=REQUESTS,
                     filter={"ufCrm9Files": 1})
    assert rejected["error"] == "INVALID_ARG_VALUE"


def test_file_field_update_replaces_the_whole_field(fake: FakeBitrix24,
                                                    client: httpx.Client) -> None:
    first, second, new = b"first file", b"second file", b"%PDF new"
    item = add_request(client, ufCrm9Files=[["first.txt", b64(first)], ["second.txt",
                                                                         b64(second)]])
    kept_id, dropped_id = (f["id"] for f in item["ufCrm9Files"])
    reference = fixture("crm.item.update.keep-and-add-file.request.json")
    value = reference["fields"]["ufCrm_7_1739432938"]  # [{"id": 30577}, ["myNewFile.pdf", …]]
    value[0]["id"] = kept_id
    value[1] = ["new.pdf", b64(new)]
    updated = call(client, "crm.item.update", entityTypeId=REQUESTS, id=item["id"],
                   fields={"ufCrm9Files": value})["result"]["item"]
    ids = [f["id"] for f in updated["ufCrm9Files"]]
    assert ids[0] == kept_id and dropped_id not in ids and len(ids) == 2
    assert updated["ufCrm9Files"][0] == item["ufCrm9Files"][0]
    assert [f["name"] for f in fake.service_requests()[str(item["id"])]["_files"]] == [
        "first.txt", "new.pdf"
    ]
    with pytest.raises(KeyError):
        fake.file_bytes(dropped_id)  # silently deleted
    assert fake.file_bytes(ids[1]) == new

    untouched = call(client, "crm.item.update", entityTypeId=REQUESTS, id=item["id"],
                     fields={"ufCrm9Message": "only text"})["result"]["item"]
    assert untouched["ufCrm9Files"] == updated["ufCrm9Files"]  # an absent field is kept
    foreign = call(client, "crm.item.update", entityTypeId=REQUESTS, id=item["id"],
                   fields={"ufCrm9Files": [{"id": ids[1]}, {"id": 424242}]})["result"]["item"]
    assert [f["id"] for f in foreign["ufCrm9Files"]] == [ids[1]]  # unknown IDs ignored
    cleared = call(client, "crm.item.update", entityTypeId=REQUESTS, id=item["id"],
                   fields={"ufCrm9Files": []})["result"]["item"]
    assert cleared["ufCrm9Files"] == [] and fake.service_requests()[str(item["id"])][
        "_files"] == []
    refilled = call(client, "crm.item.update", entityTypeId=REQUESTS, id=item["id"],
                    fields={"ufCrm9Files": [["again.txt", b64(b"again")]]})["result"]["item"]
    assert len(refilled["ufCrm9Files"]) == 1
    emptied = call(client, "crm.item.update", entityTypeId=REQUESTS, id=item["id"],
                   fields={"ufCrm9Files": ""})["result"]["item"]
    assert emptied["ufCrm9Files"] == []
    call(client, "crm.item.delete", entityTypeId=REQUESTS, id=item["id"])
    with pytest.raises(KeyError):
        fake.file_bytes(refilled["ufCrm9Files"][0]["id"])


def test_file_field_rejects_bad_base64_without_writing(fake: FakeBitrix24,
                                                       client: httpx.Client) -> None:
    item = add_request(client, title="Keep me", ufCrm9Files=[["a.txt", b64(b"a")]])
    before = fake.service_requests()
    for bad in ([["b.txt", "not base64!!"]], [["c.txt", ""]], [["", b64(b"x")]], [42]):
        body = error(client, "crm.item.update", 400, entityTypeId=REQUESTS, id=item["id"],
                     fields={"title": "Changed", "ufCrm9Files": [{"id": 1}, *bad]})
        assert body["error"] == "CRM_FIELD_ERROR_VALUE_NOT_VALID"
        assert "UF_CRM_9_FILES" in body["error_description"]
    assert fake.service_requests() == before
    count = len(fake.service_requests())
    body = error(client, "crm.item.add", 400, entityTypeId=REQUESTS,
                 fields={"xmlId": "u-bad", "ufCrm9Files": [["x.pdf", "%%%"]]})
    assert body["error"] == "CRM_FIELD_ERROR_VALUE_NOT_VALID"
    assert len(fake.service_requests()) == count and by_xml_id(client, "u-bad") == []


# --- Bitrix Disk -----------------------------------------------------------------------------


def test_disk_upload_with_file_content(fake: FakeBitrix24, client: httpx.Client) -> None:
    data = payload(123_456)
    result = call(client, "disk.folder.uploadfile", id=FOLDER, data={"NAME": "clip.mp4"},
                  fileContent=["clip.mp4", b64(data)], generateUniqueName=False)["result"]
    assert set(result) >= DISK_OBJECT_KEYS and result["TYPE"] == "file"
    assert isinstance(result["ID"], int) and isinstance(result["FILE_ID"], int)
    assert result["SIZE"] == "123456" and result["PARENT_ID"] == str(FOLDER)
    assert result["NAME"] == "clip.mp4" and result["DELETE_TIME"] is None
    assert fake.disk_files() == {
        str(result["ID"]): {"name": "clip.mp4", "size": 123_456, "sha256": sha(data),
                            "folder_id": FOLDER}
    }
    got = call(client, "disk.file.get", id=result["ID"])["result"]
    assert set(got) >= DISK_OBJECT_KEYS
    assert got["ID"] == str(result["ID"]) and got["FILE_ID"] == str(result["FILE_ID"])
    assert got["DELETED_TYPE"] == "0" and got["DELETED_BY"] == "0"
    assert client.get(got["DOWNLOAD_URL"]).content == data

    missing = error(client, "disk.file.get", 400, id=987654)
    assert missing == {"error": "ERROR_NOT_FOUND",
                       "error_description": "Could not find entity with id '987654'"}
    assert error(client, "disk.file.get", 400)["error"] == "ERROR_ARGUMENT"
    no_folder = error(client, "disk.folder.uploadfile", 400, id=77, data={"NAME": "a.mp4"},
                      fileContent=["a.mp4", b64(b"a")])
    assert no_folder["error"] == "ERROR_NOT_FOUND"
    no_name = error(client, "disk.folder.uploadfile", 400, id=FOLDER,
                    fileContent=["a.mp4", b64(b"a")])
    assert no_name["error"] == "DISK_BASE_SERVICE_22001"
    garbage = error(client, "disk.folder.uploadfile", 400, id=FOLDER, data={"NAME": "b.mp4"},
                    fileContent=["b.mp4", "***"])
    assert garbage["error"] == "ERROR_COULD_NOT_SAVE_FILE"
    folder = call(client, "disk.folder.get", id=FOLDER)["result"]
    assert folder["ID"] == str(FOLDER) and folder["TYPE"] == "folder"


def test_two_step_multipart_upload_streams_and_is_single_use(fake: FakeBitrix24,
                                                             client: httpx.Client) -> None:
    data = payload(3 * 1024 * 1024 + 17)
    url = upload_url(client, data={"NAME": "request-video.mp4"})
    assert url.startswith(f"http://127.0.0.1:{fake.port}/upload/")
    response = post_file(client, url, "ignored-local-name.mp4", data)
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["result", "time"] and set(body["result"]) >= DISK_OBJECT_KEYS
    result = body["result"]
    assert result["NAME"] == "request-video.mp4" and result["SIZE"] == str(len(data))
    assert fake.disk_files()[str(result["ID"])] == {
        "name": "request-video.mp4", "size": len(data), "sha256": sha(data), "folder_id": FOLDER
    }
    assert fake.file_bytes(result["ID"]) == data
    method, logged = fake.request_log[-1]
    assert method == "disk.upload" and logged["size"] == len(data)
    assert logged["bytes"] > len(data)  # the multipart framing was counted too

    reused = post_file(client, url, "again.mp4", b"again")
    assert reused.status_code == 404 and reused.json()["error"] == "ERROR_NOT_FOUND"
    unknown = post_file(client, url.rsplit("/", 1)[0] + "/no-such-token", "x.mp4", b"x")
    assert unknown.status_code == 404
    assert len(fake.disk_files()) == 1

    # without data.NAME the multipart filename names the file; other form fields are fine
    second = upload_url(client)
    answer = client.post(second, data={"comment": "hi"}, files={"file": ("from-form.bin",
                                                                         b"abc")})
    assert answer.status_code == 200 and answer.json()["result"]["NAME"] == "from-form.bin"
    # a form without the announced field is refused and leaves the token usable
    third = upload_url(client, data={"NAME": "third.bin"})
    wrong = client.post(third, files={"attachment": ("x.bin", b"x")})
    assert wrong.status_code == 400 and wrong.json()["error"] == "ERROR_ARGUMENT"
    assert post_file(client, third, "x.bin", b"third").status_code == 200


def test_chunked_upload_body(fake: FakeBitrix24, client: httpx.Client) -> None:
    data = payload(2 * 1024 * 1024 + 5, seed=3)
    url = upload_url(client, data={"NAME": "chunked.bin"})
    boundary = "fakeBoundary42"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="chunked.bin"\r\nContent-Type: application/octet-stream\r\n\r\n').encode()

    def body() -> Iterator[bytes]:  # a generator: httpx sends Transfer-Encoding: chunked
        yield head
        for start in range(0, len(data), 256 * 1024):
            yield data[start:start + 256 * 1024]
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(url, content=body(),
                          headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 200, response.text
    assert fake.disk_files()[str(response.json()["result"]["ID"])]["sha256"] == sha(data)


def test_getchildren_by_name_and_duplicate_names(fake: FakeBitrix24,
                                                 client: httpx.Client) -> None:
    name = "0b7e5c1a-uuid-1-report.pdf"
    first = call(client, "disk.folder.uploadfile", id=FOLDER, data={"NAME": name},
                 fileContent=[name, b64(b"one")])["result"]
    call(client, "disk.folder.uploadfile", id=FOLDER, data={"NAME": "other.pdf"},
         fileContent=["other.pdf", b64(b"two")])
    children = call(client, "disk.folder.getchildren", id=FOLDER, filter={"NAME": name})
    assert [row["ID"] for row in children["result"]] == [str(first["ID"])]
    assert set(children["result"][0]) >= DISK_OBJECT_KEYS and children["total"] == 1
    upper = call(client, "disk.folder.getchildren", id=FOLDER, filter={"NAME": name.upper()})
    assert len(upper["result"]) == 1  # MySQL's collation: names are case-insensitive
    assert call(client, "disk.folder.getchildren", id=FOLDER,
                filter={"NAME": "missing.pdf"})["result"] == []
    assert len(call(client, "disk.folder.getchildren", id=FOLDER)["result"]) == 2
    assert error(client, "disk.folder.getchildren", 400, id=FOLDER,
                 filter={"COLOUR": "red"})["error"] == "ERROR_ARGUMENT"

    duplicate = error(client, "disk.folder.uploadfile", 400, id=FOLDER, data={"NAME": name},
                      fileContent=[name, b64(b"dup")], generateUniqueName=False)
    assert duplicate == {"error": "DISK_OBJ_22000",
                         "error_description": "A file with this name already exists"}
    url = upload_url(client, data={"NAME": name.upper()})
    refused = post_file(client, url, name, b"dup")
    assert refused.status_code == 400 and refused.json()["error"] == "DISK_OBJ_22000"
    assert post_file(client, url, name, b"dup").status_code == 404  # processed, so used up
    renamed = call(client, "disk.folder.uploadfile", id=FOLDER, data={"NAME": name},
                   fileContent=[name, b64(b"dup")], generateUniqueName=True)["result"]
    assert renamed["NAME"] == "0b7e5c1a-uuid-1-report (1).pdf"
    url = upload_url(client, data={"NAME": name}, generateUniqueName="Y")
    assert post_file(client, url, name, b"dup").json()["result"]["NAME"] == (
        "0b7e5c1a-uuid-1-report (2).pdf"
    )
    assert len(fake.disk_files()) == 4


# --- faults on the push path -----------------------------------------------------------------


def test_drop_after_processing_on_item_add_and_update(fake: FakeBitrix24,
                                                      client: httpx.Client) -> None:
    fake.faults.add("drop_after_processing", method="crm.item.add")
    with pytest.raises(DROPPED):
        client.post("crm.item.add.json", json={
            "entityTypeId": REQUESTS,
            "fields": {"xmlId": "u-dropped", "ufCrm9Files": [["a.txt", b64(b"a")]]},
        })
    found = by_xml_id(client, "u-dropped")  # the client looks the UUID up before re-adding
    assert len(found) == 1
    assert fake.service_requests()[str(found[0])]["_files"][0]["name"] == "a.txt"

    fake.faults.add("drop_after_processing", method="crm.item.update")
    with pytest.raises(DROPPED):
        client.post("crm.item.update.json", json={"entityTypeId": REQUESTS, "id": found[0],
                                                  "fields": {"ufCrm9Message": "done"}})
    assert fake.service_requests()[str(found[0])]["ufCrm9Message"] == "done"
    assert fake.faults.pending == []


def test_drop_after_processing_on_disk_upload(fake: FakeBitrix24, client: httpx.Client) -> None:
    data = payload(512 * 1024)
    url = upload_url(client, data={"NAME": "uuid-1-dropped.mp4"})
    fake.faults.add("drop_after_processing", method="disk.upload")
    with pytest.raises(DROPPED):
        post_file(client, url, "dropped.mp4", data)
    assert [f["sha256"] for f in fake.disk_files().values()] == [sha(data)]
    children = call(client, "disk.folder.getchildren", id=FOLDER,
                    filter={"NAME": "uuid-1-dropped.mp4"})["result"]
    assert len(children) == 1 and children[0]["SIZE"] == str(len(data))
    assert post_file(client, url, "dropped.mp4", data).status_code == 404  # the token was used

    fake.faults.add("drop", method="disk.upload")  # cut before the body is read
    second = upload_url(client, data={"NAME": "uuid-2.mp4"})
    with pytest.raises(httpx.TransportError):
        post_file(client, second, "x.mp4", data)
    assert len(fake.disk_files()) == 1
    assert post_file(client, second, "x.mp4", data).status_code == 200  # nothing was processed


def test_nth_upload_fails_and_slow_upload(fake: FakeBitrix24, client: httpx.Client) -> None:
    fake.faults.add("internal_error", method="disk.upload", after=2)  # the 3rd upload fails
    statuses = []
    urls = [upload_url(client, data={"NAME": f"part-{n}.bin"}) for n in range(4)]
    for n, url in enumerate(urls):
        statuses.append(post_file(client, url, "x", f"part {n}".encode()).status_code)
    assert statuses == [200, 200, 500, 200]
    assert sorted(f["name"] for f in fake.disk_files().values()) == [
        "part-0.bin", "part-1.bin", "part-3.bin"
    ]
    assert post_file(client, urls[2], "x", b"part 2").status_code == 200  # retry with the same URL
    assert [m for m, _ in fake.request_log].count("disk.upload") == 5

    fake.faults.add("slow", delay=0.2, method="disk.upload")
    url = upload_url(client, data={"NAME": "slow.bin"})
    started = time.perf_counter()
    assert post_file(client, url, "slow.bin", b"slow").status_code == 200
    assert time.perf_counter() - started >= 0.2


def test_rate_limit_and_errors_on_item_add(fake: FakeBitrix24, client: httpx.Client) -> None:
    fake.faults.add("query_limit", method="crm.item.add", retry_after=2)
    response = client.post("crm.item.add.json", json={"entityTypeId": REQUESTS,
                                                      "fields": {"xmlId": "u-limited"}})
    assert response.status_code == 503 and response.json()["error"] == "QUERY_LIMIT_EXCEEDED"
    assert response.headers["Retry-After"] == "2"
    assert by_xml_id(client, "u-limited") == []  # a 503 means the call did not run
    add_request(client, xmlId="u-limited")
    assert len(by_xml_id(client, "u-limited")) == 1
    limited = FakeBitrix24(seed=1, companies=1, contacts=1, devices=1, rate_limit=(2, 0.01))
    with limited, httpx.Client(base_url=limited.webhook_url) as other:
        statuses = [
            other.post("crm.item.add.json", json={"entityTypeId": REQUESTS,
                                                  "fields": {"title": str(n)}}).status_code
            for n in range(3)
        ]
        assert statuses == [200, 200, 503] and len(limited.service_requests()) == 2


# --- Python and control APIs, and the pull side left alone ---------------------------------


def test_control_api_and_configuration() -> None:
    with FakeBitrix24(seed=2, companies=2, contacts=2, devices=2, disk_folder_id=8930,
                      service_requests_entity_type_id=1100) as fake, httpx.Client(
        base_url=fake.webhook_url
    ) as other:
        item = call(other, "crm.item.add", entityTypeId=1100,
                    fields={"xmlId": "u-1", "ufCrm9DiskFileIds": ["0"]})["result"]["item"]
        assert item["stageId"] == "DT1100_9:NEW"
        assert error(other, "crm.item.add", 400, entityTypeId=REQUESTS,
                     fields={})["error"] == "NOT_FOUND"
        uploaded = call(other, "disk.folder.uploadfile", id=8930, data={"NAME": "a.bin"},
                        fileContent=["a.bin", b64(b"abc")])["result"]
        call(other, "crm.item.update", entityTypeId=1100, id=item["id"],
             fields={"ufCrm9DiskFileIds": [str(uploaded["ID"]), "999"]})
        assert error(other, "disk.folder.getchildren", 400, id=FOLDER)["error"] == (
            "ERROR_NOT_FOUND"
        )
        control = httpx.Client(base_url=fake.control_url)
        requests = control.get("service-requests").json()
        summary = {"name": "a.bin", "size": 3, "sha256": sha(b"abc")}
        assert requests[str(item["id"])]["_disk_files"] == [summary]  # 999 is unknown
        assert control.get("disk-files").json() == {
            str(uploaded["ID"]): {**summary, "folder_id": 8930}
        }
        stats = control.get("stats").json()["counts"]
        assert stats["service_requests"] == 1 and stats["disk_files"] == 1
        control.close()


def test_pull_side_is_untouched(fake: FakeBitrix24, client: httpx.Client) -> None:
    devices_before = fake.records("devices")
    device_id = int(next(iter(devices_before)))
    item = add_request(client, xmlId="u-link", **{f"parentId{DEVICES}": device_id,
                                                 "contactId": 1})
    body = call(client, "crm.item.list", entityTypeId=DEVICES, select=["id"])
    assert body["total"] == len(devices_before)
    assert fake.records("devices") == devices_before
    assert call(client, "crm.item.list", entityTypeId=REQUESTS,
                filter={f"parentId{DEVICES}": device_id})["result"]["items"][0]["id"] == item["id"]
    modified = fake.service_requests()[str(item["id"])]["updatedTime"]
    assert fake.delete("devices", device_id)  # Bitrix unbinds children without touching them
    after = fake.service_requests()[str(item["id"])]
    assert after[f"parentId{DEVICES}"] is None and after["updatedTime"] == modified
    assert call(client, "crm.item.delete", entityTypeId=REQUESTS, id=item["id"])["result"] == []
    queued = [e.row["EVENT_DATA"]["FIELDS"] for e in fake.store.events.events.values()]
    assert {"ID": item["id"], "ENTITY_TYPE_ID": REQUESTS} in queued
    assert {"ID": device_id, "ENTITY_TYPE_ID": DEVICES} in queued


def test_oversized_upload_is_refused_unread(fake: FakeBitrix24, client: httpx.Client) -> None:
    url = urlsplit(upload_url(client, data={"NAME": "huge.mp4"}))
    request = (
        f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {601 * 1024 * 1024 + 4096}\r\n\r\n"
    ).encode()
    with socket.create_connection((url.hostname or "", url.port or 80), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"Connection: close" in head
    assert json.loads(body)["error"] == "ERROR_FILE_TOO_LARGE"
    assert fake.disk_files() == {}
