"""Pure metric rules (DOMAIN.md). Each states its formula; none does I/O."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class PeakEnd:
    """How a journey is remembered (Kahneman's peak-end rule), beside its plain mean."""

    peak: int
    best: int
    worst: int
    end: int
    peak_end_score: float
    mean_emotion: float


def peak_of(emotions: list[int]) -> int:
    """The most intense moment: the score with the largest |e|; on a tie the negative one,
    because bad moments weigh more (DOMAIN.md §3)."""
    return max(emotions, key=lambda e: (abs(e), -e))


def peak_end(emotions: list[int]) -> PeakEnd | None:
    """peak-end score = (peak + end) / 2, with end = e_n (the last touchpoint's score).

    ``emotions`` are the journey's scores e_1..e_n in event-time order; None when the
    journey has no scored touchpoint yet. The mean is reported beside the score because
    the gap between them is the point of the measure (duration neglect).
    """
    if not emotions:
        return None
    peak = peak_of(emotions)
    end = emotions[-1]
    return PeakEnd(
        peak=peak,
        best=max(emotions),
        worst=min(emotions),
        end=end,
        peak_end_score=(peak + end) / 2,
        mean_emotion=round(sum(emotions) / len(emotions), 4),
    )


class NpsCategory(StrEnum):
    PROMOTER = "promoter"
    PASSIVE = "passive"
    DETRACTOR = "detractor"


def nps_category(score: int) -> NpsCategory:
    """Promoters answer 9-10, passives 7-8, detractors 0-6 (DOMAIN.md §4)."""
    if score >= 9:
        return NpsCategory.PROMOTER
    if score >= 7:
        return NpsCategory.PASSIVE
    return NpsCategory.DETRACTOR


class LoyaltyStatus(StrEnum):
    TRUE = "true"
    LATENT = "latent"
    SPURIOUS = "spurious"
    NONE = "none"


def loyalty_status(attitude_high: bool, repeat_high: bool) -> LoyaltyStatus:
    """Dick & Basu (1994): relative attitude x repeat patronage.

    high/high -> true loyalty; high attitude, low repeat -> latent;
    low attitude, high repeat -> spurious (inertia); low/low -> no loyalty.
    """
    if attitude_high:
        return LoyaltyStatus.TRUE if repeat_high else LoyaltyStatus.LATENT
    return LoyaltyStatus.SPURIOUS if repeat_high else LoyaltyStatus.NONE


def attitude_is_high(
    metric: str, value: int, *, nps_threshold: int = 9, csat_threshold: int = 4
) -> bool:
    """Relative attitude from the latest attitude answer: high when an NPS answer is at or
    above ``nps_threshold`` (default 9: a promoter) or a CSAT answer at or above
    ``csat_threshold`` (default L4 'pleased'); any other answer is low."""
    if metric == "nps":
        return value >= nps_threshold
    if metric == "csat":
        return value >= csat_threshold
    raise ValueError(f"metric: attitude is read from nps or csat answers, not {metric!r}")


def pearson(xs: list[float], ys: list[float]) -> float | None:
    """Pearson correlation r = cov(x, y) / (sd(x) * sd(y)); None with fewer than 3 pairs
    or no variation (a step whose emotion never varies predicts nothing)."""
    n = len(xs)
    if n != len(ys):
        raise ValueError("xs, ys: need pairs")
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return float(sxy / (sxx * syy) ** 0.5)
