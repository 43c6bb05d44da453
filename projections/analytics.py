"""Population analytics: read-side queries over the read models, as of any instant.

Inputs come from the projections (each customer's orders, every survey answer, every
journey) and the arithmetic from the pure rules in ``domain``; nothing here writes
except the versioned lifetime-value models. Every result says the instant it describes
(``as_of``) and when it was computed, so a team can back-test ("what did the pyramid
look like last quarter?") and imported history is judged as of its own time.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any, Literal

from domain import clv, satisfaction, value
from domain.metrics import peak_end, pearson
from projections.base import utc_iso
from projections.store import ReadModelStore

Period = Literal["week", "month", "quarter"]
Purchases = dict[str, list[tuple[datetime, Decimal]]]


# -- inputs --------------------------------------------------------------------------


def orders_until(
    orders: Mapping[str, Any], *, until: str, currency: str
) -> list[tuple[datetime, Decimal]]:
    """A customer document's orders in ``currency`` at or before ``until``, as (time,
    amount) in time order."""
    return sorted(
        (datetime.fromisoformat(o["occurred_at"]), Decimal(o["amount"]))
        for o in orders.values()
        if o["currency"] == currency and o["occurred_at"] <= until
    )


def latest_answers(state: Mapping[str, Any], *, until: str) -> dict[str, dict[str, Any]]:
    """A customer's latest answer per survey metric at or before ``until``."""
    answers = sorted(
        (a for a in state["survey_answers"].values() if a["occurred_at"] <= until),
        key=lambda a: (a["occurred_at"], a["event_id"]),
    )
    return {a["metric"]: a for a in answers}


def lifecycle(
    orders: list[tuple[datetime, Decimal]], latest: Mapping[str, Any], *, as_of: datetime
) -> tuple[value.LifecycleStage, str]:
    """The lifecycle stage from the orders so far; a promoter is a last NPS of 9 or 10."""
    times = [at for at, _ in orders]
    return value.lifecycle_stage(
        orders=len(times),
        last_order_at=times[-1] if times else None,
        usual_gap=value.usual_gap(times),
        as_of=as_of,
        promoter="nps" in latest and latest["nps"]["value"] >= 9,
    )


def purchases(
    store: ReadModelStore, *, as_of: datetime, currency: str
) -> tuple[Purchases, set[str]]:
    """Each customer's orders in the reporting currency up to ``as_of`` (time, amount),
    and every customer known by then (first seen at or before ``as_of``)."""
    until = utc_iso(as_of)
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT key, state->'orders', state->>'first_seen' FROM {}".format(
                store.table("customer").as_string(cur)
            )
        )
        rows = cur.fetchall()
    by_customer: Purchases = {}
    known: set[str] = set()
    for key, orders, first_seen in rows:
        if first_seen > until:
            continue
        known.add(key)
        by_customer[key] = orders_until(orders, until=until, currency=currency)
    return by_customer, known


def window_values(history: Purchases, *, as_of: datetime, window: timedelta) -> dict[str, Decimal]:
    """Spend per customer in the trailing window (as_of - window, as_of]."""
    start = as_of - window
    return {
        c: sum((a for at, a in p if start < at <= as_of), Decimal(0)) for c, p in history.items()
    }


def answers(
    store: ReadModelStore,
    *,
    as_of: datetime,
    since: datetime | None = None,
    channel: str | None = None,
    journey_type: str | None = None,
    metrics: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Survey answers up to ``as_of`` (and after ``since``), each with the type of the
    journey it belongs to (looked up in the journey projection), filtered."""
    clauses, params = ["a.state->>'occurred_at' <= %s"], [utc_iso(as_of)]
    if since is not None:
        clauses.append("a.state->>'occurred_at' > %s")
        params.append(utc_iso(since))
    if channel:
        clauses.append("a.state->>'channel' = %s")
        params.append(channel)
    if journey_type:
        clauses.append("j.state->>'journey_type' = %s")
        params.append(journey_type)
    wanted = list(metrics)
    if wanted:
        clauses.append("a.state->>'metric' = ANY(%s)")
        params.append(wanted)  # type: ignore[arg-type]
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT a.state, j.state->>'journey_type' FROM {} a LEFT JOIN {} j"
            " ON j.key = a.state->>'journey_id' WHERE {}".format(
                store.table("survey_answer").as_string(cur),
                store.table("journey").as_string(cur),
                " AND ".join(clauses),
            ),
            params,
        )
        return [{**state, "journey_type": kind} for state, kind in cur.fetchall()]


def retention_rate(
    history: Purchases, *, as_of: datetime, year: timedelta = timedelta(days=365)
) -> Decimal | None:
    """r = customers who bought in the year before last and again in the last year /
    customers who bought in the year before last (None when there were none)."""
    last, before = as_of - year, as_of - 2 * year
    earlier = {c for c, p in history.items() if any(before < at <= last for at, _ in p)}
    if not earlier:
        return None
    kept = {c for c in earlier if any(last < at <= as_of for at, _ in history[c])}
    return Decimal(len(kept)) / Decimal(len(earlier))


# -- value: pyramid, migration, RFM --------------------------------------------------


def tiers_as_of(
    history: Purchases, *, as_of: datetime, window: timedelta, cutoffs: value.TierCutoffs
) -> tuple[dict[str, value.Tier], dict[str, Decimal]]:
    values = window_values(history, as_of=as_of, window=window)
    buyers = {c for c, p in history.items() if p}
    return value.value_tiers(values, buyers=buyers, cutoffs=cutoffs), values


def pyramid(
    store: ReadModelStore,
    *,
    as_of: datetime,
    window: timedelta,
    currency: str,
    cutoffs: value.TierCutoffs,
) -> dict[str, Any]:
    """The customer pyramid over the trailing window, and the 80/20 check: the share of
    revenue made by the top 20% of active customers."""
    history, _ = purchases(store, as_of=as_of, currency=currency)
    tiers, values = tiers_as_of(history, as_of=as_of, window=window, cutoffs=cutoffs)
    active = sorted((v for v in values.values() if v > 0), reverse=True)
    total = sum(active, Decimal(0))
    top = active[: math.ceil(len(active) * 0.2)]  # ceil, as the tiers count
    return {
        **_stamp(as_of),
        "window_days": window.days,
        "currency": currency,
        "cutoffs": asdict(cutoffs),
        "tiers": [
            {**asdict(row), "revenue_share": _share(row.revenue_share)}
            for row in value.pyramid(tiers, values)
        ],
        "pareto": {
            "active_customers": len(active),
            "top_20_percent_revenue_share": _share(sum(top, Decimal(0)) / total)
            if total > 0
            else None,
        },
    }


def _share(share: Decimal | None) -> Decimal | None:
    """A share, to four decimals (0.2421), for people to read."""
    return None if share is None else share.quantize(Decimal("0.0001"))


def period_start(moment: datetime, period: Period) -> datetime:
    """The start (UTC) of the calendar period that contains ``moment``."""
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        return day - timedelta(days=day.weekday())
    month = day.replace(day=1)
    if period == "month":
        return month
    return month.replace(month=3 * ((month.month - 1) // 3) + 1)


def previous_period(start: datetime, period: Period) -> datetime:
    if period == "week":
        return start - timedelta(days=7)
    months = 1 if period == "month" else 3
    year, month = divmod(start.month - 1 - months, 12)
    return start.replace(year=start.year + year, month=month + 1)


def migration(
    store: ReadModelStore,
    *,
    as_of: datetime,
    period: Period,
    periods: int,
    currency: str,
    cutoffs: value.TierCutoffs,
) -> dict[str, Any]:
    """Tier migration between consecutive periods, the last ``periods`` transitions up to
    the period containing ``as_of``. A customer's tier at the end of a period comes from
    their value within that period (the period is the pyramid's window there)."""
    history, _ = purchases(store, as_of=as_of, currency=currency)
    ends = [min(as_of, _next(period_start(as_of, period), period))]
    start = period_start(as_of, period)
    for _ in range(periods):
        ends.append(start)
        start = previous_period(start, period)
    ends.reverse()  # oldest first: ends[i] is the end of period i

    def tiers_at(end: datetime) -> dict[str, value.Tier]:
        seen = {c: [(at, a) for at, a in p if at <= end] for c, p in history.items()}
        window = end - period_start(end - timedelta(microseconds=1), period)
        return tiers_as_of(seen, as_of=end, window=window, cutoffs=cutoffs)[0]

    matrices = []
    for before, after in pairwise(ends):
        matrix = value.migration_matrix(tiers_at(before), tiers_at(after))
        matrices.append(
            {
                "from_period_end": utc_iso(before),
                "to_period_end": utc_iso(after),
                "matrix": {
                    str(row): {str(col): n for col, n in cols.items()}
                    for row, cols in matrix.items()
                },
                "up": _moves(matrix, up=True),
                "down": _moves(matrix, up=False),
            }
        )
    return {**_stamp(as_of), "period": period, "currency": currency, "history": matrices}


def _next(start: datetime, period: Period) -> datetime:
    if period == "week":
        return start + timedelta(days=7)
    months = 1 if period == "month" else 3
    year, month = divmod(start.month - 1 + months, 12)
    return start.replace(year=start.year + year, month=month + 1)


_RANK = {
    value.Tier.VIP: 0,
    value.Tier.MAJOR: 1,
    value.Tier.ORDINARY: 2,
    value.Tier.SMALL: 3,
    value.Tier.INACTIVE: 4,
    value.Tier.PROSPECT: 5,
}


def _moves(matrix: Mapping[value.Tier, Mapping[value.Tier, int]], *, up: bool) -> int:
    """Customers who moved up (towards VIP) or down (towards inactive); prospects who
    became buyers count as up."""
    return sum(
        n
        for a, cols in matrix.items()
        for b, n in cols.items()
        if (_RANK[b] < _RANK[a]) == up and a != b and b != value.Tier.PROSPECT
    )


def rfm_population(
    store: ReadModelStore, *, as_of: datetime, window: timedelta, currency: str
) -> dict[str, value.Rfm]:
    history, _ = purchases(store, as_of=as_of, currency=currency)
    return value.rfm(history, as_of=as_of, window=window)


def rfm_segments(
    store: ReadModelStore, *, as_of: datetime, window: timedelta, currency: str
) -> dict[str, Any]:
    scored = rfm_population(store, as_of=as_of, window=window, currency=currency)
    counts: dict[str, int] = {str(s): 0 for s in value.RfmSegment}
    for result in scored.values():
        counts[str(result.segment)] += 1
    return {
        **_stamp(as_of),
        "window_days": window.days,
        "customers": len(scored),
        "segments": counts,
    }


# -- satisfaction: NPS, CSAT, CES, Kano, opportunities -------------------------------


def satisfaction_summary(
    store: ReadModelStore,
    *,
    as_of: datetime,
    since: datetime | None,
    channel: str | None,
    journey_type: str | None,
    period: Period | None,
) -> dict[str, Any]:
    """NPS (promoters, passives, detractors), the CSAT distribution L1-L5 with the share
    of L5, and CES: overall, by channel, by journey type and (with ``period``) by period."""
    rows = answers(
        store,
        as_of=as_of,
        since=since,
        channel=channel,
        journey_type=journey_type,
        metrics=("nps", "csat", "ces"),
    )

    def summary(group: list[dict[str, Any]]) -> dict[str, Any]:
        of = defaultdict(list)
        for row in group:
            of[row["metric"]].append(row["value"])
        return {
            "nps": asdict(satisfaction.nps_summary(of["nps"])),
            "csat": asdict(satisfaction.csat_summary(of["csat"])),
            "ces": dict(satisfaction.ces_summary(of["ces"])),
        }

    def by(key: Any) -> dict[str, Any]:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            groups[str(key(row))].append(row)
        return {name: summary(group) for name, group in sorted(groups.items())}

    result = {
        **_stamp(as_of),
        "filters": {
            "since": utc_iso(since) if since else None,
            "channel": channel,
            "journey_type": journey_type,
        },
        "overall": summary(rows),
        "by_channel": by(lambda r: r["channel"]),
        "by_journey_type": by(lambda r: r["journey_type"] or "none"),
    }
    if period:
        result["by_period"] = by(
            lambda r: utc_iso(period_start(datetime.fromisoformat(r["occurred_at"]), period))
        )
    return result


def kano(
    store: ReadModelStore, *, as_of: datetime, since: datetime | None = None
) -> dict[str, Any]:
    """Per feature: the evaluation-table counts of each respondent's latest (functional,
    dysfunctional) pair in a survey, the resulting category and CS+ / CS-."""
    rows = answers(
        store, as_of=as_of, since=since, metrics=("kano_functional", "kano_dysfunctional")
    )
    pairs: dict[tuple[str, str, str], dict[str, str]] = defaultdict(dict)
    for row in sorted(rows, key=lambda r: (r["occurred_at"], r["event_id"])):
        slot = (row["feature"], row["customer_id"], row["survey_id"])
        pairs[slot][row["metric"]] = row["value"]
    by_feature: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for (feature, _, _), pair in pairs.items():
        if "kano_functional" in pair and "kano_dysfunctional" in pair:
            by_feature[feature].append((pair["kano_functional"], pair["kano_dysfunctional"]))
    return {
        **_stamp(as_of),
        "features": {
            feature: asdict(satisfaction.kano_summary(answered))
            for feature, answered in sorted(by_feature.items())
        },
    }


def opportunities(
    store: ReadModelStore, *, as_of: datetime, since: datetime | None = None
) -> dict[str, Any]:
    """Importance vs satisfaction per attribute: mean importance (0-10) and mean perceived
    quality (0-10) of the attribute; opportunity = importance + max(importance -
    satisfaction, 0), largest first. Attributes lacking either rating are listed apart."""
    rows = answers(store, as_of=as_of, since=since, metrics=("importance", "perceived_quality"))
    ratings: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row.get("attribute"):
            ratings[row["attribute"]][row["metric"]].append(row["value"])
    means = {
        a: (
            sum(r["importance"]) / len(r["importance"]),
            sum(r["perceived_quality"]) / len(r["perceived_quality"]),
        )
        for a, r in ratings.items()
        if r["importance"] and r["perceived_quality"]
    }
    return {
        **_stamp(as_of),
        "ranked": [
            {
                "attribute": a,
                "importance": round(means[a][0], 3),
                "satisfaction": round(means[a][1], 3),
                "opportunity": round(score, 3),
            }
            for a, score in satisfaction.rank_opportunities(means)
        ],
        "incomplete": sorted(set(ratings) - set(means)),
    }


# -- journeys: emotion curves and moments of truth ------------------------------------


def emotion_curves(
    store: ReadModelStore, *, as_of: datetime, journey_type: str | None = None
) -> dict[str, Any]:
    """Per journey type and step: the average emotion, split by new customers (the
    journey was their first contact) and returning ones; and the moments of truth: how
    often each step is its journey's peak or end, and how well its emotion predicts the
    journey's peak-end score (Pearson r across journeys)."""
    until = utc_iso(as_of)
    clause, params = "j.state->>'started_at' <= %s", [until]
    if journey_type:
        clause += " AND j.state->>'journey_type' = %s"
        params.append(journey_type)
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT j.state, c.state->>'first_seen' FROM {} j LEFT JOIN {} c"
            " ON c.key = j.state->>'customer_id' WHERE {}".format(
                store.table("journey").as_string(cur),
                store.table("customer").as_string(cur),
                clause,
            ),
            params,
        )
        rows = cur.fetchall()
    by_type: dict[str, list[tuple[dict[str, Any], bool]]] = defaultdict(list)
    for state, first_seen in rows:
        returning = first_seen is not None and first_seen < state["started_at"]
        by_type[state["journey_type"]].append((state, returning))
    return {
        **_stamp(as_of),
        "journey_types": {
            kind: _curve(journeys, until) for kind, journeys in sorted(by_type.items())
        },
    }


def _curve(journeys: list[tuple[dict[str, Any], bool]], until: str) -> dict[str, Any]:
    emotions: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    positions: dict[str, list[int]] = defaultdict(list)
    peaks: Counter[str] = Counter()
    ends: Counter[str] = Counter()
    pairs: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    scored = 0
    for state, returning in journeys:
        curve = [p for p in state["curve"] if p["occurred_at"] <= until]
        for position, point in enumerate(curve):
            emotions[point["step"]]["returning" if returning else "new"].append(point["emotion"])
            positions[point["step"]].append(position)
        remembered = peak_end([p["emotion"] for p in curve])
        if remembered is None:
            continue
        scored += 1
        peak_step = next(p["step"] for p in curve if p["emotion"] == remembered.peak)
        peaks[peak_step] += 1
        ends[curve[-1]["step"]] += 1
        for point in curve:
            xs, ys = pairs[point["step"]]
            xs.append(point["emotion"])
            ys.append(remembered.peak_end_score)
    steps = sorted(positions, key=lambda s: (sum(positions[s]) / len(positions[s]), s))

    def mean(values: list[int]) -> float | None:
        return round(sum(values) / len(values), 3) if values else None

    return {
        "journeys": len(journeys),
        "steps": [
            {
                "step": step,
                "mean_emotion": mean(emotions[step]["new"] + emotions[step]["returning"]),
                "new_customers": mean(emotions[step]["new"]),
                "returning_customers": mean(emotions[step]["returning"]),
                "responses": len(emotions[step]["new"]) + len(emotions[step]["returning"]),
            }
            for step in steps
        ],
        "moments_of_truth": sorted(
            (
                {
                    "step": step,
                    "peak_share": round(peaks[step] / scored, 3) if scored else None,
                    "end_share": round(ends[step] / scored, 3) if scored else None,
                    "predicts_peak_end": None
                    if (r := pearson(*pairs[step])) is None
                    else round(r, 3),
                }
                for step in steps
            ),
            key=lambda m: -(m["predicts_peak_end"] or 0),
        ),
    }


# -- lifetime value models -------------------------------------------------------------


def create_model_table(store: ReadModelStore) -> None:
    """The versioned lifetime-value models (created at start-up)."""
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS clv_model (version serial PRIMARY KEY,"
            " fitted_at timestamptz NOT NULL DEFAULT now(), model jsonb NOT NULL)"
        )


def fit_clv(
    store: ReadModelStore, *, as_of: datetime, currency: str, unit: clv.TimeUnit = "week"
) -> dict[str, Any]:
    """Fit BG/NBD and Gamma-Gamma on every customer's purchases up to ``as_of`` and store
    the result as a new model version."""
    history, _ = purchases(store, as_of=as_of, currency=currency)
    summaries = [s for p in history.values() if (s := clv.summarize(p, as_of, unit)) is not None]
    repeat = sum(1 for s in summaries if s.frequency > 0)
    if len(summaries) < 10 or repeat < 5:
        raise ValueError(
            f"as_of: {len(summaries)} customers had bought by then, {repeat} "
            "of them again on a later day; a fit needs at least 10 and 5"
        )
    bg = clv.fit_bg_nbd(summaries)
    gg = clv.fit_gamma_gamma(summaries) if any(s.frequency > 0 for s in summaries) else None
    model = {
        "parameters": {**asdict(bg.params), **(asdict(gg.params) if gg else {})},
        "time_unit": unit,
        "as_of": utc_iso(as_of),
        "currency": currency,
        "customers": bg.customers,
        "repeat_customers": gg.customers if gg else 0,
        "log_likelihood": {
            "bg_nbd": bg.log_likelihood,
            "gamma_gamma": gg.log_likelihood if gg else None,
        },
    }
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO clv_model (model) VALUES (%s) RETURNING version, fitted_at",
            (json.dumps(model),),
        )
        row = cur.fetchone()
        assert row is not None
        version, fitted_at = row
    return {"version": version, "fitted_at": fitted_at.isoformat(), **model}


def current_clv_model(store: ReadModelStore) -> dict[str, Any] | None:
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT version, fitted_at, model FROM clv_model ORDER BY version DESC LIMIT 1")
        row = cur.fetchone()
    if row is None:
        return None
    version, fitted_at, model = row
    return {"version": version, "fitted_at": fitted_at.isoformat(), **model}


def customer_clv(
    model: Mapping[str, Any] | None,
    history: list[tuple[datetime, Decimal]],
    *,
    as_of: datetime,
    horizon: float,
    margin: float,
) -> dict[str, Any] | None:
    """A customer's expected purchases over ``horizon`` time units, P(alive) and expected
    value, live from their (frequency, recency, age) and the current model."""
    if model is None:
        return None
    summary = clv.summarize(history, as_of, model["time_unit"])
    if summary is None:
        return None
    p = model["parameters"]
    bg = clv.BgNbd(r=p["r"], alpha=p["alpha"], a=p["a"], b=p["b"])
    gg = clv.GammaGamma(p=p["p"], q=p["q"], gamma=p["gamma"]) if "p" in p else None
    return {
        "model_version": model["version"],
        "time_unit": model["time_unit"],
        "horizon": horizon,
        **asdict(summary),
        **clv.customer_value(bg, gg, summary, horizon=horizon, margin=margin),
    }


def _stamp(as_of: datetime) -> dict[str, str]:
    return {"as_of": utc_iso(as_of), "computed_at": utc_iso(datetime.now(UTC))}
