"""A fake Bitrix24's records as the adapter delivers them (requisite and addresses attached), for
comparing a cache with the fake's state in the demo, tests and benchmarks."""

from __future__ import annotations

from typing import Any, Protocol


class FakeRecords(Protocol):
    def records(self, entity: str) -> dict[str, dict[str, Any]]: ...
    def requisites_of(self, entity: str, record_id: str) -> list[dict[str, Any]]: ...
    def addresses_of(self, entity: str, record_id: str) -> list[dict[str, Any]]: ...


def adapter_view(fake: FakeRecords) -> dict[str, list[dict[str, Any]]]:
    """Every record of every entity, with ``_requisite`` (companies: the first by ID) and
    ``_addresses`` attached exactly as :class:`Bitrix24Adapter` attaches them."""
    view: dict[str, list[dict[str, Any]]] = {}
    for entity in ("companies", "contacts", "devices"):
        rows = []
        for record_id, record in fake.records(entity).items():
            if entity != "devices":
                record["_addresses"] = [
                    a
                    for a in fake.addresses_of(entity, record_id)
                    if str(a.get("ENTITY_TYPE_ID")) == "8"
                ]
            if entity == "companies":
                requisites = sorted(
                    fake.requisites_of(entity, record_id), key=lambda r: int(r["ID"])
                )
                record["_requisite"] = requisites[0] if requisites else None
            rows.append(record)
        view[entity] = rows
    return view
