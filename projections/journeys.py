"""Journeys: each journey's touchpoints in event-time order, its emotion curve and how it
will be remembered (peak-end rule, DOMAIN.md §3).

Whether a journey is closed depends on the journey type's end steps and inactivity gap
(settings) and on the current time, so it is decided by ``journey_view`` at read time.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from domain.metrics import peak_end
from projections.base import Projection, RecordedTouchpoint, State, insert_by_time, utc_iso


def reduce(state: State | None, event: RecordedTouchpoint) -> State:
    """Place the touchpoint in its journey by event time and re-derive the curve."""
    if event.journey is None:
        raise ValueError("journey: only touchpoints of a journey are folded into one")
    current: State = state or {
        "journey_id": event.journey["id"],
        "journey_type": event.journey["type"],
        "customer_id": event.customer_id,
        "touchpoints": [],
    }
    touchpoints = insert_by_time(
        current["touchpoints"],
        {
            "event_id": event.event_id,
            "occurred_at": utc_iso(event.occurred_at),
            "step": event.journey["step"],
            "type": event.type,
            "channel": event.channel,
            "emotion": event.emotion,
        },
    )
    curve = [
        {"step": t["step"], "occurred_at": t["occurred_at"], "emotion": t["emotion"]}
        for t in touchpoints
        if t["emotion"] is not None
    ]
    remembered = peak_end([point["emotion"] for point in curve])
    if touchpoints[0]["event_id"] == event.event_id:
        # The journey's earliest touchpoint (by event time) says whose journey it is.
        current = {
            **current,
            "journey_type": event.journey["type"],
            "customer_id": event.customer_id,
        }
    return {
        **current,
        "touchpoints": touchpoints,
        "started_at": touchpoints[0]["occurred_at"],
        "last_at": touchpoints[-1]["occurred_at"],
        "curve": curve,
        **(
            asdict(remembered)
            if remembered
            else dict.fromkeys(("peak", "best", "worst", "end", "peak_end_score", "mean_emotion"))
        ),
    }


def _key(event: RecordedTouchpoint) -> str | None:
    return event.journey["id"] if event.journey else None


PROJECTION = Projection(name="journey", key=_key, reduce=reduce, indexed=("customer_id",))


def closure(
    state: State, *, end_steps: list[str], inactivity_gap: timedelta, now: datetime
) -> dict[str, Any]:
    """A journey is closed by reaching one of its type's end steps, or by ``inactivity_gap``
    passing since its last touchpoint (event time)."""
    ended_at = next(
        (t["occurred_at"] for t in state["touchpoints"] if t["step"] in end_steps), None
    )
    if ended_at is not None:
        return {"closed": True, "closed_by": "end_step", "closed_at": ended_at}
    idle_until = datetime.fromisoformat(state["last_at"]) + inactivity_gap
    if now >= idle_until:
        return {"closed": True, "closed_by": "inactivity", "closed_at": utc_iso(idle_until)}
    return {"closed": False, "closed_by": None, "closed_at": None}
