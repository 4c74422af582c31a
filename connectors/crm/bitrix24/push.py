"""Pushing service requests to Bitrix24: a smart-process item per request, files on Bitrix24
Disk.

Files go to a Disk folder through ``disk.folder.uploadfile``'s two-step upload (an upload URL,
then a streamed multipart POST), so a large video never sits in memory or in a base64 JSON body.
Each uploaded file is named ``<uuid>-<position>-<name>``: after an ambiguous failure the pusher
finds it by that name instead of uploading it again. The item's file field lists the Disk file
IDs and is always written whole (a Bitrix24 multiple field is replaced by what is sent).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, BinaryIO

from syncd.connectors.crm.bitrix24.client import Bitrix24Client
from syncd.core.draft import ServiceRequestDraft
from syncd.core.errors import MalformedResponseError
from syncd.mappings.outbound import OutboundMapping


class Bitrix24Pusher:
    """Implements :class:`syncd.connectors.crm.base.ServiceRequestPusher` for Bitrix24."""

    def __init__(
        self,
        client: Bitrix24Client,
        mapping: OutboundMapping,
        *,
        entity_type_id: int,
        disk_folder_id: int,
    ) -> None:
        self.client = client
        self.mapping = mapping
        self.entity_type_id = entity_type_id
        self.disk_folder_id = disk_folder_id

    def close(self) -> None:
        self.client.close()

    def find_service_request(self, idempotency_key: str) -> str | None:
        key_field = self.mapping.fields["idempotency_key"]
        response = self.client.call(
            "crm.item.list",
            {
                "entityTypeId": self.entity_type_id,
                "select": ["id"],
                "filter": {key_field: idempotency_key},
                "order": {"id": "ASC"},
                "start": -1,
            },
        )
        items = response.result.get("items") if isinstance(response.result, dict) else None
        if not isinstance(items, list):
            raise MalformedResponseError("crm.item.list: result has no items")
        return str(items[0]["id"]) if items and isinstance(items[0], dict) else None

    def create_service_request(self, draft: ServiceRequestDraft) -> str:
        values = {name: getattr(draft, name) for name in draft.__dataclass_fields__}
        fields = {
            key: value for key, value in self.mapping.to_vendor(values).items() if value is not None
        }
        response = self.client.write(
            "crm.item.add", {"entityTypeId": self.entity_type_id, "fields": fields}
        )
        return _item_id(response.result, "crm.item.add")

    def find_file(self, name: str, size: int) -> str | None:
        response = self.client.call(
            "disk.folder.getchildren", {"id": self.disk_folder_id, "filter": {"NAME": name}}
        )
        children = response.result if isinstance(response.result, list) else []
        for child in children:
            if (
                isinstance(child, dict)
                and child.get("NAME") == name
                and str(child.get("SIZE")) == str(size)
            ):
                return str(child["ID"])
        return None

    def upload_file(self, name: str, content: BinaryIO, size: int, content_type: str) -> str:
        ticket = self.client.write(
            "disk.folder.uploadfile",
            {"id": self.disk_folder_id, "data": {"NAME": name}, "generateUniqueName": False},
        )
        result = ticket.result
        if not isinstance(result, dict) or not isinstance(result.get("uploadUrl"), str):
            raise MalformedResponseError("disk.folder.uploadfile: no upload URL")
        stored = self.client.upload(
            result["uploadUrl"], str(result.get("field") or "file"), name, content, content_type
        )
        data = stored.result
        if not isinstance(data, dict) or "ID" not in data:
            raise MalformedResponseError("file upload: the answer names no file")
        if str(data.get("SIZE")) != str(size):
            raise MalformedResponseError(
                f"file upload: the CRM stored {data.get('SIZE')} bytes of {size}"
            )
        return str(data["ID"])

    def attach_files(self, crm_id: str, file_ids: Sequence[str]) -> None:
        self.client.write(
            "crm.item.update",
            {
                "entityTypeId": self.entity_type_id,
                "id": int(crm_id),
                "fields": {self.mapping.fields["file_ids"]: list(file_ids)},
            },
        )


def _item_id(result: Any, method: str) -> str:
    item = result.get("item") if isinstance(result, dict) else None
    if not isinstance(item, dict) or not str(item.get("id", "")).isdigit():
        raise MalformedResponseError(f"{method}: the answer names no item")
    return str(item["id"])
