"""Loyalty status (Dick & Basu 1994, DOMAIN.md §5): relative attitude x repeat patronage.

The document keeps the inputs: the latest NPS and CSAT answers (by event time) and the
time of every distinct order. ``loyalty_view`` decides the quadrant as of an instant, with
thresholds from the settings, and reports the inputs that decided it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from domain.metrics import attitude_is_high, loyalty_status
from projections.base import Projection, State, Touchpoint, utc_iso

ATTITUDE_METRICS = ("nps", "csat")


def reduce(state: State | None, event: Touchpoint) -> State:
    current: State = state or {"customer_id": event.customer_id, "attitude": {}, "orders": {}}
    at = utc_iso(event.occurred_at)
    if event.type == "purchase":
        order_id = event.payload["order_id"]
        if order_id in current["orders"] and current["orders"][order_id] <= at:
            return current
        return {**current, "orders": {**current["orders"], order_id: at}}
    if event.type == "survey_answered" and event.payload["metric"] in ATTITUDE_METRICS:
        metric = event.payload["metric"]
        latest = current["attitude"].get(metric)
        if latest is not None and latest["occurred_at"] >= at:
            return current
        answer = {"value": event.payload["value"], "occurred_at": at}
        return {**current, "attitude": {**current["attitude"], metric: answer}}
    return current


def _key(event: Touchpoint) -> str | None:
    relevant = event.type == "purchase" or (
        event.type == "survey_answered" and event.payload["metric"] in ATTITUDE_METRICS
    )
    return event.customer_id if relevant else None


PROJECTION = Projection(name="loyalty", key=_key, reduce=reduce)


def loyalty_view(
    state: State | None,
    *,
    as_of: datetime,
    nps_high: int,
    csat_high: int,
    repeat_purchases: int,
    window: timedelta,
) -> dict[str, Any]:
    """The quadrant as of ``as_of``.

    Attitude: the most recent NPS or CSAT answer up to ``as_of`` (high: NPS >= nps_high or
    CSAT >= csat_high); no answer counts as low. Repeat patronage: high when the customer
    placed at least ``repeat_purchases`` orders in the ``window`` before ``as_of``.
    """
    state = state or {"attitude": {}, "orders": {}}
    until, since = utc_iso(as_of), utc_iso(as_of - window)
    answers = [
        (answer["occurred_at"], metric, answer["value"])
        for metric, answer in state["attitude"].items()
        if answer["occurred_at"] <= until
    ]
    latest = max(answers, default=None)
    attitude_high = latest is not None and attitude_is_high(
        latest[1], latest[2], nps_threshold=nps_high, csat_threshold=csat_high
    )
    orders = sum(1 for at in state["orders"].values() if since < at <= until)
    repeat_high = orders >= repeat_purchases
    return {
        "status": loyalty_status(attitude_high, repeat_high).value,
        "attitude": "high" if attitude_high else "low",
        "attitude_basis": (
            {"metric": latest[1], "value": latest[2], "occurred_at": latest[0]}
            if latest else None
        ),
        "repeat_patronage": "high" if repeat_high else "low",
        "orders_in_window": orders,
        "window_days": window.days,
        "thresholds": {
            "nps_high": nps_high, "csat_high": csat_high, "repeat_purchases": repeat_purchases,
        },
        "as_of": until,
    }
