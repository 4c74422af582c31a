"""Loading and applying declarative field mappings (``mappings/<vendor>/<entity>.toml``).

A mapping file names, for each canonical field, the vendor field it comes from (a dotted path
into the raw record) and a named transform from :mod:`syncd.mappings.transforms`. Files are
validated when loaded; a bad file is a :class:`~syncd.core.errors.ConfigError` naming the file
and key.

A file may also carry *vendor options* (:data:`VENDOR_OPTIONS`): top-level tables that the
vendor's adapter reads, not the mapper. The loader checks only their shape and hands them over as
:attr:`EntityMapping.options`; what they mean belongs to the adapter.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

import orjson

from syncd.core.entities import CANONICAL_FIELDS, CanonicalRecord
from syncd.core.errors import ConfigError, RecordMappingError
from syncd.mappings.transforms import REQUIRED_ARGS, TRANSFORMS, Transform

_FIELD_KEYS = frozenset({"source", "transform", "args", "required"})
_CORE_KEYS = frozenset({"vendor", "entity", "id", "updated_at", "fields"})
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class FieldRule:
    """How one canonical field is computed from a raw record."""

    target: str
    path: tuple[str, ...]
    transform: Transform
    args: Mapping[str, Any]
    required: bool

    def apply(self, raw: Mapping[str, Any]) -> Any:
        value: Any = raw.get(self.path[0])
        for part in self.path[1:]:
            value = value.get(part) if isinstance(value, Mapping) else None
        try:
            result = self.transform(value, self.args)
        except RecordMappingError as error:
            raise RecordMappingError(error.reason, field=self.target) from None
        except (TypeError, ValueError, AttributeError, KeyError) as error:
            # A transform must not crash on odd input; if one does, it is a bad record, not a
            # dead daemon. The type name is enough; the value may be personal data.
            raise RecordMappingError(
                f"unexpected {type(error).__name__}", field=self.target
            ) from None
        if self.required and result in (None, [], ""):
            raise RecordMappingError("required value missing", field=self.target)
        return result


def _encode_json(value: Any) -> str:
    """Compact JSON, non-ASCII kept as is (the cache's JSON column format)."""
    return orjson.dumps(value).decode()


_Spec = tuple[str, str, tuple[str, ...], Transform, Mapping[str, Any], bool, bool, bool]


@dataclass(frozen=True)
class EntityMapping:
    """The compiled mapping of one entity (``rules`` in canonical storage order)."""

    vendor: str
    entity: str
    id_rule: FieldRule
    updated_rule: FieldRule
    rules: tuple[FieldRule, ...]
    # Vendor options (see VENDOR_OPTIONS), shape-checked: only the keys the file has.
    options: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""  # the file's name in errors ("mappings/bitrix24/companies.toml")

    def __post_init__(self) -> None:
        fields = CANONICAL_FIELDS[self.entity]
        if tuple(rule.target for rule in self.rules) != tuple(f.name for f in fields):
            raise ValueError("rules must follow the canonical field order")
        # Flattened once: map() runs for every record, so it avoids per-field method calls.
        specs: tuple[_Spec, ...] = tuple(
            (rule.target, rule.path[0], rule.path[1:], rule.transform, rule.args, rule.required,
             spec.kind == "json", spec.kind == "ref")
            for rule, spec in zip(self.rules, fields, strict=True)
        )
        object.__setattr__(self, "_specs", specs)

    @property
    def link_fields(self) -> frozenset[str]:
        """Canonical fields that hold another record's ID."""
        return frozenset(f.name for f in CANONICAL_FIELDS[self.entity] if f.kind == "ref")

    @property
    def source_fields(self) -> frozenset[str]:
        """Top-level vendor fields the mapping reads (what the adapter must select)."""
        rules = (self.id_rule, self.updated_rule, *self.rules)
        return frozenset(rule.path[0] for rule in rules)

    def record_id(self, raw: Mapping[str, Any]) -> str | None:
        """The record's ID if it has a valid one (used to name quarantined records)."""
        try:
            value = self.id_rule.apply(raw)
        except RecordMappingError:
            return None
        return str(value)

    def map(self, raw: Any) -> CanonicalRecord:
        """Map one raw vendor record; raises :class:`RecordMappingError` when it does not fit."""
        if not isinstance(raw, Mapping):
            raise RecordMappingError("record is not an object")
        record_id = self.id_rule.apply(raw)
        updated_at = self.updated_rule.apply(raw)
        # Each value is computed once, in the stored form (JSON fields serialised), so that
        # hashing and storing do not serialise twice.
        values: list[str | None] = []
        hashed: list[str] = []
        specs: tuple[_Spec, ...] = self._specs  # type: ignore[attr-defined]
        target = ""
        try:
            # ``target`` names the field in the errors below, after the loop has left it
            for target, first, rest, transform, args, required, is_json, is_link in specs:  # noqa: B007
                value = raw.get(first)
                for part in rest:
                    value = value.get(part) if isinstance(value, Mapping) else None
                value = transform(value, args)
                if required and value in (None, [], ""):
                    raise RecordMappingError("required value missing")
                if is_json:
                    value = _encode_json(value) if value else "[]"
                values.append(value)
                # Links are left out of the hash: the cache stores them resolved (NULL when the
                # target is absent or deleted) and the merge compares them column by column.
                if not is_link:
                    hashed.append("\x00" if value is None else str(value))
        except RecordMappingError as error:
            raise RecordMappingError(error.reason, field=target) from None
        except (TypeError, ValueError, AttributeError, KeyError) as error:
            # A transform must not crash on odd input; if one does, it is a bad record, not a
            # dead daemon. The type name is enough; the value may be personal data.
            raise RecordMappingError(f"unexpected {type(error).__name__}", field=target) from None
        digest = hashlib.blake2b("\x1f".join(hashed).encode(), digest_size=16).hexdigest()
        return CanonicalRecord(str(record_id), updated_at, tuple(values), digest)


@dataclass(frozen=True)
class MappingSet:
    """All entity mappings of one vendor."""

    vendor: str
    entities: Mapping[str, EntityMapping]
    directory: Path | None = None  # where the files came from (None: the packaged ones)

    def __getitem__(self, entity: str) -> EntityMapping:
        return self.entities[entity]


def load_mapping_set(vendor: str, directory: Path | None = None) -> MappingSet:
    """Load and validate every entity mapping of ``vendor``.

    ``directory`` overrides the packaged ``mappings/<vendor>/`` (for tests and local overrides).
    """
    entities: dict[str, EntityMapping] = {}
    for entity in CANONICAL_FIELDS:
        content, label = read_mapping_file(vendor, entity, directory)
        entities[entity] = parse_mapping(content, label=label, vendor=vendor, entity=entity)
    return MappingSet(vendor, entities, directory)


def read_mapping_file(
    vendor: str, entity: str, directory: Path | None = None
) -> tuple[str, str]:
    """The text of ``<entity>.toml`` for ``vendor`` (from ``directory``, else the packaged
    ``mappings/<vendor>/``) and the label that names it in errors; a missing or unreadable file
    is a :class:`ConfigError`."""
    name = f"{entity}.toml"
    if directory is not None:
        path = directory / name
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except OSError as error:
            raise ConfigError(f"mapping file {path}: {error.strerror}") from None
    resource = resources.files(__package__).joinpath(vendor, name)
    label = f"mappings/{vendor}/{name}"
    if not resource.is_file():
        raise ConfigError(f"mapping file {label} is missing")
    return resource.read_text(encoding="utf-8"), label


def load_mapping_toml(content: str, *, label: str, vendor: str, entity: str) -> dict[str, Any]:
    """A mapping file's TOML, checked to declare ``vendor`` and ``entity``."""
    try:
        data = tomllib.loads(content)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"mapping file {label} is not valid TOML: {error}") from None
    if data.get("vendor") != vendor or data.get("entity") != entity:
        raise ConfigError(
            f"mapping file {label}: must declare vendor={vendor!r}, entity={entity!r}"
        )
    return data


def parse_mapping(content: str, *, label: str, vendor: str, entity: str) -> EntityMapping:
    """Parse and validate one mapping file's text."""
    data = load_mapping_toml(content, label=label, vendor=vendor, entity=entity)
    for key in data:
        if key not in _CORE_KEYS and key not in VENDOR_OPTIONS:
            raise ConfigError(f"mapping file {label}: unknown key {key!r}")
    options = {
        key: VENDOR_OPTIONS[key](data[key], key, label) for key in data if key in VENDOR_OPTIONS
    }
    fields = data.get("fields")
    if not isinstance(fields, dict):
        raise ConfigError(f"mapping file {label}: missing [fields] table")
    allowed = {f.name for f in CANONICAL_FIELDS[entity]}
    unknown = set(fields) - allowed
    if unknown:
        raise ConfigError(
            f"mapping file {label}: fields.{sorted(unknown)[0]} is not a canonical {entity} field"
        )
    missing = allowed - set(fields)
    if missing:
        raise ConfigError(f"mapping file {label}: fields.{sorted(missing)[0]} is not mapped")
    return EntityMapping(
        vendor=vendor,
        entity=entity,
        id_rule=_rule(data.get("id"), "id", label),
        updated_rule=_rule(data.get("updated_at"), "updated_at", label),
        rules=tuple(
            _rule(fields[spec.name], f"fields.{spec.name}", label, target=spec.name)
            for spec in CANONICAL_FIELDS[entity]
        ),
        options=options,
        label=label,
    )


def _rule(spec: Any, key: str, label: str, *, target: str | None = None) -> FieldRule:
    if not isinstance(spec, dict):
        raise ConfigError(f"mapping file {label}: {key} must be a table")
    extra = set(spec) - _FIELD_KEYS
    if extra:
        raise ConfigError(f"mapping file {label}: {key}.{sorted(extra)[0]} is not a known key")
    source = spec.get("source")
    if not isinstance(source, str) or not source or any(not p for p in source.split(".")):
        raise ConfigError(f"mapping file {label}: {key}.source must be a dotted field path")
    transform_name = spec.get("transform")
    if transform_name not in TRANSFORMS:
        raise ConfigError(
            f"mapping file {label}: {key}.transform {transform_name!r} is not one of "
            f"{', '.join(sorted(TRANSFORMS))}"
        )
    args = spec.get("args", {})
    if not isinstance(args, dict):
        raise ConfigError(f"mapping file {label}: {key}.args must be a table")
    missing = REQUIRED_ARGS.get(transform_name, frozenset()) - set(args)
    if missing:
        raise ConfigError(f"mapping file {label}: {key}.args.{sorted(missing)[0]} is required")
    required = spec.get("required", False)
    if not isinstance(required, bool):
        raise ConfigError(f"mapping file {label}: {key}.required must be true or false")
    return FieldRule(
        target=target or key,
        path=tuple(source.split(".")),
        transform=TRANSFORMS[transform_name],
        args=args,
        required=required,
    )


def _key_path(*parts: str) -> str:
    """A dotted TOML key path for errors: bare keys as they are, others quoted."""
    return ".".join(p if _BARE_KEY.match(p) else orjson.dumps(p).decode() for p in parts)


def _named_renamings(value: Any, key: str, label: str) -> dict[str, dict[str, str]]:
    """A table of named tables, each renaming names to field names (both non-empty strings):
    ``{name: {slot: field}}``. An empty inner table is allowed (it renames nothing)."""
    if not isinstance(value, dict):
        raise ConfigError(f"mapping file {label}: {key} must be a table")
    checked: dict[str, dict[str, str]] = {}
    for name, renaming in value.items():
        if not name.strip():
            raise ConfigError(f"mapping file {label}: {key} has an empty key")
        if not isinstance(renaming, dict):
            raise ConfigError(f"mapping file {label}: {_key_path(key, name)} must be a table")
        for slot, target in renaming.items():
            if not slot.strip() or not isinstance(target, str) or not target.strip():
                raise ConfigError(
                    f"mapping file {label}: {_key_path(key, name, slot)} must be a field name "
                    "(a non-empty string)"
                )
        checked[name] = dict(renaming)
    return checked


OptionCheck = Callable[[Any, str, str], Any]
"""Checks one vendor option's value ``(value, key, label)`` and returns it as stored; raises
:class:`ConfigError` naming the file and key."""

VENDOR_OPTIONS: Final[Mapping[str, OptionCheck]] = {
    # Per requisite preset (a CRM's per-country field set): the vendor field each slot that the
    # field rules read comes from. Its adapter reads it (Bitrix24: connectors/crm/bitrix24/presets).
    "requisite_presets": _named_renamings,
}
"""Top-level tables a mapping file may carry besides its rules, with the check of each."""
