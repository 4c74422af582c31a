"""The token-less ``/_fake/`` control API, for driving a fake that runs in another process.

Routes:

- ``POST /_fake/mutate`` ``{creates, updates, deletes, seed}`` → the mutation summary
- ``POST /_fake/faults`` ``{kind, times, method, after, retry_after, delay}``; ``DELETE`` clears
- ``GET /_fake/stats`` → ``{request_count, counts: {entity: n}, operating: {method: seconds},
  refusals: {"QUERY_LIMIT_EXCEEDED": n, "OPERATION_TIME_LIMIT": n}}`` (``operating``: seconds
  charged in the budget's window; ``refusals``: calls and batch commands the limits refused)
- ``POST /_fake/limits`` ``{rate_limit: [burst, drain] | null, operating_limit: seconds | null,
  operating_cost: seconds, operating_scale: factor}`` sets or clears the limits at runtime;
  keys left out stay as they are. A new operating budget runs on the portal clock; changing
  the limit, cost or scale of an existing one keeps what it has charged (clear it with
  ``null`` first to start afresh). Cost and scale are ignored while no budget is set.
  ``GET /_fake/limits`` → the current settings, in the same shape.
- ``GET /_fake/records?entity=contacts`` → ``{id: record}`` (companies/contacts carry
  ``_requisites`` and ``_addresses`` arrays)
- ``GET /_fake/service-requests`` → ``{id: item}`` with ``_files``/``_disk_files`` summaries
- ``GET /_fake/disk-files`` → ``{id: {name, size, sha256, folder_id}}``
- ``POST /_fake/create`` ``{entity, fields, skew_seconds}`` → ``{id}``
- ``POST /_fake/update`` ``{entity, id, fields, skew_seconds}``; ``POST /_fake/delete``
  ``{entity, id}``; ``POST /_fake/clock`` ``{offset_seconds}``
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .faults import LeakyBucket
from .operating import OperatingBudget

if TYPE_CHECKING:
    from .server import FakeBitrix24


class ControlApi:
    """Routes ``/_fake/…`` requests to the fake's Python API."""

    def __init__(self, fake: FakeBitrix24) -> None:
        self.fake = fake

    def handle(
        self, verb: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, Any]:
        """Answer one control request: (HTTP status, JSON payload)."""
        route = path[len("/_fake/"):].strip("/")
        try:
            payload = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise ValueError("a JSON object is expected")
            return 200, self._route(verb, route, query, payload)
        except LookupError as exc:
            return 404, {"error": "NOT_FOUND", "error_description": str(exc)}
        except (TypeError, ValueError) as exc:
            return 400, {"error": "BAD_REQUEST", "error_description": str(exc)}

    def _route(
        self, verb: str, route: str, query: dict[str, list[str]], payload: dict[str, Any]
    ) -> Any:
        fake = self.fake
        if (verb, route) == ("GET", "stats"):
            return fake.stats()
        if (verb, route) == ("GET", "limits"):
            return self._limits()
        if (verb, route) == ("POST", "limits"):
            return self._set_limits(payload)
        if (verb, route) == ("GET", "records"):
            entity = (query.get("entity") or [""])[0]
            with fake.store.lock:
                return fake.store.export(entity, with_children=True)
        if (verb, route) == ("GET", "service-requests"):
            return fake.service_requests()
        if (verb, route) == ("GET", "disk-files"):
            return fake.disk_files()
        if (verb, route) == ("POST", "mutate"):
            return fake.mutate_random(
                int(payload.get("creates", 0)), int(payload.get("updates", 0)),
                int(payload.get("deletes", 0)), payload.get("seed"),
            )
        if (verb, route) == ("POST", "faults"):
            fault = fake.faults.add(**payload)
            return {"ok": True, "kind": fault.kind}
        if (verb, route) == ("DELETE", "faults"):
            fake.faults.clear()
            return {"ok": True}
        return self._route_mutation(verb, route, payload)

    def _limits(self) -> dict[str, Any]:
        bucket, budget = self.fake.rate_limiter, self.fake.operating_limit
        return {
            "rate_limit": [bucket.burst, bucket.drain] if bucket is not None else None,
            "operating_limit": budget.limit_seconds if budget is not None else None,
            "operating_cost": budget.cost_per_call if budget is not None else None,
            "operating_scale": budget.scale if budget is not None else None,
        }

    def _set_limits(self, payload: dict[str, Any]) -> dict[str, Any]:
        fake = self.fake
        unknown = set(payload) - set(self._limits())
        if unknown:
            raise ValueError(f"unknown limit settings {sorted(unknown)}")
        if "rate_limit" in payload:
            fake.rate_limiter = _leaky_bucket(payload["rate_limit"])
        if "operating_limit" in payload:
            limit = payload["operating_limit"]
            if limit is None:
                fake.operating_limit = None
            elif fake.operating_limit is None:
                fake.operating_limit = OperatingBudget(float(limit), clock=fake.clock.now)
            else:
                fake.operating_limit.limit_seconds = float(limit)
        budget = fake.operating_limit
        if budget is not None:
            if payload.get("operating_cost") is not None:
                budget.cost_per_call = float(payload["operating_cost"])
            if payload.get("operating_scale") is not None:
                budget.scale = float(payload["operating_scale"])
        return self._limits()

    def _route_mutation(self, verb: str, route: str, payload: dict[str, Any]) -> Any:
        fake = self.fake
        skew = float(payload.get("skew_seconds", 0.0))
        if (verb, route) == ("POST", "create"):
            return {"id": fake.create(payload["entity"], skew, **payload.get("fields", {}))}
        if (verb, route) == ("POST", "update"):
            fields = payload.get("fields", {})
            return fake.update(payload["entity"], payload["id"], skew, **fields)
        if (verb, route) == ("POST", "delete"):
            return {"deleted": fake.delete(payload["entity"], payload["id"])}
        if (verb, route) == ("POST", "clock"):
            fake.clock_offset_seconds = float(payload["offset_seconds"])
            return {"offset_seconds": fake.clock_offset_seconds}
        raise LookupError(f"no control route {verb} /_fake/{route}")


def _leaky_bucket(value: Any) -> LeakyBucket | None:
    """``[burst, drain]`` → a fresh leaky bucket; null → no rate limit."""
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError("rate_limit must be [burst, drain] or null")
    burst, drain = float(value[0]), float(value[1])
    if burst <= 0 or drain < 0:
        raise ValueError("rate_limit needs burst > 0 and drain >= 0")
    return LeakyBucket(burst, drain)
