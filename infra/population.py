"""Population views, the application side: the pyramid, migration, RFM segments,
satisfaction, Kano, opportunities and emotion curves.

"Now" is served from the latest materialisation, made by the scheduler with each
population refresh (``jobs.refresh_population``, every ``PEAKEND_POPULATION_REFRESH_SECONDS``),
so a read never passes over the population; the answer's ``as_of`` says when it was
made. Materialised are the unfiltered answers, and every calendar breakdown: satisfaction
by week, month and quarter (besides by channel and journey type, in every answer), and
the migration between the last two weeks, months and quarters. A past ``as_of``, or a
filter (``since``, one channel, one journey type, more migration periods), is computed
when asked: a pass over the read models, slower by design.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from infra.bootstrap import Platform, reporting_money, tier_cutoffs
from projections import analytics
from projections.measures import as_json

View = Callable[..., dict[str, Any]]


def _pyramid(platform: Platform, at: datetime) -> dict[str, Any]:
    s = platform.settings
    return analytics.pyramid(
        platform.store,
        as_of=at,
        window=timedelta(days=s.value_window_days),
        cutoffs=tier_cutoffs(s),
        money=reporting_money(s),
    )


def _migration(
    platform: Platform, at: datetime, period: analytics.Period = "month", periods: int = 1
) -> dict[str, Any]:
    s = platform.settings
    return analytics.migration(
        platform.store,
        as_of=at,
        period=period,
        periods=periods,
        cutoffs=tier_cutoffs(s),
        money=reporting_money(s),
    )


def _rfm(platform: Platform, at: datetime) -> dict[str, Any]:
    s = platform.settings
    return analytics.rfm_segments(
        platform.store,
        as_of=at,
        window=timedelta(days=s.rfm_window_days),
        money=reporting_money(s),
    )


def _satisfaction(
    platform: Platform,
    at: datetime,
    since: datetime | None = None,
    channel: str | None = None,
    journey_type: str | None = None,
    period: analytics.Period | None = None,
) -> dict[str, Any]:
    return analytics.satisfaction_summary(
        platform.store,
        as_of=at,
        since=since,
        channel=channel,
        journey_type=journey_type,
        period=period,
        zone=platform.settings.reporting_zone,
    )


def _kano(platform: Platform, at: datetime, since: datetime | None = None) -> dict[str, Any]:
    return analytics.kano(platform.store, as_of=at, since=since)


def _opportunities(
    platform: Platform, at: datetime, since: datetime | None = None
) -> dict[str, Any]:
    return analytics.opportunities(platform.store, as_of=at, since=since)


def _emotion_curves(
    platform: Platform, at: datetime, journey_type: str | None = None
) -> dict[str, Any]:
    return analytics.emotion_curves(platform.store, as_of=at, journey_type=journey_type)


PERIODS: tuple[analytics.Period, ...] = get_args(analytics.Period)

# Each view, with the parameters of the answers materialised for "now" reads: the
# unfiltered one, and each calendar breakdown (a choice of three). The first is the
# view's default.
VIEWS: dict[str, tuple[View, tuple[Mapping[str, Any], ...]]] = {
    "pyramid": (_pyramid, ({},)),
    "migration": (
        _migration,
        tuple({"period": p, "periods": 1} for p in ("month", "week", "quarter")),
    ),
    "rfm": (_rfm, ({},)),
    "satisfaction": (_satisfaction, ({}, *({"period": p} for p in PERIODS))),
    "kano": (_kano, ({},)),
    "opportunities": (_opportunities, ({},)),
    "emotion-curves": (_emotion_curves, ({},)),
}


def _materialised_as(name: str, params: Mapping[str, Any]) -> str:
    """The name an answer is materialised under: the view's, with its parameters."""
    return "&".join([name, *(f"{k}={params[k]}" for k in sorted(params))])


def view(platform: Platform, name: str, as_of: datetime | None, **params: Any) -> dict[str, Any]:
    """The view as of ``as_of``. Now (None), with parameters that are materialised,
    the latest materialisation; otherwise computed when asked."""
    compute, held_params = VIEWS[name]
    given = {k: v for k, v in params.items() if v is not None}
    if as_of is None and given in held_params:
        held = analytics.materialised(platform.store, _materialised_as(name, given))
        if held is not None:
            return held
    return compute(platform, as_of or datetime.now(UTC), **given)


def materialise(platform: Platform, now: datetime) -> None:
    """Every materialised answer of every view as of ``now``, stored for "now" reads."""
    for name, (compute, held_params) in VIEWS.items():
        for given in held_params:
            answer = as_json(compute(platform, now, **given))
            analytics.materialise(platform.store, _materialised_as(name, given), now, answer)
