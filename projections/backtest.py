"""Back-testing an alert rule, pure: one customer's history replayed as the projectors
derive it live, with candidate rules, answering what they would have raised and when.

Live, a customer is derived after each of its touchpoints, at the time it was recorded
(never before it was last derived), and at every instant the clock finds due in
between (``measures.next_due``, ``alerts.next_instant``). ``simulate`` steps through the
same instants with the same documents (the customer's and its journeys', folded by the
projections' own reducers), so the same rules give the same alerts; other rules give
what they would have. ``simulate_channel`` does the same for a channel's capacity.
Nothing is written and nothing is delivered; silences and operators' actions are left
out (they decide delivery, not what a rule raises).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from projections import alerts, customer, journeys
from projections.base import RecordedTouchpoint, State
from projections.measures import Inputs, Rules, derive, facts, journey_status, next_due

MAX_STEPS = 10_000  # instants one customer is stepped through at most between two events


@dataclass
class _Customer:
    customer_id: str
    doc: State | None = None
    journeys: dict[str, State] | None = None
    held: dict[str, State] | None = None
    derived_at: datetime | None = None
    due: datetime | None = None


def simulate(
    customer_id: str,
    events: Iterable[RecordedTouchpoint],
    rules: Rules,
    inputs: Callable[[datetime], Inputs],
    until: datetime,
) -> list[tuple[datetime, alerts.Transition]]:
    """Every alert transition of the customer up to ``until``: ``events`` in the order
    they were recorded (``timestamp``), ``inputs(at)`` the population inputs in effect."""
    state = _Customer(customer_id, journeys={}, held={})
    moves: list[tuple[datetime, alerts.Transition]] = []

    def derive_at(at: datetime) -> None:
        doc = state.doc
        assert doc is not None and state.journeys is not None and state.held is not None
        measures = derive(doc, inputs(at), rules, at, json_ready=False)
        statuses = {jid: journey_status(j, rules, at) for jid, j in state.journeys.items()}
        now = facts(doc, measures, statuses, rules)
        state.held, made = alerts.evaluate(
            customer_id, doc, measures, now, state.held, at, rules.alerts
        )
        moves.extend((at, m) for m in made)
        candidates = (
            next_due(doc, measures, statuses, rules, at),
            alerts.next_instant(doc, now, state.held, at, rules.alerts),
        )
        state.due = min((t for t in candidates if t is not None), default=None)
        state.derived_at = at

    def step_until(moment: datetime) -> None:
        # As the projectors' catch-up: at most MAX_STEPS instants at a time.
        for _ in range(MAX_STEPS):
            if state.due is None or state.due > moment:
                return
            derive_at(max(state.due, state.derived_at or state.due))

    for event in events:
        at = max(event.timestamp, state.derived_at or event.timestamp)
        if at > until:
            break
        step_until(at)
        state.doc = customer.reduce(state.doc, event)
        if event.journey is not None and state.journeys is not None:
            key = event.journey["id"]
            state.journeys[key] = journeys.reduce(state.journeys.get(key), event)
        derive_at(at)
    if state.doc is not None:
        step_until(until)
    return moves


def simulate_channel(
    channel: str,
    events: Iterable[RecordedTouchpoint],
    rules: Rules,
    until: datetime,
) -> list[tuple[datetime, alerts.Transition]]:
    """Every capacity transition of a watched channel up to ``until``, as the projectors
    raise them live: ``events`` (every touchpoint, any channel, in the order recorded)
    counted in their slot by event time, the channel evaluated at each one's recorded
    time and at every instant it falls due in between (a slot ending, a hold-down)."""
    s = rules.alerts
    held: dict[str, State] = {}
    demand: dict[datetime, alerts.SlotDemand] = {}
    derived_at: datetime | None = None
    due: datetime | None = None
    moves: list[tuple[datetime, alerts.Transition]] = []

    def evaluate_at(at: datetime) -> None:
        nonlocal held, derived_at, due
        held, made, due = alerts.channel_at(channel, held, demand, at, s)
        moves.extend((at, m) for m in made)
        derived_at = at

    def step_until(moment: datetime) -> None:
        for _ in range(MAX_STEPS):
            if due is None or due > moment:
                return
            evaluate_at(max(due, derived_at or due))

    for event in events:
        if event.channel != channel:
            continue
        at = max(event.timestamp, derived_at or event.timestamp)
        if at > until:
            break
        step_until(at)
        slot = alerts.slot_of(event.occurred_at, s.capacity.slot)
        demand[slot] = demand.get(slot, alerts.SlotDemand()).plus(alerts.wait_of(event.payload))
        evaluate_at(at)
    step_until(until)
    return moves


def report(
    rule: alerts.Rule,
    moves: Iterable[tuple[datetime, alerts.Transition]],
    start: datetime,
    end: datetime,
    customers: int,
    shown: int,
) -> dict[str, Any]:
    """What the rule would have raised in [start, end): how many, per day, and the first
    ``shown`` alerts (each with when it would have resolved, if it would have).
    ``customers``: how many subjects were replayed (customers, or watched channels)."""
    opened: dict[str, dict[str, Any]] = {}
    for at, move in moves:
        alert = move.alert
        if alert["rule"] != rule:
            continue
        if move.kind == "opened" and start <= at < end:
            opened[alert["id"]] = {
                "customer_id": alert["customer_id"],
                "subject": alert["subject"],
                "severity": alert["severity"],
                "opened_at": alert["opened_at"],
                "resolved_at": None,
                "evidence": alert["evidence"],
            }
        elif alert["id"] in opened:
            held = opened[alert["id"]]
            held["severity"] = alert["severity"]
            if move.kind == "resolved":
                held["resolved_at"] = alert["resolved_at"]
    per_day: dict[str, int] = {}
    for found in opened.values():
        day = found["opened_at"][:10]
        per_day[day] = per_day.get(day, 0) + 1
    ordered = sorted(opened.values(), key=lambda a: (a["opened_at"], a["customer_id"]))
    return {
        "rule": str(rule),
        "from": start,
        "to": end,
        "customers": customers,
        "raised": len(opened),
        "per_day": dict(sorted(per_day.items())),
        "alerts": ordered[:shown],
    }
