"""Validating the files in the spool directory before they go to the CRM, and the checks that
:mod:`syncd.engines.intake` applies to files as they arrive (:func:`sniff_bytes`,
:func:`declared_type_fits`, :func:`sanitise_name`).

syncd writes each attached file into its spool and an outbox row naming it by a path *relative to
that directory*, with the original file name, the type and the size. The push lane checks all four
again before uploading, as hostile as when they arrived (a row may not have come through the door,
a file may have changed since):

* the path must stay inside the spool: no absolute paths, no ``..``, no NUL or backslash, no
  symbolic link anywhere below the spool root (not even one pointing inside), only regular files;
* the type is decided by the file's magic bytes (:func:`sniff`), never by its name or the declared
  type, and must be on the allow-list :data:`ALLOWED_TYPES`;
* the declared type may differ from the sniffed one only within the same kind (image, video,
  document); the declared size must match the file exactly (a mismatch means a half-written file);
* the size must be within the per-kind limit of :class:`FileLimits`.

Files are opened component by component below the spool root with ``O_NOFOLLOW`` (``openat``
style, through ``dir_fd``), so a symbolic link swapped in between the check and the open is caught
rather than followed. Every rejection is a :class:`SpoolFileError` (a
:class:`~syncd.core.errors.SkippableError`) whose message names the file by the caller's label (the
outbox uses ``file #N``: a client's file name may hold personal data) and never quotes its content.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO, Final, Literal

import filetype  # type: ignore[import-untyped]

from syncd.core.errors import ConfigError, SkippableError

__all__ = [
    "ALLOWED_TYPES",
    "MAX_NAME_LENGTH",
    "MIB",
    "SNIFF_BYTES",
    "FileLimits",
    "Kind",
    "SpoolFileError",
    "ValidatedFile",
    "check_file_count",
    "declared_type_fits",
    "format_size",
    "open_in_spool",
    "remove_spool_file",
    "resolve_in_spool",
    "sanitise_name",
    "sniff",
    "sniff_bytes",
    "validate_file",
]

Kind = Literal["image", "video", "document"]

MIB: Final = 1024 * 1024

#: How much of a file :func:`sniff` reads: every signature we accept sits in the first few bytes,
#: and an ISO-BMFF ``ftyp`` box with its brand list fits easily.
SNIFF_BYTES: Final = 8192

#: The allow-list: canonical MIME type (as :func:`sniff` reports it) → kind.
ALLOWED_TYPES: Final[Mapping[str, Kind]] = MappingProxyType(
    {
        "image/jpeg": "image",
        "image/png": "image",
        "image/heic": "image",
        "image/webp": "image",
        "video/mp4": "video",
        "video/quicktime": "video",
        "application/pdf": "document",
    }
)

#: Declared (browser-supplied) types that are spelled differently from the canonical ones.
_DECLARED_ALIASES: Final[Mapping[str, Kind]] = MappingProxyType(
    {
        "application/x-pdf": "document",
        "application/acrobat": "document",
        "application/vnd.pdf": "document",
        "text/pdf": "document",
        "text/x-pdf": "document",
    }
)

#: Declared types that make no claim about the content (browsers send these for HEIC on Windows).
_DECLARED_GENERIC: Final = frozenset({"", "application/octet-stream", "binary/octet-stream"})

_ARTICLE_KIND: Final[Mapping[Kind, str]] = MappingProxyType(
    {"image": "an image", "video": "a video", "document": "a document"}
)
_PLURAL_KIND: Final[Mapping[Kind, str]] = MappingProxyType(
    {"image": "images", "video": "videos", "document": "documents"}
)

MAX_NAME_LENGTH: Final = 120
"""The longest name :func:`sanitise_name` returns, in characters."""

_LABEL_LENGTH: Final = 100
_MAX_EXTENSION_LENGTH: Final = 16
_MAX_RELATIVE_LENGTH: Final = 4096
# Characters Windows and multipart headers choke on; replaced by "_" in sanitised names.
_RESERVED_NAME_CHARS: Final = frozenset('<>:"|?*')
# Unicode categories removed from names: controls, format (bidi overrides such as U+202E, which
# make "gpj.exe" display as "exe.jpg"), lone surrogates, line and paragraph separators.
_DROPPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


class SpoolFileError(SkippableError):
    """One spool file is unacceptable; the outbox row goes dead with this reason.

    ``name`` is the display label of the file (its sanitised original name, or the sanitised spool
    path when no original name is known), at most 100 characters; ``reason`` says what is wrong
    without quoting the file's content.
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True)
class FileLimits:
    """Per-kind maximum file sizes in bytes and the most files one service request may carry."""

    image: int = 25 * MIB
    video: int = 500 * MIB
    document: int = 50 * MIB
    max_files_per_request: int = 20

    def __post_init__(self) -> None:
        for field in ("image", "video", "document", "max_files_per_request"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"FileLimits.{field} must be a positive integer")

    def for_kind(self, kind: Kind) -> int:
        """The size limit in bytes for files of ``kind``."""
        limit: int = getattr(self, kind)
        return limit


@dataclass(frozen=True)
class ValidatedFile:
    """A spool file that passed every check, ready to upload.

    ``path`` is its real path inside the spool, ``mime_type`` the sniffed canonical type (it wins
    over the declared one), ``original_name`` the sanitised name to upload it under.
    """

    path: Path
    size: int
    mime_type: str
    kind: Kind
    original_name: str


# --------------------------------------------------------------------------------------------
# Names


def sanitise_name(name: str) -> str:
    """A display- and upload-safe file name made from the portal's ``name``.

    Keeps the basename only; removes control, format (bidi override) and separator characters and
    path separators; replaces ``<>:"|?*`` with ``_``; normalises to Unicode NFC (diacritics stay:
    ``Jüri_foto.jpg``); trims surrounding blanks and trailing dots; gives hidden names a ``file``
    prefix (``.jpg`` → ``file.jpg``); cuts to 120 characters keeping the extension; never returns an
    empty string (``file`` is the fallback).
    """
    if not isinstance(name, str):
        return "file"
    text = "".join(ch for ch in name if unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    text = unicodedata.normalize("NFC", text)
    segments = [s for s in text.replace("\\", "/").split("/") if s.strip()]
    base = segments[-1] if segments else ""
    base = "".join("_" if ch in _RESERVED_NAME_CHARS else ch for ch in base)
    base = _trim(base)
    if not base:
        return "file"
    if base.startswith("."):
        base = "file" + base
    return _shorten(base, MAX_NAME_LENGTH)


def _trim(base: str) -> str:
    """Strip surrounding whitespace and trailing dots (Windows drops them silently)."""
    return base.strip().rstrip(". ").strip()


def _shorten(base: str, limit: int) -> str:
    """Cut ``base`` to ``limit`` characters, keeping a short extension intact."""
    if len(base) <= limit:
        return base
    stem, dot, ext = base.rpartition(".")
    if dot and stem and 0 < len(ext) <= _MAX_EXTENSION_LENGTH:
        stem = _trim(stem[: limit - len(ext) - 1]) or "file"
        return unicodedata.normalize("NFC", f"{stem}.{ext}")[:limit]
    return _trim(base[:limit]) or "file"


def _label(text: str) -> str:
    """A message label: ``text`` with unsafe characters replaced, at most 100 characters."""
    safe = "".join("?" if unicodedata.category(ch) in _DROPPED_CATEGORIES else ch for ch in text)
    if not safe:
        return "(no name)"
    if len(safe) > _LABEL_LENGTH:
        return safe[: _LABEL_LENGTH - 1] + "…"
    return safe


def _name_label(original_name: str) -> str:
    """The label naming a file in messages: its sanitised original name, truncated."""
    return _label(sanitise_name(original_name))


# --------------------------------------------------------------------------------------------
# Sniffing

# ISO base media file format (MP4, QuickTime, HEIF) files start with an ``ftyp`` box whose major
# and compatible brands say what they are. ``filetype`` reads these too, but loosely: it reports
# any file listing ``isom`` as MP4 (also QuickTime, 3GP and Canon CR3 files that do), and misses
# the HEIF brands ``heix``/``hevc``. The brand sets below are from the ISO/IEC 14496-12 and
# 23008-12 brand registry (mp4ra.org).
_HEIC_BRANDS: Final = frozenset({"heic", "heix", "heim", "heis", "hevc", "hevx", "hevm", "hevs"})
_HEIF_GENERIC_BRANDS: Final = frozenset({"mif1", "msf1"})
_AVIF_BRANDS: Final = frozenset({"avif", "avis"})
_QUICKTIME_BRANDS: Final = frozenset({"qt  "})
_MP4_BRANDS: Final = frozenset(
    {
        "isom",
        "iso2",
        "iso3",
        "iso4",
        "iso5",
        "iso6",
        "mp41",
        "mp42",
        "avc1",
        "M4V ",
        "M4VH",
        "M4VP",
        "MSNV",
        "XAVC",
    }
)
_MP4_AUDIO_BRANDS: Final = frozenset({"M4A ", "M4B ", "M4P ", "F4A ", "F4B "})
_OTHER_BRANDS: Final[Mapping[str, str]] = MappingProxyType(
    {"crx ": "image/x-canon-cr3", "jpx ": "image/jpx", "3g2a": "video/3gpp2"}
)
# Sniffed types reported under another canonical name (an animated PNG is a PNG).
_SNIFFED_ALIASES: Final[Mapping[str, str]] = MappingProxyType({"image/apng": "image/png"})


def sniff(path: str | os.PathLike[str]) -> str | None:
    """The MIME type of the file at ``path`` decided by its magic bytes, or ``None`` if unknown.

    Reads at most :data:`SNIFF_BYTES` bytes; the name and any declared type are ignored. Opens
    without blocking (a FIFO reads as empty). Raises :class:`OSError` when the file cannot be
    read; for spool files use :func:`validate_file`, which also checks the path.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        head = os.read(fd, SNIFF_BYTES)
    finally:
        os.close(fd)
    return sniff_bytes(head)


def sniff_bytes(head: bytes) -> str | None:
    """The MIME type of content starting with ``head``, or ``None`` if no signature matches.

    ISO-BMFF files (an ``ftyp`` box first) are classified by their brands; everything else by
    the ``filetype`` library.
    """
    head = bytes(head[:SNIFF_BYTES])
    mime = _sniff_isobmff(head)
    if mime is None and head:
        guessed = filetype.guess_mime(head)
        mime = guessed if isinstance(guessed, str) else None
    return _SNIFFED_ALIASES.get(mime, mime) if mime is not None else None


def _ftyp_brands(head: bytes) -> tuple[str, frozenset[str]] | None:
    """The major and compatible brands of a leading ``ftyp`` box, or ``None`` if there is none."""
    if len(head) < 16 or head[4:8] != b"ftyp":
        return None
    size = int.from_bytes(head[0:4], "big")
    if size == 0:  # the box runs to the end of the file
        size = len(head)
    if size < 16:
        return None
    end = min(size, len(head))
    major = head[8:12].decode("latin-1")
    compatible = frozenset(head[i : i + 4].decode("latin-1") for i in range(16, end - 3, 4))
    return major, compatible


def _sniff_isobmff(head: bytes) -> str | None:
    """Classify an ISO-BMFF file by its major brand, then by its compatible brands."""
    brands = _ftyp_brands(head)
    if brands is None:
        return None
    major, compatible = brands
    return _classify_brand(major, compatible) or _classify_compatible(compatible)


def _classify_brand(major: str, compatible: frozenset[str]) -> str | None:
    """The type a major brand alone decides, if it does."""
    if major in _HEIC_BRANDS:
        return "image/heic"
    if major in _AVIF_BRANDS:
        return "image/avif"
    if major in _HEIF_GENERIC_BRANDS:
        return "image/avif" if compatible & _AVIF_BRANDS else "image/heic"
    if major in _QUICKTIME_BRANDS:
        return "video/quicktime"
    if major in _MP4_BRANDS:
        return "video/mp4"
    if major in _MP4_AUDIO_BRANDS:
        return "audio/mp4"
    if major in _OTHER_BRANDS:
        return _OTHER_BRANDS[major]
    if major.startswith("3g2"):
        return "video/3gpp2"
    if major.startswith("3g"):
        return "video/3gpp"
    return None


def _classify_compatible(compatible: frozenset[str]) -> str | None:
    """The type compatible brands decide when the major brand is unknown (vendor brands)."""
    if compatible & _AVIF_BRANDS:
        return "image/avif"
    if compatible & (_HEIC_BRANDS | _HEIF_GENERIC_BRANDS):
        return "image/heic"
    if compatible & _QUICKTIME_BRANDS:
        return "video/quicktime"
    if compatible & _MP4_BRANDS:
        return "video/mp4"
    return None


# --------------------------------------------------------------------------------------------
# Paths


def _split_relative(relative: str) -> tuple[str, ...]:
    """The components of a spool-relative path, or raise for one that may leave the spool."""
    if not isinstance(relative, str):
        raise SpoolFileError("(no name)", "the spool path is not a string")
    label = _label(relative)
    if "\x00" in relative or "\\" in relative:
        raise SpoolFileError(label, "the spool path contains a NUL byte or a backslash")
    if len(relative) > _MAX_RELATIVE_LENGTH:
        raise SpoolFileError(label, "the spool path is too long")
    if relative.startswith("/"):
        raise SpoolFileError(label, "path escapes the spool directory (absolute path)")
    parts = relative.split("/")
    if ".." in parts:
        raise SpoolFileError(label, "path escapes the spool directory (.. component)")
    parts = [p for p in parts if p not in ("", ".")]
    if not parts:
        raise SpoolFileError(label, "the spool path is empty")
    return tuple(parts)


def _spool_root(spool_dir: Path) -> Path:
    """The real path of the spool directory; a missing spool is a configuration error."""
    root = Path(os.path.realpath(spool_dir))
    if not root.is_dir():
        raise ConfigError(f"the spool directory {spool_dir} does not exist or is not a directory")
    return root


def _check_real_path(root: Path, parts: tuple[str, ...], label: str) -> Path:
    """The lexical path of ``parts`` under ``root`` after checking that no symlink is involved."""
    candidate = root.joinpath(*parts)
    try:
        real = Path(os.path.realpath(candidate))
    except OSError:
        # realpath lstat()s then readlink()s each component: a link swapped for a file in
        # between fails with EINVAL. The file is being changed under us; refuse it.
        raise SpoolFileError(label, "the file changed while it was being checked") from None
    if not real.is_relative_to(root):
        raise SpoolFileError(label, "path escapes the spool directory (through a symbolic link)")
    if real != candidate:
        raise SpoolFileError(label, "the path is or goes through a symbolic link (refused)")
    return candidate


def _reason_for(err: OSError) -> str | None:
    """The reason text for an :class:`OSError` that is the file's fault, else ``None``."""
    if err.errno in (errno.ENOENT, errno.ENOTDIR):
        return "the file is missing from the spool"
    if err.errno == errno.ELOOP:
        return "the path is or goes through a symbolic link (refused)"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "syncd may not read the file (permission denied)"
    if err.errno == errno.ENAMETOOLONG:
        return "the spool path is too long"
    return None


def _describe_mode(mode: int) -> str:
    """What kind of non-regular file ``mode`` is, for messages."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


@contextlib.contextmanager
def _parent_fd(root: Path, parts: tuple[str, ...]) -> Iterator[int]:
    """An fd of the directory holding ``parts[-1]``, opened one component at a time.

    Every directory below ``root`` is opened with ``O_NOFOLLOW`` relative to its parent, so a
    symbolic link swapped in after :func:`_check_real_path` makes the open fail instead of being
    followed out of the spool.
    """
    with contextlib.ExitStack() as stack:
        fd = os.open(root, _DIR_FLAGS)
        stack.callback(os.close, fd)
        for part in parts[:-1]:
            fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            stack.callback(os.close, fd)
        yield fd


@dataclass(frozen=True)
class _Opened:
    """A spool file opened for reading after its checks."""

    fd: int
    path: Path
    size: int


@contextlib.contextmanager
def _open_checked(spool_dir: Path, relative: str) -> Iterator[_Opened]:
    """Open a spool file with every path rule applied; raises :class:`SpoolFileError`."""
    parts = _split_relative(relative)
    label = _label(relative)
    root = _spool_root(Path(spool_dir))
    path = _check_real_path(root, parts, label)
    try:
        with _parent_fd(root, parts) as parent:
            before = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISREG(before.st_mode):
                raise SpoolFileError(
                    label, f"not a regular file ({_describe_mode(before.st_mode)})"
                )
            fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=parent)
    except OSError as err:
        reason = _reason_for(err)
        if reason is None:
            raise
        raise SpoolFileError(label, reason) from None
    try:
        after = os.fstat(fd)
        if not stat.S_ISREG(after.st_mode) or (after.st_dev, after.st_ino) != (
            before.st_dev,
            before.st_ino,
        ):
            raise SpoolFileError(label, "the file changed while it was being checked")
        if after.st_nlink > 1:
            # A hard link could make a file from elsewhere on the file system look like a spool
            # file (where fs.protected_hardlinks is off); the portal has no reason to make one.
            raise SpoolFileError(label, "the file has other hard links (refused)")
        yield _Opened(fd=fd, path=path, size=after.st_size)
    finally:
        os.close(fd)


def resolve_in_spool(spool_dir: Path, relative: str) -> Path:
    """The real path of the regular file ``relative`` inside ``spool_dir``.

    Raises :class:`SpoolFileError` when the path is empty, absolute, has a ``..`` component, a NUL
    or a backslash; when it leads out of the spool or through any symbolic link (even one pointing
    inside); when the file is missing, not a regular file, or has other hard links. The file is
    opened with ``O_NOFOLLOW`` one component at a time and compared with ``fstat`` to catch a
    swap. Raises :class:`~syncd.core.errors.ConfigError` when the spool directory itself is missing.
    """
    with _open_checked(spool_dir, relative) as opened:
        return opened.path


def open_in_spool(spool_dir: Path, relative: str) -> BinaryIO:
    """The spool file ``relative`` opened for binary reading, after the checks of
    :func:`resolve_in_spool`: upload from this handle rather than re-opening the path by name.
    """
    with _open_checked(spool_dir, relative) as opened:
        return os.fdopen(os.dup(opened.fd), "rb")


# --------------------------------------------------------------------------------------------
# Validation


def format_size(size: int) -> str:
    """``size`` in bytes, KiB or MiB for messages."""
    if size < 1024:
        return f"{size} bytes"
    if size < MIB:
        return f"{_round(size / 1024)} KiB"
    return f"{_round(size / MIB)} MiB"


def _round(value: float) -> str:
    """``value`` with at most one decimal, without a trailing ``.0``."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _declared_kind(declared_type: str, label: str) -> Kind | None:
    """The kind a declared MIME type claims, ``None`` when it claims nothing; raises if unknown."""
    mime = declared_type.split(";", 1)[0].strip().lower() if isinstance(declared_type, str) else ""
    if mime in _DECLARED_GENERIC:
        return None
    if mime in ALLOWED_TYPES:
        return ALLOWED_TYPES[mime]
    if mime in _DECLARED_ALIASES:
        return _DECLARED_ALIASES[mime]
    if mime.startswith("image/"):
        return "image"
    if mime.startswith("video/"):
        return "video"
    raise SpoolFileError(label, f"declared as {_label(mime)[:60]}, which is not an allowed type")


def declared_type_fits(declared_type: str, kind: Kind) -> bool:
    """Whether a client's declared MIME type fits content of ``kind``; a missing or generic type
    (``application/octet-stream``) makes no claim and fits."""
    try:
        claimed = _declared_kind(declared_type, "")
    except SpoolFileError:
        return False
    return claimed is None or claimed == kind


def _check_declared_size(declared_size: int, actual: int, label: str) -> None:
    """Raise unless the portal's declared size is exactly the file's size."""
    if isinstance(declared_size, bool) or not isinstance(declared_size, int) or declared_size < 0:
        raise SpoolFileError(label, "the declared size is not a valid number of bytes")
    if declared_size != actual:
        raise SpoolFileError(
            label, f"declared size {declared_size} bytes but the file has {actual}"
        )


def _check_type(head: bytes, declared_type: str, label: str) -> tuple[str, Kind]:
    """The sniffed canonical type and kind; raises when not allowed or not what was declared."""
    sniffed = sniff_bytes(head)
    if sniffed is None or sniffed not in ALLOWED_TYPES:
        looks = f"looks like {sniffed}" if sniffed else "type not recognised"
        raise SpoolFileError(label, f"the content is not an allowed type ({looks})")
    kind = ALLOWED_TYPES[sniffed]
    declared = _declared_kind(declared_type, label)
    if declared is not None and declared != kind:
        raise SpoolFileError(
            label,
            f"declared as {_ARTICLE_KIND[declared]} but the content is {_ARTICLE_KIND[kind]}",
        )
    return sniffed, kind


def _check_limit(size: int, kind: Kind, limits: FileLimits, label: str) -> None:
    """Raise when ``size`` is over the limit for ``kind``."""
    limit = limits.for_kind(kind)
    if size <= limit:
        return
    shown, shown_limit = format_size(size), format_size(limit)
    if shown == shown_limit:
        shown, shown_limit = f"{size} bytes", f"{limit} bytes"
    raise SpoolFileError(label, f"{shown} is over the {shown_limit} limit for {_PLURAL_KIND[kind]}")


def validate_file(
    spool_dir: Path,
    relative: str,
    original_name: str,
    declared_type: str,
    declared_size: int,
    limits: FileLimits,
    *,
    label: str | None = None,
) -> ValidatedFile:
    """Check one spool file against every rule and describe it for upload.

    Checks, in order: the path (:func:`resolve_in_spool`), that the file is not empty, that its
    size is the declared size, that its sniffed type is allowed and of the declared kind, and that
    it is within the limit for its kind. Raises :class:`SpoolFileError` naming the file by
    ``label`` (``file #2``: the outbox refers to files by position, since a client's file name
    may hold personal data), or else by its sanitised original name.
    """
    label = _name_label(original_name) if label is None else label
    try:
        with _open_checked(spool_dir, relative) as opened:
            head = os.pread(opened.fd, SNIFF_BYTES, 0)
    except SpoolFileError as err:
        raise SpoolFileError(label, err.reason) from None
    if opened.size == 0:
        raise SpoolFileError(label, "empty file")
    _check_declared_size(declared_size, opened.size, label)
    mime_type, kind = _check_type(head, declared_type, label)
    _check_limit(opened.size, kind, limits, label)
    return ValidatedFile(
        path=opened.path,
        size=opened.size,
        mime_type=mime_type,
        kind=kind,
        original_name=sanitise_name(original_name),
    )


def check_file_count(count: int, limits: FileLimits) -> None:
    """Raise :class:`SpoolFileError` when a request carries more files than the limit allows."""
    if count > limits.max_files_per_request:
        raise SpoolFileError(
            "service request",
            f"{count} files attached; at most {limits.max_files_per_request} are allowed",
        )


# --------------------------------------------------------------------------------------------
# Removal


def remove_spool_file(spool_dir: Path, relative: str) -> bool:
    """Delete a delivered spool file; ``True`` if it was removed, ``False`` if already gone.

    The same path rules as :func:`resolve_in_spool` apply (raising :class:`SpoolFileError`), and
    no symbolic link is ever followed: directories are walked with ``O_NOFOLLOW`` and the file is
    unlinked relative to its parent's fd. Only a regular file is removed. Afterwards the parent
    directories left empty are removed, up to but excluding the spool root.
    """
    parts = _split_relative(relative)
    label = _label(relative)
    root = _spool_root(Path(spool_dir))
    try:
        _check_real_path(root, parts, label)
        with _parent_fd(root, parts) as parent:
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise SpoolFileError(
                    label, f"not removed: not a regular file ({_describe_mode(st.st_mode)})"
                )
            os.unlink(parts[-1], dir_fd=parent)
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        return False
    except OSError as err:
        reason = _reason_for(err)
        if reason is None:
            raise
        raise SpoolFileError(label, reason) from None
    _remove_empty_parents(root, parts)
    return True


def _remove_empty_parents(root: Path, parts: tuple[str, ...]) -> None:
    """Remove the now-empty directories of ``parts[:-1]``, deepest first, never ``root``."""
    for depth in range(len(parts) - 1, 0, -1):
        directory = parts[:depth]
        try:
            with _parent_fd(root, directory) as parent:
                os.rmdir(directory[-1], dir_fd=parent)
        except OSError:
            return
