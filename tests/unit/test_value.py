"""Customer value (DOMAIN.md §5-7): pyramid, migration, RFM, lifecycle, share of wallet.

Every expected value below is computed by hand from the rules in DOMAIN.md and the
documented choices in domain/value.py.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.value import (
    LifecycleStage,
    PyramidRow,
    Rfm,
    RfmSegment,
    Tier,
    TierCutoffs,
    lifecycle_stage,
    migration_matrix,
    pyramid,
    quintile_scores,
    rfm,
    rfm_segment,
    share_of_wallet,
    usual_gap,
    value_tiers,
)

TIER_ORDER = list(Tier)
AS_OF = datetime(2024, 6, 30, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def hundred_distinct() -> dict[str, Decimal]:
    return {f"c{i:03d}": Decimal(i) for i in range(1, 101)}


# ---------------------------------------------------------------------------------------
# Tiers
# ---------------------------------------------------------------------------------------


def test_hundred_distinct_customers_make_1_vip_4_major_15_ordinary_80_small() -> None:
    tiers = value_tiers(hundred_distinct())

    assert Counter(tiers.values()) == {
        Tier.VIP: 1,
        Tier.MAJOR: 4,
        Tier.ORDINARY: 15,
        Tier.SMALL: 80,
    }
    assert tiers["c100"] is Tier.VIP
    assert {c for c, t in tiers.items() if t is Tier.MAJOR} == {"c096", "c097", "c098", "c099"}
    assert tiers["c081"] is Tier.ORDINARY
    assert tiers["c080"] is Tier.SMALL


def test_a_tie_at_the_vip_cut_puts_the_whole_group_in_the_higher_tier() -> None:
    values = hundred_distinct()
    values["c099"] = Decimal(100)  # ties with c100 at rank 1

    tiers = value_tiers(values)

    assert tiers["c099"] is Tier.VIP
    assert tiers["c100"] is Tier.VIP
    # the major cut stays at rank 5: ranks 3..5 (c098, c097, c096) are major
    assert {c for c, t in tiers.items() if t is Tier.MAJOR} == {"c096", "c097", "c098"}


def test_a_tie_across_the_ordinary_cut_never_splits() -> None:
    values = hundred_distinct()
    values["c080"] = Decimal(81)  # rank 21 ties with rank 20, the last ordinary

    tiers = value_tiers(values)

    assert tiers["c080"] is Tier.ORDINARY
    assert tiers["c081"] is Tier.ORDINARY
    assert Counter(tiers.values())[Tier.ORDINARY] == 16
    assert Counter(tiers.values())[Tier.SMALL] == 79


def test_all_equal_values_are_all_vip() -> None:
    tiers = value_tiers({f"c{i}": Decimal("10.00") for i in range(50)})
    assert set(tiers.values()) == {Tier.VIP}


def test_a_single_active_customer_is_vip() -> None:
    # ceil(0.01 * 1) = 1
    assert value_tiers({"only": Decimal("0.01")}) == {"only": Tier.VIP}


def test_ten_customers_round_up_each_cut() -> None:
    # ceil(0.1) = 1 VIP; ceil(0.5) = 1, so no major; ceil(2.0) = 2: one ordinary; 8 small
    tiers = value_tiers({f"c{i}": Decimal(i) for i in range(1, 11)})
    assert tiers["c10"] is Tier.VIP
    assert tiers["c9"] is Tier.ORDINARY
    assert Counter(tiers.values()) == {Tier.VIP: 1, Tier.ORDINARY: 1, Tier.SMALL: 8}


def test_zero_value_is_inactive_for_a_past_buyer_and_prospect_otherwise() -> None:
    values = {"buyer": Decimal(50), "lapsed": Decimal(0), "new": Decimal(0)}

    tiers = value_tiers(values, buyers={"buyer", "lapsed"})

    assert tiers == {"buyer": Tier.VIP, "lapsed": Tier.INACTIVE, "new": Tier.PROSPECT}


def test_without_purchase_history_zero_value_customers_are_prospects() -> None:
    assert value_tiers({"a": Decimal(0)}) == {"a": Tier.PROSPECT}


def test_net_negative_value_is_outside_the_pyramid() -> None:
    tiers = value_tiers({"refunded": Decimal("-20"), "a": Decimal(5)}, buyers={"refunded"})
    assert tiers == {"refunded": Tier.INACTIVE, "a": Tier.VIP}


def test_result_has_exactly_the_customers_of_values() -> None:
    assert value_tiers({}, buyers={"x"}) == {}


def test_custom_cutoffs() -> None:
    # top 10% vip, to 30% major, to 60% ordinary, of 10: 1, 2, 3, 4
    cutoffs = TierCutoffs(vip=0.1, major=0.3, ordinary=0.6)
    tiers = value_tiers({f"c{i}": Decimal(i) for i in range(1, 11)}, cutoffs=cutoffs)
    assert Counter(tiers.values()) == {
        Tier.VIP: 1,
        Tier.MAJOR: 2,
        Tier.ORDINARY: 3,
        Tier.SMALL: 4,
    }


@pytest.mark.parametrize(
    ("vip", "major", "ordinary"),
    [(0.0, 0.05, 0.2), (0.01, 0.05, 1.5), (0.05, 0.05, 0.2), (0.1, 0.05, 0.2), (-0.1, 0.5, 1)],
)
def test_cutoffs_must_increase_within_0_and_1(vip: float, major: float, ordinary: float) -> None:
    with pytest.raises(ValueError):
        TierCutoffs(vip=vip, major=major, ordinary=ordinary)


def test_everyone_can_be_in_the_pyramid_with_an_ordinary_cut_of_1() -> None:
    tiers = value_tiers(hundred_distinct(), cutoffs=TierCutoffs(ordinary=1))
    assert Tier.SMALL not in tiers.values()


values_strategy = st.dictionaries(
    st.text(min_size=1, max_size=4),
    st.decimals(min_value=-5, max_value=1000, places=2, allow_nan=False, allow_infinity=False),
    max_size=60,
)


@given(values_strategy, st.sets(st.text(min_size=1, max_size=4)))
def test_more_value_never_gives_a_lower_tier(values: dict[str, Decimal], buyers: set[str]) -> None:
    tiers = value_tiers(values, buyers=buyers)
    assert tiers.keys() == values.keys()
    for a, b in itertools.permutations(values, 2):
        if values[a] > 0 and values[a] >= values[b]:
            assert TIER_ORDER.index(tiers[a]) <= TIER_ORDER.index(tiers[b])
        if values[a] > 0 and values[a] == values[b]:
            assert tiers[a] is tiers[b]


@given(st.lists(st.decimals(min_value=1, max_value=10**6, places=2), min_size=1, max_size=300))
def test_there_is_always_a_vip_and_at_least_the_nominal_share_in_the_top_tiers(
    amounts: list[Decimal],
) -> None:
    tiers = value_tiers({f"c{i}": v for i, v in enumerate(amounts)})
    counts = Counter(tiers.values())
    n = len(amounts)
    assert counts[Tier.VIP] >= 1
    assert counts[Tier.VIP] + counts[Tier.MAJOR] + counts[Tier.ORDINARY] >= 0.2 * n


# ---------------------------------------------------------------------------------------
# Pyramid
# ---------------------------------------------------------------------------------------


def test_pyramid_lists_every_tier_in_order_with_revenue_shares_summing_to_1() -> None:
    values = {
        "v": Decimal(500),
        "m": Decimal(300),
        "s": Decimal(150),
        "t": Decimal(50),
        "i": Decimal(0),
        "p": Decimal(0),
    }
    tiers = {
        "v": Tier.VIP,
        "m": Tier.MAJOR,
        "s": Tier.SMALL,
        "t": Tier.SMALL,
        "i": Tier.INACTIVE,
        "p": Tier.PROSPECT,
    }

    rows = pyramid(tiers, values)

    assert rows == [
        PyramidRow(Tier.VIP, 1, Decimal(500), Decimal("0.5")),
        PyramidRow(Tier.MAJOR, 1, Decimal(300), Decimal("0.3")),
        PyramidRow(Tier.ORDINARY, 0, Decimal(0), Decimal(0)),
        PyramidRow(Tier.SMALL, 2, Decimal(200), Decimal("0.2")),
        PyramidRow(Tier.INACTIVE, 1, Decimal(0), Decimal(0)),
        PyramidRow(Tier.PROSPECT, 1, Decimal(0), Decimal(0)),
    ]
    assert sum(row.revenue_share or 0 for row in rows) == 1


def test_pyramid_shares_sum_to_1_for_the_hundred_customers() -> None:
    values = hundred_distinct()
    rows = pyramid(value_tiers(values), values)
    # total = 5050; VIP 100, major 96..99 = 390, ordinary 81..95 = 1320, small 1..80 = 3240
    assert [row.revenue for row in rows[:4]] == [Decimal(v) for v in (100, 390, 1320, 3240)]
    assert sum(row.revenue_share or 0 for row in rows) == pytest.approx(Decimal(1))
    assert [row.customers for row in rows] == [1, 4, 15, 80, 0, 0]


def test_pyramid_without_revenue_has_no_shares() -> None:
    rows = pyramid({"p": Tier.PROSPECT}, {})
    assert [row.revenue_share for row in rows] == [None] * 6
    assert rows[-1] == PyramidRow(Tier.PROSPECT, 1, Decimal(0), None)


# ---------------------------------------------------------------------------------------
# Migration matrix
# ---------------------------------------------------------------------------------------


def test_migration_counts_moves_including_in_and_out_of_inactive() -> None:
    before = {
        "stay_vip": Tier.VIP,
        "down": Tier.VIP,
        "up": Tier.SMALL,
        "goes_quiet": Tier.ORDINARY,
        "comes_back": Tier.INACTIVE,
        "still_quiet": Tier.INACTIVE,
        "converted": Tier.PROSPECT,
    }
    after = {
        "stay_vip": Tier.VIP,
        "down": Tier.MAJOR,
        "up": Tier.ORDINARY,
        "goes_quiet": Tier.INACTIVE,
        "comes_back": Tier.SMALL,
        "still_quiet": Tier.INACTIVE,
        "converted": Tier.SMALL,
        "brand_new": Tier.SMALL,  # not there before: a prospect then
    }

    matrix = migration_matrix(before, after)

    moves = {(a, b): n for a, row in matrix.items() for b, n in row.items() if n}
    assert moves == {
        (Tier.VIP, Tier.VIP): 1,
        (Tier.VIP, Tier.MAJOR): 1,
        (Tier.SMALL, Tier.ORDINARY): 1,
        (Tier.ORDINARY, Tier.INACTIVE): 1,
        (Tier.INACTIVE, Tier.SMALL): 1,
        (Tier.INACTIVE, Tier.INACTIVE): 1,
        (Tier.PROSPECT, Tier.SMALL): 2,
    }


def test_migration_matrix_is_square_over_all_tiers_even_when_empty() -> None:
    matrix = migration_matrix({}, {})
    assert list(matrix) == TIER_ORDER
    assert all(list(row) == TIER_ORDER and set(row.values()) == {0} for row in matrix.values())


def test_a_customer_missing_after_counts_as_a_prospect_there() -> None:
    assert migration_matrix({"gone": Tier.SMALL}, {})[Tier.SMALL][Tier.PROSPECT] == 1


tier_maps = st.dictionaries(st.text(max_size=3), st.sampled_from(Tier), max_size=40)


@given(tier_maps, tier_maps)
def test_migration_matrix_counts_every_customer_once(
    before: dict[str, Tier], after: dict[str, Tier]
) -> None:
    matrix = migration_matrix(before, after)
    assert sum(sum(row.values()) for row in matrix.values()) == len(before.keys() | after.keys())


# ---------------------------------------------------------------------------------------
# Quintile scores
# ---------------------------------------------------------------------------------------


def test_ten_distinct_values_give_two_customers_per_score() -> None:
    scores = quintile_scores({f"c{i}": float(i) for i in range(10)})
    assert scores == {f"c{i}": 1 + i // 2 for i in range(10)}


def test_all_equal_values_share_the_middle_score() -> None:
    scores = quintile_scores({f"c{i}": 3.0 for i in range(7)})
    assert set(scores.values()) == {3}


def test_ties_share_the_quintile_of_their_middle_rank() -> None:
    # ascending 1, 2, 2, 2, 5: mean ranks 0, 2, 2, 2, 4 -> 1 + floor(5 * r / 5)
    scores = quintile_scores({"a": 1.0, "b": 2.0, "c": 2.0, "d": 2.0, "e": 5.0})
    assert scores == {"a": 1, "b": 3, "c": 3, "d": 3, "e": 5}


def test_lower_is_better_reverses_the_order() -> None:
    # recency in days: 3 days is the best, 100 the worst
    scores = quintile_scores({"a": 3, "b": 10, "c": 30, "d": 60, "e": 100}, higher_is_better=False)
    assert scores == {"a": 5, "b": 4, "c": 3, "d": 2, "e": 1}


def test_three_customers_score_1_2_4() -> None:
    # 1 + floor(5 * 0 / 3) = 1, 1 + floor(5 / 3) = 2, 1 + floor(10 / 3) = 4
    assert quintile_scores({"a": 1.0, "b": 2.0, "c": 3.0}) == {"a": 1, "b": 2, "c": 4}


def test_quintile_scores_accept_decimal_money() -> None:
    scores = quintile_scores({"a": Decimal("9.99"), "b": Decimal("10.00")})
    assert scores == {"a": 1, "b": 3}


def test_quintile_scores_refuse_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        quintile_scores({"a": float("nan"), "b": 1.0})


def test_quintile_scores_of_nobody() -> None:
    assert quintile_scores({}) == {}


@given(
    st.dictionaries(st.text(max_size=3), st.integers(0, 20).map(float), max_size=80),
    st.booleans(),
)
def test_quintile_scores_are_1_to_5_monotone_and_tie_consistent(
    values: dict[str, float], higher_is_better: bool
) -> None:
    scores = quintile_scores(values, higher_is_better=higher_is_better)
    assert scores.keys() == values.keys()
    assert all(1 <= s <= 5 for s in scores.values())
    sign = 1 if higher_is_better else -1
    for a, b in itertools.permutations(values, 2):
        if values[a] == values[b]:
            assert scores[a] == scores[b]
        elif sign * values[a] > sign * values[b]:
            assert scores[a] >= scores[b]


# ---------------------------------------------------------------------------------------
# RFM segments: every (r, f, m) maps to exactly one segment
# ---------------------------------------------------------------------------------------

# The documented grid, rows r = 5 .. 1, columns f = 1 .. 5, written out independently.
EXPECTED_GRID = {
    5: ["new", "potential_loyalist", "potential_loyalist", "champions", "champions"],
    4: ["new", "potential_loyalist", "potential_loyalist", "champions", "champions"],
    3: ["need_attention", "need_attention", "need_attention", "loyal", "loyal"],
    2: ["hibernating", "hibernating", "at_risk", "at_risk", "cannot_lose"],
    1: ["lost", "lost", "at_risk", "at_risk", "cannot_lose"],
}

# The same rules as predicates, as stated in rfm_segment's docstring.
SEGMENT_RULES: dict[RfmSegment, Callable[[int, int], bool]] = {
    RfmSegment.CHAMPIONS: lambda r, f: r >= 4 and f >= 4,
    RfmSegment.LOYAL: lambda r, f: r == 3 and f >= 4,
    RfmSegment.POTENTIAL_LOYALIST: lambda r, f: r >= 4 and 2 <= f <= 3,
    RfmSegment.NEW: lambda r, f: r >= 4 and f == 1,
    RfmSegment.NEED_ATTENTION: lambda r, f: r == 3 and f <= 3,
    RfmSegment.AT_RISK: lambda r, f: r <= 2 and 3 <= f <= 4,
    RfmSegment.CANNOT_LOSE: lambda r, f: r <= 2 and f == 5,
    RfmSegment.HIBERNATING: lambda r, f: r == 2 and f <= 2,
    RfmSegment.LOST: lambda r, f: r == 1 and f <= 2,
}

SCORES = range(1, 6)


@pytest.mark.parametrize(("r", "f", "m"), list(itertools.product(SCORES, SCORES, SCORES)))
def test_every_rfm_score_has_exactly_one_segment(r: int, f: int, m: int) -> None:
    matching = [segment for segment, rule in SEGMENT_RULES.items() if rule(r, f)]
    assert len(matching) == 1
    assert rfm_segment(r, f, m) is matching[0]
    assert rfm_segment(r, f, m) == EXPECTED_GRID[r][f - 1]


def test_every_segment_is_reachable() -> None:
    reached = {rfm_segment(r, f, 3) for r in SCORES for f in SCORES}
    assert reached == set(RfmSegment)


@pytest.mark.parametrize(("r", "f", "m", "name"), [(0, 3, 3, "r"), (3, 6, 3, "f"), (3, 3, 0, "m")])
def test_rfm_segment_refuses_scores_off_1_to_5(r: int, f: int, m: int, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}: "):
        rfm_segment(r, f, m)


# ---------------------------------------------------------------------------------------
# RFM from purchases
# ---------------------------------------------------------------------------------------


def test_rfm_measures_scores_and_segments_a_small_population() -> None:
    purchases = {
        "a": [
            (AS_OF - 90 * DAY, Decimal(50)),
            (AS_OF - 2 * DAY, Decimal(100)),
            (AS_OF - 30 * DAY, Decimal(50)),
            (AS_OF - 60 * DAY, Decimal(50)),
            (AS_OF - 400 * DAY, Decimal(1000)),  # before the window
        ],
        "b": [(AS_OF - 10 * DAY, Decimal(500))],
        "c": [(AS_OF - 200 * DAY, Decimal(20)), (AS_OF - 250 * DAY, Decimal(20))],
        "d": [(AS_OF - 500 * DAY, Decimal(300))],  # bought, but not in the window
        "e": [(AS_OF - d * DAY, Decimal(60)) for d in (40, 45, 50)],
        "future": [(AS_OF + DAY, Decimal(10))],  # nothing up to as_of: left out
        "nothing": [],
    }

    result = rfm(purchases, as_of=AS_OF, window=365 * DAY)

    # R against the 5 kept: score = 1 + rank (0-based, worst first):
    #   recency worst->best d 500, c 200, e 40, b 10, a 2 -> 1, 2, 3, 4, 5
    # F and M against the 4 who bought in the window (d did not: F = M = 1);
    # n = 4: score = 1 + floor(5 * rank / 4) -> ranks 0..3 score 1, 2, 3, 4
    #   frequency b 1, c 2, e 3, a 4; monetary c 40, e 180, a 250, b 500
    assert result == {
        "a": Rfm(2, 4, Decimal(250), 5, 4, 3, RfmSegment.CHAMPIONS),
        "b": Rfm(10, 1, Decimal(500), 4, 1, 4, RfmSegment.NEW),
        "c": Rfm(200, 2, Decimal(40), 2, 2, 1, RfmSegment.HIBERNATING),
        "d": Rfm(500, 0, Decimal(0), 1, 1, 1, RfmSegment.LOST),
        "e": Rfm(40, 3, Decimal(180), 3, 3, 2, RfmSegment.NEED_ATTENTION),
    }


def test_customers_silent_in_the_window_score_f_1_and_m_1_not_the_middle() -> None:
    """Most of the population bought only long ago (CDNOW as of today): their zero
    purchases in the window are the bottom of F and M, not a tie group scored 3."""
    purchases = {f"s{i}": [(AS_OF - (400 + 10 * i) * DAY, Decimal(10))] for i in range(8)}
    purchases["x"] = [(AS_OF - 5 * DAY, Decimal(30)), (AS_OF - 20 * DAY, Decimal(30))]
    purchases["y"] = [(AS_OF - 50 * DAY, Decimal(100))]

    result = rfm(purchases, as_of=AS_OF, window=365 * DAY)

    # R against all 10, n = 10: score = 1 + floor(rank / 2), worst first:
    #   s7 470 days, s6 460, ..., s0 400, y 50, x 5 -> s7 s6: 1; s5 s4: 2; s3 s2: 3;
    #   s1 s0: 4; y x: 5
    # F against x and y (n = 2: ranks 0, 1 score 1, 3): y 1 purchase -> 1, x 2 -> 3
    # M: x 60 -> 1, y 100 -> 3; every silent customer F = M = 1
    assert {c: (r.r, r.f, r.m) for c, r in result.items()} == {
        "s7": (1, 1, 1),
        "s6": (1, 1, 1),
        "s5": (2, 1, 1),
        "s4": (2, 1, 1),
        "s3": (3, 1, 1),
        "s2": (3, 1, 1),
        "s1": (4, 1, 1),
        "s0": (4, 1, 1),
        "y": (5, 1, 3),
        "x": (5, 3, 1),
    }
    # Silent in the window: outside the grid, lost whatever R (s1 and s0 have R = 4,
    # which the grid would read as "new"); y (5, 1) is new, x (5, 3) potential loyalist.
    assert {c: r.segment for c, r in result.items()} == {
        **{f"s{i}": RfmSegment.LOST for i in range(8)},
        "y": RfmSegment.NEW,
        "x": RfmSegment.POTENTIAL_LOYALIST,
    }


def test_one_old_purchase_among_silent_customers_is_not_a_champion() -> None:
    """As of 1998-06-30 in CDNOW: one purchase 300 days before, the others silent for
    longer. The most recent of a silent population, but one purchase is no champion."""
    purchases = {f"s{i}": [(AS_OF - (400 + i) * DAY, Decimal(10))] for i in range(20)}
    purchases["old"] = [(AS_OF - 300 * DAY, Decimal(12))]

    result = rfm(purchases, as_of=AS_OF, window=365 * DAY)

    # R: "old" is the most recent of 21: 1 + floor(5 * 20 / 21) = 5. F and M: the only
    # customer with a purchase in the window, n = 1: 1 + floor(0) = 1.
    old = result["old"]
    assert (old.recency_days, old.frequency, old.r, old.f, old.m) == (300, 1, 5, 1, 1)
    assert old.segment is RfmSegment.NEW
    assert all((r.f, r.m) == (1, 1) for c, r in result.items() if c != "old")


def test_rfm_window_is_open_at_its_start_and_closed_at_as_of() -> None:
    purchases = {
        "x": [
            (AS_OF - 30 * DAY, Decimal(7)),  # exactly at the window start: out
            (AS_OF - 30 * DAY + timedelta(seconds=1), Decimal(5)),  # in
            (AS_OF, Decimal(3)),  # at as_of: in
        ]
    }
    (x,) = rfm(purchases, as_of=AS_OF, window=30 * DAY).values()
    assert (x.recency_days, x.frequency, x.monetary) == (0, 2, Decimal(8))


def test_rfm_recency_is_floored_to_whole_days() -> None:
    purchases = {"x": [(AS_OF - timedelta(days=1, hours=23), Decimal(1))]}
    assert rfm(purchases, as_of=AS_OF, window=30 * DAY)["x"].recency_days == 1


def test_rfm_refuses_a_naive_as_of_and_an_empty_window() -> None:
    with pytest.raises(ValueError, match=r"^as_of: "):
        rfm({}, as_of=datetime(2024, 1, 1), window=DAY)
    with pytest.raises(ValueError, match=r"^window: "):
        rfm({}, as_of=AS_OF, window=timedelta(0))


# ---------------------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------------------


def stage(
    orders: int,
    days_since: float | None,
    gap_days: float | None = None,
    *,
    promoter: bool = False,
) -> LifecycleStage:
    result, _ = lifecycle_stage(
        orders=orders,
        last_order_at=None if days_since is None else AS_OF - days_since * DAY,
        usual_gap=None if gap_days is None else gap_days * DAY,
        as_of=AS_OF,
        promoter=promoter,
    )
    return result


def test_no_orders_is_a_prospect() -> None:
    assert lifecycle_stage(
        orders=0, last_order_at=None, usual_gap=None, as_of=AS_OF, promoter=True
    ) == (LifecycleStage.PROSPECT, "prospect: no order yet")


def test_one_recent_order_is_a_first_time_customer() -> None:
    assert stage(1, 10) is LifecycleStage.FIRST_TIME


def test_two_to_four_orders_is_a_repeat_customer() -> None:
    assert stage(2, 10, 20) is LifecycleStage.REPEAT
    assert stage(4, 10, 20) is LifecycleStage.REPEAT


def test_five_orders_is_a_client() -> None:
    assert stage(5, 10, 20) is LifecycleStage.CLIENT


def test_client_orders_is_configurable() -> None:
    result, _ = lifecycle_stage(
        orders=3,
        last_order_at=AS_OF - DAY,
        usual_gap=10 * DAY,
        as_of=AS_OF,
        promoter=False,
        client_orders=3,
    )
    assert result is LifecycleStage.CLIENT


def test_a_promoter_with_two_orders_is_an_advocate() -> None:
    assert stage(2, 10, 20, promoter=True) is LifecycleStage.ADVOCATE
    assert stage(9, 10, 20, promoter=True) is LifecycleStage.ADVOCATE


def test_a_promoter_with_one_order_is_still_first_time() -> None:
    assert stage(1, 10, promoter=True) is LifecycleStage.FIRST_TIME


def test_lapsed_beyond_three_usual_gaps() -> None:
    # usual gap 20 days: threshold max(3 x 20, 30) = 60 days, strictly beyond
    assert stage(3, 61, 20) is LifecycleStage.LAPSED
    assert stage(3, 60, 20) is LifecycleStage.REPEAT


def test_lapse_threshold_has_a_floor_for_very_frequent_buyers() -> None:
    # usual gap 1 day: max(3, 30) = 30 days
    assert stage(6, 10, 1) is LifecycleStage.CLIENT
    assert stage(6, 31, 1) is LifecycleStage.LAPSED


def test_anyone_lapses_after_a_year_without_an_order() -> None:
    assert stage(1, 366) is LifecycleStage.LAPSED
    assert stage(1, 365) is LifecycleStage.FIRST_TIME
    # a slow buyer: 3 x 200 = 600 days, but the year applies first
    assert stage(4, 400, 200) is LifecycleStage.LAPSED


def test_lapsing_comes_before_advocacy() -> None:
    assert stage(8, 200, 10, promoter=True) is LifecycleStage.LAPSED


def test_the_rule_that_decided_is_given_in_words() -> None:
    _, rule = lifecycle_stage(
        orders=3,
        last_order_at=AS_OF - 61 * DAY,
        usual_gap=20 * DAY,
        as_of=AS_OF,
        promoter=False,
    )
    assert rule == (
        "lapsed: 61 days since the last order, beyond 60 days "
        "(max of 3 x usual gap 20 days and 30 days)"
    )
    _, rule = lifecycle_stage(
        orders=5, last_order_at=AS_OF - DAY, usual_gap=10 * DAY, as_of=AS_OF, promoter=False
    )
    assert rule == "client: 5 orders, at least 5"


def test_orders_without_a_last_order_time_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^last_order_at: "):
        lifecycle_stage(orders=2, last_order_at=None, usual_gap=None, as_of=AS_OF, promoter=False)


def test_negative_orders_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^orders: "):
        lifecycle_stage(orders=-1, last_order_at=None, usual_gap=None, as_of=AS_OF, promoter=False)


# ---------------------------------------------------------------------------------------
# Usual gap
# ---------------------------------------------------------------------------------------


def test_usual_gap_needs_two_orders() -> None:
    assert usual_gap([]) is None
    assert usual_gap([AS_OF]) is None


def test_usual_gap_is_the_median_gap_in_time_order() -> None:
    # sorted: 0, 10, 12, 40 days -> gaps 10, 2, 28 -> median 10 days
    times = [AS_OF + 12 * DAY, AS_OF, AS_OF + 40 * DAY, AS_OF + 10 * DAY]
    assert usual_gap(times) == 10 * DAY


def test_usual_gap_of_an_even_number_of_gaps_averages_the_middle_two() -> None:
    # gaps 4, 6, 10, 30 days -> (6 + 10) / 2 = 8 days
    times = [AS_OF + d * DAY for d in (0, 4, 10, 20, 50)]
    assert usual_gap(times) == 8 * DAY


def test_two_orders_have_their_one_gap() -> None:
    assert usual_gap([AS_OF, AS_OF + timedelta(hours=36)]) == timedelta(hours=36)


# ---------------------------------------------------------------------------------------
# Share of wallet
# ---------------------------------------------------------------------------------------


def test_share_of_wallet_is_our_spend_over_the_declared_category_total() -> None:
    assert share_of_wallet(Decimal("300.00"), Decimal("1200.00")) == Decimal("0.25")


@pytest.mark.parametrize("total", [Decimal(0), Decimal(-5)])
def test_share_of_wallet_is_undefined_without_a_positive_total(total: Decimal) -> None:
    assert share_of_wallet(Decimal(10), total) is None


def test_share_of_wallet_above_1_is_kept_unless_capped() -> None:
    assert share_of_wallet(Decimal(150), Decimal(100)) == Decimal("1.5")
    assert share_of_wallet(Decimal(150), Decimal(100), cap_at_one=True) == Decimal(1)
