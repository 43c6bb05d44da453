"""event_id is unique across the whole store (guarantee 8), on real PostgreSQL: an
identical re-send is a duplicate, a re-send with other content is a conflict naming the
fields that differ, and neither changes anything, whichever customer it names."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.customer import Customer
from domain.idempotency import Outcome
from domain.touchpoints import TouchpointIn, parse_touchpoint
from infra.bootstrap import Platform
from streams.recorder import CustomerRecords
from tests.builders import envelope, new_id, purchase
from tests.conftest import customer_of


def parsed(*raw: dict[str, Any]) -> list[TouchpointIn]:
    return [parse_touchpoint(r) for r in raw]


def recorded_event_ids(records: CustomerRecords) -> Counter[str]:
    counts: Counter[str] = Counter()
    position = 0
    while notifications := records.recorder.select_notifications(
        start=position, limit=1000, inclusive_of_start=False
    ):
        for notification in notifications:
            event = records.mapper.to_domain_event(notification)
            if isinstance(event, Customer.TouchpointRecorded):
                counts[event.event_id] += 1
        position = notifications[-1].id
    return counts


def test_the_same_event_id_for_another_customer_is_a_conflict_and_records_nothing(
    platform: Platform,
) -> None:
    first = envelope(new_id("C"))
    (outcome,) = platform.records.record(parsed(first))
    assert outcome.outcome is Outcome.RECORDED

    other_customer = {**first, "customer": {"id": new_id("C")}}
    (again,) = platform.records.record(parsed(other_customer))

    assert again.outcome is Outcome.CONFLICT
    assert again.differing == ("customer.id",)
    assert (
        again.customer_id == outcome.customer_id == customer_of(platform, first["customer"]["id"])
    )
    assert recorded_event_ids(platform.records)[first["event_id"]] == 1
    # Recording nothing, the conflict linked nothing either: no customer holds the other id.
    assert platform.records.identity.locate(other_customer["customer"]["id"]) is None


def test_a_resend_with_an_extra_identifier_is_a_conflict_naming_it(platform: Platform) -> None:
    first = envelope({"email": "ann@example.com"})
    platform.records.record(parsed(first))
    resent = {**first, "customer": {"email": "ann@example.com", "id": new_id("C")}}

    (outcome,) = platform.records.record(parsed(resent))

    assert outcome.outcome is Outcome.CONFLICT
    assert outcome.differing == ("customer.id",)
    assert sum(recorded_event_ids(platform.records).values()) == 1


def test_a_resend_with_another_amount_is_a_conflict_and_the_first_stands(
    platform: Platform,
) -> None:
    customer = new_id("C")
    first = purchase(customer, "10.00")
    platform.records.record(parsed(first))
    changed = {**first, "payload": {**first["payload"], "amount": "12.00"}, "emotion": 1}

    (outcome,) = platform.records.record(parsed(changed))

    assert outcome.outcome is Outcome.CONFLICT
    assert outcome.differing == ("emotion", "payload.amount")
    (event,) = platform.records.touchpoints_of(customer_of(platform, customer))
    assert event.payload["amount"] == "10.00"


def test_an_identical_resend_is_a_duplicate_even_with_another_offset_and_spelling(
    platform: Platform,
) -> None:
    first = purchase(new_id("C"), "10.5", "2024-05-01T10:30:00+02:00")
    platform.records.record(parsed(first))
    same = {
        **first,
        "occurred_at": "2024-05-01T08:30:00Z",
        "payload": {**first["payload"], "amount": "10.50"},
    }

    (outcome,) = platform.records.record(parsed(same))

    assert outcome.outcome is Outcome.DUPLICATE
    assert outcome.duplicate is True


def test_repeats_within_one_batch_count_once_and_a_conflicting_unit_records_nothing(
    platform: Platform,
) -> None:
    a, b, c = (envelope(new_id("C")) for _ in range(3))
    clash = {**a, "channel": "web"}
    batch = parsed(a, a, b, clash, c)

    # Units: [a, a] and [b, clash] and [c]: the second holds a conflict.
    outcomes = platform.records.record(batch, units=[2, 2, 1])

    assert [o.outcome for o in outcomes] == [
        Outcome.RECORDED,
        Outcome.DUPLICATE,
        Outcome.WITHHELD,
        Outcome.CONFLICT,
        Outcome.RECORDED,
    ]
    assert outcomes[3].differing == ("channel",)
    assert set(recorded_event_ids(platform.records)) == {a["event_id"], c["event_id"]}


def test_a_conflict_inside_one_unit_names_the_fields_that_differ(platform: Platform) -> None:
    a = envelope(new_id("C"))
    outcomes = platform.records.record(parsed(a, {**a, "emotion": -2}), units=[2])
    assert [o.outcome for o in outcomes] == [Outcome.WITHHELD, Outcome.CONFLICT]
    assert outcomes[1].differing == ("emotion",)
    assert recorded_event_ids(platform.records) == Counter()


def test_two_recorders_racing_on_the_same_event_ids_record_each_once(
    make_platform: Callable[..., Platform],
) -> None:
    """Two processes on one database (each with its own aggregate cache): the index's
    unique key fails the loser's transaction, which is retried and finds duplicates."""
    platform = make_platform()
    other = CustomerRecords(
        env=platform.records.env, identity_secret=platform.settings.identity_secret_bytes
    )
    customers = [new_id("C") for _ in range(3)]
    batches = [parsed(*(envelope(customers[i % 3]) for i in range(30))) for _ in range(10)]
    outcomes: list[list[Any]] = [[], []]

    def run(records: CustomerRecords, slot: int) -> None:
        for batch in batches:
            outcomes[slot] += records.record(batch)

    try:
        threads = [
            threading.Thread(target=run, args=(r, i))
            for i, r in enumerate((platform.records, other))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        other.close()

    counts = recorded_event_ids(platform.records)
    assert len(counts) == 300
    assert set(counts.values()) == {1}
    both = Counter(o.outcome for o in outcomes[0] + outcomes[1])
    assert both == {Outcome.RECORDED: 300, Outcome.DUPLICATE: 300}


def test_the_touchpoint_index_is_rebuilt_from_the_event_store_alone(platform: Platform) -> None:
    batch = parsed(*(purchase(new_id("C"), "5.00") for _ in range(20)))
    platform.records.record(batch)
    recorder = platform.records._columnar()
    index = recorder.index

    def rows() -> list[Any]:
        with recorder.datastore.get_connection() as conn, conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {index.as_string(conn)} ORDER BY event_id")
            return list(cur.fetchall())

    before = rows()
    with recorder.datastore.get_connection() as conn, conn.cursor() as cur:
        cur.execute(f"DELETE FROM {index.as_string(conn)}")

    assert platform.records.index_touchpoints() == 20
    assert rows() == before
    assert platform.records.index_touchpoints() == 0  # only when empty


@st.composite
def sendings(draw: st.DrawFn) -> list[tuple[int, int, int]]:
    """(event id, content variant, customer) triples: re-sends, conflicts, other
    customers, in any order."""
    return draw(
        st.lists(
            st.tuples(st.integers(0, 5), st.integers(0, 2), st.integers(0, 2)),
            min_size=1,
            max_size=25,
        )
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sent=sendings(), batch_size=st.integers(1, 8))
def test_whatever_is_sent_each_event_id_is_recorded_once_with_its_first_content(
    platform: Platform, sent: list[tuple[int, int, int]], batch_size: int
) -> None:
    run = new_id("run")  # one platform for every example: each its own ids
    raw = [
        envelope(f"{run}-C{customer}", event_id=f"{run}-E{event}", emotion=variant)
        for event, variant, customer in sent
    ]
    first: dict[str, dict[str, Any]] = {}
    for r in raw:
        first.setdefault(r["event_id"], r)

    outcomes = []
    for start in range(0, len(raw), batch_size):
        outcomes += platform.records.record(parsed(*raw[start : start + batch_size]))

    ours = {e: n for e, n in recorded_event_ids(platform.records).items() if e.startswith(run)}
    assert ours == dict.fromkeys(first, 1)
    for r, outcome in zip(raw, outcomes, strict=True):
        original = first[r["event_id"]]
        if r is original:
            assert outcome.outcome is Outcome.RECORDED
        elif (r["emotion"], r["customer"]) == (original["emotion"], original["customer"]):
            assert outcome.outcome is Outcome.DUPLICATE
        else:
            assert outcome.outcome is Outcome.CONFLICT
            assert outcome.differing
    for event_id, original in first.items():
        (event,) = [
            e
            for e in platform.records.touchpoints_of(
                customer_of(platform, original["customer"]["id"])
            )
            if e.event_id == event_id
        ]
        assert event.emotion == original["emotion"]
