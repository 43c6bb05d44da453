"""The outbox relay: the event store's notification log, in order, onto Kafka.

The event store is the outbox: a touchpoint's domain event is committed once, there, and
the relay publishes every notification after its tracked position to
``<prefix>.customer-events``, keyed by customer id, then advances the position in
PostgreSQL. A crash between publishing and saving the position republishes a few events;
the projectors skip what they have applied (per-document stream versions), so the
effect is exactly once. One relay is active at a time: the others find the position row
locked and wait their turn.
"""

from __future__ import annotations

import json
import logging
import select
from typing import Any, Protocol
from uuid import UUID

import psycopg2
import psycopg2.errors
from eventsourcing.persistence import Mapper, Notification, StoredEvent
from psycopg2 import sql

from projections.store import ReadModelStore
from streams.recorder import CustomerRecords

log = logging.getLogger(__name__)

RELAY = "relay"
SCHEMA = 1


class LogNotifications:
    """Wake-ups from the event store: its recorder NOTIFYs a channel with every insert, so
    a follower waits on the channel instead of polling the log."""

    def __init__(self, database_url: str, channel: str) -> None:
        self._conn = psycopg2.connect(database_url)
        self._conn.autocommit = True
        with self._conn.cursor() as cur:
            cur.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def wait(self, timeout: float) -> bool:
        """Block until something was recorded (True) or ``timeout`` seconds passed."""
        if not self._conn.notifies:
            ready, _, _ = select.select([self._conn], [], [], timeout)
            if ready:
                self._conn.poll()
        notified = bool(self._conn.notifies)
        self._conn.notifies.clear()
        return notified

    def close(self) -> None:
        self._conn.close()

    @classmethod
    def of(cls, records: CustomerRecords, database_url: str) -> LogNotifications:
        channel: str = getattr(records.recorder, "channel_name", "")
        return cls(database_url, channel)


class Producer(Protocol):
    """What the relay needs of a Kafka producer (kafka-python's ``KafkaProducer``)."""

    def send(self, topic: str, *, key: bytes, value: bytes) -> Any: ...

    def flush(self, timeout: float | None = None) -> None: ...


def encode(
    notification: Notification, state: dict[str, Any], survivors: dict[str, str]
) -> tuple[bytes, bytes]:
    """A customer-events message (key, value): the stored event as the event store keeps
    it (its JSON ``state``, parsed once by the caller, included verbatim), with its log
    position; keyed by the survivor of its customer (which every Customer event names),
    so that a customer's streams, merged, share one partition from then on."""
    customer_id = str(state.get("customer_id", ""))
    key = survivors.get(customer_id, customer_id)
    return key.encode(), json.dumps(
        {
            "schema": SCHEMA,
            "position": notification.id,
            "customer_id": customer_id,
            "originator_id": notification.originator_id.hex
            if isinstance(notification.originator_id, UUID)
            else str(notification.originator_id),
            "originator_version": notification.originator_version,
            "topic": notification.topic,
            "state": state,
        },
        separators=(",", ":"),
    ).encode()


def decode(mapper: Mapper[UUID], value: bytes) -> Any:
    """The domain event in a customer-events message."""
    message = json.loads(value)
    if message.get("schema") != SCHEMA:
        raise ValueError(
            f"schema: customer-events messages are version {SCHEMA}, got {message.get('schema')!r}"
        )
    return mapper.to_domain_event(
        StoredEvent(
            originator_id=UUID(message["originator_id"]),
            originator_version=message["originator_version"],
            topic=message["topic"],
            state=json.dumps(message["state"], separators=(",", ":")).encode(),
        )
    )


def relay(
    records: CustomerRecords,
    store: ReadModelStore,
    producer: Producer,
    topic: str,
    *,
    batch_size: int,
) -> int:
    """Publish the next ``batch_size`` notifications; return how many (0 when idle or
    when another relay holds the position)."""
    with store.connection() as conn:
        try:
            position = store.lock_position(conn, RELAY, wait=False)
        except psycopg2.errors.LockNotAvailable:
            return 0
        notifications = records.recorder.select_notifications(
            start=position, limit=batch_size, inclusive_of_start=False
        )
        if not notifications:
            return 0
        states = [json.loads(n.state) for n in notifications]
        survivors = records.identity.survivors_of(
            sorted({str(state.get("customer_id", "")) for state in states})
        )
        sent = []
        for notification, state in zip(notifications, states, strict=True):
            key, value = encode(notification, state, survivors)
            sent.append(producer.send(topic, key=key, value=value))
        producer.flush()
        for future in sent:
            future.get(timeout=0)  # raises if the broker refused any: the position stays
        store.set_position(conn, RELAY, notifications[-1].id)
        return len(notifications)
