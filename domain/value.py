"""Customer value (DOMAIN.md §5-7): the value pyramid and its migration matrix, RFM,
lifecycle stages and share of wallet. Pure functions, no I/O; money is Decimal.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import TypeVar

# ---------------------------------------------------------------------------------------
# Customer pyramid
# ---------------------------------------------------------------------------------------


class Tier(StrEnum):
    """Value tiers, from the top of the pyramid down, then the two tiers outside it."""

    VIP = "vip"  # platinum
    MAJOR = "major"  # gold
    ORDINARY = "ordinary"  # iron
    SMALL = "small"  # lead
    INACTIVE = "inactive"  # bought before, nothing in the window
    PROSPECT = "prospect"  # never bought


@dataclass(frozen=True)
class TierCutoffs:
    """Cumulative shares of the ranked active customers at which each tier ends.

    Defaults (DOMAIN.md §6): top 1% VIP, next 4% major (to 5%), next 15% ordinary
    (to 20%), the rest small. Each cut-off is in (0, 1] and they strictly increase.
    """

    vip: float = 0.01
    major: float = 0.05
    ordinary: float = 0.20

    def __post_init__(self) -> None:
        for name in ("vip", "major", "ordinary"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
                raise ValueError(f"{name}: a share from 0 to 1, got {value!r}")
            if not 0 < value <= 1:
                raise ValueError(f"{name}: a share in (0, 1], got {value!r}")
        if not self.vip < self.major < self.ordinary:
            raise ValueError(
                "cutoffs: must increase vip < major < ordinary, got "
                f"{self.vip}, {self.major}, {self.ordinary}"
            )

    def counts(self, active: int) -> tuple[int, int, int]:
        """How many of ``active`` ranked customers fall within each cumulative cut-off:
        ceil(share * active), computed in decimal (so 5% of 100 is exactly 5, not 6 by a
        binary rounding error). Ceil gives a population of at least one a VIP."""
        return (
            _ceil_share(self.vip, active),
            _ceil_share(self.major, active),
            _ceil_share(self.ordinary, active),
        )


def _ceil_share(share: float, population: int) -> int:
    return math.ceil(Decimal(str(share)) * population)


def value_tiers(
    values: Mapping[str, Decimal],
    *,
    buyers: Collection[str] | None = None,
    cutoffs: TierCutoffs = TierCutoffs(),  # frozen: a shared default is safe
) -> dict[str, Tier]:
    """The customer pyramid over a trailing window (Curry & Curry 2000; DOMAIN.md §6).

    ``values`` is each customer's value in the window (revenue or margin). Customers with
    value > 0 are *active*: ranked by value, highest first, and tiered by rank share.
    With n active customers and k = ceil(cut-off * n), ranks 1..k_vip are VIP, up to
    k_major major, up to k_ordinary ordinary, the rest small; ceil means any non-empty
    population has a VIP (n = 100 -> 1 VIP, 4 major, 15 ordinary, 80 small).

    Ties: customers with equal value never split across tiers. A tie group takes the
    tier of its best-placed member (competition ranking, "1224": every member has the
    rank of the first), so a group straddling a cut goes to the higher tier and that
    tier holds more than its nominal share.

    Value <= 0 (nothing bought, or refunds cancelling purchases): ``inactive`` if the
    customer is in ``buyers`` (ever bought), else ``prospect``. Without ``buyers`` no
    purchase history is known, so every such customer is a prospect. The result has
    exactly the keys of ``values``.
    """
    active = sorted(
        ((customer, value) for customer, value in values.items() if value > 0),
        key=lambda item: item[1],
        reverse=True,
    )
    k_vip, k_major, k_ordinary = cutoffs.counts(len(active))
    known_buyers = buyers if buyers is not None else ()
    tiers: dict[str, Tier] = {}
    rank = 0  # 0-based rank of the first customer of the current tie group
    for position, (customer, value) in enumerate(active):
        if position == 0 or value != active[position - 1][1]:
            rank = position
        if rank < k_vip:
            tiers[customer] = Tier.VIP
        elif rank < k_major:
            tiers[customer] = Tier.MAJOR
        elif rank < k_ordinary:
            tiers[customer] = Tier.ORDINARY
        else:
            tiers[customer] = Tier.SMALL
    for customer, value in values.items():
        if not value > 0:
            tiers[customer] = Tier.INACTIVE if customer in known_buyers else Tier.PROSPECT
    return {customer: tiers[customer] for customer in values}


@dataclass(frozen=True)
class PyramidRow:
    """One tier of the pyramid: how many customers, their revenue in the window, and
    that revenue's share of the total (Decimal, unrounded at the context precision;
    None when the total is not positive)."""

    tier: Tier
    customers: int
    revenue: Decimal
    revenue_share: Decimal | None


def pyramid(tiers: Mapping[str, Tier], values: Mapping[str, Decimal]) -> list[PyramidRow]:
    """One row per tier in ``Tier`` order (vip .. prospect), all tiers present, empty
    ones with zeros: the Pareto view (about 20% of customers make about 80% of value).

    Customers are those of ``tiers``; a customer missing from ``values`` has revenue 0.
    revenue_share = tier revenue / sum of all tiers' revenue, so the shares sum to 1
    (up to Decimal precision) whenever the total is positive.
    """
    customers = dict.fromkeys(Tier, 0)
    revenue = dict.fromkeys(Tier, Decimal(0))
    for customer, tier in tiers.items():
        customers[tier] += 1
        revenue[tier] += values.get(customer, Decimal(0))
    total = sum(revenue.values(), Decimal(0))
    return [
        PyramidRow(
            tier=tier,
            customers=customers[tier],
            revenue=revenue[tier],
            revenue_share=revenue[tier] / total if total > 0 else None,
        )
        for tier in Tier
    ]


def migration_matrix(
    before: Mapping[str, Tier], after: Mapping[str, Tier]
) -> dict[Tier, dict[Tier, int]]:
    """How many customers moved from each tier (rows, ``before``) to each tier (columns,
    ``after``) between two periods (DOMAIN.md §6). Upward moves are wins, downward moves
    early warnings; the diagonal is who stayed.

    Every customer in either period is counted once. A customer absent from ``before``
    counts as a prospect there (new in the period); one absent from ``after`` counts as a
    prospect there too (normally ``after`` covers everyone, so this does not arise).
    The matrix is square with every tier as row and column.
    """
    matrix = {row: dict.fromkeys(Tier, 0) for row in Tier}
    for customer in before.keys() | after.keys():
        matrix[before.get(customer, Tier.PROSPECT)][after.get(customer, Tier.PROSPECT)] += 1
    return matrix


# ---------------------------------------------------------------------------------------
# RFM
# ---------------------------------------------------------------------------------------

_Score = TypeVar("_Score", float, Decimal)


def quintile_scores(
    values: Mapping[str, _Score], *, higher_is_better: bool = True
) -> dict[str, int]:
    """Scores 1..5 by quintile of the population (5 = the best fifth).

    Order customers from worst to best (ascending value, or descending when
    ``higher_is_better`` is False, e.g. recency in days). With n customers and r the
    mean 0-based position of the customers with the same value (the tie group's middle),
    score = 1 + floor(5 * r / n). Equal values therefore always share a score, the one
    of their group's middle: 10 distinct values give two per score; n equal values all
    score 3 (everyone bought today is not everyone "lost"). NaN is refused.
    """
    for customer, value in values.items():
        if value != value:  # NaN, float or Decimal
            raise ValueError(f"values: {customer!r} has no value (NaN)")
    ordered = sorted(values.items(), key=lambda item: item[1], reverse=not higher_is_better)
    n = len(ordered)
    scores: dict[str, int] = {}
    first = 0
    for position in range(n + 1 if n else 0):
        if position == n or (position > first and ordered[position][1] != ordered[first][1]):
            # positions first..position-1 tie: twice their mean is first + position - 1
            score = 1 + (5 * (first + position - 1)) // (2 * n)
            for customer, _ in ordered[first:position]:
                scores[customer] = score
            first = position
    return scores


class RfmSegment(StrEnum):
    CHAMPIONS = "champions"
    LOYAL = "loyal"
    POTENTIAL_LOYALIST = "potential_loyalist"
    NEW = "new"
    NEED_ATTENTION = "need_attention"
    AT_RISK = "at_risk"
    CANNOT_LOSE = "cannot_lose"
    HIBERNATING = "hibernating"
    LOST = "lost"


_CH = RfmSegment.CHAMPIONS
_LO = RfmSegment.LOYAL
_PL = RfmSegment.POTENTIAL_LOYALIST
_NW = RfmSegment.NEW
_NA = RfmSegment.NEED_ATTENTION
_AR = RfmSegment.AT_RISK
_CL = RfmSegment.CANNOT_LOSE
_HI = RfmSegment.HIBERNATING
_LS = RfmSegment.LOST

# Rows r = 5 .. 1, columns f = 1 .. 5 (the table in rfm_segment's docstring).
_RFM_GRID: dict[int, tuple[RfmSegment, ...]] = {
    5: (_NW, _PL, _PL, _CH, _CH),
    4: (_NW, _PL, _PL, _CH, _CH),
    3: (_NA, _NA, _NA, _LO, _LO),
    2: (_HI, _HI, _AR, _AR, _CL),
    1: (_LS, _LS, _AR, _AR, _CL),
}


def rfm_segment(r: int, f: int, m: int) -> RfmSegment:
    """The named segment of an RFM score (Hughes 1994; DOMAIN.md §6), from R and F::

                 f=1          f=2          f=3          f=4        f=5
        r=5      new          potential    potential    champions  champions
        r=4      new          potential    potential    champions  champions
        r=3      need_att.    need_att.    need_att.    loyal      loyal
        r=2      hibernating  hibernating  at_risk      at_risk    cannot_lose
        r=1      lost         lost         at_risk      at_risk    cannot_lose

    i.e. champions r>=4 & f>=4; loyal r==3 & f>=4; potential_loyalist r>=4 & f in 2..3;
    new r>=4 & f==1; need_attention r==3 & f<=3; at_risk r<=2 & f in 3..4;
    cannot_lose r<=2 & f==5; hibernating r==2 & f<=2; lost r==1 & f<=2. Every (r, f)
    has exactly one segment. M does not move a customer between segments (the common
    R x F grid); it is validated and serves to rank customers inside a segment.
    """
    for name, score in (("r", r), ("f", f), ("m", m)):
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
            raise ValueError(f"{name}: a quintile score from 1 to 5, got {score!r}")
    return _RFM_GRID[r][f - 1]


@dataclass(frozen=True)
class Rfm:
    """One customer's RFM: raw measures, quintile scores and segment."""

    recency_days: int
    frequency: int
    monetary: Decimal
    r: int
    f: int
    m: int
    segment: RfmSegment


def _aware(name: str, moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name}: must be timezone-aware, got {moment.isoformat()}")
    return moment


def rfm(
    purchases_by_customer: Mapping[str, Sequence[tuple[datetime, Decimal]]],
    *,
    as_of: datetime,
    window: timedelta,
) -> dict[str, Rfm]:
    """Recency, frequency and monetary value per customer (DOMAIN.md §6).

    ``purchases_by_customer`` holds (time, amount) per purchase, in any order; times
    are timezone-aware. Purchases after ``as_of`` are ignored.
    - recency_days: whole days (floored) from the last purchase at or before ``as_of``
      to ``as_of``, however long ago;
    - frequency: purchases in the window (as_of - window, as_of];
    - monetary: their total amount.
    Customers with no purchase up to ``as_of`` are left out. Scores are quintiles
    (``quintile_scores``), ties taking the score of their group's middle rank:
    - R against every customer kept (fewer days is better), so R ranks recency however
      long ago the last purchase was;
    - F and M against the customers with a purchase in the window (more is better);
    - a customer with no purchase in the window scores F = 1 and M = 1: nothing bought
      in the window is the bottom of both scales, never the middle (a tie group of
      silent customers would otherwise score 3 and read "at risk" or "potential
      loyalist"); and is outside the R x F grid, segment ``lost`` whatever R says: R
      ranks recency against everyone, so among customers all silent for years the
      least silent would otherwise read "new".
    """
    _aware("as_of", as_of)
    if window <= timedelta(0):
        raise ValueError(f"window: must be positive, got {window}")
    start = as_of - window
    measures: dict[str, tuple[int, int, Decimal]] = {}
    for customer, purchases in purchases_by_customer.items():
        past = [(at, amount) for at, amount in purchases if _aware("purchases", at) <= as_of]
        if not past:
            continue
        last = max(at for at, _ in past)
        in_window = [amount for at, amount in past if at > start]
        measures[customer] = (
            (as_of - last) // timedelta(days=1),
            len(in_window),
            sum(in_window, Decimal(0)),
        )
    r = quintile_scores(
        {c: float(days) for c, (days, _, _) in measures.items()}, higher_is_better=False
    )
    bought = {c: measure for c, measure in measures.items() if measure[1] > 0}
    f = dict.fromkeys(measures, 1) | quintile_scores(
        {c: float(count) for c, (_, count, _) in bought.items()}
    )
    m = dict.fromkeys(measures, 1) | quintile_scores(
        {c: spend for c, (_, _, spend) in bought.items()}
    )
    return {
        customer: Rfm(
            recency_days=days,
            frequency=count,
            monetary=spend,
            r=r[customer],
            f=f[customer],
            m=m[customer],
            segment=rfm_segment(r[customer], f[customer], m[customer])
            if count
            else RfmSegment.LOST,
        )
        for customer, (days, count, spend) in measures.items()
    }


# ---------------------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------------------


class LifecycleStage(StrEnum):
    """Where a customer is in the relationship (DOMAIN.md §7). Suspects, partners and
    disqualified prospects are not derived from orders and are left to other rules."""

    PROSPECT = "prospect"
    FIRST_TIME = "first_time"
    REPEAT = "repeat"
    CLIENT = "client"
    ADVOCATE = "advocate"
    LAPSED = "lapsed"


def usual_gap(order_times: Sequence[datetime]) -> timedelta | None:
    """A customer's own rhythm: the median gap between consecutive orders, in time
    order (the times are sorted first); None with fewer than two orders. Two orders
    at the same instant count as a zero gap."""
    if len(order_times) < 2:
        return None
    ordered = sorted(order_times)
    gaps = sorted(later - earlier for earlier, later in itertools.pairwise(ordered))
    middle = len(gaps) // 2
    if len(gaps) % 2:
        return gaps[middle]
    return (gaps[middle - 1] + gaps[middle]) / 2


def _days(span: timedelta) -> str:
    return f"{span / timedelta(days=1):g} days"


def lifecycle_stage(
    *,
    orders: int,
    last_order_at: datetime | None,
    usual_gap: timedelta | None,
    as_of: datetime,
    promoter: bool,
    client_orders: int = 5,
    advocate_orders: int = 2,
    lapse_factor: float = 3.0,
    lapse_floor: timedelta = timedelta(days=30),
    lapse_after: timedelta = timedelta(days=365),
) -> tuple[LifecycleStage, str]:
    """The customer's lifecycle stage and, in words, the rule that decided it.

    Rules, first match wins:
    1. no orders -> prospect;
    2. lapsed when the time since the last order exceeds the customer's own threshold,
       max(lapse_factor x usual_gap, lapse_floor) (the floor keeps a customer who
       bought twice in one day from lapsing three days later), or exceeds
       ``lapse_after`` for everyone (and for one-order customers, who have no gap);
    3. advocate: a promoter (recommends us) with at least ``advocate_orders`` orders;
    4. client: at least ``client_orders`` orders;
    5. repeat: at least 2 orders;
    6. first_time otherwise.
    """
    if isinstance(orders, bool) or orders < 0:
        raise ValueError(f"orders: must be >= 0, got {orders!r}")
    if lapse_factor <= 0:
        raise ValueError(f"lapse_factor: must be > 0, got {lapse_factor}")
    if orders == 0:
        return LifecycleStage.PROSPECT, "prospect: no order yet"
    if last_order_at is None:
        raise ValueError("last_order_at: required when orders > 0")
    since = as_of - last_order_at
    if since > lapse_after:
        return LifecycleStage.LAPSED, (
            f"lapsed: {_days(since)} since the last order, beyond {_days(lapse_after)}"
        )
    if usual_gap is not None:
        threshold = max(usual_gap * lapse_factor, lapse_floor)
        if since > threshold:
            return LifecycleStage.LAPSED, (
                f"lapsed: {_days(since)} since the last order, beyond {_days(threshold)} "
                f"(max of {lapse_factor:g} x usual gap {_days(usual_gap)} "
                f"and {_days(lapse_floor)})"
            )
    if promoter and orders >= advocate_orders:
        return LifecycleStage.ADVOCATE, f"advocate: promoter with {orders} orders"
    if orders >= client_orders:
        return LifecycleStage.CLIENT, f"client: {orders} orders, at least {client_orders}"
    if orders >= 2:
        return LifecycleStage.REPEAT, f"repeat: {orders} orders"
    return LifecycleStage.FIRST_TIME, "first_time: one order"


# ---------------------------------------------------------------------------------------
# Share of wallet
# ---------------------------------------------------------------------------------------


def share_of_wallet(
    our_spend: Decimal, category_spend: Decimal, *, cap_at_one: bool = False
) -> Decimal | None:
    """Customer share: our revenue from the customer / the customer's total spend in the
    category, the total as declared (e.g. in a survey) (DOMAIN.md §5).

    None when the declared total is not positive. By default the ratio is not capped:
    above 1 means the declared total is below what we alone sold, a data-quality signal
    worth seeing; ``cap_at_one=True`` reports such cases as 1.
    """
    if category_spend <= 0:
        return None
    share = our_spend / category_spend
    return min(share, Decimal(1)) if cap_at_one else share
