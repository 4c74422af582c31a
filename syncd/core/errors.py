"""The error hierarchy. An error's type alone tells the engine what to do with it.

* :class:`RetriableError` - try again later (network trouble, 429/503, 5xx, vendor rate limits).
  ``retry_after`` carries the upstream's hint in seconds when it gave one.
* :class:`FatalError` - stop the job and alert a human (bad credentials, bad configuration).
* :class:`SkippableError` - one record is bad; quarantine it with the reason and go on.

Messages must never contain personal data or secrets: they end up in logs and in ``status``.
"""

from __future__ import annotations


class SyncdError(Exception):
    """Base class of every error syncd raises on purpose."""


class RetriableError(SyncdError):
    """A transient failure: the same call may succeed later."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimitedError(RetriableError):
    """The upstream asked us to slow down (HTTP 429/503 or a vendor-specific limit)."""


class UpstreamUnavailableError(RetriableError):
    """The upstream could not be reached, timed out, reset the connection or answered 5xx."""


class MalformedResponseError(RetriableError):
    """The upstream answered with a body we cannot parse (truncated JSON, an HTML error page)."""


class DeltaExpiredError(RetriableError):
    """A change-tracking cursor is no longer valid upstream (Graph's 410 ``resyncRequired``):
    the source must be enumerated again from the start."""


class AmbiguousWriteError(RetriableError):
    """A write may or may not have happened upstream (the connection dropped after sending)."""


class FatalError(SyncdError):
    """A failure that retrying cannot fix; the job stops until an operator acts."""


class AuthError(FatalError):
    """The upstream rejected our credentials or their scope."""


class ConfigError(FatalError):
    """The configuration (settings, mapping files, credentials) is invalid."""


class UpstreamNotFoundError(FatalError):
    """A configured upstream resource (a SharePoint site or library) does not exist (404)."""


class UpstreamRejectedError(FatalError):
    """The upstream refused a request as invalid (HTTP 400): a bug or a misconfiguration."""


class SkippableError(SyncdError):
    """One record cannot be processed; quarantine it and continue with the rest."""


class RecordMappingError(SkippableError):
    """A CRM record does not fit the canonical model."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason if field is None else f"{field}: {reason}")
        self.reason = reason
        self.field = field


class ResyncBusyError(SyncdError):
    """Another resync already runs; two never run at once."""
