"""Operational metrics in the Prometheus text format (served at ``GET /metrics``).

One ``Metrics`` per platform, each with its own ``CollectorRegistry``: two platforms in
one process (tests, a replay beside a live API) never share a count, and nothing is
registered at import time. Counters and histograms are updated where the work happens
(ingest, the recorder, the projector, the read-model pool); gauges whose truth lives in
the database (projection lag, quarantined events, the last lifetime-value fit) are read
when Prometheus scrapes, so they are never stale.

Labels carry only fixed vocabularies (outcomes, status classes, component names): never
a customer id, an event id or anything personal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypeVar

import eventsourcing.persistence
import psycopg
import psycopg2
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from domain.idempotency import Outcome, Recorded
from projections import analytics
from projections.store import ReadModelStore

log = logging.getLogger(__name__)
T = TypeVar("T")

Component = Literal["recorder", "projector", "reads"]
COMPONENTS: tuple[Component, ...] = ("recorder", "projector", "reads")
# The outcomes of POST /v1/touchpoints the API can give today, shown at 0 from the start
# so that a rate() over them exists before the first refusal (Prometheus practice).
INGEST_REQUEST_OUTCOMES = (
    "accepted",
    "refused_400",
    "refused_409",
    "refused_413",
    "refused_415",
    "refused_422",
    "unavailable_503",
    "error_500",
)
ClvFitOutcome = Literal["succeeded", "failed"]
CLV_FIT_OUTCOMES: tuple[ClvFitOutcome, ...] = ("succeeded", "failed")
# What a failed call against PostgreSQL raises: the read models' driver (psycopg2, its
# pool included), the event store's (psycopg 3), and eventsourcing's wrappers of them.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    psycopg2.Error,
    psycopg.Error,
    eventsourcing.persistence.PersistenceError,
)


def ingest_request_outcome(status: int) -> str:
    """The ``outcome`` label of an ingest answer with HTTP ``status``. The label set is
    bounded by the HTTP status codes, whatever the client sends."""
    if 200 <= status < 300:
        return "accepted"
    if status == 503:
        return "unavailable_503"
    if 400 <= status < 500:
        return f"refused_{status}"
    return f"error_{status}"


@dataclass(frozen=True)
class ClvFit:
    """The outcome of the latest lifetime-value fit, and when it ended."""

    outcome: ClvFitOutcome
    at: datetime


@dataclass(frozen=True)
class ScrapeSources:
    """Where the gauges read at scrape time come from (given by the composition root)."""

    projection_lag: Callable[[], int]
    quarantined_events: Callable[[], int]
    last_clv_fit: Callable[[], ClvFit | None]


class Metrics:
    """The platform's instruments, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.sources: ScrapeSources | None = None
        # Registered first, so that a source failing in a scrape is counted in the error
        # counter of that same scrape (a registry collects in registration order).
        registry.register(_ScrapeCollector(self))
        self.ingest_requests = Counter(
            "peakend_ingest_requests",
            "POST /v1/touchpoints requests answered, by outcome (accepted, refused_<status>, "
            "unavailable_503, error_<status>).",
            ["outcome"],
            registry=registry,
        )
        self.ingest_touchpoints = Counter(
            "peakend_ingest_touchpoints",
            "Touchpoints handed to the recorder (embedded) or the cluster recorder agent, by "
            "outcome: recorded, duplicate, conflict, withheld (its request held a conflict), "
            "accepted (cluster-mode API: durable in Kafka, recorded by a worker next).",
            ["outcome"],
            registry=registry,
        )
        self.record_batch_seconds = Histogram(
            "peakend_record_batch_seconds",
            "Seconds one recorder batch (one event-store transaction) took.",
            registry=registry,
        )
        self.project_batch_seconds = Histogram(
            "peakend_project_batch_seconds",
            "Seconds one projector batch (one read-model transaction) took.",
            registry=registry,
        )
        self.database_errors = Counter(
            "peakend_database_errors",
            "Database calls that failed, by component (recorder, projector, reads).",
            ["component"],
            registry=registry,
        )
        self.pool_wait_seconds = Histogram(
            "peakend_pool_wait_seconds",
            "Seconds spent getting a read-model connection from the pool.",
            # Waits are normally microseconds; the interesting ones are the queueing tail.
            buckets=(0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        for outcome in INGEST_REQUEST_OUTCOMES:
            self.ingest_requests.labels(outcome)
        for touchpoint_outcome in Outcome:
            self.ingest_touchpoints.labels(touchpoint_outcome.value)
        for component in COMPONENTS:
            self.database_errors.labels(component)

    # -- what the code calls ----------------------------------------------------------

    def count_ingest_request(self, status: int) -> None:
        self.ingest_requests.labels(ingest_request_outcome(status)).inc()

    def count_touchpoints(self, outcomes: Iterable[Recorded]) -> None:
        for recorded in outcomes:
            self.ingest_touchpoints.labels(recorded.outcome.value).inc()

    def count_when_resolved(self, future: Future[list[Recorded]]) -> Future[list[Recorded]]:
        """Count the touchpoint outcomes a submission resolves to (cluster-mode ingest)."""

        def count(done: Future[list[Recorded]]) -> None:
            if not done.cancelled() and done.exception() is None:
                self.count_touchpoints(done.result())

        future.add_done_callback(count)
        return future

    def database_error(self, component: Component, error: BaseException) -> None:
        """Count ``error`` if it came from the database (a bug in our code is not one)."""
        if isinstance(error, DATABASE_ERRORS):
            self.database_errors.labels(component).inc()

    def read_at_scrape(self, sources: ScrapeSources) -> None:
        """Give the gauges read when Prometheus scrapes their sources (until then the
        gauges have no sample)."""
        self.sources = sources


class _ScrapeCollector(Collector):
    """Gauges read at scrape time. A source that fails (the database is down) leaves its
    gauge out of that scrape, so Prometheus sees it absent rather than a stale or made-up
    value, and counts a read error; the scrape itself still answers."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        # Given so that registering does not call collect() (and the database).
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        lag, quarantined, fit, fitted_at = families = self._families()
        sources = self.metrics.sources
        if sources is None:
            return families
        if (value := self._read(sources.projection_lag)) is not None:
            lag.add_metric([], value)
        if (value := self._read(sources.quarantined_events)) is not None:
            quarantined.add_metric([], value)
        if (last := self._read(sources.last_clv_fit)) is not None:
            for outcome in CLV_FIT_OUTCOMES:
                fit.add_metric([outcome], 1 if outcome == last.outcome else 0)
            fitted_at.add_metric([], last.at.timestamp())
        # No fit yet: the fit families go out with their help text and no sample.
        return families

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily
    ]:
        return (
            GaugeMetricFamily(
                "peakend_projection_lag",
                "Notifications recorded in the event store but not yet projected.",
            ),
            GaugeMetricFamily(
                "peakend_quarantined_events",
                "Events a projection failed on, quarantined and not yet resolved.",
            ),
            GaugeMetricFamily(
                "peakend_clv_last_fit",
                "1 for the outcome (succeeded, failed) of the latest lifetime-value fit, "
                "0 for the other.",
                labels=["outcome"],
            ),
            GaugeMetricFamily(
                "peakend_clv_last_fit_timestamp_seconds",
                "Unix time the latest lifetime-value fit ended.",
            ),
        )

    def _read(self, source: Callable[[], T]) -> T | None:
        try:
            return source()
        except Exception as error:
            # Debug only: during an outage every scrape fails the same way, and health and
            # the error counter already say so.
            log.debug("a metric source failed: %s", error)
            self.metrics.database_error("reads", error)
            return None


# -- the scrape-time sources of the platform ------------------------------------------


def last_clv_fit(store: ReadModelStore) -> ClvFit | None:
    """The latest lifetime-value fit attempt (asked for, or the periodic refit)."""
    outcome = analytics.last_fit_outcome(store)
    if outcome is None:
        return None
    return ClvFit(
        "succeeded" if outcome["status"] == "ok" else "failed",
        datetime.fromisoformat(outcome["at"]),
    )
