"""Identifiers of a data subject, normalised so that one person is found however a value was
typed: e-mail addresses (trimmed, case-folded), phone numbers (E.164 through ``phonenumbers``),
CRM record IDs, and VAT numbers (through the VAT service's own cleaner, handed in by the caller:
the core does not import the engines).

Messages never repeat the value they refuse: it is personal data, and messages end up in logs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from syncd.core.errors import SyncdError

__all__ = [
    "CRM_ID_PATTERN",
    "KIND_NAMES",
    "InvalidIdentifierError",
    "Normaliser",
    "Selector",
    "SelectorKind",
    "check_region",
    "normalise_crm_id",
    "normalise_email",
    "normalise_phone",
]

SelectorKind = Literal["email", "phone", "crm_contact", "vat"]
SELECTOR_KINDS: tuple[SelectorKind, ...] = ("email", "phone", "crm_contact", "vat")
# What each kind is called in messages (never the value itself).
KIND_NAMES: dict[str, str] = {
    "email": "e-mail address",
    "phone": "phone number",
    "crm_contact": "CRM contact ID",
    "vat": "VAT number",
}
# A CRM record ID as the CLI takes it (``--record``, ``--crm-contact``): the CRM's own ID as text.
CRM_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_EMAIL_LENGTH = 254  # RFC 5321's limit on a forward path, less the brackets
MAX_PHONE_LENGTH = 40
# One "@", something on each side, a dot in the domain, no whitespace: what an address needs to
# be looked up. Deliberately loose: stored addresses are compared, not validated.
_EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_PHONE_CHARACTERS = re.compile(r"[0-9+()./\s-]+")
_NON_DIGITS = re.compile(r"\D")


class InvalidIdentifierError(SyncdError):
    """A selector's value is not what its kind says (the message names the kind only)."""


@dataclass(frozen=True)
class Selector:
    """Who a subject request is about: the kind of identifier and its normalised value."""

    kind: SelectorKind
    value: str

    @property
    def what(self) -> str:
        """The kind in words (``e-mail address``), for messages that must not show the value."""
        return KIND_NAMES[self.kind]


def normalise_email(raw: str) -> str:
    """``raw`` trimmed and case-folded (``Mari.Tamm@Salong.EE`` → ``mari.tamm@salong.ee``).

    Addresses differing only in letter case are one address here: mail systems treat the domain
    case-insensitively and, in practice, the local part too. Raises
    :class:`InvalidIdentifierError` for something that is not an address.
    """
    value = raw.strip().casefold()
    if len(value) > MAX_EMAIL_LENGTH or not _EMAIL_SHAPE.fullmatch(value):
        raise InvalidIdentifierError(
            "not an e-mail address (expected name@domain.tld, at most 254 characters)"
        )
    return value


def email_key(stored: str | None) -> str | None:
    """A stored address as it is compared (trimmed, case-folded); None for nothing."""
    if not stored:
        return None
    return stored.strip().casefold() or None


def normalise_phone(raw: str, region: str) -> str:
    """``raw`` in E.164 (``+37251234567``); a number without ``+`` is read as one of ``region``
    (ISO 3166-1 alpha-2). Raises :class:`InvalidIdentifierError` for something that cannot be a
    phone number."""
    import phonenumbers  # loaded only by the subject commands

    text = raw.strip()
    if not text or len(text) > MAX_PHONE_LENGTH or not _PHONE_CHARACTERS.fullmatch(text):
        raise InvalidIdentifierError(
            "not a phone number (digits, spaces and + ( ) - . / only, at most 40 characters)"
        )
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise InvalidIdentifierError(
            f"not a phone number (one without a leading + is read as a number of {region})"
        ) from None
    if not phonenumbers.is_possible_number(number):
        raise InvalidIdentifierError("not a possible phone number (wrong length)")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def phone_key(stored: str | None, region: str) -> str | None:
    """A stored number in E.164, as it is compared; None when it cannot be read as a number
    (stored numbers are as the CRM holds them, in any format)."""
    import phonenumbers

    if not stored:
        return None
    try:
        number = phonenumbers.parse(stored, region)
    except phonenumbers.NumberParseException:
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def normalise_crm_id(raw: str) -> str:
    """A CRM record ID (letters, digits, ``-`` and ``_``, at most 64 characters)."""
    value = raw.strip()
    if not CRM_ID_PATTERN.fullmatch(value):
        raise InvalidIdentifierError(
            "not a CRM record ID (letters, digits, '-' or '_', at most 64 characters)"
        )
    return value


def check_region(region: str) -> str:
    """``region`` upper-cased if ``phonenumbers`` knows it; raises ValueError otherwise."""
    import phonenumbers

    value = region.strip().upper()
    if value not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError("is not a region code phonenumbers knows (ISO 3166-1: EE, LV, LT, ...)")
    return value


@dataclass(frozen=True)
class Normaliser:
    """Normalises selectors and compares stored values with them.

    ``region`` reads phone numbers written without ``+``. ``vat_cleaner`` is the VAT service's
    cleaner: it returns a number as ``<prefix><number>`` (``EE100931558``, Greece ``EL``) and
    raises ValueError for something that is not a VAT number.
    """

    region: str
    vat_cleaner: Callable[[str], str]
    _vat_keys: dict[tuple[str, str | None], str | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    def selector(self, kind: SelectorKind, raw: str) -> Selector:
        """The :class:`Selector` for ``raw``; raises :class:`InvalidIdentifierError`."""
        if kind == "email":
            return Selector(kind, normalise_email(raw))
        if kind == "phone":
            return Selector(kind, normalise_phone(raw, self.region))
        if kind == "crm_contact":
            return Selector(kind, normalise_crm_id(raw))
        if kind == "vat":
            try:
                return Selector(kind, self.vat_cleaner(raw))
            except ValueError as error:
                raise InvalidIdentifierError(f"not a VAT number: {error}") from None
        raise ValueError(f"unknown selector kind {kind!r}")

    def key(self, kind: str, stored: str | None, country: str | None = None) -> str | None:
        """A stored value of ``kind`` as it is compared with a selector's value; None when it
        cannot be read as one. ``country`` (a company's) prefixes a stored VAT number that
        lacks its country prefix."""
        if kind == "email":
            return email_key(stored)
        if kind == "phone":
            return phone_key(stored, self.region)
        if kind == "vat":
            return self._vat_key(stored, country)
        return stored

    def matcher(self, selector: Selector) -> Callable[[str | None, str | None], bool]:
        """A predicate ``(stored value, country) -> bool``: does the stored value name the
        selector's identifier? Cheap for the values that cannot match (most of them)."""
        if selector.kind == "phone":
            # A stored form of the number holds its last digits; only those are parsed.
            tail = _NON_DIGITS.sub("", selector.value)[-7:]

            def phone(stored: str | None, _country: str | None) -> bool:
                if not stored or tail not in _NON_DIGITS.sub("", stored):
                    return False
                return phone_key(stored, self.region) == selector.value

            return phone

        def other(stored: str | None, country: str | None) -> bool:
            return stored is not None and self.key(selector.kind, stored, country) == selector.value

        return other

    def _vat_key(self, stored: str | None, country: str | None) -> str | None:
        if not stored:
            return None
        cache_key = (stored, country)
        if cache_key not in self._vat_keys:
            self._vat_keys[cache_key] = self._clean_vat(stored, country)
        return self._vat_keys[cache_key]

    def _clean_vat(self, stored: str, country: str | None) -> str | None:
        try:
            return self.vat_cleaner(stored)
        except ValueError:
            pass
        if country and len(country) == 2 and not stored[:2].isalpha():
            try:
                return self.vat_cleaner(country + stored)
            except ValueError:
                return None
        return None
