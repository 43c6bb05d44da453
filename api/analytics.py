"""``/v1/analytics``: population measures, each as of an instant (``as_of``, default
now: the latest materialisation, ``infra.population``), and the lifetime-value model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query

from api.auth import READ, Admin
from api.deps import AsOf, Channel, JourneyType, PlatformDep, Since, refused
from api.schemas import (
    ClvFitIn,
    ClvModelOut,
    EmotionCurvesOut,
    ErrorOut,
    KanoOut,
    MigrationOut,
    OpportunitiesOut,
    PyramidOut,
    RevenueAtRiskOut,
    RfmSegmentsOut,
    SatisfactionOut,
)
from infra import alerts, audit, population
from infra.bootstrap import reporting_money
from projections import analytics

PeriodQ = Annotated[
    Literal["week", "month", "quarter"] | None,
    Query(description="also break down by calendar period"),
]

# Every refusal of these endpoints has one shape (ErrorOut), FastAPI's own.
ERRORS: dict[int | str, dict[str, Any]] = {422: {"model": ErrorOut}}

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])


def _when(as_of: datetime | None) -> datetime:
    if as_of is not None and as_of.tzinfo is None:  # AsOf refuses it; callers in code may not
        raise ValueError("as_of: give an offset, e.g. 2026-01-01T00:00:00Z")
    return as_of or datetime.now(UTC)


@router.get("/pyramid", response_model=PyramidOut, responses=ERRORS, dependencies=[READ])
def get_pyramid(platform: PlatformDep, as_of: AsOf = None) -> dict[str, Any]:
    """Customers, revenue and share of revenue per tier over the trailing window
    (PEAKEND_VALUE_WINDOW_DAYS), and the 80/20 check."""
    return population.view(platform, "pyramid", as_of)


@router.get("/migration", response_model=MigrationOut, responses=ERRORS, dependencies=[READ])
def get_migration(
    platform: PlatformDep,
    as_of: AsOf = None,
    period: Literal["week", "month", "quarter"] = "month",
    periods: Annotated[int, Query(ge=1, le=24)] = 1,
) -> dict[str, Any]:
    """Customers moved from each tier to each tier between consecutive calendar periods
    ([start, end) in PEAKEND_REPORTING_TIMEZONE; including in and out of inactive), for
    the last ``periods`` transitions."""
    return population.view(platform, "migration", as_of, period=period, periods=periods)


@router.get("/rfm", response_model=RfmSegmentsOut, responses=ERRORS, dependencies=[READ])
def get_rfm(platform: PlatformDep, as_of: AsOf = None) -> dict[str, Any]:
    """How many customers are in each RFM segment (quintiles against the population)."""
    return population.view(platform, "rfm", as_of)


@router.get("/satisfaction", response_model=SatisfactionOut, responses=ERRORS, dependencies=[READ])
def get_satisfaction(
    platform: PlatformDep,
    as_of: AsOf = None,
    since: Since = None,
    channel: Channel = None,
    journey_type: JourneyType = None,
    period: PeriodQ = None,
) -> dict[str, Any]:
    """NPS (promoters, passives, detractors), CSAT L1-L5 with the share of L5, and CES:
    overall, by channel, by journey type, by period."""
    return population.view(
        platform,
        "satisfaction",
        as_of,
        since=since,
        channel=channel,
        journey_type=journey_type,
        period=period,
    )


@router.get("/kano", response_model=KanoOut, responses=ERRORS, dependencies=[READ])
def get_kano(platform: PlatformDep, as_of: AsOf = None, since: Since = None) -> dict[str, Any]:
    """Per feature: evaluation-table counts, the category, CS+ and CS-."""
    return population.view(platform, "kano", as_of, since=since)


@router.get(
    "/opportunities", response_model=OpportunitiesOut, responses=ERRORS, dependencies=[READ]
)
def get_opportunities(
    platform: PlatformDep, as_of: AsOf = None, since: Since = None
) -> dict[str, Any]:
    """Importance vs satisfaction per attribute, ranked by opportunity."""
    return population.view(platform, "opportunities", as_of, since=since)


@router.get(
    "/emotion-curves", response_model=EmotionCurvesOut, responses=ERRORS, dependencies=[READ]
)
def get_emotion_curves(
    platform: PlatformDep, as_of: AsOf = None, journey_type: JourneyType = None
) -> dict[str, Any]:
    """Average emotion per journey step, new vs returning customers, and the moments of
    truth (steps most often a journey's peak or end; emotion that best predicts the
    peak-end score)."""
    return population.view(platform, "emotion-curves", as_of, journey_type=journey_type)


@router.get(
    "/revenue-at-risk", response_model=RevenueAtRiskOut, responses=ERRORS, dependencies=[READ]
)
def get_revenue_at_risk(platform: PlatformDep) -> dict[str, Any]:
    """Revenue at risk now, maintained as alerts open and close: the trailing revenue of
    customers with an open detractor, negative-journey or churn alert, times their
    chance of leaving (1 - P(alive); without a model, a configured share); overall
    and per rule."""
    return alerts.revenue_at_risk(platform)


@router.post("/clv/fit", status_code=201, response_model=ClvModelOut, responses=ERRORS)
def post_clv_fit(
    caller: Admin,
    platform: PlatformDep,
    body: Annotated[ClvFitIn | None, Body(examples=[{"as_of": "2026-01-01T00:00:00Z"}])] = None,
) -> dict[str, Any]:
    """Fit BG/NBD (every buyer) and Gamma-Gamma (buyers with a positive mean repeat
    spend) on purchases up to ``as_of`` (default now) and store a new model version. A
    fit that cannot be made (too few buyers, no convergence) is a 422 saying why."""
    as_of = body.as_of if body else None
    s = platform.settings
    try:
        model = analytics.fit_clv(
            platform.store, as_of=_when(as_of), unit=s.clv_time_unit, money=reporting_money(s)
        )
    except analytics.FitRefused as why:
        raise refused(422, ("body", "as_of"), str(why), "fit_refused") from None
    audit.record(platform.store, caller.name, "clv_fit", str(model.get("version")))
    return model


@router.get(
    "/clv/model",
    response_model=ClvModelOut,
    responses={404: {"model": ErrorOut}},
    dependencies=[READ],
)
def get_clv_model(platform: PlatformDep) -> dict[str, Any]:
    """The current lifetime-value model: parameters (r, alpha, a, b; p, q, gamma), time
    unit, as_of, customers, log-likelihood, when fitted."""
    model = analytics.current_clv_model(platform.store)
    if model is None:
        raise refused(
            404, ("clv_model",), "no model fitted yet: POST /v1/analytics/clv/fit", "not_found"
        )
    return model
