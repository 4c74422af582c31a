"""State rows as the CLI's JSON shows them: a dataclass's fields, timestamps as stored text."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from syncd.core.clock import iso


def jsonable(row: object) -> dict[str, Any]:
    """The fields of ``row`` (a dataclass instance) with every ``datetime`` in the one ISO
    format (:func:`syncd.core.clock.iso`), the way the cache stores it."""
    return {
        name: iso(value) if isinstance(value, datetime) else value
        for name, value in vars(row).items()
    }
