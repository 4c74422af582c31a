"""Spool file validation: magic-byte sniffing, path rules, limits, names and removal.

Every sample is a real file written into ``tmp_path``; the headers are built here byte by byte.
"""

from __future__ import annotations

import os
import struct
import unicodedata
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.core.errors import ConfigError, SkippableError
from syncd.engines.spool import (
    ALLOWED_TYPES,
    MIB,
    FileLimits,
    SpoolFileError,
    ValidatedFile,
    check_file_count,
    open_in_spool,
    remove_spool_file,
    resolve_in_spool,
    sanitise_name,
    sniff,
    sniff_bytes,
    validate_file,
)

# --------------------------------------------------------------------------------------------
# Sample content


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    """An ISO-BMFF file: an ``ftyp`` box with the given brands, then a small ``mdat``."""
    return _box(b"ftyp", major + b"\0\0\0\0" + b"".join(compatible)) + _box(b"mdat", b"\0" * 32)


def _png() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + b"\0" * 32
    )


JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\0" * 64
PNG = _png()
WEBP = b"RIFF" + struct.pack("<I", 52) + b"WEBPVP8 " + b"\0" * 44
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n"
MP4_ISOM = _ftyp(b"isom", b"isom", b"iso2", b"avc1", b"mp41")
MP4_MP42 = _ftyp(b"mp42", b"mp42", b"isom")
QUICKTIME = _ftyp(b"qt  ", b"qt  ")
QUICKTIME_LISTING_ISOM = _ftyp(b"qt  ", b"qt  ", b"isom")
HEIC = _ftyp(b"heic", b"mif1", b"heic")
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\0" * 8 + b"\x02\x00\x3e\x00" + b"\0" * 48
SHELL = b"#!/bin/sh\necho hello\n"
ZIP = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\0" * 40

LIMITS = FileLimits()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    directory = tmp_path / "spool"
    directory.mkdir()
    return directory


def _put(spool: Path, relative: str, content: bytes) -> Path:
    path = spool / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _reject(spool: Path, relative: str, name: str, declared: str, size: int) -> str:
    with pytest.raises(SpoolFileError) as info:
        validate_file(spool, relative, name, declared, size, LIMITS)
    return str(info.value)


# --------------------------------------------------------------------------------------------
# Sniffing


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (JPEG, "image/jpeg"),
        (PNG, "image/png"),
        (WEBP, "image/webp"),
        (PDF, "application/pdf"),
        (MP4_ISOM, "video/mp4"),
        (MP4_MP42, "video/mp4"),
        (QUICKTIME, "video/quicktime"),
        (QUICKTIME_LISTING_ISOM, "video/quicktime"),
        (HEIC, "image/heic"),
        (_ftyp(b"heix", b"mif1", b"heix"), "image/heic"),
        (_ftyp(b"hevc", b"msf1", b"hevc"), "image/heic"),
        (_ftyp(b"mif1", b"mif1", b"heic"), "image/heic"),
        (_ftyp(b"mif1", b"mif1", b"avif"), "image/avif"),
        (_ftyp(b"avif", b"avif", b"mif1"), "image/avif"),
        (_ftyp(b"M4A ", b"M4A ", b"isom"), "audio/mp4"),
        (_ftyp(b"3gp4", b"3gp4", b"isom"), "video/3gpp"),
        (_ftyp(b"crx ", b"crx ", b"isom"), "image/x-canon-cr3"),
        (_ftyp(b"XYZ1", b"XYZ1", b"mp42"), "video/mp4"),
        (ELF, "application/x-executable"),
        (ZIP, "application/zip"),
        (SHELL, None),
        (b"", None),
        (b"\0\0\0\x08ftyp", None),
    ],
)
def test_sniff_by_magic_bytes(tmp_path: Path, content: bytes, expected: str | None) -> None:
    path = tmp_path / "sample.bin"
    path.write_bytes(content)
    assert sniff(path) == expected
    assert sniff_bytes(content) == expected


def test_sniff_ignores_name(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(PDF)
    assert sniff(path) == "application/pdf"


def test_sniff_reads_only_the_head(tmp_path: Path) -> None:
    path = tmp_path / "big.pdf"
    with path.open("wb") as handle:
        handle.write(PDF)
        handle.truncate(2 * 1024 * MIB)  # sparse: reading it all would take seconds
    assert sniff(path) == "application/pdf"


def test_sniff_does_not_block_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert sniff(fifo) is None


def test_allow_list() -> None:
    assert dict(ALLOWED_TYPES) == {
        "image/jpeg": "image",
        "image/png": "image",
        "image/heic": "image",
        "image/webp": "image",
        "video/mp4": "video",
        "video/quicktime": "video",
        "application/pdf": "document",
    }


# --------------------------------------------------------------------------------------------
# Accepted files


@pytest.mark.parametrize(
    ("content", "name", "declared", "mime", "kind"),
    [
        (JPEG, "photo.jpg", "image/jpeg", "image/jpeg", "image"),
        (PNG, "photo.png", "image/jpg", "image/png", "image"),  # sniffed type wins
        (WEBP, "photo.webp", "image/webp", "image/webp", "image"),
        (HEIC, "IMG_0001.HEIC", "application/octet-stream", "image/heic", "image"),
        (HEIC, "IMG_0002.heic", "", "image/heic", "image"),
        (MP4_ISOM, "clip.mp4", "video/mp4", "video/mp4", "video"),
        (QUICKTIME, "clip.mov", "video/mp4", "video/quicktime", "video"),
        (PDF, "manual.pdf", "application/pdf; charset=binary", "application/pdf", "document"),
        (PDF, "manual.pdf", "application/x-pdf", "application/pdf", "document"),
    ],
)
def test_valid_files(
    spool: Path, content: bytes, name: str, declared: str, mime: str, kind: str
) -> None:
    path = _put(spool, "req-1/file.bin", content)
    result = validate_file(spool, "req-1/file.bin", name, declared, len(content), LIMITS)
    assert result == ValidatedFile(
        path=path.resolve(), size=len(content), mime_type=mime, kind=kind, original_name=name
    )


def test_valid_file_name_is_sanitised(spool: Path) -> None:
    _put(spool, "a.jpg", JPEG)
    result = validate_file(spool, "a.jpg", "C:\\Users\\x\\Jüri\tfoto.jpg", "", len(JPEG), LIMITS)
    assert result.original_name == "Jürifoto.jpg"


def test_spool_dir_through_a_symlink_is_fine(tmp_path: Path, spool: Path) -> None:
    _put(spool, "a.jpg", JPEG)
    alias = tmp_path / "alias"
    alias.symlink_to(spool)
    assert resolve_in_spool(alias, "a.jpg") == spool.resolve() / "a.jpg"
    assert resolve_in_spool(spool, "./a.jpg") == spool.resolve() / "a.jpg"


def test_open_in_spool_reads_the_checked_file(spool: Path) -> None:
    _put(spool, "d/a.pdf", PDF)
    with open_in_spool(spool, "d/a.pdf") as handle:
        assert handle.read() == PDF


# --------------------------------------------------------------------------------------------
# Content rejections


@pytest.mark.parametrize(
    ("content", "name", "declared", "expected"),
    [
        (
            ELF,
            "photo.jpg",
            "image/jpeg",
            "photo.jpg: the content is not an allowed type (looks like application/x-executable)",
        ),
        (
            SHELL,
            "report.pdf",
            "application/pdf",
            "report.pdf: the content is not an allowed type (type not recognised)",
        ),
        (
            ZIP,
            "video.mp4",
            "video/mp4",
            "video.mp4: the content is not an allowed type (looks like application/zip)",
        ),
        (
            _ftyp(b"mif1", b"mif1", b"avif"),
            "p.avif",
            "image/avif",
            "p.avif: the content is not an allowed type (looks like image/avif)",
        ),
        (
            MP4_ISOM,
            "scan.pdf",
            "application/pdf",
            "scan.pdf: declared as a document but the content is a video",
        ),
        (
            PDF,
            "clip.mov",
            "video/quicktime",
            "clip.mov: declared as a video but the content is a document",
        ),
        (
            JPEG,
            "page.html",
            "text/html",
            "page.html: declared as text/html, which is not an allowed type",
        ),
    ],
)
def test_content_rejections(
    spool: Path, content: bytes, name: str, declared: str, expected: str
) -> None:
    _put(spool, "f", content)
    message = _reject(spool, "f", name, declared, len(content))
    assert message == expected
    assert content[:8].decode("latin-1") not in message


def test_rejection_is_skippable(spool: Path) -> None:
    _put(spool, "f", ELF)
    with pytest.raises(SkippableError):
        validate_file(spool, "f", "x.jpg", "image/jpeg", len(ELF), LIMITS)


def test_empty_file(spool: Path) -> None:
    _put(spool, "a.jpg", b"")
    assert _reject(spool, "a.jpg", "a.jpg", "image/jpeg", 0) == "a.jpg: empty file"


def test_size_mismatch(spool: Path) -> None:
    _put(spool, "x.jpg", JPEG + b"\0" * (2048 - len(JPEG)))
    assert (
        _reject(spool, "x.jpg", "x.jpg", "image/jpeg", 100)
        == "x.jpg: declared size 100 bytes but the file has 2048"
    )


@pytest.mark.parametrize("declared", [-1, True])
def test_invalid_declared_size(spool: Path, declared: int) -> None:
    _put(spool, "x.jpg", JPEG)
    assert (
        _reject(spool, "x.jpg", "x.jpg", "image/jpeg", declared)
        == "x.jpg: the declared size is not a valid number of bytes"
    )


def test_oversized_video(spool: Path) -> None:
    path = _put(spool, "v.mp4", MP4_ISOM)
    size = 812 * MIB
    os.truncate(path, size)  # sparse
    assert (
        _reject(spool, "v.mp4", "video.mp4", "video/mp4", size)
        == "video.mp4: 812 MiB is over the 500 MiB limit for videos"
    )


def test_limit_boundary_and_tiny_overshoot(spool: Path) -> None:
    path = _put(spool, "p.png", PNG)
    os.truncate(path, 25 * MIB)
    assert validate_file(spool, "p.png", "p.png", "image/png", 25 * MIB, LIMITS).size == 25 * MIB
    os.truncate(path, 25 * MIB + 1)
    assert _reject(spool, "p.png", "p.png", "image/png", 25 * MIB + 1) == (
        "p.png: 26214401 bytes is over the 26214400 bytes limit for images"
    )


def test_custom_limits(spool: Path) -> None:
    _put(spool, "s.pdf", PDF)
    limits = FileLimits(document=10)
    with pytest.raises(SpoolFileError) as info:
        validate_file(spool, "s.pdf", "s.pdf", "application/pdf", len(PDF), limits)
    assert str(info.value) == f"s.pdf: {len(PDF)} bytes is over the 10 bytes limit for documents"


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"FileLimits\.video"):
        FileLimits(video=0)


def test_file_count() -> None:
    check_file_count(20, LIMITS)
    with pytest.raises(SpoolFileError) as info:
        check_file_count(21, LIMITS)
    assert str(info.value) == "service request: 21 files attached; at most 20 are allowed"


def test_label_is_truncated(spool: Path) -> None:
    _put(spool, "f", ELF)
    name = "x" * 300 + ".jpg"
    message = _reject(spool, "f", name, "image/jpeg", len(ELF))
    label, _, reason = message.partition(": ")
    assert len(label) == 100
    assert reason.startswith("the content is not an allowed type")


# --------------------------------------------------------------------------------------------
# Path rejections


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("../x.jpg", "../x.jpg: path escapes the spool directory (.. component)"),
        ("a/../../x", "a/../../x: path escapes the spool directory (.. component)"),
        ("a/../b.jpg", "a/../b.jpg: path escapes the spool directory (.. component)"),
        ("/etc/passwd", "/etc/passwd: path escapes the spool directory (absolute path)"),
        ("", "(no name): the spool path is empty"),
        ("./", "./: the spool path is empty"),
        ("a\x00.jpg", "a?.jpg: the spool path contains a NUL byte or a backslash"),
        ("a\\b.jpg", "a\\b.jpg: the spool path contains a NUL byte or a backslash"),
        ("x" * 5000, "x" * 99 + "…: the spool path is too long"),
    ],
)
def test_lexical_path_rejections(spool: Path, relative: str, expected: str) -> None:
    with pytest.raises(SpoolFileError) as info:
        resolve_in_spool(spool, relative)
    assert str(info.value) == expected


def test_traversal_reported_under_original_name(spool: Path) -> None:
    message = _reject(spool, "../../etc/passwd", "passwd.jpg", "image/jpeg", 1)
    assert message == "passwd.jpg: path escapes the spool directory (.. component)"


def test_symlink_pointing_out(tmp_path: Path, spool: Path) -> None:
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(JPEG)
    (spool / "link.jpg").symlink_to(secret)
    message = _reject(spool, "link.jpg", "link.jpg", "image/jpeg", len(JPEG))
    assert message == "link.jpg: path escapes the spool directory (through a symbolic link)"


def test_symlinked_directory_pointing_out(tmp_path: Path, spool: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.jpg").write_bytes(JPEG)
    (spool / "req").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SpoolFileError) as info:
        resolve_in_spool(spool, "req/x.jpg")
    assert str(info.value) == (
        "req/x.jpg: path escapes the spool directory (through a symbolic link)"
    )


def test_symlink_pointing_inside_is_refused(spool: Path) -> None:
    _put(spool, "real.jpg", JPEG)
    (spool / "alias.jpg").symlink_to(spool / "real.jpg")
    (spool / "dir").mkdir()
    (spool / "dirlink").symlink_to(spool / "dir", target_is_directory=True)
    _put(spool, "dir/in.jpg", JPEG)
    for relative in ("alias.jpg", "dirlink/in.jpg"):
        with pytest.raises(SpoolFileError) as info:
            resolve_in_spool(spool, relative)
        assert str(info.value) == (
            f"{relative}: the path is or goes through a symbolic link (refused)"
        )


def test_dangling_and_looping_symlinks(spool: Path) -> None:
    (spool / "loop").symlink_to(spool / "loop")
    (spool / "dangling.jpg").symlink_to(spool / "nowhere.jpg")
    with pytest.raises(SpoolFileError, match="symbolic link"):
        resolve_in_spool(spool, "loop")
    with pytest.raises(SpoolFileError, match="symbolic link"):
        resolve_in_spool(spool, "dangling.jpg")


def test_hard_link_is_refused(tmp_path: Path, spool: Path) -> None:
    outside = tmp_path / "credentials.pdf"
    outside.write_bytes(PDF)
    os.link(outside, spool / "c.pdf")
    assert _reject(spool, "c.pdf", "c.pdf", "application/pdf", len(PDF)) == (
        "c.pdf: the file has other hard links (refused)"
    )


def test_symlink_to_the_spool_root_is_refused(spool: Path) -> None:
    (spool / "root").symlink_to(spool, target_is_directory=True)
    with pytest.raises(SpoolFileError, match="symbolic link"):
        resolve_in_spool(spool, "root")


def test_missing_file(spool: Path) -> None:
    message = _reject(spool, "req/scan.pdf", "scan.pdf", "application/pdf", 10)
    assert message == "scan.pdf: the file is missing from the spool"
    _put(spool, "plain", PDF)
    message = _reject(spool, "plain/scan.pdf", "scan.pdf", "application/pdf", 10)
    assert message == "scan.pdf: the file is missing from the spool"


def test_directory(spool: Path) -> None:
    (spool / "d.jpg").mkdir()
    assert _reject(spool, "d.jpg", "d.jpg", "image/jpeg", 1) == (
        "d.jpg: not a regular file (a directory)"
    )


def test_fifo(spool: Path) -> None:
    os.mkfifo(spool / "p.jpg")
    assert _reject(spool, "p.jpg", "p.jpg", "image/jpeg", 1) == (
        "p.jpg: not a regular file (a FIFO)"
    )


def test_device(spool: Path) -> None:
    try:
        os.mknod(spool / "null.jpg", 0o600 | 0o020000, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    assert _reject(spool, "null.jpg", "null.jpg", "image/jpeg", 1) == (
        "null.jpg: not a regular file (a device)"
    )


def test_missing_spool_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        resolve_in_spool(tmp_path / "nope", "a.jpg")


# --------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Jüri_foto.jpg", "Jüri_foto.jpg"),
        ("Ju\u0308ri.jpg", "Jüri.jpg"),  # NFD in, NFC out
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\mari\\Desktop\\scan.pdf", "scan.pdf"),
        ("dir/", "dir"),
        ("a\x00b\nc\x7f.jpg", "abc.jpg"),
        ("photo\u202egpj.exe", "photogpj.exe"),  # bidi override removed
        ('what?"<x>|*:.png', "what___x____.png"),
        ("  spaced.jpg  ", "spaced.jpg"),
        ("trailing.jpg...", "trailing.jpg"),
        (".jpg", "file.jpg"),
        (".htaccess", "file.htaccess"),
        ("..", "file"),
        ("", "file"),
        ("/", "file"),
        ("\x01\x02", "file"),
        ("a" * 200 + ".jpeg", "a" * 115 + ".jpeg"),
        ("b" * 200, "b" * 120),
        ("c" * 100 + "." + "d" * 100, ("c" * 100 + "." + "d" * 100)[:120]),
    ],
)
def test_sanitise_name(name: str, expected: str) -> None:
    assert sanitise_name(name) == expected


def test_sanitise_name_lone_surrogate() -> None:
    result = sanitise_name("a\ud800b.jpg")
    assert result == "ab.jpg"
    result.encode("utf-8")


@given(st.text(max_size=400))
def test_sanitise_name_properties(name: str) -> None:
    result = sanitise_name(name)
    assert result
    assert len(result) <= 120
    assert "/" not in result
    assert "\\" not in result
    assert "\x00" not in result
    assert all(unicodedata.category(ch) not in ("Cc", "Cf", "Cs") for ch in result)
    assert result not in (".", "..")
    assert not result.startswith(".")
    result.encode("utf-8")
    assert sanitise_name(result) == result


@given(st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=60))
def test_sanitise_name_keeps_the_extension(stem: str) -> None:
    result = sanitise_name(stem * 10 + ".pdf")
    assert result.endswith(".pdf")


# --------------------------------------------------------------------------------------------
# Removal


def test_remove_cleans_empty_parents_but_not_the_root(spool: Path) -> None:
    _put(spool, "2024/req-1/a.jpg", JPEG)
    assert remove_spool_file(spool, "2024/req-1/a.jpg") is True
    assert spool.is_dir()
    assert list(spool.iterdir()) == []


def test_remove_keeps_non_empty_parents(spool: Path) -> None:
    _put(spool, "2024/req-1/a.jpg", JPEG)
    _put(spool, "2024/req-2/b.jpg", JPEG)
    assert remove_spool_file(spool, "2024/req-1/a.jpg") is True
    assert not (spool / "2024/req-1").exists()
    assert (spool / "2024/req-2/b.jpg").exists()


def test_remove_top_level_file(spool: Path) -> None:
    _put(spool, "a.jpg", JPEG)
    assert remove_spool_file(spool, "a.jpg") is True
    assert spool.is_dir()


def test_remove_missing_is_false(spool: Path) -> None:
    assert remove_spool_file(spool, "gone.jpg") is False
    assert remove_spool_file(spool, "no/such/dir.jpg") is False


def test_remove_refuses_traversal(tmp_path: Path, spool: Path) -> None:
    victim = tmp_path / "victim.jpg"
    victim.write_bytes(JPEG)
    for relative in ("../victim.jpg", str(victim)):
        with pytest.raises(SpoolFileError, match="path escapes the spool directory"):
            remove_spool_file(spool, relative)
    assert victim.exists()


def test_remove_never_follows_symlinks(tmp_path: Path, spool: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "x.jpg"
    victim.write_bytes(JPEG)
    (spool / "req").symlink_to(outside, target_is_directory=True)
    (spool / "x.jpg").symlink_to(victim)
    for relative in ("req/x.jpg", "x.jpg"):
        with pytest.raises(SpoolFileError, match="path escapes the spool directory"):
            remove_spool_file(spool, relative)
    assert victim.exists()
    _put(spool, "real.jpg", JPEG)
    (spool / "inner.jpg").symlink_to(spool / "real.jpg")
    with pytest.raises(SpoolFileError, match="symbolic link"):
        remove_spool_file(spool, "inner.jpg")
    assert (spool / "real.jpg").exists()


def test_remove_refuses_a_directory(spool: Path) -> None:
    (spool / "d").mkdir()
    with pytest.raises(SpoolFileError) as info:
        remove_spool_file(spool, "d")
    assert str(info.value) == "d: not removed: not a regular file (a directory)"
    assert (spool / "d").is_dir()


def test_a_file_swapped_with_a_symlink_while_being_checked_is_refused_never_crashes(
    spool: Path, tmp_path: Path
) -> None:
    """Another process flips the spool file between a regular file and a symbolic link as fast
    as it can while syncd checks it: every check ends in success or a SpoolFileError (the
    realpath() of a path that changes under it raises EINVAL, which once escaped)."""
    import threading

    outside = tmp_path / "outside.jpg"
    outside.write_bytes(JPEG)
    target = _put(spool, "req/photo.jpg", JPEG)
    stop = threading.Event()

    def flip() -> None:
        link, plain = spool / "req" / ".link", spool / "req" / ".plain"
        while not stop.is_set():
            os.symlink(outside, link)
            os.replace(link, target)
            plain.write_bytes(JPEG)
            os.replace(plain, target)

    flipper = threading.Thread(target=flip)
    flipper.start()
    outcomes: dict[str, int] = {}
    try:
        for _ in range(3000):
            try:
                validate_file(spool, "req/photo.jpg", "photo.jpg", "image/jpeg", len(JPEG), LIMITS)
                outcome = "accepted"
            except SpoolFileError as error:
                outcome = error.reason
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    finally:
        stop.set()
        flipper.join()
    assert set(outcomes) - {"accepted"}, outcomes  # the race was met ...
    assert all("symbolic link" in o or "changed" in o or "missing" in o or o == "accepted"
               for o in outcomes), outcomes  # ... and always ended in a plain answer
