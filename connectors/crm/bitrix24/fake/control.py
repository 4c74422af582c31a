"""The token-less ``/_fake/`` control API, for driving a fake that runs in another process.

Routes:

- ``POST /_fake/mutate`` ``{creates, updates, deletes, seed}`` → the mutation summary
- ``POST /_fake/faults`` ``{kind, times, method, after, retry_after, delay}``; ``DELETE`` clears
- ``GET /_fake/stats`` → ``{request_count, counts: {entity: n}}``
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
