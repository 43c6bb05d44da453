"""The dead-letter topic keeps raw payloads for ``dead_letter_retention_hours`` only.

Kafka cannot delete one message, so retention is the only removal a dead letter gets:
``create_topics`` sets it on a new topic and re-sets it on an existing one. On the local
Tansu broker the configuration is stored and described back (as a default, not a
modified config: hence ``config_filter="all"``), but Tansu's in-memory storage does not
enforce it (a message was still there 8 s past a 1 s ``retention.ms``), so these tests
check what the broker holds, not that a message disappears: that is Kafka's part.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from infra.kafka import Topics, create_topics, dead_letter_configs, topic_configs
from infra.settings import Settings


@pytest.fixture
def admin(broker: str) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=broker, client_id="test-retention")
    yield client
    client.close()


def cluster_settings(broker: str, prefix: str, retention_hours: float = 72) -> Settings:
    return Settings(
        kafka_bootstrap=broker,
        kafka_topic_prefix=prefix,
        kafka_partitions=2,
        dead_letter_retention_hours=retention_hours,
    )


def test_the_dead_letter_configs_delete_after_the_retention_in_hour_segments() -> None:
    configs = dead_letter_configs(Settings(dead_letter_retention_hours=72))
    assert configs == {
        "cleanup.policy": "delete",
        "retention.ms": str(72 * 3_600_000),
        "segment.ms": "3600000",
    }
    short = dead_letter_configs(Settings(dead_letter_retention_hours=0.25))
    assert (short["retention.ms"], short["segment.ms"]) == ("900000", "900000")


def test_the_dead_letter_topic_is_created_with_its_retention(
    broker: str, admin: KafkaAdminClient
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = cluster_settings(broker, prefix, retention_hours=6)
    topics = Topics.named(prefix)

    outcome = create_topics(settings)

    assert outcome == dict.fromkeys(topics.all(), "created")
    held = topic_configs(admin, topics.dead_letters)
    assert held["retention.ms"] == str(6 * 3_600_000)
    assert held["segment.ms"] == "3600000" and held["cleanup.policy"] == "delete"
    # The other topics keep the broker's defaults: their messages are the platform's own.
    assert topic_configs(admin, topics.touchpoints).get("retention.ms") != str(6 * 3_600_000)


def test_an_existing_dead_letter_topic_is_set_to_the_configured_retention(
    broker: str, admin: KafkaAdminClient
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    topics = Topics.named(prefix)
    create_topics(cluster_settings(broker, prefix, retention_hours=72))

    outcome = create_topics(cluster_settings(broker, prefix, retention_hours=12))

    assert outcome[topics.dead_letters] == "exists, retention set"
    assert {outcome[t] for t in topics.all() if t != topics.dead_letters} == {"exists"}
    assert topic_configs(admin, topics.dead_letters)["retention.ms"] == str(12 * 3_600_000)
    # Run again with the same settings: nothing to change.
    again = create_topics(cluster_settings(broker, prefix, retention_hours=12))
    assert again[topics.dead_letters] == "exists"


def test_a_dead_letter_topic_made_elsewhere_without_a_retention_gets_one(
    broker: str, admin: KafkaAdminClient
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    topics = Topics.named(prefix)
    admin.create_topics({topics.dead_letters: {"num_partitions": 1, "replication_factor": 1}})
    assert topic_configs(admin, topics.dead_letters).get("retention.ms") != str(72 * 3_600_000)

    outcome = create_topics(cluster_settings(broker, prefix))

    assert outcome[topics.dead_letters] == "exists, retention set"
    held = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topics.dead_letters)], config_filter="all"
    )["topic"][topics.dead_letters]
    assert held["retention.ms"]["value"] == str(72 * 3_600_000)
