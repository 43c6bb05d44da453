"""The maintained measures' pure rules: ranking against population inputs gives back the
population pass's exact answer, facts change as they should, and the due instants are
the ones at which a derivation would answer otherwise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from domain import value
from domain.customer import Customer
from domain.touchpoints import parse_touchpoint, touchpoint_of
from projections import customer, journeys
from projections.base import RecordedTouchpoint, State
from projections.measures import (
    Change,
    ChangeKind,
    Inputs,
    Rules,
    changes,
    derive,
    facts,
    journey_status,
    next_due,
    rfm_bounds,
    rfm_score,
    tier_of,
    tier_thresholds,
)
from tests import builders

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)
RULES = Rules()

money = st.decimals(min_value=0, max_value=500, places=2, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(money, min_size=1, max_size=60), st.sampled_from([(0.01, 0.05, 0.2), (0.1, 0.3, 0.5)])
)
def test_tiers_from_thresholds_equal_the_population_pass(
    values: list[Decimal], shares: tuple[float, float, float]
) -> None:
    cutoffs = value.TierCutoffs(*shares)
    by_customer = {f"c{i}": v for i, v in enumerate(values)}
    exact = value.value_tiers(by_customer, buyers=set(by_customer), cutoffs=cutoffs)
    inputs = Inputs(version=1, tiers=tier_thresholds(by_customer.values(), cutoffs))
    assert {c: tier_of(v, bought=True, inputs=inputs) for c, v in by_customer.items()} == exact


purchase_days = st.lists(
    st.tuples(st.integers(min_value=0, max_value=900), money), min_size=1, max_size=6
)


@settings(max_examples=150, deadline=None)
@given(st.lists(purchase_days, min_size=1, max_size=40))
def test_rfm_from_boundaries_equals_the_population_pass(
    histories: list[list[tuple[int, Decimal]]],
) -> None:
    window = timedelta(days=365)
    history = {
        f"c{i}": [(T0 - timedelta(days=d), amount) for d, amount in purchases]
        for i, purchases in enumerate(histories)
    }
    exact = value.rfm(history, as_of=T0, window=window)
    inputs = Inputs(version=1, rfm=rfm_bounds(exact))
    for found in exact.values():
        assert rfm_score(found.recency_days, found.frequency, found.monetary, inputs) == (
            found.r,
            found.f,
            found.m,
        )


def test_the_empty_population_ranks_a_buyer_first() -> None:
    assert tier_of(Decimal("5"), bought=True, inputs=Inputs()) == value.Tier.VIP
    assert tier_of(Decimal(0), bought=True, inputs=Inputs()) == value.Tier.INACTIVE
    assert tier_of(Decimal(0), bought=False, inputs=Inputs()) == value.Tier.PROSPECT
    assert rfm_score(3, 2, Decimal(10), Inputs()) == (5, 5, 5)


# -- documents -----------------------------------------------------------------------------


def recorded(*envelopes: builders.Envelope) -> list[RecordedTouchpoint]:
    aggregate = Customer.register("C1")
    for raw in envelopes:
        assert aggregate.record_touchpoint(touchpoint_of(parse_touchpoint(raw)))
    return [e for e in aggregate.collect_events() if isinstance(e, Customer.TouchpointRecorded)]


def document(*envelopes: builders.Envelope) -> State:
    return customer.fold("C1", recorded(*envelopes))


def test_a_first_purchase_makes_a_first_time_buyer_whose_facts_change_from_nothing() -> None:
    doc = document(builders.purchase("C1", "40.00", T0))
    measures = derive(doc, Inputs(), RULES, T0 + timedelta(hours=1))
    assert measures["lifecycle"]["stage"] == "first_time"
    assert measures["value_tier"] == {
        "tier": "vip",
        "value_in_window": "40.00",
        "window_days": 365,
        "currency": "EUR",
        "unconverted": {},
    }
    found = changes(None, facts(doc, measures, {}, RULES))
    assert [c.kind for c in found] == [
        ChangeKind.TIER,
        ChangeKind.RFM_SEGMENT,
        ChangeKind.LIFECYCLE,
        ChangeKind.LOYALTY,
    ]
    assert found[0] == Change(ChangeKind.TIER, None, None, "vip")


def test_a_buyer_lapses_at_the_due_instant_and_not_before() -> None:
    doc = document(builders.purchase("C1", "10.00", T0))
    at = T0 + timedelta(hours=1)
    measures = derive(doc, Inputs(), RULES, at)
    lapse = T0 + RULES.lapse_after + timedelta(microseconds=1)
    instants = []
    while (due := next_due(doc, measures, {}, RULES, at)) is not None and due <= lapse:
        instants.append(due)
        at, measures = due, derive(doc, Inputs(), RULES, due)
    assert measures["lifecycle"]["stage"] == "lapsed"
    assert instants[-1] == lapse
    before = derive(doc, Inputs(), RULES, lapse - timedelta(microseconds=1))
    assert before["lifecycle"]["stage"] == "first_time"


def test_an_nps_answer_changes_the_category_and_a_later_one_changes_it_back() -> None:
    first = document(builders.survey_answer("C1", "nps", 3, T0, survey_id="S1"))
    second = document(
        builders.survey_answer("C1", "nps", 3, T0, survey_id="S1"),
        builders.survey_answer("C1", "nps", 10, T0 + timedelta(days=1), survey_id="S2"),
    )
    at = T0 + timedelta(days=2)
    before = facts(first, derive(first, Inputs(), RULES, at), {}, RULES)
    after = facts(second, derive(second, Inputs(), RULES, at), {}, RULES)
    assert before[ChangeKind.NPS_CATEGORY] == "detractor"
    assert Change(ChangeKind.NPS_CATEGORY, None, "detractor", "promoter") in changes(before, after)


def test_as_of_an_instant_a_later_answer_is_not_seen() -> None:
    events = recorded(
        builders.survey_answer("C1", "nps", 3, T0, survey_id="S1", question_id="q"),
        builders.survey_answer(
            "C1", "nps", 10, T0 + timedelta(days=90), survey_id="S1", question_id="q"
        ),
    )
    march = T0 + timedelta(days=30)
    then = customer.fold("C1", [e for e in events if e.occurred_at <= march])
    measures = derive(then, Inputs(), RULES, march)
    assert measures["satisfaction"]["nps_category"] == "detractor"
    assert measures["loyalty"]["attitude_basis"]["value"] == 3


def test_a_complaint_opens_and_closes() -> None:
    filed = builders.envelope(
        "C1",
        T0,
        type="complaint_filed",
        channel="phone",
        payload={"complaint_id": "K1", "category": "billing", "severity": "high"},
    )
    resolved = builders.envelope(
        "C1",
        T0 + timedelta(hours=5),
        type="complaint_resolved",
        channel="phone",
        payload={"complaint_id": "K1"},
    )
    open_doc, closed_doc = document(filed), document(filed, resolved)
    at = T0 + timedelta(days=1)
    was = facts(open_doc, derive(open_doc, Inputs(), RULES, at), {}, RULES)
    now = facts(closed_doc, derive(closed_doc, Inputs(), RULES, at), {}, RULES)
    assert Change(ChangeKind.COMPLAINT_OPENED, "K1", None, "K1") in changes(None, was)
    assert changes(was, now) == [Change(ChangeKind.COMPLAINT_CLOSED, "K1", "K1", None)]


def test_a_journey_closes_by_inactivity_at_the_end_of_its_gap() -> None:
    events = recorded(
        builders.envelope(
            "C1", T0, journey={"id": "J1", "type": "visit", "step": "arrival"}, emotion=-2
        ),
        builders.envelope(
            "C1",
            T0 + timedelta(minutes=10),
            journey={"id": "J1", "type": "visit", "step": "waiting"},
            emotion=1,
        ),
    )
    state = None
    for event in events:
        state = journeys.reduce(state, event)
    assert state is not None
    doc = customer.fold("C1", events)
    at = T0 + timedelta(minutes=11)
    status = journey_status(state, RULES, at)
    assert status["closed_by"] is None
    measures = derive(doc, Inputs(), RULES, at)
    gap_end = T0 + timedelta(minutes=10) + RULES.inactivity_gap("visit")
    assert next_due(doc, measures, {"J1": status}, RULES, at) == gap_end
    closed = journey_status(state, RULES, gap_end)
    found = changes(
        facts(doc, measures, {"J1": status}, RULES), facts(doc, measures, {"J1": closed}, RULES)
    )
    assert found == [Change(ChangeKind.JOURNEY_CLOSED, "J1", status, closed)]
    assert closed["closed_by"] == "inactivity" and closed["peak_end_score"] == -0.5


MODEL = {
    "version": 1,
    "time_unit": "week",
    "parameters": {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426},
}


def test_p_alive_falls_with_silence_and_its_trend_says_so() -> None:
    doc = document(
        *(
            builders.purchase("C1", "20.00", T0 + timedelta(days=7 * n), order_id=f"O{n}")
            for n in range(4)
        )
    )
    inputs = Inputs(version=1, model=MODEL)
    soon = derive(doc, inputs, RULES, T0 + timedelta(days=30))["churn_risk"]
    later = derive(doc, inputs, RULES, T0 + timedelta(days=300))["churn_risk"]
    assert later["p_alive"] < soon["p_alive"]
    assert later["p_alive_trend"] < 0
    assert later["p_alive_30_days_before"] > later["p_alive"]
    assert derive(doc, Inputs(), RULES, T0 + timedelta(days=300))["churn_risk"]["p_alive"] is None
