"""sd_notify client: real AF_UNIX datagram sockets, abstract names, watchdog, no-op, no raising."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.daemon.sdnotify import Notifier


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)  # only bounds a failure; a sent datagram is already queued
    try:
        yield sock, str(path)
    finally:
        sock.close()


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode("utf-8")


def test_ready_with_status(
    receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    notifier = Notifier.from_env()
    assert notifier.enabled
    assert notifier.ready("mirroring every 60 s") is True
    assert received(sock) == "READY=1\nSTATUS=mirroring every 60 s"
    notifier.close()


def test_each_message(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    with Notifier(path) as notifier:
        assert notifier.ready()
        assert notifier.status("cycle 3: 50 contacts")
        assert notifier.watchdog()
        assert notifier.extend_timeout(2.5)
        assert notifier.stopping("shutting down")
    assert [received(sock) for _ in range(5)] == [
        "READY=1",
        "STATUS=cycle 3: 50 contacts",
        "WATCHDOG=1",
        "EXTEND_TIMEOUT_USEC=2500000",
        "STOPPING=1\nSTATUS=shutting down",
    ]


def test_status_cannot_inject_fields(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    with Notifier(path) as notifier:
        notifier.status("line one\nREADY=1\r\nline\ttwo")
    assert received(sock) == "STATUS=line one READY=1 line two"


def test_abstract_socket_name(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"syncd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = Notifier.from_env()
        assert notifier.ready("up")
        assert received(sock) == "READY=1\nSTATUS=up"
        notifier.close()
    finally:
        sock.close()


def test_noop_without_notify_socket() -> None:
    notifier = Notifier.from_env()
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.status("x") is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    assert notifier.watchdog_interval() is None


def test_unsupported_address_is_a_noop() -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert notifier.ready() is False


def test_send_failure_never_raises_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "nobody-listens.sock"))
    with caplog.at_level(logging.DEBUG, logger="syncd.daemon.sdnotify"):
        assert notifier.ready() is False
        assert notifier.watchdog() is False
        assert notifier.status("x") is False
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].levelno == logging.DEBUG


def test_recovers_after_socket_appears(tmp_path: Path) -> None:
    path = tmp_path / "late.sock"
    notifier = Notifier(str(path))
    assert notifier.watchdog() is False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        assert notifier.watchdog() is True
        assert received(sock) == "WATCHDOG=1"
    finally:
        sock.close()
        notifier.close()


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("60000000", None, 30.0),
        ("60000000", "OWN", 30.0),
        ("1000000", None, 0.5),
        ("60000000", "OTHER", None),  # another process's watchdog
        ("60000000", "junk", None),
        ("0", None, None),
        ("-5", None, None),
        ("soon", None, None),
        (None, None, None),
        ("", None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        own = os.getpid()
        value = {"OWN": str(own), "OTHER": str(own + 1)}.get(pid, pid)
        monkeypatch.setenv("WATCHDOG_PID", value)
    assert Notifier.from_env().watchdog_interval() == expected
