"""Read-side queries: projection documents shaped for the API, rules from the settings."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from api.analytics import customer_measures
from infra.bootstrap import Platform
from projections import customer, journeys, loyalty
from projections.base import State, utc_iso


def loyalty_of(platform: Platform, customer_id: str, as_of: datetime) -> dict[str, Any]:
    s = platform.settings
    return loyalty.loyalty_view(
        platform.store.get("loyalty", customer_id),
        as_of=as_of,
        nps_high=s.loyalty_nps_high,
        csat_high=s.loyalty_csat_high,
        repeat_purchases=s.loyalty_repeat_purchases,
        window=timedelta(days=s.loyalty_window_days),
    )


def customer_view(
    platform: Platform, customer_id: str, as_of: datetime | None
) -> dict[str, Any] | None:
    state = platform.store.get("customer", customer_id)
    if state is None:
        return None
    status = loyalty_of(platform, customer_id, as_of or datetime.now(UTC))
    return {
        **{
            k: state[k]
            for k in (
                "customer_id",
                "first_seen",
                "last_seen",
                "touchpoints_total",
                "counts_by_type",
                "counts_by_channel",
                "spend_by_currency",
            )
        },
        "identifiers": platform.records.identity.identifiers_of(customer_id),
        "merges": platform.records.identity.merge_history(customer_id),
        "recent_touchpoints": list(reversed(state["recent_touchpoints"])),
        "open_complaints": customer.open_complaints(state),
        "complaints_total": len(state["complaints"]),
        "last_survey_answers": customer.last_survey_answers(state),
        "consents": state.get("consents", {}),  # .get: a document projected before consent
        "consent_history": state.get("consent_history", []),
        "loyalty_status": status["status"],
        "loyalty": status,
        "quarantined": [asdict(q) for q in platform.store.quarantines(customer_id)],
        # currency, total_spend (converted), unconverted and orders (every currency)
        # come with the measures: they need the population's reporting currency.
        **customer_measures(platform, state, as_of),
    }


def journey_view(platform: Platform, state: State, now: datetime) -> dict[str, Any]:
    s = platform.settings
    journey_type = state["journey_type"]
    return {
        **state,
        **journeys.closure(
            state,
            end_steps=s.end_steps(journey_type),
            inactivity_gap=s.inactivity_gap(journey_type),
            now=now,
        ),
    }


def journey_answer(platform: Platform, state: State, now: datetime) -> dict[str, Any]:
    """One journey as ``GET /v1/journeys/{id}`` answers it: its view, and its quarantine."""
    held = platform.store.quarantine_of(journeys.PROJECTION.name, state["journey_id"])
    return {**journey_view(platform, state, now), "quarantined": [asdict(held)] if held else []}


def timeline_item(event: Any) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "type": event.type,
        "occurred_at": utc_iso(event.occurred_at),
        "recorded_at": utc_iso(event.timestamp),
        "channel": event.channel,
        "journey": event.journey,
        "emotion": event.emotion,
        "payload": event.payload,
        "additional": event.additional,
    }
