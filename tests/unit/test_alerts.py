"""The alert rules and lifecycle, pure: each rule fires and does not fire on hand-made
histories; an alert is opened once per rule and subject, held down while its condition
flaps, resolved when it clears, expires, and takes an operator's acknowledgement and
resolution."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from projections import alerts
from projections.alerts import AlertRules, Rule, Severity, Transition
from projections.base import State, utc_iso
from projections.measures import Inputs, Rules, derive, facts
from tests import builders
from tests.unit.test_measures import document

T0 = datetime(2025, 3, 3, 9, tzinfo=UTC)
RULES = Rules()
HOLD = RULES.alerts.hold_down


class Life:
    """One customer's alerts as the projector derives them: at each instant asked for
    (an event's, or one ``next_instant`` says is due), every rule on the document of the
    touchpoints up to then."""

    def __init__(self, rules: AlertRules = RULES.alerts, consented: bool = True) -> None:
        self.rules, self.consented = rules, consented
        self.envelopes: list[builders.Envelope] = []
        self.held: dict[str, State] = {}
        self.moves: list[tuple[datetime, Transition]] = []
        self.at = T0 - timedelta(days=1)

    def _derive(self, at: datetime) -> None:
        until = utc_iso(at)
        doc = document(*(e for e in self.envelopes if utc_iso(_at(e["occurred_at"])) <= until))
        measures = derive(doc, Inputs(), replace(RULES, alerts=self.rules), at)
        now = facts(doc, measures, {}, RULES)
        found, cleared = alerts.conditions(doc, measures, now, at, self.rules)
        self.held, moves = alerts.advance(
            "C1",
            self.held,
            found,
            cleared,
            at,
            self.rules,
            str(measures["value_tier"]["tier"]),
            lambda _: self.consented,
        )
        self.moves += [(at, m) for m in moves]
        self.doc, self.now, self.at = doc, now, at

    def until(self, at: datetime) -> None:
        """Step through every instant due up to ``at``, then derive at ``at``."""
        while True:
            due = alerts.next_instant(self.doc, self.now, self.held, self.at, self.rules)
            if due is None or due > at:
                break
            self._derive(due)
        self._derive(at)

    def send(self, raw: builders.Envelope) -> None:
        at = _at(raw["occurred_at"])
        if self.envelopes:
            self.until(at - timedelta(microseconds=1))
        self.envelopes.append(raw)
        self._derive(at)

    def kinds(self) -> list[tuple[str, str]]:
        return [(m.kind, m.alert["rule"]) for _, m in self.moves]


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_detractor_opens_a_follow_up_alert_breached_at_its_target_resolved_by_a_call() -> None:
    life = Life()
    life.send(builders.survey_answer("C1", "nps", 3, T0))
    assert life.kinds() == [("opened", "detractor_follow_up")]
    opened = life.moves[0][1].alert
    assert opened["severity"] == "warning"
    assert opened["evidence"]["answer"]["value"] == 3
    assert opened["subject"] == {"kind": "customer", "id": "C1"}

    life.until(T0 + timedelta(hours=49))
    breached_at, breached = life.moves[1]
    assert (breached.kind, breached.alert["severity"]) == ("updated", "critical")
    assert breached_at == T0 + timedelta(hours=48)  # at the target, by the clock
    assert breached.alert["evidence"]["breached"] is True

    call_at = T0 + timedelta(hours=50)
    life.send(builders.envelope("C1", call_at, type="call"))
    life.until(call_at + timedelta(hours=1))
    resolved_at, resolved = life.moves[2]
    assert resolved.kind == "resolved" and resolved.alert["resolution"] == "cleared"
    assert resolved_at == call_at + HOLD  # once held down
    assert resolved.alert["id"] == opened["id"]
    assert life.held == {}


def test_a_promoter_or_a_followed_up_detractor_raises_nothing() -> None:
    life = Life()
    life.send(builders.survey_answer("C1", "nps", 9, T0))
    life.send(builders.survey_answer("C1", "csat", 4, T0 + timedelta(minutes=1)))
    life.until(T0 + timedelta(days=40))
    assert life.kinds() == []


def test_one_alert_per_rule_and_subject_and_a_flapping_condition_keeps_it() -> None:
    life = Life()
    life.send(builders.survey_answer("C1", "nps", 3, T0))
    life.send(builders.envelope("C1", T0 + timedelta(hours=1), type="call"))
    # Detractor again within the hold-down: the same alert, not a new one.
    life.send(
        builders.survey_answer("C1", "nps", 2, T0 + timedelta(hours=1, minutes=2), question_id="Q2")
    )
    life.send(builders.survey_answer("C1", "nps", 1, T0 + timedelta(hours=2), question_id="Q3"))
    # One alert, brought up to each new answer: updated, never opened again.
    assert [kind for kind, _ in life.kinds()] == ["opened", "updated", "updated"]
    assert len({m.alert["id"] for _, m in life.moves}) == 1
    (key,) = life.held
    assert life.held[key]["clear_since"] is None


def test_a_complaint_step_past_its_target_is_raised_by_the_clock_and_a_late_step_ends_it() -> None:
    life = Life()
    life.send(builders.complaint("C1", "filed", T0, severity="high"))
    life.until(T0 + timedelta(hours=3, minutes=59))
    assert life.kinds() == []
    life.until(T0 + timedelta(hours=5))
    (at, breach), *_ = life.moves
    assert at == T0 + timedelta(hours=4)  # the high-severity target to acknowledge
    assert breach.alert["severity"] == "critical"
    assert breach.alert["subject"]["step"] == "acknowledge"
    life.send(builders.complaint("C1", "acknowledged", T0 + timedelta(hours=6)))
    life.until(T0 + timedelta(hours=7))
    resolved = [m for _, m in life.moves if m.kind == "resolved"]
    assert resolved[0].alert["evidence"]["late_by_seconds"] == 2 * 3600


@pytest.mark.parametrize(("level", "hours"), [("critical", 1), ("high", 4), ("low", 48)])
def test_every_complaint_severity_the_envelope_accepts_has_its_own_targets(
    level: str, hours: int
) -> None:
    life = Life()
    life.send(builders.complaint("C1", "filed", T0, severity=level))
    life.until(T0 + timedelta(hours=hours, seconds=-1))
    assert life.kinds() == []
    life.until(T0 + timedelta(hours=hours))
    (at, breach), *_ = life.moves
    assert at == T0 + timedelta(hours=hours)
    assert breach.alert["severity"] == ("info" if level == "low" else "critical")


def test_complaint_steps_within_their_targets_raise_nothing() -> None:
    life = Life()
    life.send(builders.complaint("C1", "filed", T0, severity="medium"))
    life.send(builders.complaint("C1", "acknowledged", T0 + timedelta(hours=2)))
    life.send(builders.complaint("C1", "resolved", T0 + timedelta(days=2)))
    life.send(builders.complaint("C1", "followed_up", T0 + timedelta(days=3)))
    life.until(T0 + timedelta(days=60))
    assert life.kinds() == []


def test_silent_dissatisfaction_fires_when_the_window_passes_without_a_complaint() -> None:
    life = Life()
    life.send(builders.envelope("C1", T0, emotion=-3))
    life.until(T0 + timedelta(hours=71))
    assert life.kinds() == []
    life.until(T0 + timedelta(hours=73))
    assert life.kinds() == [("opened", "silent_dissatisfaction")]
    assert life.moves[0][0] == T0 + timedelta(hours=72)

    complained = Life()
    complained.send(builders.envelope("C1", T0, emotion=-3))
    complained.send(builders.complaint("C1", "filed", T0 + timedelta(hours=1)))
    complained.send(builders.complaint("C1", "acknowledged", T0 + timedelta(hours=2)))
    complained.until(T0 + timedelta(hours=80))
    assert ("opened", "silent_dissatisfaction") not in complained.kinds()


def test_a_trigger_older_than_its_expiry_resolves_and_history_imported_late_raises_nothing() -> (
    None
):
    life = Life()
    life.send(builders.survey_answer("C1", "nps", 3, T0))
    life.until(T0 + timedelta(days=31))
    # A low answer with no complaint is silent dissatisfaction too; both end.
    assert sorted(life.kinds()) == [
        ("opened", "detractor_follow_up"),
        ("opened", "silent_dissatisfaction"),
        ("resolved", "detractor_follow_up"),
        ("resolved", "silent_dissatisfaction"),
        ("updated", "detractor_follow_up"),
    ]
    assert life.held == {}

    late = Life()
    late.at = T0 + timedelta(days=400)
    late._derive(late.at)
    late.envelopes.append(builders.survey_answer("C1", "nps", 3, T0))
    late._derive(late.at)
    assert late.kinds() == []


def test_an_operator_acknowledges_and_resolves_and_a_resolved_alert_stays_muted() -> None:
    life = Life()
    life.send(builders.survey_answer("C1", "nps", 3, T0))
    (key,) = life.held
    alert_id = life.held[key]["id"]
    held, moves = alerts.operator(
        life.held, alert_id, "acknowledge", "ops", T0 + timedelta(hours=1)
    )
    assert [m.kind for m in moves] == ["acknowledged"]
    assert held[key]["acknowledged_by"] == "ops" and held[key]["status"] == "acknowledged"
    assert alerts.operator(held, alert_id, "acknowledge", "ops", T0 + timedelta(hours=2))[1] == []

    held, moves = alerts.operator(held, alert_id, "resolve", "lead", T0 + timedelta(hours=3))
    assert moves[0].alert["resolution"] == "operator"
    life.held = held
    life.until(T0 + timedelta(days=2))  # the condition still holds: no new alert
    assert [k for k, _ in life.kinds()] == ["opened"]
    # Once the condition has cleared, a new detractor answer opens a new alert.
    life.send(builders.envelope("C1", T0 + timedelta(days=2, hours=1), type="call"))
    life.send(builders.survey_answer("C1", "nps", 0, T0 + timedelta(days=3), question_id="Q2"))
    opened = [m for _, m in life.moves if m.kind == "opened"]
    assert len(opened) == 2 and opened[1].alert["id"] != alert_id
    assert alerts.operator(life.held, "alt_unknown", "resolve", "ops", T0)[1] == []


def test_a_negative_journey_alerts_for_watched_tiers_only() -> None:
    closed = {
        "journeys": {
            "J1": {
                "journey_type": "support",
                "closed_by": "end_step",
                "closed_at": utc_iso(T0),
                "peak_end_score": -1.5,
                "last_at": utc_iso(T0),
            }
        }
    }
    doc = document(builders.purchase("C1", "500.00", T0 - timedelta(days=3)))
    vip = derive(doc, Inputs(), RULES, T0)
    assert vip["value_tier"]["tier"] == "vip"
    (found,) = alerts.negative_journey(doc, vip, closed, T0, RULES.alerts)
    assert found.subject["id"] == "J1" and found.evidence["peak_end_score"] == -1.5
    prospect = derive(document(builders.envelope("C1", T0)), Inputs(), RULES, T0)
    assert alerts.negative_journey(doc, prospect, closed, T0, RULES.alerts) == []
    mild = {"journeys": {"J1": {**closed["journeys"]["J1"], "peak_end_score": 0.5}}}
    assert alerts.negative_journey(doc, vip, mild, T0, RULES.alerts) == []


def test_churn_warning_weighs_by_tier_and_its_purpose_needs_consent() -> None:
    doc = document(
        builders.purchase("C1", "500.00", T0 - timedelta(days=100)),
        builders.purchase("C1", "500.00", T0 - timedelta(days=90)),
    )
    measures = derive(doc, Inputs(), RULES, T0)
    (found,) = alerts.churn_warning(doc, measures, T0, RULES.alerts)
    assert found.severity == Severity.CRITICAL  # a VIP ten gaps past its usual one
    assert found.evidence["reasons"] == ["recency_beyond_usual_gap"]
    assert found.purpose == "marketing"
    _, (opened,) = alerts.advance(
        "C1", {}, {found.key: found}, {}, T0, RULES.alerts, "vip", lambda _: False
    )
    assert opened.alert["suppressed"] == "consent"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nope": {}}, "unknown rule 'nope'"),
        ({"churn_warning": {"k": 2}}, "churn_warning has no setting 'k'"),
        ({"churn_warning": {"gap_factor": "x"}}, "churn_warning.gap_factor: could not convert"),
        ({"complaint_sla": {"targets": 3}}, "complaint_sla.targets is an object"),
        ({"negative_journey": {"severity": "loud"}}, "negative_journey.severity: 'loud'"),
    ],
)
def test_overrides_name_what_is_wrong(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        alerts.with_rules(AlertRules(), overrides)


def test_overrides_set_durations_tiers_and_switch_rules_off() -> None:
    rules = alerts.with_rules(
        AlertRules(),
        {
            "detractor_follow_up": {"target_seconds": 3600, "tiers": ["vip"]},
            "churn_warning": {"enabled": False},
            "complaint_sla": {"targets": {"high": {"acknowledge_seconds": 60}}},
            "hold_down_seconds": 60,
        },
    )
    assert rules.detractor_follow_up.target == timedelta(hours=1)
    assert rules.detractor_follow_up.tiers == frozenset({"vip"})
    assert not rules.churn_warning.enabled
    assert rules.hold_down == timedelta(minutes=1)
    high = rules.complaint_sla.targets["high"]
    assert high["acknowledge"] == timedelta(minutes=1)  # merged: the other steps kept
    assert high["resolve"] == AlertRules().complaint_sla.targets["high"]["resolve"]
    assert rules.of(Rule.CHURN_WARNING) is rules.churn_warning


def touchpoints(n: int, waits: Sequence[float | None] = ()) -> alerts.SlotDemand:
    """A slot's demand: ``n`` touchpoints without a wait, then one per wait given."""
    demand = alerts.SlotDemand()
    for wait in [None] * n + list(waits):
        demand = demand.plus(wait)
    return demand


def test_capacity_warns_when_a_channel_stays_above_optimal_and_is_critical_above_maximum() -> None:
    rules = alerts.with_rules(
        AlertRules(),
        {"capacity": {"channels": {"call": {"optimal": 10, "maximum": 20}}, "slot_seconds": 900}},
    )
    slot = alerts.slot_of(T0, timedelta(minutes=15))
    before = slot - timedelta(minutes=15)
    assert slot == T0  # 09:00 starts a slot
    assert alerts.capacity("call", {slot: touchpoints(12)}, T0, rules) == []  # not sustained
    (warn,) = alerts.capacity("call", {before: touchpoints(11), slot: touchpoints(12)}, T0, rules)
    assert warn.severity == Severity.WARNING and warn.subject == {"kind": "channel", "id": "call"}
    later = T0 + timedelta(minutes=3)
    (critical,) = alerts.capacity("call", {slot: touchpoints(21)}, later, rules)
    assert critical.severity == Severity.CRITICAL
    assert alerts.capacity("web", {slot: touchpoints(500)}, T0, rules) == []  # not watched
    nxt = alerts.capacity_next({}, T0 + timedelta(minutes=3), rules)
    assert nxt == slot + timedelta(minutes=15)


def test_capacity_by_wait_time_compares_the_mean_wait_of_the_touchpoints_that_carry_one() -> None:
    rules = alerts.with_rules(
        AlertRules(),
        {
            "capacity": {
                "channels": {"call": {"measure": "wait_seconds", "optimal": 60, "maximum": 300}},
                "sustained_slots": 1,
            }
        },
    )
    slot = alerts.slot_of(T0, timedelta(minutes=15))
    # Many calls, short waits: busy but not waiting: no alert, whatever the count.
    assert alerts.capacity("call", {slot: touchpoints(900, [10, 20])}, T0, rules) == []
    # A visit without a wait counts as a touchpoint, not as a wait of 0 s.
    (warn,) = alerts.capacity("call", {slot: touchpoints(5, [50, 100])}, T0, rules)
    assert warn.severity == Severity.WARNING
    assert warn.evidence["measure"] == "wait_seconds"
    assert warn.evidence["demand"] == {utc_iso(slot): 75.0}  # (50 + 100) / 2
    (critical,) = alerts.capacity("call", {slot: touchpoints(0, [200, 500])}, T0, rules)
    assert critical.severity == Severity.CRITICAL
    assert alerts.capacity("call", {slot: touchpoints(3)}, T0, rules) == []  # no wait said


@pytest.mark.parametrize(
    ("channel", "named"),
    [
        ({"measure": "queue"}, "capacity.channels.call.measure"),
        ({"optimal": -1}, "capacity.channels.call.optimal"),
        ({"maximum": "lots"}, "capacity.channels.call.maximum"),
        ({"optimal": 1, "colour": "red"}, "unknown setting 'colour'"),
        (5, "capacity.channels.call is an object"),
    ],
)
def test_capacity_settings_are_refused_naming_the_channel_and_setting(
    channel: Any, named: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        alerts.with_rules(AlertRules(), {"capacity": {"channels": {"call": channel}}})


def test_a_transition_is_held_back_by_the_first_active_silence_that_matches_it() -> None:
    from domain.alerting import silenced_by

    alert = {"rule": "churn_warning", "tier": "vip", "channel": None, "customer_id": "c1"}
    window = {"starts_at": T0, "ends_at": T0 + timedelta(hours=1), "expired_at": None}
    silences = [
        {"id": "other-rule", "matcher": {"rule": "capacity"}, **window},
        {"id": "vip", "matcher": {"rule": "churn_warning", "tier": "vip"}, **window},
        {"id": "customer", "matcher": {"customer": "c1"}, **window},
    ]
    assert silenced_by(silences, alert, T0) == "vip"
    assert silenced_by(silences, alert, T0 - timedelta(seconds=1)) is None  # not yet
    assert silenced_by(silences, alert, T0 + timedelta(hours=1)) is None  # ended
    expired = [{**s, "expired_at": T0 + timedelta(minutes=1)} for s in silences]
    assert silenced_by(expired, alert, T0 + timedelta(minutes=2)) is None
    assert silenced_by(silences, {**alert, "tier": "major"}, T0) == "customer"


def test_the_sla_targets_name_every_complaint_severity_the_envelope_accepts() -> None:
    from domain.touchpoints import Severity as ComplaintSeverity

    sla = AlertRules().complaint_sla
    assert set(sla.targets) == set(sla.severity_of) == {s.value for s in ComplaintSeverity}


def test_a_later_low_answer_updates_the_open_alert_to_it() -> None:
    life = Life()
    nps = builders.survey_answer("C1", "nps", 6, T0)
    csat = builders.survey_answer("C1", "csat", 2, T0 + timedelta(seconds=39))
    life.send(nps)
    life.send(csat)
    assert life.kinds() == [("opened", "detractor_follow_up"), ("updated", "detractor_follow_up")]
    _, updated = life.moves[-1]
    assert updated.alert["evidence"]["answer"]["event_id"] == csat["event_id"]
    assert updated.alert["trigger"] == csat["event_id"]
    assert updated.alert["since"] == utc_iso(T0 + timedelta(seconds=39))
    assert updated.alert["id"] == life.moves[0][1].alert["id"]  # the same alert
    life.until(T0 + timedelta(hours=1))
    assert len(life.moves) == 2  # the clock alone changes nothing more


def test_an_open_alert_follows_its_customers_tier() -> None:
    condition = alerts.Condition(
        Rule.DETRACTOR_FOLLOW_UP, {"kind": "customer", "id": "c1"}, Severity.WARNING, {}, T0
    )
    rules = AlertRules()
    held, _ = alerts.advance("c1", {}, {condition.key: condition}, {}, T0, rules, "vip")
    later = T0 + timedelta(days=1)
    same, none = alerts.advance("c1", held, {condition.key: condition}, {}, later, rules, "vip")
    assert none == []
    _, (moved,) = alerts.advance("c1", same, {condition.key: condition}, {}, later, rules, "small")
    assert (moved.kind, moved.alert["tier"]) == ("updated", "small")
