"""The ``batch`` method: up to 50 ``method?php-query`` commands in one request.

- More than 50 commands: the whole answer is HTTP 400 ``ERROR_BATCH_LENGTH_EXCEEDED`` and no
  command runs. Otherwise always a success envelope with per-command ``result``/
  ``result_error``/``result_total``/``result_next``/``result_time`` maps; ``halt=1`` stops at
  the first failing command.
- ``$result[key][path…]`` in a command's parameters is replaced by that part of an earlier
  command's result. Like Bitrix24, a reference that cannot be resolved (the path does not
  exist, e.g. ``$result[c0][49][ID]`` when ``c0`` returned 20 rows, or ``c0`` failed, has no
  result or has not run yet) becomes an empty string, whether it is the whole value or
  embedded in a longer one. A whole-value reference to a list or map passes it on as is. The
  filter compiler drops a comparison with an empty value (see ``query.py``), so a chained
  ``>ID`` left unresolved lists from the start, which is the hazard a client must guard
  against.
- Faults aimed at a command's method fire per command (``BatchHooks.sub_fault``).
- With an operating-time budget (``operating.py``) every command is checked and charged to its
  own method: a blocked command gets ``result_error[key]`` = ``OPERATION_TIME_LIMIT`` (the
  others still run under ``halt=0``), and each ``result_time[key]`` carries ``operating``/
  ``operating_reset_at`` of that command's method. The batch's own ``time`` block reports the
  largest ``operating`` among the methods its commands called (blocked ones included) with
  that method's reset time, so a client reading only the top-level block still sees the
  method closest to its limit. ``batch`` itself is never charged. Without a budget the
  commands' time blocks have no ``operating*`` keys.
- ``BatchHooks.between(index, method)`` runs after each command (failed ones included, but
  not one whose transport fault cuts the batch short), outside the store lock, so a test can
  change the data between the commands of one batch. ``method`` is the command's lower-cased
  method name as written, ``""`` when it has none.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from ..wire import php_query_decode
from .envelope import ApiError, MethodResult, method_not_found, php_array, time_block
from .faults import API_ERROR_FAULTS, Fault
from .operating import NOT_CHARGED, OperatingBudget, operation_time_limit

MAX_COMMANDS = 50
_REFERENCE = re.compile(r"\$result\[([^\]]+)\]((?:\[[^\]]*\])*)")
_MISSING = object()

Call = Callable[[str, dict[str, Any]], MethodResult]
SubFault = Callable[[str], Fault | None]
Now = Callable[[], float]


def _no_fault(method: str) -> Fault | None:
    return None


def _no_budget() -> OperatingBudget | None:
    return None


def _ignore_command(index: int, method: str) -> None:
    return None


def _ignore_refusal(code: str) -> None:
    return None


@dataclass
class BatchHooks:
    """What a batch needs from the server around its commands."""

    sub_fault: SubFault = _no_fault  # the fault (if any) that fires for a command's method
    now: Now = time.time  # the portal clock, for the commands' time blocks
    budget: Callable[[], OperatingBudget | None] = _no_budget  # the current budget, if any
    between: Callable[[int, str], None] = _ignore_command  # after each attempted command
    refused: Callable[[str], None] = _ignore_refusal  # a limit refused a command (error code)


def run_batch(params: dict[str, Any], call: Call, hooks: BatchHooks | None = None) -> MethodResult:
    """Run the commands in order; errors are collected per command (``halt=1`` stops at the
    first). Always a success envelope, except for too many commands."""
    commands = _commands(params)
    if len(commands) > MAX_COMMANDS:
        raise ApiError(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
    halt = str(_param(params, "halt") or "0").strip().lower() in ("1", "true", "y")
    hooks = hooks or BatchHooks()
    run = _Run(call, hooks, hooks.budget())
    for index, (key, command) in enumerate(commands.items()):
        succeeded = run.command(key, command)
        if run.cut:
            break  # a transport failure cuts the whole response short
        hooks.between(index, run.method)
        if halt and not succeeded:
            break
    return run.outcome()


@dataclass
class _Run:
    """The state of one batch while its commands run."""

    call: Call
    hooks: BatchHooks
    budget: OperatingBudget | None
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, Any] = field(default_factory=dict)
    totals: dict[str, Any] = field(default_factory=dict)
    nexts: dict[str, Any] = field(default_factory=dict)
    times: dict[str, Any] = field(default_factory=dict)
    methods: list[str] = field(default_factory=list)  # distinct methods called, in order
    method: str = ""  # the current command's method name
    escalate: Fault | None = None
    cut: bool = False

    def command(self, key: str, command: str) -> bool:
        """Run one command and record its outcome; False when it failed."""
        start = self.hooks.now()
        self.method = _method_name(command)
        parsed = False
        try:
            sub_params = _parse_command(self.method, command, self.results)
            parsed = True
            if self.method not in self.methods:
                self.methods.append(self.method)
            outcome = self._execute(self.method, sub_params)
        except ApiError as error:
            self.errors[key] = error.body()
            return False
        finally:
            budget = self.budget
            usage = budget.time_fields(self.method) if budget is not None and parsed else None
            self.times[key] = time_block(start, self.hooks.now(), operating=False, usage=usage)
        if outcome is None:
            return False
        self.results[key] = outcome.result
        if outcome.total is not None:
            self.totals[key] = outcome.total
        if outcome.next is not None:
            self.nexts[key] = outcome.next
        return True

    def _execute(self, method: str, params: dict[str, Any]) -> MethodResult | None:
        """Faults, the budget check, the call and its charge; None when a fault cuts the
        batch short."""
        fault = self.hooks.sub_fault(method)
        if fault is not None and fault.kind not in ("slow", "drop_after_processing"):
            if fault.kind in API_ERROR_FAULTS:
                raise fault.api_error()
            self.escalate, self.cut = fault, True
            return None
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay or 0.0)
        elif fault is not None:
            self.escalate = fault
        budget = self.budget
        if budget is not None and budget.blocked(method):
            refusal = operation_time_limit()
            self.hooks.refused(refusal.code)
            raise refusal
        began = time.perf_counter()
        charged = True
        try:
            return self.call(method, params)
        except ApiError as error:
            charged = error.code not in NOT_CHARGED
            raise
        finally:
            if budget is not None and charged:
                budget.charge(method, time.perf_counter() - began)

    def outcome(self) -> MethodResult:
        """The batch's result map and, with a budget, its top-level operating report."""
        body = {
            "result": php_array(self.results),
            "result_error": php_array(self.errors),
            "result_total": php_array(self.totals),
            "result_next": php_array(self.nexts),
            "result_time": php_array(self.times),
        }
        operating = None
        if self.budget is not None and self.methods:
            busiest = max(self.methods, key=self.budget.used)
            operating = self.budget.time_fields(busiest)
        return MethodResult(body, escalate=self.escalate, operating=operating)


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


def _method_name(command: str) -> str:
    """``"crm.contact.list.json?…"`` → ``"crm.contact.list"``."""
    path = command.partition("?")[0]
    return unquote(path).strip().strip("/").lower().removesuffix(".json")


def _parse_command(method: str, command: str, results: dict[str, Any]) -> dict[str, Any]:
    """The parameters of ``"crm.contact.list?filter%5B%3EID%5D=5"`` with references resolved;
    raises for a command that names no method or a nested ``batch``."""
    query = command.partition("?")[2]
    if not method:
        raise method_not_found()
    if method == "batch":
        raise ApiError(
            405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage"
        )
    params = php_query_decode(query) if query else {}
    resolved = _resolve(params, results)
    assert isinstance(resolved, dict)
    return resolved


def _resolve(value: Any, results: dict[str, Any]) -> Any:
    """Replace ``$result[key][field]…`` references with earlier commands' results; one that
    cannot be resolved (or resolves to null) becomes ``""``."""
    if isinstance(value, dict):
        return {key: _resolve(item, results) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, results) for item in value]
    if not isinstance(value, str) or "$result[" not in value:
        return value
    whole = _REFERENCE.fullmatch(value)
    if whole:
        found = _lookup(results, whole.group(1), whole.group(2))
        return "" if found is _MISSING or found is None else found
    return _REFERENCE.sub(lambda m: _scalar(_lookup(results, m.group(1), m.group(2))), value)


def _lookup(results: dict[str, Any], key: str, path: str) -> Any:
    """The value at ``path`` (``[a][0][ID]``) in command ``key``'s result, or ``_MISSING``."""
    node: Any = results.get(key, _MISSING)
    for part in re.findall(r"\[([^\]]*)\]", path):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _scalar(value: Any) -> str:
    if value is _MISSING or value is None or isinstance(value, dict | list):
        return ""
    return str(value)
