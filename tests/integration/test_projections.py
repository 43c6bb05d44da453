"""Record -> project on real PostgreSQL: idempotency, event-time order, exactly once,
and replay == live."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.touchpoints import TouchpointIn, parse_touchpoint
from infra.bootstrap import Platform
from projections.store import ReadModelStore
from streams.projector import FOLLOWER, follow, head, replay
from tests.builders import complaint, envelope, purchase, survey_answer
from tests.conftest import customer_of, embedded
from tests.identities import by_source_id

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def touchpoint(customer: str, minute: int, **fields: Any) -> TouchpointIn:
    """``customer``'s visit ``minute`` minutes after T0, parsed; ``fields`` replace."""
    return parse_touchpoint(envelope(customer, T0 + timedelta(minutes=minute), **fields))


def record(platform: Platform, touchpoints: list[TouchpointIn]) -> None:
    platform.driver.submit(touchpoints).result(timeout=30)
    assert embedded(platform).wait_until_projected()


def snapshot(store: ReadModelStore) -> dict[str, dict[str, Any]]:
    return {p.name: store.dump(p.name) for p in store.projections}


def test_a_duplicate_event_id_counts_once(platform: Platform) -> None:
    first = touchpoint(
        "C1", 0, type="purchase", payload={"order_id": "O1", "amount": "5.00", "currency": "EUR"}
    )
    record(platform, [first])
    outcome = platform.driver.submit([first, first]).result(timeout=30)
    assert [o.duplicate for o in outcome] == [True, True]
    assert embedded(platform).wait_until_projected()
    customer = platform.store.get("customer", customer_of(platform, "C1"))
    assert customer is not None
    assert customer["touchpoints_total"] == 1
    assert customer["spend_by_currency"] == {"EUR": "5.00"}
    assert len(platform.records.touchpoints_of(customer_of(platform, "C1"))) == 1


def test_a_duplicate_inside_one_batch_counts_once(platform: Platform) -> None:
    tp = touchpoint("C2", 0)
    outcome = platform.driver.submit([tp, tp]).result(timeout=30)
    assert [o.duplicate for o in outcome] == [False, True]


def test_late_touchpoints_land_by_event_time_in_journey_and_timeline(platform: Platform) -> None:
    journey = {"id": f"J-{uuid.uuid4().hex[:6]}", "type": "car_service"}
    steps = [("arrival", 0, 1), ("waiting", 20, -3), ("farewell", 60, 2)]
    tps = {
        step: touchpoint("C3", minute, journey={**journey, "step": step}, emotion=emotion)
        for step, minute, emotion in steps
    }
    record(platform, [tps["farewell"]])
    record(platform, [tps["arrival"]])
    record(platform, [tps["waiting"]])  # the worst moment arrives last, happened in between

    state = platform.store.get("journey", journey["id"])
    assert state is not None
    assert [t["step"] for t in state["touchpoints"]] == ["arrival", "waiting", "farewell"]
    assert [p["emotion"] for p in state["curve"]] == [1, -3, 2]
    assert (state["peak"], state["end"], state["peak_end_score"]) == (-3, 2, -0.5)
    timeline = platform.records.touchpoints_of(customer_of(platform, "C3"))
    assert [e.journey["step"] for e in timeline if e.journey] == ["arrival", "waiting", "farewell"]
    customer = platform.store.get("customer", customer_of(platform, "C3"))
    assert customer is not None
    assert customer["first_seen"].startswith("2026-03-01T09:00")
    assert customer["last_seen"].startswith("2026-03-01T10:00")


def test_redelivered_notifications_change_no_read_model(platform: Platform) -> None:
    record(
        platform,
        [
            touchpoint("C4", m, emotion=1, journey={"id": "J4", "type": "t", "step": f"s{m}"})
            for m in range(5)
        ],
    )
    before = snapshot(platform.store)
    # As if the follower crashed after writing but before its position was saved: the
    # position goes back and the same notifications are delivered again.
    with platform.store.connection() as conn:
        platform.store.lock_position(conn, FOLLOWER)
        platform.store.set_position(conn, FOLLOWER, 0)
    with platform.store.connection() as conn:
        again = follow(platform.records, platform.store, batch_size=1000, conn=conn)
    assert again.read > 0 and again.applied == 0
    assert snapshot(platform.store) == before


def test_replay_while_ingest_goes_on_ends_equal_to_live(platform: Platform) -> None:
    record(platform, [touchpoint(f"C{i % 7}", i, emotion=i % 7 - 3) for i in range(300)])
    stop = threading.Event()

    def keep_ingesting() -> None:
        minute = 1000
        while not stop.is_set():
            platform.driver.submit([touchpoint(f"C{minute % 7}", minute)]).result(timeout=30)
            minute += 1

    writer = threading.Thread(target=keep_ingesting)
    writer.start()
    try:
        replay(platform.records, platform.store, batch_size=50)
    finally:
        stop.set()
        writer.join()
    assert embedded(platform).wait_until_projected()
    live = snapshot(platform.store)
    replay(platform.records, platform.store, batch_size=500)
    assert snapshot(platform.store) == live
    assert platform.store.position(FOLLOWER) == head(platform.records)


# -- replay == live, as a property ------------------------------------------------------

CUSTOMERS = ["A", "B", "C"]
JOURNEYS = ["J1", "J2"]


@st.composite
def touchpoint_sequences(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 25))
    events: list[dict[str, Any]] = []
    for _ in range(count):
        if events and draw(st.integers(0, 9)) == 0:
            events.append(draw(st.sampled_from(events)))  # a redelivery
            continue
        kind = draw(
            st.sampled_from(
                ["visit", "purchase", "survey", "complaint_filed", "complaint_resolved"]
            )
        )
        # Drawn in the order the examples were first drawn in (the gate profile replays them).
        at = T0 + timedelta(minutes=draw(st.integers(0, 600)))
        fields: dict[str, Any] = {
            "event_id": f"e{len(events)}",  # distinct: the same id is the same event
            "channel": draw(st.sampled_from(["web", "store", "call_center"])),
        }
        customer = draw(st.sampled_from(CUSTOMERS))
        if draw(st.booleans()):
            fields["journey"] = {
                "id": f"{customer}-{draw(st.sampled_from(JOURNEYS))}",
                "type": "visit_flow",
                "step": draw(st.sampled_from(["arrival", "waiting", "farewell"])),
            }
            fields["emotion"] = draw(st.integers(-3, 3))
        if kind == "purchase":
            cents = draw(st.integers(0, 100_000))
            order_id = f"O{draw(st.integers(0, 5))}"
            amount = f"{cents // 100}.{cents % 100:02d}"
            base = purchase(customer, amount, at, order_id=order_id)
        elif kind == "survey":
            metric = draw(st.sampled_from(["nps", "csat"]))
            value = draw(st.integers(1, 10 if metric == "nps" else 5))
            base = survey_answer(customer, metric, value, at, survey_id="S", question_id=metric)
        elif kind.startswith("complaint"):
            step = kind.removeprefix("complaint_")
            complaint_id = f"K{draw(st.integers(0, 2))}"
            base = complaint(customer, step, at, complaint_id=complaint_id, category="billing")
        else:
            base = envelope(customer, at, type=kind)
        base.update(fields)
        events.append(base)
    return events


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sequence=touchpoint_sequences(),
    request_size=st.integers(1, 5),
    replay_batch=st.integers(1, 10),
)
def test_replay_equals_live_for_any_touchpoint_sequence(
    make_platform: Callable[..., Platform],
    sequence: list[dict[str, Any]],
    request_size: int,
    replay_batch: int,
) -> None:
    with make_platform() as platform:
        touchpoints = [parse_touchpoint(raw) for raw in sequence]
        for start in range(0, len(touchpoints), request_size):  # projected as they arrive
            record(platform, touchpoints[start : start + request_size])
        live = snapshot(platform.store)
        replay(platform.records, platform.store, batch_size=replay_batch)
        assert snapshot(platform.store) == live


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=touchpoint_sequences(), shuffle=st.randoms(use_true_random=False))
def test_arrival_order_does_not_change_any_projection(
    make_platform: Callable[..., Platform], sequence: list[dict[str, Any]], shuffle: Any
) -> None:
    """Guarantee 5: late and out-of-order touchpoints land where they happened. Each
    platform gives its customers ids of its own (random): they are compared by source id."""
    arrived = list(sequence)
    shuffle.shuffle(arrived)
    sources = {raw["customer"]["id"] for raw in sequence}
    states = []
    for order in (sequence, arrived):
        with make_platform() as platform:
            record(platform, [parse_touchpoint(raw) for raw in order])
            states.append(by_source_id(platform, snapshot(platform.store), sources))
    assert states[0] == states[1]
