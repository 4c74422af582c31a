"""Loopback HTTP plumbing shared by the fake servers (Bitrix24, VIES, Omniva) and their runners.

Each fake keeps its own request handling (``_serve``/``_write``) and ``server_version``; this
module holds only what they all do alike: a threading server that can cut its open keep-alive
connections on ``stop()``, a quiet HTTP/1.1 handler base, and the standalone serve loop.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, Generic, Protocol, TypeVar

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


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler base that logs nothing; subclasses set ``server_version``."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Silence logging: the default logs every request to stderr."""


class Servable(Protocol):
    """A fake that can be started and stopped."""

    def start(self) -> object: ...

    def stop(self) -> None: ...


def serve_until_signalled(fake: Servable, ready_url: Callable[[], str]) -> int:
    """Start ``fake``, print ``READY <ready_url()>`` and serve until SIGTERM/SIGINT; exit code 0.

    ``ready_url`` is called after ``start()``, once the port is known.
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fake.start()
    sys.stdout.write(f"READY {ready_url()}\n")
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        fake.stop()
    return 0
