"""What VIES said about one number; kept apart from the client so that importing it does not
import zeep (the daemon loads zeep only when it first calls VIES)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ViesAnswer:
    """A VIES answer about one number (valid or not)."""

    country_code: str
    vat_number: str
    valid: bool
    name: str | None  # None when VIES sends "---" or nothing
    address: str | None  # lines separated by "\n" as VIES sends them; None like ``name``
    request_date: str  # "YYYY-MM-DD" (VIES sends an xsd:date with an offset)
    consultation_number: str | None  # checkVatApprox requestIdentifier; None for checkVat
