"""The platform's Prometheus instruments, without a database: registries are per
platform, scrape-time sources that fail leave their gauge out, and the ingest middleware
counts every answer, an unexpected error included."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import psycopg2
from fastapi import FastAPI
from prometheus_client import generate_latest

from api.metrics import CountRequests
from domain.idempotency import Outcome, Recorded
from infra.metrics import ClvFit, Metrics, ScrapeSources, ingest_request_outcome
from tests.metrics_text import families, value


def test_two_platforms_metrics_never_share_a_count() -> None:
    first, second = Metrics(), Metrics()
    first.count_ingest_request(202)
    first.count_touchpoints([Recorded("tp-1", "C-1", Outcome.RECORDED)])
    first.record_batch_seconds.observe(0.01)

    one = families(generate_latest(first.registry).decode())
    other = families(generate_latest(second.registry).decode())
    assert value(one, "peakend_ingest_requests_total", outcome="accepted") == 1
    assert value(other, "peakend_ingest_requests_total", outcome="accepted") == 0
    assert value(one, "peakend_ingest_touchpoints_total", outcome="recorded") == 1
    assert value(other, "peakend_ingest_touchpoints_total", outcome="recorded") == 0
    assert value(one, "peakend_record_batch_seconds_count") == 1
    assert value(other, "peakend_record_batch_seconds_count") == 0


def test_every_known_outcome_and_component_is_shown_at_zero_before_it_happens() -> None:
    found = families(generate_latest(Metrics().registry).decode())
    for outcome in ("accepted", "refused_409", "refused_415", "unavailable_503", "error_500"):
        assert value(found, "peakend_ingest_requests_total", outcome=outcome) == 0
    for touchpoint in Outcome:
        assert value(found, "peakend_ingest_touchpoints_total", outcome=touchpoint.value) == 0
    for component in ("recorder", "projector", "reads"):
        assert value(found, "peakend_database_errors_total", component=component) == 0


def test_an_ingest_answer_is_labelled_by_its_status_class_and_code() -> None:
    assert [ingest_request_outcome(s) for s in (202, 400, 413, 422, 503, 500, 502)] == [
        "accepted",
        "refused_400",
        "refused_413",
        "refused_422",
        "unavailable_503",
        "error_500",
        "error_502",
    ]


def test_scrape_time_gauges_read_their_sources_at_each_scrape() -> None:
    metrics = Metrics()
    lag = [3]
    fitted = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    metrics.read_at_scrape(
        ScrapeSources(
            projection_lag=lambda: lag[0],
            quarantined_events=lambda: 2,
            last_clv_fit=lambda: ClvFit("failed", fitted),
        )
    )
    first = families(generate_latest(metrics.registry).decode())
    lag[0] = 0
    second = families(generate_latest(metrics.registry).decode())

    assert value(first, "peakend_projection_lag") == 3
    assert value(second, "peakend_projection_lag") == 0
    assert value(second, "peakend_quarantined_events") == 2
    assert value(second, "peakend_clv_last_fit", outcome="failed") == 1
    assert value(second, "peakend_clv_last_fit", outcome="succeeded") == 0
    assert value(second, "peakend_clv_last_fit_timestamp_seconds") == fitted.timestamp()


def test_a_failing_source_leaves_its_gauge_out_and_counts_a_read_error() -> None:
    def database_down() -> int:
        raise psycopg2.OperationalError("connection refused")

    metrics = Metrics()
    metrics.read_at_scrape(
        ScrapeSources(
            projection_lag=database_down,
            quarantined_events=lambda: 0,
            last_clv_fit=lambda: None,
        )
    )
    found = families(generate_latest(metrics.registry).decode())
    assert value(found, "peakend_projection_lag") is None
    assert value(found, "peakend_quarantined_events") == 0
    assert value(found, "peakend_clv_last_fit", outcome="succeeded") is None
    assert value(found, "peakend_database_errors_total", component="reads") == 1


def test_an_error_of_our_own_is_not_counted_as_a_database_error() -> None:
    metrics = Metrics()
    metrics.database_error("recorder", ValueError("a bug"))
    metrics.database_error("recorder", psycopg2.errors.AdminShutdown("terminating"))
    found = families(generate_latest(metrics.registry).decode())
    assert value(found, "peakend_database_errors_total", component="recorder") == 1


def test_the_middleware_counts_ingest_answers_and_an_unexpected_error_as_500() -> None:
    app = FastAPI()
    failing = [False]

    @app.post("/v1/touchpoints", status_code=202)
    def ingest() -> dict[str, str]:
        if failing[0]:
            raise RuntimeError("a bug")
        return {}

    @app.get("/v1/customers/x")
    def read() -> dict[str, str]:
        raise psycopg2.OperationalError("server closed the connection")

    metrics = Metrics()
    app.add_middleware(CountRequests, metrics=metrics)

    async def requests() -> list[int]:
        # In process, over ASGI: an unexpected error becomes Starlette's own 500 answer.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            statuses = [(await client.post("/v1/touchpoints")).status_code]
            statuses.append((await client.get("/v1/touchpoints")).status_code)  # not ingest
            failing[0] = True
            statuses.append((await client.post("/v1/touchpoints")).status_code)
            statuses.append((await client.get("/v1/customers/x")).status_code)
            return statuses

    assert asyncio.run(requests()) == [202, 405, 500, 500]

    found = families(generate_latest(metrics.registry).decode())
    assert value(found, "peakend_ingest_requests_total", outcome="accepted") == 1
    assert value(found, "peakend_ingest_requests_total", outcome="error_500") == 1
    assert value(found, "peakend_ingest_requests_total", outcome="refused_405") is None
    assert value(found, "peakend_database_errors_total", component="reads") == 1
