"""Cluster mode: the same recorder and projectors, driven by Faust from Kafka.

    touchpoints topic --record_touchpoints--> event store --relay--> customer-events topic
                              | invalid                                    |
                              v                                  project_customer_events
                        dead-letter topic                                  v
                                                                      read models

Any number of workers share the partitions through the consumer group. Nothing here
relies on Kafka transactions: the recorder is idempotent by ``event_id`` (the Customer
aggregate), the relay tracks its position in PostgreSQL, and the projectors skip what
each document has applied, so redelivery after a crash changes nothing. Offsets are
acknowledged only after a batch is durable; a batch that fails is retried, never acked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar, cast

import faust
import psycopg2.errors
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import EventT
from kafka import KafkaProducer
from prometheus_client import Histogram

from domain.idempotency import Outcome, conflict_error
from domain.touchpoints import (
    InvalidTouchpoint,
    MalformedJson,
    TouchpointIn,
    loads_json,
    parse_touchpoint,
)
from infra.kafka import Topics
from infra.metrics import Metrics
from infra.settings import Settings
from projections.store import ReadModelStore
from streams.projector import PROJECTED, project
from streams.recorder import CustomerRecords
from streams.relay import LogNotifications, decode_batch, relay, relay_changes

log = logging.getLogger(__name__)
WORKER = f"worker-{os.getpid()}"
T = TypeVar("T")


def dead_letter(event: Any, reason: str, errors: Sequence[dict[str, str]]) -> bytes:
    """A dead-letter message: the original bytes (base64, and as text when they are
    UTF-8), why they were refused, and where they came from."""
    message = event.message
    original: bytes = message.value or b""
    try:
        text: str | None = original.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return json.dumps(
        {
            "schema": 1,
            "reason": reason,
            "errors": list(errors),
            "source": {
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
            },
            "original_base64": base64.b64encode(original).decode(),
            "original_text": text,
            "refused_at": datetime.now(UTC).isoformat(),
        },
        separators=(",", ":"),
    ).encode()


def triage(
    value: bytes | None, settings: Settings
) -> tuple[TouchpointIn | None, str, list[dict[str, str]]]:
    """(touchpoint, "", []) for a valid message, else (None, reason, field errors)."""
    try:
        raw = loads_json(value or b"")
    except MalformedJson as error:
        return None, f"malformed JSON: {error}", [{"field": "body", "message": str(error)}]
    try:
        return (
            parse_touchpoint(
                raw,
                now=datetime.now(UTC),
                max_future_skew=settings.max_future_skew,
                earliest=settings.earliest_occurred_at,
                phone_region=settings.phone_default_region,
                identifier_kinds=settings.identifier_kinds,
            ),
            "",
            [],
        )
    except InvalidTouchpoint as refusal:
        return None, "invalid touchpoint", [e.model_dump() for e in refusal.errors]


async def until_done(
    work: Callable[[], Any],
    what: str,
    stopping: Callable[[], bool],
    failed: Callable[[Exception], None] = lambda _: None,
) -> Any:
    """Run blocking ``work`` in a thread until it succeeds: a batch is never acked (and so
    never lost) because the database was briefly unavailable. ``failed`` sees each failure."""
    delay = 0.5
    while True:
        try:
            return await asyncio.to_thread(work)
        except Exception as error:
            failed(error)
            if stopping():
                # Faust acknowledges a taken batch when its loop is left, and commits on
                # a graceful stop: leaving without a commit is the only way not to lose
                # a batch that could not be made durable. Kafka redelivers it.
                log.critical("%s failed while stopping: exiting without committing", what)
                os._exit(75)
            if isinstance(error, psycopg2.errors.DeadlockDetected):
                # Two projectors merging the same customers at once (each holds rows the
                # other's merge updates): PostgreSQL aborts one, which is retried whole.
                log.warning("%s met a concurrent merge (deadlock); retrying", what)
            else:
                log.exception("%s failed; retrying in %.1f s", what, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def project_events(records: CustomerRecords, store: ReadModelStore, events: Sequence[Any]) -> int:
    with store.connection() as conn:
        return project(records, store, conn, events)


def timed(histogram: Histogram, work: Callable[..., T], *args: Any) -> T:
    """``work(*args)``, its duration observed in ``histogram`` (in the worker thread, so
    the event loop's waiting is not counted)."""
    with histogram.time():
        return work(*args)


ROLES = ("record", "project")


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer with a configurable fetch wait. Faust fixes it at
    1,500 ms; a broker that holds a fetch for the whole wait even when new records
    arrive (the local Tansu broker does) then adds up to 1.5 s per hop: with 50 ms the
    bench's p99 freshness at 2,000/s went from 4.0 s to 0.7 s."""

    fetch_max_wait_ms = 1500

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka hands this to its fetcher when the consumer starts, not before.
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    thread_class: type[_ConsumerThread] = _ConsumerThread

    def _new_consumer_thread(self) -> Any:
        return self.thread_class(self, loop=self.loop, beacon=self.beacon)


class StreamApp(faust.App):
    """A Faust app whose Kafka consumer waits at most ``fetch_max_wait_ms`` per fetch."""

    fetch_max_wait_ms = 1500

    def _new_transport(self) -> Any:
        wait = self.fetch_max_wait_ms
        thread = type("ConsumerThread", (_ConsumerThread,), {"fetch_max_wait_ms": wait})
        consumer = type("Consumer", (_Consumer,), {"thread_class": thread})
        kafka = type("Transport", (faust_aiokafka.Transport,), {"Consumer": consumer})
        return kafka(self.conf.broker_consumer, self)


def create_app(
    settings: Settings,
    records: CustomerRecords,
    store: ReadModelStore,
    *,
    database_url: str,
    roles: tuple[str, ...] = ROLES,
    metrics: Metrics | None = None,
) -> faust.App:
    """Build the Faust app (a factory: nothing connects until a worker starts it).

    A worker records and projects (``roles``), and runs the relay unless
    ``worker_runs_relay`` is off. A worker with one role only joins that role's own
    consumer group (``<prefix>-record``, ``<prefix>-project``), so recorders and projectors
    scale, and use cores, separately; run either all-role workers or single-role ones,
    not both (both would consume every message)."""
    unknown = set(roles) - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"roles: some of {', '.join(ROLES)}, got {', '.join(roles)}")
    group = settings.kafka_topic_prefix + (
        "" if set(roles) == set(ROLES) else "-" + "-".join(sorted(roles))
    )
    topics = Topics.named(settings.kafka_topic_prefix)
    app_class: type[StreamApp] = type(
        "PeakendStreamApp", (StreamApp,), {"fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms}
    )
    app: StreamApp = app_class(
        group,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=settings.kafka_replication,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Measured on a Kafka-protocol broker: these bring a group rebalance after a
        # worker's death from ~90 s down to ~12 s (DESIGN.md).
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        broker_rebalance_timeout=10,
        broker_commit_interval=1.0,
    )
    touchpoints_topic = app.topic(topics.touchpoints, key_serializer="raw", value_serializer="raw")
    dead_letters_topic = app.topic(
        topics.dead_letters, key_serializer="raw", value_serializer="raw"
    )
    customer_events_topic = app.topic(
        topics.customer_events, key_serializer="raw", value_serializer="raw"
    )
    app.topic(topics.alerts, key_serializer="raw", value_serializer="raw")
    batch, within = settings.stream_batch_size, settings.stream_batch_within_ms / 1000
    metrics = metrics or Metrics()

    def batches(stream: faust.StreamT[bytes]) -> AsyncIterator[Sequence[EventT[bytes]]]:
        # Many messages per database transaction; acked after the transaction commits.
        take = cast(faust.Stream[bytes], stream).take_events
        return take(batch, within=within)

    if "record" in roles:

        async def refuse(event: EventT[bytes], reason: str, errors: list[dict[str, str]]) -> None:
            message = event.message
            log.warning(
                "dead-lettered %s[%d]@%d: %s",
                message.topic,
                message.partition,
                message.offset,
                reason,
            )
            await dead_letters_topic.send(key=message.key, value=dead_letter(event, reason, errors))

        @app.agent(touchpoints_topic)
        async def record_touchpoints(stream: faust.StreamT[bytes]) -> None:
            async for events in batches(stream):
                valid: list[TouchpointIn] = []
                sources: list[EventT[bytes]] = []
                for event in events:
                    touchpoint, reason, errors = triage(event.message.value, settings)
                    if touchpoint is None:
                        await refuse(event, reason, errors)
                    else:
                        valid.append(touchpoint)
                        sources.append(event)
                started = time.perf_counter()
                if valid:
                    outcomes = await until_done(
                        partial(timed, metrics.record_batch_seconds, records.record, valid),
                        "recording",
                        lambda: app.should_stop,
                        partial(metrics.database_error, "recorder"),
                    )
                    metrics.count_touchpoints(outcomes)
                    for outcome, source in zip(outcomes, sources, strict=True):
                        if outcome.outcome is Outcome.CONFLICT:
                            await refuse(source, "conflict", [conflict_error(outcome)])
                partitions = sorted({e.message.partition for e in events})
                log.info(
                    "%s recorded %d touchpoints from partitions %s in %.0f ms",
                    WORKER,
                    len(valid),
                    partitions,
                    (time.perf_counter() - started) * 1000,
                )

    if "project" in roles:

        @app.agent(customer_events_topic)
        async def project_customer_events(stream: faust.StreamT[bytes]) -> None:
            async for events in batches(stream):
                touchpoints = []
                # The batch's keys in one query, in a thread; retried while the database
                # is unavailable (a message that cannot be read comes back as its error).
                batch_decoded = await until_done(
                    partial(decode_batch, records, [e.message.value or b"" for e in events]),
                    "decoding customer events",
                    lambda: app.should_stop,
                    partial(metrics.database_error, "projector"),
                )
                for event, decoded in zip(events, batch_decoded, strict=True):
                    if isinstance(decoded, Exception):  # only the relay writes here: a bug
                        error = decoded
                        log.error(
                            "undecodable customer event %s[%d]@%d: %r",
                            event.message.topic,
                            event.message.partition,
                            event.message.offset,
                            error,
                        )
                        await dead_letters_topic.send(
                            key=event.message.key,
                            value=dead_letter(event, f"undecodable customer event: {error}", []),
                        )
                        continue
                    if isinstance(decoded, PROJECTED):
                        touchpoints.append(decoded)

                started = time.perf_counter()
                applied = await until_done(
                    partial(
                        timed,
                        metrics.project_batch_seconds,
                        project_events,
                        records,
                        store,
                        touchpoints,
                    ),
                    "projecting",
                    lambda: app.should_stop,
                    partial(metrics.database_error, "projector"),
                )
                log.info(
                    "%s projected %d events (%d updates) in %.0f ms",
                    WORKER,
                    len(events),
                    applied,
                    (time.perf_counter() - started) * 1000,
                )

    if settings.worker_runs_relay:

        @app.task  # type: ignore[untyped-decorator]  # faust's task decorator is untyped
        async def relay_customer_events() -> None:
            producer = KafkaProducer(
                bootstrap_servers=settings.kafka_bootstrap,
                acks="all",
                linger_ms=settings.kafka_linger_ms,
                max_in_flight_requests_per_connection=1,
            )
            recorded = LogNotifications.of(records, database_url)
            try:
                while not app.should_stop:
                    sent = await until_done(
                        lambda: relay(
                            records, store, producer, topics.customer_events, batch_size=batch
                        ),
                        "relaying",
                        lambda: app.should_stop,
                    )
                    sent += await until_done(
                        lambda: relay_changes(
                            store,
                            producer,
                            topics.changes,
                            batch_size=batch,
                            alerts_topic=topics.alerts,
                        ),
                        "relaying changes",
                        lambda: app.should_stop,
                    )
                    if sent == 0:  # caught up: wait for the next insert (or a second)
                        await asyncio.to_thread(recorded.wait, 1.0)
            finally:
                recorded.close()
                producer.close(5)

    return app
