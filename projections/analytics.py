"""Population analytics: read-side queries over the read models, as of any instant.

Inputs come from the projections (each customer's orders, every survey answer, every
journey) and the arithmetic from the pure rules in ``domain``; nothing here writes
except the versioned lifetime-value models. Every result says the instant it describes
(``as_of``) and when it was computed, so a team can back-test ("what did the pyramid
look like last quarter?") and imported history is judged as of its own time.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from itertools import pairwise
from typing import Any, Literal, NamedTuple

from domain import clv, satisfaction, value
from domain.metrics import peak_end, pearson
from domain.money import (
    DEFAULT_CURRENCY,
    ExchangeRates,
    RateSchedule,
    add_unconverted,
    reporting_currency,
    unconverted_out,
)
from projections.base import utc_iso
from projections.store import ReadModelStore

log = logging.getLogger(__name__)

Period = Literal["week", "month", "quarter"]


class Purchase(NamedTuple):
    """One distinct order: when, its value in the reporting currency (None: no exchange
    rate that day, the money is left out of value measures), and the amount as bought."""

    at: datetime
    value: Decimal | None
    amount: Decimal
    currency: str


Purchases = dict[str, list[Purchase]]


@dataclass(frozen=True)
class Money:
    """How money is reported: the configured currency (``explicit`` when set on
    purpose, not the default), exchange rates into it, and the time zone whose calendar
    day picks a date-effective rate."""

    currency: str = DEFAULT_CURRENCY
    explicit: bool = False
    rates: Mapping[str, RateSchedule] = field(default_factory=dict)
    zone: tzinfo = UTC

    def exchange(self, seen: Iterable[str]) -> ExchangeRates:
        """The rates for a data set whose purchases are in the currencies ``seen``
        (see ``domain.money.reporting_currency`` for the single-currency rule)."""
        reporting = reporting_currency(
            self.currency, explicit=self.explicit, has_rates=bool(self.rates), seen=set(seen)
        )
        return ExchangeRates(reporting=reporting, rates=self.rates)


# Currencies already reported in the log as lacking a rate: one WARNING per currency and
# process, not one per purchase or per request.
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def warn_unconverted(reporting: str, unconverted: Mapping[str, Decimal]) -> None:
    for currency in sorted(unconverted):
        with _warned_lock:
            if (reporting, currency) in _warned:
                continue
            _warned.add((reporting, currency))
        log.warning(
            "purchases in %s have no exchange rate into %s: their money is left out of "
            "value measures (answers show it as unconverted); set PEAKEND_EXCHANGE_RATES, "
            'e.g. {"%s": "0.92"}',
            currency,
            reporting,
            currency,
        )


# -- inputs --------------------------------------------------------------------------


def order_history(
    orders: Mapping[str, Any],
    *,
    until: str | None = None,
    rates: ExchangeRates,
    zone: tzinfo = UTC,
) -> list[Purchase]:
    """A customer document's orders at or before ``until`` (UTC ISO; None: all), in
    every currency, in time order, each valued in the reporting currency on its own day
    (in ``zone``)."""
    found = []
    for o in orders.values():
        if until is not None and o["occurred_at"] > until:
            continue
        at = datetime.fromisoformat(o["occurred_at"])
        amount = Decimal(o["amount"])
        found.append(
            Purchase(
                at, rates.convert(amount, o["currency"], _day(at, zone)), amount, o["currency"]
            )
        )
    return sorted(found)


def _day(at: datetime, zone: tzinfo) -> date:
    return at.astimezone(zone).date()


def unconverted(purchases: Iterable[Purchase]) -> dict[str, Decimal]:
    """Per currency, the amounts of the purchases that have no value in the reporting
    currency (no rate that day)."""
    totals: dict[str, Decimal] = {}
    for p in purchases:
        if p.value is None:
            add_unconverted(totals, p.currency, p.amount)
    return totals


def valued(purchases: Iterable[Purchase]) -> list[tuple[datetime, Decimal]]:
    """(time, value) of each purchase, an unconverted one at 0: it still happened (it
    counts for frequency and recency), its money is reported apart."""
    return [(p.at, p.value if p.value is not None else Decimal(0)) for p in purchases]


def latest_answers(state: Mapping[str, Any], *, until: str) -> dict[str, dict[str, Any]]:
    """A customer's latest answer per survey metric at or before ``until``."""
    answers = sorted(
        (a for a in state["survey_answers"].values() if a["occurred_at"] <= until),
        key=lambda a: (a["occurred_at"], a["event_id"]),
    )
    return {a["metric"]: a for a in answers}


@dataclass(frozen=True)
class PurchaseLog:
    """Every known customer's purchases up to an instant, valued in the reporting
    currency."""

    history: Purchases
    known: set[str]
    rates: ExchangeRates

    @property
    def currency(self) -> str:
        return self.rates.reporting


def currencies_seen(store: ReadModelStore) -> set[str]:
    """Every currency any recorded purchase is in."""
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT o.value->>'currency' FROM {} c,"
            " jsonb_each(c.state->'orders') AS o".format(store.table("customer").as_string(cur))
        )
        return {row[0] for row in cur.fetchall()}


def purchase_log(store: ReadModelStore, *, as_of: datetime, money: Money) -> PurchaseLog:
    """Each customer's orders up to ``as_of`` in every currency, valued in the reporting
    currency, and every customer known by then (first seen at or before ``as_of``). The
    reporting currency is decided on every purchase recorded (not only those up to
    ``as_of``), so a back-test reports in the same currency as today."""
    until = utc_iso(as_of)
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT key, state->'orders', state->>'first_seen' FROM {}".format(
                store.table("customer").as_string(cur)
            )
        )
        rows = cur.fetchall()
    seen = {o["currency"] for _, orders, _ in rows for o in orders.values()}
    rates = money.exchange(seen)
    by_customer: Purchases = {}
    known: set[str] = set()
    for key, orders, first_seen in rows:
        if first_seen > until:
            continue
        known.add(key)
        by_customer[key] = order_history(orders, until=until, rates=rates, zone=money.zone)
    left_out = unconverted(p for ps in by_customer.values() for p in ps)
    warn_unconverted(rates.reporting, left_out)
    return PurchaseLog(by_customer, known, rates)


def _minus(moment: datetime, span: timedelta) -> datetime:
    """moment - span, or the earliest instant when that is before year 1 (a long window
    from an early instant means "everything")."""
    try:
        return moment - span
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


def in_window(
    purchases: Iterable[Purchase], *, as_of: datetime, window: timedelta
) -> list[Purchase]:
    """The purchases in the trailing window (as_of - window, as_of]."""
    start = _minus(as_of, window)
    return [p for p in purchases if start < p.at <= as_of]


def window_values(history: Purchases, *, as_of: datetime, window: timedelta) -> dict[str, Decimal]:
    """Value per customer in the trailing window (as_of - window, as_of]; unconverted
    purchases add nothing (see ``window_unconverted``)."""
    return {
        c: sum((v for _, v in valued(in_window(p, as_of=as_of, window=window))), Decimal(0))
        for c, p in history.items()
    }


def window_unconverted(
    history: Purchases, *, as_of: datetime, window: timedelta
) -> dict[str, Decimal]:
    """The money of the window's purchases left out of ``window_values``, per currency."""
    return unconverted(
        p for ps in history.values() for p in in_window(ps, as_of=as_of, window=window)
    )


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
    last, before = _minus(as_of, year), _minus(as_of, 2 * year)
    earlier = {c for c, p in history.items() if any(before < o.at <= last for o in p)}
    if not earlier:
        return None
    kept = {c for c in earlier if any(last < o.at <= as_of for o in history[c])}
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
    currency: str = DEFAULT_CURRENCY,
    cutoffs: value.TierCutoffs,
    money: Money | None = None,
) -> dict[str, Any]:
    """The customer pyramid over the trailing window, and the 80/20 check: the share of
    revenue made by the top 20% of active customers. Money without an exchange rate is
    left out of the revenue and listed in ``unconverted``."""
    found = purchase_log(store, as_of=as_of, money=money or Money(currency=currency))
    tiers, values = tiers_as_of(found.history, as_of=as_of, window=window, cutoffs=cutoffs)
    active = sorted((v for v in values.values() if v > 0), reverse=True)
    total = sum(active, Decimal(0))
    top = active[: math.ceil(len(active) * 0.2)]  # ceil, as the tiers count
    return {
        **_stamp(as_of),
        "window_days": window.days,
        "currency": found.currency,
        "unconverted": unconverted_out(
            window_unconverted(found.history, as_of=as_of, window=window)
        ),
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


def period_start(moment: datetime, period: Period, zone: tzinfo = UTC) -> datetime:
    """The first instant of the calendar period (ISO week from Monday, month, quarter)
    that contains ``moment``: midnight of its first day in ``zone``. Built from the
    local calendar date, so a period starts at local midnight across DST changes."""
    day = moment.astimezone(zone).date()
    if period == "week":
        day -= timedelta(days=day.weekday())
    elif period == "month":
        day = day.replace(day=1)
    else:
        day = day.replace(month=3 * ((day.month - 1) // 3) + 1, day=1)
    return datetime(day.year, day.month, day.day, tzinfo=zone)


def next_period(start: datetime, period: Period) -> datetime:
    """The start of the period after the one starting at ``start`` (local midnight)."""
    if period == "week":
        day = start.date() + timedelta(days=7)
    else:
        months = 1 if period == "month" else 3
        year, month = divmod(start.month - 1 + months, 12)
        day = date(start.year + year, month + 1, 1)
    return datetime(day.year, day.month, day.day, tzinfo=start.tzinfo)


def previous_period(start: datetime, period: Period) -> datetime:
    """The start of the period before the one starting at ``start`` (local midnight)."""
    if period == "week":
        day = start.date() - timedelta(days=7)
    else:
        months = 1 if period == "month" else 3
        year, month = divmod(start.month - 1 - months, 12)
        day = date(start.year + year, month + 1, 1)
    return datetime(day.year, day.month, day.day, tzinfo=start.tzinfo)


def period_name(start: datetime, period: Period) -> str:
    """A period's name: ISO week ``2026-W24``, month ``2026-06``, quarter ``2026-Q2``."""
    if period == "week":
        year, week, _ = start.date().isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return f"{start.year}-{start.month:02d}"
    return f"{start.year}-Q{(start.month - 1) // 3 + 1}"


def period_label(start: datetime, period: Period, *, as_of: datetime) -> dict[str, Any]:
    """A period as answers show it: name, start and end (the next period's start, not
    included) as ISO instants with the reporting zone's offset, and whether it is
    complete as of ``as_of`` (the current period is measured up to ``as_of``)."""
    end = next_period(start, period)
    return {
        "name": period_name(start, period),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "complete": end <= as_of,
    }


def period_tiers(
    history: Purchases,
    *,
    start: datetime,
    end: datetime,
    as_of: datetime,
    cutoffs: value.TierCutoffs,
) -> dict[str, value.Tier]:
    """Each customer's tier from their value in the half-open period [start, end),
    measured up to ``as_of`` when the period is not over; inactive if they bought before
    the period and not in it, prospect if they had not bought by its end."""

    def counted(p: Purchase) -> bool:
        return start <= p.at < end and p.at <= as_of

    values = {
        c: sum((v for _, v in valued(filter(counted, ps))), Decimal(0)) for c, ps in history.items()
    }
    buyers = {c for c, ps in history.items() if any(p.at < end and p.at <= as_of for p in ps)}
    return value.value_tiers(values, buyers=buyers, cutoffs=cutoffs)


def migration(
    store: ReadModelStore,
    *,
    as_of: datetime,
    period: Period,
    periods: int,
    currency: str = DEFAULT_CURRENCY,
    cutoffs: value.TierCutoffs,
    money: Money | None = None,
) -> dict[str, Any]:
    """Tier migration between consecutive calendar periods, the last ``periods``
    transitions up to the period containing ``as_of``. Periods are half-open, [start,
    end), in the reporting time zone: a purchase at midnight on the first day of a
    period belongs to that period. A customer's tier in a period comes from their value
    within it (the period is the pyramid's window there)."""
    money = money or Money(currency=currency)
    found = purchase_log(store, as_of=as_of, money=money)
    history = found.history
    starts = [period_start(as_of, period, money.zone)]
    for _ in range(periods):
        starts.append(previous_period(starts[-1], period))
    starts.reverse()  # oldest first

    def tiers_in(start: datetime) -> dict[str, value.Tier]:
        return period_tiers(
            history, start=start, end=next_period(start, period), as_of=as_of, cutoffs=cutoffs
        )

    covered = [
        p
        for ps in history.values()
        for p in ps
        if starts[0] <= p.at < next_period(starts[-1], period)
    ]
    matrices = []
    for before, after in pairwise(starts):
        matrix = value.migration_matrix(tiers_in(before), tiers_in(after))
        matrices.append(
            {
                "from_period": period_label(before, period, as_of=as_of),
                "to_period": period_label(after, period, as_of=as_of),
                "matrix": {
                    str(row): {str(col): n for col, n in cols.items()}
                    for row, cols in matrix.items()
                },
                "up": _moves(matrix, up=True),
                "down": _moves(matrix, up=False),
            }
        )
    return {
        **_stamp(as_of),
        "period": period,
        "timezone": str(money.zone),
        "currency": found.currency,
        "unconverted": unconverted_out(unconverted(covered)),
        "history": matrices,
    }


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


def rfm_of(history: Purchases, *, as_of: datetime, window: timedelta) -> dict[str, value.Rfm]:
    """RFM of every customer (``value.rfm``): frequency counts every purchase, monetary
    only the converted ones."""
    return value.rfm({c: valued(p) for c, p in history.items()}, as_of=as_of, window=window)


def rfm_segments(
    store: ReadModelStore,
    *,
    as_of: datetime,
    window: timedelta,
    currency: str = DEFAULT_CURRENCY,
    money: Money | None = None,
) -> dict[str, Any]:
    """Customers per RFM segment; the window's money without an exchange rate is left
    out of M and listed in ``unconverted``."""
    found = purchase_log(store, as_of=as_of, money=money or Money(currency=currency))
    scored = rfm_of(found.history, as_of=as_of, window=window)
    counts: dict[str, int] = {str(s): 0 for s in value.RfmSegment}
    for result in scored.values():
        counts[str(result.segment)] += 1
    return {
        **_stamp(as_of),
        "window_days": window.days,
        "currency": found.currency,
        "unconverted": unconverted_out(
            window_unconverted(found.history, as_of=as_of, window=window)
        ),
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
    zone: tzinfo = UTC,
) -> dict[str, Any]:
    """NPS (promoters, passives, detractors), the CSAT distribution L1-L5 with the share
    of L5, and CES: overall, by channel, by journey type and (with ``period``) by
    calendar period in ``zone``, each named by its start instant (with the offset)."""
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
            lambda r: period_start(
                datetime.fromisoformat(r["occurred_at"]), period, zone
            ).isoformat()
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

# A fit needs this many buyers, and this many of them buying again on a later day.
MIN_FIT_CUSTOMERS = 10
MIN_FIT_REPEAT = 5


class FitRefused(ValueError):
    """A lifetime-value fit that cannot be made: the message names the condition and
    what to do about it."""


def create_model_table(store: ReadModelStore) -> None:
    """The versioned lifetime-value models, and the outcome of every fit attempt (created
    at start-up)."""
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS clv_model (version serial PRIMARY KEY,"
            " fitted_at timestamptz NOT NULL DEFAULT now(), model jsonb NOT NULL)"
        )
        cur.execute(
            "CREATE TABLE IF NOT EXISTS clv_fit_outcome (attempt bigserial PRIMARY KEY,"
            " at timestamptz NOT NULL DEFAULT now(), ok boolean NOT NULL,"
            " as_of timestamptz, message text, model_version integer)"
        )


def _record_outcome(
    store: ReadModelStore, *, ok: bool, as_of: datetime, message: str | None, version: int | None
) -> None:
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO clv_fit_outcome (ok, as_of, message, model_version)"
            " VALUES (%s, %s, %s, %s)",
            (ok, as_of, message, version),
        )


def last_fit_outcome(store: ReadModelStore) -> dict[str, Any] | None:
    """The outcome of the latest lifetime-value fit attempt (asked for, or the periodic
    refit), for health checks: ``{"status": "ok" | "failed", "at": when it ran,
    "as_of": the instant fitted, "message": why it failed (None when ok),
    "model_version": the version stored (None when failed)}``; None before any."""
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT ok, at, as_of, message, model_version FROM clv_fit_outcome"
            " ORDER BY attempt DESC LIMIT 1"
        )
        row = cur.fetchone()
    if row is None:
        return None
    ok, at, as_of, message, version = row
    return {
        "status": "ok" if ok else "failed",
        "at": utc_iso(at),
        "as_of": utc_iso(as_of) if as_of is not None else None,
        "message": message,
        "model_version": version,
    }


def fit_clv(
    store: ReadModelStore,
    *,
    as_of: datetime,
    currency: str = DEFAULT_CURRENCY,
    unit: clv.TimeUnit = "week",
    money: Money | None = None,
) -> dict[str, Any]:
    """Fit BG/NBD on every customer's purchases up to ``as_of`` (purchase counts and
    times: no money needed) and Gamma-Gamma on the customers with a positive mean repeat
    spend, as lifetimes does; store the result as a new model version. Every attempt's
    outcome is recorded (``last_fit_outcome``). Raises ``FitRefused`` (a ValueError)
    naming the condition when no fit can be made, including when the likelihood cannot
    be maximised."""
    try:
        model = _fit(store, as_of=as_of, unit=unit, money=money or Money(currency=currency))
    except FitRefused as why:
        _record_outcome(store, ok=False, as_of=as_of, message=str(why), version=None)
        raise
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO clv_model (model) VALUES (%s) RETURNING version, fitted_at",
            (json.dumps(model),),
        )
        row = cur.fetchone()
        if row is None:  # INSERT ... RETURNING always returns the row it inserted
            raise RuntimeError("clv_model: the insert returned no version")
        version, fitted_at = row
    _record_outcome(store, ok=True, as_of=as_of, message=None, version=version)
    return {"version": version, "fitted_at": utc_iso(fitted_at), **model}


def _fit(
    store: ReadModelStore, *, as_of: datetime, unit: clv.TimeUnit, money: Money
) -> dict[str, Any]:
    found = purchase_log(store, as_of=as_of, money=money)
    summaries = {
        c: s
        for c, p in sorted(found.history.items())
        if (s := clv.summarize([(o.at, o.value) for o in p], as_of, unit)) is not None
    }
    repeat = sum(1 for s in summaries.values() if s.frequency > 0)
    if len(summaries) < MIN_FIT_CUSTOMERS or repeat < MIN_FIT_REPEAT:
        raise FitRefused(
            f"as_of: by {utc_iso(as_of)} {len(summaries)} customers had bought, {repeat} of "
            f"them again on a later day; a fit needs at least {MIN_FIT_CUSTOMERS} buyers "
            f"and {MIN_FIT_REPEAT} repeat buyers: fit as of a later instant, or record "
            "more purchase history"
        )
    try:
        bg = clv.fit_bg_nbd(list(summaries.values()))
    except (ArithmeticError, ValueError) as why:
        raise FitRefused(
            f"as_of: the BG/NBD fit on {len(summaries)} customers as of {utc_iso(as_of)} "
            f"did not converge ({why}); fit as of another instant or with more history"
        ) from None
    repeaters = [s for s in summaries.values() if s.frequency > 0]
    spenders = [s for s in repeaters if s.monetary is not None and s.monetary > 0]
    left_out = {
        "zero_spend": sum(1 for s in repeaters if s.monetary is not None and s.monetary <= 0),
        "unconverted": sum(1 for s in repeaters if s.monetary is None),
    }
    gg: clv.GammaGammaFit | None = None
    gamma_gamma_note: str | None = None
    if len(spenders) < MIN_FIT_REPEAT:
        gamma_gamma_note = (
            f"not fitted: {len(spenders)} customers with a positive mean repeat spend, "
            f"at least {MIN_FIT_REPEAT} needed; expected spend and value are null"
        )
    else:
        try:
            gg = clv.fit_gamma_gamma(spenders)
        except (ArithmeticError, ValueError) as why:
            # Spend is optional: a model of purchases alone is still worth storing.
            gamma_gamma_note = f"not fitted: the fit did not converge ({why})"
    return {
        "parameters": {**asdict(bg.params), **(asdict(gg.params) if gg else {})},
        "time_unit": unit,
        "as_of": utc_iso(as_of),
        "currency": found.currency,
        "customers": bg.customers,
        "repeat_customers": gg.customers if gg else 0,
        "gamma_gamma": {
            "customers": gg.customers if gg else 0,
            "left_out": left_out,
            "note": gamma_gamma_note,
        },
        "unconverted": unconverted_out(unconverted(p for ps in found.history.values() for p in ps)),
        "log_likelihood": {
            "bg_nbd": bg.log_likelihood,
            "gamma_gamma": gg.log_likelihood if gg else None,
        },
    }


def current_clv_model(store: ReadModelStore) -> dict[str, Any] | None:
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT version, fitted_at, model FROM clv_model ORDER BY version DESC LIMIT 1")
        row = cur.fetchone()
    if row is None:
        return None
    version, fitted_at, model = row
    return {"version": version, "fitted_at": utc_iso(fitted_at), **model}


def _stamp(as_of: datetime) -> dict[str, str]:
    return {"as_of": utc_iso(as_of), "computed_at": utc_iso(datetime.now(UTC))}


# -- materialised views ------------------------------------------------------------------


def create_view_table(store: ReadModelStore) -> None:
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS population_view (name text PRIMARY KEY,"
            " computed_at timestamptz NOT NULL, answer jsonb NOT NULL)"
        )


def materialise(store: ReadModelStore, name: str, at: datetime, answer: Mapping[str, Any]) -> None:
    """Keep ``answer`` as the view's latest materialisation (computed as of ``at``)."""
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO population_view (name, computed_at, answer) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET computed_at = EXCLUDED.computed_at,"
            " answer = EXCLUDED.answer WHERE population_view.computed_at <= EXCLUDED.computed_at",
            (name, at, json.dumps(answer)),
        )


def materialised(store: ReadModelStore, name: str) -> dict[str, Any] | None:
    """The view's latest materialisation (None: none yet)."""
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT answer FROM population_view WHERE name = %s", (name,))
        row = cur.fetchone()
        return row[0] if row else None
