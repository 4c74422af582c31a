"""Loopback HTTP plumbing shared by the fake servers (Bitrix24, VIES, Omniva) and their runners.

Each fake keeps its own request handling (``_serve``/``_write``) and ``server_version``; this
module holds only what they all do alike: a threading server that can cut its open keep-alive
connections on ``stop()``, a quiet HTTP/1.1 handler base, the start/stop lifecycle
(``LoopbackFake``) and the standalone serve loop.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

FakeT = TypeVar("FakeT")


class TrackingHTTPServer(ThreadingHTTPServer, Generic[FakeT]):
    """Threading HTTP server that remembers its open connections so ``stop()`` can cut them.

    ``fake`` is the object the handlers answer from (``self.server.fake``).
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        handler_class: type[BaseHTTPRequestHandler],
        fake: FakeT,
    ) -> None:
        super().__init__(address, handler_class)
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that vanish mid-answer (killed workers, timeouts, a size cap); report
        the rest."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Shut down every connection still open (idle keep-alive ones included)."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class ReplyLike(Protocol):
    """What :meth:`QuietHandler.write_reply` writes: ``transport`` may break the exchange on
    purpose ("send", "drop": close without an answer, "truncate": half the body)."""

    @property
    def status(self) -> int: ...
    @property
    def body(self) -> bytes | bytearray: ...
    @property
    def content_type(self) -> str: ...
    @property
    def headers(self) -> dict[str, str]: ...
    @property
    def transport(self) -> str: ...
    @property
    def close(self) -> bool: ...


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler base that logs nothing. Subclasses set ``server_version`` and
    the ``verbs`` they answer, and implement :meth:`serve`; any other method gets a 501."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    sys_version = ""
    verbs: ClassVar[frozenset[str]] = frozenset({"GET", "POST", "DELETE"})

    def serve(self, verb: str) -> None:
        """Answer one request of method ``verb`` (one of :attr:`verbs`)."""
        raise NotImplementedError

    def _dispatch(self, verb: str) -> None:
        if verb not in self.verbs:
            self.send_error(501, f"Unsupported method ({verb!r})")
            return
        self.serve(verb)

    def do_GET(self) -> None:
        """Serve GET."""
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        """Serve HEAD."""
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        """Serve POST."""
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        """Serve DELETE."""
        self._dispatch("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Silence logging: the default logs every request to stderr."""

    def write_reply(self, reply: ReplyLike) -> None:
        """Write ``reply`` with a Content-Length, or break the exchange as it asks."""
        if reply.close or reply.transport == "drop":
            self.close_connection = True
        if reply.transport == "drop":
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.close:
            self.send_header("Connection", "close")
        self.end_headers()
        if reply.transport == "truncate":
            self.wfile.write(reply.body[: len(reply.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(reply.body)


class LoopbackFake(ABC):
    """The lifecycle of a fake served over real HTTP: ``start()``/``stop()`` or a ``with`` block.

    The server runs in a daemon thread named ``fake-<_name>:<port>``; its handlers answer from
    the fake (``self.server.fake``). A restarted fake keeps its port, so clients keep their URL.
    ``_stopping`` is set while the fake stops (slow answers wait on it to be cut short).
    Subclasses set ``_name``, give ``_handler_class()`` and may override ``_server_class()``
    and ``_before_stop()``.
    """

    _name: ClassVar[str]

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self._port = port
        self._stopping = threading.Event()
        self._server: TrackingHTTPServer[Self] | None = None
        self._thread: threading.Thread | None = None

    @abstractmethod
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        """The request handler (a method: handlers are defined after their fake)."""

    def _server_class(self) -> type[TrackingHTTPServer[Any]]:
        """The server class; ``TrackingHTTPServer`` unless a fake needs another."""
        return TrackingHTTPServer

    def _before_stop(self) -> None:  # noqa: B027 (an optional hook, empty by default)
        """Called by ``stop()`` after ``_stopping`` is set, before the server shuts down."""

    def start(self) -> Self:
        """Start serving (a restarted fake keeps its port, so clients keep their URL)."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = self._server_class()((self.host, self._port), self._handler_class(), self)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-{self._name}:{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: cut slow answers short and close every open keep-alive connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        self._before_stop()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port (assigned on the first ``start()`` when 0 was asked for)."""
        if not self._port:
            raise RuntimeError("the fake has not been started")
        return self._port

    @property
    def control_url(self) -> str:
        """Base URL of the control API (``/_fake/``)."""
        return f"http://{self.host}:{self.port}/_fake/"


class Servable(Protocol):
    """A fake that can be started and stopped."""

    def start(self) -> object: ...

    def stop(self) -> None: ...


def fake_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A standalone fake's command line: its description, ``--host`` and ``--port``, and every
    option's default shown in ``--help``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    return parser


def serve_until_signalled(
    fake: Servable,
    ready_url: Callable[[], str],
    details: Callable[[], list[str]] | None = None,
) -> int:
    """Start ``fake``, print ``READY <ready_url()>`` (then each line of ``details()``: what to
    put in syncd's configuration, where the control API is) and serve until SIGTERM/SIGINT;
    exit code 0. Both are called after ``start()``, once the port is known.
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fake.start()
    lines = [f"READY {ready_url()}", *(details() if details else [])]
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        fake.stop()
    return 0
