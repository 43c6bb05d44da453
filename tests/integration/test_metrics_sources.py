"""The gauges Prometheus reads at scrape time, against a real database: the projection
lag, the quarantine and the last lifetime-value fit come from the store, never a cache."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client import generate_latest

from domain.touchpoints import parse_touchpoint
from infra.bootstrap import Platform, bootstrap
from infra.settings import Settings
from streams.projector import follow, head
from tests.builders import envelope
from tests.metrics_text import families, value


@pytest.fixture
def stopped(fresh_database: Callable[[], str]) -> Iterator[Platform]:
    """A platform whose projector does not run, so what is recorded stays unprojected."""
    with bootstrap(Settings(database_url=fresh_database()), mode="none", start=False) as made:
        yield made


def test_the_lag_gauge_counts_what_is_recorded_and_not_yet_projected(stopped: Platform) -> None:
    stopped.records.record([parse_touchpoint(envelope()) for _ in range(4)])
    recorded = head(stopped.records)  # notifications: a new customer's creation included
    assert recorded >= 4
    before = families(generate_latest(stopped.metrics.registry).decode())
    follow(stopped.records, stopped.store, batch_size=recorded)
    after = families(generate_latest(stopped.metrics.registry).decode())
    assert value(before, "peakend_projection_lag") == recorded
    assert value(after, "peakend_projection_lag") == 0


def test_the_quarantine_gauge_counts_unresolved_events(stopped: Platform) -> None:
    found = families(generate_latest(stopped.metrics.registry).decode())
    assert value(found, "peakend_quarantined_events") == 0
    with stopped.store.connection() as conn, conn.cursor() as cur:
        stream = "00000000-0000-0000-0000-000000000001"
        cur.execute(
            "INSERT INTO rm_quarantine (projection, key, event_id, customer_id, originator_id,"
            " originator_version, error, resolved_at) VALUES"
            " ('customer', 'C-1', 'tp-1', 'C-1', %s, 2, 'ValueError: x', NULL),"
            " ('customer', 'C-1', 'tp-3', 'C-1', %s, 3, NULL, NULL),"
            " ('journey', 'J-2', 'tp-2', 'C-2', %s, 2, 'ValueError: y', now())",
            (stream, stream, stream),
        )
    found = families(generate_latest(stopped.metrics.registry).decode())
    assert value(found, "peakend_quarantined_events") == 2


def test_the_clv_gauges_show_the_latest_fit_attempt(stopped: Platform) -> None:
    fitted_at = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)
    with stopped.store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO clv_fit_outcome (at, ok, as_of, message, model_version)"
            " VALUES (%s, false, %s, 'did not converge', NULL)",
            (fitted_at, fitted_at),
        )
    found = families(generate_latest(stopped.metrics.registry).decode())
    assert value(found, "peakend_clv_last_fit", outcome="succeeded") == 0
    assert value(found, "peakend_clv_last_fit", outcome="failed") == 1
    assert value(found, "peakend_clv_last_fit_timestamp_seconds") == fitted_at.timestamp()
