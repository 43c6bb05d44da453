"""The composition root: the API, the CLI, the workers and the tests all build the
platform here."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Literal, Protocol

import psycopg2

from domain import value
from domain.idempotency import Recorded
from domain.touchpoints import TouchpointIn
from infra import audit, rejects, scheduler, webhooks
from infra.database import BoundedPool, embedded_server_url, eventsourcing_env
from infra.keys import KeyStore
from infra.metrics import Metrics, ScrapeSources, last_clv_fit
from infra.settings import Settings
from projections import analytics, maintained
from projections.alerts import AlertRules, with_rules
from projections.base import Projection
from projections.measures import Rules
from projections.registry import PROJECTIONS
from projections.store import ReadModelStore
from streams.embedded import EmbeddedDriver
from streams.projector import head, replay
from streams.recorder import CustomerRecords
from streams.relay import RELAY
from streams.sealing import PersonalFields, Sealing

log = logging.getLogger(__name__)

Mode = Literal["embedded", "cluster", "none"]
SCHEMA_LOCK = 0x7065616B656E64  # "peakend": the advisory lock key of schema set-up


class Ingest(Protocol):
    """Where accepted touchpoints go: the embedded driver, or Kafka in cluster mode."""

    projector_error: str | None

    def submit(self, touchpoints: Sequence[TouchpointIn]) -> Future[list[Recorded]]: ...

    def lag(self) -> int: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class _CountedIngest:
    """Cluster-mode ingest that counts the touchpoints Kafka accepted: the API knows no
    more than that (the workers count what they record)."""

    def __init__(self, ingest: Ingest, metrics: Metrics) -> None:
        self.ingest, self.metrics = ingest, metrics

    @property
    def projector_error(self) -> str | None:
        return self.ingest.projector_error

    @projector_error.setter
    def projector_error(self, value: str | None) -> None:
        self.ingest.projector_error = value

    def submit(self, touchpoints: Sequence[TouchpointIn]) -> Future[list[Recorded]]:
        return self.metrics.count_when_resolved(self.ingest.submit(touchpoints))

    def lag(self) -> int:
        return self.ingest.lag()

    def start(self) -> None:
        self.ingest.start()

    def stop(self) -> None:
        self.ingest.stop()


@dataclass
class Platform:
    settings: Settings
    database_url: str
    records: CustomerRecords
    store: ReadModelStore
    driver: Ingest
    metrics: Metrics = field(default_factory=Metrics)
    pools: tuple[BoundedPool, ...] = ()  # every read-model pool, to close
    keys: KeyStore = field(init=False)

    def __post_init__(self) -> None:
        self.keys = KeyStore(self.store, cache_seconds=self.settings.key_cache_seconds)

    def close(self) -> None:
        """Stop the driver and close every connection; safe to call twice."""
        self.driver.stop()
        self.records.close()
        for pool in (self.store.pool, *self.pools):
            if not pool.closed:
                pool.closeall()

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    return embedded_server_url(settings.data_dir)


@contextmanager
def schema_lock(url: str) -> Iterator[None]:
    """Serialise schema set-up across processes: workers, relays and APIs started at once
    on a fresh database would otherwise race to create the same tables and types."""
    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
        yield
    finally:
        conn.close()  # closing the session releases the lock


def tier_cutoffs(settings: Settings) -> value.TierCutoffs:
    return value.TierCutoffs(
        vip=settings.tier_vip, major=settings.tier_major, ordinary=settings.tier_ordinary
    )


def reporting_money(settings: Settings) -> analytics.Money:
    """How this platform reports money: PEAKEND_CURRENCY (explicit when set in the
    environment, not the default), PEAKEND_EXCHANGE_RATES, PEAKEND_REPORTING_TIMEZONE."""
    return analytics.Money(
        currency=settings.currency,
        explicit="currency" in settings.model_fields_set,
        rates=settings.exchange_rates,
        zone=settings.reporting_zone,
    )


def measure_rules(settings: Settings) -> Rules:
    """The rules of the maintained measures, from the settings."""
    s = settings
    return Rules(
        value_window=timedelta(days=s.value_window_days),
        rfm_window=timedelta(days=s.rfm_window_days),
        loyalty_window=timedelta(days=s.loyalty_window_days),
        loyalty_nps_high=s.loyalty_nps_high,
        loyalty_csat_high=s.loyalty_csat_high,
        loyalty_repeat_purchases=s.loyalty_repeat_purchases,
        client_orders=s.lifecycle_client_orders,
        advocate_orders=s.lifecycle_advocate_orders,
        lapse_factor=s.lifecycle_lapse_factor,
        lapse_floor=timedelta(days=s.lifecycle_lapse_floor_days),
        lapse_after=timedelta(days=s.lifecycle_lapse_after_days),
        clv_horizon=s.clv_horizon,
        clv_margin=s.clv_margin,
        clv_discount_rate=s.clv_discount_rate,
        p_alive_at_risk=s.p_alive_at_risk,
        zone=s.reporting_zone,
        rates=s.exchange_rates,
        end_steps=s.end_steps,
        inactivity_gap=s.inactivity_gap,
        alerts=with_rules(AlertRules(), s.alert_rules),
    )


def _pool(settings: Settings, url: str, size: int) -> BoundedPool:
    return BoundedPool(
        size,
        url,
        timeout=settings.pool_timeout_seconds,
        connect_timeout=round(settings.database_timeout_seconds),
    )


def _stores(
    settings: Settings, url: str, projections: Sequence[Projection], metrics: Metrics
) -> tuple[CustomerRecords, ReadModelStore]:
    records = CustomerRecords(
        env={
            **eventsourcing_env(url, timeout=settings.database_timeout_seconds),
            "AGGREGATE_CACHE_MAXSIZE": str(settings.aggregate_cache_size),
            # A customer's touchpoints reach one recorder at a time (one process embedded, one
            # partition owner in cluster mode); a write from elsewhere shows up as a version
            # conflict and the batch is retried on fresh aggregates, so the cache need not
            # re-read the store before every use.
            "AGGREGATE_CACHE_FASTFORWARD": "n",
            "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
            "APPLICATION_RECORDER_TOPIC": "streams.recorder:ColumnarRecorder",
        },
        rules=settings.identity_rules,
        identity_secret=settings.identity_secret_bytes,  # identifiers are digested under it
        sealing=Sealing(
            settings.master_key_bytes,
            PersonalFields.of(
                settings.personal_payload_fields, settings.personal_additional_fields
            ),
            cache_seconds=settings.key_cache_seconds,
        ),
    )
    store = ReadModelStore(
        _pool(settings, url, settings.read_pool_size),
        projections,
        on_pool_wait=metrics.pool_wait_seconds.observe,
        measure_rules=measure_rules(settings) if projections is PROJECTIONS else None,
    )
    if indexed := records.index_touchpoints():
        log.warning("indexed %d touchpoints recorded before the touchpoint index", indexed)
    if read := records.index_identities():
        log.warning("built the identity index from %d stored events", read)
    new = store.create_tables()
    if store.measure_rules is not None and maintained.create_tables(store):
        new.append("measures")
    analytics.create_model_table(store)
    analytics.create_view_table(store)
    with store.connection() as conn, conn.cursor() as cur:
        scheduler.create_tables(cur)
    KeyStore(store, cache_seconds=0).create_table()
    audit.create_table(store)
    rejects.create_table(store)
    webhooks.create_tables(store)
    if new and head(records) > 0:
        # A projection added to an existing store has missed the events before it: all
        # are rebuilt from the event store (atomically swapped in) before anything runs.
        log.warning(
            "new projections %s: rebuilding every projection from %d events",
            ", ".join(new),
            head(records),
        )
        replay(records, store, batch_size=settings.project_batch_size)
    return records, store


def bootstrap(
    settings: Settings | None = None,
    *,
    mode: Mode = "embedded",
    start: bool = True,
    projections: Sequence[Projection] = PROJECTIONS,
) -> Platform:
    """Build the platform. ``embedded``: ingest records in-process and a thread projects;
    ``cluster``: ingest produces to Kafka, workers do the rest; ``none``: stores only
    (workers, replay, admin commands drive them themselves). Drivers start unless
    ``start`` is False. ``projections``: the registry's unless a test brings its own."""
    settings = settings or Settings()
    url = database_url(settings)
    metrics = Metrics()
    with schema_lock(url):
        records, store = _stores(settings, url, projections, metrics)
    driver: Ingest
    pools: tuple[BoundedPool, ...] = ()
    if mode == "cluster":
        from infra.kafka import KafkaIngest, TouchpointProducer

        driver = KafkaIngest(
            TouchpointProducer.from_settings(settings),
            lag=lambda: max(0, head(records) - store.position(RELAY)),
        )
        driver = _CountedIngest(driver, metrics)
    else:
        # The projector has connections of its own: readers never starve it.
        pools = (_pool(settings, url, settings.project_pool_size),)
        driver = EmbeddedDriver(
            records,
            ReadModelStore(pools[0], projections, measure_rules=store.measure_rules),
            record_batch_size=settings.record_batch_size,
            record_linger_s=settings.record_linger_ms / 1000,
            project_batch_size=settings.project_batch_size,
            project_poll_s=settings.project_poll_ms / 1000,
            queue_limit=settings.ingest_queue_limit,
            metrics=metrics,
        )
    metrics.read_at_scrape(
        ScrapeSources(
            projection_lag=driver.lag,
            quarantined_events=store.quarantined_events,
            last_clv_fit=partial(last_clv_fit, store),
        )
    )
    if start and mode != "none":
        driver.start()
    return Platform(settings, url, records, store, driver, metrics, pools)
