"""The fake Microsoft Graph + Entra ID login endpoint: the real clients (azure-identity,
msgraph-sdk/kiota) against it, Graph's delta wire format and semantics, faults, downloads with
ranges, generated content and its QuickXorHash, the control API and the standalone runner."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import queue
import signal
import ssl
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CertificateCredential, ClientSecretCredential

from syncd.connectors.sharepoint.fake import FakeGraph
from syncd.connectors.sharepoint.quickxor import QuickXorHash, quickxor_b64

ROOT = Path(__file__).parents[1]
SCOPE = "https://graph.microsoft.com/.default"
GRAPH_JSON = (
    "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; "
    "charset=utf-8"
)
# Keys of the reference delta pages (Microsoft's documentation, SOURCES.md "graph/").
FILE_KEYS = {
    "id", "name", "webUrl", "createdDateTime", "lastModifiedDateTime", "eTag", "cTag", "size",
    "createdBy", "lastModifiedBy", "file", "parentReference", "fileSystemInfo",
}
FOLDER_KEYS = FILE_KEYS - {"cTag", "file"} | {"folder"}
ROOT_KEYS = FOLDER_KEYS | {"cTag", "root"}
TOMBSTONE_KEYS = {"id", "deleted", "parentReference", "lastModifiedDateTime", "size"}
_names = itertools.count(1)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGraph]:
    with FakeGraph(page_size=50) as f:
        yield f


@pytest.fixture(autouse=True)
def _no_faults_left(fake: FakeGraph) -> Iterator[None]:
    yield
    fake.clear_faults()


def trust(fake: FakeGraph) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(fake.ca_file))


def fetch_token(fake: FakeGraph) -> str:
    answer = httpx.post(
        f"{fake.login_url}/{fake.tenant_id}/oauth2/v2.0/token",
        data={
            "client_id": fake.client_id, "client_secret": fake.client_secret,
            "grant_type": "client_credentials", "scope": SCOPE,
        },
        verify=trust(fake),
    )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


class Graph:
    """A bare httpx client of the fake's Graph with a token from its login endpoint."""

    def __init__(self, fake: FakeGraph) -> None:
        self.fake = fake
        self.http = httpx.Client(timeout=10.0, follow_redirects=False)
        self.token = fetch_token(fake)

    def get(self, target: str, headers: dict[str, str] | None = None, **options: Any
            ) -> httpx.Response:
        url = target if target.startswith("http") else self.fake.graph_url + target
        sent = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        return self.http.get(url, headers=sent, **options)

    def pages(self, target: str) -> list[dict[str, Any]]:
        """Every page of an enumeration, following nextLinks to the deltaLink."""
        pages = []
        while True:
            answer = self.get(target)
            assert answer.status_code == 200, answer.text
            page = answer.json()
            pages.append(page)
            if "@odata.nextLink" not in page:
                assert "@odata.deltaLink" in page
                return pages
            assert "@odata.deltaLink" not in page
            target = page["@odata.nextLink"]

    def enumerate(self, target: str) -> tuple[list[dict[str, Any]], str]:
        pages = self.pages(target)
        return [item for page in pages for item in page["value"]], pages[-1]["@odata.deltaLink"]


@pytest.fixture
def graph(fake: FakeGraph) -> Iterator[Graph]:
    client = Graph(fake)
    yield client
    client.http.close()


def new_library(fake: FakeGraph, site: str = "/sites/Manufacturers") -> str:
    return fake.add_library("contoso.sharepoint.com", site, f"Library {next(_names)}")


def root_id(graph: Graph, drive: str) -> str:
    answer = graph.get(f"/drives/{drive}/root")
    assert answer.status_code == 200
    value: str = answer.json()["id"]
    return value


# --- the login endpoint and azure-identity ------------------------------------------------------


def test_client_secret_credential_gets_a_token_graph_accepts(fake: FakeGraph) -> None:
    before = fake.token_requests
    credential = ClientSecretCredential(
        fake.tenant_id, fake.client_id, fake.client_secret,
        authority=fake.login_authority, disable_instance_discovery=True,
        connection_verify=str(fake.ca_file),
    )
    token = credential.get_token(SCOPE)
    assert token.expires_on > time.time() + 3000
    assert fake.token_requests == before + 1
    drive = new_library(fake)
    answer = httpx.get(f"{fake.graph_url}/drives/{drive}",
                       headers={"Authorization": f"Bearer {token.token}"})
    assert answer.status_code == 200 and answer.json()["driveType"] == "documentLibrary"
    claims = json.loads(base64.urlsafe_b64decode(token.token.split(".")[1] + "=="))
    assert claims["tid"] == fake.tenant_id and claims["appid"] == fake.client_id
    credential.close()


def test_certificate_credential_signs_an_assertion_the_fake_verifies(fake: FakeGraph) -> None:
    credential = CertificateCredential(
        fake.tenant_id, fake.client_id, certificate_data=fake.certificate_pem,
        authority=fake.login_authority, disable_instance_discovery=True,
        connection_verify=str(fake.ca_file),
    )
    token = credential.get_token(SCOPE)
    answer = httpx.get(f"{fake.graph_url}/sites/contoso.sharepoint.com:/sites/Manufacturers",
                       headers={"Authorization": f"Bearer {token.token}"})
    fake.add_site()
    assert answer.status_code in (200, 404)  # authorised either way
    assert answer.json().get("error", {}).get("code") != "InvalidAuthenticationToken"
    credential.close()


def test_a_foreign_certificate_is_refused(fake: FakeGraph) -> None:
    with FakeGraph() as other:  # same tenant and app ids, another certificate
        credential = CertificateCredential(
            fake.tenant_id, fake.client_id, certificate_data=other.certificate_pem,
            authority=fake.login_authority, disable_instance_discovery=True,
            connection_verify=str(fake.ca_file),
        )
        with pytest.raises(ClientAuthenticationError, match="AADSTS700027"):
            credential.get_token(SCOPE)


def test_wrong_secret_and_unknown_tenant_get_entra_errors(fake: FakeGraph) -> None:
    credential = ClientSecretCredential(
        fake.tenant_id, fake.client_id, "not-the-secret",
        authority=fake.login_authority, disable_instance_discovery=True,
        connection_verify=str(fake.ca_file),
    )
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        credential.get_token(SCOPE)
    form = {"client_id": fake.client_id, "client_secret": "nope",
            "grant_type": "client_credentials", "scope": SCOPE}
    wrong = httpx.post(f"{fake.login_url}/{fake.tenant_id}/oauth2/v2.0/token", data=form,
                       verify=trust(fake))
    assert wrong.status_code == 401
    body = wrong.json()
    assert body["error"] == "invalid_client" and body["error_codes"] == [7000215]
    assert body["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    unknown = httpx.post(f"{fake.login_url}/no-such-tenant/oauth2/v2.0/token", data=form,
                         verify=trust(fake))
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "invalid_request"
    assert unknown.json()["error_codes"] == [90002]


def test_openid_configuration_points_at_the_fake(fake: FakeGraph) -> None:
    answer = httpx.get(
        f"{fake.login_url}/{fake.tenant_id}/v2.0/.well-known/openid-configuration",
        verify=trust(fake),
    )
    config = answer.json()
    base = f"https://{fake.login_authority}/{fake.tenant_id}"
    assert config["token_endpoint"] == f"{base}/oauth2/v2.0/token"
    assert config["authorization_endpoint"] == f"{base}/oauth2/v2.0/authorize"
    assert config["issuer"] == f"{base}/v2.0"
    assert config["jwks_uri"] == f"{base}/discovery/v2.0/keys"
    with pytest.raises(httpx.ConnectError):  # the certificate is not trusted by default
        httpx.get(f"{fake.login_url}/{fake.tenant_id}/v2.0/.well-known/openid-configuration")


# --- msgraph-sdk (kiota) --------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:This class is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:GetQueryParameters is deprecated:DeprecationWarning")
def test_graph_service_client_reads_delta_pages(fake: FakeGraph) -> None:
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )
    from msgraph import GraphRequestAdapter, GraphServiceClient

    drive = new_library(fake)
    fake.seed_library(drive, files=70, seed=4)
    expected = len(fake.snapshot(drive)) + 1
    credential = ClientSecretCredential(
        fake.tenant_id, fake.client_id, fake.client_secret, authority=fake.login_authority,
        disable_instance_discovery=True, connection_verify=str(fake.ca_file),
    )
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[SCOPE],
                                               allowed_hosts=["127.0.0.1"])
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = fake.graph_url
    explicit = GraphServiceClient(request_adapter=adapter)
    simple = GraphServiceClient(credentials=credential, scopes=[SCOPE])
    simple.request_adapter.base_url = fake.graph_url

    async def enumerate_with(client: GraphServiceClient) -> tuple[int, str]:
        delta = client.drives.by_drive_id(drive).items.by_drive_item_id("root").delta
        page = await delta.get()
        assert page is not None and page.value is not None
        seen = len(page.value)
        while page.odata_next_link:
            page = await delta.with_url(page.odata_next_link).get()
            assert page is not None and page.value is not None
            seen += len(page.value)
        assert page.odata_delta_link is not None
        hashes = [i.file.hashes.quick_xor_hash for i in page.value if i.file and i.file.hashes]
        assert all(hashes)
        return seen, page.odata_delta_link

    for client in (explicit, simple):
        seen, delta_link = asyncio.run(enumerate_with(client))
        assert seen == expected
        assert delta_link.startswith(f"{fake.graph_url}/drives/{drive}/root/delta?token=")
    assert fake.request_count(f"/v1.0/drives/*{drive[2:]}/items/root/delta()") == 2
    credential.close()


@pytest.mark.filterwarnings("ignore:This class is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:GetQueryParameters is deprecated:DeprecationWarning")
def test_kiota_retry_handler_retries_throttling_unless_switched_off(fake: FakeGraph) -> None:
    from kiota_abstractions.api_error import APIError
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )
    from kiota_http.middleware.options import RetryHandlerOption
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph_core import GraphClientFactory

    drive = new_library(fake)
    credential = ClientSecretCredential(
        fake.tenant_id, fake.client_id, fake.client_secret, authority=fake.login_authority,
        disable_instance_discovery=True, connection_verify=str(fake.ca_file),
    )
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[SCOPE],
                                               allowed_hosts=["127.0.0.1"])
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = fake.graph_url
    client = GraphServiceClient(request_adapter=adapter)
    pattern = f"*/drives/*{drive[2:]}"

    async def get_drive(
        graph: GraphServiceClient, config: RequestConfiguration[Any] | None = None
    ) -> Any:
        return await graph.drives.by_drive_id(drive).get(request_configuration=config)

    async def scenario() -> None:  # one event loop: the httpx pools belong to it
        # By default kiota retries a 429 itself, after the Retry-After the fake sent.
        fake.add_fault("throttle", drive_id=drive, retry_after=1)
        fake.reset_counters()
        started = time.monotonic()
        assert await get_drive(client) is not None
        assert time.monotonic() - started >= 1.0
        assert fake.request_count(pattern) == 2
        # Per request: RetryHandlerOption(max_retries=0) hands the 503 straight to the caller.
        fake.add_fault("unavailable", drive_id=drive, retry_after=1)
        fake.reset_counters()
        config: RequestConfiguration[Any] = RequestConfiguration(
            options=[RetryHandlerOption(delay=0, max_retries=0, should_retry=False)]
        )
        with pytest.raises(APIError) as caught:
            await get_drive(client, config)
        assert caught.value.response_status_code == 503
        assert fake.request_count(pattern) == 1
        # Per client: the httpx client built with the option switched off.
        http = GraphClientFactory.create_with_default_middleware(
            options={RetryHandlerOption.get_key(): RetryHandlerOption(0, 0, False)}
        )
        quiet_adapter = GraphRequestAdapter(auth, client=http)
        quiet_adapter.base_url = fake.graph_url
        quiet = GraphServiceClient(request_adapter=quiet_adapter)
        fake.add_fault("gateway_timeout", drive_id=drive)
        fake.reset_counters()
        with pytest.raises(APIError) as caught:
            await get_drive(quiet)
        assert caught.value.response_status_code == 504
        assert fake.request_count(pattern) == 1

    asyncio.run(scenario())
    credential.close()


# --- Graph basics ---------------------------------------------------------------------------------


def test_sites_by_address_and_id_and_their_drives(fake: FakeGraph, graph: Graph) -> None:
    first = fake.add_library("contoso.sharepoint.com", "/sites/Lasers", "Documents")
    second = fake.add_library("contoso.sharepoint.com", "/sites/Lasers", "Candela")
    by_address = graph.get("/sites/contoso.sharepoint.com:/sites/Lasers")
    assert by_address.status_code == 200
    assert by_address.headers["content-type"] == GRAPH_JSON
    site = by_address.json()
    assert site["id"].startswith("contoso.sharepoint.com,") and site["id"].count(",") == 2
    assert site["webUrl"] == "https://contoso.sharepoint.com/sites/Lasers"
    assert site["name"] == "Lasers" and site["displayName"] == "Lasers"
    selected = graph.get("/sites/contoso.sharepoint.com:%2Fsites%2FLasers:?$select=id,webUrl")
    assert {k for k in selected.json() if not k.startswith("@")} == {"id", "webUrl"}
    encoded_id = site["id"].replace(",", "%2C")
    assert graph.get(f"/sites/{encoded_id}").json()["id"] == site["id"]
    drives = graph.get(f"/sites/{encoded_id}/drives").json()
    assert [d["id"] for d in drives["value"]] == [first, second]
    assert drives["value"][0]["webUrl"] == "https://contoso.sharepoint.com/sites/Lasers/Shared%20Documents"
    assert all(d["driveType"] == "documentLibrary" and d["id"].startswith("b!")
               for d in drives["value"])
    assert graph.get("/sites/contoso.sharepoint.com:/sites/Lasers:/drives").json()["value"]
    missing = graph.get("/sites/contoso.sharepoint.com:/sites/Nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "itemNotFound"


def test_authorization_and_correlation_headers(fake: FakeGraph, graph: Graph) -> None:
    drive = new_library(fake)
    answer = graph.get(f"/drives/{drive}", headers={"client-request-id": "abc-123"})
    assert answer.headers["client-request-id"] == "abc-123" and answer.headers["request-id"]
    anonymous = httpx.get(f"{fake.graph_url}/drives/{drive}")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer ")
    error = anonymous.json()["error"]
    assert error["code"] == "InvalidAuthenticationToken"
    assert error["message"] == "Access token is empty."
    assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}
    forged = httpx.get(f"{fake.graph_url}/drives/{drive}",
                       headers={"Authorization": "Bearer eyJ.forged.token"})
    assert forged.status_code == 401
    fake.invalidate_access_tokens()
    expired = graph.get(f"/drives/{drive}")
    assert expired.status_code == 401
    assert expired.json()["error"]["message"] == "Lifetime validation failed, the token is expired."
    graph.token = fetch_token(fake)
    assert graph.get(f"/drives/{drive}").status_code == 200


# --- delta ----------------------------------------------------------------------------------------


def test_first_enumeration_pages_through_every_item_in_graph_format(
    fake: FakeGraph, graph: Graph
) -> None:
    drive = new_library(fake)
    file_ids = fake.seed_library(drive, files=120, producers=("Candela", "Fotona"), seed=3)
    snapshot = fake.snapshot(drive)
    pages = graph.pages(f"/drives/{drive}/root/delta")
    items = [item for page in pages for item in page["value"]]
    assert len(items) == len(snapshot) + 1
    assert len(pages) == -(-len(items) // 50)
    assert all(len(page["value"]) == 50 for page in pages[:-1])
    for page in pages:
        assert page["@odata.context"] == f"{fake.graph_url}/$metadata#Collection(driveItem)"
        link = page.get("@odata.nextLink") or page["@odata.deltaLink"]
        assert link.startswith(f"{fake.graph_url}/drives/{drive}/root/delta?token=")
    root = items[0]
    assert set(root) == ROOT_KEYS and root["root"] == {} and root["name"] == "root"
    assert root["parentReference"] == {"driveType": "documentLibrary", "driveId": drive}
    by_id = {item["id"]: item for item in items[1:]}
    assert by_id.keys() == snapshot.keys() and set(file_ids) <= by_id.keys()
    for item_id, item in by_id.items():
        expected = snapshot[item_id]
        assert set(item) == (FILE_KEYS if expected["kind"] == "file" else FOLDER_KEYS)
        assert "path" not in item["parentReference"]
        assert item["parentReference"]["id"] == expected["parent_id"]
        assert item["parentReference"]["driveId"] == drive
        assert (item["name"], item["size"], item["eTag"], item["webUrl"]) == (
            expected["name"], expected["size"], expected["etag"], expected["web_url"])
        assert item["lastModifiedDateTime"] == expected["modified_at"]
        assert "email" not in item["lastModifiedBy"].get("user", {}) or (
            item["lastModifiedBy"]["user"]["displayName"] == "Service Documentation Team")
        if expected["kind"] == "file":
            assert item["file"]["hashes"]["quickXorHash"] == expected["quick_xor_hash"]
            assert item["file"]["mimeType"] == expected["mime_type"]
        else:
            assert item["folder"]["childCount"] >= 1
    paths = {entry["path"] for entry in snapshot.values()}
    assert "/" in paths and any(p.count("/") == 3 and "/Manuals" in p for p in paths)
    videos = [e for e in snapshot.values() if e["mime_type"] == "video/mp4"]
    pdfs = [e for e in snapshot.values() if e["mime_type"] == "application/pdf"]
    assert videos and pdfs
    assert all(5_000_000 <= e["size"] <= 300_000_000 for e in videos)
    assert all(50_000 <= e["size"] <= 20_000_000 for e in pdfs)


def test_next_delta_reports_each_kind_of_change(fake: FakeGraph, graph: Graph) -> None:
    drive = new_library(fake)
    docs = fake.add_folder(drive, "Docs")
    renamed = fake.add_file(drive, "a.pdf", docs, size=1000)
    moved = fake.add_file(drive, "b.pdf", docs, size=2000)
    modified = fake.add_file(drive, "c.docx", docs, size=3000)
    doomed_file = fake.add_file(drive, "d.pdf", docs, size=4000)
    old = fake.add_folder(drive, "Old")
    old_file = fake.add_file(drive, "old.pdf", old)
    old_sub = fake.add_folder(drive, "Sub", old)
    old_deep = fake.add_file(drive, "deep.jpg", old_sub)
    untouched = fake.add_file(drive, "e.pdf", docs)
    items, delta_link = graph.enumerate(f"/drives/{drive}/root/delta")
    before = {item["id"]: item for item in items}
    root = root_id(graph, drive)

    added = fake.add_file(drive, "new.mp4", docs, size=5_000_001)
    fake.rename(drive, renamed, "a (EN).pdf")
    fake.move(drive, moved, None)
    fake.modify(drive, modified)
    fake.delete(drive, doomed_file)
    assert set(fake.delete(drive, old)) == {old, old_file, old_sub, old_deep}
    changes, next_link = graph.enumerate(delta_link)
    by_id = {item["id"]: item for item in changes}
    assert by_id.keys() == {added, renamed, moved, modified, doomed_file, old, old_file,
                            old_sub, old_deep}
    assert untouched not in by_id
    assert by_id[added]["name"] == "new.mp4" and by_id[added]["size"] == 5_000_001
    assert by_id[renamed]["name"] == "a (EN).pdf"
    assert by_id[renamed]["eTag"] != before[renamed]["eTag"]
    assert by_id[renamed]["cTag"] == before[renamed]["cTag"]
    assert by_id[moved]["parentReference"]["id"] == root
    assert by_id[modified]["cTag"] != before[modified]["cTag"]
    assert by_id[modified]["size"] == before[modified]["size"]
    assert (by_id[modified]["file"]["hashes"]["quickXorHash"]
            != before[modified]["file"]["hashes"]["quickXorHash"])
    for gone in (doomed_file, old, old_file, old_sub, old_deep):
        tombstone = by_id[gone]
        kind = "folder" if gone in (old, old_sub) else "file"
        assert set(tombstone) == TOMBSTONE_KEYS | {kind}
        assert tombstone["deleted"] == {"state": "deleted"} and tombstone[kind] == {}
        assert tombstone["size"] == 0 and "name" not in tombstone
        assert tombstone["parentReference"]["id"] == before[gone]["parentReference"]["id"]
    quiet = graph.pages(next_link)
    assert len(quiet) == 1 and quiet[0]["value"] == []
    assert quiet[0]["@odata.deltaLink"].startswith(f"{fake.graph_url}/drives/{drive}/")


def test_changes_while_paging_are_not_lost(fake: FakeGraph, graph: Graph) -> None:
    drive = new_library(fake)
    fake.seed_library(drive, files=130, seed=9)
    first = graph.get(f"/drives/{drive}/root/delta").json()
    served = [item["id"] for item in first["value"]]
    pending = [i for i in fake.snapshot(drive) if i not in served]
    fake.modify(drive, served[-1])
    fake.modify(drive, pending[-1])
    fake.rename(drive, pending[0], "renamed while paging.pdf")
    added = fake.add_file(drive, "added while paging.pdf")
    rest, delta_link = graph.enumerate(first["@odata.nextLink"])
    changes, _ = graph.enumerate(delta_link)
    last_seen: dict[str, dict[str, Any]] = {}
    for item in [*first["value"], *rest, *changes]:
        last_seen[item["id"]] = item
    snapshot = fake.snapshot(drive)
    assert snapshot.keys() <= last_seen.keys()
    for item_id, entry in snapshot.items():
        assert last_seen[item_id]["eTag"] == entry["etag"]
        assert last_seen[item_id]["name"] == entry["name"]
    assert {added, served[-1], pending[-1], pending[0]} <= {item["id"] for item in changes}


def test_delta_url_forms_and_page_size(fake: FakeGraph, graph: Graph) -> None:
    drive = new_library(fake)
    fake.seed_library(drive, files=20, seed=1)
    root = root_id(graph, drive)
    forms = ["/root/delta", "/root/delta()", "/items/root/delta", "/items/root/delta()",
             f"/items/{root}/delta", f"/items/{root}/delta()",
             "/root/delta?$select=id,name,file,folder,deleted,parentReference"]
    for form in forms:
        answer = graph.get(f"/drives/{drive}{form}")
        assert answer.status_code == 200, form
        assert answer.json()["value"][0]["id"] == root
    encoded = drive.replace("!", "%21")
    assert graph.get(f"/drives/{encoded}/items/root/delta()").status_code == 200
    first = graph.get(f"/drives/{drive}/root/delta?$top=7").json()
    assert len(first["value"]) == 7
    assert len(graph.get(first["@odata.nextLink"]).json()["value"]) == 7
    folder = next(k for k, v in fake.snapshot(drive).items() if v["kind"] == "folder")
    assert graph.get(f"/drives/{drive}/items/{folder}/delta").status_code == 400
    assert graph.get(f"/drives/{drive}/root/delta?token=garbage").status_code == 400


def test_repeat_item_fault_repeats_an_earlier_item(fake: FakeGraph, graph: Graph) -> None:
    drive = new_library(fake)
    fake.seed_library(drive, files=80, seed=2)
    fake.add_fault("repeat_item", drive_id=drive)
    pages = graph.pages(f"/drives/{drive}/root/delta")
    assert len(pages[0]["value"]) == 50  # the first page has nothing to repeat
    ids = [item["id"] for page in pages for item in page["value"]]
    assert len(ids) == len(fake.snapshot(drive)) + 2
    repeated = [item_id for item_id in set(ids) if ids.count(item_id) == 2]
    assert len(repeated) == 1
    assert repeated[0] in {item["id"] for item in pages[0]["value"]}
    assert not fake.faults.pending


def test_expired_delta_tokens_answer_410(fake: FakeGraph, graph: Graph) -> None:
    drive = new_library(fake)
    fake.seed_library(drive, files=60, seed=5)
    _, delta_link = graph.enumerate(f"/drives/{drive}/root/delta")
    next_link = graph.get(f"/drives/{drive}/root/delta").json()["@odata.nextLink"]
    other = new_library(fake)
    _, other_link = graph.enumerate(f"/drives/{other}/root/delta")
    fake.expire_delta_tokens(drive)
    for link in (delta_link, next_link):
        gone = graph.get(link)
        assert gone.status_code == 410
        error = gone.json()["error"]
        assert error["code"] == "resyncRequired"
        assert error["message"].startswith("Resync required.")
    assert graph.get(other_link).status_code == 200
    _, fresh = graph.enumerate(f"/drives/{drive}/root/delta")
    assert graph.get(fresh).status_code == 200


# --- faults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "code", "retry_after"),
    [
        ("throttle", 429, "TooManyRequests", "1"),
        ("unavailable", 503, "serviceNotAvailable", "1"),
        ("gateway_timeout", 504, "gatewayTimeout", None),
        ("forbidden", 403, "accessDenied", None),
        ("not_found", 404, "itemNotFound", None),
        ("resync", 410, "resyncRequired", None),
    ],
)
def test_status_faults(
    fake: FakeGraph, graph: Graph, kind: str, status: int, code: str, retry_after: str | None
) -> None:
    drive = new_library(fake)
    fake.add_fault(kind)
    answer = graph.get(f"/drives/{drive}/root/delta", headers={"client-request-id": "req-1"})
    assert answer.status_code == status
    assert answer.headers["content-type"] == GRAPH_JSON
    assert answer.headers.get("Retry-After") == retry_after
    error = answer.json()["error"]
    assert error["code"] == code and error["message"]
    assert error["innerError"]["client-request-id"] == "req-1"
    assert error["innerError"]["request-id"] == answer.headers["request-id"]
    assert graph.get(f"/drives/{drive}/root/delta").status_code == 200  # times=1


def test_retry_after_is_configurable(fake: FakeGraph, graph: Graph) -> None:
    fake.add_fault("throttle", retry_after=7)
    assert graph.get(f"/drives/{new_library(fake)}").headers["Retry-After"] == "7"


def test_transport_faults(fake: FakeGraph, graph: Graph) -> None:
    drive = new_library(fake)
    fake.add_fault("html")
    page = graph.get(f"/drives/{drive}")
    assert page.status_code == 500 and page.headers["content-type"].startswith("text/html")
    assert page.text.startswith("<!DOCTYPE html")
    fake.add_fault("drop")
    with pytest.raises(httpx.RemoteProtocolError):
        graph.get(f"/drives/{drive}")
    fake.add_fault("truncate")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        graph.get(f"/drives/{drive}/root/delta")
    fake.add_fault("slow", delay=0.3)
    started = time.monotonic()
    assert graph.get(f"/drives/{drive}").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_token_expired_fault_revokes_every_token(fake: FakeGraph, graph: Graph) -> None:
    drive = new_library(fake)
    fake.add_fault("token_expired")
    answer = graph.get(f"/drives/{drive}")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert answer.json()["error"]["message"] == "Lifetime validation failed, the token is expired."
    assert graph.get(f"/drives/{drive}").status_code == 401  # the old token stays refused
    graph.token = fetch_token(fake)
    assert graph.get(f"/drives/{drive}").status_code == 200


def test_faults_scoped_to_a_drive_or_a_path(fake: FakeGraph, graph: Graph) -> None:
    locked, open_drive = new_library(fake), new_library(fake)
    fake.add_fault("forbidden", times=None, drive_id=locked)
    for _ in range(3):
        assert graph.get(f"/drives/{locked}/root/delta").status_code == 403
        assert graph.get(f"/drives/{open_drive}/root/delta").status_code == 200
    fake.clear_faults()
    file_id = fake.add_file(open_drive, "x.pdf", size=10)
    fake.add_fault("not_found", path="/v1.0/drives/*/items/*", after=1)
    assert graph.get(f"/drives/{open_drive}/root").status_code == 200  # no match
    assert graph.get(f"/drives/{open_drive}/items/{file_id}").status_code == 200  # after=1
    assert graph.get(f"/drives/{open_drive}/items/{file_id}").status_code == 404
    assert graph.get(f"/drives/{open_drive}/items/{file_id}").status_code == 200


# --- items, downloads and content -----------------------------------------------------------------


def test_item_download_url_and_ranges(fake: FakeGraph, graph: Graph) -> None:
    drive = new_library(fake)
    folder = fake.add_folder(drive, "Manuals")
    file_id = fake.add_file(drive, "Manual (EN).pdf", folder, size=300_001)
    selected = graph.get(f"/drives/{drive}/items/{file_id}"
                         "?$select=id,name,size,file,@microsoft.graph.downloadUrl").json()
    assert set(selected) == {"@odata.context", "@microsoft.graph.downloadUrl", "id", "name",
                             "size", "file"}
    full = graph.get(f"/drives/{drive}/items/{file_id}").json()
    assert full["parentReference"]["path"] == f"/drives/{drive}/root:/Manuals"
    url = selected["@microsoft.graph.downloadUrl"]
    assert url.startswith(f"{fake.base_url}/_download/")
    expected = fake.content(drive, file_id)
    answer = httpx.get(url)  # pre-authenticated: no Authorization
    assert answer.status_code == 200 and answer.content == expected
    assert answer.headers["content-type"] == "application/pdf"
    assert answer.headers["content-length"] == "300001"
    assert answer.headers["accept-ranges"] == "bytes"
    assert answer.headers["etag"] == full["eTag"]
    assert expected.startswith(b"%PDF-1.7\n") and expected.endswith(b"%%EOF\n")
    assert quickxor_b64(answer.content) == selected["file"]["hashes"]["quickXorHash"]
    for header, status, content_range, body in [
        ("bytes=0-99", 206, "bytes 0-99/300001", expected[:100]),
        ("bytes=299990-", 206, "bytes 299990-300000/300001", expected[299_990:]),
        ("bytes=-10", 206, "bytes 299991-300000/300001", expected[-10:]),
        ("bytes=100-99999999", 206, "bytes 100-300000/300001", expected[100:]),
        ("bytes=300001-", 416, "bytes */300001", b""),
    ]:
        ranged = httpx.get(url, headers={"Range": header})
        assert ranged.status_code == status, header
        assert ranged.headers["content-range"] == content_range
        assert ranged.content == body
    head = httpx.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == "300001"
    assert head.content == b""
    redirect = graph.get(f"/drives/{drive}/items/{file_id}/content")
    assert redirect.status_code == 302
    assert redirect.headers["location"].startswith(f"{fake.base_url}/_download/")
    fake.expire_download_urls()
    assert httpx.get(url).status_code == 401
    fresh = graph.get(f"/drives/{drive}/items/{file_id}").json()["@microsoft.graph.downloadUrl"]
    assert httpx.get(fresh, headers={"Range": "bytes=0-3"}).content == b"%PDF"
    fake.delete(drive, file_id)
    assert httpx.get(fresh).status_code == 404
    missing = graph.get(f"/drives/{drive}/items/{file_id}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "itemNotFound"


def test_download_urls_expire(fake: FakeGraph) -> None:
    drive = new_library(fake)
    file_id = fake.add_file(drive, "a.pdf", size=100)
    lifetime = fake.downloads.lifetime
    fake.downloads.lifetime = -1.0
    try:
        assert httpx.get(fake.download_url(drive, file_id)).status_code == 401
    finally:
        fake.downloads.lifetime = lifetime
    assert httpx.get(fake.download_url(drive, file_id)).status_code == 200
    assert httpx.get(f"{fake.base_url}/_download/garbage").status_code == 401


MAGIC = {
    "pdf": b"%PDF-1.7\n",
    "mp4": b"\x00\x00\x00\x18ftypmp42",
    "jpg": b"\xff\xd8\xff\xe0",
    "png": b"\x89PNG\r\n\x1a\n",
    "docx": b"PK\x03\x04",
    "xlsx": b"PK\x03\x04",
}


def test_generated_content_has_magic_bytes_and_its_true_hash(fake: FakeGraph) -> None:
    drive = new_library(fake)
    sizes = [0, 1, 159, 160, 161, 1000, 65_439, 65_440, 65_441, 131_071, 1_000_003]
    created = []
    for kind in MAGIC:
        for size in sizes if kind == "pdf" else [9_999, 200_001]:
            created.append((kind, size, fake.add_file(drive, f"{kind}-{size}.{kind}", size=size)))
    snapshot = fake.snapshot(drive)
    for kind, size, item_id in created:
        data = fake.content(drive, item_id)
        assert len(data) == size == snapshot[item_id]["size"]
        assert quickxor_b64(data) == snapshot[item_id]["quick_xor_hash"]
        if size >= 1000:
            assert data.startswith(MAGIC[kind]), kind
    for _kind, _size, item_id in created[5:9]:  # over HTTP too, odd sizes included
        streamed = QuickXorHash()
        with httpx.stream("GET", fake.download_url(drive, item_id)) as answer:
            for chunk in answer.iter_bytes():
                streamed.update(chunk)
        assert streamed.b64digest() == snapshot[item_id]["quick_xor_hash"]
    pdf = created[6][2]
    fake.modify(drive, pdf)
    changed = fake.snapshot(drive)[pdf]
    assert changed["size"] == snapshot[pdf]["size"]
    assert changed["quick_xor_hash"] != snapshot[pdf]["quick_xor_hash"]
    assert quickxor_b64(fake.content(drive, pdf)) == changed["quick_xor_hash"]
    given = fake.add_file(drive, "given.txt", content=b"hello", kind="bin")
    assert fake.content(drive, given) == b"hello"
    assert fake.snapshot(drive)[given]["quick_xor_hash"] == quickxor_b64(b"hello")


def test_large_files_stream_without_holding_them(fake: FakeGraph) -> None:
    drive = new_library(fake)
    big = fake.add_file(drive, "Service Training.mp4", size=64 * 1024 * 1024)
    huge = fake.add_file(drive, "Full Course.mp4", size=1 << 30)
    expected = fake.snapshot(drive)
    assert expected[huge]["size"] == 1 << 30
    tracemalloc.start()
    try:
        streamed = QuickXorHash()
        with httpx.stream("GET", fake.download_url(drive, big)) as answer:
            assert answer.headers["content-length"] == str(64 * 1024 * 1024)
            for chunk in answer.iter_bytes(64 * 1024):
                streamed.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert streamed.length == 64 * 1024 * 1024
    assert streamed.b64digest() == expected[big]["quick_xor_hash"]
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while streaming 64 MiB"
    tail = httpx.get(fake.download_url(drive, huge), headers={"Range": "bytes=-5000"})
    assert tail.status_code == 206
    assert tail.content == b"".join(fake.iter_content(drive, huge, (1 << 30) - 5000))
    with pytest.raises(ValueError, match="iter_content"):
        fake.content(drive, huge)


# --- control API, runner, lifecycle ---------------------------------------------------------------


def test_control_api_round_trip(fake: FakeGraph, graph: Graph) -> None:
    control = httpx.Client(base_url=fake.control_url, timeout=10.0)
    seeded = control.post("seed", json={"site_path": "/sites/Control", "library": "Lumenis",
                                        "files": 40, "producers": ["Lumenis"], "seed": 2}).json()
    drive = seeded["drive_id"]
    assert len(seeded["file_ids"]) == 40
    assert any(lib["drive_id"] == drive and lib["name"] == "Lumenis"
               for lib in control.get("libraries").json())
    _, delta_link = graph.enumerate(f"/drives/{drive}/root/delta")
    first, second, third = seeded["file_ids"][:3]
    results = control.post("mutate", json={"drive_id": drive, "ops": [
        {"op": "rename", "item_id": first, "name": "Renamed.pdf"},
        {"op": "modify", "item_id": second, "size": 12345},
        {"op": "delete", "item_id": third},
        {"op": "add_file", "name": "Fresh.pdf", "size": 777},
        {"op": "add_file", "name": "Given.bin", "content_b64": base64.b64encode(b"hi").decode()},
    ]}).json()["results"]
    fresh = results[3]["id"]
    change = control.post("mutate", json={"drive_id": drive, "op": "change", "percent": 25,
                                          "seed": 1}).json()
    assert sum(len(ids) for ids in change.values()) == 10
    changes, _ = graph.enumerate(delta_link)
    changed_ids = {item["id"] for item in changes}
    assert {first, second, third, fresh} <= changed_ids
    assert {i for ids in change.values() for i in ids} <= changed_ids
    snapshot = control.get("snapshot", params={"drive_id": drive}).json()
    assert snapshot == fake.snapshot(drive) and snapshot[second]["size"] == 12345
    assert control.post("fault", json={"kind": "throttle", "drive_id": drive}).status_code == 200
    assert graph.get(f"/drives/{drive}").status_code == 429
    control.post("expire_delta_tokens", json={"drive_id": drive})
    assert graph.get(delta_link).status_code == 410
    control.post("invalidate_access_tokens")
    assert graph.get(f"/drives/{drive}").status_code == 401
    stats = control.get("stats").json()
    assert stats["requests"] == fake.request_count() and stats["delta_requests"] >= 2
    assert stats["token_requests"] == fake.token_requests
    assert control.post("mutate", json={"drive_id": drive, "op": "explode"}).status_code == 400
    assert control.get("nothing-here").status_code == 404
    control.close()


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_standalone_runner_prints_ready_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "syncd.connectors.sharepoint.fake", "--port", "0",
         "--libraries", "2", "--items", "30", "--seed", "1"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )
    try:
        lines = _lines(process)
        ready = lines.get(timeout=20)
        assert ready.startswith("READY http://127.0.0.1:") and ready.endswith("/v1.0")
        graph_url = ready.split(" ", 1)[1]
        details: dict[str, str] = {}
        libraries = []
        while len(libraries) < 2:
            key, _, value = lines.get(timeout=5).partition(" ")
            if key == "library":
                libraries.append(value.split(" ", 2))
            else:
                details[key] = value
        assert {"login_authority", "login_url", "ca_file", "tenant_id", "client_id",
                "client_secret_file", "certificate_file", "control"} <= details.keys()
        assert [lib[2] for lib in libraries] == ["Candela", "Lumenis"]
        secret = Path(details["client_secret_file"]).read_text()
        token = httpx.post(
            f"{details['login_url']}/{details['tenant_id']}/oauth2/v2.0/token",
            data={"client_id": details["client_id"], "client_secret": secret,
                  "grant_type": "client_credentials", "scope": SCOPE},
            verify=ssl.create_default_context(cafile=details["ca_file"]),
        ).json()["access_token"]
        page = httpx.get(f"{graph_url}/drives/{libraries[0][1]}/root/delta?$top=500",
                         headers={"Authorization": f"Bearer {token}"}).json()
        assert sum("file" in item for item in page["value"]) == 30
        assert httpx.get(details["control"] + "stats").json()["token_requests"] == 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_stop_closes_both_ports_and_restart_keeps_them() -> None:
    fake = FakeGraph()
    fake.start()
    port, tls_port = fake.port, fake.tls_port
    token = fetch_token(fake)
    fake.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(fake.graph_url + "/sites/x", timeout=2.0)
    with pytest.raises(httpx.ConnectError):
        fetch_token(fake)
    fake.start()
    try:
        assert (fake.port, fake.tls_port) == (port, tls_port)
        answer = httpx.get(f"{fake.graph_url}/sites/contoso.sharepoint.com:/sites/None",
                           headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 404  # the token survived the restart
    finally:
        fake.stop()
