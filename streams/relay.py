"""The outbox relay: the event store's notification log, in order, onto Kafka.

The event store is the outbox: a touchpoint's domain event is committed once, there, and
the relay publishes every notification after its tracked position to
``<prefix>.customer-events``, keyed by customer id, then advances the position in
PostgreSQL. A crash between publishing and saving the position republishes a few events;
the projectors skip what they have applied (per-document stream versions), so the
effect is exactly once. One relay is active at a time: the others find the position row
locked and wait their turn.

The relay passes each stored state through as bytes, never parsing it: personal fields
stay sealed under their customer's key on the topic too (``streams.sealing``), and a
projector opens them as the embedded follower does, loading a batch's keys at once.
"""

from __future__ import annotations

import base64
import json
import logging
import select
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import psycopg2
import psycopg2.errors
from eventsourcing.persistence import Mapper, Notification, StoredEvent
from psycopg2 import sql

from projections import maintained
from projections.store import ReadModelStore
from streams.recorder import CustomerRecords

log = logging.getLogger(__name__)

RELAY = "relay"
SCHEMA = 2  # 2: the stored state as bytes (base64); 1 embedded it as JSON


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


def encode(notification: Notification, customer: tuple[str, str] | None) -> tuple[bytes, bytes]:
    """A customer-events message (key, value): the stored event's state as the event
    store keeps it (bytes, personal fields sealed: base64 in ``state_base64``, never
    parsed here), with its log position and place; keyed by the survivor that answers for
    its stream (``customer``: the stream's customer id and survivor, from the identity
    index), so that a customer's streams, merged, share one partition from then on. A
    stream the index does not know yet is keyed by its own id."""
    stream = notification.originator_id
    stream_hex = stream.hex if isinstance(stream, UUID) else str(stream)
    customer_id, survivor = customer or ("", stream_hex)
    return survivor.encode(), json.dumps(
        {
            "schema": SCHEMA,
            "position": notification.id,
            "customer_id": customer_id,
            "originator_id": stream_hex,
            "originator_version": notification.originator_version,
            "topic": notification.topic,
            "state_base64": base64.b64encode(notification.state).decode("ascii"),
        },
        separators=(",", ":"),
    ).encode()


def stored_event(value: bytes) -> StoredEvent:
    """The stored event in a customer-events message (schema 2; schema 1, which embedded
    the state as JSON, is still read)."""
    message = json.loads(value)
    schema = message.get("schema")
    if schema == SCHEMA:
        state = base64.b64decode(message["state_base64"], validate=True)
    elif schema == 1:
        state = json.dumps(message["state"], separators=(",", ":")).encode()
    else:
        raise ValueError(f"schema: customer-events messages are version {SCHEMA}, got {schema!r}")
    return StoredEvent(
        originator_id=UUID(message["originator_id"]),
        originator_version=message["originator_version"],
        topic=message["topic"],
        state=state,
    )


def decode(mapper: Mapper[UUID], value: bytes) -> Any:
    """The domain event in one customer-events message (a batch: ``decode_batch``)."""
    return mapper.to_domain_event(stored_event(value))


def decode_batch(records: CustomerRecords, values: Sequence[bytes]) -> list[Any]:
    """The domain events in a batch of customer-events messages, the keys of their
    streams loaded in one query; a message that cannot be read gives its exception in
    its place."""
    parsed: list[StoredEvent | Exception] = []
    for value in values:
        try:
            parsed.append(stored_event(value))
        except Exception as error:
            parsed.append(error)
    decode_one = records.decoder([p for p in parsed if isinstance(p, StoredEvent)])
    decoded: list[Any] = []
    for item in parsed:
        if isinstance(item, Exception):
            decoded.append(item)
            continue
        try:
            decoded.append(decode_one(item))
        except Exception as error:
            decoded.append(error)
    return decoded


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
        streams = [UUID(str(n.originator_id)) for n in notifications]
        customers = records.customers_of(sorted(set(streams)))
        sent = []
        for notification, stream in zip(notifications, streams, strict=True):
            key, value = encode(notification, customers.get(stream))
            sent.append(producer.send(topic, key=key, value=value))
        producer.flush()
        for future in sent:
            future.get(timeout=0)  # raises if the broker refused any: the position stays
        store.set_position(conn, RELAY, notifications[-1].id)
        return len(notifications)


CHANGE_RELAY = "change-relay"
CHANGE_SCHEMA = 1


def encode_change(change: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """A changes-topic message (key, value): the change as ``GET /v1/changes`` shows
    it, keyed by customer (a customer's changes keep their order in one partition)."""
    value = {"schema": CHANGE_SCHEMA, **change}
    return str(change["customer_id"]).encode(), json.dumps(
        value, default=_instant, separators=(",", ":")
    ).encode()


def _instant(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def relay_changes(
    store: ReadModelStore,
    producer: Producer,
    topic: str,
    *,
    batch_size: int,
    alerts_topic: str | None = None,
) -> int:
    """Publish the next ``batch_size`` changes of the feed to ``topic`` (cluster mode),
    and the alert transitions among them to ``alerts_topic`` too (keyed by alert id),
    acknowledged by the broker before the position moves; return how many (0 when
    idle or when another relay holds the position). A crash between the send and the
    commit sends a change again: consumers tell it by its ``change_id``."""
    with store.connection() as conn:
        try:
            position = store.lock_position(conn, CHANGE_RELAY, wait=False)
        except psycopg2.errors.LockNotAvailable:
            return 0
        found = maintained.change_page(store, after=position, limit=batch_size)
        if not found:
            return 0
        sent = []
        for change in found:
            key, value = encode_change(change)
            sent.append(producer.send(topic, key=key, value=value))
            if alerts_topic is not None and change["kind"] in maintained.ALERT_KINDS:
                alert_key = str(change["subject"]).encode()
                sent.append(producer.send(alerts_topic, key=alert_key, value=value))
        producer.flush()
        for future in sent:
            future.get(timeout=0)  # raises if the broker refused any: the position stays
        store.set_position(conn, CHANGE_RELAY, found[-1]["position"])
        return len(found)
