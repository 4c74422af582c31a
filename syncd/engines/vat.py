"""EU VAT-number validation: python-stdnum first, then the VIES cache, then VIES itself.

A lookup goes through these steps, stopping at the first that answers:

1. **Local check** (python-stdnum): something that is not a VAT number at all raises
   :class:`MalformedVatNumberError`; a member-state number with the wrong length, format or
   checksum is answered ``valid=False, source="local"`` and never reaches VIES or the cache.
   Greece is ``EL`` (``GR`` is accepted as an alias), Northern Ireland ``XI``; ``GB`` is refused
   (not in VIES since Brexit).
2. **Fresh cache** (``vies_answers`` younger than ``cache_hours``): ``source="cache"``.
3. **VIES**: concurrent lookups of one number share one call (single flight); at most
   ``max_calls_per_member_state`` calls per member state and ``max_concurrent_calls`` overall
   are in flight; retriable faults are retried per :class:`syncd.connectors.http.RetryPolicy`.
   A definite answer is stored and returned with ``source="live"``.
4. **On failure**: a stored entry younger than ``keep_hours`` (``retention.vies_answers_hours``;
   by default equal to ``cache_hours``, so an expired answer is never shown) is returned
   flagged ``source="stale"`` with its age; otherwise :class:`VatUnavailableError` with a stable
   code and ``retry_after``. VIES refusing the input raises :class:`VatRejectedError`. When VIES
   blocks us (``IP_BLOCKED``/``VAT_BLOCKED``) the global circuit opens in ``vies_circuits``
   (shared with the CLI and ``syncd status``) and no VIES call goes out until it closes.

Faults are never stored as answers, nor is an answer whose echo names another country code or
number than the one asked (``echo_mismatch``: a bad response, ``vies_bad_response``). A
checkVatApprox answer that a number is valid but without its consultation number is kept,
logged as a warning and counted (``no_consultation``), so ``syncd status`` shows the missing
proof. A cache hit never writes
to SQLite: outcome counters live in memory until :meth:`VatService.flush_counts`. Logs carry
country codes and outcomes only, never a number, a name or an address.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from stdnum.eu import vat as eu_vat
from stdnum.exceptions import InvalidChecksum, InvalidLength, ValidationError

from syncd.connectors.http import RetryPolicy
from syncd.connectors.vies.answer import ViesAnswer
from syncd.connectors.vies.errors import (
    ViesBlockedError,
    ViesBusyError,
    ViesEchoMismatchError,
    ViesInvalidInputError,
    ViesMalformedError,
    ViesUnavailableError,
)
from syncd.core.clock import iso, utc_now
from syncd.core.errors import RetriableError, SkippableError, SyncdError
from syncd.state import vies_cache
from syncd.state.db import ThreadConnections

log = logging.getLogger(__name__)

MAX_INPUT_LENGTH = 32
GLOBAL_SCOPE = "global"
# How long the in-memory copy of vies_circuits is trusted before it is read again (the CLI and
# the daemon share circuits through the table; a few seconds' delay is harmless).
CIRCUIT_REFRESH_SECONDS = 2.0
# Retry-After hints (seconds) by error code; a longer hint from VIES wins.
RETRY_AFTER: dict[str, float] = {
    "vies_unavailable": 60.0,
    "member_state_unavailable": 60.0,
    "vies_busy": 120.0,
    "vies_bad_response": 60.0,
}
# The codes of VatUnavailableError, with their default messages.
UNAVAILABLE_MESSAGES: dict[str, str] = {
    "vies_unavailable": "VIES is unavailable; try again later",
    "member_state_unavailable": "the member state's VAT database does not answer; try again later",
    "vies_busy": "VIES is busy; try again later",
    "vies_blocked": "VIES has blocked this server; try again later",
    "vies_bad_response": "VIES answered with an unusable response; try again later",
}

# VIES prefixes: stdnum lists Greece as "gr", VIES calls it EL.
VIES_PREFIXES = frozenset("EL" if cc == "gr" else cc.upper() for cc in eu_vat.MEMBER_STATES)
PREFIX_ALIASES = {"GR": "EL"}
_ALLOWED = re.compile(r"[A-Za-z0-9 .\-]+")
_SEPARATORS = str.maketrans("", "", " .-")

Source = Literal["cache", "live", "stale", "local"]


# -- errors -----------------------------------------------------------------------------------


class MalformedVatNumberError(SyncdError):
    """Not a VAT number at all: empty, too long, characters other than letters, digits,
    spaces, dots and dashes, or no known member-state prefix (``GB`` included)."""

    code = "malformed_vat_number"


class VatRejectedError(SkippableError):
    """VIES refused the number as invalid input (``INVALID_INPUT``)."""

    code = "vies_rejected_input"


class VatUnavailableError(RetriableError):
    """No answer now and no usable stale one; ``code`` says why, ``retry_after`` when to retry.

    Codes: ``vies_unavailable``, ``member_state_unavailable``, ``vies_busy`` (VIES's concurrency
    limits, or too many lookups waiting here), ``vies_blocked`` (the circuit is open),
    ``vies_bad_response`` (VIES answered something unusable).
    """

    def __init__(self, code: str, message: str | None = None, *, retry_after: float) -> None:
        if code not in UNAVAILABLE_MESSAGES:
            raise ValueError(f"unknown unavailable code {code!r}")
        super().__init__(message or UNAVAILABLE_MESSAGES[code], retry_after=retry_after)
        self.code = code


# -- options and results ----------------------------------------------------------------------


@dataclass(frozen=True)
class VatOptions:
    """Tuning of :class:`VatService` (from ``[vies]`` in the configuration)."""

    cache_hours: float = 24.0
    # How long an answer is kept at all (retention.vies_answers_hours): past cache_hours it only
    # stands in, flagged stale, while VIES is down. Equal to cache_hours: never stale.
    keep_hours: float = 24.0
    max_attempts: int = 2
    retry_base_delay: float = 0.5
    max_concurrent_calls: int = 4
    max_calls_per_member_state: int = 1
    lookup_wait_seconds: float = 20.0  # as the [vies] setting
    circuit_open_minutes: float = 60.0


@dataclass(frozen=True)
class VatResult:
    """The answer to one lookup."""

    query: str  # cleaned, with prefix: "EL123456789"
    country_code: str
    vat_number: str
    valid: bool
    name: str | None  # None: VIES did not share it
    address: str | None
    request_date: str | None  # VIES's date; None for local answers
    consultation_number: str | None
    fetched_at: str | None  # UTC ISO, when VIES answered
    source: Source
    age_seconds: int | None  # for cache/stale
    invalid_reason: str | None  # local answers: why the syntax/checksum fails

    def to_json(self) -> dict[str, Any]:
        """The API's and the CLI's JSON shape of the answer."""
        return {
            "query": self.query,
            "country_code": self.country_code,
            "vat_number": self.vat_number,
            "valid": self.valid,
            "name": self.name,
            "address": self.address,
            "request_date": self.request_date,
            "consultation_number": self.consultation_number,
            "fetched_at": self.fetched_at,
            "source": self.source,
            "age_seconds": self.age_seconds,
            "invalid_reason": self.invalid_reason,
        }


@dataclass(frozen=True)
class LocalCheck:
    """A number after the local check: cleaned parts, and why it fails (None if it passes)."""

    country_code: str
    vat_number: str
    invalid_reason: str | None

    @property
    def query(self) -> str:
        return self.country_code + self.vat_number


def check_locally(raw: str) -> LocalCheck:
    """Clean ``raw`` and check it with python-stdnum (length, format, checksum per country).

    Raises :class:`MalformedVatNumberError` when ``raw`` is not a VAT number at all.
    """
    text = raw.strip()
    if not text:
        raise MalformedVatNumberError("the VAT number is empty")
    if len(text) > MAX_INPUT_LENGTH:
        raise MalformedVatNumberError(f"a VAT number has at most {MAX_INPUT_LENGTH} characters")
    if not _ALLOWED.fullmatch(text):
        raise MalformedVatNumberError(
            "a VAT number holds only letters, digits, spaces, dots and dashes"
        )
    compact = text.translate(_SEPARATORS).upper()
    prefix = compact[:2]
    if len(prefix) < 2 or not prefix.isalpha():
        raise MalformedVatNumberError(
            "a VAT number starts with its two-letter country prefix (EE, LV, EL, XI, ...)"
        )
    if prefix == "GB":
        raise MalformedVatNumberError(
            "GB numbers are not in VIES; Northern Ireland numbers use the prefix XI"
        )
    country = PREFIX_ALIASES.get(prefix, prefix)
    if country not in VIES_PREFIXES:
        raise MalformedVatNumberError(f"{prefix} is not the prefix of an EU member state in VIES")
    return _checked(country, compact[2:])


@functools.lru_cache(maxsize=4096)
def _checked(country: str, number: str) -> LocalCheck:
    # Cached: stdnum's checks are half of a cache hit's time in the API, and the portal asks
    # about the same few numbers again and again.
    if not number:
        return LocalCheck(country, number, "wrong length")
    try:
        validated = str(eu_vat.validate(country + number))
    except InvalidLength:
        return LocalCheck(country, number, "wrong length")
    except InvalidChecksum:
        return LocalCheck(country, number, "checksum does not match")
    except ValidationError:  # InvalidFormat, InvalidComponent
        return LocalCheck(country, number, "invalid format")
    # stdnum's own compact form (e.g. a leading zero for old 9-digit Belgian numbers).
    return LocalCheck(country, validated[2:], None)


# -- the service ------------------------------------------------------------------------------


class ViesClientLike(Protocol):
    """What the service needs of :class:`syncd.connectors.vies.client.ViesClient`."""

    def check(self, country_code: str, vat_number: str) -> ViesAnswer: ...

    def close(self) -> None: ...


class _NoSlot(Exception):
    """No call slot freed within the lookup's wait budget (never retried)."""


class _CircuitOpen(Exception):
    """The circuit opened while retrying (never retried)."""

    def __init__(self, circuit: vies_cache.Circuit) -> None:
        super().__init__(circuit.scope)
        self.circuit = circuit


def _shared(value: str | None) -> str | None:
    """None for VIES's "not shared" placeholders (the client already maps them; defensive)."""
    if value is None or value.strip() in ("", "---"):
        return None
    return value


class VatService:
    """VAT lookups with local checks, the cache, single-flight VIES calls and the circuit.

    Thread-safe. ``connect`` opens a cache connection; each thread that looks numbers up gets
    its own (closed by :meth:`close`). The service owns ``client`` and closes it in
    :meth:`close`. ``stop`` interrupts retry backoffs at shutdown; ``clock`` (aware UTC) drives
    every age, expiry and counter day, so tests can move time.
    """

    circuit_refresh_seconds: float = CIRCUIT_REFRESH_SECONDS

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        client: ViesClientLike,
        options: VatOptions,
        *,
        stop: threading.Event | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.options = options
        self._client = client
        self._clock = clock
        self._retry = RetryPolicy(
            max_attempts=options.max_attempts, base_delay=options.retry_base_delay, stop=stop
        )
        self._connections = ThreadConnections(connect)
        self._lock = threading.Lock()  # counters, in-flight calls, slots
        self._changed = threading.Condition(self._lock)  # in-flight waiters changed
        self._counts: Counter[str] = Counter()
        self._inflight: dict[tuple[str, str], Future[VatResult]] = {}
        self._waiting = 0
        self._global_slots = threading.BoundedSemaphore(options.max_concurrent_calls)
        self._state_slots: dict[str, threading.BoundedSemaphore] = {}
        self._circuit_lock = threading.Lock()
        self._circuits: list[vies_cache.Circuit] = []
        self._circuits_read_at: float | None = None

    # -- public -------------------------------------------------------------------------------

    def lookup(self, raw: str, *, fresh: bool = False) -> VatResult:
        """Answer whether ``raw`` is a valid EU VAT number.

        ``fresh=True`` skips the fresh cache (a stale entry may still answer if VIES fails).
        Raises :class:`MalformedVatNumberError`, :class:`VatRejectedError` or
        :class:`VatUnavailableError`.
        """
        local = check_locally(raw)
        if local.invalid_reason is not None:
            self._count("local_invalid")
            return VatResult(
                query=local.query,
                country_code=local.country_code,
                vat_number=local.vat_number,
                valid=False,
                name=None,
                address=None,
                request_date=None,
                consultation_number=None,
                fetched_at=None,
                source="local",
                age_seconds=None,
                invalid_reason=local.invalid_reason,
            )
        try:
            result = self._lookup_valid_syntax(local, fresh)
        except VatRejectedError:
            self._count("rejected")
            raise
        except VatUnavailableError:
            self._count("unavailable")
            raise
        self._count(result.source)
        return result

    def flush_counts(self) -> None:
        """Add the in-memory outcome counters to ``vies_lookup_counts`` (today, UTC) and reset
        them; on a failed write they are kept for the next flush."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
        if not counts:
            return
        try:
            vies_cache.add_counts(self._conn(), counts, vies_cache.day_of(self._clock()))
        except BaseException:
            with self._lock:
                self._counts.update(counts)
            raise

    def purge(self) -> int:
        """Delete answers older than ``keep_hours``, closed circuits and counters older than 30
        days; returns the rows deleted. (The daemon's retention job purges the same way.)"""
        now = self._clock()
        deleted = vies_cache.purge(
            self._conn(), now - timedelta(hours=self.options.keep_hours), now=now
        )
        with self._circuit_lock:
            self._circuits_read_at = None
        return deleted

    def waiting_lookups(self) -> int:
        """Lookups now waiting on a VIES call (the callers making one included)."""
        with self._lock:
            return self._waiting

    def wait_for_waiting(self, count: int, timeout: float) -> bool:
        """Block until at least ``count`` lookups wait on VIES calls (for tests and
        benchmarks); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._waiting >= count, timeout)

    def close(self) -> None:
        """Flush the counters (best effort), close every cache connection and the client.
        No lookups after this."""
        try:
            self.flush_counts()
        except sqlite3.Error as error:
            log.warning("VIES lookup counters not saved at close: %s", type(error).__name__)
        self._connections.close_all()
        self._client.close()

    # -- lookup steps -------------------------------------------------------------------------

    def _lookup_valid_syntax(self, local: LocalCheck, fresh: bool) -> VatResult:
        deadline = time.monotonic() + self.options.lookup_wait_seconds
        entry = vies_cache.get(self._conn(), local.country_code, local.vat_number)
        if not fresh and entry is not None:
            hit = self._fresh_hit(local, entry)
            if hit is not None:
                return hit
        return self._shared_call(local, entry, fresh, deadline)

    def _fresh_hit(self, local: LocalCheck, entry: vies_cache.CachedAnswer) -> VatResult | None:
        age = entry.age_seconds(self._clock())
        if age < self.options.cache_hours * 3600:
            return _from_entry(local, entry, "cache", age)
        return None

    def _shared_call(
        self,
        local: LocalCheck,
        entry: vies_cache.CachedAnswer | None,
        fresh: bool,
        deadline: float,
    ) -> VatResult:
        """Single flight: the first caller for a number makes the call, the others wait for
        its result (or its error), each at most until its own deadline."""
        key = (local.country_code, local.vat_number)
        with self._changed:
            future = self._inflight.get(key)
            leader = future is None
            if future is None:
                future = Future()
                self._inflight[key] = future
            self._waiting += 1
            self._changed.notify_all()
        try:
            if not leader:
                try:
                    return future.result(timeout=max(0.0, deadline - time.monotonic()))
                except FutureTimeoutError:
                    return self._fallback(local, entry, self._busy_here())
            try:
                result = self._lead(local, entry, fresh, deadline)
            except BaseException as error:
                future.set_exception(error)
                raise
            future.set_result(result)
            return result
        finally:
            with self._changed:
                if leader:
                    del self._inflight[key]
                self._waiting -= 1
                self._changed.notify_all()

    def _lead(
        self,
        local: LocalCheck,
        entry: vies_cache.CachedAnswer | None,
        fresh: bool,
        deadline: float,
    ) -> VatResult:
        country, number = local.country_code, local.vat_number
        if not fresh:
            # A call for this number may have finished between our cache read and now.
            latest = vies_cache.get(self._conn(), country, number)
            if latest is not None:
                entry = latest
                hit = self._fresh_hit(local, latest)
                if hit is not None:
                    return hit
        circuit = self._open_circuit_for(country)
        if circuit is not None:
            return self._fallback(local, entry, self._blocked(circuit))
        try:
            answer = self._retry.call(
                lambda: self._attempt(country, number, deadline), what=f"VIES lookup ({country})"
            )
        except ViesInvalidInputError as error:
            if error.code == "INVALID_REQUESTER_INFO":
                # Our configuration, not the caller's number, is at fault.
                log.error(
                    "VIES refused our requester information (INVALID_REQUESTER_INFO); check "
                    "[vies] requester_vat"
                )
                return self._fallback(local, entry, self._unavailable(error, country))
            log.info("VIES lookup (%s): rejected as invalid input", country)
            raise VatRejectedError("VIES refused the number as invalid input") from error
        except ViesBlockedError as error:
            return self._fallback(local, entry, self._blocked(self._trip(error.code)))
        except _CircuitOpen as error:
            return self._fallback(local, entry, self._blocked(error.circuit))
        except _NoSlot:
            return self._fallback(local, entry, self._busy_here())
        except ViesEchoMismatchError as error:
            log.warning("VIES lookup (%s): %s", country, error)  # names neither number
            return self._fallback(local, entry, self._unavailable(error, country))
        except RetriableError as error:  # the Vies* retriable errors, or stopped while waiting
            return self._fallback(local, entry, self._unavailable(error, country))
        if answer.valid and answer.consultation_missing:
            # VIES sometimes omits it; the verdict stands, but the proof of the check (what a
            # zero-rated supply to this trader rests on) is missing. Only a valid number needs it.
            self._count(vies_cache.NO_CONSULTATION)
            log.warning(
                "VIES lookup (%s): checkVatApprox answered without a consultation number; the "
                "verdict is kept without proof of the check",
                country,
            )
        fetched = self._clock()
        stored = vies_cache.CachedAnswer(
            country_code=country,  # what we asked, not VIES's echo
            vat_number=number,
            valid=answer.valid,
            name=_shared(answer.name),
            address=_shared(answer.address),
            request_date=answer.request_date,
            consultation_number=answer.consultation_number,
            fetched_at=fetched.replace(microsecond=0),  # as stored: to the second
        )
        try:
            vies_cache.put(self._conn(), stored, fetched)
        except sqlite3.Error as error:  # the answer is still good; only the cache misses it
            log.warning("VIES answer (%s) not cached: %s", country, type(error).__name__)
        log.debug("VIES lookup (%s): answered live", country)
        return _from_entry(local, stored, "live", None)

    def _attempt(self, country: str, number: str, deadline: float) -> ViesAnswer:
        """One VIES call inside the member-state and global slots."""
        circuit = self._open_circuit_for(country)
        if circuit is not None:
            raise _CircuitOpen(circuit)
        state_slot = self._state_slot(country)
        if not state_slot.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise _NoSlot()
        try:
            if not self._global_slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise _NoSlot()
            try:
                answer = self._client.check(country, number)
            finally:
                self._global_slots.release()
        finally:
            state_slot.release()
        # ViesClient checks the echo itself; checked again here for any other client, since a
        # mismatched answer must never be stored as the verdict on the number asked.
        mismatch = answer.mismatch(country, number)
        if mismatch is not None:
            raise ViesEchoMismatchError(mismatch)
        return answer

    def _fallback(
        self,
        local: LocalCheck,
        entry: vies_cache.CachedAnswer | None,
        error: VatUnavailableError,
    ) -> VatResult:
        """A stale answer when the entry is younger than ``keep_hours``; else ``error``."""
        if entry is not None:
            age = entry.age_seconds(self._clock())
            if age < self.options.keep_hours * 3600:
                log.warning(
                    "VIES lookup (%s) failed (%s); answered from a stale cache entry (%d s old)",
                    local.country_code,
                    error.code,
                    age,
                )
                return _from_entry(local, entry, "stale", age)
        log.warning("VIES lookup (%s) failed (%s)", local.country_code, error.code)
        raise error

    # -- errors -------------------------------------------------------------------------------

    def _unavailable(self, error: SyncdError, country: str) -> VatUnavailableError:
        hint = getattr(error, "retry_after", None) or 0.0
        if isinstance(error, ViesBusyError):
            code, message = "vies_busy", "VIES is busy; try again later"
        elif isinstance(error, ViesMalformedError):
            code, message = "vies_bad_response", "VIES answered with an unusable response"
        elif isinstance(error, ViesUnavailableError) and error.member_state:
            code = "member_state_unavailable"
            message = f"the VAT database of {country} does not answer VIES now; try again later"
        else:
            code, message = "vies_unavailable", "VIES is unavailable; try again later"
        return VatUnavailableError(code, message, retry_after=max(RETRY_AFTER[code], hint))

    def _busy_here(self) -> VatUnavailableError:
        return VatUnavailableError(
            "vies_busy",
            "too many VAT lookups are waiting for VIES; try again shortly",
            retry_after=float(max(1, math.ceil(self.options.lookup_wait_seconds))),
        )

    def _blocked(self, circuit: vies_cache.Circuit) -> VatUnavailableError:
        remaining = (circuit.open_until - self._clock()).total_seconds()
        return VatUnavailableError(
            "vies_blocked",
            f"VIES has blocked this server ({circuit.reason}); no VIES lookups until "
            f"{iso(circuit.open_until)}",
            retry_after=float(max(1, math.ceil(remaining))),
        )

    # -- circuit ------------------------------------------------------------------------------

    def _open_circuit_for(self, country: str) -> vies_cache.Circuit | None:
        """The open circuit covering ``country`` (global or its own), from a copy of
        ``vies_circuits`` at most :attr:`circuit_refresh_seconds` old."""
        now = self._clock()
        with self._circuit_lock:
            read_at = self._circuits_read_at
            if read_at is None or time.monotonic() - read_at >= self.circuit_refresh_seconds:
                self._circuits = vies_cache.circuits(self._conn())
                self._circuits_read_at = time.monotonic()
            known = self._circuits
        return next(
            (c for c in known if c.scope in (GLOBAL_SCOPE, country) and c.is_open(now)), None
        )

    def _trip(self, reason: str) -> vies_cache.Circuit:
        """Open the global circuit (once: a circuit already open is returned as it is)."""
        with self._circuit_lock:
            now = self._clock()
            conn = self._conn()
            self._circuits = vies_cache.circuits(conn)
            self._circuits_read_at = time.monotonic()
            current = next(
                (c for c in self._circuits if c.scope == GLOBAL_SCOPE and c.is_open(now)), None
            )
            if current is not None:
                return current
            until = now + timedelta(minutes=self.options.circuit_open_minutes)
            circuit = vies_cache.open_circuit(conn, GLOBAL_SCOPE, reason, now=now, until=until)
            self._circuits = [c for c in self._circuits if c.scope != GLOBAL_SCOPE] + [circuit]
        log.error(
            "VIES has blocked this server (%s); no VIES calls until %s; lookups are answered "
            "from stale cache entries or fail with vies_blocked until then (to retry sooner, "
            "delete the row from vies_circuits once the block is lifted)",
            reason,
            iso(circuit.open_until),
        )
        return circuit

    # -- plumbing -----------------------------------------------------------------------------

    def _state_slot(self, country: str) -> threading.BoundedSemaphore:
        with self._lock:
            slot = self._state_slots.get(country)
            if slot is None:
                slot = threading.BoundedSemaphore(self.options.max_calls_per_member_state)
                self._state_slots[country] = slot
            return slot

    def _count(self, outcome: str) -> None:
        with self._lock:
            self._counts[outcome] += 1

    def _conn(self) -> sqlite3.Connection:
        return self._connections.get()


def _from_entry(
    local: LocalCheck, entry: vies_cache.CachedAnswer, source: Source, age: int | None
) -> VatResult:
    return VatResult(
        query=local.query,
        country_code=local.country_code,
        vat_number=local.vat_number,
        valid=entry.valid,
        name=entry.name,
        address=entry.address,
        request_date=entry.request_date,
        consultation_number=entry.consultation_number,
        fetched_at=iso(entry.fetched_at),
        source=source,
        age_seconds=age,
        invalid_reason=None,
    )
