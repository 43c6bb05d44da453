"""Pure metric rules (DOMAIN.md §3-5): peak-end, NPS category, Dick & Basu loyalty.

Every expected value below is computed by hand from the formula in DOMAIN.md.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.metrics import (
    LoyaltyStatus,
    NpsCategory,
    PeakEnd,
    attitude_is_high,
    loyalty_status,
    nps_category,
    peak_end,
    peak_of,
)

# ---------------------------------------------------------------------------------------
# Peak-end rule (Kahneman): peak-end score = (peak + end) / 2, mean reported beside it
# ---------------------------------------------------------------------------------------


def test_peak_end_score_is_the_average_of_peak_and_end() -> None:
    # peak = 3 (largest |e|), end = 2 -> (3 + 2) / 2 = 2.5; mean = 6 / 3 = 2.0
    assert peak_end([1, 3, 2]) == PeakEnd(
        peak=3, best=3, worst=1, end=2, peak_end_score=2.5, mean_emotion=2.0
    )


def test_negative_peak_wins_a_tie() -> None:
    # |+2| == |-2|: bad moments weigh more, so the peak is -2; end = 1 -> (-2 + 1) / 2
    result = peak_end([2, -2, 1])

    assert result is not None
    assert result.peak == -2
    assert result.peak_end_score == -0.5
    assert result.best == 2
    assert result.worst == -2


@pytest.mark.parametrize("emotions", [[2, -2], [-2, 2], [3, 1, -3, 0], [-3, 0, 3, 1]])
def test_negative_peak_wins_a_tie_whichever_comes_first(emotions: list[int]) -> None:
    assert peak_of(emotions) == -max(abs(e) for e in emotions)


def test_single_step_journey_is_its_own_peak_and_end() -> None:
    assert peak_end([-1]) == PeakEnd(
        peak=-1, best=-1, worst=-1, end=-1, peak_end_score=-1.0, mean_emotion=-1.0
    )


def test_all_neutral_journey_is_remembered_as_neutral() -> None:
    assert peak_end([0, 0, 0]) == PeakEnd(
        peak=0, best=0, worst=0, end=0, peak_end_score=0.0, mean_emotion=0.0
    )


def test_terrible_start_with_a_good_end_is_remembered_by_both() -> None:
    # peak = -3 (at the start), end = 2 -> (-3 + 2) / 2 = -0.5; mean = 0 / 4 = 0.0
    assert peak_end([-3, 0, 1, 2]) == PeakEnd(
        peak=-3, best=2, worst=-3, end=2, peak_end_score=-0.5, mean_emotion=0.0
    )


def test_mostly_good_journey_with_a_terrible_end_is_remembered_as_terrible() -> None:
    # mean = (1 + 1 + 1 + 1 - 3) / 5 = 0.2, but peak = end = -3 -> score -3.0
    result = peak_end([1, 1, 1, 1, -3])

    assert result is not None
    assert result.mean_emotion == 0.2
    assert result.peak_end_score == -3.0
    assert result.mean_emotion - result.peak_end_score == pytest.approx(3.2)


def test_longer_journey_with_a_milder_end_is_remembered_better_despite_a_lower_mean() -> None:
    # Cold-hand experiment: the same bad stretch plus a milder ending.
    short = peak_end([-3, -3])  # peak -3, end -3 -> -3.0; mean -3.0
    longer = peak_end([-3, -3, -2])  # peak -3, end -2 -> -2.5; mean -8/3

    assert short is not None and longer is not None
    assert short.peak_end_score == -3.0
    assert longer.peak_end_score == -2.5
    assert longer.peak_end_score > short.peak_end_score
    assert longer.mean_emotion == -2.6667


def test_best_and_worst_are_kept_beside_the_peak() -> None:
    # peak = 3 (|3| > |-2|), end = 0 -> 1.5; best 3, worst -2; mean 0 / 4
    assert peak_end([-1, 3, -2, 0]) == PeakEnd(
        peak=3, best=3, worst=-2, end=0, peak_end_score=1.5, mean_emotion=0.0
    )


def test_mean_emotion_is_rounded_to_four_places() -> None:
    result = peak_end([1, 0, 0])

    assert result is not None
    assert result.mean_emotion == 0.3333


def test_journey_without_scored_touchpoints_has_no_peak_end() -> None:
    assert peak_end([]) is None


def test_peak_is_the_score_with_the_largest_absolute_value() -> None:
    assert peak_of([1, -2, 3, -1]) == 3
    assert peak_of([2, -3, 1]) == -3


@given(st.lists(st.integers(min_value=-3, max_value=3), min_size=1, max_size=30))
def test_peak_end_stays_within_the_journey_it_summarises(emotions: list[int]) -> None:
    result = peak_end(emotions)

    assert result is not None
    assert abs(result.peak) == max(abs(e) for e in emotions)
    if -abs(result.peak) in emotions:
        assert result.peak == -abs(result.peak)
    assert result.end == emotions[-1]
    assert (result.best, result.worst) == (max(emotions), min(emotions))
    assert result.peak_end_score == (result.peak + result.end) / 2
    assert result.worst <= result.peak_end_score <= result.best
    assert result.mean_emotion == pytest.approx(sum(emotions) / len(emotions), abs=5e-5)


# ---------------------------------------------------------------------------------------
# NPS: promoters 9-10, passives 7-8, detractors 0-6
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "category"),
    [
        (0, NpsCategory.DETRACTOR),
        (6, NpsCategory.DETRACTOR),
        (7, NpsCategory.PASSIVE),
        (8, NpsCategory.PASSIVE),
        (9, NpsCategory.PROMOTER),
        (10, NpsCategory.PROMOTER),
    ],
)
def test_nps_answer_falls_in_its_category(score: int, category: NpsCategory) -> None:
    assert nps_category(score) is category


# ---------------------------------------------------------------------------------------
# Dick & Basu (1994): relative attitude x repeat patronage
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attitude_high", "repeat_high", "status"),
    [
        (True, True, LoyaltyStatus.TRUE),
        (True, False, LoyaltyStatus.LATENT),
        (False, True, LoyaltyStatus.SPURIOUS),
        (False, False, LoyaltyStatus.NONE),
    ],
)
def test_attitude_and_repeat_patronage_give_the_dick_and_basu_quadrant(
    attitude_high: bool, repeat_high: bool, status: LoyaltyStatus
) -> None:
    assert loyalty_status(attitude_high, repeat_high) is status


@pytest.mark.parametrize(("value", "high"), [(0, False), (8, False), (9, True), (10, True)])
def test_nps_attitude_is_high_from_a_promoter_answer_by_default(value: int, high: bool) -> None:
    assert attitude_is_high("nps", value) is high


@pytest.mark.parametrize(("value", "high"), [(1, False), (3, False), (4, True), (5, True)])
def test_csat_attitude_is_high_from_pleased_upwards_by_default(value: int, high: bool) -> None:
    assert attitude_is_high("csat", value) is high


def test_nps_threshold_is_configurable() -> None:
    assert attitude_is_high("nps", 8, nps_threshold=8) is True
    assert attitude_is_high("nps", 9, nps_threshold=10) is False


def test_csat_threshold_is_configurable() -> None:
    assert attitude_is_high("csat", 4, csat_threshold=5) is False
    assert attitude_is_high("csat", 3, csat_threshold=3) is True


def test_each_metric_is_judged_by_its_own_threshold() -> None:
    # 5 is the best CSAT answer but a detractor's NPS answer.
    assert attitude_is_high("csat", 5) is True
    assert attitude_is_high("nps", 5) is False


def test_attitude_is_not_read_from_other_survey_metrics() -> None:
    with pytest.raises(ValueError, match="nps or csat"):
        attitude_is_high("ces", 7)
