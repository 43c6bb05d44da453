"""Event versions: events stored under an older ``class_version`` are upcast as they are
read; new ones are stored under the current version (eventsourcing's mapper)."""

from __future__ import annotations

import json
from typing import Any

from eventsourcing.persistence import Mapper, StoredEvent

from domain.customer import Customer
from domain.touchpoints import parse_touchpoint, touchpoint_of
from streams.recorder import CustomerRecords
from tests import builders
from tests.fixtures import stored


def mapper() -> Mapper[Any]:
    """The application's own mapper (its transcodings), over an in-memory store."""
    return CustomerRecords(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}).mapper


def v1_touchpoints() -> list[StoredEvent]:
    return [r for r in stored.load().rows if r.topic.endswith("Customer.TouchpointRecorded")]


def test_upcasting_a_v1_touchpoint_says_it_came_in_envelope_schema_1() -> None:
    state: dict[str, Any] = {"event_id": "tp-1", "payload": {"amount": "1.00"}}

    Customer.TouchpointRecorded.upcast_v1_v2(state)

    assert state == {"event_id": "tp-1", "payload": {"amount": "1.00"}, "envelope_schema": 1}


def test_every_version_of_an_event_has_an_upcaster_to_the_next() -> None:
    for event in (Customer.Registered, Customer.TouchpointRecorded):
        for version in range(1, event.class_version):
            assert callable(getattr(event, f"upcast_v{version}_v{version + 1}"))


def test_a_stored_v1_touchpoint_reads_as_the_current_version() -> None:
    for row in v1_touchpoints():
        assert "class_version" not in json.loads(row.state)  # stored before versions

        event = mapper().to_domain_event(row)

        assert isinstance(event, Customer.TouchpointRecorded)
        assert event.envelope_schema == 1
        assert (event.originator_id, event.originator_version) == (
            row.originator_id,
            row.originator_version,
        )
        assert event.event_id == json.loads(row.state)["event_id"]


def test_a_stored_v1_registration_reads_as_a_stream_from_before_the_identity_index() -> None:
    (row, *_) = stored.load().rows

    event = mapper().to_domain_event(row)

    assert isinstance(event, Customer.Registered)
    assert event.customer_id == json.loads(row.state)["customer_id"]
    assert event.identified is False  # its touchpoints' identifiers link when indexed


def test_a_new_touchpoint_is_stored_as_v2_and_reads_back_equal() -> None:
    customer = Customer.register("C1")
    customer.record_touchpoint(touchpoint_of(parse_touchpoint(builders.purchase("C1"))))
    _, recorded = customer.collect_events()

    stored_event = mapper().to_stored_event(recorded)

    assert json.loads(stored_event.state)["class_version"] == 2
    assert json.loads(stored_event.state)["envelope_schema"] == 1
    assert mapper().to_domain_event(stored_event) == recorded


def test_a_new_registration_is_stored_as_v2_identified_and_reads_back_equal() -> None:
    (registered,) = Customer.register("C1").collect_events()

    stored_event = mapper().to_stored_event(registered)

    assert json.loads(stored_event.state)["class_version"] == 2
    assert json.loads(stored_event.state)["identified"] is True
    assert mapper().to_domain_event(stored_event) == registered
