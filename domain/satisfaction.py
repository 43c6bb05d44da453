"""Satisfaction measures (DOMAIN.md §4) and trust (§11): pure functions, no I/O.

Kano categories and better/worse coefficients, NPS, CSAT, CES, the delta principle,
importance-vs-satisfaction opportunities, the trust equation and promise reliability.
Each function states its formula and where it comes from.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypedDict

from domain.metrics import NpsCategory, nps_category

# ---------------------------------------------------------------------------------------
# Kano model
# ---------------------------------------------------------------------------------------


class KanoAnswer(StrEnum):
    """The five answers to a Kano question ("how do you feel if the product has X?" /
    "...if it lacks X?"), in the order of the evaluation table's rows and columns."""

    LIKE = "like"
    EXPECT = "expect"
    NEUTRAL = "neutral"
    TOLERATE = "tolerate"
    DISLIKE = "dislike"


class KanoCategory(StrEnum):
    ATTRACTIVE = "attractive"
    ONE_DIMENSIONAL = "one_dimensional"
    MUST_BE = "must_be"
    INDIFFERENT = "indifferent"
    REVERSE = "reverse"
    QUESTIONABLE = "questionable"


_A = KanoCategory.ATTRACTIVE
_O = KanoCategory.ONE_DIMENSIONAL
_M = KanoCategory.MUST_BE
_I = KanoCategory.INDIFFERENT
_R = KanoCategory.REVERSE
_Q = KanoCategory.QUESTIONABLE

# The standard Kano evaluation table: rows = functional answer, columns = dysfunctional
# answer, both in KanoAnswer order (like, expect, neutral, tolerate, dislike).
_KANO_TABLE: dict[KanoAnswer, tuple[KanoCategory, ...]] = {
    KanoAnswer.LIKE: (_Q, _A, _A, _A, _O),
    KanoAnswer.EXPECT: (_R, _I, _I, _I, _M),
    KanoAnswer.NEUTRAL: (_R, _I, _I, _I, _M),
    KanoAnswer.TOLERATE: (_R, _I, _I, _I, _M),
    KanoAnswer.DISLIKE: (_R, _R, _R, _R, _Q),
}
_KANO_COLUMNS = tuple(KanoAnswer)

# Which category a feature gets when several are equally frequent: must-be first, then
# one-dimensional, attractive, indifferent (Berger et al. 1993, "M > O > A > I": the
# category that hurts most when neglected wins), then reverse, then questionable.
KANO_TIE_ORDER: tuple[KanoCategory, ...] = (_M, _O, _A, _I, _R, _Q)


def _kano_answer(name: str, value: str) -> KanoAnswer:
    try:
        return KanoAnswer(value)
    except ValueError:
        answers = ", ".join(KanoAnswer)
        raise ValueError(f"{name}: a Kano answer is one of {answers}, got {value!r}") from None


def kano_category(functional: str, dysfunctional: str) -> KanoCategory:
    """The Kano evaluation table (Kano et al. 1984; DOMAIN.md §4).

    Rows are the functional answer, columns the dysfunctional one::

                   like  expect  neutral  tolerate  dislike
        like        Q      A       A        A         O
        expect      R      I       I        I         M
        neutral     R      I       I        I         M
        tolerate    R      I       I        I         M
        dislike     R      R       R        R         Q

    Answers are the exact lower-case words; anything else raises ValueError naming
    the argument.
    """
    row = _KANO_TABLE[_kano_answer("functional", functional)]
    column = _KANO_COLUMNS.index(_kano_answer("dysfunctional", dysfunctional))
    return row[column]


@dataclass(frozen=True)
class KanoSummary:
    """One feature's Kano answers: counts per category (all six present), the feature's
    category (None with no answers), and the better/worse coefficients (None when
    A + O + M + I == 0, i.e. every answer was reverse or questionable)."""

    counts: dict[KanoCategory, int]
    category: KanoCategory | None
    better: float | None
    worse: float | None


def kano_summary(pairs: Iterable[tuple[str, str]]) -> KanoSummary:
    """Classify each (functional, dysfunctional) answer pair and summarize the feature.

    - category = the most frequent class; ties go to the first in ``KANO_TIE_ORDER``
      (M > O > A > I > R > Q);
    - better, CS+ = (A + O) / (A + O + M + I), from 0 to 1 (Berger et al. 1993);
    - worse, CS- = -(O + M) / (A + O + M + I), from -1 to 0.
    """
    found = Counter(kano_category(functional, dysfunctional) for functional, dysfunctional in pairs)
    counts = {category: found[category] for category in KanoCategory}
    category = None
    if found:
        top = max(counts.values())
        category = next(c for c in KANO_TIE_ORDER if counts[c] == top)
    a, o, m, i = counts[_A], counts[_O], counts[_M], counts[_I]
    relevant = a + o + m + i
    if relevant == 0:
        return KanoSummary(counts=counts, category=category, better=None, worse=None)
    return KanoSummary(
        counts=counts,
        category=category,
        better=(a + o) / relevant,
        worse=-(o + m) / relevant,
    )


# ---------------------------------------------------------------------------------------
# Survey scales: NPS, CSAT, CES
# ---------------------------------------------------------------------------------------


def _scale_value(name: str, value: int, low: int, high: int) -> int:
    # bool is an int subclass, and 9.0 is not an answer on an integer scale.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}: an integer from {low} to {high}, got {value!r}")
    return value


@dataclass(frozen=True)
class NpsSummary:
    """Net Promoter Score of a set of answers; ``nps`` is None with no responses."""

    promoters: int
    passives: int
    detractors: int
    responses: int
    nps: float | None


def nps_summary(scores: Iterable[int]) -> NpsSummary:
    """NPS = %promoters - %detractors, from -100 to 100 (Reichheld 2003; DOMAIN.md §4).

    Scores are integers 0-10: promoters 9-10, passives 7-8, detractors 0-6. The score is
    not rounded; None when there is no response.
    """
    counts = Counter(nps_category(_scale_value("scores", s, 0, 10)) for s in scores)
    promoters = counts[NpsCategory.PROMOTER]
    passives = counts[NpsCategory.PASSIVE]
    detractors = counts[NpsCategory.DETRACTOR]
    responses = promoters + passives + detractors
    nps = 100 * (promoters - detractors) / responses if responses else None
    return NpsSummary(
        promoters=promoters,
        passives=passives,
        detractors=detractors,
        responses=responses,
        nps=nps,
    )


CSAT_LEVELS: dict[int, str] = {
    1: "outraged",
    2: "unhappy",
    3: "satisfied",
    4: "pleased",
    5: "dazzled",
}


@dataclass(frozen=True)
class CsatSummary:
    """CSAT answers on the five levels L1..L5: counts per level (1..5 all present), the
    mean, and the shares that matter: L5 (dazzled, the level that reliably produces loyal
    customers) and L1 + L2 (outraged or unhappy). Mean and shares are fractions of the
    responses, None with no responses."""

    counts: dict[int, int]
    responses: int
    mean: float | None
    share_top: float | None
    share_bottom: float | None


def csat_summary(levels: Iterable[int]) -> CsatSummary:
    """Counts, mean, share of L5 and share of L1 + L2 (DOMAIN.md §4: track the shares,
    not just the mean). Levels are integers 1-5."""
    found = Counter(_scale_value("levels", level, 1, 5) for level in levels)
    counts = {level: found[level] for level in CSAT_LEVELS}
    responses = sum(counts.values())
    if responses == 0:
        return CsatSummary(counts=counts, responses=0, mean=None, share_top=None, share_bottom=None)
    return CsatSummary(
        counts=counts,
        responses=responses,
        mean=sum(level * n for level, n in counts.items()) / responses,
        share_top=counts[5] / responses,
        share_bottom=(counts[1] + counts[2]) / responses,
    )


class CesSummary(TypedDict):
    """Customer effort answers: how many, and their mean (None with no responses)."""

    responses: int
    mean: float | None


def ces_summary(values: Iterable[int]) -> CesSummary:
    """Customer Effort Score (Dixon, Freeman & Toman 2010; CES 2.0 wording): agreement
    with "the company made it easy for me to handle my issue" on 1-7, so **higher means
    easier** (1 = strongly disagree, 7 = strongly agree). The score is the plain mean."""
    answers = [_scale_value("values", v, 1, 7) for v in values]
    return CesSummary(
        responses=len(answers),
        mean=sum(answers) / len(answers) if answers else None,
    )


# ---------------------------------------------------------------------------------------
# Delta principle, importance vs satisfaction
# ---------------------------------------------------------------------------------------


def satisfaction_delta(perceived: float, expected: float) -> float:
    """Delta principle: satisfaction = experience - expectation (DOMAIN.md §4).

    Both on the same scale (the survey's 0-10 for expected and perceived quality);
    positive when the experience beat the expectation, negative when it fell short.
    """
    return perceived - expected


def _zero_to_ten(name: str, value: float) -> float:
    if math.isnan(value) or not 0 <= value <= 10:
        raise ValueError(f"{name}: on a 0-10 scale, got {value!r}")
    return value


def opportunity(importance: float, satisfaction: float) -> float:
    """Opportunity = importance + max(importance - satisfaction, 0), both on 0-10
    (Ulwick 2002, the opportunity algorithm; DOMAIN.md §4). From 0 to 20: large where
    an attribute matters a lot and satisfies little; over-served attributes
    (satisfaction > importance) score their importance only."""
    importance = _zero_to_ten("importance", importance)
    satisfaction = _zero_to_ten("satisfaction", satisfaction)
    return importance + max(importance - satisfaction, 0.0)


def rank_opportunities(ratings: Mapping[str, tuple[float, float]]) -> list[tuple[str, float]]:
    """Attributes by opportunity, largest first; equal opportunities by attribute name.

    ``ratings`` maps attribute -> (mean importance, mean satisfaction), both on 0-10.
    """
    scored = [(name, opportunity(imp, sat)) for name, (imp, sat) in ratings.items()]
    return sorted(scored, key=lambda item: (-item[1], item[0]))


# ---------------------------------------------------------------------------------------
# Trust
# ---------------------------------------------------------------------------------------


def trust(
    credibility: float, reliability: float, intimacy: float, self_orientation: float
) -> float:
    """The trust equation: T = (C + R + I) / S (Maister, Green & Galford 2000;
    DOMAIN.md §11).

    The four components share one scale chosen by the caller (commonly 1-10); C, R and
    I must be >= 0 and S (self-orientation: how much we seem to serve ourselves) > 0.
    """
    for name, value in (
        ("credibility", credibility),
        ("reliability", reliability),
        ("intimacy", intimacy),
    ):
        if math.isnan(value) or value < 0:
            raise ValueError(f"{name}: must be >= 0, got {value!r}")
    if math.isnan(self_orientation) or self_orientation <= 0:
        raise ValueError(f"self_orientation: must be > 0, got {self_orientation!r}")
    return (credibility + reliability + intimacy) / self_orientation


def promise_reliability(made: int, kept: int) -> float | None:
    """Reliability as promises kept: kept / made, from 0 to 1 (DOMAIN.md §11); None when
    no promise was made yet (no evidence either way)."""
    if made < 0:
        raise ValueError(f"made: must be >= 0, got {made}")
    if not 0 <= kept <= made:
        raise ValueError(f"kept: must be from 0 to made ({made}), got {kept}")
    return kept / made if made else None
