"""Consent on real PostgreSQL: consent touchpoints recorded through the platform, the
customer document read back from the store (consents, consent_history), and the check
consumers call (domain.consent.permits) on it: a late, out-of-order withdrawal, a
re-send, a merge of two customers who each decided, and a replay."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.consent import permits
from domain.touchpoints import parse_touchpoint
from infra.bootstrap import Platform
from projections.base import State, utc_iso
from projections.customer import consents_of
from streams.projector import replay
from tests.builders import envelope, new_id
from tests.conftest import customer_of, embedded

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def consent(
    customer: str | dict[str, str], minute: int, purpose: str, granted: bool = True, **payload: Any
) -> dict[str, Any]:
    kind = "consent_given" if granted else "consent_withdrawn"
    return envelope(customer, at(minute), type=kind, payload={"purpose": purpose, **payload})


def record(platform: Platform, *raws: dict[str, Any]) -> list[Any]:
    outcome = platform.driver.submit([parse_touchpoint(raw) for raw in raws]).result(timeout=30)
    assert embedded(platform).wait_until_projected()
    return outcome


def document(platform: Platform, source_id: str) -> State:
    state = platform.store.get("customer", customer_of(platform, source_id))
    assert state is not None
    return state


def test_a_late_withdrawal_that_happened_between_two_grants_lands_where_it_happened(
    platform: Platform,
) -> None:
    source = new_id("C")
    grant = consent(source, 0, "marketing", policy_version="v1", method="web_form")
    regrant = consent(source, 60, "surveys", policy_version="v1")
    record(platform, grant, regrant)
    assert document(platform, source)["consents"]["marketing"]["granted"] is True

    # Withdrawn on the phone at minute 30; the call centre uploads it hours later.
    withdrawal = consent(source, 30, "marketing", granted=False, method="verbal")
    withdrawal["channel"] = "phone"
    record(platform, withdrawal)

    state = document(platform, source)
    assert state["consents"]["marketing"] == {
        "granted": False,
        "since": utc_iso(at(30)),
        "decided_at": utc_iso(at(30)),
        "event_id": withdrawal["event_id"],
        "channel": "phone",
        "policy_version": None,
        "method": "verbal",
        "evidence_ref": None,
        "captured_by": None,
    }
    assert state["consents"]["surveys"]["granted"] is True
    assert [(h["purpose"], h["granted"], h["at"]) for h in state["consent_history"]] == [
        ("marketing", True, utc_iso(at(0))),
        ("marketing", False, utc_iso(at(30))),
        ("surveys", True, utc_iso(at(60))),
    ]
    consents = consents_of(state)
    assert permits(consents, "marketing", at(29))
    assert not permits(consents, "marketing", at(30))
    assert not permits(consents, "marketing")
    assert permits(consents, "surveys")
    assert not permits(consents, "profiling")


def test_an_older_withdrawal_arriving_after_a_newer_grant_does_not_undo_it(
    platform: Platform,
) -> None:
    source = new_id("C")
    record(platform, consent(source, 20, "marketing"))
    record(platform, consent(source, 10, "marketing", granted=False))

    consents = consents_of(document(platform, source))

    assert permits(consents, "marketing")
    assert not permits(consents, "marketing", at(15))


def test_a_re_sent_consent_touchpoint_changes_nothing(platform: Platform) -> None:
    source = new_id("C")
    grant = consent(source, 0, "marketing")
    record(platform, grant, consent(source, 5, "marketing", granted=False))
    before = document(platform, source)

    (outcome,) = record(platform, grant)

    assert outcome.duplicate is True
    assert document(platform, source) == before


def test_a_merged_customer_holds_the_consent_decisions_of_both_its_customers(
    platform: Platform,
) -> None:
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    phone = f"+49151{uuid.uuid4().int % 10**8:08d}"
    record(platform, consent({"email": email}, 0, "marketing"))
    record(platform, consent({"phone": phone}, 10, "marketing", granted=False))
    # One touchpoint names both: they are one person, and the documents are refolded.
    record(platform, envelope({"email": email, "phone": phone}, at(20)))

    found = platform.records.identity.find([("email", email)])
    assert len(found) == 1
    state = platform.store.get("customer", found[0][2])
    assert state is not None
    assert [h["granted"] for h in state["consent_history"]] == [True, False]
    assert state["consents"]["marketing"]["granted"] is False
    assert not permits(consents_of(state), "marketing")


def test_replay_gives_the_consents_projected_live(platform: Platform) -> None:
    source = new_id("C")
    record(
        platform,
        consent(source, 30, "marketing", granted=False),
        consent(source, 0, "marketing", evidence_ref="form-1"),
        consent(source, 30, "profiling"),
        consent(source, 30, "profiling", granted=False),  # the same instant: withdrawal wins
    )
    live = document(platform, source)
    assert live["consents"]["profiling"]["granted"] is False

    replay(platform.records, platform.store, batch_size=2)

    replayed = document(platform, source)
    assert (replayed["consents"], replayed["consent_history"]) == (
        live["consents"],
        live["consent_history"],
    )
