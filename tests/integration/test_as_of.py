"""As of any instant: a measure as of t over all events equals the measure over the
events up to t. Two platforms per example: one is sent the whole history, the other only
what happened up to t; every per-customer and population measure as of t must agree."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api import analytics
from domain.touchpoints import parse_touchpoint
from infra import customers as views
from infra.bootstrap import Platform
from tests.builders import complaint, envelope, purchase, survey_answer
from tests.conftest import customer_of
from tests.integration.test_projections import record

END = datetime(2026, 6, 1, 12, tzinfo=UTC)
CUSTOMERS = ["A", "B", "C", "D"]

# What differs between two platforms for the same history: when things were computed,
# and the ids they gave the customers (compared by source id instead).
UNSTABLE = {"computed_at", "population_computed_at", "inputs_version", "customer_id"}


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Up to 30 touchpoints of four customers over two years: purchases (some orders sent
    twice), NPS and CSAT answers to the same question (a later answer replaces an earlier
    one in the document), complaints, journeys with emotions."""
    events: list[dict[str, Any]] = []
    for n in range(draw(st.integers(1, 30))):
        customer = draw(st.sampled_from(CUSTOMERS))
        at = END - timedelta(days=draw(st.integers(0, 730)), hours=draw(st.integers(0, 23)))
        kind = draw(st.sampled_from(["purchase", "nps", "csat", "complaint", "journey"]))
        if kind == "purchase":
            cents = draw(st.integers(1, 50_000))
            raw = purchase(
                customer,
                f"{cents // 100}.{cents % 100:02d}",
                at,
                order_id=f"O{draw(st.integers(0, 6))}",
            )
        elif kind in ("nps", "csat"):
            value = draw(st.integers(0, 10) if kind == "nps" else st.integers(1, 5))
            raw = survey_answer(customer, kind, value, at, survey_id="S", question_id=kind)
        elif kind == "complaint":
            step = draw(st.sampled_from(["filed", "resolved"]))
            raw = complaint(customer, step, at, complaint_id=f"K{draw(st.integers(0, 1))}")
        else:
            raw = envelope(
                customer,
                at,
                journey={"id": f"{customer}-J", "type": "visit", "step": f"s{n % 3}"},
                emotion=draw(st.integers(-3, 3)),
            )
        raw["event_id"] = f"e{n}"
        events.append(raw)
    return events


def measures_of(platform: Platform, source_id: str, at: datetime) -> dict[str, Any]:
    view = views.customer_view(platform, customer_of(platform, source_id), at)
    assert view is not None
    keys = (
        "currency",
        "total_spend",
        "unconverted",
        "value_tier",
        "rfm",
        "lifecycle",
        "satisfaction",
        "share_of_wallet",
        "trust",
        "loyalty",
        "lifetime_value",
        "churn_risk",
        "measures_as_of",
    )
    return {k: view[k] for k in keys}


def population(platform: Platform, at: datetime) -> Any:
    return stable(
        {
            "pyramid": analytics.get_pyramid(platform, as_of=at),
            "migration": analytics.get_migration(platform, as_of=at, periods=3),
            "rfm": analytics.get_rfm(platform, as_of=at),
            "satisfaction": analytics.get_satisfaction(platform, as_of=at, period="month"),
            "kano": analytics.get_kano(platform, as_of=at),
            "opportunities": analytics.get_opportunities(platform, as_of=at),
            "emotion_curves": analytics.get_emotion_curves(platform, as_of=at),
        }
    )


def stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in UNSTABLE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories(), cut=st.integers(0, 730))
def test_the_measures_as_of_t_are_the_measures_of_the_events_up_to_t(
    make_platform: Callable[..., Platform], history: list[dict[str, Any]], cut: int
) -> None:
    t = END - timedelta(days=cut)
    before = [raw for raw in history if datetime.fromisoformat(raw["occurred_at"]) <= t]
    with make_platform() as everything, make_platform() as only_then:
        record(everything, [parse_touchpoint(raw) for raw in history])
        if before:
            record(only_then, [parse_touchpoint(raw) for raw in before])
        known = sorted({raw["customer"]["id"] for raw in before})
        for source_id in known:
            assert stable(measures_of(everything, source_id, t)) == stable(
                measures_of(only_then, source_id, t)
            ), source_id
        assert population(everything, t) == population(only_then, t)
