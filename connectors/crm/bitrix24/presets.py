"""Requisite presets: which Bitrix24 requisite field fills each slot the company mapping reads.

In Bitrix24 a requisite's ``PRESET_ID`` fixes its field set, per country (a Polish preset keeps
the registration number in ``RQ_REGON``, a German one in ``RQ_USRLE``). The company mapping's
field rules read ``_requisite.<slot>`` (``RQ_COMPANY_ID``, ``RQ_VAT_ID``, ...); the mapping
file's ``[requisite_presets]`` table names, per preset ID, the field each slot comes from::

    [requisite_presets."1"]
    RQ_COMPANY_ID = "RQ_COMPANY_ID"
    [requisite_presets."7"]
    RQ_COMPANY_ID = "RQ_REGON"

The adapter selects :meth:`RequisitePresets.select_fields` from ``crm.requisite.list`` and
passes each company's requisite through :meth:`RequisitePresets.translate`, which re-keys it by
slot and says (as a data-quality warning) when its preset is not mapped. Without a
``[requisite_presets]`` table every requisite is read under the slots' own names, as before.

Warnings name the preset ID only, never a field's value (values may be personal data).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from syncd.core.errors import ConfigError
from syncd.mappings.loader import EntityMapping

OPTION: Final = "requisite_presets"
"""The mapping file's table of presets (a vendor option of the loader)."""

SOURCE: Final = "_requisite"
"""Where the adapter attaches the requisite on a raw company; the rules read ``_requisite.X``."""

KEPT: Final = ("ID", "ENTITY_ID", "ENTITY_TYPE_ID", "PRESET_ID")
"""Requisite fields a translated requisite keeps under their own names."""

_MAX_PRESET_ID = 20  # characters of a preset ID quoted in a warning


@dataclass(frozen=True)
class RequisitePresets:
    """The requisite presets of a company mapping (see the module's description).

    ``presets`` is ``None`` when the mapping has no ``[requisite_presets]`` table: then
    :meth:`translate` is the identity and never warns.
    """

    slots: frozenset[str]
    presets: Mapping[str, Mapping[str, str]] | None
    label: str = "companies.toml"

    @classmethod
    def from_mapping(cls, mapping: EntityMapping) -> RequisitePresets:
        """The presets of ``mapping`` (the companies mapping), checked against the slots its
        field rules read; a preset ID that is not a number, or a slot no rule reads, is a
        :class:`ConfigError` naming the file and key."""
        rules = (mapping.id_rule, mapping.updated_rule, *mapping.rules)
        slots = frozenset(r.path[1] for r in rules if r.path[0] == SOURCE and len(r.path) > 1)
        label = mapping.label or f"{mapping.entity}.toml"
        table = mapping.options.get(OPTION)
        if table is None:
            return cls(slots, None, label)
        presets: dict[str, dict[str, str]] = {}
        for preset_id, fields in table.items():
            if not _is_number(preset_id.strip()):
                raise ConfigError(
                    f"mapping file {label}: {OPTION}.{preset_id!r} is not a preset ID (a number)"
                )
            if _normalise(preset_id) in presets:
                raise ConfigError(
                    f"mapping file {label}: {OPTION}.{preset_id} is preset "
                    f"{_normalise(preset_id)} again"
                )
            unknown = sorted(set(fields) - slots)
            if unknown:
                raise ConfigError(
                    f"mapping file {label}: {OPTION}.{preset_id}.{unknown[0]} is not a slot the "
                    f"field rules read (they read {SOURCE}.{', '.join(sorted(slots)) or '-'})"
                )
            presets[_normalise(preset_id)] = dict(fields)
        return cls(slots, presets, label)

    @property
    def configured(self) -> bool:
        """Whether the mapping has a ``[requisite_presets]`` table."""
        return self.presets is not None

    def select_fields(self) -> set[str]:
        """What ``crm.requisite.list`` must select for :meth:`translate`: ``PRESET_ID``, the
        slots under their own names (read when a preset is not mapped) and every field a
        configured preset names."""
        fields = {"PRESET_ID", *self.slots}
        for preset in (self.presets or {}).values():
            fields.update(preset.values())
        return fields

    def translate(
        self, raw_requisite: Mapping[str, Any] | None
    ) -> tuple[dict[str, Any], str | None]:
        """The requisite re-keyed by slot (``ID``, ``ENTITY_ID``, ``ENTITY_TYPE_ID`` and
        ``PRESET_ID`` kept) and a data-quality warning, or None.

        * No ``[requisite_presets]`` table: the requisite as it is, no warning.
        * A configured preset: each slot from the field the preset names; a slot the preset
          does not name is left out (stored empty).
        * A preset not configured, or configured without any slot: the slots are read under
          their own names (what syncd did before presets, and right for presets that use the
          generic fields) and the warning names the preset ID, never a value.

        ``None`` (a company without a requisite) gives ``({}, None)``.
        """
        if raw_requisite is None:
            return {}, None
        if self.presets is None:
            return dict(raw_requisite), None
        translated = {key: raw_requisite[key] for key in KEPT if key in raw_requisite}
        preset_id = _normalise(raw_requisite.get("PRESET_ID"))
        preset = self.presets.get(preset_id)
        if preset:
            for slot, source in preset.items():
                translated[slot] = raw_requisite.get(source)
            return translated, None
        for slot in self.slots:
            if slot in raw_requisite:
                translated[slot] = raw_requisite[slot]
        return translated, self._unmapped(preset_id)

    def _unmapped(self, preset_id: str) -> str:
        where = f"({self.label.rpartition('/')[2]} [{OPTION}])"
        if not preset_id:
            return f"requisite without a preset ID is not mapped {where}"
        if not _is_number(preset_id) or len(preset_id) > _MAX_PRESET_ID:
            # Not an ID Bitrix24 makes; do not quote what may be anything.
            return f"requisite preset (not a number) is not mapped {where}"
        return f"requisite preset {preset_id} is not mapped {where}"


def _normalise(preset_id: Any) -> str:
    """A preset ID as the table's keys are: the decimal text, without leading zeros or
    surrounding spaces (Bitrix24 sends IDs as strings, a test may use numbers)."""
    if isinstance(preset_id, bool) or preset_id is None:
        return ""
    text = str(preset_id).strip()
    return str(int(text)) if _is_number(text) else text


def _is_number(text: str) -> bool:
    """Whether ``text`` is a non-negative decimal integer in ASCII digits."""
    return text.isascii() and text.isdigit()
