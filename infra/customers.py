"""Customers and journeys, the application side of the read API: documents shaped for
answers, measures from the maintained rows ("now") or folded from the event store (as
of a past instant), journey closure by the settings' rules."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from infra.bootstrap import Platform, reporting_money, tier_cutoffs
from projections import analytics, customer, journeys, maintained
from projections.base import State, utc_iso
from projections.measures import Inputs, Rules, derive


class _PastInputs:
    """Population inputs as of past instants: a pass over the population each, so the
    last few are kept for ``SECONDS`` (a dashboard asking for the same ``as_of`` again):
    touchpoints dated before a past instant but recorded since show within that time; a
    new lifetime-value model shows at once."""

    SIZE, SECONDS = 16, 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[tuple[int, str, int], tuple[float, Inputs]] = {}

    def of(self, platform: Platform, at: datetime) -> Inputs:
        model = analytics.current_clv_model(platform.store)
        key = (id(platform.store), utc_iso(at), model["version"] if model else 0)
        with self._lock:
            held = self._held.get(key)
            if held and time.monotonic() - held[0] < self.SECONDS:
                return held[1]
        rules = platform.store.measure_rules or Rules()
        inputs = maintained.population_inputs(
            platform.store,
            as_of=at,
            rules=rules,
            cutoffs=tier_cutoffs(platform.settings),
            money=reporting_money(platform.settings),
        )
        with self._lock:
            self._held[key] = (time.monotonic(), inputs)
            while len(self._held) > self.SIZE:
                self._held.pop(min(self._held, key=lambda k: self._held[k][0]))
        return inputs


PAST_INPUTS = _PastInputs()


def measures_now(platform: Platform, state: State, held: State | None) -> State:
    """The maintained measures (``held``). A customer with no row (the rules failed on
    its first event, which is logged; its next event tries again) is derived on the spot
    against the latest inputs, one document; a store that keeps no measures (a test's
    own projections) against the population as of now."""
    now = datetime.now(UTC)
    rules = platform.store.measure_rules
    if rules is None:
        return derive(state, PAST_INPUTS.of(platform, now), Rules(), now)
    return held or derive(state, maintained.latest_inputs(platform.store), rules, now)


def measures_as_of(platform: Platform, customer_id: str, at: datetime) -> State:
    """The measures as of a past instant: the customer's touchpoints up to ``at`` (event
    time) folded afresh, ranked against the population as of ``at``."""
    until = utc_iso(at)
    state = customer.fold(
        customer_id,
        (
            t
            for t in platform.records.touchpoints_of(customer_id)
            if utc_iso(t.occurred_at) <= until
        ),
    )
    rules = platform.store.measure_rules or Rules()
    return derive(state, PAST_INPUTS.of(platform, at), rules, at)


def customer_view(
    platform: Platform, customer_id: str, as_of: datetime | None
) -> dict[str, Any] | None:
    state, held, quarantined = maintained.customer_read(platform.store, customer_id)
    if state is None:
        return None
    measures = (
        measures_now(platform, state, held)
        if as_of is None
        else measures_as_of(platform, customer_id, as_of)
    )
    identifiers, merges = platform.records.identity.identities(customer_id)
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
        "identifiers": identifiers,
        "merges": merges,
        "recent_touchpoints": list(reversed(state["recent_touchpoints"])),
        "open_complaints": customer.open_complaints(state),
        "complaints_total": len(state["complaints"]),
        "last_survey_answers": customer.last_survey_answers(state),
        "consents": state.get("consents", {}),  # .get: a document projected before consent
        "consent_history": state.get("consent_history", []),
        "loyalty_status": measures["loyalty"]["status"],
        "quarantined": [asdict(q) for q in platform.store.quarantines(customer_id)]
        if quarantined
        else [],
        **measures,
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
