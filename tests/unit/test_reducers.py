"""Pure projection reducers (customer, journey) and their view helpers; loyalty as the
maintained measures derive it from the customer document.

Events are real ``Customer.TouchpointRecorded`` events, made by recording parsed
envelopes on a fresh Customer aggregate; nothing here touches a database.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.consent import permits
from domain.customer import Customer
from domain.touchpoints import parse_touchpoint, touchpoint_of
from projections import customer, journeys, measures
from projections.base import RecordedTouchpoint, State, insert_by_time, utc_iso
from tests import builders
from tests.builders import Envelope

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
DAY = 24 * 60  # minutes
Reducer = Callable[[State | None, RecordedTouchpoint], State]


def when(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def iso(minute: int) -> str:
    return utc_iso(when(minute))


# Thin wrappers of tests/builders: every envelope here is customer C1's, ``minute``
# minutes after T0, with the event id the test names.


def touchpoint(event_id: str, minute: int, kind: str = "visit", **fields: Any) -> Envelope:
    """A raw envelope for customer C1, ``minute`` minutes after T0."""
    return builders.envelope("C1", when(minute), event_id=event_id, type=kind, **fields)


def step(name: str, journey_id: str = "J1") -> dict[str, str]:
    return {"id": journey_id, "type": "car_service", "step": name}


def purchase(
    event_id: str, minute: int, order_id: str, amount: str, currency: str = "EUR", **fields: Any
) -> Envelope:
    at = when(minute)
    return builders.purchase(
        "C1", amount, at, currency=currency, order_id=order_id, event_id=event_id, **fields
    )


def complaint(
    event_id: str,
    minute: int,
    kind: str,
    complaint_id: str = "K1",
    *,
    channel: str = "store",
    journey: dict[str, str] | None = None,
    **payload: Any,
) -> Envelope:
    """A complaint step ``kind`` (``complaint_filed`` adds its category, billing)."""
    step_name = kind.removeprefix("complaint_")
    raw = builders.complaint("C1", step_name, when(minute), complaint_id=complaint_id, **payload)
    return raw | {"event_id": event_id, "channel": channel, "journey": journey}


def filed(
    event_id: str,
    minute: int,
    complaint_id: str = "K1",
    *,
    channel: str = "store",
    journey: dict[str, str] | None = None,
    **payload: Any,
) -> Envelope:
    return complaint(
        event_id,
        minute,
        "complaint_filed",
        complaint_id,
        channel=channel,
        journey=journey,
        **payload,
    )


def answer(
    event_id: str,
    minute: int,
    metric: str,
    value: int | str,
    question_id: str = "Q1",
    *,
    feature: str | None = None,
    **fields: Any,
) -> Envelope:
    extra = {} if feature is None else {"feature": feature}
    raw = builders.survey_answer(
        "C1", metric, value, when(minute), question_id=question_id, **extra
    )
    return raw | {"event_id": event_id, **fields}


def consent(
    event_id: str, minute: int, purpose: str, *, granted: bool = True, **fields: Any
) -> Envelope:
    """A ``consent_given`` (or, not ``granted``, ``consent_withdrawn``) for ``purpose``;
    ``fields`` add payload fields (policy_version, method...) or, for ``channel``,
    ``journey``, replace envelope fields."""
    envelope_fields = {k: fields.pop(k) for k in ("channel", "journey") if k in fields}
    kind = "consent_given" if granted else "consent_withdrawn"
    payload = {"purpose": purpose, **fields}
    return touchpoint(event_id, minute, kind, payload=payload, **envelope_fields)


def recorded(*raws: dict[str, Any]) -> list[RecordedTouchpoint]:
    """The TouchpointRecorded events of C1, in the order the envelopes are given."""
    aggregate = Customer.register("C1")
    for raw in raws:
        assert aggregate.record_touchpoint(touchpoint_of(parse_touchpoint(raw)))
    return [e for e in aggregate.collect_events() if isinstance(e, Customer.TouchpointRecorded)]


def fold(
    reduce: Reducer, events: Sequence[RecordedTouchpoint], state: State | None = None
) -> State:
    for event in events:
        state = reduce(state, event)
    assert state is not None
    return state


def fold_checking_purity(reduce: Reducer, events: Sequence[RecordedTouchpoint]) -> State:
    """Fold, then check that no state handed to ``reduce`` (nor any event) changed since,
    even through structure shared with a later state."""
    given_states: list[tuple[State, State]] = []
    events_before = [copy.deepcopy((e.journey, e.payload, e.identifiers)) for e in events]
    state: State | None = None
    for event in events:
        if state is not None:
            given_states.append((state, copy.deepcopy(state)))
        state = reduce(state, event)
    for given_state, snapshot in given_states:
        assert given_state == snapshot
    assert [(e.journey, e.payload, e.identifiers) for e in events] == events_before
    assert state is not None
    return state


def loyalty_view(state: State | None, as_of: datetime, **overrides: Any) -> dict[str, Any]:
    """The loyalty quadrant of a customer document as the maintained measures derive
    it (``projections.measures.loyalty_of``), with a 30-day window unless told."""
    options: dict[str, Any] = {
        "loyalty_nps_high": 9,
        "loyalty_csat_high": 4,
        "loyalty_repeat_purchases": 2,
        "loyalty_window": timedelta(days=30),
    }
    names = {
        "nps_high": "loyalty_nps_high",
        "csat_high": "loyalty_csat_high",
        "repeat_purchases": "loyalty_repeat_purchases",
        "window": "loyalty_window",
    }
    options.update({names[k]: v for k, v in overrides.items()})
    derived = measures.derive(
        state or customer.fold("C1", []), measures.Inputs(), measures.Rules(**options), as_of
    )
    found: dict[str, Any] = derived["loyalty"]
    return found


# ---------------------------------------------------------------------------------------
# base: utc_iso, insert_by_time
# ---------------------------------------------------------------------------------------


def test_utc_iso_is_fixed_width_utc() -> None:
    plus_two = timezone(timedelta(hours=2))

    assert utc_iso(datetime(2024, 5, 1, 10, tzinfo=plus_two)) == "2024-05-01T08:00:00.000000+00:00"
    assert utc_iso(datetime(2024, 5, 1, 8, 0, 0, 5, UTC)) == "2024-05-01T08:00:00.000005+00:00"


NAIVE_TIMES = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1))
ZONES = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=2)),
        timezone(timedelta(hours=5, minutes=45)),
        timezone(timedelta(hours=-9, minutes=-30)),
    ]
)


@given(NAIVE_TIMES, NAIVE_TIMES, ZONES, ZONES)
def test_utc_iso_string_order_is_event_time_order(
    a: datetime, b: datetime, zone_a: timezone, zone_b: timezone
) -> None:
    first, second = a.replace(tzinfo=zone_a), b.replace(tzinfo=zone_b)

    assert (utc_iso(first) < utc_iso(second)) == (first < second)
    assert (utc_iso(first) == utc_iso(second)) == (first == second)


def test_insert_by_time_places_a_late_item_where_it_happened_without_touching_the_list() -> None:
    items = [{"occurred_at": iso(0), "event_id": "a"}, {"occurred_at": iso(20), "event_id": "c"}]
    before = copy.deepcopy(items)

    result = insert_by_time(items, {"occurred_at": iso(10), "event_id": "b"})

    assert [i["event_id"] for i in result] == ["a", "b", "c"]
    assert items == before


def test_insert_by_time_orders_equal_times_by_event_id() -> None:
    items = [{"occurred_at": iso(0), "event_id": "b"}]

    result = insert_by_time(items, {"occurred_at": iso(0), "event_id": "a"})
    result = insert_by_time(result, {"occurred_at": iso(0), "event_id": "c"})

    assert [i["event_id"] for i in result] == ["a", "b", "c"]


# ---------------------------------------------------------------------------------------
# Journey reducer
# ---------------------------------------------------------------------------------------


def test_out_of_order_touchpoints_end_up_in_event_time_order() -> None:
    events = recorded(
        touchpoint("tp-3", 30, journey=step("farewell")),
        touchpoint("tp-1", 0, journey=step("arrival")),
        touchpoint("tp-2", 10, journey=step("waiting")),
    )

    state = fold(journeys.reduce, events)

    assert [t["step"] for t in state["touchpoints"]] == ["arrival", "waiting", "farewell"]
    assert [t["occurred_at"] for t in state["touchpoints"]] == [iso(0), iso(10), iso(30)]
    assert (state["started_at"], state["last_at"]) == (iso(0), iso(30))


def test_journey_document_names_its_journey_type_and_customer() -> None:
    state = fold(journeys.reduce, recorded(touchpoint("tp-1", 0, journey=step("arrival"))))

    assert state["journey_id"] == "J1"
    assert state["journey_type"] == "car_service"
    assert state["customer_id"] == "C1"
    assert state["touchpoints"] == [
        {
            "event_id": "tp-1",
            "occurred_at": iso(0),
            "step": "arrival",
            "type": "visit",
            "channel": "store",
            "emotion": None,
        }
    ]


def test_touchpoints_at_the_same_instant_are_ordered_by_event_id() -> None:
    events = recorded(
        touchpoint("tp-b", 0, journey=step("welcome"), emotion=1),
        touchpoint("tp-a", 0, journey=step("arrival"), emotion=-1),
    )

    state = fold(journeys.reduce, events)

    assert [t["event_id"] for t in state["touchpoints"]] == ["tp-a", "tp-b"]
    assert state["end"] == 1


def test_curve_skips_touchpoints_without_emotion() -> None:
    events = recorded(
        touchpoint("tp-1", 0, journey=step("arrival"), emotion=1),
        touchpoint("tp-2", 5, journey=step("welcome")),
        touchpoint("tp-3", 10, journey=step("waiting"), emotion=-2),
    )

    state = fold(journeys.reduce, events)

    assert state["curve"] == [
        {"step": "arrival", "occurred_at": iso(0), "emotion": 1},
        {"step": "waiting", "occurred_at": iso(10), "emotion": -2},
    ]
    assert len(state["touchpoints"]) == 3


def test_peak_end_is_recomputed_as_late_touchpoints_arrive() -> None:
    arrival, waiting, farewell, price, welcome = recorded(
        touchpoint("tp-1", 0, journey=step("arrival"), emotion=1),
        touchpoint("tp-2", 10, journey=step("waiting"), emotion=-2),
        touchpoint("tp-5", 30, journey=step("farewell"), emotion=2),
        touchpoint("tp-4", 20, journey=step("price_explanation"), emotion=-3),
        touchpoint("tp-3", 5, journey=step("welcome")),
    )

    def remembered(state: State) -> tuple[Any, ...]:
        keys = ("peak", "best", "worst", "end", "peak_end_score", "mean_emotion")
        return tuple(state[k] for k in keys)

    # [1, -2]: peak -2, end -2 -> -2.0; mean -0.5
    state = fold(journeys.reduce, [arrival, waiting])
    assert remembered(state) == (-2, 1, -2, -2, -2.0, -0.5)
    # [1, -2, 2]: |-2| == |2| -> peak -2; end 2 -> 0.0; mean 1/3
    state = journeys.reduce(state, farewell)
    assert remembered(state) == (-2, 2, -2, 2, 0.0, 0.3333)
    # [1, -2, -3, 2]: the late price explanation becomes the peak; end stays 2 -> -0.5
    state = journeys.reduce(state, price)
    assert remembered(state) == (-3, 2, -3, 2, -0.5, -0.5)
    # an unscored late touchpoint changes the timeline, not the curve
    state = journeys.reduce(state, welcome)
    assert remembered(state) == (-3, 2, -3, 2, -0.5, -0.5)
    assert len(state["touchpoints"]) == 5


def test_journey_without_scored_touchpoints_has_no_peak_end() -> None:
    state = fold(journeys.reduce, recorded(touchpoint("tp-1", 0, journey=step("arrival"))))

    assert state["curve"] == []
    for key in ("peak", "best", "worst", "end", "peak_end_score", "mean_emotion"):
        assert state[key] is None


def journey_of(*minutes_and_steps: tuple[int, str]) -> State:
    raws = [touchpoint(f"tp-{m}", m, journey=step(s)) for m, s in minutes_and_steps]
    return fold(journeys.reduce, recorded(*raws))


def test_journey_is_closed_by_reaching_an_end_step() -> None:
    state = journey_of((0, "arrival"), (20, "farewell"))

    result = journeys.closure(
        state, end_steps=["handover", "farewell"], inactivity_gap=timedelta(hours=2), now=when(21)
    )

    assert result == {"closed": True, "closed_by": "end_step", "closed_at": iso(20)}


def test_journey_is_closed_at_its_first_end_step_by_event_time() -> None:
    state = journey_of((30, "farewell"), (0, "arrival"), (20, "handover"))

    result = journeys.closure(
        state, end_steps=["handover", "farewell"], inactivity_gap=timedelta(hours=2), now=when(31)
    )

    assert result["closed_at"] == iso(20)


def test_journey_is_closed_once_the_inactivity_gap_has_passed() -> None:
    state = journey_of((0, "arrival"), (10, "waiting"))

    result = journeys.closure(
        state, end_steps=["farewell"], inactivity_gap=timedelta(hours=1), now=when(10 + 61)
    )

    assert result == {"closed": True, "closed_by": "inactivity", "closed_at": iso(70)}


def test_journey_closes_by_inactivity_exactly_when_the_gap_ends() -> None:
    state = journey_of((0, "arrival"))
    now_in_tokyo = when(60).astimezone(timezone(timedelta(hours=9)))

    result = journeys.closure(
        state, end_steps=["farewell"], inactivity_gap=timedelta(hours=1), now=now_in_tokyo
    )

    assert result == {"closed": True, "closed_by": "inactivity", "closed_at": iso(60)}


def test_journey_is_open_before_the_gap_and_without_an_end_step() -> None:
    state = journey_of((0, "arrival"), (10, "waiting"))

    result = journeys.closure(
        state, end_steps=["farewell"], inactivity_gap=timedelta(hours=1), now=when(69)
    )

    assert result == {"closed": False, "closed_by": None, "closed_at": None}


def test_inactivity_counts_from_the_latest_touchpoint_by_event_time() -> None:
    # The early touchpoint arrives last; the gap still runs from minute 50.
    state = journey_of((50, "waiting"), (0, "arrival"))

    result = journeys.closure(
        state, end_steps=["farewell"], inactivity_gap=timedelta(hours=1), now=when(100)
    )

    assert result["closed"] is False


# ---------------------------------------------------------------------------------------
# Customer reducer
# ---------------------------------------------------------------------------------------


def test_customer_counts_touchpoints_by_type_and_channel() -> None:
    events = recorded(
        touchpoint("tp-1", 0, "visit", channel="store"),
        touchpoint("tp-2", 1, "call", channel="phone"),
        purchase("tp-3", 2, "O1", "10.00", channel="web"),
        purchase("tp-4", 3, "O2", "5.00", channel="store"),
    )

    state = fold(customer.reduce, events)

    assert state["customer_id"] == "C1"
    assert state["touchpoints_total"] == 4
    assert state["counts_by_type"] == {"visit": 1, "call": 1, "purchase": 2}
    assert state["counts_by_channel"] == {"store": 2, "phone": 1, "web": 1}


def test_first_and_last_seen_follow_event_time_when_events_arrive_out_of_order() -> None:
    events = recorded(
        touchpoint("tp-2", 30),
        touchpoint("tp-1", 0),
        touchpoint("tp-4", 60),
        touchpoint("tp-3", 10),
    )

    state = fold(customer.reduce, events)

    assert (state["first_seen"], state["last_seen"]) == (iso(0), iso(60))


def test_first_and_last_seen_are_in_utc() -> None:
    events = recorded(touchpoint("tp-1", 0, occurred_at="2024-05-01T11:00:00+02:00"))

    state = fold(customer.reduce, events)

    assert state["first_seen"] == state["last_seen"] == "2024-05-01T09:00:00.000000+00:00"


def test_identifiers_from_every_touchpoint_are_merged_without_repeats() -> None:
    events = recorded(
        touchpoint("tp-1", 0, customer={"id": "C1", "email": "b@x.io"}),
        touchpoint("tp-2", 1, customer={"id": "C1", "email": "a@x.io"}),
        touchpoint("tp-3", 2, customer={"id": "C1", "phone": "+4930123456", "email": "b@x.io"}),
    )

    state = fold(customer.reduce, events)

    assert state["identifiers"] == {
        "id": ["C1"],
        "email": ["a@x.io", "b@x.io"],
        "phone": ["+4930123456"],
    }


def test_spend_per_currency_is_exact() -> None:
    events = recorded(
        purchase("tp-1", 0, "O1", "0.10"),
        purchase("tp-2", 1, "O2", "0.20"),
        purchase("tp-3", 2, "O3", "5.00", currency="USD"),
    )

    state = fold(customer.reduce, events)

    assert Decimal("0.10") + Decimal("0.20") == Decimal("0.30")
    assert state["spend_by_currency"] == {"EUR": "0.30", "USD": "5.00"}
    assert customer.total_spend(state, "EUR") == Decimal("0.30")
    assert customer.total_spend(state, "USD") == Decimal("5.00")


def test_many_small_amounts_add_up_without_rounding_drift() -> None:
    events = recorded(*(purchase(f"tp-{n}", n, f"O{n}", "0.10") for n in range(10)))

    state = fold(customer.reduce, events)

    assert customer.total_spend(state, "EUR") == Decimal("1.00")


def test_spend_in_a_currency_never_bought_in_is_zero() -> None:
    state = fold(customer.reduce, recorded(purchase("tp-1", 0, "O1", "3.50")))

    assert customer.total_spend(state, "GBP") == Decimal("0.00")


def test_each_order_is_listed_once() -> None:
    events = recorded(
        purchase("tp-1", 0, "O1", "10.00"),
        purchase("tp-2", 5, "O2", "1.00"),
        purchase("tp-3", 9, "O1", "2.50"),
    )

    state = fold(customer.reduce, events)

    assert sorted(state["orders"]) == ["O1", "O2"]
    # The order re-sent under another event id does not count twice: its earliest report stands.
    assert state["spend_by_currency"] == {"EUR": "11.00"}


def test_distinct_orders_do_not_depend_on_arrival_order() -> None:
    events = recorded(purchase("tp-1", 0, "O1", "1.00"), purchase("tp-2", 10, "O2", "1.00"))

    in_order = fold(customer.reduce, events)
    late_first = fold(customer.reduce, list(reversed(events)))

    assert late_first["orders"] == in_order["orders"]


def test_recent_touchpoints_keep_the_twenty_latest_by_event_time() -> None:
    raws = [touchpoint(f"tp-{m:02d}", m, emotion=m % 7 - 3) for m in range(25)]
    random.Random(2024).shuffle(raws)

    state = fold(customer.reduce, recorded(*raws))

    recent = state["recent_touchpoints"]
    assert [t["event_id"] for t in recent] == [f"tp-{m:02d}" for m in range(5, 25)]
    assert recent[0] == {
        "event_id": "tp-05",
        "type": "visit",
        "channel": "store",
        "occurred_at": iso(5),
        "emotion": 2,
        "journey_id": None,
    }
    assert state["touchpoints_total"] == 25


def test_touchpoint_older_than_the_twenty_latest_does_not_enter_them() -> None:
    events = recorded(*(touchpoint(f"tp-{m:02d}", m) for m in range(1, 21)), touchpoint("tp-00", 0))

    state = fold(customer.reduce, events)

    assert [t["event_id"] for t in state["recent_touchpoints"]] == [
        f"tp-{m:02d}" for m in range(1, 21)
    ]
    assert state["first_seen"] == iso(0)


def test_recent_touchpoint_names_its_journey() -> None:
    state = fold(customer.reduce, recorded(touchpoint("tp-1", 0, journey=step("arrival"))))

    assert state["recent_touchpoints"][0]["journey_id"] == "J1"


def test_complaint_is_open_until_resolved() -> None:
    filing, acknowledgement, resolution = recorded(
        filed("tp-1", 0, severity="high"),
        complaint("tp-2", 10, "complaint_acknowledged"),
        complaint("tp-3", 60, "complaint_resolved", compensation="15.00"),
    )

    state = fold(customer.reduce, [filing, acknowledgement])
    (still_open,) = customer.open_complaints(state)
    assert still_open == {
        "complaint_id": "K1",
        "filed_at": iso(0),
        "acknowledged_at": iso(10),
        "category": "billing",
        "severity": "high",
        "channel": "store",
    }

    state = customer.reduce(state, resolution)
    assert customer.open_complaints(state) == []
    assert state["complaints"]["K1"]["resolved_at"] == iso(60)
    assert state["complaints"]["K1"]["compensation"] == "15.00"


def test_complaint_resolved_before_its_filing_arrives_is_not_open() -> None:
    events = recorded(
        complaint("tp-2", 60, "complaint_resolved"),
        filed("tp-1", 0),
    )

    state = fold(customer.reduce, events)

    assert customer.open_complaints(state) == []
    assert state["complaints"]["K1"]["filed_at"] == iso(0)
    assert state["complaints"]["K1"]["resolved_at"] == iso(60)


def test_complaint_step_without_a_filing_is_not_listed_as_open() -> None:
    state = fold(customer.reduce, recorded(complaint("tp-1", 0, "complaint_acknowledged")))

    assert customer.open_complaints(state) == []


def test_open_complaints_are_listed_oldest_first() -> None:
    events = recorded(
        filed("tp-1", 30, "K-late"),
        filed("tp-2", 0, "K-early"),
        filed("tp-3", 10, "K-solved"),
        complaint("tp-4", 20, "complaint_resolved", "K-solved"),
    )

    state = fold(customer.reduce, events)

    assert [c["complaint_id"] for c in customer.open_complaints(state)] == ["K-early", "K-late"]


def test_repeated_complaint_step_keeps_the_earliest_time() -> None:
    events = recorded(
        filed("tp-1", 0),
        complaint("tp-3", 30, "complaint_acknowledged"),
        complaint("tp-2", 20, "complaint_acknowledged"),
    )

    state = fold(customer.reduce, events)

    assert state["complaints"]["K1"]["acknowledged_at"] == iso(20)


def test_complaint_channel_is_where_it_was_filed_even_if_a_later_step_arrives_first() -> None:
    events = recorded(
        complaint("tp-2", 10, "complaint_acknowledged", channel="email"),
        filed("tp-1", 0, channel="phone"),
    )

    state = fold(customer.reduce, events)

    assert state["complaints"]["K1"]["channel"] == "phone"


def test_complaint_severity_is_the_latest_by_event_time_not_by_arrival() -> None:
    # Filed (default severity medium), then escalated to high ten minutes later; the
    # escalation arrives first.
    escalation, filing = recorded(
        complaint("tp-2", 10, "complaint_acknowledged", severity="high"),
        filed("tp-1", 0),
    )

    in_order = fold(customer.reduce, [filing, escalation])
    escalation_first = fold(customer.reduce, [escalation, filing])

    assert in_order["complaints"]["K1"]["severity"] == "high"
    assert escalation_first["complaints"]["K1"]["severity"] == "high"


def test_latest_survey_answer_per_question_wins_by_event_time() -> None:
    events = recorded(
        answer("tp-3", 30, "nps", 9, "Q1", channel="web"),
        answer("tp-2", 10, "csat", 4, "Q2"),
        answer("tp-1", 0, "nps", 6, "Q1"),  # older, arrives last: does not replace
    )

    state = fold(customer.reduce, events)

    fields = ("survey_id", "question_id", "metric", "value", "occurred_at", "channel")
    assert {
        slot: {k: held[k] for k in fields} for slot, held in state["survey_answers"].items()
    } == {
        "S1:Q1": {
            "survey_id": "S1",
            "question_id": "Q1",
            "metric": "nps",
            "value": 9,
            "occurred_at": iso(30),
            "channel": "web",
        },
        "S1:Q2": {
            "survey_id": "S1",
            "question_id": "Q2",
            "metric": "csat",
            "value": 4,
            "occurred_at": iso(10),
            "channel": "store",
        },
    }


def test_last_survey_answers_are_newest_first_and_limited() -> None:
    events = recorded(
        answer("tp-1", 0, "csat", 2, "Q1"),
        answer("tp-2", 20, "csat", 5, "Q3"),
        answer("tp-3", 10, "csat", 3, "Q2"),
    )

    state = fold(customer.reduce, events)

    assert [a["question_id"] for a in customer.last_survey_answers(state)] == ["Q3", "Q2", "Q1"]
    assert [a["question_id"] for a in customer.last_survey_answers(state, limit=2)] == ["Q3", "Q2"]


def test_survey_answers_given_at_the_same_instant_agree_in_any_arrival_order() -> None:
    # Equal event times must be broken the same way live and on any redelivery order
    # (as insert_by_time does with event_id), not by which answer arrived first.
    first, second = recorded(answer("tp-a", 0, "nps", 3), answer("tp-b", 0, "nps", 10))

    one_way = fold(customer.reduce, [first, second])
    other_way = fold(customer.reduce, [second, first])

    assert one_way["survey_answers"] == other_way["survey_answers"]


def test_customer_document_shows_consent_per_purpose_and_its_history() -> None:
    events = recorded(
        consent("tp-3", 30, "marketing", granted=False, channel="email", method="unsubscribe_link"),
        consent("tp-1", 0, "marketing", policy_version="v1", method="web_form", channel="web"),
        consent("tp-2", 10, "surveys", policy_version="v1", captured_by="agent-7"),
        consent("tp-4", 40, "surveys", policy_version="v2", evidence_ref="form-12"),
    )

    state = fold(customer.reduce, events)

    assert [
        (h["event_id"], h["purpose"], h["granted"], h["at"]) for h in state["consent_history"]
    ] == [
        ("tp-1", "marketing", True, iso(0)),
        ("tp-2", "surveys", True, iso(10)),
        ("tp-3", "marketing", False, iso(30)),
        ("tp-4", "surveys", True, iso(40)),
    ]
    assert state["consent_history"][0] == {
        "purpose": "marketing",
        "granted": True,
        "at": iso(0),
        "event_id": "tp-1",
        "channel": "web",
        "policy_version": "v1",
        "method": "web_form",
        "evidence_ref": None,
        "captured_by": None,
    }
    assert state["consents"] == {
        "marketing": {
            "granted": False,
            "since": iso(30),
            "decided_at": iso(30),
            "event_id": "tp-3",
            "channel": "email",
            "policy_version": None,
            "method": "unsubscribe_link",
            "evidence_ref": None,
            "captured_by": None,
        },
        "surveys": {
            "granted": True,
            "since": iso(10),  # granted without a break since the first grant
            "decided_at": iso(40),
            "event_id": "tp-4",
            "channel": "store",
            "policy_version": "v2",
            "method": None,
            "evidence_ref": "form-12",
            "captured_by": None,
        },
    }
    assert state["counts_by_type"] == {"consent_given": 3, "consent_withdrawn": 1}


def test_a_late_withdrawal_that_happened_first_does_not_undo_a_later_grant() -> None:
    events = recorded(
        consent("tp-2", 20, "marketing"),
        consent("tp-1", 10, "marketing", granted=False),  # older, arrives later
    )

    state = fold(customer.reduce, events)

    assert state["consents"]["marketing"]["granted"] is True
    assert [h["event_id"] for h in state["consent_history"]] == ["tp-1", "tp-2"]


def test_consents_of_the_document_are_what_permits_judges() -> None:
    events = recorded(
        consent("tp-1", 0, "marketing"), consent("tp-2", 30, "marketing", granted=False)
    )

    consents = customer.consents_of(fold(customer.reduce, events))

    assert permits(consents, "marketing", when(29))
    assert not permits(consents, "marketing", when(30))
    assert not permits(consents, "marketing")
    assert not permits(consents, "surveys", when(29))


def test_withdrawal_wins_a_tie_with_a_grant_in_any_arrival_order() -> None:
    grant, withdrawal = recorded(
        consent("tp-b", 5, "marketing"), consent("tp-a", 5, "marketing", granted=False)
    )

    one_way = fold(customer.reduce, [grant, withdrawal])
    other_way = fold(customer.reduce, [withdrawal, grant])

    assert one_way["consents"] == other_way["consents"]
    assert one_way["consent_history"] == other_way["consent_history"]
    assert one_way["consents"]["marketing"]["granted"] is False
    assert [h["event_id"] for h in one_way["consent_history"]] == ["tp-b", "tp-a"]


def test_a_document_projected_before_consent_existed_has_no_consents() -> None:
    state = fold(customer.reduce, recorded(touchpoint("tp-1", 0)))
    del state["consents"], state["consent_history"]

    assert customer.consents_of(state).decisions == ()
    state = customer.reduce(state, recorded(consent("tp-2", 1, "marketing"))[0])
    assert list(state["consents"]) == ["marketing"]


# ---------------------------------------------------------------------------------------
# Loyalty (Dick & Basu), from the customer document
# ---------------------------------------------------------------------------------------


def test_customer_without_answers_has_low_attitude() -> None:
    state = fold(
        customer.reduce, recorded(*(purchase(f"tp-{n}", n, f"O{n}", "1.00") for n in range(3)))
    )

    view = loyalty_view(state, as_of=when(DAY))

    assert (view["attitude"], view["attitude_basis"]) == ("low", None)
    assert view["status"] == "spurious"


def test_unknown_customer_has_no_loyalty() -> None:
    view = loyalty_view(None, as_of=when(0))

    assert (view["status"], view["attitude"], view["repeat_patronage"]) == ("none", "low", "low")
    assert view["orders_in_window"] == 0


@pytest.mark.parametrize(
    ("metric", "value", "orders", "status"),
    [
        ("nps", 9, 2, "true"),
        ("nps", 10, 1, "latent"),
        ("nps", 6, 3, "spurious"),
        ("csat", 4, 5, "true"),
        ("csat", 5, 0, "latent"),
        ("csat", 3, 2, "spurious"),
        ("csat", 2, 1, "none"),
        ("nps", 8, 0, "none"),
    ],
)
def test_loyalty_view_puts_the_customer_in_a_dick_and_basu_quadrant(
    metric: str, value: int, orders: int, status: str
) -> None:
    raws = [answer("tp-a", 0, metric, value)]
    raws += [purchase(f"tp-{n}", n + 1, f"O{n}", "1.00") for n in range(orders)]

    view = loyalty_view(fold(customer.reduce, recorded(*raws)), as_of=when(DAY))

    assert view["status"] == status


def test_latest_answer_across_nps_and_csat_decides_the_attitude() -> None:
    nps_then_csat = recorded(answer("tp-1", 0, "nps", 10), answer("tp-2", 10, "csat", 2, "Q2"))
    csat_then_nps = recorded(answer("tp-1", 0, "csat", 2), answer("tp-2", 10, "nps", 10, "Q2"))

    low = loyalty_view(fold(customer.reduce, nps_then_csat), as_of=when(DAY))
    high = loyalty_view(fold(customer.reduce, csat_then_nps), as_of=when(DAY))

    assert (low["attitude"], low["attitude_basis"]["metric"]) == ("low", "csat")
    assert (high["attitude"], high["attitude_basis"]["metric"]) == ("high", "nps")


def test_older_answer_arriving_later_does_not_decide_the_attitude() -> None:
    events = recorded(answer("tp-2", 30, "nps", 10), answer("tp-1", 0, "csat", 1, "Q2"))

    view = loyalty_view(fold(customer.reduce, events), as_of=when(DAY))

    assert view["attitude"] == "high"
    assert view["attitude_basis"] == {"metric": "nps", "value": 10, "occurred_at": iso(30)}


def test_answer_given_after_as_of_is_not_used() -> None:
    state = fold(customer.reduce, recorded(answer("tp-1", 2 * DAY, "nps", 10)))

    view = loyalty_view(state, as_of=when(DAY))

    assert (view["attitude"], view["attitude_basis"]) == ("low", None)


def test_view_as_of_an_earlier_instant_uses_the_answer_given_by_then() -> None:
    # "The most recent NPS or CSAT answer up to as_of": a later answer to another
    # question does not hide it (as of a past instant the document is folded afresh from
    # the events up to then, so a later answer to the same question cannot either).
    events = recorded(answer("tp-1", 0, "nps", 10), answer("tp-2", 50 * DAY, "nps", 2, "Q2"))

    view = loyalty_view(fold(customer.reduce, events), as_of=when(30 * DAY))

    assert view["attitude"] == "high"


def test_orders_only_count_inside_the_window_before_as_of() -> None:
    as_of = when(60 * DAY)
    events = recorded(
        purchase("tp-1", 29 * DAY, "O-too-old", "1.00"),  # 31 days before as_of
        purchase("tp-2", 30 * DAY, "O-window-start", "1.00"),  # exactly 30 days: outside
        purchase("tp-3", 30 * DAY + 1, "O-inside", "1.00"),
        purchase("tp-4", 60 * DAY, "O-at-as-of", "1.00"),  # at as_of: inside
        purchase("tp-5", 60 * DAY + 1, "O-after", "1.00"),
    )

    view = loyalty_view(fold(customer.reduce, events), as_of=as_of, repeat_purchases=3)

    assert view["orders_in_window"] == 2
    assert view["repeat_patronage"] == "low"


def test_repeat_patronage_is_high_from_the_configured_number_of_orders() -> None:
    events = recorded(*(purchase(f"tp-{n}", n, f"O{n}", "1.00") for n in range(3)))
    state = fold(customer.reduce, events)

    assert loyalty_view(state, as_of=when(DAY), repeat_purchases=3)["repeat_patronage"] == "high"
    assert loyalty_view(state, as_of=when(DAY), repeat_purchases=4)["repeat_patronage"] == "low"


def test_thresholds_come_from_the_caller() -> None:
    state = fold(customer.reduce, recorded(answer("tp-1", 0, "nps", 8)))

    assert loyalty_view(state, as_of=when(DAY), nps_high=8)["attitude"] == "high"
    assert loyalty_view(state, as_of=when(DAY), nps_high=9)["attitude"] == "low"


def test_loyalty_view_reports_the_inputs_that_decided_it() -> None:
    events = recorded(
        answer("tp-1", 0, "csat", 5),
        purchase("tp-2", 10, "O1", "1.00"),
        purchase("tp-3", 20, "O2", "1.00"),
    )

    view = loyalty_view(fold(customer.reduce, events), as_of=when(DAY), window=timedelta(days=90))

    assert view == {
        "status": "true",
        "attitude": "high",
        "attitude_basis": {"metric": "csat", "value": 5, "occurred_at": iso(0)},
        "repeat_patronage": "high",
        "orders_in_window": 2,
        "window_days": 90,
        "thresholds": {"nps_high": 9, "csat_high": 4, "repeat_purchases": 2},
        "as_of": iso(DAY),
    }


def test_answers_at_the_same_instant_decide_loyalty_the_same_in_any_arrival_order() -> None:
    first, second = recorded(answer("tp-a", 0, "nps", 3), answer("tp-b", 0, "nps", 10, "Q2"))

    one_way = loyalty_view(fold(customer.reduce, [first, second]), as_of=when(DAY))
    other_way = loyalty_view(fold(customer.reduce, [second, first]), as_of=when(DAY))

    assert one_way == other_way


# ---------------------------------------------------------------------------------------
# Reducers never mutate the state they are given
# ---------------------------------------------------------------------------------------


def every_kind_of_touchpoint() -> list[RecordedTouchpoint]:
    return recorded(
        touchpoint(
            "tp-01", 0, journey=step("arrival"), emotion=1, customer={"id": "C1", "email": "a@x.io"}
        ),
        purchase("tp-02", 5, "O1", "0.10", journey=step("checkout"), emotion=2),
        purchase("tp-03", 1, "O1", "0.20", currency="USD", journey=step("checkout")),
        filed("tp-04", 10, journey=step("complaint")),
        complaint("tp-05", 3, "complaint_acknowledged", severity="high"),
        complaint("tp-06", 20, "complaint_resolved", compensation="5.00"),
        answer("tp-07", 15, "nps", 4, journey=step("survey")),
        answer("tp-08", 2, "nps", 9),
        answer("tp-09", 25, "csat", 5, "Q2"),
        answer("tp-10", 26, "kano_functional", "like", "Q3", feature="wifi"),
        touchpoint(
            "tp-11",
            30,
            "call",
            channel="phone",
            journey=step("farewell"),
            emotion=0,
            customer={"id": "C1", "phone": "+4930123456"},
        ),
        consent("tp-12", 31, "marketing", policy_version="v1", method="web_form"),
        consent("tp-13", 12, "marketing", granted=False, journey=step("complaint")),
        consent("tp-14", 31, "surveys", granted=False),
        consent("tp-15", 31, "surveys"),
    )


@pytest.mark.parametrize(
    "reduce",
    [customer.reduce, journeys.reduce],
    ids=["customer", "journey"],
)
def test_reducer_never_mutates_the_state_it_is_given(reduce: Reducer) -> None:
    events = every_kind_of_touchpoint()
    if reduce is journeys.reduce:
        events = [e for e in events if e.journey is not None]

    fold_checking_purity(reduce, events)


def test_kano_answer_is_kept_as_the_latest_answer_to_its_question() -> None:
    events = recorded(answer("tp-1", 0, "kano_functional", "like", feature="wifi"))

    state = fold(customer.reduce, events)

    assert state["survey_answers"]["S1:Q1"]["feature"] == "wifi"


# ---------------------------------------------------------------------------------------
# Properties: event time, not arrival order, decides
# ---------------------------------------------------------------------------------------

CHANNELS = ("store", "web", "phone")
STEPS = ("arrival", "welcome", "waiting", "price_explanation", "handover", "farewell")
MONEY = st.decimals(min_value=0, max_value=1000, places=2, allow_nan=False, allow_infinity=False)


@st.composite
def payloads(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    if kind == "purchase":
        return {
            "order_id": draw(st.sampled_from(["O1", "O2", "O3"])),
            "amount": str(draw(MONEY)),
            "currency": draw(st.sampled_from(["EUR", "USD"])),
        }
    if kind.startswith("complaint_"):
        payload: dict[str, Any] = {"complaint_id": draw(st.sampled_from(["K1", "K2"]))}
        if kind == "complaint_filed":
            payload["category"] = draw(st.sampled_from(["billing", "delay"]))
        if draw(st.booleans()):
            payload["severity"] = draw(st.sampled_from(["low", "medium", "high", "critical"]))
        if kind == "complaint_resolved" and draw(st.booleans()):
            payload["compensation"] = str(draw(MONEY))
        return payload
    if kind in ("consent_given", "consent_withdrawn"):
        consent_payload = {"purpose": draw(st.sampled_from(["marketing", "surveys"]))}
        if draw(st.booleans()):
            consent_payload["policy_version"] = draw(st.sampled_from(["v1", "v2"]))
        return consent_payload
    if kind == "survey_answered":
        metric, low, high = draw(st.sampled_from([("nps", 0, 10), ("csat", 1, 5), ("ces", 1, 7)]))
        return {
            "survey_id": "S1",
            "question_id": draw(st.sampled_from(["Q1", "Q2"])),
            "metric": metric,
            "value": draw(st.integers(min_value=low, max_value=high)),
        }
    return {}


@st.composite
def journey_of_one_customer(draw: st.DrawFn, max_size: int = 25) -> list[dict[str, Any]]:
    """Touchpoints of customer C1 in journey J1, at distinct event times."""
    minutes = draw(
        st.lists(
            st.integers(min_value=0, max_value=60 * DAY), min_size=1, max_size=max_size, unique=True
        )
    )
    raws = []
    for n, minute in enumerate(minutes):
        kind = draw(
            st.sampled_from(
                [
                    "visit",
                    "call",
                    "purchase",
                    "complaint_filed",
                    "complaint_acknowledged",
                    "complaint_resolved",
                    "survey_answered",
                    "consent_given",
                    "consent_withdrawn",
                ]
            )
        )
        identifiers = {"id": "C1"}
        if draw(st.booleans()):
            identifiers["email"] = draw(st.sampled_from(["a@x.io", "b@x.io"]))
        raws.append(
            touchpoint(
                f"tp-{n:02d}",
                minute,
                kind,
                channel=draw(st.sampled_from(CHANNELS)),
                customer=identifiers,
                journey=step(draw(st.sampled_from(STEPS))),
                emotion=draw(st.none() | st.integers(min_value=-3, max_value=3)),
                payload=draw(payloads(kind)),
            )
        )
    return raws


def arrivals(
    data: st.DataObject, raws: list[dict[str, Any]]
) -> tuple[list[RecordedTouchpoint], ...]:
    """The same touchpoints recorded in event-time order and in a drawn arrival order."""
    by_time = sorted(raws, key=lambda raw: raw["occurred_at"])
    shuffled = data.draw(st.permutations(raws))
    return recorded(*by_time), recorded(*shuffled)


PROPERTY = settings(max_examples=150, deadline=None)


@PROPERTY
@given(journey_of_one_customer(), st.data())
def test_journey_state_does_not_depend_on_arrival_order(
    raws: list[dict[str, Any]], data: st.DataObject
) -> None:
    by_time, arrived = arrivals(data, raws)

    expected = fold_checking_purity(journeys.reduce, by_time)

    assert fold_checking_purity(journeys.reduce, arrived) == expected
    assert [t["occurred_at"] for t in expected["touchpoints"]] == sorted(
        t["occurred_at"] for t in expected["touchpoints"]
    )


@PROPERTY
@given(journey_of_one_customer(), st.data())
def test_customer_state_does_not_depend_on_arrival_order(
    raws: list[dict[str, Any]], data: st.DataObject
) -> None:
    by_time, arrived = arrivals(data, raws)

    assert fold_checking_purity(customer.reduce, arrived) == fold_checking_purity(
        customer.reduce, by_time
    )


COMPLAINT_TIMES = ("filed_at", "acknowledged_at", "resolved_at", "followed_up_at")


def timeline(state: State) -> dict[str, Any]:
    """The parts of the customer document that are ordered or aggregated by event time."""
    return {
        **{
            k: state[k]
            for k in (
                "customer_id",
                "identifiers",
                "first_seen",
                "last_seen",
                "touchpoints_total",
                "counts_by_type",
                "counts_by_channel",
                "spend_by_currency",
                "recent_touchpoints",
                "survey_answers",
                "consents",
                "consent_history",
            )
        },
        "orders": state["orders"],
        "complaint_times": {
            cid: {k: v for k, v in c.items() if k in COMPLAINT_TIMES}
            for cid, c in state["complaints"].items()
        },
    }


@PROPERTY
@given(journey_of_one_customer(), st.data())
def test_customer_timeline_does_not_depend_on_arrival_order(
    raws: list[dict[str, Any]], data: st.DataObject
) -> None:
    by_time, arrived = arrivals(data, raws)

    assert timeline(fold(customer.reduce, arrived)) == timeline(fold(customer.reduce, by_time))
