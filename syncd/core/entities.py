"""The mirrored entities and the canonical fields the cache stores for each, whatever the CRM.

Mapping files map vendor fields onto these names and nothing else (data minimisation: a field that
is not here is never stored). JSON fields hold lists serialised as JSON text in the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Entity(StrEnum):
    """The mirrored entities, in the order a cycle fetches them (parents first)."""

    COMPANIES = "companies"
    CONTACTS = "contacts"
    DEVICES = "devices"


ENTITY_ORDER: tuple[Entity, ...] = (Entity.COMPANIES, Entity.CONTACTS, Entity.DEVICES)

FieldKind = Literal["text", "json", "ref"]


@dataclass(frozen=True)
class CanonicalField:
    """One stored field of an entity."""

    name: str
    kind: FieldKind
    # For kind "ref": the entity whose crm_id this field holds.
    references: str | None = None


CANONICAL_FIELDS: dict[str, tuple[CanonicalField, ...]] = {
    "companies": (
        CanonicalField("name", "text"),
        CanonicalField("legal_name", "text"),
        CanonicalField("registration_number", "text"),
        CanonicalField("vat_number", "text"),
        CanonicalField("country", "text"),
        CanonicalField("addresses", "json"),
        CanonicalField("phones", "json"),
        CanonicalField("emails", "json"),
    ),
    "contacts": (
        CanonicalField("first_name", "text"),
        CanonicalField("last_name", "text"),
        CanonicalField("birth_date", "text"),
        CanonicalField("emails", "json"),
        CanonicalField("phones", "json"),
        CanonicalField("languages", "json"),
        CanonicalField("addresses", "json"),
        CanonicalField("newsletters", "json"),
        CanonicalField("company_id", "ref", references="companies"),
    ),
    "devices": (
        CanonicalField("name", "text"),
        CanonicalField("brand", "text"),
        CanonicalField("model", "text"),
        CanonicalField("serial_number", "text"),
        CanonicalField("warranty_start", "text"),
        CanonicalField("ownership", "text"),
        CanonicalField("handpieces", "json"),
        CanonicalField("location", "text"),
        CanonicalField("producer", "text"),
        CanonicalField("company_id", "ref", references="companies"),
        CanonicalField("contact_id", "ref", references="contacts"),
    ),
}


def field_names(entity: str) -> tuple[str, ...]:
    """The canonical field names of ``entity`` in storage order."""
    return tuple(f.name for f in CANONICAL_FIELDS[entity])


@dataclass(frozen=True, slots=True)
class CanonicalRecord:
    """One record in canonical form, ready to store.

    ``values`` holds each canonical field's value once, in storage order (``CANONICAL_FIELDS``),
    in the form the cache stores it: JSON fields as JSON text, links as the target's ``crm_id``.
    """

    crm_id: str
    updated_at: str | None
    values: tuple[str | None, ...]
    content_hash: str  # of the values, links left out (the cache stores them resolved)
