"""A customer's measures, derived from the customer document, the population inputs and
an instant: the one implementation behind ``GET /v1/customers/{id}`` (now and as of a
past instant), segments and the change feed.

Everything here is pure. ``derive`` computes the measures document; ``facts`` the
derived facts whose changes go to the change feed; ``next_due`` the earliest instant at
which the measures would change with no new event (a purchase leaving the trailing
window, a customer lapsing, a journey closing by inactivity, a daily refresh of what
the lifetime-value model says). The projector derives after every event, and the
scheduler's clock re-derives what falls due (``projections.maintained``).

Population-dependent measures (tier, RFM scores, retention, the lifetime-value model)
read ``Inputs``: thresholds and boundaries computed from the whole population by the
scheduler (``population_inputs``), versioned, so a customer is ranked in constant time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from enum import StrEnum
from typing import Any

from domain import clv, satisfaction, value
from domain.metrics import attitude_is_high, loyalty_status, nps_category
from domain.money import DEFAULT_CURRENCY, ExchangeRates, RateSchedule, unconverted_out
from projections import customer
from projections.alerts import AlertRules
from projections.analytics import (
    Purchase,
    in_window,
    latest_answers,
    order_history,
    unconverted,
    valued,
)
from projections.base import State, utc_iso
from projections.journeys import closure

# The version of the rules below: stored with every measures document, so a document
# derived by older code is recognisable (and re-derived by the scheduler's roll-out).
RULES_VERSION = 1

ZERO = Decimal(0)


@dataclass(frozen=True)
class Rules:
    """The settings the measures depend on (``infra.bootstrap.measure_rules`` builds
    them from ``PEAKEND_*``)."""

    value_window: timedelta = timedelta(days=365)
    rfm_window: timedelta = timedelta(days=365)
    loyalty_window: timedelta = timedelta(days=365)
    loyalty_nps_high: int = 9
    loyalty_csat_high: int = 4
    loyalty_repeat_purchases: int = 2
    client_orders: int = 5
    advocate_orders: int = 2
    lapse_factor: float = 3.0
    lapse_floor: timedelta = timedelta(days=30)
    lapse_after: timedelta = timedelta(days=365)
    clv_horizon: float = 52.0
    clv_margin: float = 1.0
    clv_discount_rate: float = 0.10
    p_alive_at_risk: float = 0.5
    zone: tzinfo = UTC
    rates: Mapping[str, RateSchedule] = field(default_factory=dict)
    end_steps: Callable[[str], list[str]] = lambda _: ["farewell", "end"]
    inactivity_gap: Callable[[str], timedelta] = lambda _: timedelta(hours=4)
    alerts: AlertRules = field(default_factory=AlertRules)


@dataclass(frozen=True)
class Inputs:
    """What the population says, as of ``computed_at`` (``population_inputs``).

    - ``tiers``: the value in the window at or above which a customer is VIP, major,
      ordinary (the k-th largest active value, k = ceil(cut-off x active customers));
    - ``rfm``: per score 2..5, the recency (at most that many days), frequency and
      monetary (at least that much) a customer needs for it;
    - ``retention``: the population's retention rate (None: no buyer two years back);
    - ``model``: the current lifetime-value model (None: none fitted);
    - ``currency``: the reporting currency.
    Version 0 is the empty population: every active customer ranks first."""

    version: int = 0
    computed_at: str | None = None
    currency: str = DEFAULT_CURRENCY
    tiers: Mapping[str, str] = field(default_factory=dict)
    rfm: Mapping[str, Sequence[str | int | None]] = field(default_factory=dict)
    retention: str | None = None
    model: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, held: Mapping[str, Any]) -> Inputs:
        return cls(**{k: v for k, v in held.items() if k in cls.__dataclass_fields__})


class ChangeKind(StrEnum):
    """The derived facts the change feed records a change of."""

    TIER = "tier"
    RFM_SEGMENT = "rfm_segment"
    LIFECYCLE = "lifecycle"
    NPS_CATEGORY = "nps_category"
    LOYALTY = "loyalty"
    P_ALIVE = "p_alive"
    COMPLAINT_OPENED = "complaint_opened"
    COMPLAINT_CLOSED = "complaint_closed"
    JOURNEY_CLOSED = "journey_closed"
    JOURNEY_REOPENED = "journey_reopened"
    MERGED = "merged"
    SPLIT = "split"
    ERASED = "erased"
    SEGMENT_ENTERED = "segment_entered"
    SEGMENT_LEFT = "segment_left"
    ALERT_OPENED = "alert_opened"
    ALERT_UPDATED = "alert_updated"
    ALERT_ACKNOWLEDGED = "alert_acknowledged"
    ALERT_RESOLVED = "alert_resolved"


@dataclass(frozen=True)
class Change:
    """One change of a derived fact: its kind, what it is about beyond the customer (a
    complaint, a journey, a segment), the values before and after."""

    kind: ChangeKind
    subject: str | None
    before: Any
    after: Any


# -- tiers and RFM from the inputs ----------------------------------------------------


def tier_of(value_in_window: Decimal, *, bought: bool, inputs: Inputs) -> value.Tier:
    """The tier of a value against the population's thresholds: with thresholds
    t_vip >= t_major >= t_ordinary, VIP when value >= t_vip, and so on down; small
    below t_ordinary. Exactly ``value.value_tiers``' rank rule (a tie group takes its
    best member's tier) for the population the thresholds came from. Not positive:
    inactive when the customer ever bought, else prospect."""
    if value_in_window <= 0:
        return value.Tier.INACTIVE if bought else value.Tier.PROSPECT
    for tier in (value.Tier.VIP, value.Tier.MAJOR, value.Tier.ORDINARY):
        threshold = inputs.tiers.get(str(tier))
        if threshold is None or value_in_window >= Decimal(threshold):
            return tier
    return value.Tier.SMALL


def tier_thresholds(values: Iterable[Decimal], cutoffs: value.TierCutoffs) -> dict[str, str]:
    """The thresholds ``tier_of`` reads: for n active (value > 0) customers ranked by
    value, the k-th largest value with k = ceil(cut-off x n) per tier."""
    active = sorted((v for v in values if v > 0), reverse=True)
    if not active:
        return {}
    counts = cutoffs.counts(len(active))
    tiers = (value.Tier.VIP, value.Tier.MAJOR, value.Tier.ORDINARY)
    return {str(t): str(active[k - 1]) for t, k in zip(tiers, counts, strict=True) if k > 0}


def rfm_bounds(scored: Mapping[str, value.Rfm]) -> dict[str, list[str | int | None]]:
    """From the population's exact RFM (``value.rfm``): per score s = 2..5 the most
    days (R) or the least frequency and monetary (F, M) that scores at least s. Scores
    are monotonic in the measure, so for every customer of the population
    ``rfm_score`` gives back the exact score."""
    bounds: dict[str, list[str | int | None]] = {"r": [], "f": [], "m": []}
    bought = [s for s in scored.values() if s.frequency > 0]
    for level in range(2, 6):
        recency = [s.recency_days for s in scored.values() if s.r >= level]
        bounds["r"].append(max(recency) if recency else None)
        frequency = [s.frequency for s in bought if s.f >= level]
        bounds["f"].append(min(frequency) if frequency else None)
        monetary = [s.monetary for s in bought if s.m >= level]
        bounds["m"].append(str(min(monetary)) if monetary else None)
    return bounds


def rfm_score(
    recency_days: int, frequency: int, monetary: Decimal, inputs: Inputs
) -> tuple[int, int, int]:
    """(r, f, m) against the population's boundaries; no purchase in the window: f = m =
    1. With no boundaries (the empty population) a customer scores 5, 5, 5 (or 5, 1, 1)."""
    if not inputs.rfm:
        return (5, 5, 5) if frequency else (5, 1, 1)
    r = 1 + sum(1 for b in inputs.rfm["r"] if b is not None and recency_days <= int(b))
    if not frequency:
        return r, 1, 1
    f = 1 + sum(1 for b in inputs.rfm["f"] if b is not None and frequency >= int(b))
    m = 1 + sum(1 for b in inputs.rfm["m"] if b is not None and monetary >= Decimal(str(b)))
    return r, f, m


# -- the measures document -------------------------------------------------------------


def _rates(inputs: Inputs, rules: Rules) -> ExchangeRates:
    return ExchangeRates(reporting=inputs.currency, rates=rules.rates)


def _value(purchases: Iterable[Purchase]) -> Decimal:
    return sum((v for _, v in valued(purchases)), ZERO)


def attitude_answer(state: State, until: str) -> dict[str, Any] | None:
    """The latest NPS or CSAT answer at or before ``until``: what loyalty's attitude
    reads."""
    given = [
        a
        for a in state["survey_answers"].values()
        if a["metric"] in ("nps", "csat") and a["occurred_at"] <= until
    ]
    return max(given, key=lambda a: (a["occurred_at"], a["event_id"])) if given else None


def loyalty_of(state: State, orders: Sequence[Purchase], rules: Rules, at: datetime) -> State:
    """The loyalty quadrant (Dick & Basu 1994; DOMAIN.md §5) as of ``at``: attitude high
    when the latest NPS answer >= PEAKEND_LOYALTY_NPS_HIGH or CSAT >= ..._CSAT_HIGH (no
    answer: low); repeat patronage high with at least ..._REPEAT_PURCHASES orders in the
    loyalty window before ``at``."""
    latest = attitude_answer(state, utc_iso(at))
    high = latest is not None and attitude_is_high(
        latest["metric"],
        latest["value"],
        nps_threshold=rules.loyalty_nps_high,
        csat_threshold=rules.loyalty_csat_high,
    )
    in_loyalty_window = len(in_window(orders, as_of=at, window=rules.loyalty_window))
    repeat = in_loyalty_window >= rules.loyalty_repeat_purchases
    return {
        "status": loyalty_status(high, repeat).value,
        "attitude": "high" if high else "low",
        "attitude_basis": (
            {k: latest[k] for k in ("metric", "value", "occurred_at")} if latest else None
        ),
        "repeat_patronage": "high" if repeat else "low",
        "orders_in_window": in_loyalty_window,
        "window_days": rules.loyalty_window.days,
        "thresholds": {
            "nps_high": rules.loyalty_nps_high,
            "csat_high": rules.loyalty_csat_high,
            "repeat_purchases": rules.loyalty_repeat_purchases,
        },
        "as_of": utc_iso(at),
    }


def _lifecycle(
    orders: Sequence[Purchase], latest: Mapping[str, Any], rules: Rules, at: datetime
) -> tuple[value.LifecycleStage, str]:
    times = [o.at for o in orders]
    return value.lifecycle_stage(
        orders=len(times),
        last_order_at=times[-1] if times else None,
        usual_gap=value.usual_gap(times),
        as_of=at,
        promoter="nps" in latest and nps_category(latest["nps"]["value"]) == nps_category(10),
        client_orders=rules.client_orders,
        advocate_orders=rules.advocate_orders,
        lapse_factor=rules.lapse_factor,
        lapse_floor=rules.lapse_floor,
        lapse_after=rules.lapse_after,
    )


def _csat(answer: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if answer is None:
        return None
    return {
        "level": answer["value"],
        "name": satisfaction.CSAT_LEVELS[answer["value"]],
        "occurred_at": answer["occurred_at"],
    }


def _latest_value(latest: Mapping[str, Any], metric: str) -> Any:
    return latest[metric]["value"] if metric in latest else None


def _model_summary(
    model: Mapping[str, Any], orders: Sequence[Purchase], at: datetime
) -> tuple[clv.BgNbd, clv.PurchaseSummary] | None:
    summary = clv.summarize([(p.at, p.value) for p in orders], at, model["time_unit"])
    if summary is None:
        return None
    p = model["parameters"]
    return clv.BgNbd(r=p["r"], alpha=p["alpha"], a=p["a"], b=p["b"]), summary


def _model_value(
    model: Mapping[str, Any] | None, orders: Sequence[Purchase], rules: Rules, at: datetime
) -> dict[str, Any] | None:
    """Expected purchases over the horizon, P(alive) and expected value from the
    customer's (frequency, recency, age) under the current model (None: no model, or no
    purchase yet)."""
    found = _model_summary(model, orders, at) if model is not None else None
    if model is None or found is None:
        return None
    bg, summary = found
    p = model["parameters"]
    gg = clv.GammaGamma(p=p["p"], q=p["q"], gamma=p["gamma"]) if "p" in p else None
    return {
        "model_version": model["version"],
        "time_unit": model["time_unit"],
        "horizon": rules.clv_horizon,
        **asdict(summary),
        **clv.customer_value(bg, gg, summary, horizon=rules.clv_horizon, margin=rules.clv_margin),
    }


TREND = timedelta(days=30)  # P(alive) now against this long before: its trend


def _p_alive_then(
    model: Mapping[str, Any] | None, orders: Sequence[Purchase], then: datetime
) -> float | None:
    """P(alive) as the same model would have said at ``then`` (None: no purchase by
    then)."""
    found = _model_summary(model, orders, then) if model is not None else None
    if found is None:
        return None
    bg, summary = found
    return clv.p_alive(bg, summary.frequency, summary.recency, summary.age)


def _simple_value(value_in_window: Decimal, inputs: Inputs, rules: Rules) -> dict[str, Any] | None:
    """CLV = m * r / (1 + d - r): m = the margin over the trailing year, r = the
    population's retention rate, d = PEAKEND_CLV_DISCOUNT_RATE (a one-year window only)."""
    if inputs.retention is None or rules.value_window != timedelta(days=365):
        return None
    margin = value_in_window * Decimal(str(rules.clv_margin))
    retention = Decimal(inputs.retention)
    discount = Decimal(str(rules.clv_discount_rate))
    return {
        "annual_margin": margin,
        "retention_rate": retention,
        "discount_rate": discount,
        "value": clv.simple_clv(margin, retention, discount),
    }


def derive(
    state: State, inputs: Inputs, rules: Rules, at: datetime, *, json_ready: bool = True
) -> State:
    """Every measure of one customer as of ``at``, from their document (touchpoints up
    to ``at`` count) and the population ``inputs``. JSON-ready (money as strings) unless
    ``json_ready`` is False: then money stays Decimal, for a caller that derives many
    times and writes once (``as_json`` then)."""
    until = utc_iso(at)
    rates = _rates(inputs, rules)
    zone = rules.zone
    orders = order_history(state["orders"], until=until, rates=rates, zone=zone)
    in_value_window = in_window(orders, as_of=at, window=rules.value_window)
    window_value = _value(in_value_window)
    window_left_out = unconverted_out(unconverted(in_value_window))
    latest = latest_answers(state, until=until)
    stage, rule = _lifecycle(orders, latest, rules, at)
    tier = tier_of(window_value, bought=bool(orders), inputs=inputs)
    rfm: dict[str, Any] | None = None
    if orders:
        in_rfm_window = in_window(orders, as_of=at, window=rules.rfm_window)
        recency_days = (at - orders[-1].at) // timedelta(days=1)
        frequency, monetary = len(in_rfm_window), _value(in_rfm_window)
        r, f, m = rfm_score(recency_days, frequency, monetary, inputs)
        rfm = {
            "recency_days": recency_days,
            "frequency": frequency,
            "monetary": monetary,
            "r": r,
            "f": f,
            "m": m,
            "segment": str(value.rfm_segment(r, f, m) if frequency else value.RfmSegment.LOST),
            "window_days": rules.rfm_window.days,
            "unconverted": unconverted_out(unconverted(in_rfm_window)),
        }
    since = utc_iso(at - rules.value_window)
    csat_recent = [
        a["value"]
        for a in state["survey_answers"].values()
        if a["metric"] == "csat" and since < a["occurred_at"] <= until
    ]
    due_promises = [kept for when, kept, _ in state.get("promises", []) if when <= until]
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
    share = (
        value.share_of_wallet(window_value, declared_value)
        if declared_value is not None and not window_left_out
        else None
    )
    perceived, expected = (
        _latest_value(latest, "perceived_quality"),
        _latest_value(latest, "expectation"),
    )
    model = _model_value(inputs.model, orders, rules, at)
    before = _p_alive_then(inputs.model, orders, at - TREND) if model else None
    gap = value.usual_gap([o.at for o in orders])
    gap_days = gap / timedelta(days=1) if gap is not None else None
    recency = (at - orders[-1].at) // timedelta(days=1) if orders else None
    measures: State = {
        "rule_version": RULES_VERSION,
        "inputs_version": inputs.version,
        "measures_as_of": until,
        "population_computed_at": inputs.computed_at,
        "currency": rates.reporting,
        "total_spend": customer.total_spend(state, rates, zone),
        "unconverted": unconverted_out(customer.unconverted_spend(state, rates, zone)),
        "orders": len(state["orders"]),
        "value_tier": {
            "tier": str(tier),
            "value_in_window": window_value,
            "window_days": rules.value_window.days,
            "currency": rates.reporting,
            "unconverted": window_left_out,
        },
        "rfm": rfm,
        "lifecycle": {"stage": str(stage), "rule": rule},
        "satisfaction": {
            "csat_latest": _csat(latest.get("csat")),
            "csat_trailing_mean": (sum(csat_recent) / len(csat_recent)) if csat_recent else None,
            "nps_latest": _latest_value(latest, "nps"),
            "nps_category": str(nps_category(latest["nps"]["value"])) if "nps" in latest else None,
            "ces_latest": _latest_value(latest, "ces"),
            "expectation": expected,
            "perceived_quality": perceived,
            "delta": satisfaction.satisfaction_delta(perceived, expected)
            if perceived is not None and expected is not None
            else None,
        },
        "share_of_wallet": {
            "share": share,
            "our_spend_in_window": window_value,
            "declared_category_spend": declared["value"] if declared else None,
            "declared_currency": declared.get("currency") if declared else None,
            "declared_at": declared["occurred_at"] if declared else None,
            "unconverted": window_left_out,
        },
        "trust": {
            "promises_made": len(due_promises),
            "promises_kept": sum(due_promises),
            "reliability": satisfaction.promise_reliability(len(due_promises), sum(due_promises)),
        },
        "loyalty": loyalty_of(state, orders, rules, at),
        "lifetime_value": {
            "currency": rates.reporting,
            "unconverted": unconverted_out(unconverted(orders)),
            "simple": _simple_value(window_value, inputs, rules),
            "model": model,
        },
        "churn_risk": {
            "recency_days": recency,
            "usual_gap_days": gap_days,
            "recency_over_usual_gap": round(recency / gap_days, 3)
            if recency is not None and gap_days
            else None,
            "p_alive": model["p_alive"] if model else None,
            "p_alive_30_days_before": before,
            "p_alive_trend": round(model["p_alive"] - before, 6)
            if model and before is not None
            else None,
        },
    }
    if not json_ready:
        return measures
    found: State = as_json(measures)
    return found


def dumps(data: Any) -> str:
    """``data`` as JSON text: Decimals as strings (exact)."""
    return json.dumps(data, default=_exact)


def as_json(data: Any) -> Any:
    """``data`` as JSON reads it back: Decimals as strings (exact)."""
    return json.loads(dumps(data))


def _exact(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


# -- facts, their changes, and when they fall due -------------------------------------


def p_alive_band(measures: State, rules: Rules) -> str | None:
    p = measures["churn_risk"]["p_alive"]
    if p is None:
        return None
    return "at_risk" if p < rules.p_alive_at_risk else "alive"


def journey_status(journey: State, rules: Rules, at: datetime) -> State:
    """What the feed knows of one journey: open, or closed (how, when, its peak-end
    score)."""
    kind = journey["journey_type"]
    closed = closure(
        journey,
        end_steps=rules.end_steps(kind),
        inactivity_gap=rules.inactivity_gap(kind),
        now=at,
    )
    return {
        "journey_type": kind,
        "last_at": journey["last_at"],
        "closed_by": closed["closed_by"],
        "closed_at": closed["closed_at"],
        "peak_end_score": journey["peak_end_score"],
    }


def gap_end(status: State, rules: Rules) -> datetime:
    """When a journey closes by inactivity unless it goes on: its last touchpoint plus
    its type's gap."""
    return datetime.fromisoformat(status["last_at"]) + rules.inactivity_gap(status["journey_type"])


def facts(
    state: State,
    measures: State,
    journeys: Mapping[str, State],
    rules: Rules,
    segments: Iterable[str] = (),
) -> State:
    """The derived facts whose every change is recorded: tier, RFM segment, lifecycle
    stage, NPS category, loyalty quadrant, P(alive) band, the open complaints, each
    journey's status and the segments the customer is in."""
    return {
        ChangeKind.TIER: measures["value_tier"]["tier"],
        ChangeKind.RFM_SEGMENT: (measures["rfm"] or {}).get("segment"),
        ChangeKind.LIFECYCLE: measures["lifecycle"]["stage"],
        ChangeKind.NPS_CATEGORY: measures["satisfaction"]["nps_category"],
        ChangeKind.LOYALTY: measures["loyalty"]["status"],
        ChangeKind.P_ALIVE: p_alive_band(measures, rules),
        "complaints": sorted(c["complaint_id"] for c in customer.open_complaints(state)),
        "journeys": dict(journeys),
        "segments": sorted(segments),
    }


SCALAR_FACTS = (
    ChangeKind.TIER,
    ChangeKind.RFM_SEGMENT,
    ChangeKind.LIFECYCLE,
    ChangeKind.NPS_CATEGORY,
    ChangeKind.LOYALTY,
    ChangeKind.P_ALIVE,
)


def changes(before: State | None, after: State) -> list[Change]:
    """The changes from one set of facts to the next, in a fixed order. A customer's
    first facts change from nothing (``before`` None: every fact that has a value)."""
    held = before or {"complaints": [], "journeys": {}, "segments": []}
    found = [
        Change(kind, None, held.get(kind), after[kind])
        for kind in SCALAR_FACTS
        if held.get(kind) != after[kind]
    ]
    was, now = set(held["complaints"]), set(after["complaints"])
    found += [Change(ChangeKind.COMPLAINT_OPENED, c, None, c) for c in sorted(now - was)]
    found += [Change(ChangeKind.COMPLAINT_CLOSED, c, c, None) for c in sorted(was - now)]
    was_in, now_in = set(held.get("segments", [])), set(after.get("segments", []))
    found += [Change(ChangeKind.SEGMENT_ENTERED, n, None, n) for n in sorted(now_in - was_in)]
    found += [Change(ChangeKind.SEGMENT_LEFT, n, n, None) for n in sorted(was_in - now_in)]
    for journey_id in sorted(after["journeys"]):
        found += journey_changes(
            journey_id, held["journeys"].get(journey_id), after["journeys"][journey_id]
        )
    return found


def journey_changes(journey_id: str, prior: State | None, status: State) -> list[Change]:
    """The change of one journey's status, if any: closed, or reopened."""
    closed_now = status["closed_by"] is not None
    closed_then = bool(prior and prior["closed_by"] is not None)
    if closed_now and not closed_then:
        return [Change(ChangeKind.JOURNEY_CLOSED, journey_id, prior, status)]
    if closed_then and not closed_now:
        return [Change(ChangeKind.JOURNEY_REOPENED, journey_id, prior, status)]
    return []


def _exits(times: Iterable[datetime], window: timedelta, at: datetime) -> list[datetime]:
    """When each time in the trailing window (at - window, at] leaves it."""
    start = at - window
    return [t + window for t in times if start < t <= at]


def next_due(
    state: State,
    measures: State,
    journeys: Mapping[str, State],
    rules: Rules,
    at: datetime,
) -> datetime | None:
    """The earliest instant after ``at`` at which ``derive`` could answer otherwise with
    no new event: a touchpoint dated in the future comes due; an order leaves the value,
    RFM or loyalty window; an answer leaves the CSAT window; the recency (whole days since
    the last order) counts one more day or crosses the lapse threshold; an open
    journey's inactivity gap ends."""
    order_times = sorted(datetime.fromisoformat(o["occurred_at"]) for o in state["orders"].values())
    answered = [datetime.fromisoformat(a["occurred_at"]) for a in state["survey_answers"].values()]
    promised = [datetime.fromisoformat(p[0]) for p in state.get("promises", [])]
    due: list[datetime] = [t for t in [*order_times, *answered, *promised] if t > at]
    past = [t for t in order_times if t <= at]
    due += _exits(past, rules.value_window, at)
    due += _exits(past, rules.rfm_window, at)
    due += _exits(past, rules.loyalty_window, at)
    due += _exits(answered, rules.value_window, at)
    if past:
        last = past[-1]
        gap = value.usual_gap(past)
        lapse = min(
            rules.lapse_after,
            max(gap * rules.lapse_factor, rules.lapse_floor)
            if gap is not None
            else rules.lapse_after,
        )
        due.append(last + lapse + timedelta(microseconds=1))
        # Recency is in whole days: it counts one more every day after the last order
        # (the R score, the churn inputs and what the model says move with it).
        due.append(last + timedelta(days=(at - last) // timedelta(days=1) + 1))
    due += [gap_end(status, rules) for status in journeys.values() if status["closed_by"] is None]
    later = [t for t in due if t > at]
    return min(later) if later else None


def segment_document(state: State, measures: State) -> State:
    """The flat document segment rules read (``domain.segments.FIELDS``): the profile
    and the maintained measures, numbers as Decimal."""
    rfm = measures["rfm"] or {}
    nps = measures["satisfaction"]["nps_latest"]
    csat = measures["satisfaction"]["csat_latest"]
    return {
        "customer_id": state["customer_id"],
        "first_seen": state["first_seen"],
        "last_seen": state["last_seen"],
        "touchpoints_total": state["touchpoints_total"],
        "counts_by_type": state["counts_by_type"],
        "counts_by_channel": state["counts_by_channel"],
        "total_spend": Decimal(measures["total_spend"]),
        "orders": measures["orders"],
        "open_complaints": len(customer.open_complaints(state)),
        "value_tier": measures["value_tier"]["tier"],
        "value_in_window": Decimal(measures["value_tier"]["value_in_window"]),
        "rfm_segment": rfm.get("segment"),
        "r": rfm.get("r"),
        "f": rfm.get("f"),
        "m": rfm.get("m"),
        "lifecycle": measures["lifecycle"]["stage"],
        "loyalty_status": measures["loyalty"]["status"],
        "nps": nps,
        "nps_category": measures["satisfaction"]["nps_category"],
        "csat": csat["level"] if csat else None,
        "traits": customer.traits(state),
    }
