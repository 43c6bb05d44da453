"""Maintained measures and the change feed on real PostgreSQL: what events, the clock and
new population inputs change is recorded once, in order, and a replay rebuilds it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.touchpoints import parse_touchpoint
from infra import jobs
from infra.bootstrap import Platform
from projections import maintained
from projections.store import ReadModelStore
from streams.projector import replay
from tests.builders import complaint, envelope, purchase
from tests.conftest import customer_of, embedded
from tests.integration.test_projections import record, touchpoint_sequences


def feed(store: ReadModelStore) -> list[dict[str, Any]]:
    """Every change, without what differs between a live run and a replay (the position,
    when it was written)."""
    found = maintained.change_page(store, after=0, limit=1_000_000)
    return [{k: v for k, v in c.items() if k not in ("position", "recorded_at")} for c in found]


def by_customer(changes: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for change in changes:
        grouped.setdefault(change["customer_id"], []).append(change)
    return grouped


def measures(store: ReadModelStore) -> dict[str, Any]:
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT customer_id, measures, facts, derived_at, due_at, inputs_version"
            " FROM rm_measures"
        )
        return {r[0]: r[1:] for r in cur.fetchall()}


def kinds(store: ReadModelStore, customer_id: str) -> list[str]:
    return [
        c["kind"]
        for c in maintained.change_page(store, after=0, limit=1000, customer_id=customer_id)
    ]


def test_a_first_purchase_is_maintained_and_its_changes_recorded(platform: Platform) -> None:
    now = datetime.now(UTC)
    record(platform, [parse_touchpoint(purchase("C1", "25.00", now - timedelta(days=1)))])
    customer_id = customer_of(platform, "C1")
    held = maintained.measures_of(platform.store, customer_id)
    assert held is not None
    assert held["lifecycle"]["stage"] == "first_time"
    assert held["value_tier"]["value_in_window"] == "25.00"
    changes = maintained.change_page(platform.store, after=0, limit=100, customer_id=customer_id)
    assert [c["kind"] for c in changes] == ["tier", "rfm_segment", "lifecycle", "loyalty"]
    assert changes[2]["before"] is None and changes[2]["after"] == "first_time"
    assert changes[0]["cause"]["type"] == "purchase"
    assert [c["position"] for c in changes] == sorted(c["position"] for c in changes)


def test_a_journey_closes_when_the_clock_passes_its_inactivity_gap(platform: Platform) -> None:
    start = datetime.now(UTC) - timedelta(minutes=5)
    steps = [("arrival", -2), ("waiting", 1)]
    record(
        platform,
        [
            parse_touchpoint(
                envelope(
                    "C2",
                    start + timedelta(minutes=i),
                    journey={"id": "J-2", "type": "car_service", "step": step},
                    emotion=emotion,
                )
            )
            for i, (step, emotion) in enumerate(steps)
        ],
    )
    customer_id = customer_of(platform, "C2")
    assert "journey_closed" not in kinds(platform.store, customer_id)
    last = start + timedelta(minutes=1)
    jobs.drive_clock(platform, last + timedelta(hours=3))  # the gap is 4 h
    assert "journey_closed" not in kinds(platform.store, customer_id)
    jobs.drive_clock(platform, last + timedelta(hours=5))
    closed = maintained.change_page(
        platform.store, after=0, limit=10, kinds=["journey_closed"], customer_id=customer_id
    )
    assert len(closed) == 1
    assert closed[0]["subject"] == "J-2"
    assert closed[0]["cause"] == {
        "clock": (last + timedelta(hours=4)).isoformat(timespec="microseconds")
    }
    assert closed[0]["after"]["closed_by"] == "inactivity"
    assert closed[0]["after"]["peak_end_score"] == -0.5
    assert closed[0]["at"] == last + timedelta(hours=4)
    jobs.drive_clock(platform, last + timedelta(hours=9))
    assert kinds(platform.store, customer_id).count("journey_closed") == 1  # once


def test_new_population_inputs_reach_every_customer_with_their_changes(platform: Platform) -> None:
    now = datetime.now(UTC)
    record(
        platform,
        [
            parse_touchpoint(purchase(f"P{i}", f"{10 * (i + 1)}.00", now - timedelta(days=3)))
            for i in range(20)
        ],
    )
    # Before any population inputs every buyer ranks first.
    tiers = {c: m[0]["value_tier"]["tier"] for c, m in measures(platform.store).items()}
    assert set(tiers.values()) == {"vip"}
    refreshed = jobs.refresh_population(platform, datetime.now(UTC))
    assert refreshed.version == 1 and refreshed.ticks >= 1
    rows = measures(platform.store)
    assert {m[4] for m in rows.values()} == {1}  # every customer on the new version
    by_spend = {
        customer_of(platform, f"P{i}"): rows[customer_of(platform, f"P{i}")][0]["value_tier"][
            "tier"
        ]
        for i in range(20)
    }
    top = customer_of(platform, "P19")
    assert by_spend[top] == "vip"  # 1% of 20: the best one
    assert sum(t == "small" for t in by_spend.values()) == 16  # the bottom 80%
    moved = maintained.change_page(platform.store, after=0, limit=1000, kinds=["tier"])
    demoted = [c for c in moved if c["cause"] == {"inputs": 1}]
    assert len(demoted) == 19 and all(c["before"] == "vip" for c in demoted)
    assert jobs.refresh_population(platform, datetime.now(UTC)).version is None  # unchanged


def by(platform: Platform, kind: str, value: str) -> list[tuple[str, str, str]]:
    return platform.records.identity.find([(kind, value)])


def test_a_merge_is_a_change_of_the_survivor(platform: Platform) -> None:
    now = datetime.now(UTC) - timedelta(hours=1)
    record(
        platform,
        [
            parse_touchpoint(purchase({"email": "m1@example.com"}, "5.00", now)),
            parse_touchpoint(purchase({"phone": "+33612345678"}, "7.00", now)),
        ],
    )
    first, second = (
        found[0][2]
        for found in (
            by(platform, "email", "m1@example.com"),
            by(platform, "phone", "+33612345678"),
        )
    )
    record(
        platform,
        [parse_touchpoint(envelope({"email": "m1@example.com", "phone": "+33612345678"}, now))],
    )
    survivor = by(platform, "email", "m1@example.com")[0][2]
    absorbed = second if survivor == first else first
    merged = maintained.change_page(platform.store, after=0, limit=10, kinds=["merged"])
    assert [(c["customer_id"], c["subject"]) for c in merged] == [(survivor, absorbed)]
    held = maintained.measures_of(platform.store, survivor)
    assert held is not None and held["orders"] == 2
    assert maintained.measures_of(platform.store, absorbed) is None


def test_complaints_open_and_close_in_the_feed(platform: Platform) -> None:
    at = datetime.now(UTC) - timedelta(hours=2)
    record(platform, [parse_touchpoint(complaint("K", "filed", at, complaint_id="K1"))])
    record(
        platform,
        [parse_touchpoint(complaint("K", "resolved", at + timedelta(hours=1), complaint_id="K1"))],
    )
    found = maintained.change_page(
        platform.store, after=0, limit=10, kinds=["complaint_opened", "complaint_closed"]
    )
    assert [(c["kind"], c["subject"]) for c in found] == [
        ("complaint_opened", "K1"),
        ("complaint_closed", "K1"),
    ]


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sequence=touchpoint_sequences(),
    request_size=st.integers(1, 5),
    ticks=st.lists(st.integers(1, 24 * 400), min_size=0, max_size=4, unique=True),
    refresh_after=st.integers(0, 40),
    replay_batch=st.integers(1, 10),
)
def test_a_replay_rebuilds_the_measures_and_every_change(
    make_platform: Callable[..., Platform],
    sequence: list[dict[str, Any]],
    request_size: int,
    ticks: list[int],
    refresh_after: int,
    replay_batch: int,
) -> None:
    """Live: touchpoints arrive in requests, population inputs are refreshed once, the
    clock ticks at a few later instants (hours ahead). A replay of the log gives the
    same measures and the same changes, customer by customer, in the same order."""
    with make_platform() as platform:
        touchpoints = [parse_touchpoint(raw) for raw in sequence]
        now = datetime.now(UTC)
        for start in range(0, len(touchpoints), request_size):
            record(platform, touchpoints[start : start + request_size])
            if start <= refresh_after < start + request_size:
                jobs.refresh_population(platform, datetime.now(UTC))
        for hours in sorted(ticks):
            jobs.drive_clock(platform, now + timedelta(hours=hours))
        live_feed, live_measures = feed(platform.store), measures(platform.store)
        assert len({c["change_id"] for c in live_feed}) == len(live_feed)
        replay(platform.records, platform.store, batch_size=replay_batch)
        assert embedded(platform).wait_until_projected()
        assert by_customer(feed(platform.store)) == by_customer(live_feed)
        assert measures(platform.store) == live_measures


def test_a_duplicate_or_a_conflicting_resend_changes_nothing(platform: Platform) -> None:
    at = datetime.now(UTC) - timedelta(hours=3)
    sent = purchase("D1", "30.00", at, order_id="O-1")
    record(platform, [parse_touchpoint(sent)])
    before = feed(platform.store), measures(platform.store)
    record(platform, [parse_touchpoint(sent)])  # the same event again
    other = {**sent, "payload": {**sent["payload"], "amount": "31.00"}}
    outcome = platform.driver.submit([parse_touchpoint(other)]).result(timeout=30)
    assert [o.outcome.value for o in outcome] == ["conflict"]
    assert embedded(platform).wait_until_projected()
    assert (feed(platform.store), measures(platform.store)) == before
