"""A minimal sd_notify(3) client: tell systemd we are ready, alive, stopping, and what we do.

Why not a library: the ``sdnotify`` package on PyPI has had no release since 2017, and systemd's
own Python bindings (``systemd-python``) need the libsystemd headers and a compiler to install. The
protocol is one datagram of ``KEY=value`` lines sent to the ``AF_UNIX`` socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket), which fits in a few lines here.

Every method is a no-op when ``$NOTIFY_SOCKET`` is unset (not started by systemd, or
``Type=`` is not ``notify``), and none ever raises: a failed send is logged once at DEBUG and the
daemon carries on, since missing a notification must not take the service down.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Mapping
from typing import Final

__all__ = ["Notifier"]

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV: Final = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV: Final = "WATCHDOG_USEC"
WATCHDOG_PID_ENV: Final = "WATCHDOG_PID"
_MAX_STATUS_CHARS: Final = 512


def _socket_address(value: str | None) -> str | None:
    """The address to ``sendto`` for a ``$NOTIFY_SOCKET`` value, or None if unusable."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]  # Linux abstract namespace
    if value.startswith("/"):
        return value
    return None  # e.g. vsock:... (systemd >= 253), which this client does not speak


def _one_line(text: str) -> str:
    """A STATUS= value: no newline (it would start a new assignment), bounded length."""
    flat = " ".join(text.split())
    return flat[:_MAX_STATUS_CHARS]


class Notifier:
    """Sends sd_notify messages; build it with :meth:`from_env`."""

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: str | None = None,
        watchdog_pid: str | None = None,
    ) -> None:
        """``address`` is a ``$NOTIFY_SOCKET`` value (path or ``@abstract``); None disables."""
        self._address = _socket_address(address)
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._failure_logged = False
        if address and self._address is None:
            log.debug("sd_notify: unsupported NOTIFY_SOCKET address; notifications disabled")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """A notifier for ``$NOTIFY_SOCKET`` / ``$WATCHDOG_USEC`` / ``$WATCHDOG_PID``."""
        env = os.environ if environ is None else environ
        return cls(
            env.get(NOTIFY_SOCKET_ENV),
            watchdog_usec=env.get(WATCHDOG_USEC_ENV),
            watchdog_pid=env.get(WATCHDOG_PID_ENV),
        )

    @property
    def enabled(self) -> bool:
        """True when there is a notification socket to talk to."""
        return self._address is not None

    # -- messages -----------------------------------------------------------------------------

    def ready(self, status: str | None = None) -> bool:
        """Start-up finished (``READY=1``), optionally with a status line."""
        return self.notify("READY=1", *self._status_field(status))

    def status(self, text: str) -> bool:
        """A free-form one-line status shown by ``systemctl status``."""
        return self.notify(*self._status_field(text))

    def watchdog(self) -> bool:
        """Keep-alive ping (``WATCHDOG=1``); send at least every :meth:`watchdog_interval`."""
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun (``STOPPING=1``)."""
        return self.notify("STOPPING=1", *self._status_field(status))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time for the current start-up/shutdown step (``EXTEND_TIMEOUT_USEC``)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram. True if sent; False if disabled or failed."""
        if self._address is None or not fields:
            return False
        payload = "\n".join(fields).encode("utf-8", "replace")
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                self._socket.sendto(payload, self._address)
            except OSError as exc:
                if not self._failure_logged:
                    self._failure_logged = True
                    log.debug("sd_notify: sending to NOTIFY_SOCKET failed: %s", exc.strerror or exc)
                self._close_locked()
                return False
        return True

    # -- watchdog -----------------------------------------------------------------------------

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None if not asked for.

        None too when ``WATCHDOG_PID`` names another process (the watchdog is not ours) or the
        values are malformed.
        """
        if not self._watchdog_usec:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        return usec / 2 / 1_000_000

    # -- housekeeping ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the socket (a later send reopens it)."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
            self._socket = None

    @staticmethod
    def _status_field(text: str | None) -> tuple[str, ...]:
        return () if text is None else (f"STATUS={_one_line(text)}",)

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
