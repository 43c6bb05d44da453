"""Identity resolution and the Customer aggregate: one stream per customer, idempotent by
the touchpoint's event_id, each event carrying the validated envelope."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from domain.customer import Customer, customer_aggregate_id
from domain.touchpoints import Touchpoint, parse_touchpoint, touchpoint_of
from tests import builders
from tests.builders import Envelope

OPAQUE_ID = re.compile(r"^cus_[0-9a-f]{32}$")


def envelope(event_id: str, **fields: Any) -> Envelope:
    """C1's visit ``event_id``, stamped with an offset (08:00 UTC); ``fields`` replace."""
    return builders.envelope("C1", "2024-05-01T10:00:00+02:00", event_id=event_id, **fields)


def touchpoint(raw: Envelope) -> Touchpoint:
    """The domain value of a raw envelope, validated as ingest does."""
    return touchpoint_of(parse_touchpoint(raw))


def recorded(customer: Customer) -> list[Customer.TouchpointRecorded]:
    return [e for e in customer.collect_events() if isinstance(e, Customer.TouchpointRecorded)]


# ---------------------------------------------------------------------------------------
# customer_aggregate_id
# ---------------------------------------------------------------------------------------


def test_customer_id_always_names_the_same_stream() -> None:
    assert customer_aggregate_id("C1") == customer_aggregate_id("C1")
    assert isinstance(customer_aggregate_id("C1"), uuid.UUID)


def test_each_customer_id_has_its_own_stream() -> None:
    assert customer_aggregate_id("C1") != customer_aggregate_id("C2")


# ---------------------------------------------------------------------------------------
# Customer aggregate
# ---------------------------------------------------------------------------------------


def test_registering_a_customer_starts_its_stream() -> None:
    customer = Customer.register("C1")

    assert customer.id == customer_aggregate_id("C1")
    assert customer.version == 1
    assert customer.customer_id == "C1"
    assert customer.touchpoint_ids == set()
    (registered,) = customer.collect_events()
    assert isinstance(registered, Customer.Registered)
    assert registered.customer_id == "C1"


def test_recorded_event_carries_the_validated_envelope() -> None:
    customer = Customer.register("C1")
    purchase = touchpoint(
        envelope(
            "tp-1",
            type="purchase",
            channel="WEB",
            customer={"id": "C1", "email": "Ann@Example.com"},
            journey={"id": "J1", "type": "online_order", "step": "checkout"},
            emotion=-1,
            payload={"order_id": "O1", "amount": "19.90", "currency": "EUR"},
            additional={"campaign": "spring"},
        )
    )

    assert customer.record_touchpoint(purchase) is True

    (event,) = recorded(customer)
    assert event.originator_id == customer.id
    assert event.originator_version == 2
    assert event.customer_id == "C1"
    assert event.event_id == "tp-1"
    assert event.type == "purchase"
    assert event.occurred_at == datetime(2024, 5, 1, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    assert event.occurred_at == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    assert event.channel == "web"
    assert event.identifiers == {"id": "C1", "email": "ann@example.com"}
    assert event.journey == {"id": "J1", "type": "online_order", "step": "checkout"}
    assert event.emotion == -1
    assert event.payload == {"order_id": "O1", "amount": "19.90", "currency": "EUR", "items": []}
    assert event.additional == {"campaign": "spring"}
    assert event.envelope_schema == 1


def test_touchpoint_outside_a_journey_and_unscored_records_none_for_both() -> None:
    customer = Customer.register("C1")

    customer.record_touchpoint(touchpoint(envelope("tp-1")))

    (event,) = recorded(customer)
    assert (event.journey, event.emotion) == (None, None)


def test_duplicate_event_id_records_nothing() -> None:
    customer = Customer.register("C1")
    visit = touchpoint(envelope("tp-1"))

    assert customer.record_touchpoint(visit) is True
    assert customer.record_touchpoint(visit) is False

    assert customer.version == 2
    assert [e.event_id for e in recorded(customer)] == ["tp-1"]


def test_duplicate_is_recognised_by_event_id_even_if_its_content_differs() -> None:
    customer = Customer.register("C1")
    customer.record_touchpoint(touchpoint(envelope("tp-1", emotion=3)))

    redelivered = touchpoint(envelope("tp-1", emotion=-3, channel="phone"))

    assert customer.record_touchpoint(redelivered) is False
    (event,) = recorded(customer)
    assert (event.emotion, event.channel) == (3, "store")


def test_duplicate_is_recognised_after_the_events_were_collected() -> None:
    customer = Customer.register("C1")
    customer.record_touchpoint(touchpoint(envelope("tp-1")))
    customer.collect_events()

    assert customer.record_touchpoint(touchpoint(envelope("tp-1"))) is False
    assert customer.collect_events() == []
    assert customer.version == 2


def test_customer_rebuilt_from_its_events_still_drops_duplicates() -> None:
    original = Customer.register("C1")
    original.record_touchpoint(touchpoint(envelope("tp-1")))
    original.record_touchpoint(touchpoint(envelope("tp-2")))

    rebuilt: Customer | None = None
    for event in original.collect_events():
        rebuilt = event.mutate(rebuilt)

    assert isinstance(rebuilt, Customer)
    assert rebuilt.version == 3
    assert rebuilt.touchpoint_ids == {"tp-1", "tp-2"}
    assert rebuilt.record_touchpoint(touchpoint(envelope("tp-2"))) is False
    assert rebuilt.record_touchpoint(touchpoint(envelope("tp-3"))) is True


def test_stream_keeps_arrival_order_and_each_event_keeps_its_event_time() -> None:
    customer = Customer.register("C1")
    customer.record_touchpoint(touchpoint(envelope("late", occurred_at="2024-05-02T09:00:00Z")))
    customer.record_touchpoint(touchpoint(envelope("early", occurred_at="2024-05-01T09:00:00Z")))

    events = recorded(customer)

    assert [(e.event_id, e.originator_version) for e in events] == [("late", 2), ("early", 3)]
    assert [e.occurred_at.day for e in events] == [2, 1]


@given(st.lists(st.sampled_from([f"tp-{n}" for n in range(8)]), max_size=40))
def test_recording_with_duplicates_yields_one_event_per_distinct_event_id(
    event_ids: list[str],
) -> None:
    customer = Customer.register("C1")

    accepted = [
        customer.record_touchpoint(touchpoint(envelope(event_id, emotion=n % 7 - 3)))
        for n, event_id in enumerate(event_ids)
    ]

    distinct = list(dict.fromkeys(event_ids))
    first_seen = [event_ids.index(event_id) == n for n, event_id in enumerate(event_ids)]
    assert accepted == first_seen
    assert [e.event_id for e in recorded(customer)] == distinct
    assert customer.version == 1 + len(distinct)
    assert customer.touchpoint_ids == set(distinct)
