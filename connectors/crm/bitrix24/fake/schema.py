"""Field catalogues of the fake portal's entities: what exists, how values compare and select.

Old-style methods (``crm.contact.*``, ``crm.company.*``, ``crm.requisite.*``, ``crm.address.*``)
return every scalar as a string and answer errors with an empty code; ``crm.item.*`` returns
integers and camelCase names. The schema tells the query engine which family a table belongs to
and how to compare each field (numerically, as instants, as strings, or element-wise for lists).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

SPA_ID = 8  # the devices smart process's internal id: UF names are UF_CRM_8_* / ufCrm8*
SERVICE_SPA_ID = 9  # the service requests smart process: UF_CRM_9_* / ufCrm9*


class Family(StrEnum):
    """Which generation of Bitrix24 REST a method belongs to."""

    OLD = "old"  # crm.contact.list & co: UPPER_CASE names, string scalars, error code ""
    ITEM = "item"  # crm.item.*: camelCase names, integer IDs, error codes like INVALID_ARG_VALUE


class Kind(StrEnum):
    """How a field's values compare in filters and sort in ``order``."""

    NUM = "num"  # IDs and other integers (strings in the old family)
    DATE = "date"  # ISO 8601 with offset, compared as instants
    STR = "str"
    YN = "yn"  # "Y"/"N" flags; filters also accept 1/0 and true/false
    LIST = "list"  # multiple values (UF lists): equality means "contains"
    MULTI = "multi"  # PHONE/EMAIL multifields: compares each entry's VALUE
    FILE = "file"  # file UF: [{id, url, urlMachine}], neither filterable nor sortable


@dataclass(frozen=True)
class Schema:
    """The fields of one entity as the REST API exposes them."""

    name: str
    family: Family
    id_field: str | None
    standard: tuple[str, ...]  # what select "*" returns
    multi: tuple[str, ...] = ()  # multifields: only when named
    uf: tuple[str, ...] = ()  # custom fields: with "UF_*" or when named
    kinds: dict[str, Kind] = field(default_factory=dict)

    @property
    def all_fields(self) -> tuple[str, ...]:
        """Every field in output order."""
        return self.standard + self.multi + self.uf

    def kind(self, name: str) -> Kind:
        """How ``name`` compares (strings unless declared otherwise)."""
        return self.kinds.get(name, Kind.STR)

    def resolve(self, name: str) -> str | None:
        """The canonical field name for ``name`` as a client may spell it, or None if unknown.

        The old family is case-insensitive (UPPER canonical). The item family accepts the
        camelCase name or its UPPER_SNAKE form (``updatedTime``/``UPDATED_TIME``,
        ``ufCrm8Brand``/``UF_CRM_8_BRAND``).
        """
        return _aliases(self).get(name) or _aliases(self).get(name.upper())


_alias_cache: dict[tuple[str, tuple[str, ...]], dict[str, str]] = {}


def _aliases(schema: Schema) -> dict[str, str]:
    cache_key = (schema.name, schema.all_fields)  # the parent link's name varies per portal
    cached = _alias_cache.get(cache_key)
    if cached is None:
        cached = {}
        for name in schema.all_fields:
            cached[name] = name
            cached[name.upper()] = name
            if schema.family is Family.ITEM:
                cached[camel_to_upper(name)] = name
        _alias_cache[cache_key] = cached
    return cached


def camel_to_upper(name: str) -> str:
    """``updatedTime`` → ``UPDATED_TIME``; ``ufCrm8Brand`` → ``UF_CRM_8_BRAND``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[a-zA-Z])(?=[0-9])", "_", name)
    return spaced.upper()


def _kinds(num: tuple[str, ...], date: tuple[str, ...], **extra: Kind) -> dict[str, Kind]:
    kinds = dict.fromkeys(num, Kind.NUM)
    kinds.update(dict.fromkeys(date, Kind.DATE))
    kinds.update(extra)
    return kinds


CONTACTS = Schema(
    name="contacts",
    family=Family.OLD,
    id_field="ID",
    standard=(
        "ID", "NAME", "SECOND_NAME", "LAST_NAME", "BIRTHDATE", "POST", "SOURCE_ID",
        "ASSIGNED_BY_ID", "COMMENTS", "COMPANY_ID", "DATE_CREATE", "DATE_MODIFY",
    ),
    multi=("EMAIL", "PHONE"),
    uf=("UF_CRM_LANGUAGES", "UF_CRM_NEWSLETTERS"),
    kinds=_kinds(
        ("ID", "ASSIGNED_BY_ID", "COMPANY_ID"),
        ("BIRTHDATE", "DATE_CREATE", "DATE_MODIFY"),
        EMAIL=Kind.MULTI, PHONE=Kind.MULTI,
        UF_CRM_LANGUAGES=Kind.LIST, UF_CRM_NEWSLETTERS=Kind.LIST,
    ),
)

COMPANIES = Schema(
    name="companies",
    family=Family.OLD,
    id_field="ID",
    standard=("ID", "TITLE", "COMPANY_TYPE", "ASSIGNED_BY_ID", "DATE_CREATE", "DATE_MODIFY"),
    multi=("PHONE", "EMAIL"),
    kinds=_kinds(
        ("ID", "ASSIGNED_BY_ID"), ("DATE_CREATE", "DATE_MODIFY"),
        EMAIL=Kind.MULTI, PHONE=Kind.MULTI,
    ),
)

REQUISITES = Schema(
    name="requisites",
    family=Family.OLD,
    id_field="ID",
    standard=(
        "ID", "ENTITY_TYPE_ID", "ENTITY_ID", "PRESET_ID", "NAME", "DATE_CREATE", "DATE_MODIFY",
        "ACTIVE", "RQ_COMPANY_NAME", "RQ_COMPANY_FULL_NAME", "RQ_COMPANY_ID", "RQ_VAT_ID",
        "RQ_RESIDENCE_COUNTRY",
    ),
    kinds=_kinds(
        ("ID", "ENTITY_TYPE_ID", "ENTITY_ID", "PRESET_ID"), ("DATE_CREATE", "DATE_MODIFY"),
        ACTIVE=Kind.YN,
    ),
)

ADDRESSES = Schema(
    name="addresses",
    family=Family.OLD,
    id_field=None,
    standard=(
        "TYPE_ID", "ENTITY_TYPE_ID", "ENTITY_ID", "ADDRESS_1", "ADDRESS_2", "CITY",
        "POSTAL_CODE", "REGION", "PROVINCE", "COUNTRY", "COUNTRY_CODE", "LOC_ADDR_ID",
        "ANCHOR_TYPE_ID", "ANCHOR_ID",
    ),
    kinds=_kinds(
        ("TYPE_ID", "ENTITY_TYPE_ID", "ENTITY_ID", "LOC_ADDR_ID", "ANCHOR_TYPE_ID", "ANCHOR_ID"),
        (),
    ),
)

_UF = f"ufCrm{SPA_ID}"

DEVICES = Schema(
    name="devices",
    family=Family.ITEM,
    id_field="id",
    standard=(
        "id", "title", "xmlId", "createdTime", "updatedTime", "assignedById", "stageId",
        "companyId", "contactId", f"{_UF}Brand", f"{_UF}Model", f"{_UF}SerialNumber",
        f"{_UF}WarrantyStart", f"{_UF}IsRental", f"{_UF}Handpieces", f"{_UF}Location",
        f"{_UF}Producer", "entityTypeId",
    ),
    kinds=_kinds(
        ("id", "assignedById", "companyId", "contactId", "entityTypeId"),
        ("createdTime", "updatedTime", f"{_UF}WarrantyStart"),
        **{f"{_UF}IsRental": Kind.YN, f"{_UF}Handpieces": Kind.LIST},
    ),
)

_UF9 = f"ufCrm{SERVICE_SPA_ID}"
FILES_FIELD = f"{_UF9}Files"  # multiple file UF (UF_CRM_9_FILES)
DISK_FILE_IDS_FIELD = f"{_UF9}DiskFileIds"  # multiple string UF: Bitrix Disk object IDs


def parent_field(entity_type_id: int) -> str:
    """The camelCase link to a parent item of a smart process: ``parentId1040``."""
    return f"parentId{entity_type_id}"


def service_request_schema(devices_entity_type_id: int) -> Schema:
    """The service requests smart process; its parent link names the devices' entityTypeId."""
    parent = parent_field(devices_entity_type_id)
    return Schema(
        name="service_requests",
        family=Family.ITEM,
        id_field="id",
        standard=(
            "id", "title", "xmlId", "createdTime", "updatedTime", "createdBy", "updatedBy",
            "assignedById", "stageId", "companyId", "contactId", parent,
            f"{_UF9}RequestType", f"{_UF9}Message", f"{_UF9}ContactPhone",
            f"{_UF9}ContactEmail", f"{_UF9}ContactAddress", FILES_FIELD, DISK_FILE_IDS_FIELD,
            "entityTypeId",
        ),
        kinds=_kinds(
            ("id", "createdBy", "updatedBy", "assignedById", "companyId", "contactId", parent,
             "entityTypeId"),
            ("createdTime", "updatedTime"),
            **{FILES_FIELD: Kind.FILE, DISK_FILE_IDS_FIELD: Kind.LIST},
        ),
    )


@dataclass(frozen=True)
class ItemType:
    """A smart process served by ``crm.item.*``: its table, fields and identifiers."""

    entity: str  # the store table
    schema: Schema
    entity_type_id: int
    spa_id: int  # the internal id of crm.type.list (UF names are UF_CRM_<spa_id>_*)
    title: str


EVENTS = Schema(
    name="events",
    family=Family.OLD,
    id_field="ID",
    standard=("ID", "TIMESTAMP_X", "EVENT_NAME", "EVENT_DATA", "EVENT_ADDITIONAL", "MESSAGE_ID"),
    kinds=_kinds(("ID", "MESSAGE_ID"), ("TIMESTAMP_X",)),
)

ENTITY_SCHEMAS: dict[str, Schema] = {
    "companies": COMPANIES,
    "contacts": CONTACTS,
    "devices": DEVICES,
}
