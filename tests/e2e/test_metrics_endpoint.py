"""``GET /metrics`` over real HTTP: what ingest did shows up in the Prometheus text,
parsed with Prometheus' own parser."""

from __future__ import annotations

from collections.abc import Callable

from infra.bootstrap import Platform
from streams.embedded import EmbeddedDriver
from tests.builders import envelope, new_id
from tests.conftest import Served, embedded
from tests.metrics_text import families, value


def test_metrics_count_ingest_outcomes_batches_and_lag_after_real_requests(
    platform: Platform, serve: Callable[[Platform], Served]
) -> None:
    customer = new_id("C")
    fresh = [envelope(customer) for _ in range(5)]
    with serve(platform).client() as client:
        assert client.post("/v1/touchpoints", json=fresh[:3]).status_code == 202
        for one in fresh[3:]:
            assert client.post("/v1/touchpoints", json=one).status_code == 202
        resent = client.post("/v1/touchpoints", json=fresh[:2])  # two duplicates
        assert resent.status_code == 202 and resent.json()["duplicates"] == 2
        refused = client.post("/v1/touchpoints", json=envelope(customer, type="no_such_type"))
        assert refused.status_code == 422
        conflict = client.post("/v1/touchpoints", json={**fresh[0], "channel": "web"})
        assert conflict.status_code == 409
        assert isinstance(platform.driver, EmbeddedDriver)
        assert embedded(platform).wait_until_projected()
        assert client.get(f"/v1/customers/{customer}").status_code == 200

        scraped = client.get("/metrics")
        schema = client.get("/openapi.json").json()

    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "/metrics" not in schema["paths"]
    found = families(scraped.text)

    def requests(outcome: str) -> float | None:
        return value(found, "peakend_ingest_requests_total", outcome=outcome)

    def touchpoints(outcome: str) -> float | None:
        return value(found, "peakend_ingest_touchpoints_total", outcome=outcome)

    assert (requests("accepted"), requests("refused_422"), requests("refused_409")) == (4, 1, 1)
    assert (requests("refused_400"), requests("unavailable_503"), requests("error_500")) == (
        0,
        0,
        0,
    )
    # The refused request never reached the recorder; the conflicting one did.
    assert (touchpoints("recorded"), touchpoints("duplicate"), touchpoints("conflict")) == (
        5,
        2,
        1,
    )
    assert touchpoints("accepted") == 0  # cluster mode only
    assert value(found, "peakend_projection_lag") == 0
    assert value(found, "peakend_quarantined_events") == 0
    assert (record_batches := value(found, "peakend_record_batch_seconds_count")) is not None
    assert record_batches >= 1
    assert (project_batches := value(found, "peakend_project_batch_seconds_count")) is not None
    assert project_batches >= 1
    assert (pool_waits := value(found, "peakend_pool_wait_seconds_count")) is not None
    assert pool_waits >= 1
    for component in ("recorder", "projector", "reads"):
        assert value(found, "peakend_database_errors_total", component=component) == 0
    # No lifetime-value model fitted yet: the fit gauges are there, without a sample.
    assert "peakend_clv_last_fit" in found
    assert value(found, "peakend_clv_last_fit", outcome="succeeded") is None
    assert customer not in scraped.text  # no customer id in any label


def test_each_platform_serves_only_its_own_counts(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    first, second = make_platform(), make_platform()
    with serve(first).client() as client:
        assert client.post("/v1/touchpoints", json=envelope()).status_code == 202
        mine = families(client.get("/metrics").text)
    with serve(second).client() as client:
        theirs = families(client.get("/metrics").text)
    assert value(mine, "peakend_ingest_requests_total", outcome="accepted") == 1
    assert value(theirs, "peakend_ingest_requests_total", outcome="accepted") == 0
    assert value(theirs, "peakend_ingest_touchpoints_total", outcome="recorded") == 0
