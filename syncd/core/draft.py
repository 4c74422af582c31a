"""The service request as the push engine hands it to a CRM's pusher."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceRequestDraft:
    """A service request as the push engine hands it to an adapter (canonical fields)."""

    idempotency_key: str
    title: str
    request_type: str
    message: str | None
    contact_phone: str | None
    contact_email: str | None
    contact_address: str | None
    contact_crm_id: str | None
    company_crm_id: str | None
    device_crm_id: str | None
