"""``ApiServer``: serves the local HTTP API (:mod:`syncd.api.app`) with waitress, on loopback or a
unix socket, in a background thread that :meth:`ApiServer.stop` ends from any thread.

syncd binds the listening socket itself and hands it to waitress (``sockets=``): binding errors
surface at :meth:`ApiServer.start` with a plain message, port 0 reports the port it got, and a
stale unix socket is replaced only when nothing listens on it. Waitress's own error answers
(request line or headers too large, a body over the limit, malformed requests) are JSON like the
application's. Waitress logs the request path in two messages; the path of a VAT lookup holds the
number, so a filter on the ``waitress`` logger withholds it.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import math
import os
import socket
import stat
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask

from syncd.core.errors import FatalError

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = [
    "JSON_CONTENT_TYPE",
    "STANDARD_HEADERS",
    "ApiBindError",
    "ApiServer",
    "ListenAddress",
    "error_body",
    "parse_listen",
]

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE: Final = "application/json; charset=utf-8"
# Every answer carries these, besides Content-Type and Content-Length.
STANDARD_HEADERS: Final = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
)

MAX_REQUEST_HEADER_BYTES: Final = 16 * 1024
CONNECTION_LIMIT: Final = 100
# What waitress may hold of an answer not yet sent, per connection: a worker thread writing a
# streamed answer (a document download) waits while more than this is buffered. waitress's
# default (16 MiB, spilling to a temporary file past 1 MiB) would let every download of a slow
# client park 16 MiB; 256 KiB keeps it in memory and small, and still fills a socket's buffer.
OUTBUF_HIGH_WATERMARK: Final = 256 * 1024
_PROBE_TIMEOUT: Final = 1.0

# Waitress's own errors (raised before the application runs) and their stable codes.
_WAITRESS_CODES: Final = {
    400: "bad_request",
    413: "request_too_large",
    431: "request_header_too_large",
    500: "internal_error",
    501: "not_implemented",
}
_WAITRESS_MESSAGES: Final = {
    "bad_request": "The request could not be understood.",
    "request_too_large": "The request is too large; these endpoints take no request body.",
    "request_header_too_large": "The request line or headers are too large.",
    "internal_error": "An internal error occurred.",
    "not_implemented": "This transfer encoding is not supported.",
}


def error_body(code: str, message: str) -> bytes:
    """The API's error body: ``{"error": {"code": ..., "message": ...}}``."""
    return orjson.dumps({"error": {"code": code, "message": message}})


class ApiBindError(FatalError, OSError):
    """The API cannot listen where it was told to (address in use, no permission, a socket
    another process serves). An OSError too: ``strerror`` holds the reason in plain words,
    ``str()`` the whole sentence with the address."""

    def __init__(self, address: str, reason: str, errno_: int | None = None) -> None:
        super().__init__(errno_ or 0, reason)
        self.address = address

    def __str__(self) -> str:
        return f"cannot listen on {self.address}: {self.strerror}"


@dataclass(frozen=True)
class ListenAddress:
    """Where to listen: a loopback ``host``/``port`` or a unix socket ``path``."""

    kind: Literal["tcp", "unix"]
    host: str = ""
    port: int = 0
    path: str = ""

    def display(self, port: int | None = None) -> str:
        """``127.0.0.1:8787``, ``[::1]:8787`` or ``unix:/run/syncd/api.sock``."""
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port if port is None else port}"


def parse_listen(listen: str) -> ListenAddress:
    """Parse ``listen``: ``127.0.0.1:8787``, ``[::1]:8787``, ``localhost:8787`` (bound as
    127.0.0.1) or ``unix:/abs/path``. Raises ValueError for anything else, in particular for an
    address that is not loopback: the API is for the portal on this host only."""
    value = listen.strip()
    if value.startswith("unix:"):
        path = value[len("unix:") :]
        if not path.startswith("/"):
            raise ValueError("a unix socket must be an absolute path: unix:/run/syncd/api.sock")
        return ListenAddress("unix", path=path)
    host, sep, port = value.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError("listen must be HOST:PORT on loopback or unix:/path/to/socket")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 address must be in brackets: [::1]:8787")
    if host == "localhost":
        return ListenAddress("tcp", host="127.0.0.1", port=int(port))
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            "listen must be a loopback address (127.0.0.1, [::1], localhost) or a unix socket; "
            "the API is for the portal on this host only"
        )
    return ListenAddress("tcp", host=host, port=int(port))


# ------------------------------------------------------------------------------------------
# Waitress adaptations
# ------------------------------------------------------------------------------------------


class _JsonErrorTask(ErrorTask):
    """Waitress's error answer, as JSON with the API's error shape and headers."""

    def execute(self) -> None:
        request: Any = self.request  # the parser; its stub calls it an Error
        error: Any = request.error
        status = int(error.code)
        code = _WAITRESS_CODES.get(status, "bad_request" if status < 500 else "internal_error")
        body = error_body(code, _WAITRESS_MESSAGES[code])
        self.status = f"{status} {error.reason}"
        headers: Any = self.response_headers
        headers.extend([("Content-Type", JSON_CONTENT_TYPE), *STANDARD_HEADERS])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _JsonErrorChannel(HTTPChannel):
    error_task_class = _JsonErrorTask


class _WithholdPaths(logging.Filter):
    """Waitress logs "Client disconnected while serving <path>" (INFO) and "Exception while
    serving <path>" (ERROR); a VAT lookup's path holds the number. Keep the words, drop the path."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        head, sep, _path = message.partition(" while serving ")
        if sep:
            record.msg = f"{head} while serving a request (path withheld)"
            record.args = None
        return True


_PATH_FILTER: Final = _WithholdPaths()


def _install_path_filter() -> None:
    waitress_logger = logging.getLogger("waitress")
    if _PATH_FILTER not in waitress_logger.filters:
        waitress_logger.addFilter(_PATH_FILTER)
    # waitress warns "Task queue depth is N" for every request that waits for a worker thread:
    # under a burst that is one journal line per request, and it says nothing actionable.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


# ------------------------------------------------------------------------------------------
# Binding
# ------------------------------------------------------------------------------------------


def _bind_tcp(address: ListenAddress) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address.host, address.port))
    except OSError as exc:
        sock.close()
        raise ApiBindError(address.display(), _reason(exc), exc.errno) from exc
    return sock


def _remove_stale_socket(address: ListenAddress) -> None:
    """Remove a socket file left by a process that died, refusing when one still listens and
    never touching anything that is not a socket."""
    try:
        info = os.lstat(address.path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ApiBindError(address.display(), "the path exists and is not a socket", errno.EEXIST)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(_PROBE_TIMEOUT)
    try:
        probe.connect(address.path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address.path)
        logger.info("api: removed the stale socket %s", address.display())
        return
    except OSError as exc:
        raise ApiBindError(address.display(), _reason(exc), exc.errno) from exc
    finally:
        probe.close()
    raise ApiBindError(address.display(), "another process is listening on it", errno.EADDRINUSE)


def _bind_unix(address: ListenAddress, mode: int) -> tuple[socket.socket, os.stat_result]:
    _remove_stale_socket(address)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(address.path)
        os.chmod(address.path, mode)
        info = os.lstat(address.path)
    except OSError as exc:
        sock.close()
        raise ApiBindError(address.display(), _reason(exc), exc.errno) from exc
    return sock, info


def _reason(exc: OSError) -> str:
    if exc.errno is not None and exc.errno in errno.errorcode:
        return os.strerror(exc.errno).lower()
    return type(exc).__name__


# ------------------------------------------------------------------------------------------
# The server
# ------------------------------------------------------------------------------------------


class ApiServer:
    """Runs a WSGI application with waitress on loopback or a unix socket.

    ``start()`` binds (raising :class:`ApiBindError` when it cannot) and serves in a background
    thread; ``stop(timeout)`` stops accepting connections, lets requests in progress finish
    within ``timeout`` seconds, then closes every connection and returns.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        listen: str,
        threads: int = 8,
        max_request_bytes: int = 8192,
        channel_timeout: float = 30.0,
        unix_socket_mode: int = 0o660,
    ) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        if max_request_bytes < 0:
            raise ValueError("max_request_bytes must not be negative")
        if channel_timeout <= 0:
            raise ValueError("channel_timeout must be positive")
        self._app = app
        self._listen = parse_listen(listen)
        self._threads = threads
        self._max_request_bytes = max_request_bytes
        self._channel_timeout = channel_timeout
        self._unix_socket_mode = unix_socket_mode
        self._map: dict[int, Any] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._socket_file: os.stat_result | None = None
        self._address: str | None = None
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def address(self) -> str:
        """The bound address: ``127.0.0.1:PORT`` (the real port when 0 was asked), ``[::1]:PORT``
        or ``unix:/path``. Only known once started."""
        if self._address is None:
            raise RuntimeError("the API server is not started")
        return self._address

    @property
    def listen(self) -> ListenAddress:
        """The parsed ``listen`` setting."""
        return self._listen

    def start(self) -> None:
        """Bind and serve in a background thread. Raises :class:`ApiBindError` when the address
        cannot be used."""
        with self._lock:
            if self._thread is not None or self._stopped:
                raise RuntimeError("an ApiServer starts once")
            _install_path_filter()
            if self._listen.kind == "unix":
                sock, self._socket_file = _bind_unix(self._listen, self._unix_socket_mode)
            else:
                sock = _bind_tcp(self._listen)
            try:
                server: Any = create_server(
                    self._app,
                    map=self._map,
                    sockets=[sock],
                    threads=self._threads,
                    # waitress refuses a body of max_request_body_size bytes or more
                    max_request_body_size=self._max_request_bytes + 1,
                    max_request_header_size=MAX_REQUEST_HEADER_BYTES,
                    channel_timeout=max(1, math.ceil(self._channel_timeout)),
                    outbuf_high_watermark=OUTBUF_HIGH_WATERMARK,
                    cleanup_interval=max(1, math.ceil(self._channel_timeout / 2)),
                    connection_limit=CONNECTION_LIMIT,
                    ident="syncd",
                    clear_untrusted_proxy_headers=True,
                    expose_tracebacks=False,
                    # a client that resets its connection is not syncd's error to log
                    log_socket_errors=False,
                    asyncore_use_poll=True,
                )
            except Exception:
                sock.close()
                self._unlink_socket_file()
                raise
            server.channel_class = _JsonErrorChannel
            if self._listen.kind == "unix":
                self._address = self._listen.display()
            else:
                self._address = self._listen.display(port=sock.getsockname()[1])
            self._server = server
            self._thread = threading.Thread(target=self._serve, name="syncd-api", daemon=True)
            self._thread.start()
        logger.debug("api: bound to %s", self._address)

    @property
    def thread(self) -> threading.Thread | None:
        """The server loop's thread (None before :meth:`start`)."""
        return self._thread

    def ping(self, callback: Any) -> None:
        """Ask the server loop to call ``callback`` (from any thread): a loop that is stuck or
        gone never does, which is how the daemon's watchdog notices it."""
        server = self._server
        if server is None or self._stopped:
            return
        with contextlib.suppress(OSError):  # the trigger is closed: the loop is gone
            server.trigger.pull_trigger(callback)

    def _serve(self) -> None:
        try:
            self._server.run()
        except Exception as exc:
            logger.error(
                "api: the server loop failed with %s.%s",
                type(exc).__module__,
                type(exc).__qualname__,
            )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: close the listening socket, give requests in progress up to
        ``timeout`` seconds to finish, close every connection. Idempotent; callable from any
        thread. Returns within about ``timeout`` seconds."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        deadline = time.monotonic() + max(0.0, timeout)
        # 1. No new connections (runs in the loop thread, which owns the socket map).
        self._in_loop(lambda: wasyncore.dispatcher.close(server), deadline)
        # 2. Requests in progress finish (or are abandoned at the deadline); queued ones are
        #    cancelled. Worker threads are daemon threads: an abandoned one cannot hold up exit.
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=_remaining(deadline))
        # 3. Send what is ready to be sent, close everything; the loop ends with an empty map.
        self._in_loop(self._close_all, deadline)
        thread.join(_remaining(deadline) + 0.5)
        if thread.is_alive():  # the loop never ran the closing step: close from here
            logger.warning("api: the server loop did not stop in time; closing its sockets")
            wasyncore.close_all(self._map, ignore_all=True)
        self._unlink_socket_file()
        logger.info("api: stopped")

    def _in_loop(self, action: Any, deadline: float) -> None:
        """Run ``action`` in the loop thread and wait (until ``deadline``) for it to finish."""
        done = threading.Event()

        def thunk() -> None:
            try:
                action()
            finally:
                done.set()

        thread = self._thread
        trigger = self._server.trigger
        if thread is None or not thread.is_alive():
            thunk()
            return
        try:
            trigger.pull_trigger(thunk)
        except OSError:  # the trigger is closed: the loop is gone or going
            thunk()
            return
        done.wait(_remaining(deadline) + 0.5)

    def _close_all(self) -> None:
        for channel in list(self._map.values()):
            if isinstance(channel, HTTPChannel) and channel.total_outbufs_len:
                with contextlib.suppress(Exception):
                    channel.handle_write()  # non-blocking: whatever the socket takes now
        wasyncore.close_all(self._map, ignore_all=True)

    def _unlink_socket_file(self) -> None:
        expected = self._socket_file
        if expected is None:
            return
        self._socket_file = None
        try:
            current = os.lstat(self._listen.path)
        except FileNotFoundError:
            return
        # Only our own socket: another process may have replaced it meanwhile.
        if (current.st_dev, current.st_ino) == (expected.st_dev, expected.st_ino):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._listen.path)

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())
