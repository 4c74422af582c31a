"""The second step of a ``disk.folder.uploadfile``: reading a ``multipart/form-data`` body.

The body is read in 1 MiB chunks into one buffer sized by ``Content-Length`` (or grown chunk
by chunk for ``Transfer-Encoding: chunked``) and counted as it arrives. The file part is then
cut out of that same buffer in place, so an upload never costs more memory than its body.
"""

from __future__ import annotations

from email.message import Message
from email.parser import HeaderParser
from typing import Protocol

CHUNK = 1 << 20
MAX_UPLOAD_BYTES = 600 * (1 << 20)  # the largest file the fake accepts
MAX_BODY_BYTES = MAX_UPLOAD_BYTES + (1 << 20)  # plus room for the multipart framing
_SMALL_FIELD = 1 << 16


class Reader(Protocol):
    """The part of a buffered socket file that reading a body needs."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...

    def read(self, size: int = -1, /) -> bytes: ...

    def readline(self, size: int = -1, /) -> bytes: ...


class BodyError(Exception):
    """A body that cannot be read: too large (``status`` 413) or malformed (400)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class MultipartError(ValueError):
    """A body that is not the expected ``multipart/form-data``."""


def read_body(
    rfile: Reader, content_length: str | None, transfer_encoding: str | None,
    limit: int = MAX_BODY_BYTES,
) -> bytearray:
    """The whole request body. Raises ``BodyError`` before reading when it is too large and
    ``ConnectionError`` when the client stops sending half-way."""
    if transfer_encoding and "chunked" in transfer_encoding.lower():
        return _read_chunked(rfile, limit)
    try:
        length = int(content_length or 0)
    except ValueError as exc:
        raise BodyError(400, "Invalid Content-Length") from exc
    if length < 0:
        raise BodyError(400, "Invalid Content-Length")
    if length > limit:
        raise BodyError(413, f"Request body of {length} bytes exceeds {limit} bytes")
    buffer = bytearray(length)
    received = 0
    with memoryview(buffer) as view:
        while received < length:
            count = rfile.readinto(view[received:received + CHUNK])
            if not count:
                raise ConnectionError(f"client closed after {received} of {length} bytes")
            received += count
    return buffer


def _read_chunked(rfile: Reader, limit: int) -> bytearray:
    buffer = bytearray()
    while True:
        line = rfile.readline(1024)
        if not line:
            raise ConnectionError("client closed inside a chunked body")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise BodyError(400, "Invalid chunk size") from exc
        if size == 0:
            while rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return buffer
        if len(buffer) + size > limit:
            raise BodyError(413, f"Request body exceeds {limit} bytes")
        remaining = size
        while remaining:
            data = rfile.read(min(CHUNK, remaining))
            if not data:
                raise ConnectionError("client closed inside a chunk")
            buffer += data
            remaining -= len(data)
        rfile.readline(1024)  # the CRLF after the chunk


def boundary_of(content_type: str) -> bytes:
    """The multipart boundary of a ``Content-Type`` header."""
    message = Message()
    message["Content-Type"] = content_type
    if message.get_content_type() != "multipart/form-data":
        raise MultipartError("multipart/form-data is expected")
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise MultipartError("the multipart boundary is missing")
    return boundary.encode("latin-1")


def extract_file(
    buffer: bytearray, content_type: str, field: str
) -> tuple[str | None, dict[str, str]]:
    """Cut the part named ``field`` out of a multipart body, in place: afterwards ``buffer``
    holds just that part's content. Returns the part's filename and the other (small) fields.
    """
    delimiter = b"--" + boundary_of(content_type)
    separator = b"\r\n" + delimiter
    if buffer.startswith(delimiter):
        position = 0
    else:
        position = buffer.find(separator)
        if position < 0:
            raise MultipartError("no multipart boundary in the body")
        position += 2
    fields: dict[str, str] = {}
    found: tuple[int, int, str | None] | None = None
    while True:
        position += len(delimiter)
        if buffer[position:position + 2] == b"--":
            break
        line_end = buffer.find(b"\r\n", position)
        headers_end = buffer.find(b"\r\n\r\n", position)
        if line_end < 0 or headers_end < 0:
            raise MultipartError("truncated multipart part headers")
        headers = HeaderParser().parsestr(
            bytes(buffer[line_end + 2:headers_end + 2]).decode("utf-8", "replace")
        )
        start = headers_end + 4
        end = buffer.find(separator, start)
        if end < 0:
            raise MultipartError("unterminated multipart part")
        name = headers.get_param("name", header="content-disposition")
        if name == field and found is None:
            found = (start, end, headers.get_filename())
        elif isinstance(name, str) and end - start <= _SMALL_FIELD:
            fields[name] = bytes(buffer[start:end]).decode("utf-8", "replace")
        position = end + 2
    if found is None:
        raise MultipartError(f"the form has no field {field!r}")
    start, end, filename = found
    del buffer[end:]
    del buffer[:start]
    return filename, fields
