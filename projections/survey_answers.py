"""Survey answers: one document per answer, for population measures (NPS, CSAT, CES,
Kano, importance vs satisfaction) by channel, journey and period.

An answer belongs to a journey when its touchpoint says so (``journey.id``), or when the
survey tool names it in ``additional.journey_id``; the journey's type is looked up at
read time (the journey projection knows it).
"""

from __future__ import annotations

from projections.base import Projection, RecordedTouchpoint, State, utc_iso


def reduce(state: State | None, event: RecordedTouchpoint) -> State:
    journey_id = (event.journey or {}).get("id") or event.additional.get("journey_id")
    return {
        "event_id": event.event_id,
        "customer_id": event.customer_id,
        "occurred_at": utc_iso(event.occurred_at),
        "channel": event.channel,
        "journey_id": journey_id if isinstance(journey_id, str) else None,
        **{
            k: event.payload.get(k)
            for k in ("survey_id", "question_id", "metric", "value", "attribute", "feature")
        },
    }


def _key(event: RecordedTouchpoint) -> str | None:
    return event.event_id if event.type == "survey_answered" else None


PROJECTION = Projection(name="survey_answer", key=_key, reduce=reduce, indexed=("metric",))
