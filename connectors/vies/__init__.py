"""The EU VIES VAT-number check over SOAP (``checkVat`` / ``checkVatApprox``).

:class:`ViesClient` makes one call per ``check()`` and turns every outcome into a
:class:`ViesAnswer` or a typed :class:`ViesError`; ``syncd.connectors.vies.fake`` is a loopback fake
of the service for tests and the demo.
"""

from typing import TYPE_CHECKING, Any

from .answer import ViesAnswer
from .errors import (
    ViesBlockedError,
    ViesBusyError,
    ViesEchoMismatchError,
    ViesError,
    ViesInvalidInputError,
    ViesMalformedError,
    ViesUnavailableError,
)

if TYPE_CHECKING:
    from .client import DEFAULT_ENDPOINT, ViesClient


def __getattr__(name: str) -> Any:
    # The client imports zeep (a few hundred milliseconds); only load it when it is used.
    if name in ("DEFAULT_ENDPOINT", "ViesClient"):
        from . import client

        return getattr(client, name)
    raise AttributeError(name)


__all__ = [
    "DEFAULT_ENDPOINT",
    "ViesAnswer",
    "ViesBlockedError",
    "ViesBusyError",
    "ViesClient",
    "ViesEchoMismatchError",
    "ViesError",
    "ViesInvalidInputError",
    "ViesMalformedError",
    "ViesUnavailableError",
]
