"""Customer state: who the customer is and everything they did, across channels.

One document per customer id: identifiers, first/last seen (event time), counts by type
and by channel, spend per currency and distinct orders, the latest touchpoints, every
complaint with its handling steps, the latest answer to each survey question, and
consent per purpose (``consents``: the current state; ``consent_history``: every
consent touchpoint, the record ``domain.consent`` judges from).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, tzinfo
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from domain.consent import CONSENT_TYPES, ConsentDecision, Consents, decision_of
from domain.money import ExchangeRates, add_unconverted
from projections.base import Projection, RecordedTouchpoint, State, insert_by_time, utc_iso

RECENT_TOUCHPOINTS = 20
CENTS = Decimal("0.01")
COMPLAINT_STEPS = {
    "complaint_filed": "filed_at",
    "complaint_acknowledged": "acknowledged_at",
    "complaint_resolved": "resolved_at",
    "complaint_followed_up": "followed_up_at",
}


def _counted(counts: dict[str, int], key: str) -> dict[str, int]:
    return {**counts, key: counts.get(key, 0) + 1}


def _with_identifiers(known: dict[str, list[str]], seen: dict[str, str]) -> dict[str, list[str]]:
    merged = dict(known)
    for kind, value in seen.items():
        if value not in merged.get(kind, []):
            merged[kind] = sorted([*merged.get(kind, []), value])
    return merged


def _complaint_step(
    complaints: dict[str, Any], event: RecordedTouchpoint, at: str
) -> dict[str, Any]:
    """Each handling step keeps the earliest time it happened; details (category,
    severity, compensation) come from the latest step, by event time, that states them,
    so the result does not depend on arrival order."""
    complaint_id = event.payload["complaint_id"]
    complaint = dict(complaints.get(complaint_id, {"complaint_id": complaint_id}))
    step = COMPLAINT_STEPS[event.type]
    if step not in complaint or at < complaint[step]:
        complaint[step] = at
    stamp = [at, event.event_id]
    for detail in ("category", "severity", "compensation"):
        if detail in event.payload and stamp > complaint.get(f"_{detail}_at", []):
            complaint[detail] = event.payload[detail]
            complaint[f"_{detail}_at"] = stamp
    if "channel" not in complaint or stamp < complaint["_channel_at"]:
        complaint["channel"], complaint["_channel_at"] = event.channel, stamp  # where filed
    return {**complaints, complaint_id: complaint}


def _survey_answer(answers: dict[str, Any], event: RecordedTouchpoint, at: str) -> dict[str, Any]:
    payload = event.payload
    slot = f"{payload['survey_id']}:{payload['question_id']}"
    held = answers.get(slot)
    if held is not None and (held["occurred_at"], held["event_id"]) >= (at, event.event_id):
        return answers  # an older answer arriving late does not replace a newer one
    answer = {
        **payload,
        "occurred_at": at,
        "channel": event.channel,
        "event_id": event.event_id,
        "journey_id": event.journey["id"] if event.journey else None,
    }
    return {**answers, slot: answer}


def _with_order(orders: dict[str, Any], event: RecordedTouchpoint, at: str) -> dict[str, Any]:
    """An order counts once: re-sent under another event id, the earliest report (by event
    time) of the order stands."""
    order_id = event.payload["order_id"]
    held = orders.get(order_id)
    if held is not None and (held["occurred_at"], held["event_id"]) <= (at, event.event_id):
        return orders
    order = {
        "amount": event.payload["amount"],
        "currency": event.payload["currency"],
        "occurred_at": at,
        "event_id": event.event_id,
    }
    return {**orders, order_id: order}


def _spend_by_currency(orders: dict[str, Any]) -> dict[str, str]:
    """Spend per currency = the exact (Decimal) sum of the distinct orders' amounts."""
    totals: dict[str, Decimal] = {}
    for order in orders.values():
        totals[order["currency"]] = totals.get(order["currency"], Decimal(0)) + Decimal(
            order["amount"]
        )
    return {currency: str(total) for currency, total in sorted(totals.items())}


def _with_traits(held: dict[str, Any], given: dict[str, Any], stamp: list[str]) -> dict[str, Any]:
    """Segmentation traits a source declares (``additional.traits``: region, age band,
    household size...): the latest value of each by event time."""
    merged = dict(held)
    for key, value in given.items():
        if key not in merged or stamp > merged[key]["stamp"]:
            merged[key] = {"value": value, "stamp": stamp}
    return merged


def _consent_record(decision: ConsentDecision) -> dict[str, Any]:
    return {
        "purpose": decision.purpose,
        "granted": decision.granted,
        "at": utc_iso(decision.at),
        "event_id": decision.event_id,
        "channel": decision.channel,
        "policy_version": decision.policy_version,
        "method": decision.method,
        "evidence_ref": decision.evidence_ref,
        "captured_by": decision.captured_by,
    }


def consents_of(state: State) -> Consents:
    """The customer's consent decisions as ``domain.consent`` judges them: what an alert
    rule or a webhook passes to ``domain.consent.permits`` with the purpose it serves."""
    return Consents.of(
        ConsentDecision(**{**record, "at": datetime.fromisoformat(record["at"])})
        for record in state.get("consent_history", [])
    )


def _consent_documents(consents: Consents) -> dict[str, Any]:
    """``consent_history``: every decision in the order it takes effect (event time; a
    withdrawal after a grant at the same instant); ``consents``: per purpose, the state
    after all of them (``Consents.state``)."""
    current = {
        purpose: {
            "granted": state.granted,
            "since": utc_iso(state.since),
            **{
                ("decided_at" if key == "at" else key): value
                for key, value in _consent_record(state.decision).items()
                if key != "purpose"
            },
        }
        for purpose, state in consents.current().items()
    }
    return {
        "consents": current,
        "consent_history": [_consent_record(d) for d in consents.decisions],
    }


def traits(state: State) -> dict[str, Any]:
    return {key: held["value"] for key, held in state.get("traits", {}).items()}


def initial(customer_id: str, at: str) -> State:
    """The document of a customer with no touchpoint yet (``at``: first and last seen)."""
    return {
        "customer_id": customer_id,
        "identifiers": {},
        "first_seen": at,
        "last_seen": at,
        "touchpoints_total": 0,
        "counts_by_type": {},
        "counts_by_channel": {},
        "spend_by_currency": {},
        "orders": {},
        "recent_touchpoints": [],
        "complaints": {},
        "survey_answers": {},
        "consents": {},
        "consent_history": [],
    }


def fold(customer_id: str, events: Iterable[RecordedTouchpoint]) -> State:
    """The document of these touchpoints alone (a customer as of a past instant); the
    empty document when there are none."""
    state: State | None = None
    for event in events:
        state = reduce(state, event)
    return state or initial(customer_id, utc_iso(datetime.min.replace(tzinfo=UTC)))


def reduce(state: State | None, event: RecordedTouchpoint) -> State:
    """Fold one recorded touchpoint into the customer's document."""
    at = utc_iso(event.occurred_at)
    current: State = state or initial(event.customer_id, at)
    recent = insert_by_time(
        current["recent_touchpoints"],
        {
            "event_id": event.event_id,
            "type": event.type,
            "channel": event.channel,
            "occurred_at": at,
            "emotion": event.emotion,
            "journey_id": event.journey["id"] if event.journey else None,
        },
    )[-RECENT_TOUCHPOINTS:]
    nxt: State = {
        **current,
        "identifiers": _with_identifiers(current["identifiers"], event.identifiers),
        "first_seen": min(current["first_seen"], at),
        "last_seen": max(current["last_seen"], at),
        "touchpoints_total": current["touchpoints_total"] + 1,
        "counts_by_type": _counted(current["counts_by_type"], event.type),
        "counts_by_channel": _counted(current["counts_by_channel"], event.channel),
        "recent_touchpoints": recent,
        # The latest instant of each type (an alert rule asks whether a follow-up came).
        "last_by_type": {
            **current.get("last_by_type", {}),
            event.type: max(current.get("last_by_type", {}).get(event.type, at), at),
        },
    }
    if event.type == "purchase":
        orders = _with_order(current["orders"], event, at)
        if orders is not current["orders"]:
            nxt["orders"] = orders
            nxt["spend_by_currency"] = _spend_by_currency(orders)
    elif event.type in COMPLAINT_STEPS:
        nxt["complaints"] = _complaint_step(current["complaints"], event, at)
    elif event.type == "survey_answered":
        nxt["survey_answers"] = _survey_answer(current["survey_answers"], event, at)
    elif event.type in CONSENT_TYPES:
        decision = decision_of(
            event.type,
            event.payload,
            at=event.occurred_at,
            event_id=event.event_id,
            channel=event.channel,
        )
        nxt.update(_consent_documents(consents_of(current).with_decision(decision)))
    declared = event.additional.get("traits")
    if isinstance(declared, dict) and declared:
        nxt["traits"] = _with_traits(current.get("traits", {}), declared, [at, event.event_id])
    if event.type == "delivery" and "on_time" in event.payload:
        # A delivery date is a promise (DOMAIN.md §11): reliability is promises kept.
        nxt["promises"] = sorted(
            [*current.get("promises", []), [at, bool(event.payload["on_time"]), event.event_id]]
        )
    return nxt


PROJECTION = Projection(name="customer", key=lambda event: event.customer_id, reduce=reduce)


def open_complaints(state: State) -> list[dict[str, Any]]:
    """Complaints filed and not yet resolved, oldest first."""
    complaints = [
        {k: v for k, v in c.items() if not k.startswith("_")}
        for c in state["complaints"].values()
        if "filed_at" in c and "resolved_at" not in c
    ]
    return sorted(complaints, key=lambda c: c["filed_at"])


def total_spend(state: State, currency: str | ExchangeRates, zone: tzinfo = UTC) -> Decimal:
    """Total spend in the reporting currency.

    Given exchange rates: sum over the distinct orders of amount x rate (the rate
    effective on the order's day in ``zone``; ``domain.money.convert``), summed exactly
    and then rounded once to cents (half to even), as the API has always shown it;
    orders in a currency without a rate that day left out (``unconverted_spend`` says
    how much).
    Given a currency code only: the orders in that currency, no rate being invented.
    """
    if isinstance(currency, str):
        return Decimal(state["spend_by_currency"].get(currency, "0.00"))
    total = Decimal(0)
    for order in state["orders"].values():
        converted = currency.convert(
            Decimal(order["amount"]), order["currency"], _order_day(order, zone)
        )
        if converted is not None:
            total += converted
    return total.quantize(CENTS, rounding=ROUND_HALF_EVEN)


def unconverted_spend(state: State, rates: ExchangeRates, zone: tzinfo = UTC) -> dict[str, Decimal]:
    """Per currency, the spend ``total_spend`` leaves out for want of an exchange rate."""
    left_out: dict[str, Decimal] = {}
    for order in state["orders"].values():
        if rates.rate(order["currency"], _order_day(order, zone)) is None:
            add_unconverted(left_out, order["currency"], Decimal(order["amount"]))
    return left_out


def _order_day(order: dict[str, Any], zone: tzinfo) -> date:
    return datetime.fromisoformat(order["occurred_at"]).astimezone(zone).date()


def last_survey_answers(state: State, limit: int = 20) -> list[dict[str, Any]]:
    answers = sorted(state["survey_answers"].values(), key=lambda a: a["occurred_at"])
    return list(reversed(answers))[:limit]
