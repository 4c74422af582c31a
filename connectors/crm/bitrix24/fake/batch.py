"""The ``batch`` method: up to 50 ``method?php-query`` commands in one request."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from ..wire import php_query_decode
from .envelope import ApiError, MethodResult, method_not_found, php_array, time_block
from .faults import API_ERROR_FAULTS, Fault

MAX_COMMANDS = 50
_REFERENCE = re.compile(r"\$result\[([^\]]+)\]((?:\[[^\]]*\])*)")

Call = Callable[[str, dict[str, Any]], MethodResult]
SubFault = Callable[[str], Fault | None]
Now = Callable[[], float]


def run_batch(params: dict[str, Any], call: Call, sub_fault: SubFault, now: Now) -> MethodResult:
    """Run the commands in order; errors are collected per command (``halt=1`` stops at the
    first). Always a success envelope, except for too many commands."""
    commands = _commands(params)
    if len(commands) > MAX_COMMANDS:
        raise ApiError(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
    halt = str(_param(params, "halt") or "0").strip().lower() in ("1", "true", "y")
    results: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    totals: dict[str, Any] = {}
    nexts: dict[str, Any] = {}
    times: dict[str, Any] = {}
    escalate: Fault | None = None
    for key, command in commands.items():
        start = now()
        try:
            method, sub_params = _parse_command(command, results)
            fault = sub_fault(method)
            if fault is not None and fault.kind not in ("slow", "drop_after_processing"):
                if fault.kind in API_ERROR_FAULTS:
                    raise fault.api_error()
                escalate = fault  # a transport failure cuts the whole response short
                break
            if fault is not None and fault.kind == "slow":
                time.sleep(fault.delay or 0.0)
            elif fault is not None:
                escalate = fault
            outcome = call(method, sub_params)
        except ApiError as error:
            errors[key] = error.body()
            if halt:
                break
            continue
        finally:
            times[key] = time_block(start, now(), operating=False)
        results[key] = outcome.result
        if outcome.total is not None:
            totals[key] = outcome.total
        if outcome.next is not None:
            nexts[key] = outcome.next
    body = {
        "result": php_array(results),
        "result_error": php_array(errors),
        "result_total": php_array(totals),
        "result_next": php_array(nexts),
        "result_time": php_array(times),
    }
    return MethodResult(body, escalate=escalate)


def _param(params: dict[str, Any], name: str) -> Any:
    for key, value in params.items():
        if key.lower() == name:
            return value
    return None


def _commands(params: dict[str, Any]) -> dict[str, str]:
    raw = _param(params, "cmd")
    if isinstance(raw, list):
        return {str(index): str(command) for index, command in enumerate(raw)}
    if isinstance(raw, dict):
        return {str(key): str(command) for key, command in raw.items()}
    raise ApiError(400, "INVALID_ARG_VALUE", "cmd is required")


def _parse_command(command: str, results: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``"crm.contact.list?filter%5B%3EID%5D=5"`` → ("crm.contact.list", {...})."""
    path, _, query = command.partition("?")
    method = unquote(path).strip().strip("/").lower().removesuffix(".json")
    if not method:
        raise method_not_found()
    if method == "batch":
        raise ApiError(
            405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage"
        )
    params = php_query_decode(query) if query else {}
    resolved = _resolve(params, results)
    assert isinstance(resolved, dict)
    return method, resolved


def _resolve(value: Any, results: dict[str, Any]) -> Any:
    """Replace ``$result[key][field]…`` references with earlier commands' results."""
    if isinstance(value, dict):
        return {key: _resolve(item, results) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, results) for item in value]
    if not isinstance(value, str) or "$result[" not in value:
        return value
    whole = _REFERENCE.fullmatch(value)
    if whole:
        return _lookup(results, whole.group(1), whole.group(2))
    return _REFERENCE.sub(lambda m: _scalar(_lookup(results, m.group(1), m.group(2))), value)


def _lookup(results: dict[str, Any], key: str, path: str) -> Any:
    node: Any = results.get(key)
    for part in re.findall(r"\[([^\]]*)\]", path):
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _scalar(value: Any) -> str:
    return "" if value is None or isinstance(value, dict | list) else str(value)
