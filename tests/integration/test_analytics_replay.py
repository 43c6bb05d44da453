"""Every population measure is computed from read models that replay to the same state,
so the measures replay to the same values."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from domain import value
from domain.touchpoints import parse_touchpoint
from infra.bootstrap import Platform
from infra.simulator import Simulator, SimulatorConfig, period
from projections import analytics
from streams.projector import replay
from tests.conftest import embedded


def measures(platform: Platform, as_of: Any) -> dict[str, Any]:
    store, year = platform.store, timedelta(days=365)
    found = {
        "pyramid": analytics.pyramid(
            store, as_of=as_of, window=year, currency="EUR", cutoffs=value.TierCutoffs()
        ),
        "migration": analytics.migration(
            store,
            as_of=as_of,
            period="month",
            periods=3,
            currency="EUR",
            cutoffs=value.TierCutoffs(),
        ),
        "rfm": analytics.rfm_segments(store, as_of=as_of, window=year, currency="EUR"),
        "satisfaction": analytics.satisfaction_summary(
            store, as_of=as_of, since=None, channel=None, journey_type=None, period="month"
        ),
        "kano": analytics.kano(store, as_of=as_of),
        "opportunities": analytics.opportunities(store, as_of=as_of),
        "curves": analytics.emotion_curves(store, as_of=as_of),
    }
    for result in found.values():
        result.pop("computed_at")
    return found


def test_population_measures_replay_to_the_same_values(platform: Platform) -> None:
    start, end = period(400)
    simulator = Simulator(SimulatorConfig(seed=9, customers=150, start=start, end=end))
    envelopes = simulator.touchpoints(4000)
    platform.records.record([parse_touchpoint(e) for e in envelopes])
    assert embedded(platform).wait_until_projected(60)
    live = measures(platform, end)
    assert live["pyramid"]["pareto"]["active_customers"] > 0
    assert live["satisfaction"]["overall"]["nps"]["responses"] > 0

    replay(platform.records, platform.store, batch_size=500)

    assert measures(platform, end) == live
