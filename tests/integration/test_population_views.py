"""Population views "now" are the scheduler's latest materialisation: a read does not
pass over the population; a past as_of or a filter is computed when asked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.touchpoints import parse_touchpoint
from infra import jobs, population
from infra.bootstrap import Platform
from projections.base import utc_iso
from tests.builders import purchase, survey_answer
from tests.integration.test_projections import record


def test_now_reads_the_latest_materialisation_until_the_next_refresh(platform: Platform) -> None:
    yesterday = datetime.now(UTC) - timedelta(days=1)
    record(
        platform,
        [
            parse_touchpoint(purchase("V1", "100.00", yesterday)),
            parse_touchpoint(survey_answer("V1", "nps", 10, yesterday)),
        ],
    )
    refreshed_at = datetime.now(UTC)
    jobs.refresh_population(platform, refreshed_at)
    pyramid = population.view(platform, "pyramid", None)
    assert pyramid["as_of"] == utc_iso(refreshed_at)
    assert {t["tier"]: t["customers"] for t in pyramid["tiers"]}["vip"] == 1

    record(
        platform,
        [
            parse_touchpoint(purchase("V2", "50.00", yesterday)),
            parse_touchpoint(survey_answer("V2", "nps", 2, yesterday)),
        ],
    )
    # "Now" stays the materialisation until the next refresh, calendar breakdowns too...
    assert population.view(platform, "pyramid", None) == pyramid
    held = population.view(platform, "satisfaction", None)
    assert held["overall"]["nps"]["responses"] == 1
    for period in ("week", "month", "quarter"):
        weekly = population.view(platform, "satisfaction", None, period=period)
        assert weekly["as_of"] == utc_iso(refreshed_at)
        assert sum(p["nps"]["responses"] for p in weekly["by_period"].values()) == 1
        moved = population.view(platform, "migration", None, period=period, periods=1)
        assert moved["as_of"] == utc_iso(refreshed_at)
    assert population.view(platform, "migration", None, periods=3)["as_of"] != utc_iso(refreshed_at)
    # ...a filter or a past instant is computed when asked, from everything recorded.
    by_channel = population.view(platform, "satisfaction", None, channel="store")
    assert by_channel["overall"]["nps"]["responses"] == 2
    then = population.view(platform, "pyramid", datetime.now(UTC))
    assert sum(t["customers"] for t in then["tiers"]) == 2

    jobs.refresh_population(platform, datetime.now(UTC))
    assert population.view(platform, "satisfaction", None)["overall"]["nps"]["responses"] == 2
    assert sum(t["customers"] for t in population.view(platform, "pyramid", None)["tiers"]) == 2
