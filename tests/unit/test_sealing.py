"""Sealing personal fields per customer (streams.sealing), without a database: the
keyring's store is a dict here."""

from __future__ import annotations

import base64
import json
import os
from typing import Any
from uuid import UUID, uuid4

import pytest
from cryptography.exceptions import InvalidTag
from eventsourcing.persistence import JSONTranscoder, MapperDeserialisationError, StoredEvent

from domain.customer import Customer
from domain.touchpoints import parse_touchpoint, touchpoint_of
from streams.recorder import CustomerRecords
from streams.sealing import (
    SEALED,
    DataKey,
    Keyring,
    PersonalFields,
    Sealing,
    SealingError,
    SealingMapper,
    open_sealed,
    seal,
)
from tests import builders

MASTER = os.urandom(32)
PERSONAL = PersonalFields.of(["note", "name"], ["*"])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Table:
    """A ``customer_key`` table in memory: stream -> wrapped key; counts its loads."""

    def __init__(self) -> None:
        self.rows: dict[UUID, bytes] = {}
        self.loads: list[list[UUID]] = []

    def load(self, streams: Any) -> dict[UUID, bytes]:
        self.loads.append(sorted(streams))
        return {s: self.rows[s] for s in streams if s in self.rows}


def mapper(
    fields: PersonalFields = PERSONAL, *, cache_seconds: float = 5.0
) -> tuple[SealingMapper, Table, Clock]:
    """The application's own transcoder (its transcodings), sealing under a dict table."""
    table, clock = Table(), Clock()
    base = CustomerRecords(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}).mapper
    keyring = Keyring(MASTER, cache_seconds=cache_seconds, load=table.load, clock=clock)
    return SealingMapper(base.transcoder, keyring, fields), table, clock


def stored(m: SealingMapper, table: Table, *events: Any) -> list[StoredEvent]:
    """Map events as the recorder saves them; commit their new keys to ``table``."""
    with m.writing({e.originator_id for e in events}) as new:
        records = [m.to_stored_event(e) for e in events]
    table.rows.update(new)
    return records


def touchpoint(customer: Customer, **fields: Any) -> Customer.TouchpointRecorded:
    raw = builders.envelope(
        {"email": "ann@example.com", "phone": "+4915112345678"},
        type="complaint_filed",
        payload={
            "complaint_id": "K1",
            "category": "billing",
            "compensation": "5.00",
            "note": "ring twice",
        },
        additional={"traits": {"region": "north"}, "nickname": "Annie"},
        **fields,
    )
    customer.record_touchpoint(touchpoint_of(parse_touchpoint(raw)))
    event = customer.pending_events[-1]
    assert isinstance(event, Customer.TouchpointRecorded)
    return event


def state_of(record: StoredEvent) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(record.state)
    return parsed


def test_a_touchpoint_seals_its_personal_fields_and_reads_back_equal() -> None:
    m, table, _ = mapper()
    customer = Customer.register("cus_1")
    event = touchpoint(customer)

    (_, record) = stored(m, table, *customer.collect_events())

    raw = record.state.decode()
    for personal in ("ann@example.com", "+4915112345678", "ring twice", "Annie", "north"):
        assert personal not in raw
    state = state_of(record)
    assert "identifiers" not in state and SEALED in state
    assert state["payload"] == {k: v for k, v in event.payload.items() if k != "note"}
    assert state["payload"]["compensation"] == "5.00"
    assert state["additional"] == {}
    assert (state["type"], state["channel"], state["customer_id"]) == (
        "complaint_filed",
        "store",
        "cus_1",
    )
    assert m.to_domain_event(record) == event


def test_which_fields_are_sealed_follows_the_settings() -> None:
    m, table, _ = mapper(PersonalFields.of(["compensation"], ["nickname"]))
    customer = Customer.register("cus_1")
    event = touchpoint(customer)

    (_, record) = stored(m, table, *customer.collect_events())

    state = state_of(record)
    assert state["payload"] == {k: v for k, v in event.payload.items() if k != "compensation"}
    assert state["payload"]["note"] == "ring twice"
    assert state["additional"] == {"traits": {"region": "north"}}
    assert "identifiers" not in state  # always personal
    assert m.to_domain_event(record) == event


def test_identity_events_seal_their_identifiers_and_a_refusal_its_reason() -> None:
    m, table, _ = mapper()
    survivor, absorbed = Customer.register("cus_1"), Customer.register("cus_2")
    survivor.link({"email": "ann@example.com"}, event_id="tp-1", at=builders.T0)
    survivor.merge(absorbed, event_id="tp-2", at=builders.T0, identifiers={"id": "SRC-9"})
    survivor.refuse(
        event_id="tp-3",
        at=builders.T0,
        rule="source_ids_differ",
        reason="id: the customers are 2 records (SRC-9, SRC-8)",
        identifiers={"id": "SRC-8"},
        customers=["cus_1", "cus_3"],
    )
    events = [*survivor.collect_events(), *absorbed.collect_events()]

    records = stored(m, table, *events)

    raw = b"".join(r.state for r in records).decode()
    assert "ann@example.com" not in raw and "SRC-9" not in raw and "SRC-8" not in raw
    assert "cus_3" in raw  # customer ids are opaque: clear
    assert [SEALED in state_of(r) for r in records] == [False, True, True, True, False, False]
    assert [m.to_domain_event(r) for r in records] == events


def test_each_event_is_sealed_with_its_own_nonce() -> None:
    m, table, _ = mapper()
    customer = Customer.register("cus_1")
    touchpoint(customer)
    touchpoint(customer)

    (_, a, b) = stored(m, table, *customer.collect_events())

    blob_a, blob_b = (base64.b64decode(state_of(r)[SEALED]) for r in (a, b))
    assert blob_a[9:21] != blob_b[9:21]  # the nonces


def test_a_blob_opens_only_for_its_own_stream_and_version() -> None:
    key = DataKey.of(os.urandom(32))
    stream = uuid4()
    blob = seal(key, stream, 3, b'{"identifiers":{"email":"a@b.c"}}')

    assert open_sealed(key, stream, 3, blob) == b'{"identifiers":{"email":"a@b.c"}}'
    with pytest.raises(InvalidTag):
        open_sealed(key, uuid4(), 3, blob)
    with pytest.raises(InvalidTag):
        open_sealed(key, stream, 4, blob)


def test_a_sealed_blob_moved_to_another_event_fails_to_decode() -> None:
    m, table, _ = mapper()
    customer = Customer.register("cus_1")
    touchpoint(customer)
    touchpoint(customer)
    (_, first, second) = stored(m, table, *customer.collect_events())
    moved = {**state_of(second), SEALED: state_of(first)[SEALED]}

    with pytest.raises(MapperDeserialisationError):
        m.to_domain_event(
            StoredEvent(
                second.originator_id,
                second.originator_version,
                second.topic,
                json.dumps(moved).encode(),
            )
        )


def test_a_wrapped_key_unwraps_only_for_its_own_stream() -> None:
    keyring = Keyring(MASTER, cache_seconds=5)
    stream = uuid4()
    wrapped = keyring.wrap(stream, b"k" * 32)

    assert keyring.unwrap(stream, wrapped) == b"k" * 32
    with pytest.raises(InvalidTag):
        keyring.unwrap(uuid4(), wrapped)
    with pytest.raises(InvalidTag):
        Keyring(os.urandom(32), cache_seconds=5).unwrap(stream, wrapped)


def test_without_its_key_an_event_reads_back_in_the_erased_shape() -> None:
    m, table, _ = mapper(cache_seconds=0)
    customer = Customer.register("cus_1")
    event = touchpoint(customer)
    customer.link({"email": "ann@example.com"}, event_id="tp-1", at=builders.T0)
    records = stored(m, table, *customer.collect_events())

    table.rows.clear()  # the key destroyed
    registered, recorded, linked = (m.to_domain_event(r) for r in records)

    assert isinstance(recorded, Customer.TouchpointRecorded)
    assert recorded.identifiers == {}
    assert recorded.payload == {k: v for k, v in event.payload.items() if k != "note"}
    assert recorded.additional == {}
    assert (recorded.event_id, recorded.type, recorded.occurred_at, recorded.emotion) == (
        event.event_id,
        event.type,
        event.occurred_at,
        event.emotion,
    )
    assert isinstance(linked, Customer.IdentifiersLinked) and linked.identifiers == {}
    assert isinstance(registered, Customer.Registered)


def test_a_new_key_for_an_erased_stream_does_not_open_what_the_old_one_sealed() -> None:
    m, table, _ = mapper(cache_seconds=0)
    customer = Customer.register("cus_1")
    touchpoint(customer)
    (_, old) = stored(m, table, *customer.collect_events())
    table.rows.clear()
    touchpoint(customer)

    (new,) = stored(m, table, *customer.collect_events())

    erased, kept = m.to_domain_event(old), m.to_domain_event(new)
    assert isinstance(erased, Customer.TouchpointRecorded) and erased.identifiers == {}
    assert isinstance(kept, Customer.TouchpointRecorded) and kept.identifiers


def test_an_event_stored_before_sealing_reads_as_it_was() -> None:
    m, _, _ = mapper()
    old = StoredEvent(
        uuid4(),
        2,
        "domain.customer:Customer.TouchpointRecorded",
        json.dumps(
            {
                "customer_id": "ANN",
                "event_id": "tp-1",
                "type": "visit",
                "occurred_at": {"_type_": "datetime_iso", "_data_": "2024-05-01T08:00:00+00:00"},
                "channel": "store",
                "identifiers": {"id": "ANN"},
                "journey": None,
                "emotion": None,
                "payload": {"note": "hello"},
                "additional": {},
                "timestamp": {"_type_": "datetime_iso", "_data_": "2024-05-01T08:00:00+00:00"},
            }
        ).encode(),
    )

    event = m.to_domain_event(old)

    assert isinstance(event, Customer.TouchpointRecorded)
    assert event.identifiers == {"id": "ANN"} and event.payload == {"note": "hello"}
    assert event.envelope_schema == 1


def test_a_batch_loads_its_keys_in_one_query_and_the_cache_is_bounded() -> None:
    m, table, clock = mapper(cache_seconds=5)
    customers = [Customer.register(f"cus_{n}") for n in range(20)]
    for c in customers:
        touchpoint(c)
    records = stored(m, table, *(e for c in customers for e in c.collect_events()))
    assert len(table.loads) == 1  # the writer's one look-up
    clock.now += 6  # the written keys expired

    keys = m.keys_for(records)
    decoded = [m.to_domain_event(r, keys) for r in records]

    assert len(table.loads) == 2
    assert len(decoded) == 40
    m.keys_for(records)
    assert len(table.loads) == 2  # fresh in the cache
    clock.now += 5.1
    m.keys_for(records)
    assert len(table.loads) == 3  # expired: loaded again


def test_a_key_forgotten_locally_is_not_read_from_the_cache() -> None:
    m, table, _ = mapper(cache_seconds=300)
    customer = Customer.register("cus_1")
    touchpoint(customer)
    (_, record) = stored(m, table, *customer.collect_events())
    table.rows.clear()

    m.keyring.forget([customer.id])  # what destroy does besides deleting the row
    event = m.to_domain_event(record)

    assert isinstance(event, Customer.TouchpointRecorded) and event.identifiers == {}


def test_sealing_outside_a_prepared_save_is_refused() -> None:
    m, _, _ = mapper()
    customer = Customer.register("cus_1")
    touchpoint(customer)
    (_, event) = customer.collect_events()

    with pytest.raises(SealingError):
        m.to_stored_event(event)


def test_new_keys_are_cached_only_once_their_save_succeeded() -> None:
    m, _, _ = mapper()
    customer = Customer.register("cus_1")
    touchpoint(customer)
    events = customer.collect_events()

    with pytest.raises(RuntimeError), m.writing({customer.id}):
        [m.to_stored_event(e) for e in events]
        raise RuntimeError("the insert failed")

    assert m.keyring.keys([customer.id]).get(customer.id) is None


def test_a_stream_found_without_a_key_is_asked_again_next_time() -> None:
    m, table, _ = mapper(cache_seconds=300)
    customer = Customer.register("cus_1")
    touchpoint(customer)
    events = customer.collect_events()
    assert m.keyring.keys([customer.id]).get(customer.id) is None  # nothing yet
    other, _, _ = mapper()  # another process writes the stream's first events
    other.keyring = Keyring(MASTER, cache_seconds=300, load=table.load)
    records = stored(other, table, *events)

    assert m.to_domain_event(records[1], m.keys_for(records)) == events[1]


def test_a_key_cached_before_the_stream_got_a_new_one_is_read_again_once() -> None:
    m, table, _ = mapper(cache_seconds=300)
    customer = Customer.register("cus_1")
    touchpoint(customer)
    stored(m, table, *customer.collect_events())
    table.rows.clear()  # destroyed elsewhere, and a new key made there since
    fresh = touchpoint(customer)
    other, _, _ = mapper()
    other.keyring = Keyring(MASTER, cache_seconds=300, load=table.load)
    (record,) = stored(other, table, *customer.collect_events())
    loads = len(table.loads)

    batch = m.keys_for([record])  # the old key, from the cache
    assert len(table.loads) == loads
    assert m.to_domain_event(record, batch) == fresh
    assert m.to_domain_event(record, batch) == fresh
    assert len(table.loads) == loads + 1  # read again once for the batch


def test_the_composition_root_gives_the_records_a_sealing_mapper() -> None:
    base = CustomerRecords(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}).mapper
    sealing = Sealing(MASTER, PERSONAL, cache_seconds=1)

    built = sealing.mapper(base)

    assert isinstance(built, SealingMapper)
    assert isinstance(built.transcoder, JSONTranscoder)
    assert built.keyring.cache_seconds == 1 and built.fields == PERSONAL
