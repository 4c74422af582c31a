"""Omniva's state markers in location names, e.g. ``Luunja postiautomaat (ainult ettemakstud
pakkide väljastamine)``: a suffix in parentheses, in the country's language, that says the
machine is full, slower or only hands out prepaid parcels for the time being.

:func:`split_marker` takes a known marker off the end of a name and returns the state it means.
Matching ignores letter case (Unicode casefold, Unicode normal form) and how whitespace is laid
out; other text in parentheses (``(Coop)``, ``(raamatukogu)``) is part of the name and stays.
docs/portal-contract.md ("Omniva's name markers") lists :data:`MARKERS` for the portal.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final

from syncd.core.parcel_machines import MachineState

# The last parenthesised part of a name, at its very end (a marker holds no parentheses).
_SUFFIX: Final = re.compile(r"\(([^()]*)\)\s*$")


@dataclass(frozen=True)
class Marker:
    """One marker: ``pattern`` matches the whole folded text inside the parentheses."""

    pattern: re.Pattern[str]
    state: MachineState
    country: str  # where Omniva writes it (syncd recognises it in any country's list)
    example: str  # as Omniva writes it


MARKERS: Final[tuple[Marker, ...]] = (
    Marker(re.compile(r"perpildytas"), "overfilled", "LT", "PERPILDYTAS"),
    Marker(re.compile(r"ilgāka piegāde"), "longer_delivery", "LV", "ILGĀKA PIEGĀDE"),
    Marker(
        # "longer waiting time, up to N days": any number of days, or a range such as 2-3
        re.compile(r"pikem ooteaeg kuni \d+(?: ?[-–] ?\d+)? päeva?"),
        "longer_delivery",
        "EE",
        "Pikem ooteaeg kuni 2 päeva",
    ),
    Marker(
        re.compile(r"ainult ettemakstud pakkide väljastamine"),
        "prepaid_pickup_only",
        "EE",
        "ainult ettemakstud pakkide väljastamine",
    ),
)


def split_marker(name: str) -> tuple[str, MachineState, str]:
    """``(name without the marker, state, the marker as written)`` for a name ending in a known
    marker; ``(name, "normal", "")`` otherwise (a name that is only a marker stays whole)."""
    match = _SUFFIX.search(name)
    if match is None:
        return name, "normal", ""
    clean = name[: match.start()].rstrip()
    if not clean:
        return name, "normal", ""
    note = match.group(1).strip()
    folded = fold(note)
    for marker in MARKERS:
        if marker.pattern.fullmatch(folded):
            return clean, marker.state, note
    return name, "normal", ""


def fold(text: str) -> str:
    """``text`` as markers are compared: casefolded, composed (NFC), whitespace runs as one
    space, no leading or trailing whitespace."""
    return " ".join(unicodedata.normalize("NFC", text.casefold()).split())
