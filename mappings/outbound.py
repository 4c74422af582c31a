"""Outbound mappings: canonical records syncd writes to a CRM -> the vendor's field names.

``mappings/<vendor>/service_requests.toml`` names, for each canonical field of a service request,
the vendor field it is written to. Plain renames only; values are prepared by the push engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from syncd.core.errors import ConfigError
from syncd.mappings.loader import load_mapping_toml, read_mapping_file

SERVICE_REQUEST_FIELDS = frozenset(
    {
        "idempotency_key",
        "title",
        "request_type",
        "message",
        "contact_phone",
        "contact_email",
        "contact_address",
        "contact_crm_id",
        "company_crm_id",
        "device_crm_id",
        "file_ids",
    }
)
REQUIRED = frozenset({"idempotency_key", "title", "file_ids"})


@dataclass(frozen=True)
class OutboundMapping:
    """Canonical field -> vendor field, for one outbound entity."""

    vendor: str
    entity: str
    fields: dict[str, str]

    def to_vendor(self, values: dict[str, Any]) -> dict[str, Any]:
        """Rename the mapped fields; unmapped canonical fields are not sent."""
        return {self.fields[name]: value for name, value in values.items() if name in self.fields}


def load_service_request_mapping(vendor: str) -> OutboundMapping:
    """Load and validate ``mappings/<vendor>/service_requests.toml``."""
    content, label = read_mapping_file(vendor, "service_requests")
    data = load_mapping_toml(content, label=label, vendor=vendor, entity="service_requests")
    fields = data.get("fields")
    if not isinstance(fields, dict) or not all(isinstance(v, str) and v for v in fields.values()):
        raise ConfigError(f"mapping file {label}: [fields] must map names to vendor fields")
    unknown = set(fields) - SERVICE_REQUEST_FIELDS
    if unknown:
        raise ConfigError(
            f"mapping file {label}: fields.{sorted(unknown)[0]} is not a service-request field"
        )
    missing = REQUIRED - set(fields)
    if missing:
        raise ConfigError(f"mapping file {label}: fields.{sorted(missing)[0]} must be mapped")
    return OutboundMapping(vendor, "service_requests", dict(fields))
