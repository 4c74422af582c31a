"""Producer keys: how a producer typed by a person ("  CANDELA\tCorp. ") is compared.

The portal matches devices to libraries in SQL (the ``device_producer_keys`` view), so the rule
must be one SQLite can evaluate: ASCII letters lowered (SQLite's ``lower()`` leaves other
letters alone), tabs, line breaks and no-break spaces made spaces, runs of spaces collapsed by
five halving passes (so up to 32 in a row), then trimmed. :func:`producer_key` is that rule in
Python, pass for pass, so syncd stores library keys and aliases exactly as the view computes a
device's key. Spellings that differ otherwise ("Candela Corp.", "Syneron-Candela") meet through
``[sharepoint.producer_aliases]``.
"""

from __future__ import annotations

from typing import Final

_SPACES: Final = str.maketrans({"\t": " ", "\n": " ", "\r": " ", "\u00a0": " "})
_ASCII_LOWER: Final = str.maketrans(
    {chr(code): chr(code + 32) for code in range(ord("A"), ord("Z") + 1)}
)
_HALVING_PASSES: Final = 5
# SQLite's trim() removes spaces only (by default); the translation above made the others spaces.


def producer_key(value: str) -> str:
    """The normalised key of a producer name, exactly as the cache's view computes it."""
    key = value.translate(_ASCII_LOWER).translate(_SPACES)
    for _ in range(_HALVING_PASSES):
        key = key.replace("  ", " ")
    return key.strip(" ")
