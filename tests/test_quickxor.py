"""QuickXorHash: public test vectors, a byte-by-byte port of Microsoft's C# reference, chunked
updates at odd boundaries, repeated blocks and speed."""

from __future__ import annotations

import base64
import random
import time

import pytest

from syncd.connectors.sharepoint.quickxor import QuickXorHash, fold, quickxor_b64

# (input base64, expected hash) from rclone's backend/onedrive/quickxorhash/quickxorhash_test.go
VECTORS = [
    ("", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    ("Sg==", "SgAAAAAAAAAAAAAAAQAAAAAAAAA="),
    ("tbQ=", "taAFAAAAAAAAAAAAAgAAAAAAAAA="),
    ("0pZP", "0rDEEwAAAAAAAAAAAwAAAAAAAAA="),
    ("jRRDVA==", "jaDAEKgAAAAAAAAABAAAAAAAAAA="),
    ("eAV52qE=", "eChAHrQRCgAAAAAABQAAAAAAAAA="),
    ("/aNzzCFPS/A=", "/RjFHJgRgicsAR4ACAAAAAAAAAA="),
    ("J9iPGCbfZSTNyw==", "J8DGIzBggm+UgQTNUgYAAAAAAAA="),
    ("gQaybEqS/4UlDc8e4IJm", "gDCALNigBEn8oxAlZ8AzPAAOQZg="),
    ("2fuxhBJXtpWFe8dOfdGeHw==", "O9tHLAghgSvYohKFyMMxnNCHaHg="),
    ("T6LYJIfDh81JrAK309H2JMJTXis=", "zBTHrspn3mEcohlJdIUAbjGNaNg="),
    ("NbYXsp5/K6mR+NmHwExjvWeWDJFnXTKWVlzYHoesp2E=", "wjuAuWDiq04qDt1R8hHWDDcwVoQ="),
    (
        "Mb7EGva2rEE5fENDL85P+BsapHEEjv2/siVhKjvAQe02feExVOQSkfmuYzU/kTF1MaKjPmKF/w+c"
        "bvwfdWL8aQ==",
        "n1anP5NfvD4XDYWIeRPW3ZkPv1Y=",
    ),
    (
        "jyibxJSzO6ZiZ0O1qe3tG/bvIAYssvukh9suIT5wEy1JBINVgPiqdsTW0cOpP0aUfP7mgqLfADkz"
        "I/m/GgCuVhr8oFLrOCoTx1/psBOWwhltCbhUx51Icm9aH8tY4Z3ccU+6BKpYQkLCy0B/A9Zc",
        "hZfLIilSITC6N3e3tQ/iSgEzkto=",
    ),
    (
        "qwGf2ESubE5jOUHHyc94ORczFYYbc2OmEzo+hBIyzJiNwAzC8PvJqtTzwkWkSslgHFGWQZR2BV5+"
        "uYTrYT7HVwRM40vqfj0dBgeDENyTenIOL1LHkjtDKoXEnQ0mXAHoJ8PjbNC93zi5TovVRXTNzfGE"
        "s5dpWVqxUzb5lc7dwkyvOluBw482mQ4xrzYyIY1t+//OrNi1ObGXuUw2jBQOFfJVj2Y6BOyYmfB1"
        "y36eBxi3zxeG5d5NYjm2GSh6e08QMAwu3zrINcqIzLOuNIiGXBtl7DjKt7b5wqi4oFiRpZsCyx2s"
        "mhSrdrtK/CkdU6nDN+34vSR/M8rZpWQdBE7a8g==",
        "WYT9JY3JIo/pEBp+tIM6Gt2nyTM=",
    ),
]


class ReferenceQuickXorHash:
    """A line-by-line port of Microsoft's published C# ``QuickXorHash`` (HashCore/HashFinal):
    three 64-bit cells, the last holding 32 bits, bytes XORed in per cell."""

    BITS_IN_LAST_CELL = 32
    SHIFT = 11
    WIDTH_IN_BITS = 160
    _U64 = (1 << 64) - 1

    def __init__(self) -> None:
        self.data = [0, 0, 0]
        self.length_so_far = 0
        self.shift_so_far = 0

    def hash_core(self, array: bytes) -> None:
        cb_size = len(array)
        current_shift = self.shift_so_far
        vector_array_index = current_shift // 64
        vector_offset = current_shift % 64
        iterations = min(cb_size, self.WIDTH_IN_BITS)
        for i in range(iterations):
            is_last_cell = vector_array_index == len(self.data) - 1
            bits_in_vector_cell = self.BITS_IN_LAST_CELL if is_last_cell else 64
            if vector_offset <= bits_in_vector_cell - 8:
                for j in range(i, cb_size, self.WIDTH_IN_BITS):
                    self.data[vector_array_index] ^= (array[j] << vector_offset) & self._U64
            else:
                index1 = vector_array_index
                index2 = 0 if is_last_cell else vector_array_index + 1
                low = bits_in_vector_cell - vector_offset
                xored_byte = 0
                for j in range(i, cb_size, self.WIDTH_IN_BITS):
                    xored_byte ^= array[j]
                self.data[index1] ^= (xored_byte << vector_offset) & self._U64
                self.data[index2] ^= xored_byte >> low
            vector_offset += self.SHIFT
            while vector_offset >= bits_in_vector_cell:
                vector_array_index = 0 if is_last_cell else vector_array_index + 1
                vector_offset -= bits_in_vector_cell
        self.shift_so_far = (
            self.shift_so_far + self.SHIFT * (cb_size % self.WIDTH_IN_BITS)
        ) % self.WIDTH_IN_BITS
        self.length_so_far += cb_size

    def hash_final(self) -> bytes:
        rgb = bytearray(20)
        rgb[0:8] = self.data[0].to_bytes(8, "little")
        rgb[8:16] = self.data[1].to_bytes(8, "little")
        rgb[16:20] = (self.data[2] & 0xFFFFFFFF).to_bytes(4, "little")
        for i, byte in enumerate(self.length_so_far.to_bytes(8, "little")):
            rgb[20 - 8 + i] ^= byte
        return bytes(rgb)


def reference_b64(data: bytes, chunks: list[int] | None = None) -> str:
    reference = ReferenceQuickXorHash()
    offset = 0
    for size in chunks or [len(data)]:
        reference.hash_core(data[offset : offset + size])
        offset += size
    reference.hash_core(data[offset:])
    return base64.b64encode(reference.hash_final()).decode()


@pytest.mark.parametrize(("encoded", "expected"), VECTORS)
def test_public_vectors(encoded: str, expected: str) -> None:
    data = base64.b64decode(encoded)
    assert quickxor_b64(data) == expected
    assert reference_b64(data) == expected
    one_by_one = QuickXorHash()
    for byte in data:
        one_by_one.update(bytes([byte]))
    assert one_by_one.b64digest() == expected


def test_empty_input() -> None:
    assert quickxor_b64(b"") == "AAAAAAAAAAAAAAAAAAAAAAAAAAA="
    assert QuickXorHash().digest() == bytes(20)


def test_matches_the_reference_on_random_inputs_of_many_lengths() -> None:
    rng = random.Random(7)
    lengths = [*range(0, 330), 479, 480, 481, 1000, 1601, 4096, 10_239, 10_240, 10_241, 65_537,
               200_003]
    for length in lengths:
        data = rng.randbytes(length)
        assert quickxor_b64(data) == reference_b64(data), length


def test_chunked_updates_at_odd_boundaries() -> None:
    rng = random.Random(11)
    for _ in range(40):
        data = rng.randbytes(rng.randrange(0, 30_000))
        cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randrange(1, 12))))
        digest = QuickXorHash()
        previous = 0
        sizes = []
        for cut in [*cuts, len(data)]:
            digest.update(memoryview(data)[previous:cut])
            sizes.append(cut - previous)
            previous = cut
        assert digest.length == len(data)
        assert digest.b64digest() == quickxor_b64(data) == reference_b64(data, sizes)


def test_digest_does_not_end_the_hash_and_copy_is_independent() -> None:
    digest = QuickXorHash(b"abc")
    first = digest.digest()
    clone = digest.copy()
    digest.update(b"def")
    assert clone.digest() == first
    assert digest.b64digest() == quickxor_b64(b"abcdef")
    assert digest.hexdigest() == base64.b64decode(quickxor_b64(b"abcdef")).hex()


@pytest.mark.parametrize("block_size", [1, 7, 11, 160, 161, 320, 333, 1000, 65_536])
def test_repeated_blocks_hash_like_the_materialised_bytes(block_size: int) -> None:
    rng = random.Random(block_size)
    block = rng.randbytes(block_size)
    for prefix in (b"", b"x", rng.randbytes(159)):
        for count in (0, 1, 2, 3, 5, 32, 33, 160, 161, 321):
            digest = QuickXorHash(prefix)
            digest.update_repeated(block, count)
            digest.update(b"tail")
            assert digest.b64digest() == quickxor_b64(prefix + block * count + b"tail")
    folded = QuickXorHash()
    folded.update_folded(fold(block), len(block))
    assert folded.b64digest() == quickxor_b64(block)


def test_repeated_block_of_a_gigabyte_costs_nothing() -> None:
    block = random.Random(3).randbytes(160 * 409)
    digest = QuickXorHash(b"%PDF-1.7\n")
    started = time.perf_counter()
    digest.update_repeated(block, (1 << 30) // len(block))
    assert time.perf_counter() - started < 0.5
    assert digest.length == 9 + ((1 << 30) // len(block)) * len(block)


def test_hashing_is_fast_in_pure_python() -> None:
    chunk = random.Random(5).randbytes(64 * 1024)
    digest = QuickXorHash()
    started = time.perf_counter()
    for _ in range(512):  # 32 MiB in 64 KiB reads, as a download loop would
        digest.update(chunk)
    elapsed = time.perf_counter() - started
    assert elapsed < 3.0, f"32 MiB took {elapsed:.2f}s"  # about 0.05 s: 1 GB in ~1-2 s
    assert digest.length == 32 * 1024 * 1024
