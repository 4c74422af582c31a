"""A gate that holds answers until released, so concurrency tests can wait on events, not sleeps."""

from __future__ import annotations

import threading


class Gate:
    """Open by default. ``hold()`` makes requests wait (after they are logged and counted);
    ``release()`` opens it again, ``release(n)`` lets ``n`` waiting-or-later requests through
    and stays held; ``wait_for_waiting(n, timeout)`` blocks until ``n`` requests wait."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open = True
        self._passes = 0
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Requests waiting at the gate now."""
        with self._cond:
            return self._waiting

    @property
    def held(self) -> bool:
        """Whether the gate holds requests."""
        with self._cond:
            return not self._open

    def hold(self) -> None:
        """Hold every following request until ``release()``."""
        with self._cond:
            self._open = False
            self._passes = 0

    def release(self, count: int | None = None) -> None:
        """Open the gate (``count`` None) or let ``count`` requests through and stay held."""
        with self._cond:
            if count is None:
                self._open = True
                self._passes = 0
            else:
                self._passes += count
            self._cond.notify_all()

    def wait_for_waiting(self, count: int, timeout: float | None = None) -> bool:
        """Block until at least ``count`` requests wait at the gate; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._waiting >= count, timeout)

    def pass_through(self) -> None:
        """Called by each request: returns at once when open, else waits for a release."""
        with self._cond:
            if self._open:
                return
            self._waiting += 1
            self._cond.notify_all()
            try:
                self._cond.wait_for(lambda: self._open or self._passes > 0)
                if not self._open:
                    self._passes -= 1
            finally:
                self._waiting -= 1
                self._cond.notify_all()
