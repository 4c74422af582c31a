"""The one clock. Code passes aware UTC ``datetime`` values; text exists only where a timestamp
is stored or shown, in one of two ISO 8601 forms that sort as text:

* :func:`iso` to the second, ``2026-11-21T10:00:00Z`` (the mirror's tables, job health, the audit
  log, VIES answers, control requests);
* :func:`iso_ms` to the millisecond, ``2026-11-21T10:00:00.123Z`` (the outbox, where requests
  filed within one second must keep their order).

:func:`parse_iso` reads either back (and any ISO 8601 text with an offset, such as the CRM's).
:func:`iso_or_none` and :func:`parse_iso_or_none` do the same for a timestamp that may be missing.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["iso", "iso_ms", "iso_or_none", "parse_iso", "parse_iso_or_none", "utc_now"]


def utc_now() -> datetime:
    """Now, as an aware UTC ``datetime``."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """``moment`` in UTC to the second: ``2026-11-21T10:00:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ms(moment: datetime) -> str:
    """``moment`` in UTC to the millisecond: ``2026-11-21T10:00:00.123Z``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> datetime:
    """A stored timestamp (or any ISO 8601 text with an offset or ``Z``) as aware UTC."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def iso_or_none(moment: datetime | None) -> str | None:
    """:func:`iso` of ``moment``, or None when there is none."""
    return None if moment is None else iso(moment)


def parse_iso_or_none(value: str | None) -> datetime | None:
    """:func:`parse_iso` of ``value``, or None when it is missing (NULL or empty)."""
    return parse_iso(value) if value else None
