"""``peakend api --mode cluster``: HTTP ingest answers 202 only once Kafka has the
touchpoints (acks=all); a worker records and projects them (resolving their customer
then: the 202 cannot name it); the API reads them back by the source's customer id."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from infra.bootstrap import Platform, bootstrap
from infra.broker import LocalBroker
from infra.kafka import create_topics
from infra.settings import Settings
from tests.builders import envelope
from tests.conftest import Served, customer_of

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster_settings(broker: str, fresh_database: Callable[[], str]) -> Settings:
    settings = Settings(
        database_url=fresh_database(),
        kafka_bootstrap=broker,
        kafka_topic_prefix=f"api{uuid.uuid4().hex[:8]}",
        kafka_partitions=4,
    )
    create_topics(settings)
    return settings


@pytest.fixture
def worker(cluster_settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "PEAKEND_DATABASE_URL": str(cluster_settings.database_url),
        "PEAKEND_KAFKA_BOOTSTRAP": cluster_settings.kafka_bootstrap,
        "PEAKEND_KAFKA_TOPIC_PREFIX": cluster_settings.kafka_topic_prefix,
        "PEAKEND_KAFKA_PARTITIONS": "4",
    }
    with open(tmp_path / "worker.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "worker"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def cluster_platform(cluster_settings: Settings) -> Iterator[Platform]:
    with bootstrap(cluster_settings, mode="cluster") as platform:
        yield platform


def eventually(check: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("not visible in time")
        time.sleep(0.25)


def test_http_ingest_in_cluster_mode_reaches_the_projections_through_kafka(
    cluster_platform: Platform,
    worker: subprocess.Popen[bytes],
    serve: Callable[[Platform], Served],
) -> None:
    served = serve(cluster_platform)
    customer = f"C-{uuid.uuid4().hex[:8]}"
    batch = [envelope(customer) for _ in range(3)]
    with served.client(timeout=30) as client:
        accepted = client.post("/v1/touchpoints", json=batch)
        assert accepted.status_code == 202, accepted.text
        body = accepted.json()
        # Acknowledged by Kafka; whether one is a duplicate, and which customer answers
        # for it, are for the workers to find out.
        assert [r["duplicate"] for r in body["recorded"]] == [None, None, None]
        assert [r["outcome"] for r in body["recorded"]] == ["accepted"] * 3
        assert [r["customer_id"] for r in body["recorded"]] == [None, None, None]

        def projected() -> bool:
            found = client.get(f"/v1/customers/{customer}")
            return found.status_code == 200 and found.json()["touchpoints_total"] == 3

        eventually(projected)
        # Read by the source's id, answered by the customer the worker resolved it to.
        answer = client.get(f"/v1/customers/{customer}").json()
        assert answer["customer_id"] == customer_of(cluster_platform, customer)
        assert answer["customer_id"].startswith("cus_")
        assert [(i["kind"], i["value"]) for i in answer["identifiers"]] == [("id", customer)]
        assert answer["merges"] == []
        again = client.post("/v1/touchpoints", json=batch[0])  # a re-send: no effect
        assert again.status_code == 202
        eventually(lambda: cluster_platform.driver.lag() == 0)
        time.sleep(1.0)
        assert client.get(f"/v1/customers/{customer}").json()["touchpoints_total"] == 3
        timeline = client.get(f"/v1/customers/{customer}/timeline").json()
        assert timeline["total"] == 3
        assert timeline["customer_id"] == answer["customer_id"]


def test_invalid_input_in_cluster_mode_is_refused_before_kafka(
    cluster_platform: Platform,
    serve: Callable[[Platform], Served],
) -> None:
    served = serve(cluster_platform)
    base = served.url
    refused = httpx.post(
        f"{base}/v1/touchpoints", headers=served.headers, json={**envelope("C-x"), "emotion": 7}
    )
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "emotion"


def test_ingest_answers_503_when_kafka_stops_acknowledging(
    fresh_database: Callable[[], str],
    serve: Callable[[Platform], Served],
) -> None:
    with LocalBroker() as lonely:
        settings = Settings(
            database_url=fresh_database(),
            kafka_bootstrap=lonely.bootstrap,
            kafka_topic_prefix=f"gone{uuid.uuid4().hex[:6]}",
            kafka_partitions=1,
            kafka_delivery_timeout_ms=3000,
        )
        create_topics(settings)
        with bootstrap(settings, mode="cluster") as platform:
            served = serve(platform)
            base = served.url
            assert (
                httpx.post(
                    f"{base}/v1/touchpoints",
                    headers=served.headers,
                    json=envelope("C-1"),
                    timeout=30,
                ).status_code
                == 202
            )
            lonely.stop()
            refused = httpx.post(
                f"{base}/v1/touchpoints", headers=served.headers, json=envelope("C-2"), timeout=30
            )
    assert refused.status_code == 503
    assert "retry" in refused.json()["detail"]
