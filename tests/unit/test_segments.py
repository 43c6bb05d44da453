from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from domain.segments import (
    FIELDS,
    MAX_DEPTH,
    OPERATORS,
    InvalidRule,
    check_rule,
    field_kind,
    matches,
)

DOC: dict[str, Any] = {
    "value_tier": "vip",
    "orders": 7,
    "total_spend": 1250.5,
    "nps_category": "detractor",
    "traits": {"region": "north", "age_band": "30-39", "tags": ["b2b", "fleet"]},
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
        ({"field": "traits.tags", "op": "contains", "value": "fleet"}, True),
        ({"field": "value_tier", "op": "contains", "value": "vi"}, True),
        ({"field": "first_seen", "op": "gt", "value": "2025-01-02T11:00:00+02:00"}, True),
        ({"field": "first_seen", "op": "eq", "value": "2025-01-02T12:00:00+02:00"}, True),
        ({"field": "first_seen", "op": "ne", "value": "2025-01-02T10:00:00Z"}, False),
        ({"field": "first_seen", "op": "in", "value": ["2025-01-02T10:00:00+00:00"]}, True),
        ({"field": "traits.region", "op": "gt", "value": 3}, False),  # text vs number
        ({"field": "traits.region", "op": "contains", "value": 1}, False),  # text vs number
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
        ({"all": [{"field": "orders", "op": "like", "value": 1}]}, "rule.all.0.op"),
        ({"any": [{"op": "eq", "value": 1}]}, "rule.any.0.field"),
        ({"field": "lifecycle", "op": "in", "value": "vip"}, "rule.value"),
        ({"field": "lifecycle", "op": "eq"}, "rule.value"),
        ({"field": "lifecycle", "op": "exists", "value": "yes"}, "rule.value"),
        ({"not": {"field": "orders", "op": "eq", "value": 1}, "all": []}, "rule"),
        ({"field": "orders", "op": "eq", "value": 1, "weight": 2}, "rule"),
        # The rule: a list where contains takes one value.
        ({"field": "traits.x", "op": "contains", "value": [1]}, "rule.value"),
        ({"field": "tags", "op": "eq", "value": 1}, "rule.field"),
        ({"field": "traits", "op": "exists", "value": True}, "rule.field"),
        ({"field": "traits.a.b", "op": "eq", "value": 1}, "rule.field"),
        ({"field": "traits.\x00", "op": "eq", "value": 1}, "rule.field"),
        ({"field": "traits.x", "op": "eq", "value": None}, "rule.value"),
        ({"field": "traits.x", "op": "eq", "value": {"a": 1}}, "rule.value"),
        ({"field": "traits.x", "op": "eq", "value": "a\x00b"}, "rule.value"),
        ({"field": "traits.x", "op": "eq", "value": "\ud800"}, "rule.value"),
        ({"field": "traits.x", "op": "eq", "value": "x" * 257}, "rule.value"),
        ({"field": "traits.x", "op": "eq", "value": float("nan")}, "rule.value"),
        ({"field": "traits.x", "op": "in", "value": []}, "rule.value"),
        ({"field": "traits.x", "op": "in", "value": [1, [2]]}, "rule.value.1"),
        ({"field": "traits.x", "op": "in", "value": list(range(1001))}, "rule.value"),
        ({"field": "orders", "op": "gt", "value": "NaN"}, "rule.value"),
        ({"field": "orders", "op": "gt", "value": True}, "rule.value"),
        ({"field": "orders", "op": "eq", "value": "7"}, "rule.value"),
        ({"field": "orders", "op": "contains", "value": 7}, "rule.op"),
        ({"field": "first_seen", "op": "lt", "value": "2025-06-01T00:00:00"}, "rule.value"),
        ({"field": "first_seen", "op": "lt", "value": 1700000000}, "rule.value"),
        ({"field": "value_tier", "op": "gt", "value": 3}, "rule.op"),
        ({"field": "lifecycle", "op": "eq", "value": 3}, "rule.value"),
        ({"field": "traits.x", "op": "gt", "value": "b"}, "rule.value"),
    ],
)
def test_a_wrong_rule_is_refused_naming_where(rule: Any, path: str) -> None:
    with pytest.raises(InvalidRule) as refusal:
        check_rule(rule)
    assert refusal.value.path == path


def _nested(depth: int) -> dict[str, Any]:
    rule: dict[str, Any] = {"field": "orders", "op": "gt", "value": 1}
    for _ in range(depth - 1):
        rule = {"not": rule}
    return rule


def test_rules_nest_a_bounded_depth_and_size() -> None:
    check_rule(_nested(MAX_DEPTH))
    with pytest.raises(InvalidRule) as deep:
        check_rule(_nested(10_000))  # refused before the stack is exhausted
    assert deep.value.path == "rule" + ".not" * MAX_DEPTH
    wide = {"any": [{"field": "orders", "op": "gt", "value": i} for i in range(500)]}
    with pytest.raises(InvalidRule, match="at most"):
        check_rule(wide)


@pytest.mark.parametrize(
    "found",
    [[1, 2], {"a": 1}, None, 3, "3", "NaN", "sNaN", "Infinity", "1e999999", "", True, 1e308],
)
@pytest.mark.parametrize(
    "rule",
    [
        {"field": "traits.x", "op": "gt", "value": 2},
        {"field": "traits.x", "op": "lte", "value": "2025-01-01T00:00:00+00:00"},
        {"field": "traits.x", "op": "contains", "value": "a"},
        {"field": "traits.x", "op": "contains", "value": 1},
        {"field": "traits.x", "op": "in", "value": [1, "a", True]},
        {"field": "traits.x", "op": "eq", "value": 1},
        {"field": "orders", "op": "gte", "value": "1.5"},
        {"field": "first_seen", "op": "gt", "value": "0001-01-01T00:00:00+14:00"},
    ],
)
def test_a_value_of_an_unexpected_type_does_not_match_and_never_raises(
    rule: dict[str, Any], found: Any
) -> None:
    """Today a trait such as "NaN" raised InvalidOperation under gt, and a text under
    contains 1 raised TypeError; both stopped the evaluation of every segment."""
    check_rule(rule)
    document = {"orders": found, "first_seen": found, "traits": {"x": found}}
    assert matches(rule, document) in (True, False)


def test_true_is_not_one() -> None:
    assert not matches({"field": "traits.x", "op": "eq", "value": 1}, {"traits": {"x": True}})
    assert matches({"field": "traits.x", "op": "eq", "value": 1}, {"traits": {"x": 1.0}})


# Random JSON: what a source may put in traits, and what a client may send as a rule.
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["NaN", "1e9999", "2025-01-01T00:00:00+00:00", "0001-01-01T00:00:00-23:59"])
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
# Half the conditions on the document's maps, where sources put anything.
_known_fields = st.sampled_from(list(FIELDS)) | st.sampled_from(
    ["traits.region", "traits.x", "counts_by_channel.web", "counts_by_type.visit"]
)
_kind_values: dict[str, st.SearchStrategy[Any]] = {
    "number": st.integers(-100, 100) | st.floats(-1e6, 1e6) | st.sampled_from(["1.5", "-0"]),
    "text": st.text(max_size=8),
    "time": st.sampled_from(
        ["2025-01-01T00:00:00+00:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]
    ),
}
_kind_values["any"] = st.one_of(*_kind_values.values(), st.booleans())


@st.composite
def _well_formed(draw: st.DrawFn) -> dict[str, Any]:
    """A condition with a value of its field's kind (mostly accepted)."""
    field = draw(_known_fields)
    op = draw(st.sampled_from(OPERATORS))
    values = _kind_values[field_kind(field) or "any"]
    if op == "exists":
        value: Any = draw(st.booleans())
    elif op in ("in", "not_in"):
        value = draw(st.lists(values, min_size=1, max_size=4))
    else:
        value = draw(values)
    return {"field": field, "op": op, "value": value}


# Mostly well-formed conditions (so that many rules pass and get evaluated), some with a
# random field, operator or shape (so that refusals are exercised too).
_conditions = st.one_of(
    _well_formed(),
    _well_formed(),
    _well_formed(),
    st.fixed_dictionaries(
        {
            "field": _known_fields | st.text(max_size=12),
            "op": st.sampled_from(OPERATORS) | st.text(max_size=4),
            "value": _json,
        }
    ),
    st.dictionaries(st.sampled_from(["field", "op", "value", "x"]), _json, max_size=4),
)
_shaped_rules = st.recursive(
    _conditions,
    lambda inner: (
        st.builds(lambda r: {"not": r}, inner)
        | st.builds(lambda rs: {"all": rs}, st.lists(inner, min_size=1, max_size=3))
        | st.builds(lambda rs: {"any": rs}, st.lists(inner, max_size=3))
    ),
    max_leaves=8,
)
_rules = st.one_of(_shaped_rules, _shaped_rules, _shaped_rules, _json)
_documents = st.fixed_dictionaries(
    {
        # The keys rules name are usually there, holding any JSON value.
        "traits": st.fixed_dictionaries({"region": _json, "x": _json}) | _json,
        "counts_by_channel": st.fixed_dictionaries({"web": _json}) | _json,
    },
    optional={
        **{name: _json for name in FIELDS},
        "counts_by_type": st.fixed_dictionaries({"visit": _json}) | _json,
    },
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
# The findings of issue 8, each of which stopped the evaluation of every segment.
@example({"field": "traits.x", "op": "contains", "value": [1]}, [{"traits": {"x": "abc"}}])
@example({"field": "traits.x", "op": "contains", "value": 1}, [{"traits": {"x": "abc"}}])
@example({"field": "traits.x", "op": "gt", "value": 1}, [{"traits": {"x": "NaN"}}])
@example({"field": "orders", "op": "gt", "value": "NaN"}, [{"orders": 1}])
@given(_rules, st.lists(_documents, min_size=1, max_size=4))
def test_every_accepted_rule_evaluates_on_any_document(rule: Any, documents: list[Any]) -> None:
    """Either the rule is refused, naming where, or it evaluates on every document and can
    be stored as jsonb (no NaN, no NUL, no lone surrogate)."""
    try:
        check_rule(rule)
    except InvalidRule as refusal:
        assert refusal.path == "rule" or refusal.path.startswith("rule.")
        assert refusal.message
        return
    stored = json.dumps(rule, allow_nan=False)
    assert "\\u0000" not in stored
    stored.encode("utf-8")
    for document in documents:
        assert matches(rule, document) in (True, False)
