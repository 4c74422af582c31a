"""The CRM vendors syncd knows, by name: ``crm.vendor`` picks one.

Adding a vendor is adding its folders (``connectors/crm/<vendor>/`` exporting ``VENDOR`` from its
``vendor`` module, ``mappings/<vendor>/``) and one line here; nothing else in syncd changes.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Final

from syncd.connectors.crm.vendor import CrmVendor
from syncd.core.errors import ConfigError

__all__ = ["all_vendors", "get", "names"]

# vendor name -> the module whose VENDOR describes it
_VENDORS: Final[dict[str, str]] = {
    "bitrix24": "syncd.connectors.crm.bitrix24.vendor",
    "memory": "syncd.connectors.crm.memory.vendor",
}


def names() -> tuple[str, ...]:
    """Every registered vendor name."""
    return tuple(_VENDORS)


@cache
def get(name: str) -> CrmVendor:
    """The vendor called ``name``; an unknown name is a ConfigError naming ``crm.vendor``."""
    module_name = _VENDORS.get(name)
    if module_name is None:
        raise ConfigError(
            f"crm.vendor: unknown CRM vendor {name!r} (known: {', '.join(names())})"
        )
    vendor: CrmVendor = importlib.import_module(module_name).VENDOR
    return vendor


def all_vendors() -> tuple[CrmVendor, ...]:
    """Every registered vendor (for the settings schema and the log redactions)."""
    return tuple(get(name) for name in names())
