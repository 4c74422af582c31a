"""Prometheus metrics for ``GET /metrics`` of the local API.

A :class:`MetricsSource` owns its own :class:`~prometheus_client.CollectorRegistry` (never the
library's global default registry) holding two kinds of metrics:

- **What the cache says**, read at scrape time by :class:`CacheCollector` through a connection
  getter (the daemon passes ``ThreadConnections.get``, so each API thread reads through its own
  connection): job health, mirrored record counts, the outbox, VIES, Omniva's list and each
  retention store's rows and oldest row. These are the figures ``syncd status`` shows, as
  gauges.
- **The API itself**, recorded by the application for every request: requests per route and
  status, their durations, and the outcomes of VAT lookups.

No label holds personal data: routes are rule names (never the request path, which for a VAT
lookup holds the number), and the other labels are job names, entity names, statuses,
outcomes and country codes.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from syncd.config import RetentionSettings
from syncd.engines.retention import store_health
from syncd.state import outbox, overview, vies_cache

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "JOB_STATES",
    "VAT_OUTCOMES",
    "CacheCollector",
    "MetricsSource",
]

logger = logging.getLogger(__name__)

# The text exposition format 0.0.4, which generate_latest writes for metric and label names of
# the classic character set (all of syncd's). prometheus_client's own handlers label that output
# so too; CONTENT_TYPE_LATEST names format 1.0.0 in recent versions and 0.0.4 in older ones.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: the API answers a cache hit in about a millisecond, a live VIES call in up to seconds.
DURATION_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)

JOB_STATES: Final = ("ok", "idle", "failing", "stopped")
_JOB_UP: Final = frozenset({"ok", "idle"})

VAT_OUTCOMES: Final = (
    "cache",
    "live",
    "stale",
    "local_invalid",
    "malformed",
    "rejected",
    "unavailable",
)
"""Outcomes of ``syncd_api_vat_lookups_total``: syncd.engines.vat's counted outcomes
(``local`` answers
as ``local_invalid``, as ``vies_lookup_counts`` names them) plus ``malformed`` (not a VAT number
at all, a 400)."""


class CacheCollector:
    """Reads the cache at scrape time (a custom collector for a ``CollectorRegistry``).

    When the cache cannot be read, the scrape still succeeds: the cache's families are left
    out and ``syncd_cache_read_success`` is 0 (the error's type is logged).
    """

    def __init__(
        self,
        connection: Callable[[], sqlite3.Connection],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retention: RetentionSettings | None = None,
    ) -> None:
        self._connection = connection
        self._clock = clock
        self._retention = retention or RetentionSettings()

    def describe(self) -> Iterable[Metric]:
        """The families :meth:`collect` yields, without samples (for the registry's checks)."""
        return [*_families(), _read_success()]

    def collect(self) -> Iterable[Metric]:
        try:
            families = self._read(self._connection(), self._clock())
        except Exception as exc:
            logger.error(
                "metrics: reading the cache failed with %s.%s",
                type(exc).__module__,
                type(exc).__qualname__,
            )
            return [_read_success(0)]
        return [*families, _read_success(1)]

    def _read(self, conn: sqlite3.Connection, now: datetime) -> list[Metric]:
        f = _Families()
        for job in overview.jobs(conn):
            f.job_up.add_metric([job.job], 1 if job.state in _JOB_UP else 0)
            states = JOB_STATES if job.state in JOB_STATES else (*JOB_STATES, job.state)
            for state in states:
                f.job_state.add_metric([job.job, state], 1 if state == job.state else 0)
            if job.last_success_at is not None:
                f.job_last_success.add_metric([job.job], job.last_success_at.timestamp())
            f.job_failures.add_metric([job.job], job.consecutive_failures)
        for entity, figures in overview.entities(conn).items():
            f.records.add_metric([entity], figures.records)
            f.quarantined.add_metric([entity], figures.quarantined)
            f.data_quality.add_metric([entity], figures.data_quality)
            f.held_deletes.add_metric([entity], figures.held.count if figures.held else 0)
            if figures.data_as_of is not None:
                f.data_as_of.add_metric([entity], figures.data_as_of.timestamp())
        queue = outbox.depth(conn)
        for status, count in queue.by_status.items():
            f.outbox.add_metric([status], count)
        age = queue.oldest_undelivered_age(now)
        f.outbox_age.add_metric([], max(0.0, age) if age is not None else 0.0)
        vies = vies_cache.figures(conn, now)
        f.vies_answers.add_metric([], vies.answers)
        f.vies_circuits.add_metric([], len(vies.open_circuits))
        known = {*vies_cache.OUTCOMES, *vies_cache.NOTES}
        for outcome in (*vies_cache.OUTCOMES, *sorted(set(vies.today) - known)):
            f.vies_today.add_metric([outcome], vies.today.get(outcome, 0))
        f.vies_no_consultation.add_metric([], vies.today.get(vies_cache.NO_CONSULTATION, 0))
        parcels = overview.omniva_figures(conn)
        for country, kinds in parcels.counts.items():
            for kind, count in kinds.items():
                f.omniva_locations.add_metric([country, kind], count)
        f.omniva_loaded.add_metric([], 1 if parcels.list_state.loaded else 0)
        for family, moment in (
            (f.omniva_age, parcels.list_state.updated_at),
            (f.omniva_checked_age, parcels.list_state.checked_at),
        ):
            if moment is not None:
                family.add_metric([], max(0.0, (now - moment).total_seconds()))
        for library in overview.libraries(conn):
            f.document_items.add_metric([library.name], library.item_count)
            f.document_up.add_metric([library.name], 1 if library.health == "ok" else 0)
            if library.last_delta_at is not None:
                f.document_delta_age.add_metric(
                    [library.name], max(0.0, (now - library.last_delta_at).total_seconds())
                )
        interval = timedelta(minutes=self._retention.purge_interval_minutes)
        for kept in store_health(conn, self._retention.windows(), interval, now):
            f.retention_rows.add_metric([kept.store], kept.rows)
            f.retention_oldest_age.add_metric([kept.store], kept.age_seconds or 0.0)
            f.retention_window.add_metric([kept.store], kept.window_seconds)
            f.retention_overdue.add_metric([kept.store], 1 if kept.overdue else 0)
        return f.all()


def _read_success(value: float | None = None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "syncd_cache_read_success",
        "1 when this scrape read the cache; 0 when reading it failed (the cache's figures are "
        "missing from this scrape; the log says why).",
    )
    if value is not None:
        family.add_metric([], value)
    return family


class _Families:
    """The families the cache collector fills, in exposition order."""

    def __init__(self) -> None:
        self.job_up = GaugeMetricFamily(
            "syncd_job_up",
            "1 while the job is ok or idle (not run yet), 0 while it is failing (retrying with "
            "backoff) or stopped (a fatal error; needs a restart).",
            labels=["name"],
        )
        self.job_state = GaugeMetricFamily(
            "syncd_job_state",
            "The job's state as syncd status shows it: 1 for the current state (ok, idle, "
            "failing, stopped), 0 for the others.",
            labels=["name", "state"],
        )
        self.job_last_success = GaugeMetricFamily(
            "syncd_job_last_success_timestamp_seconds",
            "Unix time of the job's last successful run (absent until it has succeeded since "
            "the daemon started).",
            labels=["name"],
        )
        self.job_failures = GaugeMetricFamily(
            "syncd_job_consecutive_failures",
            "Failed runs of the job since its last success.",
            labels=["name"],
        )
        self.records = GaugeMetricFamily(
            "syncd_cache_records",
            "Records of the entity mirrored in the cache.",
            labels=["entity"],
        )
        self.data_as_of = GaugeMetricFamily(
            "syncd_cache_data_as_of_timestamp_seconds",
            "Unix time (the CRM's clock) up to which the entity's changes are mirrored (absent "
            "before the first cycle).",
            labels=["entity"],
        )
        self.quarantined = GaugeMetricFamily(
            "syncd_cache_quarantined_records",
            "Records of the entity the mapper refused (quarantined; see syncd status).",
            labels=["entity"],
        )
        self.data_quality = GaugeMetricFamily(
            "syncd_data_quality_warnings",
            "Data-quality warnings of the entity's mirrored records (one per record and "
            "message; e.g. a company requisite of a preset the mapping does not map; see "
            "syncd status).",
            labels=["entity"],
        )
        self.held_deletes = GaugeMetricFamily(
            "syncd_cache_held_deletes",
            "Deletions of the entity held by the delete guard until an operator applies or "
            "discards them.",
            labels=["entity"],
        )
        self.outbox = GaugeMetricFamily(
            "syncd_outbox_requests",
            "Service requests in the outbox by status (pending, sending, retry_wait: on their "
            "way; done: delivered, until retention removes them; dead: gave up).",
            labels=["status"],
        )
        self.outbox_age = GaugeMetricFamily(
            "syncd_outbox_oldest_undelivered_age_seconds",
            "Age of the oldest pending, sending or retry_wait request; 0 when none is waiting.",
        )
        self.vies_answers = GaugeMetricFamily(
            "syncd_vies_cached_answers",
            "VIES answers stored in the cache (fresh or stale).",
        )
        self.vies_circuits = GaugeMetricFamily(
            "syncd_vies_open_circuits",
            "Open VIES circuits: VIES blocked syncd and no call goes out until they close "
            "(VAT lookups answer from the cache or 503).",
        )
        self.vies_today = GaugeMetricFamily(
            "syncd_vies_lookups_today",
            "VAT lookups so far in the current UTC day by outcome, as stored in the cache "
            "(the daemon flushes its counts every minute; syncd vat adds its own). Resets at "
            "00:00 UTC; for rates use syncd_api_vat_lookups_total.",
            labels=["outcome"],
        )
        self.vies_no_consultation = GaugeMetricFamily(
            "syncd_vies_answers_without_consultation_today",
            "Live checkVatApprox answers (vies.requester_vat set) that a number is valid, so far "
            "in the current UTC day, which came without a consultation number, the proof of the "
            "check (also counted as live in syncd_vies_lookups_today). Resets at 00:00 UTC.",
        )
        self.omniva_locations = GaugeMetricFamily(
            "syncd_omniva_locations",
            "Omniva locations in the stored list by country and kind (parcel_machine, "
            "post_office).",
            labels=["country", "kind"],
        )
        self.omniva_loaded = GaugeMetricFamily(
            "syncd_omniva_list_loaded",
            "1 once a parcel-machine list is stored; 0 before (the API answers 503).",
        )
        self.omniva_age = GaugeMetricFamily(
            "syncd_omniva_list_age_seconds",
            "Seconds since the stored Omniva list last changed (absent before the first list; "
            "an unchanged list keeps its time, see syncd_omniva_list_checked_age_seconds).",
        )
        self.omniva_checked_age = GaugeMetricFamily(
            "syncd_omniva_list_checked_age_seconds",
            "Seconds since Omniva's list was last checked successfully (absent before the "
            "first check).",
        )
        self.document_items = GaugeMetricFamily(
            "syncd_document_library_items",
            "Files of a SharePoint document library in the cache (in its folder scope).",
            labels=["library"],
        )
        self.document_up = GaugeMetricFamily(
            "syncd_document_library_up",
            "1 while the library's last delta succeeded; 0 while it is pending, failing or "
            "stopped.",
            labels=["library"],
        )
        self.document_delta_age = GaugeMetricFamily(
            "syncd_document_library_delta_age_seconds",
            "Seconds since the library's last complete delta was applied (absent before the "
            "first).",
            labels=["library"],
        )

        self.retention_rows = GaugeMetricFamily(
            "syncd_retention_rows",
            "Rows of a retention store its window applies to (for the outbox's stores: requests "
            "still holding what the window limits); see docs/privacy.md.",
            labels=["store"],
        )
        self.retention_oldest_age = GaugeMetricFamily(
            "syncd_retention_oldest_age_seconds",
            "Age of the store's oldest row its window applies to; 0 when it holds none.",
            labels=["store"],
        )
        self.retention_window = GaugeMetricFamily(
            "syncd_retention_window_seconds",
            "How long the store keeps a row ([retention] in the configuration).",
            labels=["store"],
        )
        self.retention_overdue = GaugeMetricFamily(
            "syncd_retention_overdue",
            "1 when the store's oldest row is older than its window plus one purge interval: "
            "the retention job is not purging it (see syncd_job_up{name=\"retention\"}).",
            labels=["store"],
        )

    def all(self) -> list[Metric]:
        return [value for value in vars(self).values() if isinstance(value, Metric)]


def _families() -> list[Metric]:
    return _Families().all()


class MetricsSource:
    """The metrics of ``GET /metrics``: the cache's figures (read at scrape time through
    ``connection``) and the API's own counters (fed by the application).

    Thread-safe: the API's worker threads record and render concurrently.
    """

    def __init__(
        self,
        connection: Callable[[], sqlite3.Connection],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retention: RetentionSettings | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "syncd_api_requests",
            "Requests answered by the local API, by route (the rule's name, or the error code "
            "when no route matched: not_found, method_not_allowed, ...) and HTTP status.",
            ["route", "status"],
            registry=self.registry,
        )
        self._durations = Histogram(
            "syncd_api_request_duration_seconds",
            "Time the local API's application took to answer, by route (the server's parsing "
            "and sending are not included).",
            ["route"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._vat_lookups = Counter(
            "syncd_api_vat_lookups",
            "VAT lookups answered by the local API since the daemon started, by outcome: cache, "
            "live, stale (VIES answers), local_invalid (refused by the local check), malformed "
            "(not a VAT number), rejected (VIES refused the input), unavailable (503).",
            ["outcome"],
            registry=self.registry,
        )
        self.registry.register(CacheCollector(connection, clock=clock, retention=retention))
        # Children by label values: the hot path skips prometheus_client's label lookup.
        self._vat_children = {
            outcome: self._vat_lookups.labels(outcome) for outcome in VAT_OUTCOMES
        }
        self._request_children: dict[tuple[str, str], Counter] = {}
        self._duration_children: dict[str, Histogram] = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Record one answered request; ``route`` must come from a small fixed set."""
        key = (route, str(status))
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children.setdefault(key, self._requests.labels(*key))
        counter.inc()
        histogram = self._duration_children.get(route)
        if histogram is None:
            histogram = self._duration_children.setdefault(route, self._durations.labels(route))
        histogram.observe(max(0.0, seconds))

    def observe_vat_lookup(self, outcome: object) -> None:
        """Record a VAT lookup's outcome: one of :data:`VAT_OUTCOMES`, or an answer's ``source``
        (``local`` counts as ``local_invalid``). Anything else is not counted: label values come
        from a fixed set."""
        if outcome == "local":
            outcome = "local_invalid"
        counter = self._vat_children.get(outcome) if isinstance(outcome, str) else None
        if counter is not None:
            counter.inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition: ``(body, content type)``."""
        return generate_latest(self.registry), CONTENT_TYPE
