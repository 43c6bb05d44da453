"""Satisfaction measures (DOMAIN.md §4) and trust (§11).

Every expected value below is computed by hand from the formula in DOMAIN.md.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.satisfaction import (
    CSAT_LEVELS,
    CsatSummary,
    KanoAnswer,
    KanoCategory,
    KanoSummary,
    NpsSummary,
    ces_summary,
    csat_summary,
    kano_category,
    kano_summary,
    nps_summary,
    opportunity,
    promise_reliability,
    rank_opportunities,
    satisfaction_delta,
    trust,
)
from domain.touchpoints import KANO_ANSWERS

A = KanoCategory.ATTRACTIVE
O = KanoCategory.ONE_DIMENSIONAL  # noqa: E741 - the Kano literature's letter
M = KanoCategory.MUST_BE
I = KanoCategory.INDIFFERENT  # noqa: E741 - the Kano literature's letter
R = KanoCategory.REVERSE
Q = KanoCategory.QUESTIONABLE

# ---------------------------------------------------------------------------------------
# Kano evaluation table: all 25 cells, written out one by one
# ---------------------------------------------------------------------------------------

KANO_CELLS = [
    ("like", "like", Q),
    ("like", "expect", A),
    ("like", "neutral", A),
    ("like", "tolerate", A),
    ("like", "dislike", O),
    ("expect", "like", R),
    ("expect", "expect", I),
    ("expect", "neutral", I),
    ("expect", "tolerate", I),
    ("expect", "dislike", M),
    ("neutral", "like", R),
    ("neutral", "expect", I),
    ("neutral", "neutral", I),
    ("neutral", "tolerate", I),
    ("neutral", "dislike", M),
    ("tolerate", "like", R),
    ("tolerate", "expect", I),
    ("tolerate", "neutral", I),
    ("tolerate", "tolerate", I),
    ("tolerate", "dislike", M),
    ("dislike", "like", R),
    ("dislike", "expect", R),
    ("dislike", "neutral", R),
    ("dislike", "tolerate", R),
    ("dislike", "dislike", Q),
]


@pytest.mark.parametrize(("functional", "dysfunctional", "expected"), KANO_CELLS)
def test_kano_table_cell(functional: str, dysfunctional: str, expected: KanoCategory) -> None:
    assert kano_category(functional, dysfunctional) is expected


def test_kano_table_covers_every_answer_pair_once() -> None:
    pairs = {(f, d) for f, d, _ in KANO_CELLS}
    assert pairs == {(f, d) for f in KANO_ANSWERS for d in KANO_ANSWERS}
    assert len(KANO_CELLS) == 25


def test_kano_answers_match_the_survey_payload_vocabulary() -> None:
    assert tuple(KanoAnswer) == KANO_ANSWERS


def test_kano_answers_can_be_given_as_the_enum() -> None:
    assert kano_category(KanoAnswer.LIKE, KanoAnswer.DISLIKE) is O


@pytest.mark.parametrize(
    ("functional", "dysfunctional", "argument"),
    [
        ("love", "dislike", "functional"),
        ("like", "hate", "dysfunctional"),
        ("Like", "like", "functional"),
    ],
)
def test_unknown_kano_answer_is_refused_naming_the_argument(
    functional: str, dysfunctional: str, argument: str
) -> None:
    with pytest.raises(ValueError, match=f"^{argument}: "):
        kano_category(functional, dysfunctional)


# ---------------------------------------------------------------------------------------
# Kano summary: most frequent category, tie order M > O > A > I > R > Q, CS+ and CS-
# ---------------------------------------------------------------------------------------

ATTRACTIVE_PAIR = ("like", "neutral")
ONE_DIMENSIONAL_PAIR = ("like", "dislike")
MUST_BE_PAIR = ("expect", "dislike")
INDIFFERENT_PAIR = ("neutral", "neutral")
REVERSE_PAIR = ("dislike", "like")
QUESTIONABLE_PAIR = ("like", "like")


def test_kano_summary_counts_every_category_and_computes_better_and_worse() -> None:
    pairs = (
        [ATTRACTIVE_PAIR] * 3
        + [ONE_DIMENSIONAL_PAIR] * 2
        + [MUST_BE_PAIR] * 1
        + [INDIFFERENT_PAIR] * 2
        + [REVERSE_PAIR] * 1
        + [QUESTIONABLE_PAIR] * 1
    )
    # A + O + M + I = 3 + 2 + 1 + 2 = 8; CS+ = (3 + 2) / 8 = 0.625; CS- = -(2 + 1) / 8
    assert kano_summary(pairs) == KanoSummary(
        counts={A: 3, O: 2, M: 1, I: 2, R: 1, Q: 1},
        category=A,
        better=0.625,
        worse=-0.375,
    )


@pytest.mark.parametrize(
    ("pairs", "winner"),
    [
        ([MUST_BE_PAIR, ONE_DIMENSIONAL_PAIR], M),
        ([ONE_DIMENSIONAL_PAIR, ATTRACTIVE_PAIR], O),
        ([ATTRACTIVE_PAIR, INDIFFERENT_PAIR], A),
        ([INDIFFERENT_PAIR, REVERSE_PAIR], I),
        ([REVERSE_PAIR, QUESTIONABLE_PAIR], R),
        (
            [ATTRACTIVE_PAIR, ONE_DIMENSIONAL_PAIR, MUST_BE_PAIR, INDIFFERENT_PAIR] * 2,
            M,
        ),
    ],
)
def test_kano_tie_goes_to_must_be_then_one_dimensional_attractive_indifferent_reverse(
    pairs: list[tuple[str, str]], winner: KanoCategory
) -> None:
    assert kano_summary(pairs).category is winner


def test_kano_more_frequent_category_beats_the_tie_order() -> None:
    assert kano_summary([ATTRACTIVE_PAIR] * 2 + [MUST_BE_PAIR]).category is A


def test_kano_better_and_worse_span_their_extremes() -> None:
    # all one-dimensional: CS+ = 1, CS- = -1
    one_dimensional = kano_summary([ONE_DIMENSIONAL_PAIR] * 4)
    assert (one_dimensional.better, one_dimensional.worse) == (1.0, -1.0)
    # all indifferent: CS+ = 0, CS- = 0
    indifferent = kano_summary([INDIFFERENT_PAIR] * 4)
    assert (indifferent.better, indifferent.worse) == (0.0, 0.0)
    # 1 A, 3 M: CS+ = 1/4, CS- = -3/4
    mixed = kano_summary([ATTRACTIVE_PAIR] + [MUST_BE_PAIR] * 3)
    assert (mixed.better, mixed.worse) == (0.25, -0.75)


def test_kano_coefficients_are_undefined_with_only_reverse_or_questionable_answers() -> None:
    summary = kano_summary([REVERSE_PAIR, QUESTIONABLE_PAIR, REVERSE_PAIR])
    assert summary.category is R
    assert summary.better is None
    assert summary.worse is None


def test_kano_summary_of_no_answers_has_all_zero_counts_and_no_category() -> None:
    assert kano_summary([]) == KanoSummary(
        counts=dict.fromkeys(KanoCategory, 0), category=None, better=None, worse=None
    )


@given(st.lists(st.tuples(st.sampled_from(KANO_ANSWERS), st.sampled_from(KANO_ANSWERS))))
def test_kano_summary_invariants(pairs: list[tuple[str, str]]) -> None:
    summary = kano_summary(pairs)
    assert set(summary.counts) == set(KanoCategory)
    assert sum(summary.counts.values()) == len(pairs)
    if pairs:
        assert summary.category is not None
        assert summary.counts[summary.category] == max(summary.counts.values())
    if summary.better is not None and summary.worse is not None:
        assert 0 <= summary.better <= 1
        assert -1 <= summary.worse <= 0


# ---------------------------------------------------------------------------------------
# NPS
# ---------------------------------------------------------------------------------------


def test_nps_is_percent_promoters_minus_percent_detractors() -> None:
    # 5 promoters, 3 passives, 2 detractors of 10: 50% - 20% = 30
    scores = [10, 9, 9, 10, 9, 8, 7, 7, 6, 0]
    assert nps_summary(scores) == NpsSummary(
        promoters=5, passives=3, detractors=2, responses=10, nps=30.0
    )


def test_nps_of_no_responses_is_undefined() -> None:
    assert nps_summary([]) == NpsSummary(
        promoters=0, passives=0, detractors=0, responses=0, nps=None
    )


def test_nps_of_all_promoters_is_100() -> None:
    assert nps_summary([9, 10, 10]).nps == 100.0


def test_nps_of_all_detractors_is_minus_100() -> None:
    assert nps_summary([0, 3, 6]).nps == -100.0


def test_nps_of_all_passives_is_zero() -> None:
    assert nps_summary([7, 8]).nps == 0.0


@pytest.mark.parametrize(
    ("score", "promoters", "passives", "detractors"),
    [(9, 1, 0, 0), (8, 0, 1, 0), (7, 0, 1, 0), (6, 0, 0, 1)],
)
def test_nps_boundaries_9_7_6(score: int, promoters: int, passives: int, detractors: int) -> None:
    summary = nps_summary([score])
    assert (summary.promoters, summary.passives, summary.detractors) == (
        promoters,
        passives,
        detractors,
    )


def test_nps_is_not_rounded() -> None:
    # 1 promoter of 3: 33.33...% - 0%
    assert nps_summary([9, 7, 8]).nps == pytest.approx(100 / 3)


@pytest.mark.parametrize("bad", [-1, 11, 9.0, True])
def test_nps_refuses_scores_off_the_0_to_10_integer_scale(bad: int) -> None:
    with pytest.raises(ValueError, match=r"^scores: "):
        nps_summary([9, bad])


@given(st.lists(st.integers(0, 10)))
def test_nps_stays_within_minus_100_and_100(scores: list[int]) -> None:
    summary = nps_summary(scores)
    assert summary.responses == len(scores)
    assert summary.promoters + summary.passives + summary.detractors == len(scores)
    if scores:
        assert summary.nps is not None
        assert -100 <= summary.nps <= 100


# ---------------------------------------------------------------------------------------
# CSAT and CES
# ---------------------------------------------------------------------------------------


def test_csat_levels_are_named_as_in_the_domain() -> None:
    assert CSAT_LEVELS == {
        1: "outraged",
        2: "unhappy",
        3: "satisfied",
        4: "pleased",
        5: "dazzled",
    }


def test_csat_reports_top_and_bottom_shares_beside_the_mean() -> None:
    # levels 5, 5, 4, 3, 2, 1, 1, 5: top = 3/8; bottom = (2 + 1) / 8; mean = 26 / 8
    assert csat_summary([5, 5, 4, 3, 2, 1, 1, 5]) == CsatSummary(
        counts={1: 2, 2: 1, 3: 1, 4: 1, 5: 3},
        responses=8,
        mean=3.25,
        share_top=0.375,
        share_bottom=0.375,
    )


def test_csat_all_pleased_has_a_high_mean_but_no_dazzled_customer() -> None:
    summary = csat_summary([4, 4, 4, 4])
    assert summary.mean == 4.0
    assert summary.share_top == 0.0
    assert summary.share_bottom == 0.0


def test_csat_of_no_responses() -> None:
    assert csat_summary([]) == CsatSummary(
        counts={1: 0, 2: 0, 3: 0, 4: 0, 5: 0},
        responses=0,
        mean=None,
        share_top=None,
        share_bottom=None,
    )


@pytest.mark.parametrize("bad", [0, 6, 4.5])
def test_csat_refuses_levels_outside_1_to_5(bad: int) -> None:
    with pytest.raises(ValueError, match=r"^levels: "):
        csat_summary([bad])


def test_ces_is_the_mean_of_1_to_7_answers() -> None:
    # (7 + 6 + 2 + 5) / 4 = 5.0
    assert ces_summary([7, 6, 2, 5]) == {"responses": 4, "mean": 5.0}


def test_ces_of_no_responses() -> None:
    assert ces_summary([]) == {"responses": 0, "mean": None}


@pytest.mark.parametrize("bad", [0, 8])
def test_ces_refuses_values_outside_1_to_7(bad: int) -> None:
    with pytest.raises(ValueError, match=r"^values: "):
        ces_summary([bad])


# ---------------------------------------------------------------------------------------
# Delta principle; importance vs satisfaction
# ---------------------------------------------------------------------------------------


def test_delta_is_experience_minus_expectation() -> None:
    assert satisfaction_delta(perceived=8.0, expected=6.0) == 2.0
    assert satisfaction_delta(perceived=5.0, expected=9.0) == -4.0


def test_opportunity_adds_the_unmet_part_of_importance() -> None:
    # 9 + max(9 - 4, 0) = 14
    assert opportunity(9, 4) == 14
    # over-served: 5 + max(5 - 8, 0) = 5
    assert opportunity(5, 8) == 5
    assert opportunity(10, 0) == 20
    assert opportunity(0, 10) == 0


@pytest.mark.parametrize(
    ("importance", "satisfaction", "argument"),
    [
        (-0.1, 5, "importance"),
        (10.5, 5, "importance"),
        (5, 11, "satisfaction"),
        (5, float("nan"), "satisfaction"),
    ],
)
def test_opportunity_refuses_values_off_the_0_to_10_scale(
    importance: float, satisfaction: float, argument: str
) -> None:
    with pytest.raises(ValueError, match=f"^{argument}: "):
        opportunity(importance, satisfaction)


def test_opportunities_rank_largest_first_and_ties_by_name() -> None:
    ratings = {
        "waiting": (9.0, 4.0),  # 9 + 5 = 14
        "price": (8.0, 6.0),  # 8 + 2 = 10
        "coffee": (3.0, 9.0),  # 3 + 0 = 3
        "handover": (7.0, 4.0),  # 7 + 3 = 10
        "explanation": (6.0, 2.0),  # 6 + 4 = 10
    }
    assert rank_opportunities(ratings) == [
        ("waiting", 14.0),
        ("explanation", 10.0),
        ("handover", 10.0),
        ("price", 10.0),
        ("coffee", 3.0),
    ]


def test_no_attributes_rank_to_an_empty_list() -> None:
    assert rank_opportunities({}) == []


# ---------------------------------------------------------------------------------------
# Trust
# ---------------------------------------------------------------------------------------


def test_trust_is_credibility_reliability_intimacy_over_self_orientation() -> None:
    # (6 + 8 + 4) / 3 = 6
    assert trust(6, 8, 4, 3) == 6.0


def test_trust_falls_as_self_orientation_rises() -> None:
    assert trust(5, 5, 5, 5) < trust(5, 5, 5, 1)


@pytest.mark.parametrize("self_orientation", [0, -1])
def test_trust_needs_a_positive_self_orientation(self_orientation: float) -> None:
    with pytest.raises(ValueError, match=r"^self_orientation: "):
        trust(5, 5, 5, self_orientation)


def test_trust_refuses_negative_components() -> None:
    with pytest.raises(ValueError, match=r"^intimacy: "):
        trust(5, 5, -1, 2)


def test_promise_reliability_is_the_share_of_promises_kept() -> None:
    assert promise_reliability(made=4, kept=3) == 0.75
    assert promise_reliability(made=2, kept=0) == 0.0


def test_promise_reliability_is_undefined_before_any_promise() -> None:
    assert promise_reliability(made=0, kept=0) is None


@pytest.mark.parametrize(
    ("made", "kept", "argument"), [(2, 3, "kept"), (2, -1, "kept"), (-1, 0, "made")]
)
def test_promise_reliability_refuses_impossible_counts(made: int, kept: int, argument: str) -> None:
    with pytest.raises(ValueError, match=f"^{argument}: "):
        promise_reliability(made, kept)
