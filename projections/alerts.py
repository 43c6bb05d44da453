"""Alert rules and the alert lifecycle, pure: what operations teams are warned of.

A rule is a pure function of one customer's document, measures and facts as of an
instant: the *conditions* that hold then (``conditions``), each keyed by rule and
subject. The lifecycle (``advance``) compares them with the customer's alerts and gives
the transitions, the way Prometheus Alertmanager treats a firing alert:

- a condition with no open alert of its key opens one (one open alert per rule and
  subject: deduplicated);
- a condition that changes severity updates its alert;
- an open alert whose condition no longer holds is resolved once it stayed clear for
  ``hold_down`` (a flapping condition keeps its one alert);
- an operator acknowledges or resolves an alert by hand (``operator``); one resolved by
  hand while its condition still holds stays resolved until the condition clears.

Conditions depend on time (a deadline passing, a window ending), so ``next_instant``
says when they could next change with no new event: the clock re-derives the customer
then. Alerts are therefore derived state like every measure: the same history gives the
same alerts, live or on a replay, and a back-test is a replay with other rules.

The rules (DOMAIN.md §8, §9; defaults in ``AlertRules``):

- ``detractor_follow_up``: the latest NPS answer at most 6 or CSAT at most 2, with no
  follow-up touchpoint (a call, message, visit or appointment) after it. Breached, and
  raised to its breach severity, once the follow-up target passed.
- ``complaint_sla``: a handling step (acknowledge, resolve, follow up) not recorded by
  its target after the complaint was filed (resolved, for the follow-up), per complaint
  severity. A late step resolves the alert with how late it was.
- ``negative_journey``: a journey closed with a peak-end score at or below a threshold,
  for a customer in the chosen tiers, with no follow-up touchpoint since.
- ``silent_dissatisfaction``: a touchpoint with emotion at or below -2, or a low survey
  answer, and no complaint filed within the window after it, nor a follow-up since.
- ``churn_warning``: recency beyond k times the customer's own usual gap between
  purchases, or P(alive) below a threshold; its severity by value tier.

A trigger older than the rule's ``expires_after`` no longer fires: history imported
years later does not flood anyone, and every alert ends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from domain.consent import permits
from projections import customer
from projections.base import State, utc_iso


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Status(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Rule(StrEnum):
    DETRACTOR_FOLLOW_UP = "detractor_follow_up"
    COMPLAINT_SLA = "complaint_sla"
    NEGATIVE_JOURNEY = "negative_journey"
    SILENT_DISSATISFACTION = "silent_dissatisfaction"
    CHURN_WARNING = "churn_warning"
    CAPACITY = "capacity"


FOLLOW_UP_TYPES = ("call", "message", "visit", "service_appointment")
COMPLAINT_STEPS = ("acknowledge", "resolve", "follow_up")
_STEP_FIELD = {
    "acknowledge": "acknowledged_at",
    "resolve": "resolved_at",
    "follow_up": "followed_up_at",
}


@dataclass(frozen=True)
class RuleSettings:
    """What every rule has: on or off, the tiers it watches (empty: every tier), its
    severity, the consent purpose it serves (None: it serves the customer's own request
    and asks no consent; a purpose the customer has not granted marks its alerts
    suppressed, recorded and not delivered), and how old a trigger may be."""

    enabled: bool = True
    tiers: frozenset[str] = frozenset()
    severity: Severity = Severity.WARNING
    purpose: str | None = None
    expires_after: timedelta = timedelta(days=30)


@dataclass(frozen=True)
class DetractorFollowUp(RuleSettings):
    nps_at_most: int = 6
    csat_at_most: int = 2
    target: timedelta = timedelta(hours=48)
    breach_severity: Severity = Severity.CRITICAL
    follow_up_types: tuple[str, ...] = FOLLOW_UP_TYPES


@dataclass(frozen=True)
class ComplaintSla(RuleSettings):
    """Targets per complaint severity (a complaint without one: ``default_severity``),
    each step from the complaint's filing (the follow-up: from its resolution)."""

    targets: Mapping[str, Mapping[str, timedelta]] = field(
        default_factory=lambda: {
            "low": {
                "acknowledge": timedelta(hours=48),
                "resolve": timedelta(days=14),
                "follow_up": timedelta(days=7),
            },
            "medium": {
                "acknowledge": timedelta(hours=24),
                "resolve": timedelta(days=7),
                "follow_up": timedelta(days=3),
            },
            "high": {
                "acknowledge": timedelta(hours=4),
                "resolve": timedelta(days=2),
                "follow_up": timedelta(days=1),
            },
            "critical": {
                "acknowledge": timedelta(hours=1),
                "resolve": timedelta(days=1),
                "follow_up": timedelta(hours=12),
            },
        }
    )
    default_severity: str = "medium"
    severity_of: Mapping[str, Severity] = field(
        default_factory=lambda: {
            "low": Severity.INFO,
            "medium": Severity.WARNING,
            "high": Severity.CRITICAL,
            "critical": Severity.CRITICAL,
        }
    )


@dataclass(frozen=True)
class NegativeJourney(RuleSettings):
    tiers: frozenset[str] = frozenset({"vip", "major"})
    peak_end_at_most: float = -1.0
    follow_up_types: tuple[str, ...] = FOLLOW_UP_TYPES


@dataclass(frozen=True)
class SilentDissatisfaction(RuleSettings):
    emotion_at_most: int = -2
    nps_at_most: int = 6
    csat_at_most: int = 2
    window: timedelta = timedelta(hours=72)
    follow_up_types: tuple[str, ...] = FOLLOW_UP_TYPES


@dataclass(frozen=True)
class ChurnWarning(RuleSettings):
    gap_factor: float = 2.0
    p_alive_below: float = 0.3
    tiers: frozenset[str] = frozenset({"vip", "major", "ordinary"})
    severity_by_tier: Mapping[str, Severity] = field(
        default_factory=lambda: {
            "vip": Severity.CRITICAL,
            "major": Severity.WARNING,
            "ordinary": Severity.INFO,
        }
    )
    purpose: str | None = "marketing"  # a retention offer is marketing


# What a watched channel's capacity is measured in: touchpoints per slot, or the mean
# wait (``payload.wait_seconds``, carried by calls) of the slot's touchpoints that say it.
CAPACITY_MEASURES = ("touchpoints", "wait_seconds")


@dataclass(frozen=True)
class Capacity(RuleSettings):
    """Per channel and time slot, demand against the channel's optimal and maximum
    capacity (``channels``: channel -> {"optimal": x, "maximum": x, "measure": m}; a
    channel not named is not watched). ``measure``: ``touchpoints`` (the default: how
    many in the slot) or ``wait_seconds`` (the mean wait of the slot's touchpoints that
    carry one). Above optimal for ``sustained_slots`` slots running: ``severity``; above
    maximum in the current slot: ``critical``."""

    channels: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    slot: timedelta = timedelta(minutes=15)
    sustained_slots: int = 2
    expires_after: timedelta = timedelta(days=1)

    def __post_init__(self) -> None:
        for channel, limits in self.channels.items():
            where = f"alert rules: capacity.channels.{channel}"
            if not isinstance(limits, Mapping):
                raise ValueError(f"{where} is an object: optimal, maximum, measure")
            unknown = sorted(set(limits) - {"optimal", "maximum", "measure"})
            if unknown:
                raise ValueError(f"{where}: unknown setting {unknown[0]!r}")
            measure = limits.get("measure", "touchpoints")
            if measure not in CAPACITY_MEASURES:
                raise ValueError(
                    f"{where}.measure: one of {', '.join(CAPACITY_MEASURES)}, got {measure!r}"
                )
            for name in ("optimal", "maximum"):
                value = limits.get(name, 0)
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"{where}.{name}: a number at least 0, got {value!r}")
        if self.sustained_slots < 1:
            raise ValueError("alert rules: capacity.sustained_slots is at least 1")
        if self.slot <= timedelta(0):
            raise ValueError("alert rules: capacity.slot_seconds is more than 0")


@dataclass(frozen=True)
class SlotDemand:
    """One channel's demand in one time slot: its touchpoints, and of those, how many
    carried a wait time and their waits' total."""

    touchpoints: int = 0
    waits: int = 0
    wait_seconds: float = 0.0

    def plus(self, wait_seconds: float | None) -> SlotDemand:
        """With one more touchpoint (``wait_seconds``: the wait it carries, if any)."""
        if wait_seconds is None:
            return replace(self, touchpoints=self.touchpoints + 1)
        return SlotDemand(self.touchpoints + 1, self.waits + 1, self.wait_seconds + wait_seconds)

    def level(self, measure: str) -> float:
        """The slot's demand in ``measure``: touchpoints, or mean wait = total / waits
        (0 with none carrying one)."""
        if measure == "wait_seconds":
            return self.wait_seconds / self.waits if self.waits else 0.0
        return float(self.touchpoints)


# The rules whose open alerts put a customer's revenue at risk (DOMAIN.md §8).
AT_RISK = ("detractor_follow_up", "negative_journey", "churn_warning")


@dataclass(frozen=True)
class AlertRules:
    """Every rule's settings and the lifecycle's hold-down (``infra.bootstrap`` builds
    them from ``PEAKEND_ALERT_RULES``)."""

    detractor_follow_up: DetractorFollowUp = DetractorFollowUp()
    complaint_sla: ComplaintSla = ComplaintSla()
    negative_journey: NegativeJourney = NegativeJourney()
    silent_dissatisfaction: SilentDissatisfaction = SilentDissatisfaction()
    churn_warning: ChurnWarning = ChurnWarning()
    capacity: Capacity = Capacity()
    hold_down: timedelta = timedelta(minutes=5)
    # The chance of leaving for revenue at risk where no lifetime-value model gives
    # P(alive): the share of a customer's trailing revenue counted at risk.
    leave_share_without_model: float = 0.5

    def of(self, rule: Rule) -> RuleSettings:
        settings: RuleSettings = getattr(self, rule.value)
        return settings


@dataclass(frozen=True)
class Condition:
    """A rule's condition holding for one subject (``subject``: kind and id)."""

    rule: Rule
    subject: Mapping[str, str]
    severity: Severity
    evidence: Mapping[str, Any]
    since: datetime  # when it began to hold (the trigger's time, or the deadline)
    purpose: str | None = None
    # The touchpoint that fired it, where a newer one can take its place while the alert
    # stays open (a later low answer, a later bad moment): the alert is updated to it.
    trigger: str | None = None

    @property
    def key(self) -> str:
        return alert_key(self.rule, self.subject)


@dataclass(frozen=True)
class Cleared:
    """What a rule can say of a subject whose condition no longer holds (a complaint
    step recorded late: how late)."""

    key: str
    evidence: Mapping[str, Any]


def alert_key(rule: Rule | str, subject: Mapping[str, str]) -> str:
    """The deduplication key: one open alert per rule and subject."""
    return "/".join([str(rule), *(f"{k}={subject[k]}" for k in sorted(subject))])


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _tier(measures: State) -> str:
    return str(measures["value_tier"]["tier"])


def _watches(settings: RuleSettings, measures: State) -> bool:
    return settings.enabled and (not settings.tiers or _tier(measures) in settings.tiers)


def _last_follow_up(state: State, types: Sequence[str], until: str) -> str | None:
    """The latest follow-up touchpoint at or before ``until`` (event time), from the
    latest instant of each type and the recent touchpoints."""
    held: list[str] = [
        at for kind, at in state.get("last_by_type", {}).items() if kind in types and at <= until
    ]
    held += [
        t["occurred_at"]
        for t in state["recent_touchpoints"]
        if t["type"] in types and t["occurred_at"] <= until
    ]
    return max(held, default=None)


def _low_answer(answer: State, nps_at_most: int, csat_at_most: int) -> bool:
    if answer["metric"] == "nps":
        return int(answer["value"]) <= nps_at_most
    if answer["metric"] == "csat":
        return int(answer["value"]) <= csat_at_most
    return False


def _latest_attitude(state: State, until: str) -> State | None:
    """The latest NPS or CSAT answer at or before ``until``."""
    answers = [
        a
        for a in state["survey_answers"].values()
        if a["metric"] in ("nps", "csat") and a["occurred_at"] <= until
    ]
    return max(answers, key=lambda a: (a["occurred_at"], a["event_id"]), default=None)


# -- the rules: each gives its conditions as of ``at`` and, where it knows, cleared ones --


def detractor_follow_up(
    state: State, measures: State, at: datetime, rules: AlertRules
) -> list[Condition]:
    s = rules.detractor_follow_up
    until = utc_iso(at)
    answer = _latest_attitude(state, until)
    if not _watches(s, measures) or answer is None:
        return []
    if not _low_answer(answer, s.nps_at_most, s.csat_at_most):
        return []
    answered = _at(answer["occurred_at"])
    if at - answered >= s.expires_after:
        return []
    followed = _last_follow_up(state, s.follow_up_types, until)
    if followed is not None and followed > answer["occurred_at"]:
        return []
    due = answered + s.target
    breached = at >= due
    return [
        Condition(
            Rule.DETRACTOR_FOLLOW_UP,
            {"kind": "customer", "id": state["customer_id"]},
            s.breach_severity if breached else s.severity,
            {
                "answer": {
                    k: answer.get(k)
                    for k in ("metric", "value", "survey_id", "question_id", "event_id")
                },
                "answered_at": answer["occurred_at"],
                "journey_id": answer.get("journey_id"),
                "follow_up_due": utc_iso(due),
                "breached": breached,
            },
            answered,
            s.purpose,
            answer.get("event_id"),
        )
    ]


def complaint_sla(
    state: State, measures: State, at: datetime, rules: AlertRules
) -> tuple[list[Condition], list[Cleared]]:
    s = rules.complaint_sla
    if not _watches(s, measures):
        return [], []
    found: list[Condition] = []
    cleared: list[Cleared] = []
    for complaint in state["complaints"].values():
        filed = complaint.get("filed_at")
        if filed is None:
            continue
        level = complaint.get("severity") or s.default_severity
        targets = s.targets.get(level) or s.targets[s.default_severity]
        for step in COMPLAINT_STEPS:
            start = complaint.get("resolved_at") if step == "follow_up" else filed
            if start is None or step not in targets:
                continue
            deadline = _at(start) + targets[step]
            if at - deadline >= s.expires_after:
                continue
            done = complaint.get(_STEP_FIELD[step])
            subject = {
                "kind": "complaint",
                "id": complaint["complaint_id"],
                "step": step,
                "customer_id": state["customer_id"],
            }
            evidence = {
                "complaint_id": complaint["complaint_id"],
                "step": step,
                "complaint_severity": level,
                "target_seconds": int(targets[step].total_seconds()),
                "deadline": utc_iso(deadline),
            }
            if done is None or _at(done) > at:
                if at >= deadline:
                    found.append(
                        Condition(
                            Rule.COMPLAINT_SLA,
                            subject,
                            s.severity_of.get(level, s.severity),
                            {**evidence, "overdue_seconds": int((at - deadline).total_seconds())},
                            deadline,
                            s.purpose,
                        )
                    )
            elif _at(done) > deadline:
                late = int((_at(done) - deadline).total_seconds())
                cleared.append(
                    Cleared(
                        alert_key(Rule.COMPLAINT_SLA, subject),
                        {**evidence, "step_at": done, "late_by_seconds": late},
                    )
                )
    return found, cleared


def negative_journey(
    state: State, measures: State, facts: State, at: datetime, rules: AlertRules
) -> list[Condition]:
    s = rules.negative_journey
    if not _watches(s, measures):
        return []
    until = utc_iso(at)
    followed = _last_follow_up(state, s.follow_up_types, until)
    found = []
    for journey_id, status in sorted(facts.get("journeys", {}).items()):
        score = status.get("peak_end_score")
        closed_at = status.get("closed_at")
        if status.get("closed_by") is None or score is None or closed_at is None:
            continue
        if float(score) > s.peak_end_at_most or at - _at(closed_at) >= s.expires_after:
            continue
        if followed is not None and followed > closed_at:
            continue
        found.append(
            Condition(
                Rule.NEGATIVE_JOURNEY,
                {"kind": "journey", "id": journey_id, "customer_id": state["customer_id"]},
                s.severity,
                {
                    "journey_id": journey_id,
                    "journey_type": status.get("journey_type"),
                    "peak_end_score": score,
                    "closed_by": status["closed_by"],
                    "closed_at": closed_at,
                    "tier": _tier(measures),
                },
                _at(closed_at),
                s.purpose,
            )
        )
    return found


def _negative_moments(state: State, s: SilentDissatisfaction, until: str) -> list[State]:
    moments = [
        {"occurred_at": t["occurred_at"], "event_id": t["event_id"], "emotion": t["emotion"]}
        for t in state["recent_touchpoints"]
        if t.get("emotion") is not None
        and t["emotion"] <= s.emotion_at_most
        and t["occurred_at"] <= until
    ]
    moments += [
        {
            "occurred_at": a["occurred_at"],
            "event_id": a["event_id"],
            "answer": {"metric": a["metric"], "value": a["value"]},
        }
        for a in state["survey_answers"].values()
        if a["occurred_at"] <= until and _low_answer(a, s.nps_at_most, s.csat_at_most)
    ]
    return sorted(moments, key=lambda m: (m["occurred_at"], m["event_id"]))


def silent_dissatisfaction(
    state: State, measures: State, at: datetime, rules: AlertRules
) -> list[Condition]:
    s = rules.silent_dissatisfaction
    if not _watches(s, measures):
        return []
    until = utc_iso(at)
    moments = _negative_moments(state, s, until)
    if not moments:
        return []
    latest = moments[-1]
    when = _at(latest["occurred_at"])
    ends = when + s.window
    if at < ends or at - when >= s.expires_after:
        return []
    filed = [
        c["filed_at"]
        for c in state["complaints"].values()
        if c.get("filed_at") and latest["occurred_at"] <= c["filed_at"] <= until
    ]
    followed = _last_follow_up(state, s.follow_up_types, until)
    if filed or (followed is not None and followed > latest["occurred_at"]):
        return []
    return [
        Condition(
            Rule.SILENT_DISSATISFACTION,
            {"kind": "customer", "id": state["customer_id"]},
            s.severity,
            {"moment": latest, "window_seconds": int(s.window.total_seconds())},
            ends,
            s.purpose,
            latest.get("event_id"),
        )
    ]


def churn_warning(
    state: State, measures: State, at: datetime, rules: AlertRules
) -> list[Condition]:
    s = rules.churn_warning
    if not _watches(s, measures):
        return []
    risk = measures["churn_risk"]
    ratio = risk.get("recency_over_usual_gap")
    p_alive = risk.get("p_alive")
    reasons = []
    if ratio is not None and ratio > s.gap_factor:
        reasons.append("recency_beyond_usual_gap")
    if p_alive is not None and p_alive < s.p_alive_below:
        reasons.append("p_alive_low")
    if not reasons:
        return []
    tier = _tier(measures)
    return [
        Condition(
            Rule.CHURN_WARNING,
            {"kind": "customer", "id": state["customer_id"]},
            s.severity_by_tier.get(tier, s.severity),
            {
                "reasons": reasons,
                "tier": tier,
                "recency_days": risk.get("recency_days"),
                "usual_gap_days": risk.get("usual_gap_days"),
                "recency_over_usual_gap": ratio,
                "gap_factor": s.gap_factor,
                "p_alive": p_alive,
                "p_alive_below": s.p_alive_below,
            },
            at,
            s.purpose,
        )
    ]


def conditions(
    state: State, measures: State, facts: State, at: datetime, rules: AlertRules
) -> tuple[dict[str, Condition], dict[str, Cleared]]:
    """Every rule's conditions for one customer as of ``at``, by key, and what the
    rules say of subjects that cleared."""
    sla, cleared = complaint_sla(state, measures, at, rules)
    found = [
        *detractor_follow_up(state, measures, at, rules),
        *sla,
        *negative_journey(state, measures, facts, at, rules),
        *silent_dissatisfaction(state, measures, at, rules),
        *churn_warning(state, measures, at, rules),
    ]
    return {c.key: c for c in found}, {c.key: c for c in cleared}


def next_instant(
    state: State, facts: State, held: Mapping[str, State], at: datetime, rules: AlertRules
) -> datetime | None:
    """The earliest instant after ``at`` at which ``conditions`` or ``advance`` could
    answer otherwise with no new event: a follow-up target or an SLA deadline passing,
    a silence window ending, a trigger expiring, a hold-down ending. (Churn warnings
    follow the measures, which are re-derived when they fall due.)"""
    due: list[datetime] = []
    d, c, n, q = (
        rules.detractor_follow_up,
        rules.complaint_sla,
        rules.negative_journey,
        rules.silent_dissatisfaction,
    )
    for answer in state["survey_answers"].values():
        if answer["metric"] in ("nps", "csat"):
            when = _at(answer["occurred_at"])
            due += [
                when + d.target,
                when + d.expires_after,
                when + q.window,
                when + q.expires_after,
            ]
    for t in state["recent_touchpoints"]:
        if t.get("emotion") is not None and t["emotion"] <= q.emotion_at_most:
            when = _at(t["occurred_at"])
            due += [when + q.window, when + q.expires_after]
    for complaint in state["complaints"].values():
        level = complaint.get("severity") or c.default_severity
        targets = c.targets.get(level) or c.targets[c.default_severity]
        for step in COMPLAINT_STEPS:
            start = (
                complaint.get("resolved_at") if step == "follow_up" else complaint.get("filed_at")
            )
            if start is not None and step in targets:
                deadline = _at(start) + targets[step]
                due += [deadline, deadline + c.expires_after]
    for status in facts.get("journeys", {}).values():
        if status.get("closed_at"):
            due.append(_at(status["closed_at"]) + n.expires_after)
    for alert in held.values():
        if alert.get("clear_since"):
            due.append(_at(alert["clear_since"]) + rules.hold_down)
    return min((t for t in due if t > at), default=None)


# -- the lifecycle ----------------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    """One step of an alert's life: ``opened``, ``updated`` (its severity),
    ``acknowledged`` or ``resolved``; ``alert`` is the alert after it."""

    kind: str
    alert: State


def alert_id(customer_id: str, key: str, opened_at: datetime) -> str:
    """The same on a replay: the customer, the key and when it opened."""
    text = f"{customer_id}\x1f{key}\x1f{utc_iso(opened_at)}"
    return "alt_" + hashlib.sha256(text.encode()).hexdigest()[:24]


def _opened(
    customer_id: str,
    condition: Condition,
    at: datetime,
    tier: str,
    consented: Callable[[str], bool],
) -> State:
    purpose = condition.purpose
    return {
        "id": alert_id(customer_id, condition.key, at),
        "key": condition.key,
        "rule": str(condition.rule),
        "subject": dict(condition.subject),
        "customer_id": customer_id,
        "tier": tier,
        "severity": str(condition.severity),
        "status": str(Status.OPEN),
        "evidence": dict(condition.evidence),
        "since": utc_iso(condition.since),
        "trigger": condition.trigger,
        "purpose": purpose,
        "channel": condition.evidence.get("channel"),
        # Recorded, not delivered: the customer has not granted the rule's purpose.
        "suppressed": "consent" if purpose is not None and not consented(purpose) else None,
        "opened_at": utc_iso(at),
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "resolved_by": None,
        "resolution": None,
        "clear_since": None,
    }


def advance(
    customer_id: str,
    held: Mapping[str, State],
    now: Mapping[str, Condition],
    cleared: Mapping[str, Cleared],
    at: datetime,
    rules: AlertRules,
    tier: str,
    consented: Callable[[str], bool] = lambda _: True,
) -> tuple[dict[str, State], list[Transition]]:
    """The customer's alerts (by key) once ``now`` holds at ``at``, and the transitions
    that took them there. Resolved alerts leave ``held`` (their record stays in the
    alert table) unless resolved by hand while their condition still holds.
    ``consented(purpose)``: whether the customer granted it, as of ``at``. (Whether a
    silence holds a transition back is the projectors' to mark, as they record it.)"""
    alerts: dict[str, State] = {}
    moves: list[Transition] = []
    for key in sorted(held.keys() | now.keys()):
        alert, condition = held.get(key), now.get(key)
        if alert is not None and alert["status"] == Status.RESOLVED:
            if condition is not None:
                alerts[key] = alert  # resolved by hand: muted until the condition clears
            continue
        if condition is None:
            if alert is None:
                continue
            clear_since = alert["clear_since"] or utc_iso(at)
            if at - _at(clear_since) < rules.hold_down:
                alerts[key] = {**alert, "clear_since": clear_since}
                continue
            said = cleared.get(key)
            resolved = {
                **alert,
                "status": str(Status.RESOLVED),
                "resolved_at": utc_iso(max(at, _at(clear_since))),
                "resolved_by": None,
                "resolution": "cleared",
                "clear_since": clear_since,
                "evidence": {**alert["evidence"], **(said.evidence if said else {})},
            }
            moves.append(Transition("resolved", resolved))
            continue
        if alert is None:
            opened = _opened(customer_id, condition, at, tier, consented)
            alerts[key] = opened
            moves.append(Transition("opened", opened))
            continue
        current = {**alert, "clear_since": None, "evidence": dict(condition.evidence)}
        # Updated (a transition, so the alert as listed and delivered follows) when its
        # severity, its customer's tier or the touchpoint that fired it changes.
        if (
            alert["severity"] != condition.severity
            or alert.get("tier") != tier
            or (condition.trigger is not None and alert.get("trigger") != condition.trigger)
        ):
            current["severity"], current["tier"] = str(condition.severity), tier
            current["trigger"], current["since"] = condition.trigger, utc_iso(condition.since)
            moves.append(Transition("updated", current))
        alerts[key] = current
    return alerts, moves


def ended(held: Mapping[str, State], at: datetime, resolution: str) -> list[Transition]:
    """Every open alert resolved at once: its customer is gone (merged into another,
    whose own alerts its rules raise afresh)."""
    return [
        Transition(
            "resolved",
            {
                **alert,
                "status": str(Status.RESOLVED),
                "resolved_at": utc_iso(at),
                "resolved_by": None,
                "resolution": resolution,
            },
        )
        for _, alert in sorted(held.items())
        if alert["status"] != Status.RESOLVED
    ]


def delivered(change: Mapping[str, Any]) -> bool:
    """Whether an alert transition (a change of the feed) is delivered, to the stream
    and to webhooks: not one a silence holds, nor one its customer's consent holds back."""
    alert = change.get("after") or {}
    return not alert.get("silenced_by") and not alert.get("suppressed")


def evaluate(
    customer_id: str,
    state: State,
    measures: State,
    facts: State,
    held: Mapping[str, State],
    at: datetime,
    rules: AlertRules,
) -> tuple[dict[str, State], list[Transition]]:
    """Every customer rule on one customer as of ``at``, through the lifecycle: its
    alerts after, and the transitions (what the projectors and a back-test both run).
    Consent is the customer's as of ``at``."""
    found, cleared = conditions(state, measures, facts, at, rules)
    consents = customer.consents_of(state)
    return advance(
        customer_id,
        held,
        found,
        cleared,
        at,
        rules,
        str(measures["value_tier"]["tier"]),
        lambda purpose: permits(consents, purpose, at),
    )


def operator(
    held: Mapping[str, State], alert: str, action: str, by: str, at: datetime
) -> tuple[dict[str, State], list[Transition]]:
    """An operator's ``acknowledge`` or ``resolve`` of the alert with id ``alert``: a
    resolved alert, or one not held (already resolved by its condition), is left as it
    is (the action is a no-op, not an error: it may arrive late)."""
    alerts = dict(held)
    for key, found in held.items():
        if found["id"] != alert or found["status"] == Status.RESOLVED:
            continue
        if action == "acknowledge":
            if found["status"] == Status.ACKNOWLEDGED:
                return alerts, []
            acked = {
                **found,
                "status": str(Status.ACKNOWLEDGED),
                "acknowledged_at": utc_iso(at),
                "acknowledged_by": by,
            }
            alerts[key] = acked
            return alerts, [Transition("acknowledged", acked)]
        done = {
            **found,
            "status": str(Status.RESOLVED),
            "resolved_at": utc_iso(at),
            "resolved_by": by,
            "resolution": "operator",
        }
        alerts[key] = done
        return alerts, [Transition("resolved", done)]
    return alerts, []


def with_rules(rules: AlertRules, overrides: Mapping[str, Any]) -> AlertRules:
    """``rules`` with each rule's settings overridden (``PEAKEND_ALERT_RULES``: rule ->
    field -> value; durations in seconds, tiers a list). Unknown rules or fields are
    refused, naming them."""
    changed: dict[str, Any] = {}
    for name, given in overrides.items():
        if name == "hold_down_seconds":
            changed["hold_down"] = timedelta(seconds=float(given))
            continue
        if name == "leave_share_without_model":
            share = float(given)
            if not 0 <= share <= 1:
                raise ValueError("alert rules: leave_share_without_model is between 0 and 1")
            changed[name] = share
            continue
        try:
            current = rules.of(Rule(name))
        except ValueError:
            raise ValueError(
                f"alert rules: unknown rule {name!r} (known: {', '.join(r.value for r in Rule)})"
            ) from None
        fields: dict[str, Any] = {}
        for key, value in given.items():
            attribute = key.removesuffix("_seconds")
            if not hasattr(current, attribute):
                raise ValueError(f"alert rules: {name} has no setting {key!r}")
            try:
                fields[attribute] = _like(getattr(current, attribute), value, f"{name}.{key}")
            except (TypeError, ValueError) as error:
                if str(error).startswith("alert rules:"):
                    raise
                raise ValueError(f"alert rules: {name}.{key}: {error}") from None
        changed[name] = replace(current, **fields)
    return replace(rules, **changed)


def _like(held: Any, value: Any, where: str) -> Any:
    """``value`` (from JSON) as the type of the setting it replaces: seconds as a
    duration, a list as a set or tuple, a severity's name; a mapping is merged into the
    one held, key by key (targets per complaint severity and step, severity per tier)."""
    if isinstance(held, bool) or held is None:
        return value
    if isinstance(held, timedelta):
        return timedelta(seconds=float(value))
    if isinstance(held, Severity):
        return Severity(value)
    if isinstance(held, frozenset):
        return frozenset(str(v) for v in value)
    if isinstance(held, tuple):
        return tuple(str(v) for v in value)
    if isinstance(held, Mapping):
        if not isinstance(value, Mapping):
            raise ValueError(f"alert rules: {where} is an object")
        sample = next(iter(held.values()), None)
        merged = dict(held)
        for k, v in value.items():
            name = str(k).removesuffix("_seconds")  # a duration may say so, as a setting does
            merged[name] = _like(held.get(name, sample), v, f"{where}.{k}")
        return merged
    return type(held)(value)


def revenue_at_risk(measures: State, held: Mapping[str, State], rules: AlertRules) -> State:
    """One customer's revenue at risk (DOMAIN.md §8): with an open detractor,
    negative-journey or churn alert, the trailing revenue (the value window's) times
    the chance of leaving, 1 - P(alive) where the model gives it, else
    ``leave_share_without_model``; overall (the customer once) and per rule. Money as
    decimal strings in the reporting currency; ``{}``: none at risk."""
    open_rules = sorted(
        {a["rule"] for a in held.values() if a["status"] != Status.RESOLVED} & set(AT_RISK)
    )
    if not open_rules:
        return {}
    revenue = Decimal(str(measures["value_tier"]["value_in_window"]))
    p_alive = measures["churn_risk"].get("p_alive")
    leave = (
        Decimal(1) - Decimal(str(p_alive))
        if p_alive is not None
        else Decimal(str(rules.leave_share_without_model))
    )
    amount = (revenue * leave).quantize(Decimal("0.01"))
    return {"amount": str(amount), "rules": open_rules}


# -- capacity: a rule on a channel, not a customer ------------------------------------


def slot_of(at: datetime, slot: timedelta) -> datetime:
    """The start of the time slot holding ``at`` (slots from the epoch, in UTC)."""
    epoch = datetime(1970, 1, 1, tzinfo=at.tzinfo)
    return at - (at - epoch) % slot


def capacity(
    channel: str, demand: Mapping[datetime, SlotDemand], at: datetime, rules: AlertRules
) -> list[Condition]:
    """The capacity condition of ``channel`` as of ``at`` (``demand``: per slot start,
    by event time)."""
    s = rules.capacity
    limits = s.channels.get(channel)
    if not s.enabled or not limits:
        return []
    measure = str(limits.get("measure", "touchpoints"))
    current = slot_of(at, s.slot)
    recent = [current - s.slot * i for i in range(s.sustained_slots)]
    levels = [demand.get(start, SlotDemand()).level(measure) for start in recent]
    optimal, maximum = float(limits.get("optimal", 0)), float(limits.get("maximum", 0))
    if maximum and levels[0] > maximum:
        severity = Severity.CRITICAL
    elif optimal and all(n > optimal for n in levels):
        severity = s.severity
    else:
        return []
    return [
        Condition(
            Rule.CAPACITY,
            {"kind": "channel", "id": channel},
            severity,
            {
                "channel": channel,
                "measure": measure,
                "slot_start": utc_iso(current),
                "slot_seconds": int(s.slot.total_seconds()),
                "demand": {
                    utc_iso(start): round(n, 3) for start, n in zip(recent, levels, strict=True)
                },
                "optimal": optimal,
                "maximum": maximum,
            },
            recent[-1],
            s.purpose,
        )
    ]


def wait_of(payload: Mapping[str, Any]) -> float | None:
    """The wait a touchpoint says its customer had (``payload.wait_seconds``), if any."""
    wait = payload.get("wait_seconds")
    if isinstance(wait, bool) or not isinstance(wait, int | float):
        return None
    return float(wait)


def channel_at(
    channel: str,
    held: Mapping[str, State],
    demand: Mapping[datetime, SlotDemand],
    at: datetime,
    rules: AlertRules,
) -> tuple[dict[str, State], list[Transition], datetime | None]:
    """A watched channel evaluated at ``at`` (what the projectors and a back-test both
    run): its alerts after, the transitions, and when it is next due (None: nothing
    held, so only a touchpoint can change it)."""
    found = {c.key: c for c in capacity(channel, demand, at, rules)}
    after, moves = advance(f"channel:{channel}", held, found, {}, at, rules, "")
    return after, moves, capacity_next(after, at, rules) if after else None


def capacity_next(held: Mapping[str, State], at: datetime, rules: AlertRules) -> datetime:
    """When a channel's condition could next change with no touchpoint: the next slot
    (demand starts again from nothing), or a hold-down ending."""
    due = [slot_of(at, rules.capacity.slot) + rules.capacity.slot]
    due += [_at(a["clear_since"]) + rules.hold_down for a in held.values() if a.get("clear_since")]
    return min(t for t in due if t > at)
