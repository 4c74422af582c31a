"""File bodies of the fake SharePoint: generated on the fly, deterministic, any size.

A generated body is ``header + middle + trailer``: the header and trailer carry the kind's real
magic bytes and structure (``%PDF-1.7`` … ``%%EOF``, an MP4 ``ftyp``/``free``/``mdat`` box
sequence, JPEG SOI/APP0 … EOI, PNG signature/IHDR … IEND, a ZIP local header … end of central
directory) plus the item's key (item id and version), so every version of every item has its
own bytes and its own hash; the middle cycles through one of a few pseudo-random 64 KiB blocks.
Nothing is held per file: :meth:`GeneratedContent.iter_bytes` builds each chunk when it is
sent, and the QuickXorHash needs only the header, one block (whose fold is cached), the last
partial block and the trailer, because whole copies of a block cancel out pairwise.
"""

from __future__ import annotations

import hashlib
import random
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Final, Protocol

from ..quickxor import PERIOD, QuickXorHash

CHUNK: Final = 64 * 1024  # bytes per streamed chunk
BLOCK: Final = PERIOD * 409  # 65,440 bytes: a multiple of 160 keeps every copy on the same columns
_POOL_SIZE: Final = 16
_POOL_SEED: Final = 0x5EED_F11E

MIME_TYPES: Final[dict[str, str]] = {
    "pdf": "application/pdf",
    "mp4": "video/mp4",
    "jpg": "image/jpeg",
    "png": "image/png",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "zip": "application/x-zip-compressed",
    "bin": "application/octet-stream",
}
KINDS: Final = frozenset(MIME_TYPES)
EXTENSIONS: Final[dict[str, str]] = {
    "pdf": "pdf", "mp4": "mp4", "jpg": "jpg", "jpeg": "jpg", "png": "png", "docx": "docx",
    "xlsx": "xlsx", "zip": "zip", "bin": "bin",
}


def kind_of(name: str, default: str = "pdf") -> str:
    """The content kind a file name's extension implies (``default`` when none does)."""
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem:
        return default
    return EXTENSIONS.get(extension.lower(), default)


class Content(Protocol):
    """A file body: its size, its QuickXorHash and its bytes in chunks."""

    @property
    def size(self) -> int: ...

    def quick_xor_hash(self) -> str: ...

    def iter_bytes(self, start: int = 0, end: int | None = None) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class StoredContent:
    """A body given as bytes (``add_file(content=...)``), kept in memory."""

    data: bytes

    @property
    def size(self) -> int:
        """Length in bytes."""
        return len(self.data)

    @cached_property
    def _hash(self) -> str:
        return QuickXorHash(self.data).b64digest()

    def quick_xor_hash(self) -> str:
        """Base64 QuickXorHash of the bytes."""
        return self._hash

    def iter_bytes(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive; None: the end) in chunks of 64 KiB."""
        stop = self.size if end is None else min(end, self.size)
        for offset in range(start, stop, CHUNK):
            yield self.data[offset : min(offset + CHUNK, stop)]


@cache
def _pool() -> tuple[bytes, ...]:
    generator = random.Random(_POOL_SEED)
    return tuple(generator.randbytes(BLOCK) for _ in range(_POOL_SIZE))


@cache
def _prefix_folds(index: int) -> tuple[int, ...]:
    """``fold(block[:160 * k])`` for every k, so any prefix of a block folds in O(1)."""
    block = _pool()[index]
    folds = [0]
    for start in range(0, BLOCK, PERIOD):
        folds.append(folds[-1] ^ int.from_bytes(block[start : start + PERIOD], "little"))
    return tuple(folds)


def _prefix_fold(index: int, length: int) -> int:
    """``fold(block[:length])`` of pool block ``index``."""
    whole = length - length % PERIOD
    tail = _pool()[index][whole:length]
    return _prefix_folds(index)[whole // PERIOD] ^ int.from_bytes(tail, "little")


@dataclass(frozen=True)
class GeneratedContent:
    """A deterministic body of ``size`` bytes of ``kind`` for ``key`` (``"<item id>:<version>"``).

    Never materialised: chunks are built as they are read.
    """

    kind: str
    size: int
    key: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown content kind {self.kind!r}; expected one of {sorted(KINDS)}")
        if self.size < 0:
            raise ValueError("size must not be negative")

    @cached_property
    def _layout(self) -> tuple[bytes, int, bytes]:
        """(header, middle length, trailer), both cut short for tiny sizes."""
        header, trailer = _frame(self.kind, self.key, self.size)
        header = header[: self.size]
        trailer = trailer[: self.size - len(header)]
        return header, self.size - len(header) - len(trailer), trailer

    @cached_property
    def _block(self) -> int:
        return hashlib.sha256(self.key.encode()).digest()[0] % _POOL_SIZE

    @cached_property
    def _hash(self) -> str:
        header, middle, trailer = self._layout
        whole, rest = divmod(middle, BLOCK)
        block = _pool()[self._block]
        digest = QuickXorHash(header)
        digest.update_repeated(block, whole, folded=_prefix_fold(self._block, BLOCK))
        digest.update_folded(_prefix_fold(self._block, rest), rest)
        digest.update(trailer)
        return digest.b64digest()

    def quick_xor_hash(self) -> str:
        """Base64 QuickXorHash of exactly the bytes :meth:`iter_bytes` yields."""
        return self._hash

    def iter_bytes(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive; None: the end) in chunks of up to 64 KiB."""
        stop = self.size if end is None else min(end, self.size)
        offset = max(0, start)
        while offset < stop:
            piece = self._read(offset, min(CHUNK, stop - offset))
            yield piece
            offset += len(piece)

    def read(self) -> bytes:
        """The whole body (for small files)."""
        return b"".join(self.iter_bytes())

    def _read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset``: never more than one region's worth."""
        header, middle, trailer = self._layout
        if offset < len(header):
            return header[offset : offset + length]
        offset -= len(header)
        if offset >= middle:
            offset -= middle
            return trailer[offset : offset + length]
        length = min(length, middle - offset)
        block = _pool()[self._block]
        position = offset % BLOCK
        if position + length <= BLOCK:
            return block[position : position + length]
        parts = [block[position:]]
        length -= BLOCK - position
        while length > 0:
            parts.append(block[: min(length, BLOCK)])
            length -= len(parts[-1])
        return b"".join(parts)


def _frame(kind: str, key: str, size: int) -> tuple[bytes, bytes]:
    """The header and trailer of a ``kind`` body of ``size`` bytes."""
    label = f"syncd fake SharePoint content {key}".encode()
    if kind == "pdf":
        header = (
            b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
            b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n% " + label + b"\n"
            b"3 0 obj\n<< /Length " + str(max(0, size - 160)).encode() + b" >>\nstream\n"
        )
        return header, b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R /Size 4 >>\n%%EOF\n"
    if kind == "mp4":
        ftyp = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
        free = struct.pack(">I", 8 + len(label)) + b"free" + label
        remaining = size - len(ftyp) - len(free)
        if remaining < 1 << 32:
            mdat = struct.pack(">I", max(remaining, 8)) + b"mdat"
        else:  # a 64-bit box size
            mdat = struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", remaining)
        return ftyp + free + mdat, b""
    if kind == "jpg":
        app0 = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
        comment = b"\xff\xfe" + struct.pack(">H", len(label) + 2) + label
        return app0 + comment, b"\xff\xd9"
    if kind == "png":
        ihdr = struct.pack(">IIBBBBB", 1920, 1080, 8, 2, 0, 0, 0)
        text = b"Comment\x00" + label
        header = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"tEXt", text)
        return header, _png_chunk(b"IEND", b"")
    if kind in ("docx", "xlsx", "zip"):
        member = {
            "docx": b"word/document.xml", "xlsx": b"xl/workbook.xml", "zip": b"readme.txt"
        }[kind]
        extra = label
        local = b"PK\x03\x04" + struct.pack(
            "<HHHHHIIIHH", 20, 0, 0, 0x6000, 0x5821, 0, 0, 0, len(member), len(extra)
        )
        end_of_directory = b"PK\x05\x06" + bytes(18)
        return local + member + extra, end_of_directory
    return label + b"\n", b""


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
