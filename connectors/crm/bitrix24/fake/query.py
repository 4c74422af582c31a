"""Bitrix24 list semantics over the store: filter operators, order, select and paging.

Filters: a comparison (``>``, ``>=``, ``<``, ``<=``) whose value is empty (``""`` or null) is
dropped, as Bitrix24 does, rather than rejected: ``{">ID": ""}`` lists from the first row. That
is what a chained batch command gets when its ``$result[…]`` reference cannot be resolved
(see ``batch.py``), so a client must not take such a page for the continuation it asked for.

Order: rows that tie on every ordered field come in table-key order (the sort is stable over
key-ordered candidates). For ``crm.address.list``, which has no ID, the table key is the
fake's internal insertion counter, so ``order {ANCHOR_ID: ASC}`` lists an anchor's addresses
in the order they were created; a real portal documents no tie-break.

Listing is built for the adapter's hot paths, all answered from indexes without a table scan:

- the keyset scan ``{">ID": last}`` + ``order {ID: ASC}`` + ``start=-1``: the ID range comes
  from a bisect on the table's sorted keys and rows are visited lazily until a page is full,
  so scanning N rows costs O(N) overall;
- a range on an indexed field (``>=ENTITY_ID``/``<=ENTITY_ID`` on requisites) with a keyset on
  the ID: the range's keys come from the field's ordered index, sorted once per table version
  and cached, then narrowed by the ID range with a bisect;
- a range on an indexed field ordered by that field ascending (``>=ANCHOR_ID`` + ``order
  {ANCHOR_ID: ASC}`` on addresses): rows are read lazily in index order.

Offset paging (``start=N``) needs the matching count, so its match list is cached per table
version.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter
from typing import Any

from .clock import parse_instant
from .schema import Family, Kind, Schema
from .store import Row, Table

PAGE_SIZE = 50
_CACHE_SIZE = 16  # match lists and key lists kept per table
_INFINITY = float("inf")
_SECOND = itemgetter(1)
Predicate = Callable[[Row], bool]

# Longest first, so "!=" is not read as "!" and "=%" not as "=".
OPERATORS: tuple[str, ...] = (
    "!@", "!%", "!=", ">=", "<=", "=%", "%=", ">", "<", "@", "=", "%", "!",
)
_RANGE_OPS = frozenset({">", ">=", "<", "<="})
_NO_CONDITION: Hashable = object()  # a filter entry to drop
_SET_OPS = frozenset({"", "=", "@"})


class QueryError(Exception):
    """A filter or order the API rejects (``field`` names the offending field, if any)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Condition:
    """One compiled filter entry, e.g. ``>DATE_MODIFY`` → (DATE_MODIFY, ">", DATE, instant)."""

    field: str
    op: str
    kind: Kind
    target: Hashable

    def predicate(self) -> Predicate:
        """A function telling whether a row satisfies this condition."""
        getter = _getter(self.field, self.kind)
        test = _test(self.op, self.target, self.kind)
        if self.kind in (Kind.LIST, Kind.MULTI):
            return _list_predicate(getter, test, self.op)
        return lambda row: test(getter(row))


# --- compiling ----------------------------------------------------------------------------------


def split_operator(key: str) -> tuple[str, str]:
    """``">=DATE_MODIFY"`` → (">=", "DATE_MODIFY"); no prefix means equality ("")."""
    for op in OPERATORS:
        if key.startswith(op):
            return op, key[len(op):]
    return "", key


def compile_filter(schema: Schema, raw: Any) -> list[Condition]:
    """Compile a client filter; raises ``QueryError`` on unknown fields or unusable values."""
    if raw is None or raw == "" or raw == []:
        return []
    if not isinstance(raw, dict):
        raise QueryError("Invalid filter: an object is expected")
    conditions: list[Condition] = []
    for key, value in raw.items():
        if str(key).upper() == "LOGIC":
            continue
        op, name = split_operator(str(key).strip())
        field = schema.resolve(name)
        if field is None or schema.kind(field) is Kind.FILE:
            raise QueryError(f"Invalid filter: field '{name}' is not allowed in filter", name)
        kind = schema.kind(field)
        if isinstance(value, list | dict) and op in ("", "=", "!", "!="):
            op = "@" if op in ("", "=") else "!@"  # an array value means IN / NOT IN
        try:
            target = _normalise_target(kind, op, value)
        except (TypeError, ValueError) as exc:
            raise QueryError(f"Invalid filter value for field '{name}'", name) from exc
        if target is _NO_CONDITION:
            continue
        conditions.append(Condition(field, op, kind, target))
    return conditions


def compile_order(schema: Schema, raw: Any) -> list[tuple[str, bool]]:
    """Compile ``{field: "ASC"|"DESC"}`` to (field, descending) pairs.

    Unknown fields are ignored by the old family and rejected by ``crm.item.*``.
    """
    if not raw:
        return []
    if not isinstance(raw, dict):
        raise QueryError("Invalid order: an object is expected")
    order: list[tuple[str, bool]] = []
    for name, direction in raw.items():
        field = schema.resolve(str(name))
        if field is None or schema.kind(field) is Kind.FILE:
            if schema.family is Family.ITEM:
                raise QueryError(f"Invalid order: field '{name}' is not allowed in order", name)
            continue
        order.append((field, str(direction).strip().upper() == "DESC"))
    return order


def _normalise_target(kind: Kind, op: str, value: Any) -> Hashable:
    """The comparable form of a filter value; ``_NO_CONDITION`` for a comparison with an empty
    value (``""``/null), which Bitrix24 ignores."""
    if op in _RANGE_OPS and (value is None or value == ""):
        return _NO_CONDITION
    if op in ("@", "!@"):
        values = value.values() if isinstance(value, dict) else value
        if isinstance(values, str | int | float) or values is None:
            values = [values]
        return frozenset(_normalise_scalar(kind, item) for item in values)
    if op in ("%", "!%", "=%", "%="):
        return _like_pattern(op, str(value))
    target = _normalise_scalar(kind, value)
    if target is None and op in _RANGE_OPS:
        return _NO_CONDITION  # e.g. false, which reads as empty
    return target


def _normalise_scalar(kind: Kind, value: Any) -> Hashable:
    if isinstance(value, list | dict):
        raise TypeError("a scalar value is expected")
    if kind is Kind.YN:
        return "Y" if str(value).strip().upper() in ("1", "Y", "TRUE") else "N"
    if value is None or value == "" or value is False:
        return None
    if kind is Kind.NUM:
        return int(value) if not isinstance(value, str) else int(value.strip())
    if kind is Kind.DATE:
        if isinstance(value, int | float):
            return float(value)
        return parse_instant(str(value))
    if isinstance(value, bool):
        return "Y"
    return str(value)


def _like_pattern(op: str, value: str) -> re.Pattern[str]:
    if op in ("%", "!%"):
        return re.compile(re.escape(value), re.IGNORECASE)
    if op == "%=":
        value = value + "%"
    parts = (re.escape(part) for part in value.split("%"))
    return re.compile("^" + ".*".join(parts) + "$", re.IGNORECASE | re.DOTALL)


# --- evaluating ---------------------------------------------------------------------------------


def _getter(field: str, kind: Kind) -> Callable[[Row], Any]:
    if kind is Kind.NUM:

        def number(row: Row) -> int | None:
            value = row.get(field)
            return None if value is None or value == "" else int(value)

        return number
    if kind is Kind.DATE:

        def instant(row: Row) -> float | None:
            value = row.get(field)
            return parse_instant(value) if value else None

        return instant
    if kind is Kind.MULTI:
        return lambda row: [entry["VALUE"] for entry in row.get(field) or ()]
    if kind is Kind.LIST:
        return lambda row: [str(item) for item in row.get(field) or ()]
    return lambda row: row.get(field)


def _test(op: str, target: Any, kind: Kind) -> Callable[[Any], bool]:
    """A test on one (normalised) value."""
    if op in ("", "="):
        if target is None:
            return lambda value: value is None or value == ""
        return lambda value: bool(value == target)
    if op in ("!", "!="):
        if target is None:
            return lambda value: value is not None and value != ""
        return lambda value: bool(value != target)
    if op == "@":
        return lambda value: value in target
    if op == "!@":
        return lambda value: value not in target
    if op in ("%", "=%", "%="):
        return lambda value: value is not None and target.search(str(value)) is not None
    if op == "!%":
        return lambda value: value is None or target.search(str(value)) is None
    compare: dict[str, Callable[[Any], bool]] = {
        ">": lambda value: value is not None and value > target,
        ">=": lambda value: value is not None and value >= target,
        "<": lambda value: value is not None and value < target,
        "<=": lambda value: value is not None and value <= target,
    }
    return compare[op]


def _list_predicate(
    getter: Callable[[Row], Any], test: Callable[[Any], bool], op: str
) -> Predicate:
    if op in ("!", "!=", "!@", "!%"):
        # negations hold when no element violates them (an empty list passes)
        return lambda row: all(test(item) for item in getter(row) or [None])
    return lambda row: any(test(item) for item in getter(row) or [None])


# --- listing ------------------------------------------------------------------------------------


@dataclass
class ListPage:
    """One page of a list method: rows plus the envelope's ``total``/``next``."""

    rows: list[Row]
    total: int
    next: int | None


@dataclass
class _Candidates:
    keys: Sequence[int]
    lo: int
    hi: int
    rest: list[Condition]


def list_page(
    table: Table,
    schema: Schema,
    conditions: list[Condition],
    order: list[tuple[str, bool]],
    start: int,
) -> ListPage:
    """The rows of one page. ``start < 0`` is the no-count keyset mode (``total`` 0, no
    ``next``); otherwise rows ``start..start+49`` with the matching total."""
    natural = _natural_direction(table, order)
    if start < 0:
        if natural is not None:
            keys = list(islice(_iter_matches(table, conditions, natural), PAGE_SIZE))
        elif (ordered := _index_ordered(table, conditions, order)) is not None:
            keys = list(islice(ordered, PAGE_SIZE))
        else:
            keys = _sorted_matches(table, schema, conditions, order)[:PAGE_SIZE]
        return ListPage([table.rows[key] for key in keys], 0, None)
    candidates = _candidates(table, conditions)
    if not candidates.rest and natural is not None:
        keys, total = _window_page(candidates, start, natural)
    else:
        matches = _cached_matches(table, schema, conditions, order, natural)
        keys, total = list(matches[start:start + PAGE_SIZE]), len(matches)
    following = start + PAGE_SIZE if start + PAGE_SIZE < total else None
    return ListPage([table.rows[key] for key in keys], total, following)


def _window_page(candidates: _Candidates, start: int, descending: bool) -> tuple[list[int], int]:
    """A page straight out of a key window (no per-row conditions left), without copying it."""
    total = candidates.hi - candidates.lo
    count = max(0, min(PAGE_SIZE, total - start))
    if descending:
        first = candidates.hi - 1 - start
        return [candidates.keys[first - i] for i in range(count)], total
    first = candidates.lo + start
    return list(candidates.keys[first:first + count]), total


def filter_rows(rows: list[Row], conditions: list[Condition]) -> list[Row]:
    """Rows (outside any table) satisfying all conditions."""
    predicates = [condition.predicate() for condition in conditions]
    return [row for row in rows if all(predicate(row) for predicate in predicates)]


def _natural_direction(table: Table, order: list[tuple[str, bool]]) -> bool | None:
    """False/True when the order is the key order ascending/descending, else None."""
    if not order:
        return False
    field, descending = order[0]
    return descending if field == table.id_field else None


def _cached_matches(
    table: Table,
    schema: Schema,
    conditions: list[Condition],
    order: list[tuple[str, bool]],
    natural: bool | None,
) -> list[int]:
    cache = _query_cache(table)
    cache_key = (tuple(conditions), tuple(order))
    matches = cache.get(cache_key)
    if matches is None:
        if natural is not None:
            matches = list(_iter_matches(table, conditions, natural))
        else:
            matches = _sorted_matches(table, schema, conditions, order)
        cache[cache_key] = matches
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
    else:
        cache.move_to_end(cache_key)
    return matches


def _query_cache(table: Table) -> OrderedDict[Hashable, list[int]]:
    """The table's LRU of match lists, emptied whenever the table has changed."""
    if table.query_cache_version != table.version:
        table.query_cache.clear()
        table.query_cache_version = table.version
    return table.query_cache


def _iter_matches(table: Table, conditions: list[Condition], descending: bool) -> Iterator[int]:
    candidates = _candidates(table, conditions)
    keys, rows = candidates.keys, table.rows
    positions = range(candidates.hi - 1, candidates.lo - 1, -1) if descending else range(
        candidates.lo, candidates.hi
    )
    predicates = [condition.predicate() for condition in candidates.rest]
    if not predicates:
        for position in positions:
            yield keys[position]
        return
    for position in positions:
        key = keys[position]
        row = rows[key]
        if all(predicate(row) for predicate in predicates):
            yield key


def _sorted_matches(
    table: Table, schema: Schema, conditions: list[Condition], order: list[tuple[str, bool]]
) -> list[int]:
    matches = list(_iter_matches(table, conditions, False))
    for field, descending in reversed(order):
        sort_key = _sort_key(field, schema.kind(field), table.rows)
        matches.sort(key=sort_key, reverse=descending)
    return matches


def _sort_key(field: str, kind: Kind, rows: dict[int, Row]) -> Callable[[int], Any]:
    getter = _getter(field, kind)
    if kind in (Kind.LIST, Kind.MULTI):
        return lambda key: (getter(rows[key]) or [""])[0]
    if kind in (Kind.NUM, Kind.DATE):
        return lambda key: _or_minus_infinity(getter(rows[key]))
    return lambda key: getter(rows[key]) or ""


def _or_minus_infinity(value: float | None) -> float:
    return float("-inf") if value is None else value


def _candidates(table: Table, conditions: list[Condition]) -> _Candidates:
    """The smallest sorted key window implied by the filter, checking the other conditions
    row by row.

    ID ranges always narrow the chosen key list by bisection. Besides the whole table, the
    sources are ID lists, ``=``/``@`` on indexed fields, "changed since" on the modification
    time and ranges on indexed fields; a source is materialised when its size bound beats the
    current best or its sorted keys are already cached.
    """
    id_ranges = [c for c in conditions if c.field == table.id_field and c.op in _RANGE_OPS]
    keys: Sequence[int] = table.keys
    lo, hi = _id_window(keys, id_ranges)
    used: list[Condition] = list(id_ranges)
    for source in _sources(table, conditions):
        if source.size >= hi - lo and not source.cached():
            continue
        source_keys = source.keys()
        source_lo, source_hi = _id_window(source_keys, id_ranges)
        if source_hi - source_lo < hi - lo:
            keys, lo, hi = source_keys, source_lo, source_hi
            used = [*id_ranges, *source.used]
    return _Candidates(keys, lo, hi, _without(conditions, used))


@dataclass
class _Source:
    """A way to narrow the rows: at most ``size`` keys, produced sorted by ``keys()``, all
    satisfying the ``used`` conditions; ``cached()`` tells whether ``keys()`` is free."""

    size: int
    keys: Callable[[], Sequence[int]]
    used: list[Condition]
    cached: Callable[[], bool] = lambda: False


def _sources(table: Table, conditions: list[Condition]) -> list[_Source]:
    sources: list[_Source] = []
    for condition in conditions:
        source = _listed_source(table, condition) or _recent_source(table, condition)
        if source is not None:
            sources.append(source)
    for field, ranges in _index_ranges(table, conditions).items():
        sources.append(_range_source(table, field, ranges))
    return sources


def _without(conditions: list[Condition], used: list[Condition]) -> list[Condition]:
    """``conditions`` minus the very objects in ``used`` (equal duplicates are kept)."""
    taken = {id(condition) for condition in used}
    return [condition for condition in conditions if id(condition) not in taken]


def _id_window(keys: Sequence[int], id_ranges: list[Condition]) -> tuple[int, int]:
    lo, hi = 0, len(keys)
    for condition in id_ranges:
        lo, hi = _narrow(keys, lo, hi, condition)
    return lo, hi


def _narrow(keys: Sequence[int], lo: int, hi: int, condition: Condition) -> tuple[int, int]:
    target = condition.target
    assert isinstance(target, int)
    if condition.op == ">":
        lo = max(lo, bisect_right(keys, target))
    elif condition.op == ">=":
        lo = max(lo, bisect_left(keys, target))
    elif condition.op == "<":
        hi = min(hi, bisect_left(keys, target))
    else:
        hi = min(hi, bisect_right(keys, target))
    return lo, max(lo, hi)


def _cached_keys(table: Table, cache_key: Hashable, build: Callable[[], list[int]]) -> list[int]:
    """Sorted keys from the table's query cache (valid while the table is unchanged)."""
    cache = _query_cache(table)
    found = cache.get(cache_key)
    if found is None:
        found = build()
        cache[cache_key] = found
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
    else:
        cache.move_to_end(cache_key)
    return found


def _is_cached(table: Table, cache_key: Hashable) -> bool:
    return cache_key in _query_cache(table)


def _recent_source(table: Table, condition: Condition) -> _Source | None:
    """Keys from a ``>``/``>=`` condition on the modification time, through the table's index by
    instant (a real portal answers "changed since" from a database index, not a table scan)."""
    if (
        condition.field != table.modified_field
        or condition.op not in (">", ">=")
        or not isinstance(condition.target, float)
    ):
        return None
    probe = (condition.target, float("inf")) if condition.op == ">" else (condition.target, -1.0)
    cut = bisect_right(table.by_modified, probe)
    cache_key = ("recent", cut)
    return _Source(
        len(table.by_modified) - cut,
        lambda: _cached_keys(
            table, cache_key, lambda: sorted(key for _, key in table.by_modified[cut:])
        ),
        [condition],
        lambda: _is_cached(table, cache_key),
    )


def _listed_source(table: Table, condition: Condition) -> _Source | None:
    """Keys from an ``=``/``@`` condition on the ID or an indexed field, else None."""
    if condition.op not in _SET_OPS:
        return None
    values = condition.target if isinstance(condition.target, frozenset) else {condition.target}
    numbers = {value for value in values if isinstance(value, int)}
    if condition.field == table.id_field:
        return _Source(
            len(numbers), lambda: sorted(key for key in numbers if key in table.rows), [condition]
        )
    if condition.field in table.indexes and None not in values:
        index = table.indexes[condition.field]

        def listed() -> list[int]:
            found: set[int] = set()
            for value in numbers:
                found.update(index.get(value, ()))
            return sorted(found)

        return _Source(sum(len(index.get(value, ())) for value in numbers), listed, [condition])
    return None


def _index_ranges(table: Table, conditions: list[Condition]) -> dict[str, list[Condition]]:
    """Range conditions with integer targets on indexed fields, by field."""
    ranges: dict[str, list[Condition]] = {}
    for condition in conditions:
        if (
            condition.field in table.ordered
            and condition.op in _RANGE_OPS
            and isinstance(condition.target, int)
        ):
            ranges.setdefault(condition.field, []).append(condition)
    return ranges


def _index_window(pairs: list[tuple[int, int]], ranges: list[Condition]) -> tuple[int, int]:
    """Positions in an ordered index's ``(value, key)`` pairs matching all ``ranges``."""
    lo, hi = 0, len(pairs)
    for condition in ranges:
        target = condition.target
        if condition.op == ">":
            lo = max(lo, bisect_right(pairs, (target, _INFINITY)))
        elif condition.op == ">=":
            lo = max(lo, bisect_left(pairs, (target,)))
        elif condition.op == "<":
            hi = min(hi, bisect_left(pairs, (target,)))
        else:
            hi = min(hi, bisect_right(pairs, (target, _INFINITY)))
    return lo, max(lo, hi)


def _range_source(table: Table, field: str, ranges: list[Condition]) -> _Source:
    """Keys whose indexed ``field`` lies in the ranges, sorted by key (cached, so the commands
    of a chained batch scanning one range by ID share the work)."""
    pairs = table.ordered[field]
    lo, hi = _index_window(pairs, ranges)
    cache_key = ("range", field, lo, hi)
    return _Source(
        hi - lo,
        lambda: _cached_keys(table, cache_key, lambda: sorted(map(_SECOND, pairs[lo:hi]))),
        ranges,
        lambda: _is_cached(table, cache_key),
    )


def _index_ordered(
    table: Table, conditions: list[Condition], order: list[tuple[str, bool]]
) -> Iterator[int] | None:
    """Matches in ``order`` straight off an ordered index, lazily, when the order is one
    indexed field ascending and the filter has a range on that field that is no larger than
    any other way to narrow the rows; else None. Ties come in table-key order, as the sort
    would give them."""
    if len(order) != 1 or order[0][1]:
        return None
    field = order[0][0]
    ranges = _index_ranges(table, conditions).get(field)
    if not ranges:
        return None
    pairs = table.ordered[field]
    lo, hi = _index_window(pairs, ranges)
    rest = _without(conditions, ranges)
    id_ranges = [c for c in rest if c.field == table.id_field and c.op in _RANGE_OPS]
    window = _id_window(table.keys, id_ranges)
    if window[1] - window[0] < hi - lo or any(
        source.size < hi - lo for source in _sources(table, rest)
    ):
        return None
    return _scan_pairs(table, pairs, lo, hi, rest)


def _scan_pairs(
    table: Table, pairs: list[tuple[int, int]], lo: int, hi: int, rest: list[Condition]
) -> Iterator[int]:
    rows = table.rows
    predicates = [condition.predicate() for condition in rest]
    for position in range(lo, hi):
        key = pairs[position][1]
        if all(predicate(rows[key]) for predicate in predicates):
            yield key


# --- select -------------------------------------------------------------------------------------


def _names(raw: Any) -> list[str]:
    if raw is None or raw == "":
        return []
    if isinstance(raw, dict):
        return [str(value) for value in raw.values()]
    if isinstance(raw, list | tuple):
        return [str(value) for value in raw]
    return [str(raw)]


def select_fields(schema: Schema, raw: Any) -> tuple[str, ...]:
    """The fields to return for a client ``select``.

    Old family: default ``*`` + ``UF_*``; ``*`` = standard fields without UF or multifields;
    multifields and UF fields only when named (or ``UF_*``). ``crm.item``: ``*`` or nothing = all
    fields. The ID is always included.
    """
    names = [name.strip() for name in _names(raw)]
    if schema.family is Family.ITEM:
        if not names or "*" in names:
            return schema.all_fields
    elif not names:
        return schema.standard + schema.uf
    chosen: set[str] = set()
    for name in names:
        if name == "*":
            chosen.update(schema.standard)
        elif name.upper() == "UF_*":
            chosen.update(schema.uf)
        else:
            field = schema.resolve(name)
            if field is not None:
                chosen.add(field)
    if schema.id_field:
        chosen.add(schema.id_field)
    return tuple(field for field in schema.all_fields if field in chosen)


def project(rows: list[Row], fields: tuple[str, ...]) -> list[Row]:
    """Rows restricted to ``fields`` (absent fields, like empty multifields, stay absent)."""
    return [{field: row[field] for field in fields if field in row} for row in rows]
