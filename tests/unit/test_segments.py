from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.segments import InvalidRule, check_rule, matches, membership_changes

DOC: dict[str, Any] = {
    "value_tier": "vip",
    "orders": 7,
    "total_spend": 1250.5,
    "nps_category": "detractor",
    "traits": {"region": "north", "age_band": "30-39"},
    "rfm_segment": None,
    "first_seen": "2025-01-02T10:00:00.000000+00:00",
    "tags": ["b2b", "fleet"],
}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"field": "value_tier", "op": "eq", "value": "vip"}, True),
        ({"field": "value_tier", "op": "ne", "value": "vip"}, False),
        ({"field": "value_tier", "op": "in", "value": ["vip", "major"]}, True),
        ({"field": "value_tier", "op": "not_in", "value": ["vip"]}, False),
        ({"field": "orders", "op": "gte", "value": 7}, True),
        ({"field": "orders", "op": "gt", "value": 7}, False),
        ({"field": "total_spend", "op": "lt", "value": "1250.51"}, True),
        ({"field": "first_seen", "op": "lt", "value": "2025-06-01T00:00:00.000000+00:00"}, True),
        ({"field": "traits.region", "op": "eq", "value": "north"}, True),
        ({"field": "traits.household", "op": "eq", "value": 2}, False),
        ({"field": "traits.household", "op": "exists", "value": False}, True),
        ({"field": "rfm_segment", "op": "exists", "value": True}, False),
        ({"field": "tags", "op": "contains", "value": "fleet"}, True),
        ({"field": "value_tier", "op": "gt", "value": 3}, False),  # not comparable: no match
    ],
)
def test_a_condition_compares_one_field_of_the_segment_document(
    rule: dict[str, Any], expected: bool
) -> None:
    check_rule(rule)
    assert matches(rule, DOC) is expected


def test_all_any_and_not_combine_conditions() -> None:
    rule = {
        "all": [
            {"field": "value_tier", "op": "in", "value": ["vip", "major"]},
            {
                "any": [
                    {"field": "nps_category", "op": "eq", "value": "detractor"},
                    {"field": "orders", "op": "lt", "value": 2},
                ]
            },
            {"not": {"field": "traits.region", "op": "eq", "value": "south"}},
        ]
    }
    check_rule(rule)
    assert matches(rule, DOC)
    assert not matches(rule, {**DOC, "traits": {"region": "south"}})


@pytest.mark.parametrize(
    ("rule", "path"),
    [
        ([], "rule"),
        ({"all": []}, "rule.all"),
        ({"all": [{"field": "x", "op": "like", "value": 1}]}, "rule.all.0.op"),
        ({"any": [{"op": "eq", "value": 1}]}, "rule.any.0.field"),
        ({"field": "x", "op": "in", "value": "vip"}, "rule.value"),
        ({"field": "x", "op": "eq"}, "rule.value"),
        ({"field": "x", "op": "exists", "value": "yes"}, "rule.value"),
        ({"not": {"field": "x", "op": "eq", "value": 1}, "all": []}, "rule"),
        ({"field": "x", "op": "eq", "value": 1, "weight": 2}, "rule"),
    ],
)
def test_a_wrong_rule_is_refused_naming_where(rule: Any, path: str) -> None:
    with pytest.raises(InvalidRule) as refusal:
        check_rule(rule)
    assert refusal.value.path == path


@given(st.sets(st.integers(0, 30)), st.sets(st.integers(0, 30)))
def test_membership_changes_take_the_old_members_to_the_new(
    before: set[int], after: set[int]
) -> None:
    old, new = {str(c) for c in before}, {str(c) for c in after}
    entered, left = membership_changes(old, new)
    assert (old - left) | entered == new
    assert not entered & old and left <= old
