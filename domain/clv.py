"""Customer lifetime value (DOMAIN.md §6): the simple retention formula, and for
non-contractual buying the BG/NBD model of purchase counts with the Gamma-Gamma model of
spend per purchase.

Pure: no I/O. The probability models work in floats because they are statistical
estimates, not ledger amounts; only the simple formula, which takes money, stays in
``Decimal``.

Sources:
- Gupta & Lehmann (2003), "Customers as assets": CLV = m * r / (1 + d - r).
- Fader, Hardie & Lee (2005), "'Counting your customers' the easy way: an alternative to
  the Pareto/NBD model", Marketing Science 24(2) -- BG/NBD, eqs. 6 and 10.
- Fader, Hardie & Lee (2005), "RFM and CLV: using iso-value curves for customer base
  analysis", Journal of Marketing Research 42(4), and Fader & Hardie (2013), "The
  Gamma-Gamma model of monetary value" -- the spend model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Literal, TypedDict

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import betaln, expit, gammaln, hyp2f1

FloatArray = npt.NDArray[np.float64]

# ---------------------------------------------------------------------------------------
# Simple CLV
# ---------------------------------------------------------------------------------------


def simple_clv(margin: Decimal, retention: Decimal, discount: Decimal) -> Decimal:
    """CLV = m * r / (1 + d - r) (DOMAIN.md §6; Gupta & Lehmann 2003).

    ``margin`` m is the margin a customer brings per period (a year), ``retention`` r the
    probability that a customer stays from one period to the next, ``discount`` d the
    discount rate per period. It is the value of the margins an infinite relationship
    brings, each discounted and weighted by the chance that the customer is still there.
    """
    if not Decimal(0) <= retention <= Decimal(1):
        raise ValueError(f"retention must lie in [0, 1], got {retention}")
    if discount < 0:
        raise ValueError(f"discount must not be negative, got {discount}")
    if retention == 1 and discount == 0:
        raise ValueError("retention: 1 with discount 0 is an infinite value")
    # r = 1 (everyone stayed) is finite while d > 0: m / d.
    return margin * retention / (1 + discount - retention)


# ---------------------------------------------------------------------------------------
# A customer's purchase history, summarised as the models read it
# ---------------------------------------------------------------------------------------

TimeUnit = Literal["day", "week"]
DAYS_PER_UNIT: dict[TimeUnit, int] = {"day": 1, "week": 7}


@dataclass(frozen=True)
class PurchaseSummary:
    """What the BG/NBD and Gamma-Gamma models read of one customer's history.

    frequency x: repeat purchase days (distinct purchase days minus one); recency t_x:
    time from the first purchase to the last; age T: time from the first purchase to the
    end of observation; monetary: mean spend per repeat purchase day, the first purchase
    excluded (None when x == 0). Times are in the unit ``summarize`` was given.
    """

    frequency: int
    recency: float
    age: float
    monetary: float | None


def summarize(
    purchases: Sequence[tuple[datetime, Decimal | None]],
    as_of: datetime,
    unit: TimeUnit = "week",
) -> PurchaseSummary | None:
    """Frequency, recency, age and monetary value of a purchase history as of ``as_of``.

    Purchases on the same UTC calendar day are merged into one (their amounts summed),
    because the models count purchase occasions, as the published model does with CDNOW's
    daily data. With days d_0 < d_1 < ... < d_x: x = number of days - 1,
    t_x = (d_x - d_0), T = (day of as_of - d_0), both in ``unit``; monetary is the mean
    of the amounts of d_1..d_x. Measuring t_x and T both in whole days keeps t_x <= T.
    Only purchases at or before ``as_of`` count; None when there is none. An amount may
    be None (not known in the reporting currency): the purchase still counts for x,
    t_x and T, and monetary is None when any repeat day's spend is not known.
    """
    if unit not in DAYS_PER_UNIT:
        raise ValueError(f"unit must be one of {sorted(DAYS_PER_UNIT)}, got {unit!r}")
    _require_aware(as_of, "as_of")
    spend_by_day: dict[date, Decimal | None] = {}
    for when, amount in purchases:
        _require_aware(when, "purchases")
        if when <= as_of:
            day = when.astimezone(UTC).date()
            held = spend_by_day.get(day, Decimal(0))
            spend_by_day[day] = None if held is None or amount is None else held + amount
    if not spend_by_day:
        return None
    days = sorted(spend_by_day)
    first, last = days[0], days[-1]
    frequency = len(days) - 1
    repeat_spend = [v for day in days[1:] if (v := spend_by_day[day]) is not None]
    monetary = (
        float(sum(repeat_spend, Decimal(0)) / frequency)
        if frequency and len(repeat_spend) == frequency
        else None
    )
    per_unit = DAYS_PER_UNIT[unit]
    return PurchaseSummary(
        frequency=frequency,
        recency=(last - first).days / per_unit,
        age=(as_of.astimezone(UTC).date() - first).days / per_unit,
        monetary=monetary,
    )


def _require_aware(when: datetime, name: str) -> None:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{name}: times must be timezone-aware, got {when!r}")


# ---------------------------------------------------------------------------------------
# BG/NBD: how many purchases, and is the customer still there
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BgNbd:
    """BG/NBD parameters: purchase rates lambda ~ Gamma(shape r, rate alpha) across
    customers; dropout probability after each repeat purchase p ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float

    def __post_init__(self) -> None:
        _require_positive(r=self.r, alpha=self.alpha, a=self.a, b=self.b)


@dataclass(frozen=True)
class BgNbdFit:
    """Maximum-likelihood BG/NBD parameters, the log-likelihood they reach (summed over
    customers) and how many customers they were fitted on."""

    params: BgNbd
    log_likelihood: float
    customers: int


def _bg_nbd_log_likelihood(
    r: float,
    alpha: float,
    a: float,
    b: float,
    x: FloatArray,
    t_x: FloatArray,
    T: FloatArray,  # noqa: N803
) -> FloatArray:
    """ln L(r, alpha, a, b | x, t_x, T) per customer (Fader, Hardie & Lee 2005, eq. 6):

    L = B(a, b+x)/B(a, b) * Gamma(r+x) alpha^r / Gamma(r)
        * [ (alpha+T)^-(r+x) + [x > 0] a/(b+x-1) (alpha+t_x)^-(r+x) ]

    (the paper writes the second term with B(a+1, b+x-1); B(a+1, b+x-1)/B(a, b+x) is
    a/(b+x-1)). The bracket is summed in log space with logaddexp.
    """
    repeat = x > 0
    # b + x - 1 only matters for repeat buyers; 1.0 keeps the log finite for the others.
    b_x_1 = np.where(repeat, b + x - 1, 1.0)
    alive_at_t = -(r + x) * np.log(alpha + T)
    gone_after_t_x = np.where(
        repeat, np.log(a) - np.log(b_x_1) - (r + x) * np.log(alpha + t_x), -np.inf
    )
    result: FloatArray = (
        gammaln(r + x)
        - gammaln(r)
        + r * np.log(alpha)
        + betaln(a, b + x)
        - betaln(a, b)
        + np.logaddexp(alive_at_t, gone_after_t_x)
    )
    return result


def fit_bg_nbd(summaries: Sequence[PurchaseSummary]) -> BgNbdFit:
    """Maximum-likelihood BG/NBD fit: maximise sum_i ln L(r, alpha, a, b | x_i, t_x_i, T_i)
    (Fader, Hardie & Lee 2005, eq. 6) with scipy.optimize.minimize over the logs of the
    four parameters, which keeps them positive. Customers with identical (x, t_x, T) are
    counted once and weighted. Nothing guards identifiability: a handful of customers, or
    none with a repeat purchase, yields a maximum that means little."""
    if not summaries:
        raise ValueError("summaries: there is no customer to fit")
    histories = np.array([(s.frequency, s.recency, s.age) for s in summaries], dtype=float)
    for row in histories:
        _require_history(x=row[0], t_x=row[1], T=row[2])
    rows, counts = np.unique(histories, axis=0, return_counts=True)
    x, t_x, T = rows[:, 0], rows[:, 1], rows[:, 2]  # noqa: N806 - the paper's T
    weights = counts / counts.sum()

    def mean_negative_log_likelihood(log_params: FloatArray) -> float:
        r, alpha, a, b = np.exp(log_params)
        return -float(weights @ _bg_nbd_log_likelihood(r, alpha, a, b, x, t_x, T))

    log_params, mean_nll = _minimise(mean_negative_log_likelihood, np.zeros(4))
    r, alpha, a, b = (float(v) for v in np.exp(log_params))
    return BgNbdFit(
        params=BgNbd(r=r, alpha=alpha, a=a, b=b),
        log_likelihood=-mean_nll * len(summaries),
        customers=len(summaries),
    )


def p_alive(params: BgNbd, x: int, t_x: float, T: float) -> float:  # noqa: N803
    """P(alive | x, t_x, T) = 1 / (1 + [x > 0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))
    (Fader, Hardie & Lee 2005, and their note "Computing P(alive) using the BG/NBD
    model", 2008). A customer with no repeat purchase cannot yet have dropped out: 1."""
    _require_history(x=x, t_x=t_x, T=T)
    if x == 0:
        return 1.0
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    log_odds_gone = (
        math.log(a) - math.log(b + x - 1) + (r + x) * (math.log(alpha + T) - math.log(alpha + t_x))
    )
    return float(expit(-log_odds_gone))


def expected_purchases(params: BgNbd, t: float, x: int, t_x: float, T: float) -> float:  # noqa: N803
    """E[Y(t) | x, t_x, T]: expected purchases in the next t periods (Fader, Hardie & Lee
    2005, eq. 10):

        (a+b+x-1)/(a-1) * [1 - ((alpha+T)/(alpha+T+t))^(r+x)
                               * 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t))]
        / (1 + [x > 0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))

    The denominator is 1 / P(alive). With z = t/(alpha+T+t), Euler's transformation
    2F1(A, B; C; z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z) turns the bracket into
    1 - (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z), exactly equal and free of the huge
    and tiny factors that large x would produce. At a = 1 the formula is 0/0 with a
    finite limit, taken by interpolating across it; so at a + b + x = 1.
    """
    _require_history(x=x, t_x=t_x, T=T)
    if t < 0:
        raise ValueError(f"t must not be negative, got {t}")
    if t == 0:
        return 0.0
    step = 1e-6
    if abs(params.a + params.b + x - 1) < step:
        # a + b + x - 1 = 0: the leading factor is 0 and 2F1 is singular; the product has
        # a finite limit, taken by interpolating across it in b.
        below = expected_purchases(replace(params, b=params.b - 2 * step), t, x, t_x, T)
        above = expected_purchases(replace(params, b=params.b + 2 * step), t, x, t_x, T)
        return (below + above) / 2
    if abs(params.a - 1) < step:
        below = _expected_purchases(params.r, params.alpha, 1 - step, params.b, t, x, T)
        above = _expected_purchases(params.r, params.alpha, 1 + step, params.b, t, x, T)
        weight = (params.a - (1 - step)) / (2 * step)
        if_alive = below + weight * (above - below)
    else:
        if_alive = _expected_purchases(params.r, params.alpha, params.a, params.b, t, x, T)
    return if_alive * p_alive(params, x, t_x, T)


def _expected_purchases(
    r: float,
    alpha: float,
    a: float,
    b: float,
    t: float,
    x: int,
    T: float,  # noqa: N803
) -> float:
    """Eq. 10 without its P(alive) factor: purchases in (T, T+t] for a customer alive at T."""
    z = t / (alpha + T + t)
    bracket = 1 - math.pow(1 - z, a - 1) * float(hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z))
    if not math.isfinite(bracket):
        # Very large a and b (a near-degenerate fit) overflow the transformed series;
        # the untransformed one of eq. 10 stays finite there.
        bracket = 1 - math.pow(1 - z, r + x) * float(hyp2f1(r + x, b + x, a + b + x - 1, z))
    return (a + b + x - 1) / (a - 1) * bracket


# ---------------------------------------------------------------------------------------
# Gamma-Gamma: how much per purchase
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GammaGamma:
    """Gamma-Gamma parameters: each purchase's spend ~ Gamma(shape p, rate nu); across
    customers nu ~ Gamma(shape q, rate gamma)."""

    p: float
    q: float
    gamma: float

    def __post_init__(self) -> None:
        _require_positive(p=self.p, q=self.q, gamma=self.gamma)


@dataclass(frozen=True)
class GammaGammaFit:
    """Maximum-likelihood Gamma-Gamma parameters, the log-likelihood they reach (summed
    over customers) and how many repeat customers they were fitted on."""

    params: GammaGamma
    log_likelihood: float
    customers: int


def _gamma_gamma_log_likelihood(
    p: float, q: float, gamma: float, x: FloatArray, m: FloatArray
) -> FloatArray:
    """ln f(m | p, q, gamma; x) per customer, the density of the mean m of x purchases
    (Fader & Hardie 2013, "The Gamma-Gamma model of monetary value"):

    f = Gamma(px+q) / (Gamma(px) Gamma(q)) * gamma^q x^(px) m^(px-1) / (gamma + m x)^(px+q)
    """
    result: FloatArray = (
        gammaln(p * x + q)
        - gammaln(p * x)
        - gammaln(q)
        + q * np.log(gamma)
        + p * x * np.log(x)
        + (p * x - 1) * np.log(m)
        - (p * x + q) * np.log(gamma + m * x)
    )
    return result


def fit_gamma_gamma(summaries: Sequence[PurchaseSummary]) -> GammaGammaFit:
    """Maximum-likelihood Gamma-Gamma fit: maximise sum_i ln f(m_i | p, q, gamma; x_i)
    (Fader, Hardie & Lee 2005, "RFM and CLV"; Fader & Hardie 2013) over the customers with
    a repeat purchase (frequency > 0), with scipy.optimize.minimize over the logs of the
    parameters. Spend must be positive: the model is a distribution on (0, inf)."""
    repeat = [s for s in summaries if s.frequency > 0]
    if not repeat:
        raise ValueError("summaries: no customer has a repeat purchase to fit spend on")
    pairs = []
    for index, s in enumerate(summaries):
        if s.frequency == 0:
            continue
        if s.monetary is None or not s.monetary > 0:
            raise ValueError(
                f"summaries[{index}]: the mean repeat spend must be positive, got "
                f"{s.monetary}; leave customers without positive repeat spend out"
            )
        pairs.append((s.frequency, s.monetary))
    x, m = np.array(pairs, dtype=float).T

    def mean_negative_log_likelihood(log_params: FloatArray) -> float:
        p, q, gamma = np.exp(log_params)
        return -float(np.mean(_gamma_gamma_log_likelihood(p, q, gamma, x, m)))

    log_params, mean_nll = _minimise(mean_negative_log_likelihood, np.zeros(3))
    p, q, gamma = (float(v) for v in np.exp(log_params))
    return GammaGammaFit(
        params=GammaGamma(p=p, q=q, gamma=gamma),
        log_likelihood=-mean_nll * len(repeat),
        customers=len(repeat),
    )


def expected_spend(params: GammaGamma, x: int, m: float) -> float:
    """E[M | p, q, gamma; m, x] = (gamma + m x) p / (p x + q - 1) (Fader, Hardie & Lee
    2005, "RFM and CLV"; Fader & Hardie 2013): a weighted mean of the
    population mean p gamma / (q - 1) and the customer's own mean m, the weight on m
    growing with x. With x = 0 it is the population mean. Needs q > 1 (otherwise the
    population mean is infinite)."""
    if params.q <= 1:
        raise ValueError(f"params.q must exceed 1 for a finite expected spend, got {params.q}")
    if x < 0:
        raise ValueError(f"x must not be negative, got {x}")
    if x > 0 and m < 0:
        # m = 0 (repeat purchases that cost nothing) is outside the model's support, yet
        # the weighted mean below is still the right estimate: it leans on the
        # population mean, as lifetimes computes it.
        raise ValueError(f"m must not be negative for a repeat customer, got {m}")
    return (params.gamma + m * x) * params.p / (params.p * x + params.q - 1)


# ---------------------------------------------------------------------------------------
# Putting them together
# ---------------------------------------------------------------------------------------


class CustomerValue(TypedDict):
    """What one customer is expected to bring over a horizon (same time unit as the
    summary). Values are undiscounted."""

    expected_purchases: float
    p_alive: float
    expected_spend: float | None
    expected_value: float | None


def customer_value(
    bg: BgNbd,
    gg: GammaGamma | None,
    summary: PurchaseSummary,
    *,
    horizon: float,
    margin: float = 1.0,
) -> CustomerValue:
    """Expected purchases over ``horizon`` (BG/NBD eq. 10), P(alive), expected spend per
    purchase (Gamma-Gamma; the population mean for a customer with no repeat purchase,
    or whose repeat spend is not known in the reporting currency) and expected value =
    expected purchases * expected spend * margin (Fader, Hardie & Lee 2005, "RFM and
    CLV", without discounting). Spend and value are None without a spend model, or when
    its q <= 1 (an infinite population mean)."""
    x, t_x, age = summary.frequency, summary.recency, summary.age
    purchases = expected_purchases(bg, horizon, x, t_x, age)
    if gg is None or gg.q <= 1:
        spend = None
    elif summary.monetary is None:
        spend = expected_spend(gg, 0, 0.0)
    else:
        spend = expected_spend(gg, x, summary.monetary)
    return CustomerValue(
        expected_purchases=purchases,
        p_alive=p_alive(bg, x, t_x, age),
        expected_spend=spend,
        expected_value=None if spend is None else purchases * spend * margin,
    )


# ---------------------------------------------------------------------------------------
# Shared checks and the optimiser
# ---------------------------------------------------------------------------------------


def _require_positive(**values: float) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive and finite, got {value}")


def _require_history(x: float, t_x: float, T: float) -> None:  # noqa: N803
    if x < 0 or x != int(x):
        raise ValueError(f"x must be a whole number of repeat purchases >= 0, got {x}")
    if not 0 <= t_x <= T:
        raise ValueError(f"t_x must lie in [0, T], got t_x={t_x}, T={T}")


class FitFailed(ArithmeticError):
    """The maximum-likelihood fit did not converge (the message says how it stopped)."""


# Bounds on log-parameters: e^-20..e^20 is far wider than any fitted value in the
# literature, and keeps the likelihood finite where the optimiser probes.
_LOG_BOUND = 20.0


def _minimise(
    objective: Callable[[FloatArray], float], start: FloatArray
) -> tuple[FloatArray, float]:
    """Minimise over log-parameters: L-BFGS-B first, then Nelder-Mead from where it
    stopped when its line search gives up (it may do so at a flat optimum)."""
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(start)
    result = minimize(objective, start, method="L-BFGS-B", bounds=bounds)
    if not result.success:
        result = minimize(
            objective,
            result.x,
            method="Nelder-Mead",
            bounds=bounds,
            options={"maxiter": 20_000, "xatol": 1e-8, "fatol": 1e-12},
        )
    if not (result.success and math.isfinite(result.fun)):
        raise FitFailed(f"the likelihood could not be maximised: {result.message}")
    return np.asarray(result.x, dtype=float), float(result.fun)
