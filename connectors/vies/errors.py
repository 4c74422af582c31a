"""VIES failures, typed by policy (see :mod:`syncd.core.errors`), each with a stable ``code``.

``code`` is the VIES fault string (``MS_UNAVAILABLE``, ``INVALID_INPUT``…) or a transport kind
(``http_error``, ``timeout``, ``connection``, ``invalid_xml``, ``html``, ``redirect``,
``unexpected``, ``echo_mismatch``). Messages are plain words plus the code and at most a country
code: never a VAT number, a name or an address.
"""

from __future__ import annotations

import re

from syncd.core.errors import (
    FatalError,
    MalformedResponseError,
    RateLimitedError,
    SkippableError,
    SyncdError,
    UpstreamUnavailableError,
)

_COUNTRY = re.compile(r"[A-Z]{2}")
# Fault strings that concern one member state rather than VIES as a whole.
MEMBER_STATE_CODES = frozenset(
    {"MS_UNAVAILABLE", "TIMEOUT", "MS_MAX_CONCURRENT_REQ", "MS_MAX_CONCURRENT_REQ_TIME"}
)


class ViesError(SyncdError):
    """Base of every VIES failure: ``code`` is stable, ``member_state`` tells whether the fault
    concerns one member state (``MS_UNAVAILABLE``, ``TIMEOUT``, ``MS_MAX_CONCURRENT_REQ*``)."""

    code: str
    member_state: bool

    def __init__(self, message: str, *, code: str, **kwargs: float | None) -> None:
        super().__init__(message, **kwargs)
        self.code = code
        self.member_state = code in MEMBER_STATE_CODES


class ViesInvalidInputError(ViesError, SkippableError):
    """VIES refused the question itself (``INVALID_INPUT``, ``INVALID_REQUESTER_INFO``)."""


class ViesUnavailableError(ViesError, UpstreamUnavailableError):
    """VIES or a member state is down (``SERVICE_UNAVAILABLE``, ``MS_UNAVAILABLE``, ``TIMEOUT``)
    or the exchange failed (``http_error``, ``timeout``, ``connection``)."""


class ViesBusyError(ViesError, RateLimitedError):
    """VIES refused for load: ``GLOBAL_MAX_CONCURRENT_REQ[_TIME]``,
    ``MS_MAX_CONCURRENT_REQ[_TIME]``."""


class ViesMalformedError(ViesError, MalformedResponseError):
    """The answer was not a usable SOAP message (``invalid_xml``, ``html``, ``redirect``,
    ``unexpected``: an unknown fault string or an answer missing fields), or was about another
    number (``echo_mismatch``, :class:`ViesEchoMismatchError`)."""


class ViesEchoMismatchError(ViesMalformedError):
    """The answer is about another country or number than the one asked (``echo_mismatch``):
    never a verdict on the number asked."""

    def __init__(self, part: str) -> None:
        what = "country code" if part == "country" else "VAT number"
        super().__init__(
            f"VIES: the answer echoes another {what} than the one asked (echo_mismatch)",
            code="echo_mismatch",
        )
        self.part = part


class ViesBlockedError(ViesError, FatalError):
    """VIES blocked us (``IP_BLOCKED``) or checks of the number (``VAT_BLOCKED``)."""


# fault string → (error type, plain words)
FAULTS: dict[str, tuple[type[ViesError], str]] = {
    "INVALID_INPUT": (ViesInvalidInputError, "invalid input"),
    "INVALID_REQUESTER_INFO": (ViesInvalidInputError, "requester information refused"),
    "SERVICE_UNAVAILABLE": (ViesUnavailableError, "service unavailable"),
    "MS_UNAVAILABLE": (ViesUnavailableError, "member state unavailable"),
    "TIMEOUT": (ViesUnavailableError, "member state did not answer in time"),
    "GLOBAL_MAX_CONCURRENT_REQ": (ViesBusyError, "too many concurrent requests"),
    "GLOBAL_MAX_CONCURRENT_REQ_TIME": (ViesBusyError, "too many concurrent requests"),
    "MS_MAX_CONCURRENT_REQ": (ViesBusyError, "too many concurrent requests to the member state"),
    "MS_MAX_CONCURRENT_REQ_TIME": (
        ViesBusyError,
        "too many concurrent requests to the member state",
    ),
    "VAT_BLOCKED": (ViesBlockedError, "checks of this number are blocked"),
    "IP_BLOCKED": (ViesBlockedError, "our address is blocked"),
}


def fault_error(faultstring: str, country_code: str | None = None) -> ViesError | None:
    """The error for a VIES fault string, or None when the string is not a known VIES fault."""
    code = faultstring.strip()
    known = FAULTS.get(code)
    if known is None:
        return None
    error_type, words = known
    where = f", {country_code}" if country_code and _COUNTRY.fullmatch(country_code) else ""
    return error_type(f"VIES: {words} ({code}{where})", code=code)
