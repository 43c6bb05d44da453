"""In cluster mode the change feed is also published to ``<prefix>.changes``: each
change once the broker acknowledged it, keyed by customer, in feed order."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from domain.touchpoints import parse_touchpoint
from infra.bootstrap import Platform
from infra.kafka import Topics, create_topics
from infra.settings import Settings
from projections import maintained
from streams.relay import relay_changes
from tests.builders import purchase, survey_answer
from tests.integration.test_projections import record


def read_all(broker: str, topic: str, expected: int) -> list[Any]:
    """Every message of a new topic, from the start of each partition, once ``expected``
    are there (no consumer group: kafka-python's is slow to join on Tansu; and Tansu's
    end offsets count record batches, not records, so they cannot say where to stop)."""
    consumer = KafkaConsumer(bootstrap_servers=broker, group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        read: list[Any] = []
        deadline = time.monotonic() + 30
        while len(read) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                read.extend(batch)
        time.sleep(0.5)  # and nothing more: no change sent twice
        for batch in consumer.poll(timeout_ms=500).values():
            read.extend(batch)
        return read
    finally:
        consumer.close()


def test_every_change_reaches_the_changes_topic_once_in_order(
    platform: Platform, broker: str
) -> None:
    topics = Topics.named(f"t{uuid.uuid4().hex[:10]}")
    create_topics(Settings(kafka_bootstrap=broker, kafka_topic_prefix=topics.changes.split(".")[0]))
    now = datetime.now(UTC)
    record(platform, [parse_touchpoint(purchase(f"K{i}", "9.00", now)) for i in range(3)])
    producer = KafkaProducer(bootstrap_servers=broker, acks="all")
    try:
        sent = relay_changes(platform.store, producer, topics.changes, batch_size=5)
        sent += relay_changes(platform.store, producer, topics.changes, batch_size=5)
        sent += relay_changes(platform.store, producer, topics.changes, batch_size=5)
        assert relay_changes(platform.store, producer, topics.changes, batch_size=5) == 0
    finally:
        producer.close(5)
    feed = maintained.change_page(platform.store, after=0, limit=100)
    assert sent == len(feed) == 12  # four first facts of three customers
    read = read_all(broker, topics.changes, len(feed))
    published = [json.loads(m.value) for m in read]
    assert sorted(p["position"] for p in published) == [c["position"] for c in feed]
    for message in read:
        body = json.loads(message.value)
        assert body["schema"] == 1
        assert message.key == body["customer_id"].encode()
    by_customer: dict[str, list[int]] = {}
    for body in published:
        by_customer.setdefault(body["customer_id"], []).append(body["position"])
    assert all(ps == sorted(ps) for ps in by_customer.values())  # one partition each
    assert {datetime.fromisoformat(p["at"]) for p in published} <= {
        c["at"] for c in feed
    } and now - timedelta(minutes=5) < min(c["at"] for c in feed)


def test_alert_transitions_reach_the_alerts_topic_keyed_by_alert(
    platform: Platform, broker: str
) -> None:
    topics = Topics.named(f"t{uuid.uuid4().hex[:10]}")
    create_topics(Settings(kafka_bootstrap=broker, kafka_topic_prefix=topics.alerts.split(".")[0]))
    now = datetime.now(UTC) - timedelta(minutes=1)
    record(platform, [parse_touchpoint(survey_answer(f"A{i}", "nps", 1, now)) for i in range(2)])
    producer = KafkaProducer(bootstrap_servers=broker, acks="all")
    try:
        while relay_changes(
            platform.store, producer, topics.changes, batch_size=4, alerts_topic=topics.alerts
        ):
            pass
    finally:
        producer.close(5)
    opened = maintained.change_page(platform.store, after=0, limit=100, kinds=["alert_opened"])
    assert len(opened) == 2
    read = read_all(broker, topics.alerts, 2)
    assert sorted(m.key for m in read) == sorted(c["subject"].encode() for c in opened)
    assert {json.loads(m.value)["kind"] for m in read} == {"alert_opened"}
