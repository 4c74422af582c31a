"""The EU VIES VAT-number check over SOAP (``checkVat`` / ``checkVatApprox``).

:class:`ViesClient` makes one call per ``check()`` and turns every outcome into a
:class:`ViesAnswer` or a typed :class:`ViesError`; ``connectors.vies.fake`` is a loopback fake
of the service for tests and the demo.
"""

from .client import DEFAULT_ENDPOINT, ViesAnswer, ViesClient
from .errors import (
    ViesBlockedError,
    ViesBusyError,
    ViesError,
    ViesInvalidInputError,
    ViesMalformedError,
    ViesUnavailableError,
)

__all__ = [
    "DEFAULT_ENDPOINT",
    "ViesAnswer",
    "ViesBlockedError",
    "ViesBusyError",
    "ViesClient",
    "ViesError",
    "ViesInvalidInputError",
    "ViesMalformedError",
    "ViesUnavailableError",
]
