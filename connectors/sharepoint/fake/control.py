"""The token-less ``/_fake/`` control API, for driving a fake that runs in another process
(benchmarks, crash tests). JSON in, JSON out; dashes and underscores in route names are alike.

- ``GET /_fake/stats`` → ``{requests, token_requests, downloads, delta_requests, faults}``
- ``GET /_fake/libraries`` → ``[{site_id, hostname, site_path, name, drive_id, items}]``
- ``POST /_fake/seed`` ``{hostname?, site_path?, library?, files, producers?, seed?,
  video_share?, sizes?}`` → ``{site_id, drive_id, file_ids}``
- ``POST /_fake/mutate`` ``{drive_id, op, ...}`` or ``{drive_id, ops: [{op, ...}, ...]}`` with
  ``op`` one of ``add_file {name, parent_id?, size?, kind?, content_b64?}``,
  ``add_folder {name, parent_id?}``, ``rename {item_id, name}``, ``move {item_id, parent_id}``,
  ``modify {item_id, size?}``, ``delete {item_id}``, ``change {percent, seed?}`` → results
- ``POST /_fake/fault`` ``{kind, times?, after?, path?, drive_id?, retry_after?, delay?}``;
  ``DELETE /_fake/fault`` clears them; ``GET /_fake/faults`` lists them
- ``POST /_fake/expire_delta_tokens`` ``{drive_id?}``, ``POST /_fake/invalidate_access_tokens``,
  ``POST /_fake/expire_download_urls``, ``POST /_fake/reset_counters``
- ``GET /_fake/snapshot?drive_id=…`` (or POST ``{drive_id}``) → ``{item_id: {...}}``
- ``GET /_fake/requests`` → ``[[method, path], ...]``
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import FakeGraph


class ControlApi:
    """Routes ``/_fake/…`` requests to the fake's Python API."""

    def __init__(self, fake: FakeGraph) -> None:
        self.fake = fake

    def handle(
        self, verb: str, route: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, Any]:
        """Answer one control request: (HTTP status, JSON payload)."""
        try:
            payload = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise ValueError("a JSON object is expected")
            for name, values in query.items():
                payload.setdefault(name, values[0])
            return 200, self._route(verb, route.strip("/").replace("-", "_"), payload)
        except LookupError as exc:
            return 404, {"error": "not_found", "error_description": str(exc)}
        except (TypeError, ValueError) as exc:
            return 400, {"error": "bad_request", "error_description": str(exc)}

    def _route(self, verb: str, route: str, payload: dict[str, Any]) -> Any:
        fake = self.fake
        if verb == "GET" and route == "stats":
            return fake.stats()
        if verb == "GET" and route == "libraries":
            return fake.libraries()
        if verb == "GET" and route == "requests":
            return [list(entry) for entry in fake.requests]
        if verb == "GET" and route == "faults":
            return [fault.to_json() for fault in fake.faults.pending]
        if route == "snapshot" and verb in ("GET", "POST"):
            return fake.snapshot(str(payload["drive_id"]))
        if verb == "DELETE" and route in ("fault", "faults"):
            fake.faults.clear()
            return {"ok": True}
        if verb != "POST":
            raise LookupError(f"no control route {verb} /_fake/{route}")
        if route == "seed":
            return self._seed(payload)
        if route == "mutate":
            drive_id = str(payload["drive_id"])
            ops = payload.get("ops")
            if isinstance(ops, list):
                return {"results": [self._mutate(drive_id, dict(op)) for op in ops]}
            return self._mutate(drive_id, payload)
        if route in ("fault", "faults"):
            fault = fake.add_fault(
                str(payload["kind"]),
                times=payload.get("times", 1),
                after=int(payload.get("after", 0)),
                path=payload.get("path"),
                drive_id=payload.get("drive_id"),
                retry_after=payload.get("retry_after"),
                delay=payload.get("delay"),
            )
            return fault.to_json()
        if route == "expire_delta_tokens":
            fake.expire_delta_tokens(payload.get("drive_id"))
            return {"ok": True}
        if route == "invalidate_access_tokens":
            fake.invalidate_access_tokens()
            return {"ok": True}
        if route == "expire_download_urls":
            fake.expire_download_urls()
            return {"ok": True}
        if route == "reset_counters":
            fake.reset_counters()
            return {"ok": True}
        raise LookupError(f"no control route {verb} /_fake/{route}")

    def _seed(self, payload: dict[str, Any]) -> dict[str, Any]:
        fake = self.fake
        hostname = str(payload.get("hostname", "contoso.sharepoint.com"))
        site_path = str(payload.get("site_path", "/sites/Manufacturers"))
        name = str(payload.get("library", "Documents"))
        site_id = fake.add_site(hostname, site_path)
        drive_id = fake.find_library(hostname, site_path, name) or fake.add_library(
            hostname, site_path, name
        )
        options: dict[str, Any] = {}
        if "producers" in payload:
            options["producers"] = tuple(payload["producers"])
        if "sizes" in payload:
            options["sizes"] = {k: (int(v[0]), int(v[1])) for k, v in payload["sizes"].items()}
        file_ids = fake.seed_library(
            drive_id,
            files=int(payload.get("files", 100)),
            seed=int(payload.get("seed", 0)),
            video_share=float(payload.get("video_share", 0.1)),
            **options,
        )
        return {"site_id": site_id, "drive_id": drive_id, "file_ids": file_ids}

    def _mutate(self, drive_id: str, op: dict[str, Any]) -> Any:
        fake = self.fake
        kind = str(op.get("op", ""))
        if kind == "add_file":
            data = op.get("content_b64")
            return {"id": fake.add_file(
                drive_id, str(op["name"]), op.get("parent_id"),
                size=None if op.get("size") is None else int(op["size"]),
                kind=op.get("kind"),
                content=None if data is None else base64.b64decode(data),
            )}
        if kind == "add_folder":
            return {"id": fake.add_folder(drive_id, str(op["name"]), op.get("parent_id"))}
        if kind == "rename":
            fake.rename(drive_id, str(op["item_id"]), str(op["name"]))
            return {"ok": True}
        if kind == "move":
            fake.move(drive_id, str(op["item_id"]), op.get("parent_id"))
            return {"ok": True}
        if kind == "modify":
            size = op.get("size")
            fake.modify(drive_id, str(op["item_id"]), size=None if size is None else int(size))
            return {"ok": True}
        if kind == "delete":
            return {"deleted": fake.delete(drive_id, str(op["item_id"]))}
        if kind == "change":
            return fake.change_files(
                drive_id, float(op["percent"]), seed=int(op.get("seed", 0))
            )
        raise ValueError(
            f"unknown op {kind!r}; expected add_file, add_folder, rename, move, modify, delete "
            "or change"
        )
