"""Loyalty status (Dick & Basu 1994, DOMAIN.md §5): relative attitude x repeat patronage.

The document keeps the inputs: every NPS and CSAT answer (in event-time order) and the
time of every distinct order. ``loyalty_view`` decides the quadrant as of an instant, with
thresholds from the settings, and reports the inputs that decided it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from domain.metrics import attitude_is_high, loyalty_status
from projections.base import Projection, RecordedTouchpoint, State, insert_by_time, utc_iso

ATTITUDE_METRICS = ("nps", "csat")


def reduce(state: State | None, event: RecordedTouchpoint) -> State:
    current: State = state or {"customer_id": event.customer_id, "answers": [], "orders": {}}
    at = utc_iso(event.occurred_at)
    if event.type == "purchase":
        order_id = event.payload["order_id"]
        if order_id in current["orders"] and current["orders"][order_id] <= at:
            return current
        return {**current, "orders": {**current["orders"], order_id: at}}
    if event.type == "survey_answered" and event.payload["metric"] in ATTITUDE_METRICS:
        answer = {
            "metric": event.payload["metric"],
            "value": event.payload["value"],
            "occurred_at": at,
            "event_id": event.event_id,
        }
        return {**current, "answers": insert_by_time(current["answers"], answer)}
    return current


def _key(event: RecordedTouchpoint) -> str | None:
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
    state = state or {"answers": [], "orders": {}}
    until, since = utc_iso(as_of), utc_iso(as_of - window)
    given = [answer for answer in state["answers"] if answer["occurred_at"] <= until]
    latest = given[-1] if given else None
    attitude_high = latest is not None and attitude_is_high(
        latest["metric"], latest["value"], nps_threshold=nps_high, csat_threshold=csat_high
    )
    orders = sum(1 for at in state["orders"].values() if since < at <= until)
    repeat_high = orders >= repeat_purchases
    return {
        "status": loyalty_status(attitude_high, repeat_high).value,
        "attitude": "high" if attitude_high else "low",
        "attitude_basis": (
            {k: latest[k] for k in ("metric", "value", "occurred_at")} if latest else None
        ),
        "repeat_patronage": "high" if repeat_high else "low",
        "orders_in_window": orders,
        "window_days": window.days,
        "thresholds": {
            "nps_high": nps_high,
            "csat_high": csat_high,
            "repeat_purchases": repeat_purchases,
        },
        "as_of": until,
    }
