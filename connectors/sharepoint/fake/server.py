"""``FakeGraph``: Microsoft Graph (SharePoint document libraries) over plain HTTP on loopback,
plus its Entra ID login endpoint over HTTPS, with a Python API and a ``/_fake/`` control API.

Request flow on the Graph server: ``/_fake/…`` goes to the control API (no token, not logged);
``/v1.0/…`` and ``/_download/…`` are logged, may be hit by an injected fault, and (but for
downloads, which are pre-authenticated) need ``Authorization: Bearer <token from the fake's
login endpoint>``; then :class:`~.graph.GraphRoutes` answers from the data under the fake's lock.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator
from fnmatch import fnmatchcase
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, unquote

from syncd.connectors.fakehttp import LoopbackFake, QuietHandler, TrackingHTTPServer

from .content import Content
from .control import ControlApi
from .directory import Directory
from .downloads import DEFAULT_LIFETIME, DownloadSigner, DownloadTokenError
from .faults import STATUS_FAULTS, Fault, FaultRegistry
from .graph import GraphRoutes
from .library import Library
from .login import AccessTokens, EntraLogin, LoginServer
from .mutations import change_files
from .seeding import DEFAULT_PRODUCERS, seed_library
from .tls import ClientCertificate, ServerCertificates
from .wire import HTML, PLAIN_JSON, Reply, RequestIds, dumps, graph_error, html_error_page

DEFAULT_TENANT_ID: Final = "7f3c5b1e-2d4a-4c8e-9a6f-0b1d2e3f4a5b"
DEFAULT_CLIENT_ID: Final = "3e9a7c21-5b8d-4f60-a1c2-d4e5f6a7b8c9"
GRAPH_APP_ID: Final = "00000003-0000-0000-c000-000000000000"
MAX_CONTENT_BYTES: Final = 256 * 1024 * 1024  # fake.content() refuses larger files
_MAX_LOGGED: Final = 2_000_000


class FakeGraph(LoopbackFake):
    """A fake Microsoft Graph for SharePoint document libraries, with its login endpoint.

    Thread-safe; use ``with FakeGraph() as fake:`` or ``start()``/``stop()``. See the package
    documentation for the wire format, the fault kinds and the control API.
    """

    _name = "graph"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_port: int = 0,
        page_size: int = 200,
        tenant_id: str = DEFAULT_TENANT_ID,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str | None = None,
        download_url_lifetime: float = DEFAULT_LIFETIME,
    ) -> None:
        super().__init__(host, port)
        self.page_size = page_size
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret or "fake8Q~" + secrets.token_urlsafe(30)
        self.lock = threading.RLock()
        self.directory = Directory()
        self.faults = FaultRegistry()
        self.tokens = AccessTokens()
        self.downloads = DownloadSigner(download_url_lifetime)
        self._routes = GraphRoutes(self)
        self._control = ControlApi(self)
        self._log_lock = threading.Lock()
        self._requests: list[tuple[str, str]] = []
        self._dir = Path(tempfile.mkdtemp(prefix="syncd-fake-graph-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, True)
        certificates = ServerCertificates.generate(host)
        self.ca_file = self._dir / "ca.pem"
        self.ca_file.write_bytes(certificates.ca_pem)
        self._client_certificate = ClientCertificate.generate()
        self.login = EntraLogin(
            tenant_id, client_id, self.client_secret, self._client_certificate.certificate,
            self.tokens, self._login_fault,
        )
        self._login_server = LoginServer(
            self.login, certificates.context(self._dir), host, tls_port
        )

    # --- lifecycle ----------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _GraphHandler

    def start(self) -> FakeGraph:
        """Start both servers (a restarted fake keeps its ports)."""
        super().start()
        try:
            self._login_server.start()
        except BaseException:
            super().stop()
            raise
        self.login.base_url = self._login_server.base_url
        return self

    def stop(self) -> None:
        """Stop both servers, cutting open connections."""
        super().stop()
        self._login_server.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def graph_url(self) -> str:
        """``http://127.0.0.1:PORT/v1.0``: what replaces ``https://graph.microsoft.com/v1.0``."""
        return f"{self.base_url}/v1.0"

    @property
    def tls_port(self) -> int:
        """The login endpoint's port."""
        return self._login_server.port

    @property
    def login_authority(self) -> str:
        """``127.0.0.1:TLSPORT``: azure-identity's ``authority``."""
        return f"{self.host}:{self.tls_port}"

    @property
    def login_url(self) -> str:
        """``https://127.0.0.1:TLSPORT``."""
        return self._login_server.base_url

    @property
    def certificate_pem(self) -> bytes:
        """The app's certificate with its private key (PEM), for ``CertificateCredential``."""
        return self._client_certificate.pem

    @property
    def work_dir(self) -> Path:
        """The fake's temporary directory (CA file, TLS material; removed with the fake)."""
        return self._dir

    # --- data ---------------------------------------------------------------------------------

    def add_site(
        self, hostname: str = "contoso.sharepoint.com", path: str = "/sites/Manufacturers",
        name: str | None = None,
    ) -> str:
        """The id of the site at ``hostname`` + ``path`` (created on first use)."""
        with self.lock:
            return self.directory.add_site(hostname, path, name).id

    def add_library(self, hostname: str, site_path: str, name: str) -> str:
        """Create a document library (and its site, if new) with an empty root; its drive id."""
        with self.lock:
            site = self.directory.add_site(hostname, site_path)
            return self.directory.add_library(site, name).id

    def find_library(self, hostname: str, site_path: str, name: str) -> str | None:
        """The drive id of an existing library, or None."""
        with self.lock:
            site = self.directory.site_at(hostname, site_path)
            if site is None:
                return None
            for drive_id in site.drive_ids:
                if self.directory.libraries[drive_id].name.casefold() == name.casefold():
                    return drive_id
            return None

    def libraries(self) -> list[dict[str, Any]]:
        """Every library: site id, hostname, site path, name, drive id, live item count."""
        with self.lock:
            return [
                {
                    "site_id": lib.site.id, "hostname": lib.site.hostname,
                    "site_path": lib.site.path, "name": lib.name, "drive_id": lib.id,
                    "web_url": lib.web_url,
                    "items": sum(1 for _ in lib.live_items()) - 1,
                }
                for lib in self.directory.libraries.values()
            ]

    def add_folder(self, drive_id: str, name: str, parent_id: str | None = None) -> str:
        """Create a folder (``parent_id`` None: at the top); its id."""
        with self.lock:
            return self._library(drive_id).add_folder(name, parent_id).id

    def add_file(
        self,
        drive_id: str,
        name: str,
        parent_id: str | None = None,
        *,
        size: int | None = None,
        kind: str | None = None,
        content: bytes | None = None,
    ) -> str:
        """Create a file; its id. ``content`` gives the bytes; otherwise they are generated:
        ``kind`` (pdf, mp4, jpg, png, docx, xlsx, zip, bin; default from the name's extension,
        else pdf) and ``size`` (default: realistic for the kind; ``1 << 30`` is fine)."""
        with self.lock:
            return self._library(drive_id).add_file(
                name, parent_id, kind=kind, size=size, data=content
            ).id

    def rename(self, drive_id: str, item_id: str, new_name: str) -> None:
        """Rename an item (new eTag and lastModifiedDateTime)."""
        with self.lock:
            self._library(drive_id).rename(item_id, new_name)

    def move(self, drive_id: str, item_id: str, new_parent_id: str | None) -> None:
        """Move an item to another folder (None: the top)."""
        with self.lock:
            self._library(drive_id).move(item_id, new_parent_id)

    def modify(
        self, drive_id: str, item_id: str, size: int | None = None, *,
        content: bytes | None = None,
    ) -> None:
        """A new version of a file: new eTag, cTag, lastModifiedDateTime, bytes and hash
        (``size`` None keeps the size; ``content`` gives the bytes)."""
        with self.lock:
            self._library(drive_id).modify(item_id, size=size, data=content)

    def delete(self, drive_id: str, item_id: str) -> list[str]:
        """Delete an item and, for a folder, everything below it; the ids deleted."""
        with self.lock:
            return self._library(drive_id).delete(item_id)

    def seed_library(
        self,
        drive_id: str,
        *,
        files: int,
        producers: tuple[str, ...] | list[str] = DEFAULT_PRODUCERS,
        seed: int = 0,
        video_share: float = 0.1,
        sizes: dict[str, tuple[int, int]] | None = None,
    ) -> list[str]:
        """Fill a library with a realistic tree (``/Producer/Model/Manuals`` …, see
        :mod:`.seeding`); the new files' ids."""
        with self.lock:
            return seed_library(
                self._library(drive_id), files=files, producers=tuple(producers), seed=seed,
                video_share=video_share, sizes=sizes,
            )

    def change_files(
        self, drive_id: str, percent: float, *, seed: int = 0
    ) -> dict[str, list[str]]:
        """Change ``percent`` % of the library's files (see :mod:`.mutations`)."""
        with self.lock:
            return change_files(self._library(drive_id), percent, seed=seed)

    def snapshot(self, drive_id: str) -> dict[str, dict[str, Any]]:
        """Every live item but the root: ``{id: {name, parent_id, kind, path, size, mime_type,
        quick_xor_hash, etag, ctag, created_at, modified_at, web_url}}``; ``path`` is the
        containing folder's (``/`` at the top)."""
        with self.lock:
            library = self._library(drive_id)
            paths: dict[str, str] = {}
            return {
                item.id: library.snapshot_entry(item, paths)
                for item in library.live_items()
                if item.parent_id is not None
            }

    def content(self, drive_id: str, item_id: str) -> bytes:
        """A file's bytes (refused above 256 MiB: use :meth:`iter_content`)."""
        size = self._content_of(drive_id, item_id).size
        if size > MAX_CONTENT_BYTES:
            raise ValueError(f"the file has {size} bytes; use iter_content()")
        return b"".join(self.iter_content(drive_id, item_id))

    def iter_content(
        self, drive_id: str, item_id: str, start: int = 0, end: int | None = None
    ) -> Iterator[bytes]:
        """A file's bytes ``start`` to ``end`` (exclusive; None: the end) in 64 KiB chunks."""
        return self._content_of(drive_id, item_id).iter_bytes(start, end)

    def download_url(self, drive_id: str, item_id: str) -> str:
        """A fresh pre-authenticated download URL for the item."""
        return f"{self.base_url}/_download/{self.downloads.token(drive_id, item_id)}"

    # --- faults, tokens, counters -------------------------------------------------------------

    def add_fault(
        self,
        kind: str,
        *,
        times: int | None = 1,
        after: int = 0,
        path: str | None = None,
        drive_id: str | None = None,
        retry_after: float | None = None,
        delay: float | None = None,
    ) -> Fault:
        """Arm a fault (kinds and matching: see the package documentation)."""
        return self.faults.add(
            kind, times=times, after=after, path=path, drive_id=drive_id,
            retry_after=retry_after, delay=delay,
        )

    def clear_faults(self) -> None:
        """Disarm every fault."""
        self.faults.clear()

    def expire_delta_tokens(self, drive_id: str | None = None) -> None:
        """Every delta/next token issued so far (for one drive or all) answers 410."""
        with self.lock:
            targets = (
                [self._library(drive_id)] if drive_id is not None
                else list(self.directory.libraries.values())
            )
            for library in targets:
                library.token_epoch += 1

    def invalidate_access_tokens(self) -> None:
        """Every access token issued so far gets 401 InvalidAuthenticationToken."""
        self.tokens.invalidate_all()

    def expire_download_urls(self) -> None:
        """Every download URL issued so far answers 401."""
        self.downloads.revoke_all()

    @property
    def requests(self) -> list[tuple[str, str]]:
        """``(method, path with query)`` of each Graph call and download, oldest first."""
        with self._log_lock:
            return list(self._requests)

    def request_count(self, pattern: str | None = None) -> int:
        """How many Graph calls and downloads; ``pattern`` (fnmatch) filters on the path
        with its query or without it."""
        with self._log_lock:
            if pattern is None:
                return len(self._requests)
            return sum(
                1 for _, target in self._requests
                if fnmatchcase(target, pattern) or fnmatchcase(target.partition("?")[0], pattern)
            )

    @property
    def token_requests(self) -> int:
        """How many token requests the login endpoint had."""
        return self.login.token_requests

    def reset_counters(self) -> None:
        """Forget the request log and the token request count."""
        with self._log_lock:
            self._requests.clear()
        self.login.reset_counters()

    def stats(self) -> dict[str, Any]:
        """Counters for the control API."""
        return {
            "requests": self.request_count(),
            "token_requests": self.token_requests,
            "downloads": self.request_count("/_download/*"),
            "delta_requests": self.request_count("*/delta*"),
            "faults": len(self.faults.pending),
        }

    # --- request handling ---------------------------------------------------------------------

    def handle(self, verb: str, raw_path: str, headers: Any, body: bytes) -> Reply:
        """Answer one request to the Graph server (called by the handler threads)."""
        path, _, query_string = raw_path.partition("?")
        query = parse_qs(query_string, keep_blank_values=True)
        if path.startswith("/_fake/"):
            status, payload = self._control.handle(verb, path[len("/_fake/"):], query, body)
            return Reply(status, dumps(payload), PLAIN_JSON)
        ids = RequestIds.for_request(headers.get("client-request-id"))
        if not path.startswith(("/v1.0/", "/_download/")):
            version = path.strip("/").split("/", 1)[0]
            return graph_error(400, "BadRequest", f"Invalid version: {version}", ids)
        with self._log_lock:
            if len(self._requests) < _MAX_LOGGED:
                self._requests.append((verb, raw_path))
        paths = (path, unquote(path))
        download = path.startswith("/_download/")
        token = path[len("/_download/"):] if download else ""
        drive_id = self._download_drive(token) if download else _drive_of(paths[1])
        fault = self.faults.take(paths, drive_id)
        truncate = False
        if fault is not None:
            if fault.kind == "slow":
                self._stopping.wait(fault.delay or 0.0)
            elif fault.kind == "truncate":
                truncate = True
            else:
                return self._fault_answer(fault, ids)
        if download:
            reply = self._routes.download(verb, token, headers.get("Range"), ids)
            if truncate:
                reply.transport = "truncate"
            return reply
        problem = self.tokens.problem(headers.get("Authorization"))
        if problem is not None:
            return self._unauthorized(problem, ids)
        reply = self._routes.handle(
            verb, path[len("/v1.0/"):], query, ids,
            lambda drive: self.faults.take(paths, drive, page=True) is not None,
        )
        if truncate:
            reply.transport = "truncate"
        return reply

    def _download_drive(self, token: str) -> str | None:
        """The drive a download token names, if it is valid."""
        try:
            return self.downloads.check(token).drive_id
        except DownloadTokenError:
            return None

    def _fault_answer(self, fault: Fault, ids: RequestIds) -> Reply:
        if fault.kind == "drop":
            return Reply(transport="drop", close=True)
        if fault.kind == "html":
            body = html_error_page(500, "Internal server error.")
            return Reply(500, body, HTML, ids.headers())
        if fault.kind == "token_expired":
            self.tokens.invalidate_all()
            return self._unauthorized(STATUS_FAULTS["token_expired"][2], ids)
        status, code, message = STATUS_FAULTS[fault.kind]
        return graph_error(status, code, message, ids, fault.retry_after_header())

    def _unauthorized(self, message: str, ids: RequestIds) -> Reply:
        challenge = (
            f'Bearer realm="", authorization_uri="{self.login_url}/common/oauth2/authorize", '
            f'client_id="{GRAPH_APP_ID}"'
        )
        return graph_error(
            401, "InvalidAuthenticationToken", message, ids, {"WWW-Authenticate": challenge}
        )

    def _login_fault(self, path: str) -> Fault | None:
        return self.faults.take((path, unquote(path)), None)

    def _library(self, drive_id: str) -> Library:
        return self.directory.library(drive_id)

    def _content_of(self, drive_id: str, item_id: str) -> Content:
        with self.lock:
            item = self._library(drive_id).live(item_id)
            if item.content is None:
                raise ValueError(f"item {item_id} is a folder")
            return item.content


def _drive_of(path: str) -> str | None:
    """The drive id of a ``/v1.0/drives/{d}/…`` path, if it is one."""
    prefix = "/v1.0/drives/"
    if not path.startswith(prefix):
        return None
    return path[len(prefix):].split("/", 1)[0] or None


class _GraphHandler(QuietHandler):
    """Reads a request, lets :class:`FakeGraph` answer it, writes the answer (streamed for
    downloads)."""

    server_version = "Microsoft-IIS/10.0"
    verbs = frozenset({"GET", "HEAD", "POST", "DELETE"})
    server: TrackingHTTPServer[FakeGraph]

    def serve(self, verb: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        try:
            reply = self.server.fake.handle(verb, self.path, self.headers, body)
        except Exception as exc:  # a bug in the fake must not hang the client
            reply = Reply(500, dumps({"error": f"fake server bug: {exc!r}"}), PLAIN_JSON)
        self._write(reply, head=verb == "HEAD")

    def _write(self, reply: Reply, *, head: bool) -> None:
        if reply.close or reply.transport == "drop":
            self.close_connection = True
        if reply.transport == "drop":
            return
        length = reply.content_length
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(length))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.close:
            self.send_header("Connection", "close")
        self.end_headers()
        if head:
            return
        limit = length // 2 if reply.transport == "truncate" else length
        chunks = reply.stream if reply.stream is not None else (reply.body,)
        sent = 0
        for chunk in chunks:
            piece = chunk[: limit - sent]
            if piece:
                self.wfile.write(piece)
                sent += len(piece)
            if sent >= limit:
                break
        if reply.transport == "truncate":
            self.wfile.flush()
            self.close_connection = True
