"""Personal fields sealed per customer in the event store, through the real platform:
nothing personal is stored in clear, everything reads back, and destroying a customer's
keys erases that customer's personal fields everywhere a replay reaches, and nothing
else (crypto-shredding)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg2
import pytest
from eventsourcing.persistence import IntegrityError
from psycopg2 import sql

from domain.customer import Customer, customer_aggregate_id
from domain.touchpoints import parse_touchpoint
from infra.bootstrap import Platform
from projections.registry import PROJECTIONS
from streams import relay
from streams.projector import replay
from tests.builders import T0, complaint, envelope, new_id, purchase
from tests.conftest import embedded
from tests.fixtures import stored


class Person:
    """A customer with personal values that must never be stored in clear."""

    def __init__(self, tag: str) -> None:
        self.source_id = new_id(f"SRC{tag}")
        self.email = f"{new_id(tag).lower()}@example.com"
        self.note = f"please call back {new_id('note')}"
        self.nickname = f"nick-{new_id(tag)}"

    @property
    def values(self) -> list[str]:
        return [self.source_id, self.email, self.note, self.nickname]

    def touchpoints(self) -> list[dict[str, Any]]:
        who = {"id": self.source_id, "email": self.email}
        return [
            envelope(who, T0, additional={"nickname": self.nickname}),
            purchase(who, "25.00", T0.replace(hour=9)),
            purchase(who, "15.50", T0.replace(hour=10)),
            complaint(who, "filed", T0.replace(hour=11), note=self.note),
        ]


def record(platform: Platform, *people: Person) -> None:
    platform.records.record(
        [parse_touchpoint(e) for person in people for e in person.touchpoints()]
    )
    assert embedded(platform).wait_until_projected(30)


def raw_store(platform: Platform) -> tuple[bytes, bytes]:
    """Every stored event's state and every wrapped key, as the database holds them."""
    recorder = platform.records._columnar()
    table = sql.Identifier(recorder.datastore.schema, recorder.events_table_name)
    with psycopg2.connect(platform.database_url) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT state FROM {} ORDER BY notification_id").format(table))
        states = b"\n".join(bytes(r[0]) for r in cur.fetchall())
        cur.execute("SELECT wrapped FROM customer_key")
        keys = b"\n".join(bytes(r[0]) for r in cur.fetchall())
    return states, keys


def documents(platform: Platform) -> str:
    return json.dumps({p.name: platform.store.dump(p.name) for p in PROJECTIONS}, default=str)


def customer(platform: Platform, person: Person) -> str:
    located = platform.records.identity.locate(person.source_id)
    assert located is not None
    return located.survivor


def streams_of(platform: Platform, person: Person) -> list[UUID]:
    members = platform.records.identity.members(customer(platform, person))
    return [customer_aggregate_id(m) for m in members]


def erase(platform: Platform, person: Person) -> int:
    streams = streams_of(platform, person)
    datastore = platform.records._columnar().datastore  # the erasure's own transaction
    with datastore.transaction(commit=True) as cursor:
        return platform.records.keyring.destroy(cursor, streams)


def test_no_personal_value_is_stored_in_clear_and_all_read_back(platform: Platform) -> None:
    ann, bob = Person("ann"), Person("bob")
    record(platform, ann, bob)

    states, keys = raw_store(platform)
    for value in [*ann.values, *bob.values]:
        assert value.encode() not in states
        assert value.encode() not in keys
    assert b"25.00" in states and b"complaint_filed" in states  # the rest stays clear
    with psycopg2.connect(platform.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM customer_key")
        assert cur.fetchone() == (2,)  # one key per stream

    total, timeline = platform.records.timeline(
        customer(platform, ann), limit=10, offset=0, newest_first=False
    )
    assert total == 4
    assert [t.identifiers for t in timeline] == [{"id": ann.source_id, "email": ann.email}] * 4
    assert timeline[0].additional == {"nickname": ann.nickname}
    assert timeline[3].payload["note"] == ann.note
    projected = documents(platform)
    for value in [ann.source_id, ann.email, bob.email]:
        assert value in projected


def test_destroying_a_customers_keys_erases_them_and_only_them(platform: Platform) -> None:
    ann, bob = Person("ann"), Person("bob")
    record(platform, ann, bob)
    ann_id, bob_id = customer(platform, ann), customer(platform, bob)
    before = {c: platform.store.get("customer", c) for c in (ann_id, bob_id)}

    assert erase(platform, ann) == 1
    replay(platform.records, platform.store, batch_size=3)  # small pages: several key loads

    projected = documents(platform)
    for value in ann.values:
        assert value not in projected
    for value in (bob.email, bob.source_id):
        assert value in projected
    after = {c: platform.store.get("customer", c) for c in (ann_id, bob_id)}
    assert after[bob_id] == before[bob_id]
    ann_before, ann_after = before[ann_id], after[ann_id]
    assert ann_before is not None and ann_after is not None
    for measure in ("touchpoints_total", "counts_by_type", "spend_by_currency", "orders"):
        assert ann_after[measure] == ann_before[measure], measure
    assert Decimal(str(ann_after["spend_by_currency"]["EUR"])) == Decimal("40.50")
    assert ann_after["identifiers"] == {}
    erased = platform.records.touchpoints_of(ann_id)
    assert len(erased) == 4
    assert all(t.identifiers == {} and t.additional == {} for t in erased)
    assert "note" not in erased[3].payload and erased[3].payload["complaint_id"] == "K1"
    assert [t.identifiers["email"] for t in platform.records.touchpoints_of(bob_id)] == [
        bob.email
    ] * 4


def test_a_destroyed_key_stays_destroyed_for_new_touchpoints_of_the_stream(
    platform: Platform,
) -> None:
    ann = Person("ann")
    record(platform, ann)
    erase(platform, ann)
    ann_id = customer(platform, ann)

    # The identity index still places a re-sent identifier on the stream (the lead's
    # erasure purges it): the stream gets a new key, the old events stay unreadable.
    again = envelope({"id": ann.source_id}, T0.replace(hour=12), payload={"location": "x"})
    platform.records.record([parse_touchpoint(again)])

    events = platform.records.touchpoints_of(ann_id)
    assert [bool(t.identifiers) for t in events] == [False, False, False, False, True]


def test_a_second_key_for_a_stream_is_refused_and_the_first_still_opens(
    platform: Platform,
) -> None:
    ann = Person("ann")
    record(platform, ann)
    (stream,) = streams_of(platform, ann)
    _, rows = platform.records.keyring.create([stream])
    recorder = platform.records._columnar()

    with pytest.raises(IntegrityError):
        recorder.insert_events(
            [stored.load().rows[0]],
            customer_keys=rows,
        )

    platform.records.keyring.forget([stream])
    assert platform.records.touchpoints_of(customer(platform, ann))[0].identifiers


def test_an_event_stored_before_sealing_reads_as_it_was(platform: Platform) -> None:
    fixture = stored.load()
    platform.records.recorder.insert_events(fixture.rows)
    places = [(UUID(str(r.originator_id)), r.originator_version) for r in fixture.rows]

    touchpoints = platform.records.touchpoints_at(places)

    assert len(touchpoints) == sum(r.topic.endswith("TouchpointRecorded") for r in fixture.rows)
    assert all(t.identifiers and t.envelope_schema == 1 for t in touchpoints)


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send(self, topic: str, *, key: bytes, value: bytes) -> Any:
        self.sent.append((topic, key, value))
        return self

    def get(self, timeout: float | None = None) -> None:
        return None

    def flush(self, timeout: float | None = None) -> None:
        return None


def test_the_relay_passes_the_sealed_state_through_keyed_by_the_survivor(
    platform: Platform,
) -> None:
    ann, bob = Person("ann"), Person("bob")
    record(platform, ann, bob)
    producer = Producer()

    sent = relay.relay(
        platform.records, platform.store, producer, "t.customer-events", batch_size=100
    )

    notifications = platform.records.recorder.select_notifications(start=0, limit=100)
    assert sent == len(producer.sent) == len(notifications)
    sent_values = b"\n".join(v for _, _, v in producer.sent)
    for personal in [*ann.values, *bob.values]:
        assert personal.encode() not in sent_values
    for (_, key, value), notification in zip(producer.sent, notifications, strict=True):
        message = relay.stored_event(value)
        assert message.state == notification.state  # the stored bytes, as they are
        assert json.loads(value)["schema"] == relay.SCHEMA
        assert key.decode() in {customer(platform, ann), customer(platform, bob)}
    decoded = relay.decode_batch(platform.records, [v for _, _, v in producer.sent])
    touchpoints = [e for e in decoded if isinstance(e, Customer.TouchpointRecorded)]
    assert sorted(t.identifiers["email"] for t in touchpoints) == sorted(
        [ann.email] * 4 + [bob.email] * 4
    )

    erase(platform, ann)
    erased = relay.decode_batch(platform.records, [v for _, _, v in producer.sent])
    emails = [
        e.identifiers.get("email") for e in erased if isinstance(e, Customer.TouchpointRecorded)
    ]
    assert sorted(map(str, emails)) == sorted([bob.email] * 4 + ["None"] * 4)
