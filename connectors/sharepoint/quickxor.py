"""Microsoft's QuickXorHash (``file.hashes.quickXorHash`` of OneDrive and SharePoint), in pure
Python and fast.

The algorithm (Microsoft's published C# reference): a 160-bit register; input byte number ``i``
is XORed in at bit offset ``(i * 11) mod 160``, wrapping round the 160-bit boundary; the 20-byte
result is the register little-endian with the total length (64-bit little-endian) XORed into
its last 8 bytes; it is published base64-encoded.

The offset of a byte depends only on its position modulo 160, so the input can first be
XOR-folded into 160 *columns* (column ``c`` = XOR of every byte at a position ``≡ c mod 160``)
with big-integer operations running at C speed, and the 11-bit shifts applied once per column
when the digest is taken. Folding also makes repeated data cheap: ``block * count`` is hashed by
:meth:`QuickXorHash.update_repeated` from the fold of one block, whatever ``count`` is (copies
that land on the same columns cancel out pairwise), which is how generated test content of any
size gets its true hash without being produced.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from math import gcd
from typing import Final

WIDTH_BITS: Final = 160
DIGEST_SIZE: Final = WIDTH_BITS // 8  # 20 bytes
PERIOD: Final = WIDTH_BITS  # positions that share a bit offset are this many bytes apart
SHIFT: Final = 11

_COLUMN_BITS: Final = PERIOD * 8  # a fold: 160 columns of one byte each
_COLUMN_MASK: Final = (1 << _COLUMN_BITS) - 1
_REGISTER_MASK: Final = (1 << WIDTH_BITS) - 1
_LENGTH_MASK: Final = (1 << 64) - 1
# Inputs are XORed together in parts of this many bytes (a multiple of PERIOD keeps their
# columns aligned) before the last part is folded by halving.
_PART: Final = PERIOD * 64  # 10 KiB


@lru_cache(maxsize=64)
def _low_mask(bits: int) -> int:
    return (1 << bits) - 1


def fold(data: bytes | bytearray | memoryview) -> int:
    """XOR-fold ``data`` into 160 columns: the result's byte ``c`` (little-endian) is the XOR of
    every ``data[j]`` with ``j % 160 == c``."""
    view = memoryview(data).cast("B")
    size = len(view)
    value = 0
    for start in range(0, size, _PART):  # bytes past the end of the last part count as zeros
        value ^= int.from_bytes(view[start : start + _PART], "little")
    blocks = -(-min(size, _PART) // PERIOD)
    while blocks > 1:
        if blocks & 1:  # fold the odd top block into the rest first
            blocks -= 1
            cut = blocks * _COLUMN_BITS
            value = (value & _low_mask(cut)) ^ (value >> cut)
        blocks //= 2
        cut = blocks * _COLUMN_BITS
        value = (value & _low_mask(cut)) ^ (value >> cut)
    return value


def rotate_columns(folded: int, positions: int) -> int:
    """A fold computed for data starting at stream position 0, moved to start at
    ``positions`` (its columns rotate by ``positions mod 160``)."""
    shift = (positions % PERIOD) * 8
    if not shift:
        return folded
    return ((folded << shift) | (folded >> (_COLUMN_BITS - shift))) & _COLUMN_MASK


def _spread_plan() -> tuple[tuple[int, int], ...]:
    """Masks and shifts that move byte ``c`` of a fold from bit ``8c`` to bit ``11c``: the
    bytes whose column has bit ``k`` set move ``3 * 2**k`` bits up, highest ``k`` first (bytes
    keep their order and never overlap on the way)."""
    plan = []
    for bit in range(PERIOD.bit_length() - 1, -1, -1):
        mask = 0
        for column in range(PERIOD):
            if column >> bit & 1:
                done = (column >> (bit + 1)) << (bit + 1)  # the higher bits already applied
                mask |= 0xFF << (8 * column + (SHIFT - 8) * done)
        plan.append((mask, (SHIFT - 8) << bit))
    return tuple(plan)


_SPREAD_PLAN: Final = _spread_plan()


def _spread(columns: int) -> int:
    """The 160-bit register of a fold: column ``c`` XORed in at bit ``(c * 11) mod 160``."""
    for mask, shift in _SPREAD_PLAN:
        moving = columns & mask
        columns = (columns ^ moving) | (moving << shift)
    register = 0
    while columns:  # wrap round the 160-bit register
        register ^= columns & _REGISTER_MASK
        columns >>= WIDTH_BITS
    return register


class QuickXorHash:
    """Incremental QuickXorHash, hashlib style: ``update()`` then ``digest()``/``b64digest()``.

    ``digest()`` does not end the hash; more data may follow.
    """

    name: Final = "quickxorhash"
    digest_size: Final = DIGEST_SIZE

    def __init__(self, data: bytes | bytearray | memoryview = b"") -> None:
        self._columns = 0  # the fold of everything so far, by absolute position
        self._length = 0
        if data:
            self.update(data)

    @property
    def length(self) -> int:
        """How many bytes have been hashed."""
        return self._length

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Hash ``data`` as the next bytes of the stream."""
        size = len(memoryview(data).cast("B"))
        if not size:
            return
        self._columns ^= rotate_columns(fold(data), self._length)
        self._length += size

    def update_folded(self, folded: int, size: int) -> None:
        """Hash the next ``size`` bytes given only their :func:`fold` (computed as if they
        started at position 0)."""
        if size < 0:
            raise ValueError("size must not be negative")
        self._columns ^= rotate_columns(folded, self._length)
        self._length += size

    def update_repeated(
        self, block: bytes | bytearray | memoryview, count: int, *, folded: int | None = None
    ) -> None:
        """Hash ``block`` repeated ``count`` times without building it; ``folded`` may give
        ``fold(block)`` when it is already known. Costs at most 160 rotations of one fold."""
        if count < 0:
            raise ValueError("count must not be negative")
        size = len(memoryview(block).cast("B"))
        if not size or not count:
            return
        base = fold(block) if folded is None else folded
        step = size % PERIOD
        period = PERIOD // gcd(step, PERIOD)  # copies until the rotations repeat
        full, partial = divmod(count, period)
        partial_sum = cycle_sum = 0
        for index in range(period if full % 2 else partial):
            rotated = rotate_columns(base, self._length + index * step)
            cycle_sum ^= rotated
            if index < partial:
                partial_sum ^= rotated
        # Whole cycles cancel pairwise: an even number of them adds nothing.
        self._columns ^= partial_sum ^ (cycle_sum if full % 2 else 0)
        self._length += size * count

    def copy(self) -> QuickXorHash:
        """An independent copy of the current state."""
        clone = QuickXorHash()
        clone._columns = self._columns
        clone._length = self._length
        return clone

    def digest(self) -> bytes:
        """The 20-byte hash of everything so far."""
        result = bytearray(_spread(self._columns).to_bytes(DIGEST_SIZE, "little"))
        for index, byte in enumerate((self._length & _LENGTH_MASK).to_bytes(8, "little")):
            result[DIGEST_SIZE - 8 + index] ^= byte
        return bytes(result)

    def hexdigest(self) -> str:
        """The hash as lowercase hex."""
        return self.digest().hex()

    def b64digest(self) -> str:
        """The hash as Graph publishes it (standard base64, 28 characters)."""
        return base64.b64encode(self.digest()).decode("ascii")


def quickxor_b64(data: bytes | bytearray | memoryview) -> str:
    """The base64 QuickXorHash of ``data``."""
    return QuickXorHash(data).b64digest()
