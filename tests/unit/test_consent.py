"""Consent per purpose (domain/consent.py): the fold rule and the check consumers call.

Pure values, no fixtures: decisions are built directly; the touchpoint door for the two
consent types is tested here too (payload rules, error messages)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.consent import (
    ConsentDecision,
    ConsentError,
    Consents,
    decision_of,
    permits,
    purpose_name,
)
from domain.touchpoints import InvalidTouchpoint, parse_touchpoint
from tests.builders import envelope

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def when(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def given_at(
    minute: int, purpose: str = "marketing", event_id: str | None = None
) -> ConsentDecision:
    return ConsentDecision(purpose, True, when(minute), event_id or f"g-{minute}", "web")


def withdrawn_at(
    minute: int, purpose: str = "marketing", event_id: str | None = None
) -> ConsentDecision:
    return ConsentDecision(purpose, False, when(minute), event_id or f"w-{minute}", "email")


def folded(*decisions: ConsentDecision) -> Consents:
    consents = Consents()
    for decision in decisions:
        consents = consents.with_decision(decision)
    return consents


# -- permits: opt-in, event time ---------------------------------------------------------


def test_no_recorded_consent_permits_nothing() -> None:
    assert not permits(Consents(), "marketing")
    assert not permits(Consents(), "marketing", when(0))


def test_a_grant_permits_its_purpose_from_its_event_time_on() -> None:
    consents = folded(given_at(10))

    assert not permits(consents, "marketing", when(9))
    assert permits(consents, "marketing", when(10))
    assert permits(consents, "marketing", when(10_000))
    assert permits(consents, "marketing")


def test_a_grant_permits_only_its_own_purpose() -> None:
    consents = folded(given_at(0, "surveys"))

    assert permits(consents, "surveys")
    assert not permits(consents, "marketing")
    assert not permits(consents, "profiling")


def test_a_withdrawal_after_a_grant_stops_it_from_the_withdrawal_s_event_time_on() -> None:
    consents = folded(given_at(0), withdrawn_at(30))

    assert permits(consents, "marketing", when(29))
    assert not permits(consents, "marketing", when(30))
    assert not permits(consents, "marketing", when(31))
    assert not permits(consents, "marketing")


def test_a_late_withdrawal_takes_effect_at_its_event_time_not_its_arrival() -> None:
    # Granted at 0, re-granted at 60; the withdrawal of minute 30 arrives last.
    consents = folded(given_at(0), given_at(60), withdrawn_at(30))

    assert permits(consents, "marketing", when(29))
    assert not permits(consents, "marketing", when(45))
    assert permits(consents, "marketing", when(60))
    assert permits(consents, "marketing")


def test_a_withdrawal_older_than_the_grant_does_not_undo_it() -> None:
    consents = folded(given_at(20), withdrawn_at(10))

    assert permits(consents, "marketing")
    assert not permits(consents, "marketing", when(15))


def test_withdrawal_wins_a_tie_with_a_grant_at_the_same_instant() -> None:
    # The grant's event id sorts last: the kind decides a tie before the id does.
    grant, withdrawal = given_at(5, event_id="z"), withdrawn_at(5, event_id="a")

    for consents in (folded(grant, withdrawal), folded(withdrawal, grant)):
        assert not permits(consents, "marketing", when(5))
        assert not permits(consents, "marketing")
        assert [d.event_id for d in consents.decisions] == ["z", "a"]


def test_instants_compare_as_instants_whatever_their_offset() -> None:
    consents = folded(given_at(0), withdrawn_at(60))
    an_hour_ahead = timezone(timedelta(hours=1))

    assert permits(consents, "marketing", when(59).astimezone(an_hour_ahead))
    assert not permits(consents, "marketing", when(60).astimezone(an_hour_ahead))


def test_permits_refuses_a_naive_instant() -> None:
    with pytest.raises(ConsentError, match="no timezone"):
        permits(folded(given_at(0)), "marketing", datetime(2026, 3, 1, 10, 0))


@pytest.mark.parametrize("purpose", ["Marketing", "", "1st", "market ing", "a" * 41, "mkt-1"])
def test_a_consumer_declaring_a_purpose_that_is_no_purpose_name_is_refused(purpose: str) -> None:
    with pytest.raises(ConsentError, match="not a purpose name"):
        purpose_name(purpose)
    with pytest.raises(ConsentError):
        permits(Consents(), purpose)


def test_purpose_names_follow_the_published_pattern() -> None:
    assert purpose_name("marketing") == "marketing"
    assert purpose_name("a" * 40) == "a" * 40
    assert purpose_name("profiling_2") == "profiling_2"


# -- state: since, the deciding decision -------------------------------------------------


def test_state_names_the_deciding_decision_and_since_when_it_holds() -> None:
    consents = folded(withdrawn_at(0), given_at(10), given_at(40, event_id="re-confirmed"))

    state = consents.state("marketing")

    assert state is not None
    assert (state.granted, state.since, state.decision.event_id) == (True, when(10), "re-confirmed")
    earlier = consents.state("marketing", when(5))
    assert earlier is not None
    assert (earlier.granted, earlier.since) == (False, when(0))
    assert consents.state("marketing", when(-1)) is None


def test_current_holds_every_purpose_ever_decided() -> None:
    consents = folded(
        given_at(0, "surveys"), withdrawn_at(5, "marketing"), given_at(1, "profiling")
    )

    assert {p: s.granted for p, s in consents.current().items()} == {
        "marketing": False,
        "profiling": True,
        "surveys": True,
    }
    assert consents.purposes() == ("marketing", "profiling", "surveys")


def test_a_re_sent_decision_changes_nothing() -> None:
    consents = folded(given_at(0), withdrawn_at(10))

    assert consents.with_decision(given_at(0)) is consents
    assert folded(given_at(0), given_at(0), withdrawn_at(10), given_at(0)) == consents


def test_a_decision_is_read_from_a_consent_touchpoint() -> None:
    decision = decision_of(
        "consent_withdrawn",
        {"purpose": "surveys", "policy_version": "v2", "method": "verbal", "captured_by": "A7"},
        at=when(0),
        event_id="tp-1",
        channel="phone",
    )

    assert decision == ConsentDecision(
        "surveys", False, when(0), "tp-1", "phone", "v2", "verbal", None, "A7"
    )
    with pytest.raises(ConsentError):
        decision_of("visit", {"purpose": "surveys"}, at=when(0), event_id="tp-2", channel="web")


# -- properties: event time decides, not arrival order or repeats -------------------------

PURPOSES = ("marketing", "surveys", "profiling")


@st.composite
def decisions(draw: st.DrawFn) -> list[ConsentDecision]:
    """Consent decisions of one customer; event times collide often (ties), and event
    ids are distinct (one touchpoint, one id)."""
    count = draw(st.integers(min_value=0, max_value=20))
    return [
        ConsentDecision(
            purpose=draw(st.sampled_from(PURPOSES)),
            granted=draw(st.booleans()),
            at=when(draw(st.integers(min_value=0, max_value=12))),
            event_id=f"tp-{draw(st.integers(0, 99)):02d}-{n}",
            channel=draw(st.sampled_from(["web", "store"])),
            policy_version=draw(st.none() | st.sampled_from(["v1", "v2"])),
        )
        for n in range(count)
    ]


PROPERTY = settings(max_examples=200, deadline=None)
INSTANTS = st.none() | st.integers(min_value=-1, max_value=13).map(when)


@PROPERTY
@given(decisions(), st.data())
def test_arrival_order_does_not_matter(held: list[ConsentDecision], data: st.DataObject) -> None:
    arrived = data.draw(st.permutations(held))

    assert folded(*arrived) == folded(*held) == Consents.of(held)


@PROPERTY
@given(decisions(), st.data())
def test_duplicates_change_nothing(held: list[ConsentDecision], data: st.DataObject) -> None:
    again = data.draw(st.lists(st.sampled_from(held), max_size=10)) if held else []
    arrived = data.draw(st.permutations([*held, *again]))

    assert folded(*arrived) == folded(*held)


@PROPERTY
@given(decisions(), st.sampled_from(PURPOSES), INSTANTS)
def test_the_latest_decision_by_event_time_decides(
    held: list[ConsentDecision], purpose: str, at: datetime | None
) -> None:
    consents = folded(*held)
    relevant = [d for d in held if d.purpose == purpose and (at is None or d.at <= at)]

    if not relevant:
        assert not permits(consents, purpose, at)
        return
    latest = max(d.at for d in relevant)
    at_latest = [d for d in relevant if d.at == latest]
    # The latest instant decides; at that instant any withdrawal wins.
    assert permits(consents, purpose, at) == all(d.granted for d in at_latest)


@PROPERTY
@given(decisions())
def test_history_is_in_event_time_order_and_complete(held: list[ConsentDecision]) -> None:
    consents = folded(*held)

    assert sorted(consents.decisions, key=lambda d: d.event_id) == sorted(
        held, key=lambda d: d.event_id
    )
    assert [d.rank for d in consents.decisions] == sorted(d.rank for d in held)


# -- the touchpoint door ------------------------------------------------------------------


def consent_touchpoint(kind: str, **payload: object) -> dict[str, object]:
    return envelope("C1", T0, type=kind, payload=payload)


def refusals(raw: dict[str, object]) -> dict[str, str]:
    with pytest.raises(InvalidTouchpoint) as refused:
        parse_touchpoint(raw)
    return {e.field: e.message for e in refused.value.errors}


def test_a_consent_touchpoint_keeps_what_demonstrates_the_consent() -> None:
    payload = {
        "purpose": "marketing",
        "policy_version": "privacy-2026-01",
        "method": "double_opt_in",
        "evidence_ref": "confirm-8812",
        "captured_by": "newsletter-service",
    }

    parsed = parse_touchpoint(consent_touchpoint("consent_given", **payload))

    assert parsed.payload == payload
    bare = parse_touchpoint(consent_touchpoint("consent_withdrawn", purpose="surveys"))
    assert bare.payload == {"purpose": "surveys"}


def test_a_consent_touchpoint_without_a_purpose_is_refused_naming_the_field() -> None:
    assert refusals(consent_touchpoint("consent_given")) == {"payload.purpose": "Field required"}


def test_a_purpose_that_is_not_a_lower_case_name_is_refused_with_the_rule() -> None:
    errors = refusals(consent_touchpoint("consent_withdrawn", purpose="Marketing"))

    assert list(errors) == ["payload.purpose"]
    assert "not a purpose name" in errors["payload.purpose"]
    assert "lower-case" in errors["payload.purpose"]


def test_an_unknown_capture_method_or_field_is_refused_naming_it() -> None:
    errors = refusals(consent_touchpoint("consent_given", purpose="x", method="fax", why="no"))

    assert set(errors) == {"payload.method", "payload.why"}
    assert "double_opt_in" in errors["payload.method"]


def test_an_unknown_type_still_lists_the_consent_types_among_the_known_ones() -> None:
    errors = refusals(envelope("C1", T0, type="consent"))

    assert "consent_given" in errors["type"] and "consent_withdrawn" in errors["type"]


# -- the API's schema of the document ------------------------------------------------------


def test_the_customer_document_s_consent_fields_are_what_customer_out_publishes() -> None:
    from pydantic import TypeAdapter

    from api.schemas import ConsentOut, ConsentRecordOut
    from domain.customer import Customer
    from domain.touchpoints import touchpoint_of
    from projections import customer

    aggregate = Customer.register("C1")
    for raw in (
        consent_touchpoint("consent_given", purpose="marketing", policy_version="v1"),
        consent_touchpoint("consent_withdrawn", purpose="surveys", method="verbal"),
    ):
        assert aggregate.record_touchpoint(touchpoint_of(parse_touchpoint(raw)))
    state: dict[str, Any] | None = None
    for event in aggregate.collect_events():
        if isinstance(event, Customer.TouchpointRecorded):
            state = customer.reduce(state, event)
    assert state is not None

    current = TypeAdapter(dict[str, ConsentOut]).validate_python(state["consents"])
    history = TypeAdapter(list[ConsentRecordOut]).validate_python(state["consent_history"])

    assert {p: c.granted for p, c in current.items()} == {"marketing": True, "surveys": False}
    assert [(h.purpose, h.policy_version, h.method) for h in history] == [
        ("marketing", "v1", None),
        ("surveys", None, "verbal"),
    ]
    # The API lists exactly the document's fields: nothing the reducer writes is dropped.
    assert set(ConsentOut.model_fields) == set(state["consents"]["marketing"])
    assert set(ConsentRecordOut.model_fields) == set(state["consent_history"][0])
