"""The token-less ``/_fake/`` control API, for driving a fake VIES that runs in another process.

Routes:

- ``POST /_fake/faults`` ``{kind, country?, number?, times?, delay?, status?, body?,
  content_type?, headers?}`` → ``{ok, kind}``; ``GET`` lists the armed faults; ``DELETE``
  clears them
- ``GET /_fake/requests`` → ``[{operation, country_code, vat_number}]``
- ``GET /_fake/stats`` → ``{call_count, waiting, held}``
- ``POST /_fake/reset`` → forget requests, faults and the call count; open the gate
- ``POST /_fake/hold``; ``POST /_fake/release`` ``{count?}``
- ``GET /_fake/companies`` → the register; ``POST /_fake/companies``
  ``{country_code, vat_number, name, address}`` adds or replaces a trader
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .companies import Company

if TYPE_CHECKING:
    from .server import FakeVies

_FAULT_FIELDS = (
    "country",
    "number",
    "times",
    "delay",
    "status",
    "body",
    "content_type",
    "headers",
)


class ControlApi:
    """Routes ``/_fake/…`` requests to the fake's Python API."""

    def __init__(self, fake: FakeVies) -> None:
        self.fake = fake

    def handle(self, verb: str, path: str, body: bytes) -> tuple[int, Any]:
        """Answer one control request: (HTTP status, JSON payload)."""
        route = path[len("/_fake/") :].strip("/")
        try:
            payload = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise ValueError("a JSON object is expected")
            return 200, self._route(verb, route, payload)
        except KeyError as exc:
            return 400, {"error": "bad_request", "message": f"missing field {exc}"}
        except LookupError as exc:
            return 404, {"error": "not_found", "message": str(exc)}
        except (TypeError, ValueError) as exc:
            return 400, {"error": "bad_request", "message": str(exc)}

    def _route(self, verb: str, route: str, payload: dict[str, Any]) -> Any:
        fake = self.fake
        if (verb, route) == ("POST", "faults"):
            options = {key: payload[key] for key in _FAULT_FIELDS if key in payload}
            injected = fake.inject(str(payload.get("kind", "")), **options)
            return {"ok": True, "kind": injected.kind}
        if (verb, route) == ("GET", "faults"):
            return [injected.to_json() for injected in fake.faults.list()]
        if (verb, route) == ("DELETE", "faults"):
            fake.faults.clear()
            return {"ok": True}
        if (verb, route) == ("GET", "requests"):
            return [entry._asdict() for entry in fake.requests]
        if (verb, route) == ("GET", "stats"):
            return {
                "call_count": fake.call_count,
                "waiting": fake.gate.waiting,
                "held": fake.gate.held,
            }
        if (verb, route) == ("POST", "reset"):
            fake.reset()
            return {"ok": True}
        if (verb, route) == ("POST", "hold"):
            fake.hold()
            return {"ok": True}
        if (verb, route) == ("POST", "release"):
            count = payload.get("count")
            fake.release(None if count is None else int(count))
            return {"ok": True}
        if (verb, route) == ("GET", "companies"):
            return [_company_json(company) for company in fake.companies]
        if (verb, route) == ("POST", "companies"):
            company = Company(
                str(payload["country_code"]),
                str(payload["vat_number"]),
                payload.get("name"),
                payload.get("address"),
            )
            fake.add_company(company)
            return _company_json(company)
        raise LookupError(f"no control route {verb} /_fake/{route}")


def _company_json(company: Company) -> dict[str, Any]:
    return {
        "country_code": company.country_code,
        "vat_number": company.vat_number,
        "name": company.name,
        "address": company.address,
    }
