"""``/v1/analytics``: population measures, and the per-customer measures of
``GET /v1/customers/{id}``, each as of an instant (``as_of``, default now).

Measures that rank a customer against the population (tier, RFM quintiles) need a pass
over every customer; that pass is cached for ``PEAKEND_POPULATION_CACHE_SECONDS`` when it
is "now", and every answer says when it was computed (``computed_at``).
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
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
    RfmSegmentsOut,
    SatisfactionOut,
)
from domain import clv, satisfaction, value
from domain.metrics import nps_category
from domain.money import unconverted_out
from infra import audit
from infra.bootstrap import Platform
from infra.settings import Settings
from projections import analytics, customer
from projections.base import utc_iso
from projections.store import ReadModelStore

PeriodQ = Annotated[
    Literal["week", "month", "quarter"] | None,
    Query(description="also break down by calendar period"),
]

# Every refusal of these endpoints has one shape (ErrorOut), FastAPI's own.
ERRORS: dict[int | str, dict[str, Any]] = {422: {"model": ErrorOut}}

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])


def cutoffs(settings: Settings) -> value.TierCutoffs:
    return value.TierCutoffs(
        vip=settings.tier_vip, major=settings.tier_major, ordinary=settings.tier_ordinary
    )


def money(settings: Settings) -> analytics.Money:
    """How this platform reports money: PEAKEND_CURRENCY (explicit when set in the
    environment, not the default), PEAKEND_EXCHANGE_RATES, PEAKEND_REPORTING_TIMEZONE."""
    return analytics.Money(
        currency=settings.currency,
        explicit="currency" in settings.model_fields_set,
        rates=settings.exchange_rates,
        zone=settings.reporting_zone,
    )


def _when(as_of: datetime | None) -> datetime:
    if as_of is not None and as_of.tzinfo is None:  # AsOf refuses it; callers in code may not
        raise ValueError("as_of: give an offset, e.g. 2026-01-01T00:00:00Z")
    return as_of or datetime.now(UTC)


class Population:
    """Tiers and RFM of every customer as of an instant; "now" is reused for a while, per
    read-model store (each platform has its own population)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now: weakref.WeakKeyDictionary[ReadModelStore, tuple[float, dict[str, Any]]] = (
            weakref.WeakKeyDictionary()
        )

    def of(self, platform: Platform, as_of: datetime | None) -> dict[str, Any]:
        settings = platform.settings
        if as_of is None:
            with self._lock:
                cached = self._now.get(platform.store)
                if cached and time.monotonic() - cached[0] < settings.population_cache_seconds:
                    return cached[1]
        moment = _when(as_of)
        found = analytics.purchase_log(platform.store, as_of=moment, money=money(settings))
        history, known = found.history, found.known
        tiers, values = analytics.tiers_as_of(
            history,
            as_of=moment,
            window=timedelta(days=settings.value_window_days),
            cutoffs=cutoffs(settings),
        )
        population = {
            "as_of": utc_iso(moment),
            "computed_at": utc_iso(datetime.now(UTC)),
            "tiers": tiers,
            "values": values,
            "known": known,
            "rates": found.rates,
            "currency": found.currency,
            "retention": analytics.retention_rate(history, as_of=moment),
            "rfm": analytics.rfm_of(
                history, as_of=moment, window=timedelta(days=settings.rfm_window_days)
            ),
        }
        if as_of is None:
            with self._lock:
                self._now[platform.store] = (time.monotonic(), population)
        return population


POPULATION = Population()


def customer_measures(
    platform: Platform, state: dict[str, Any], as_of: datetime | None
) -> dict[str, Any]:
    """Value tier, RFM, lifecycle stage, satisfaction and lifetime value of one customer,
    as of an instant."""
    settings = platform.settings
    moment = _when(as_of)
    customer_id = state["customer_id"]
    population = POPULATION.of(platform, as_of)
    until = utc_iso(moment)
    rates = population["rates"]
    zone = settings.reporting_zone
    # Every order counts (lifecycle, RFM, the model's frequency); money in the reporting
    # currency, what has no rate listed apart.
    orders = analytics.order_history(state["orders"], until=until, rates=rates, zone=zone)
    value_window = timedelta(days=settings.value_window_days)
    window_left_out = unconverted_out(
        analytics.unconverted(analytics.in_window(orders, as_of=moment, window=value_window))
    )
    latest = analytics.latest_answers(state, until=until)
    stage, rule = analytics.lifecycle(orders, latest, as_of=moment)
    rfm = population["rfm"].get(customer_id)
    model = analytics.current_clv_model(platform.store)
    since = utc_iso(moment - timedelta(days=settings.value_window_days))
    csat_recent = [
        a["value"]
        for a in state["survey_answers"].values()
        if a["metric"] == "csat" and since < a["occurred_at"] <= until
    ]
    due = [kept for at, kept, _ in state.get("promises", []) if at <= until]
    promises = {"made": len(due), "kept": sum(due)}
    declared = latest.get("category_spend")
    declared_value = (
        rates.convert(
            Decimal(declared["value"]),
            declared.get("currency") or rates.reporting,
            datetime.fromisoformat(declared["occurred_at"]).astimezone(zone).date(),
        )
        if declared
        else None
    )
    # Only a share of like with like: the window's money all converted, and the
    # declared total too.
    share = (
        value.share_of_wallet(population["values"].get(customer_id, Decimal(0)), declared_value)
        if declared_value is not None and not window_left_out
        else None
    )
    delta = (
        satisfaction.satisfaction_delta(
            latest["perceived_quality"]["value"], latest["expectation"]["value"]
        )
        if "perceived_quality" in latest and "expectation" in latest
        else None
    )
    rfm_left_out = unconverted_out(
        analytics.unconverted(
            analytics.in_window(
                orders, as_of=moment, window=timedelta(days=settings.rfm_window_days)
            )
        )
    )
    return {
        "currency": rates.reporting,
        "total_spend": customer.total_spend(state, rates, zone),
        "unconverted": unconverted_out(customer.unconverted_spend(state, rates, zone)),
        "orders": len(state["orders"]),
        "measures_as_of": utc_iso(moment),
        "population_computed_at": population["computed_at"],
        "value_tier": {
            "tier": str(population["tiers"].get(customer_id, value.Tier.PROSPECT)),
            "value_in_window": population["values"].get(customer_id, Decimal(0)),
            "window_days": settings.value_window_days,
            "currency": rates.reporting,
            "unconverted": window_left_out,
        },
        "rfm": None
        if rfm is None
        else {
            **asdict(rfm),
            "segment": str(rfm.segment),
            "window_days": settings.rfm_window_days,
            "unconverted": rfm_left_out,
        },
        "lifecycle": {"stage": str(stage), "rule": rule},
        "satisfaction": {
            "csat_latest": _level(latest.get("csat")),
            "csat_trailing_mean": (sum(csat_recent) / len(csat_recent)) if csat_recent else None,
            "nps_latest": latest["nps"]["value"] if "nps" in latest else None,
            "nps_category": str(nps_category(latest["nps"]["value"])) if "nps" in latest else None,
            "ces_latest": latest["ces"]["value"] if "ces" in latest else None,
            "expectation": latest["expectation"]["value"] if "expectation" in latest else None,
            "perceived_quality": latest["perceived_quality"]["value"]
            if "perceived_quality" in latest
            else None,
            "delta": delta,
        },
        "share_of_wallet": {
            "share": share,
            "our_spend_in_window": population["values"].get(customer_id, Decimal(0)),
            "declared_category_spend": declared["value"] if declared else None,
            "declared_currency": (declared.get("currency") if declared else None),
            "declared_at": declared["occurred_at"] if declared else None,
            "unconverted": window_left_out,
        },
        "trust": {
            "promises_made": promises["made"],
            "promises_kept": promises["kept"],
            "reliability": satisfaction.promise_reliability(promises["made"], promises["kept"]),
        },
        "lifetime_value": {
            "currency": rates.reporting,
            "unconverted": unconverted_out(analytics.unconverted(orders)),
            "simple": _simple_clv(population, customer_id, settings),
            "model": analytics.customer_clv(
                model,
                orders,
                as_of=moment,
                horizon=settings.clv_horizon,
                margin=settings.clv_margin,
            ),
        },
    }


def _simple_clv(
    population: dict[str, Any], customer_id: str, settings: Settings
) -> dict[str, Any] | None:
    """CLV = m * r / (1 + d - r): m = the customer's margin over the trailing year, r = the
    population's retention rate (share of the previous year's buyers who bought again in
    the last year), d = PEAKEND_CLV_DISCOUNT_RATE."""
    retention = population["retention"]
    if retention is None or settings.value_window_days != 365:
        return None
    margin = population["values"].get(customer_id, Decimal(0)) * Decimal(str(settings.clv_margin))
    discount = Decimal(str(settings.clv_discount_rate))
    return {
        "annual_margin": margin,
        "retention_rate": retention,
        "discount_rate": discount,
        "value": clv.simple_clv(margin, retention, discount),
    }


def _level(answer: dict[str, Any] | None) -> dict[str, Any] | None:
    if answer is None:
        return None
    return {
        "level": answer["value"],
        "name": satisfaction.CSAT_LEVELS[answer["value"]],
        "occurred_at": answer["occurred_at"],
    }


@router.get("/pyramid", response_model=PyramidOut, responses=ERRORS, dependencies=[READ])
def get_pyramid(platform: PlatformDep, as_of: AsOf = None) -> dict[str, Any]:
    """Customers, revenue and share of revenue per tier over the trailing window
    (PEAKEND_VALUE_WINDOW_DAYS), and the 80/20 check."""
    s = platform.settings
    return analytics.pyramid(
        platform.store,
        as_of=_when(as_of),
        window=timedelta(days=s.value_window_days),
        cutoffs=cutoffs(s),
        money=money(s),
    )


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
    s = platform.settings
    return analytics.migration(
        platform.store,
        as_of=_when(as_of),
        period=period,
        periods=periods,
        cutoffs=cutoffs(s),
        money=money(s),
    )


@router.get("/rfm", response_model=RfmSegmentsOut, responses=ERRORS, dependencies=[READ])
def get_rfm(platform: PlatformDep, as_of: AsOf = None) -> dict[str, Any]:
    """How many customers are in each RFM segment (quintiles against the population)."""
    s = platform.settings
    return analytics.rfm_segments(
        platform.store,
        as_of=_when(as_of),
        window=timedelta(days=s.rfm_window_days),
        money=money(s),
    )


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
    return analytics.satisfaction_summary(
        platform.store,
        as_of=_when(as_of),
        since=since,
        channel=channel,
        journey_type=journey_type,
        period=period,
        zone=platform.settings.reporting_zone,
    )


@router.get("/kano", response_model=KanoOut, responses=ERRORS, dependencies=[READ])
def get_kano(platform: PlatformDep, as_of: AsOf = None, since: Since = None) -> dict[str, Any]:
    """Per feature: evaluation-table counts, the category, CS+ and CS-."""
    return analytics.kano(platform.store, as_of=_when(as_of), since=since)


@router.get(
    "/opportunities", response_model=OpportunitiesOut, responses=ERRORS, dependencies=[READ]
)
def get_opportunities(
    platform: PlatformDep, as_of: AsOf = None, since: Since = None
) -> dict[str, Any]:
    """Importance vs satisfaction per attribute, ranked by opportunity."""
    return analytics.opportunities(platform.store, as_of=_when(as_of), since=since)


@router.get(
    "/emotion-curves", response_model=EmotionCurvesOut, responses=ERRORS, dependencies=[READ]
)
def get_emotion_curves(
    platform: PlatformDep, as_of: AsOf = None, journey_type: JourneyType = None
) -> dict[str, Any]:
    """Average emotion per journey step, new vs returning customers, and the moments of
    truth (steps most often a journey's peak or end; emotion that best predicts the
    peak-end score)."""
    return analytics.emotion_curves(platform.store, as_of=_when(as_of), journey_type=journey_type)


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
            platform.store, as_of=_when(as_of), unit=s.clv_time_unit, money=money(s)
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
