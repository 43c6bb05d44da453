"""The composition root: the API, the CLI and the tests all build the platform here."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg2.pool

from infra.database import embedded_server_url, eventsourcing_env
from infra.settings import Settings
from projections.registry import PROJECTIONS
from projections.store import ReadModelStore
from streams.embedded import EmbeddedDriver
from streams.recorder import CustomerRecords

log = logging.getLogger(__name__)


@dataclass
class Platform:
    settings: Settings
    database_url: str
    records: CustomerRecords
    store: ReadModelStore
    driver: EmbeddedDriver

    def close(self) -> None:
        """Stop the driver and close every connection; safe to call twice."""
        self.driver.stop()
        self.records.close()
        if not self.store.pool.closed:
            self.store.pool.closeall()

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    return embedded_server_url(settings.data_dir)


def bootstrap(settings: Settings | None = None, *, start: bool = True) -> Platform:
    """Build the embedded-mode platform: event store, read-model store and the driver
    (started unless ``start`` is False: replay and admin commands drive it themselves)."""
    settings = settings or Settings()
    url = database_url(settings)
    records = CustomerRecords(env={
        **eventsourcing_env(url),
        "AGGREGATE_CACHE_MAXSIZE": str(settings.aggregate_cache_size),
        # The recorder is the only writer of its customers' streams in this process; a
        # write from elsewhere shows up as a version conflict, and the batch is retried on
        # fresh aggregates, so the cache need not re-read the store before every use.
        "AGGREGATE_CACHE_FASTFORWARD": "n",
        "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
    })
    pool = psycopg2.pool.ThreadedConnectionPool(1, 16, url)
    store = ReadModelStore(pool, PROJECTIONS)
    store.create_tables()
    driver = EmbeddedDriver(
        records,
        store,
        record_batch_size=settings.record_batch_size,
        record_linger_s=settings.record_linger_ms / 1000,
        project_batch_size=settings.project_batch_size,
        project_poll_s=settings.project_poll_ms / 1000,
    )
    if start:
        driver.start()
    return Platform(settings, url, records, store, driver)
