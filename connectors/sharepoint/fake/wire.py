"""What the fake Graph puts on the wire: the answer type, Graph's headers and error bodies."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

GRAPH_JSON: Final = (
    "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; "
    "charset=utf-8"
)
PLAIN_JSON: Final = "application/json; charset=utf-8"
HTML: Final = "text/html; charset=utf-8"
# Transports: "send" (the answer), "drop" (close without answering), "truncate" (the whole
# Content-Length but half the body, then close).
TRANSPORTS: Final = frozenset({"send", "drop", "truncate"})


def graph_time(moment: datetime) -> str:
    """Graph's timestamp form: ``2024-05-21T07:40:03Z`` (UTC, whole seconds)."""
    if moment.tzinfo is not UTC or moment.microsecond:
        moment = moment.astimezone(UTC).replace(microsecond=0)
    return moment.replace(tzinfo=None).isoformat() + "Z"


def utc_now() -> datetime:
    """The current time in UTC, whole seconds."""
    return datetime.now(UTC).replace(microsecond=0)


def dumps(payload: Any) -> bytes:
    """Compact JSON."""
    return orjson.dumps(payload)


@dataclass
class Reply:
    """One answer. ``stream`` (with ``length``) replaces ``body`` for downloads, which are
    written chunk by chunk; ``transport`` may break the exchange on purpose."""

    status: int = 200
    body: bytes = b""
    content_type: str = GRAPH_JSON
    headers: dict[str, str] = field(default_factory=dict)
    transport: str = "send"
    close: bool = False
    stream: Iterable[bytes] | None = None
    length: int | None = None

    @property
    def content_length(self) -> int:
        """The Content-Length header's value."""
        return len(self.body) if self.stream is None or self.length is None else self.length


@dataclass(frozen=True)
class RequestIds:
    """Graph's correlation headers: a fresh ``request-id`` and the client's
    ``client-request-id`` echoed (or a fresh one)."""

    request_id: str
    client_request_id: str

    @classmethod
    def for_request(cls, client_request_id: str | None) -> RequestIds:
        """The ids of a request whose ``client-request-id`` header was ``client_request_id``."""
        fresh = str(uuid.uuid4())
        return cls(fresh, client_request_id or fresh)

    def headers(self) -> dict[str, str]:
        """The response headers."""
        return {
            "request-id": self.request_id,
            "client-request-id": self.client_request_id,
            "x-ms-ags-diagnostic": '{"ServerInfo":{"DataCenter":"North Europe","Slice":"E",'
            '"Ring":"4","ScaleUnit":"000","RoleInstance":"fake"}}',
            "Cache-Control": "no-store, no-cache",
            "Strict-Transport-Security": "max-age=31536000",
        }


def json_reply(
    payload: Any | bytes,
    ids: RequestIds,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Reply:
    """A Graph JSON answer (``payload`` already serialised when it is bytes)."""
    body = payload if isinstance(payload, bytes) else dumps(payload)
    return Reply(status, body, GRAPH_JSON, {**ids.headers(), **(headers or {})})


def error_body(
    code: str, message: str, ids: RequestIds, inner_code: str | None = None
) -> dict[str, Any]:
    """Graph's error object (``inner_code``: the ``innerError.code`` some errors carry)."""
    inner_error = {
        **({"code": inner_code} if inner_code else {}),
        "date": graph_time(utc_now()),
        "request-id": ids.request_id,
        "client-request-id": ids.client_request_id,
    }
    return {"error": {"code": code, "message": message, "innerError": inner_error}}


def graph_error(
    status: int,
    code: str,
    message: str,
    ids: RequestIds,
    headers: dict[str, str] | None = None,
    inner_code: str | None = None,
) -> Reply:
    """A Graph error answer."""
    return json_reply(error_body(code, message, ids, inner_code), ids, status, headers)


def html_error_page(status: int, title: str) -> bytes:
    """An IIS-style HTML error page (what a broken front end sends instead of JSON)."""
    return (
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
        '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\r\n'
        '<html xmlns="http://www.w3.org/1999/xhtml">\r\n<head>\r\n'
        '<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"/>\r\n'
        f"<title>{status} - {title}</title>\r\n</head>\r\n<body>\r\n"
        f'<div id="header"><h1>Server Error</h1></div>\r\n<div id="content">\r\n'
        f"<h2>{status} - {title}</h2>\r\n<h3>There is a problem with the resource you are "
        "looking for, and it cannot be displayed.</h3>\r\n</div>\r\n</body>\r\n</html>\r\n"
    ).encode()
