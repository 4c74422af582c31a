"""Pre-authenticated download URLs (``@microsoft.graph.downloadUrl``) and byte ranges.

A download URL is ``<base>/_download/<token>``: the token carries the drive and item ids, an
expiry (``lifetime`` seconds after it was issued, one hour by default, as SharePoint's tempauth
URLs) and a random nonce, signed with an HMAC key the fake draws at random; it needs no
``Authorization``. An expired, forged or garbled token answers **401** (as SharePoint does for
an expired tempauth URL); a valid token for an item deleted since answers **404**. A download
serves the item's current content (its ``ETag`` header says which version).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Final

DEFAULT_LIFETIME: Final = 3600.0
_RANGE: Final = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class DownloadTokenError(Exception):
    """The token is expired, forged or garbled (401)."""


@dataclass(frozen=True)
class DownloadTarget:
    """What a valid token names."""

    drive_id: str
    item_id: str
    expires: float


class DownloadSigner:
    """Issues and checks download tokens. ``lifetime`` (seconds) may be changed at any time;
    :meth:`revoke_all` invalidates every URL issued so far."""

    def __init__(self, lifetime: float = DEFAULT_LIFETIME) -> None:
        self.lifetime = lifetime
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()

    def token(self, drive_id: str, item_id: str) -> str:
        """A fresh token for the item."""
        expires = int(time.time() + self.lifetime)
        payload = f"{drive_id}|{item_id}|{expires}|{secrets.token_hex(12)}".encode()
        return _b64(payload) + "." + _b64(self._sign(payload))

    def check(self, token: str) -> DownloadTarget:
        """The target of a valid, unexpired token; DownloadTokenError otherwise."""
        encoded, _, signature = token.partition(".")
        try:
            payload = _unb64(encoded)
            given = _unb64(signature)
            drive_id, item_id, expires, _nonce = payload.decode().split("|")
            deadline = float(expires)
        except (ValueError, UnicodeDecodeError, binascii.Error):
            raise DownloadTokenError("malformed download token") from None
        if not hmac.compare_digest(given, self._sign(payload)):
            raise DownloadTokenError("invalid download token")
        if deadline < time.time():
            raise DownloadTokenError("expired download token")
        return DownloadTarget(drive_id, item_id, deadline)

    def revoke_all(self) -> None:
        """Invalidate every token issued so far (a new key)."""
        with self._lock:
            self._key = secrets.token_bytes(32)

    def _sign(self, payload: bytes) -> bytes:
        with self._lock:
            key = self._key
        return hmac.new(key, payload, hashlib.sha256).digest()[:18]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Unsatisfiable(Exception):
    """The range lies outside the content (416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive ``(first, last)`` byte range a ``Range`` header asks for, or None to send
    the whole content (no header, a multi-range or a unit other than bytes, which are ignored
    as RFC 9110 allows). Unsatisfiable when nothing of it lies within ``size`` bytes."""
    if header is None:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        return None
    if not first_text:  # a suffix: the last n bytes
        length = int(last_text)
        if length == 0 or size == 0:
            raise Unsatisfiable(header)
        return max(0, size - length), size - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # syntactically invalid: ignored
    if first >= size:
        raise Unsatisfiable(header)
    last = int(last_text) if last_text else size - 1
    return first, min(last, size - 1)
