"""No test reaches beyond loopback: the session-wide guard refuses any other address, so a
default upstream endpoint (graph.microsoft.com, login.microsoftonline.com, VIES, Omniva, a CRM)
left in a test's settings fails loudly instead of going out."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.loopback_guard import NonLoopbackConnection


@pytest.mark.parametrize("address", [("192.0.2.1", 443), ("2001:db8::1", 443, 0, 0)])
def test_a_connection_outside_loopback_is_refused(address: tuple[object, ...]) -> None:
    family = socket.AF_INET6 if ":" in str(address[0]) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock, pytest.raises(NonLoopbackConnection):
        sock.connect(address)


def test_an_http_client_cannot_reach_a_default_endpoint() -> None:
    # 192.0.2.0/24 is TEST-NET-1: no DNS needed, and refused before any packet leaves
    with pytest.raises(httpx.ConnectError, match="only connect to loopback"):
        httpx.get("https://192.0.2.10/v1.0/sites", timeout=2)


def test_loopback_is_allowed() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=2):
            pass
