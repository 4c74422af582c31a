"""The test process may only connect to loopback (and unix sockets): every upstream default
(CRM, Graph, Entra ID login, VIES, Omniva) must be pointed at a fake. Installed by conftest for the
whole session; a connection anywhere else fails at once with :class:`NonLoopbackConnection`."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


class NonLoopbackConnection(ConnectionRefusedError):
    """A test tried to reach an address outside loopback."""


def _check(sock: socket.socket, address: Any) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # unix sockets, netlink: local by nature
    host = str(address[0]) if isinstance(address, tuple) and address else str(address)
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host.split("%", 1)[0]).is_loopback:
            return
    except ValueError:
        pass
    raise NonLoopbackConnection(f"tests may only connect to loopback, not {host}")


def _connect(self: socket.socket, address: Any) -> None:
    _check(self, address)
    _original_connect(self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    _check(self, address)
    return _original_connect_ex(self, address)


def install() -> None:
    """Guard every socket of this process (idempotent)."""
    socket.socket.connect = _connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
