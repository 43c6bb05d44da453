"""Kafka: topic names, topic creation, and the producer client for touchpoint systems.

Messages are JSON with a ``schema`` field. Touchpoints are keyed by the identifier the
source knows the customer by, as its keyed digest (``domain.identity.source_key``: a
topic's keys are visible to any reader of it), so one identifier's touchpoints stay in one
partition, in order; every producer of a topic must key under the same identity secret.

The dead-letter topic ``<prefix>.touchpoints.dlq`` holds refused touchpoints with their
original bytes, which may name a customer. Kafka cannot delete one message: a dead letter
is removed by the topic's retention only (``PEAKEND_DEAD_LETTER_RETENTION_HOURS``, set by
``create_topics``, re-set on an existing topic), whole segments at a time, so a message
may outlive the retention by up to a segment's span (an hour at most) and the broker's
retention check. An erasure cannot reach it before then, which is why the default is short.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from domain.idempotency import Outcome, Recorded
from domain.identity import source_key
from domain.touchpoints import (
    EARLIEST_OCCURRED_AT,
    InvalidTouchpoint,
    TouchpointIn,
    parse_touchpoint,
)
from infra.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topics:
    touchpoints: str
    dead_letters: str
    customer_events: str
    alerts: str
    changes: str

    @classmethod
    def named(cls, prefix: str) -> Topics:
        return cls(
            touchpoints=f"{prefix}.touchpoints",
            dead_letters=f"{prefix}.touchpoints.dlq",
            customer_events=f"{prefix}.customer-events",
            alerts=f"{prefix}.alerts",
            changes=f"{prefix}.changes",
        )

    def all(self) -> tuple[str, ...]:
        return (
            self.touchpoints,
            self.dead_letters,
            self.customer_events,
            self.alerts,
            self.changes,
        )


def dead_letter_configs(settings: Settings) -> dict[str, str]:
    """The dead-letter topic's configuration: time-based deletion after
    ``dead_letter_retention_hours``, in segments of at most an hour (Kafka deletes whole
    segments, once the newest message in one is past the retention)."""
    retention_ms = max(1, round(settings.dead_letter_retention_hours * 3_600_000))
    return {
        "cleanup.policy": "delete",
        "retention.ms": str(retention_ms),
        "segment.ms": str(min(retention_ms, 3_600_000)),
    }


def create_topics(settings: Settings) -> dict[str, str]:
    """Create the platform's topics with the configured partitions and replication, the
    dead-letter topic with its retention (``dead_letter_configs``); returns what happened
    to each: created, exists, or "exists, retention set" when an existing dead-letter
    topic's configuration was changed to match the settings."""
    topics = Topics.named(settings.kafka_topic_prefix)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="peakend-admin")
    outcome = {}
    try:
        for name in topics.all():
            configs = dead_letter_configs(settings) if name == topics.dead_letters else {}
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            name,
                            settings.kafka_partitions,
                            settings.kafka_replication,
                            topic_configs=configs,
                        )
                    ]
                )
                outcome[name] = "created"
            except TopicAlreadyExistsError:
                outcome[name] = "exists"
                if configs and _align_configs(admin, name, configs):
                    outcome[name] = "exists, retention set"
    finally:
        admin.close()
    return outcome


def topic_configs(admin: KafkaAdminClient, topic: str) -> dict[str, str | None]:
    """A topic's configuration as the broker reports it (defaults included)."""
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
    )
    entries: Mapping[str, Mapping[str, Any]] = described.get("topic", {}).get(topic, {})
    return {key: entry.get("value") for key, entry in entries.items()}


def _align_configs(admin: KafkaAdminClient, topic: str, wanted: Mapping[str, str]) -> bool:
    """Set the configs of ``topic`` that differ from ``wanted`` (only those keys: an
    incremental alter where the broker has it); True if any did."""
    current = topic_configs(admin, topic)
    differing = {key: value for key, value in wanted.items() if current.get(key) != value}
    if not differing:
        return False
    # raise_on_unknown=False: a broker may list only the configs set on the topic, not
    # every one it accepts (Tansu does); the alter's own answer says if one is refused.
    answer = admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, configs=differing)],
        raise_on_unknown=False,
    )
    result = answer.get("topic", {}).get(topic)
    if result != "OK":
        raise RuntimeError(f"{topic}: the broker refused {sorted(differing)}: {result}")
    log.info("%s: set %s", topic, ", ".join(f"{k}={v}" for k, v in sorted(differing.items())))
    return True


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class TouchpointProducer:
    """Publish touchpoints to ``<prefix>.touchpoints`` from a touchpoint system.

    ``send`` validates each envelope first (an invalid one raises ``InvalidTouchpoint``
    naming its fields, and nothing of the call is sent), keys it by the digest of its
    strongest identifier under ``identity_secret`` (the setting), and returns one future
    per envelope that resolves once the broker has acknowledged it (``acks=all``) or
    fails with the reason. The underlying kafka-python producer batches (``linger_ms``)
    and retries transient errors itself.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        identity_secret: bytes,
        topic: str = Topics.named("peakend").touchpoints,
        linger_ms: int = 5,
        retries: int = 10,
        max_future_skew: timedelta = timedelta(minutes=5),
        earliest: datetime = EARLIEST_OCCURRED_AT,
        phone_region: str | None = None,
        identifier_kinds: Sequence[str] = (),
        **kafka_options: Any,
    ) -> None:
        self.topic = topic
        self._identity_secret = identity_secret
        self.max_future_skew = max_future_skew
        self.earliest = earliest
        self.phone_region = phone_region
        self.identifier_kinds = tuple(identifier_kinds)
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=linger_ms,
            retries=retries,
            # One in flight per connection: a retried batch cannot overtake the next one,
            # so a customer's touchpoints keep their order in the partition.
            max_in_flight_requests_per_connection=1,
            **kafka_options,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> TouchpointProducer:
        return cls(
            settings.kafka_bootstrap,
            identity_secret=settings.identity_secret_bytes,
            topic=Topics.named(settings.kafka_topic_prefix).touchpoints,
            linger_ms=settings.kafka_linger_ms,
            max_future_skew=settings.max_future_skew,
            earliest=settings.earliest_occurred_at,
            phone_region=settings.phone_default_region,
            identifier_kinds=settings.identifier_kinds,
            delivery_timeout_ms=settings.kafka_delivery_timeout_ms,
            request_timeout_ms=min(settings.kafka_delivery_timeout_ms // 2, 30_000),
        )

    def send(self, envelopes: Iterable[Mapping[str, Any] | TouchpointIn]) -> list[Future[Any]]:
        """Validate all, then send all; see the class docstring."""
        now = datetime.now(UTC)
        valid = [
            e
            if isinstance(e, TouchpointIn)
            else parse_touchpoint(
                dict(e),
                now=now,
                max_future_skew=self.max_future_skew,
                earliest=self.earliest,
                phone_region=self.phone_region,
                identifier_kinds=self.identifier_kinds,
            )
            for e in envelopes
        ]
        return self.send_valid(valid)

    def send_valid(self, touchpoints: Iterable[TouchpointIn]) -> list[Future[Any]]:
        futures: list[Future[Any]] = []
        for touchpoint in touchpoints:
            key = source_key(touchpoint.customer.present(), self._identity_secret).encode()
            value = _json(touchpoint.model_dump(mode="json", by_alias=True, exclude_none=True))
            acked: Future[Any] = Future()
            sent = self._producer.send(self.topic, key=key, value=value)
            sent.add_callback(acked.set_result)
            sent.add_errback(acked.set_exception)
            futures.append(acked)
        return futures

    def flush(self, timeout: float | None = None) -> None:
        self._producer.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        self._producer.close(timeout)


__all__ = [
    "InvalidTouchpoint",
    "KafkaIngest",
    "Topics",
    "TouchpointProducer",
    "create_topics",
    "dead_letter_configs",
    "topic_configs",
]


class KafkaIngest:
    """Cluster-mode ingest for the API: a request is answered once Kafka has acknowledged
    every touchpoint in it (``acks=all``); the workers record them. Whether one was a
    duplicate is not known yet at that point (``duplicate`` is None)."""

    projector_error: str | None = None

    def __init__(self, producer: TouchpointProducer, lag: Callable[[], int]) -> None:
        self.producer = producer
        self._lag = lag

    def submit(self, touchpoints: Sequence[TouchpointIn]) -> Future[list[Recorded]]:
        done: Future[list[Recorded]] = Future()
        acks = self.producer.send_valid(touchpoints)
        outcomes = [Recorded(t.event_id, None, Outcome.ACCEPTED) for t in touchpoints]
        remaining = [len(acks)]
        lock = threading.Lock()

        def settle(ack: Future[Any]) -> None:
            with lock:
                if done.done():
                    return
                failure = ack.exception()
                if failure is not None:
                    done.set_exception(failure)
                    return
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set_result(outcomes)

        for ack in acks:
            ack.add_done_callback(settle)
        if not acks:
            done.set_result([])
        return done

    def lag(self) -> int:
        return self._lag()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.producer.close(10)
