"""Keyset listings chained through Bitrix24's ``batch``: up to 2,500 rows in one request.

A keyset listing asks for the rows whose key is above the last one seen, 50 at a time, in key
order, without counting (``start=-1``). Inside one ``batch`` a command may take that "last one
seen" from the command before it: ``filter[>ID]=$result[c3][49][ID]`` (``[items]`` in between for
``crm.item.list``). So one request can carry 50 consecutive pages.

The hazard: Bitrix24 replaces a reference that does not resolve (the command before returned
fewer than 50 rows, or failed) with an empty string, and an empty ``>ID`` is no condition at all,
so that command silently lists from the start. Hence the rule every chain follows:

    a command's rows are trusted only if every command before it in its chain, in this batch,
    returned a full page. At the first short page the chain has reached its end; at the first
    failed command, or a page that does not continue its predecessor, everything after it in
    the batch is discarded and the next batch resumes from the last row actually seen.

A chain with ``repeating_keys`` lists a table whose key is not unique (addresses, keyed by the
owner they are anchored to): its commands use ``>=`` so that each one re-reads the last owner
of the page before it, whose addresses may have been cut off at row 50. Rows are deduplicated by
the caller.

:class:`ChainRunner` packs the commands of several chains into batches; :class:`BatchSizing`
decides how many, from what the CRM's answers said (rows still expected, server seconds per
command, answer bytes per command, the methods' operating-time budgets).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from syncd.connectors.crm.bitrix24.client import BatchResult, Bitrix24Client
from syncd.core.errors import MalformedResponseError, RateLimitedError, SyncdError

log = logging.getLogger(__name__)

PAGE_SIZE = 50
MAX_COMMANDS = 50
RawRow = dict[str, Any]


@dataclass
class Chain:
    """One keyset listing: ``method`` with ``params`` (its fixed ``filter`` inside), walked in
    ``key_field`` order from ``after`` (exclusive) or, with ``repeating_keys``, from ``after``
    inclusive. Trusted rows accumulate in ``rows`` until the caller takes them."""

    method: str
    params: Mapping[str, Any]
    key_field: str
    items: bool = False  # crm.item.list: the rows are under result.items
    repeating_keys: bool = False
    after: int | None = None
    expected_pages: int | None = None  # pages still to come, when known (None: unknown)
    # The key range the chain walks, when bounded (details of a range of owners): lets the
    # pages still to come be estimated from how far the rows so far got.
    span: tuple[int, int] | None = None
    done: bool = False
    seen: int = 0
    rows: list[RawRow] = field(default_factory=list)
    # With repeating keys: the next first command uses ">" once (after a drained key).
    _skip_after: bool = False

    def take(self) -> list[RawRow]:
        """The trusted rows gathered so far (and forget them)."""
        rows, self.rows = self.rows, []
        return rows

    # -- commands -------------------------------------------------------------------------------

    def command(self, previous_key: str | None) -> tuple[str, dict[str, Any]]:
        """The next command: continuing from ``after`` (the first in a batch) or from the 50th
        row of ``previous_key``'s answer (chained)."""
        base = dict(self.params.get("filter") or {})
        inclusive = self.repeating_keys and not (previous_key is None and self._skip_after)
        op = ">=" if inclusive else ">"
        if previous_key is None:
            if self.after is not None:
                base[f"{op}{self.key_field}"] = self.after
        else:
            path = "[items]" if self.items else ""
            base[f"{op}{self.key_field}"] = (
                f"$result[{previous_key}]{path}[{PAGE_SIZE - 1}][{self.key_field}]"
            )
        params = {**self.params, "filter": base, "start": -1}
        return self.method, params

    # -- answers --------------------------------------------------------------------------------

    def absorb(
        self, keys: Sequence[str], batch: BatchResult
    ) -> tuple[bool, SyncdError | None]:
        """Take this chain's commands' answers in order, under the trust rule.

        Returns (whether the chain made progress, the error that stopped it, if any).
        """
        progressed = False
        for index, key in enumerate(keys):
            error = batch.errors.get(key)
            if error is not None:
                return progressed, error
            if key not in batch.result:
                return progressed, MalformedResponseError(
                    f"batch {self.method}: no answer for a command that was sent"
                )
            rows = self._rows(batch.result[key])
            if not self._continues(rows):
                if index == 0:  # a concrete filter value, not a reference: the CRM is wrong
                    raise MalformedResponseError(f"{self.method}: listing is not in key order")
                log.debug("%s: a chained page did not continue its predecessor", self.method)
                return progressed, None
            progressed = True
            self.seen += len(rows)
            self.rows.extend(rows)
            if self.expected_pages is not None:
                self.expected_pages = max(1, self.expected_pages - 1)
            if len(rows) < PAGE_SIZE:
                self.done = True
                return progressed, None
            last = _key(rows[-1], self.key_field, self.method)
            if self.repeating_keys and last == self.after and _key(
                rows[0], self.key_field, self.method
            ) == last:
                return progressed, _StuckKey(last)
            self.after = last
            self._skip_after = False
        return progressed, None

    def pages_wanted(self) -> int | None:
        """Pages this chain still expects: from the span when it walks a bounded key range and
        has got somewhere, else what it was told."""
        if self.span is not None and self.after is not None and self.seen:
            low, high = self.span
            covered = max(1, self.after - low + 1)
            left = max(0, high - self.after)
            return int(self.seen * left / covered) // PAGE_SIZE + 1
        return self.expected_pages

    def drain_key(self, client: Bitrix24Client, key: int) -> None:
        """Read every row of one repeated key with offset pages (a single filter value cannot
        change under the offsets in a way the dedupe does not absorb), then go past it."""
        base = dict(self.params.get("filter") or {})
        base[self.key_field] = key
        start: int | None = 0
        while start is not None:
            response = client.call(self.method, {**self.params, "filter": base, "start": start})
            self.rows.extend(self._rows(response.result))
            following = response.body.get("next")
            start = following if isinstance(following, int) and following > start else None
        self.after = key
        self._skip_after = True

    def _rows(self, value: Any) -> list[RawRow]:
        rows = value.get("items") if self.items and isinstance(value, dict) else value
        if rows in (None, []):
            return []
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise MalformedResponseError(f"{self.method}: result is not a list of records")
        if len(rows) > PAGE_SIZE:
            raise MalformedResponseError(f"{self.method}: page larger than {PAGE_SIZE}")
        return rows

    def _continues(self, rows: list[RawRow]) -> bool:
        """Whether ``rows`` are in key order and start where this chain stands."""
        keys = [_key(row, self.key_field, self.method) for row in rows]
        if any(b < a for a, b in itertools.pairwise(keys)):
            return False
        if not keys or self.after is None:
            return True
        if self.repeating_keys and not self._skip_after:
            return keys[0] >= self.after
        return keys[0] > self.after


class _StuckKey(SyncdError):
    """A full page of one repeated key: more than 50 rows share it (drained separately)."""

    def __init__(self, key: int) -> None:
        super().__init__(f"more than {PAGE_SIZE} rows share one key")
        self.key = key


def _key(row: RawRow, field_name: str, method: str) -> int:
    value = row.get(field_name)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and value.isdigit() and int(value) > 0:
        return int(value)
    raise MalformedResponseError(f"{method}: a record has no usable {field_name}")


class Average:
    """An exponentially weighted mean (recent answers count most)."""

    def __init__(self) -> None:
        self.value: float | None = None

    def add(self, sample: float, weight: float = 0.3) -> None:
        self.value = sample if self.value is None else (1 - weight) * self.value + weight * sample


@dataclass
class BatchSizing:
    """How many commands go into one batch.

    At most ``max_commands`` (Bitrix24 takes 50); fewer when the answer would exceed
    ``max_bytes`` (memory), the CRM's processing would exceed ``max_seconds`` (its per-request
    limit is 60 s), or a method's operating-time budget has less left than the commands would
    cost. Per-command bytes and seconds are learned from the answers.
    """

    max_commands: int = MAX_COMMANDS
    max_bytes: int = 16 * 1024 * 1024
    max_seconds: float = 20.0
    _bytes: dict[str, Average] = field(default_factory=dict)
    _seconds: dict[str, Average] = field(default_factory=dict)

    def capacity(self, method: str, client: Bitrix24Client) -> int:
        """Commands of ``method`` one batch may carry now."""
        limit = self.max_commands
        per_bytes = self._bytes.get(method, Average()).value
        if per_bytes:
            limit = min(limit, int(self.max_bytes // per_bytes))
        per_second = self._seconds.get(method, Average()).value
        if per_second:
            limit = min(limit, int(self.max_seconds // per_second))
            headroom = client.operating_headroom(method)
            limit = min(limit, int(headroom // per_second))
        return max(1, min(limit, MAX_COMMANDS))

    def note_page(self, method: str, nbytes: int) -> None:
        """Learn from a single page fetched outside a batch (a listing's first call), so that
        even the first batch is sized to the answers it will bring."""
        if nbytes > 0:
            self._bytes.setdefault(method, Average()).add(float(nbytes))

    def learn(self, method: str, keys: Sequence[str], batch: BatchResult, sent: int) -> None:
        """Record what ``keys`` (commands of ``method``, out of ``sent`` in the batch) cost."""
        if sent and batch.nbytes:
            self._bytes.setdefault(method, Average()).add(batch.nbytes / sent)
        seconds = [batch.seconds[k] for k in keys if k in batch.seconds]
        if seconds:
            self._seconds.setdefault(method, Average()).add(sum(seconds) / len(seconds))


class ChainRunner:
    """Runs chains to their end, many commands per request."""

    def __init__(self, client: Bitrix24Client, sizing: BatchSizing | None = None) -> None:
        self.client = client
        self.sizing = sizing or BatchSizing()

    def run(self, chains: Sequence[Chain]) -> None:
        """Step until every chain is done."""
        while any(not chain.done for chain in chains):
            self.step(chains)

    def step(self, chains: Sequence[Chain]) -> None:
        """One batch for the chains that are not done (retried per the client's policy when it
        made no progress at all, e.g. every chain's first command was refused)."""
        self.client.retry.call(lambda: self._step_once(chains), what="batch listing")

    def _step_once(self, chains: Sequence[Chain]) -> None:
        active = [chain for chain in chains if not chain.done]
        if not active:
            return
        plan = self._allot(active)
        for chain in active:
            wait = self.client.operating_wait(chain.method)
            if wait > 0:
                raise RateLimitedError(
                    f"{chain.method}: paused for the CRM operating-time budget", retry_after=wait
                )
        commands: dict[str, tuple[str, Mapping[str, Any]]] = {}
        keys_of: list[list[str]] = []
        for number, (chain, count) in enumerate(zip(active, plan, strict=True)):
            keys: list[str] = []
            for index in range(count):
                key = f"c{number}_{index}"
                commands[key] = chain.command(keys[-1] if keys else None)
                keys.append(key)
            keys_of.append(keys)
        batch = self.client.batch(commands)
        progressed = False
        first_error: SyncdError | None = None
        for chain, keys in zip(active, keys_of, strict=True):
            self.sizing.learn(chain.method, keys, batch, len(commands))
            moved, error = chain.absorb(keys, batch)
            if isinstance(error, _StuckKey):
                chain.drain_key(self.client, error.key)
                moved, error = True, None
            progressed = progressed or moved or chain.done
            if error is not None and first_error is None:
                first_error = error
        if first_error is not None:
            if not progressed:
                raise first_error
            log.debug("batch listing: a command failed (%s); resuming after it", first_error)

    def _allot(self, chains: Sequence[Chain]) -> list[int]:
        """Commands per chain: within each method's capacity, shared in proportion to the pages
        each chain still expects (unknown counts as a whole batch)."""
        total = min(self.sizing.capacity(chain.method, self.client) for chain in chains)
        wants = [
            max(1, pages) if (pages := chain.pages_wanted()) is not None else MAX_COMMANDS
            for chain in chains
        ]
        if sum(wants) <= total:
            return wants
        plan = [0] * len(chains)
        budget = total
        for index in range(len(chains)):  # every chain gets one command while there is room
            if budget == 0:
                break
            plan[index] = 1
            budget -= 1
        while budget > 0:
            # the chain furthest from what it wants gets the next command
            index = max(range(len(chains)), key=lambda i: wants[i] - plan[i])
            if wants[index] - plan[index] <= 0:
                break
            plan[index] += 1
            budget -= 1
        return plan
