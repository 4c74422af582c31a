"""Logging for syncd: one handler on stderr (the journal under systemd), text or JSON lines.

* text: ``2026-11-21T12:00:00Z INFO syncd.engines.mirror: message key=value``
* json: one object per line with ``ts``, ``level``, ``logger``, ``msg``, any ``extra`` fields and,
  for exceptions, ``exc``.

The rule is that code never logs personal data or secrets. :class:`RedactingFilter` is the safety
net behind that rule: attached to the handler, it scrubs e-mail addresses, phone-number-like
sequences, values of personal fields named in ``key=value`` text or ``extra`` keys
(:data:`PERSONAL_FIELDS`: VAT numbers, names, subject-request selectors), CRM credentials in
URLs (each vendor declares its patterns, e.g. Bitrix24's webhook token), credential query
parameters and ``Authorization`` / ``Bearer`` values from every formatted message, exception
text and ``extra`` value.

Third-party loggers are quietened: httpx, httpcore, zeep, urllib3 and waitress log at WARNING
unless the level is DEBUG, and even then httpx, httpcore and zeep stay at INFO at most, because
their DEBUG lines carry full URLs, headers and SOAP envelopes (with VAT numbers).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import time
from typing import IO, TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from syncd.connectors.crm.vendor import Redaction

__all__ = [
    "OUR_LOGGERS",
    "PERSONAL_FIELDS",
    "THIRD_PARTY_LOGGERS",
    "JsonFormatter",
    "RedactingFilter",
    "TextFormatter",
    "configure_logging",
    "redact",
]

OUR_LOGGERS: Final = ("syncd",)
THIRD_PARTY_LOGGERS: Final = (
    "httpx", "httpcore", "zeep", "urllib3", "waitress", "azure", "msal", "kiota_http",
    "kiota_abstractions", "msgraph", "msgraph_core",
)
# Loggers whose DEBUG output contains URLs/headers: never below INFO.
_URL_LOGGERS: Final = frozenset({"httpx", "httpcore", "zeep", "kiota_http", "msgraph_core"})
# Loggers that log whole requests (URLs, headers, token endpoints) at INFO: never below WARNING.
_REQUEST_LOGGERS: Final = frozenset({"azure", "msal"})
_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# ------------------------------------------------------------------------------------------
# Redaction
# ------------------------------------------------------------------------------------------

EMAIL_MASK: Final = "<email>"
PHONE_MASK: Final = "<phone>"
SECRET_MASK: Final = "***"

_EMAIL = re.compile(
    # The lookbehind starts a match only where a run of local-part characters starts, keeping
    # the scan linear on long texts without "@" matches.
    r"(?<![\w.!#$%&'*+/=?^`{|}~-])[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+",
)
# Credentials in query strings or key=value text: ?auth=..., &access_token=..., token=...
_QUERY_SECRET = re.compile(
    r"(?<![\w-])((?:auth|token|access_token|refresh_token|id_token|client_secret|password|passwd"
    r"|api_key|apikey|tempauth|sig)=)(?!\*\*\*(?:[&\s\"',;]|$))[^&\s#\"',;]+",
    re.IGNORECASE,
)
# Authorization: Bearer xyz / 'authorization': 'Basic xyz' / Authorization=xyz
_AUTHORIZATION = re.compile(
    r"((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)"
    r"(?:(bearer|basic|digest|token|negotiate|ntlm)\s+)?"
    r"(?!\*\*\*)(?!(?:bearer|basic|digest|token|negotiate|ntlm)(?:\s|$))[^\s,;\"']+",
    re.IGNORECASE,
)
# The local API's VAT lookups carry the number in the path: /v1/vat/<number> -> /v1/vat/<vat>
VAT_MASK: Final = "<vat>"
_VAT_PATH = re.compile(r"(/v1/vat/)(?!<vat>)[^\s\"'?#<>]+")
_BEARER = re.compile(r"\b(bearer)\s+(?!\*\*\*)[\w.~+/=-]+", re.IGNORECASE)
# Phones: E.164 and spaced/dashed international forms (+372 5123 4567, +1 (555) 123-4567) ...
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d(?:[ .\-\u00a0]?(?:\(\d{1,4}\)|\d)){6,16}(?!\w)")
# ... and grouped national forms (5123 4567, 555-123-4567, (555) 123 4567); groups of 3-4 digits
# so that dates (2026-11-21), times and version numbers stay intact.
_PHONE_GROUPED = re.compile(
    r"(?<![\w.:/+-])(?:\(\d{2,4}\)[ \u00a0-]?)?\d{3,4}(?:[ \u00a0-]\d{3,4}){1,3}(?![\w:/-])"
)
_HAS_DIGIT = re.compile(r"\d")
_MIN_PHONE_DIGITS: Final = 7

# Personal fields by name: an ``extra=`` value under one of these keys, or ``key=value`` text
# naming one, is masked whatever it holds (a VAT number, a name or a subject-request selector has
# no pattern of its own to recognise it by).
PERSONAL_MASK: Final = "<personal>"
PERSONAL_FIELDS: Final = frozenset({
    "email", "emails", "phone", "phones", "vat", "vat_id", "vat_number", "first_name",
    "last_name", "full_name", "legal_name", "birth_date", "address", "addresses", "message",
    "contact_email", "contact_phone", "contact_address", "selector", "identifier",
    "original_name", "requester_vat",
})
_PERSONAL_PAIR = re.compile(
    r"(?<![\w-])((?:" + "|".join(sorted(PERSONAL_FIELDS, key=len, reverse=True)) + r")=)"
    r"(?!<personal>)(?:\"[^\"]*\"|'[^']*'|[^\s&,;]+)",
    re.IGNORECASE,
)

_SENSITIVE_KEYS: Final = re.compile(
    r"(?:^|_)(?:token|secret|password|passwd|authorization|auth|api_?key|cookie|credential)s?$",
    re.IGNORECASE,
)


def _mask_authorization(match: re.Match[str]) -> str:
    scheme = match.group(2)
    return f"{match.group(1)}{scheme} {SECRET_MASK}" if scheme else f"{match.group(1)}{SECRET_MASK}"


def _mask_grouped_phone(match: re.Match[str]) -> str:
    found = match.group(0)
    return PHONE_MASK if sum(c.isdigit() for c in found) >= _MIN_PHONE_DIGITS else found


@functools.cache
def _vendor_redactions() -> tuple[Redaction, ...]:
    """Every registered CRM vendor's credential patterns (a vendor's token in a URL), whichever
    vendor is configured: a log line may predate the configuration."""
    from syncd.connectors.crm import registry

    return tuple(r for vendor in registry.all_vendors() for r in vendor.redactions)


def redact(text: str) -> str:
    """Scrub personal data and credentials from ``text``. Never raises on a ``str``."""
    if not text:
        return text
    if "@" in text:
        text = _EMAIL.sub(EMAIL_MASK, text)
    for redaction in _vendor_redactions():
        if redaction.needle in text:
            text = redaction.pattern.sub(redaction.replacement, text)
    if "/v1/vat/" in text:
        text = _VAT_PATH.sub(rf"\1{VAT_MASK}", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(rf"\1{SECRET_MASK}", text)
        text = _PERSONAL_PAIR.sub(rf"\1{PERSONAL_MASK}", text)
    lowered = text.lower()
    if "bearer" in lowered:
        text = _BEARER.sub(rf"\1 {SECRET_MASK}", text)
    if "authorization" in lowered:
        text = _AUTHORIZATION.sub(_mask_authorization, text)
    if _HAS_DIGIT.search(text):
        if "+" in text:
            text = _PHONE_INTL.sub(PHONE_MASK, text)
        text = _PHONE_GROUPED.sub(_mask_grouped_phone, text)
    return text


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS: Final = frozenset(
    logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None).__dict__
) | {"message", "asctime", "taskName", "_syncd_redacted"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS}


def _redact_value(key: str, value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if _SENSITIVE_KEYS.search(key):
        return SECRET_MASK
    if key.lower() in PERSONAL_FIELDS:
        return PERSONAL_MASK
    if isinstance(value, str):
        return redact(value)
    return redact(str(value))


class RedactingFilter(logging.Filter):
    """Scrubs the final message, exception text and extras of every record it sees.

    It formats the message once (``msg % args``), redacts it and stores the result back in
    ``record.msg`` with ``record.args`` cleared, so every later formatter sees only redacted text.
    Never drops a record and never raises.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_syncd_redacted", False):
            return True
        try:
            record.msg = redact(record.getMessage())
        except Exception:  # a broken format string must not lose the record
            record.msg = redact(f"{record.msg!r} % {record.args!r}")
        record.args = None
        try:
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
            if record.stack_info:
                record.stack_info = redact(record.stack_info)
            for key, value in _extras(record).items():
                setattr(record, key, _redact_value(key, value))
        except Exception:
            record.exc_text = "<exception text unavailable>"
        record._syncd_redacted = True
        return True


# ------------------------------------------------------------------------------------------
# Formatters
# ------------------------------------------------------------------------------------------


def _utc_timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))


_BARE_VALUE = re.compile(r"[^\s\"=]+")


def _logfmt_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else str(value)
    if text and _BARE_VALUE.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``<UTC time> <LEVEL> <logger>: <message> key=value ...`` plus any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_utc_timestamp(record.created), record.levelname, f"{record.name}:",
                 record.getMessage()]
        line = " ".join(parts)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={_logfmt_value(v)}" for k, v in extras.items())
        exc_text = self._exception_text(record)
        if exc_text:
            line += "\n" + exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line

    def _exception_text(self, record: logging.LogRecord) -> str:
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        return record.exc_text or ""


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, extras, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": _utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            payload.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            payload["exc"] = record.exc_text
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return json.dumps(payload, ensure_ascii=False, default=str)


# ------------------------------------------------------------------------------------------
# Setup
# ------------------------------------------------------------------------------------------


class _SyncdHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler configure_logging installed, so a second call replaces it."""


def configure_logging(
    level: str,
    fmt: Literal["text", "json"] = "text",
    stream: IO[str] | None = None,
) -> None:
    """Send syncd's logs to ``stream`` (default: stderr) at ``level`` in format ``fmt``.

    Safe to call again (e.g. after the configuration is loaded): the previous handler is replaced.
    """
    name = level.strip().upper()
    if name not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}")
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}")
    numeric = logging.getLevelNamesMapping()[name]

    handler = _SyncdHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _SyncdHandler)]:
        root.removeHandler(old)
        old.close()  # flushes; a StreamHandler never closes its stream
    root.addHandler(handler)
    root.setLevel(numeric)

    for logger_name in OUR_LOGGERS:
        logging.getLogger(logger_name).setLevel(numeric)
    for logger_name in THIRD_PARTY_LOGGERS:
        floor = logging.INFO if logger_name in _URL_LOGGERS else logging.DEBUG
        if logger_name in _REQUEST_LOGGERS:
            floor = logging.WARNING
        third = logging.WARNING if numeric > logging.DEBUG else floor
        logging.getLogger(logger_name).setLevel(max(third, numeric))
    logging.captureWarnings(True)

