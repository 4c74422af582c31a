"""The process lock: one daemon or one foreground resync per state directory at a time."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from syncd.core.errors import ResyncBusyError

LOCK_NAME = "syncd.daemon.lock"


class ProcessLock:
    """An exclusive ``flock`` on ``<state dir>/syncd.lock``, released when the process dies."""

    def __init__(self, directory: Path, purpose: str) -> None:
        self.path = directory / LOCK_NAME
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`ResyncBusyError` naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise ResyncBusyError(f"{holder} holds {self.path}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} ({self.purpose})".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ProcessLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def holder(directory: Path) -> str | None:
    """Who holds the lock (e.g. ``pid 123 (daemon)``), or None when nobody does."""
    path = directory / LOCK_NAME
    if not path.exists():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.read(fd, 200).decode("utf-8", "replace").strip()
        return text or "another process"
    finally:
        os.close(fd)
    return None
