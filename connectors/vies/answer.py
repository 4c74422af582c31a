"""What VIES said about one number; kept apart from the client so that importing it does not
import zeep (the daemon loads zeep only when it first calls VIES)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# VIES calls Greece EL; an echo of the ISO code GR names the same member state.
_COUNTRY_ALIASES = {"GR": "EL"}
_SEPARATORS = re.compile(r"[\s.\-]+")

EchoMismatch = Literal["country", "number"]


def compact_number(number: str) -> str:
    """A VAT number as VIES compares it: without whitespace, dots or dashes, upper case."""
    return _SEPARATORS.sub("", number).upper()


def _country(code: str) -> str:
    code = code.strip().upper()
    return _COUNTRY_ALIASES.get(code, code)


@dataclass(frozen=True)
class ViesAnswer:
    """A VIES answer about one number (valid or not)."""

    country_code: str  # as VIES echoed it
    vat_number: str  # as VIES echoed it (VIES echoes the number as sent)
    valid: bool
    name: str | None  # None when VIES sends "---" or nothing
    address: str | None  # lines separated by "\n" as VIES sends them; None like ``name``
    request_date: str  # "YYYY-MM-DD" (VIES sends an xsd:date with an offset)
    consultation_number: str | None  # checkVatApprox requestIdentifier; None for checkVat
    approx: bool = False  # answered checkVatApprox (a requester was given)

    @property
    def consultation_missing(self) -> bool:
        """Whether a checkVatApprox answer came without its consultation number (the proof
        of the check that the requester's VAT number asks for)."""
        return self.approx and self.consultation_number is None

    def mismatch(self, country_code: str, vat_number: str) -> EchoMismatch | None:
        """Which part of VIES's echo names something else than what was asked: ``"country"``,
        ``"number"``, or None when the answer is about ``country_code`` + ``vat_number``.

        Whitespace, dots, dashes and letter case do not count, nor an echo that repeats the
        country prefix before the number; ``GR`` and ``EL`` are the same member state.
        """
        asked_country = _country(country_code)
        if _country(self.country_code) != asked_country:
            return "country"
        echoed, asked = compact_number(self.vat_number), compact_number(vat_number)
        if echoed in (asked, asked_country + asked):
            return None
        return "number"
