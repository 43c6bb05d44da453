"""Cluster-mode API metrics: at 202 the API knows only that Kafka has the touchpoints, and
counts them as ``accepted`` (the workers count what they record)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from infra.bootstrap import bootstrap
from infra.kafka import create_topics
from infra.settings import Settings
from tests.builders import envelope
from tests.conftest import Served
from tests.metrics_text import families, value


def test_the_cluster_api_counts_touchpoints_kafka_accepted(
    broker: str, fresh_database: Callable[[], str], serve: Callable[..., Served]
) -> None:
    settings = Settings(
        database_url=fresh_database(),
        kafka_bootstrap=broker,
        kafka_topic_prefix=f"metrics{uuid.uuid4().hex[:8]}",
        kafka_partitions=2,
    )
    create_topics(settings)
    with (
        bootstrap(settings, mode="cluster") as platform,
        serve(platform).client() as client,
    ):
        answer = client.post("/v1/touchpoints", json=[envelope() for _ in range(3)])
        assert answer.status_code == 202, answer.text
        found = families(client.get("/metrics").text)
    assert value(found, "peakend_ingest_requests_total", outcome="accepted") == 1
    assert value(found, "peakend_ingest_touchpoints_total", outcome="accepted") == 3
    assert value(found, "peakend_ingest_touchpoints_total", outcome="recorded") == 0
    assert value(found, "peakend_projection_lag") == 0  # no worker runs: nothing is recorded yet
