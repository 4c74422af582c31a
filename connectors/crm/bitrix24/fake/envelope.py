"""Bitrix24 response envelopes: method results, errors and the ``time`` block.

Without an operating-time budget (``operating.py``) the ``time`` block reports the call's own
duration as ``operating`` and the end of a 10-minute window from its start as
``operating_reset_at``; with one, a ``MethodResult.operating`` override carries the method's
charged seconds in the window and the budget's reset time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .clock import format_ts

OPERATING_WINDOW = 600  # seconds; operating_reset_at is the end of the current window


class ApiError(Exception):
    """A Bitrix24 error answer: HTTP status plus ``{"error", "error_description"}``."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(f"{status} {code}: {description}")
        self.status = status
        self.code = code
        self.description = description

    def body(self) -> dict[str, str]:
        """The JSON error body."""
        return {"error": self.code, "error_description": self.description}


def old_error(description: str) -> ApiError:
    """An error of the old ``crm.contact``/``crm.company`` family: HTTP 400, empty code."""
    return ApiError(400, "", description)


def method_not_found() -> ApiError:
    """The answer for an unknown REST method."""
    return ApiError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")


@dataclass
class MethodResult:
    """What a method returns before it is wrapped in the envelope."""

    result: Any
    total: int | None = None
    next: int | None = None
    # a transport-level fault raised inside a batch, to be applied to the whole HTTP response
    escalate: Any = None
    # {"operating_reset_at", "operating"} from the operating-time budget, overriding the defaults
    operating: dict[str, Any] | None = None


def time_block(
    start: float, finish: float, operating: bool = True, usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``time`` object: epochs, durations and ISO dates on the fake clock.

    ``operating=False`` leaves the ``operating*`` keys out (a batch command's time without a
    budget); ``usage`` (a budget's ``time_fields``) replaces them.
    """
    duration = finish - start
    block: dict[str, Any] = {
        "start": start,
        "finish": finish,
        "duration": duration,
        "processing": duration,
        "date_start": format_ts(start),
        "date_finish": format_ts(finish),
    }
    if operating:
        block["operating_reset_at"] = int(start) + OPERATING_WINDOW
        block["operating"] = duration
    if usage is not None:
        block.update(usage)
    return block


def success_body(outcome: MethodResult, start: float, finish: float) -> dict[str, Any]:
    """``{"result", "next"?, "total"?, "time"}``; ``next``/``total`` only when given."""
    body: dict[str, Any] = {"result": outcome.result}
    if outcome.next is not None:
        body["next"] = outcome.next
    if outcome.total is not None:
        body["total"] = outcome.total
    body["time"] = time_block(start, finish, usage=outcome.operating)
    return body


def php_array(mapping: dict[str, Any]) -> dict[str, Any] | list[Any]:
    """Serialise a map the way PHP's ``json_encode`` does: empty → ``[]``, keys 0..n-1 → list."""
    if not mapping:
        return []
    keys = list(mapping)
    if all(key.isdigit() for key in keys) and [int(key) for key in keys] == list(range(len(keys))):
        return [mapping[key] for key in keys]
    return mapping
