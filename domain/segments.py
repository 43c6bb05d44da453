"""Segments: declarative rules over a customer's profile and measures (DOMAIN.md §12).

A rule is JSON. A condition names a field (a dotted path into the customer's segment
document: ``value_tier``, ``rfm_segment``, ``loyalty_status``, ``lifecycle``,
``traits.region``, ``counts_by_channel.web``...), an operator and a value; conditions
combine with ``all``, ``any`` and ``not``:

    {"all": [{"field": "value_tier", "op": "in", "value": ["vip", "major"]},
             {"field": "nps_category", "op": "eq", "value": "detractor"},
             {"not": {"field": "traits.region", "op": "eq", "value": "north"}}]}

Operators: eq, ne, in, not_in, gt, gte, lt, lte (numbers, or ISO timestamps as strings),
exists, contains (a list or a string holds the value). A missing field matches nothing
but ``not`` and ``exists: false``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

OPERATORS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "contains")
NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,62}$")
_MISSING = object()


class InvalidRule(ValueError):
    """A rule that cannot be evaluated; ``path`` says where in the rule."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path, self.message = path, message


def check_rule(rule: Any, path: str = "rule") -> None:
    """Raise ``InvalidRule`` naming the first wrong part of ``rule``."""
    if not isinstance(rule, Mapping):
        raise InvalidRule(path, "a condition object, or all / any / not")
    combinators = {"all", "any", "not"} & rule.keys()
    if combinators:
        if len(rule) != 1:
            raise InvalidRule(path, f"{', '.join(sorted(combinators))} stands alone in its object")
        ((key, inner),) = rule.items()
        if key == "not":
            check_rule(inner, f"{path}.not")
            return
        if not isinstance(inner, list) or not inner:
            raise InvalidRule(f"{path}.{key}", "a non-empty list of rules")
        for i, item in enumerate(inner):
            check_rule(item, f"{path}.{key}.{i}")
        return
    unknown = rule.keys() - {"field", "op", "value"}
    if unknown:
        raise InvalidRule(path, f"unknown keys {', '.join(sorted(unknown))}")
    if not isinstance(rule.get("field"), str) or not rule["field"]:
        raise InvalidRule(f"{path}.field", "a dotted path such as value_tier or traits.region")
    if rule.get("op") not in OPERATORS:
        raise InvalidRule(f"{path}.op", f"one of {', '.join(OPERATORS)}")
    if "value" not in rule:
        raise InvalidRule(f"{path}.value", "required")
    op, value = rule["op"], rule["value"]
    if op in ("in", "not_in") and not isinstance(value, list):
        raise InvalidRule(f"{path}.value", f"{op} takes a list")
    if op == "exists" and not isinstance(value, bool):
        raise InvalidRule(f"{path}.value", "exists takes true or false")


def lookup(document: Mapping[str, Any], field: str) -> Any:
    node: Any = document
    for part in field.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _ordered(left: Any, right: Any) -> tuple[Any, Any] | None:
    """Both sides as comparable values: numbers (Decimal) or strings; None if neither."""
    if isinstance(left, bool) or isinstance(right, bool):
        return None
    try:
        return Decimal(str(left)), Decimal(str(right))
    except InvalidOperation:
        pass
    if isinstance(left, str) and isinstance(right, str):
        return left, right
    return None


def matches(rule: Mapping[str, Any], document: Mapping[str, Any]) -> bool:
    """Whether a customer's segment document satisfies ``rule`` (checked beforehand)."""
    if "all" in rule:
        return all(matches(r, document) for r in rule["all"])
    if "any" in rule:
        return any(matches(r, document) for r in rule["any"])
    if "not" in rule:
        return not matches(rule["not"], document)
    found = lookup(document, rule["field"])
    op, value = rule["op"], rule["value"]
    if op == "exists":
        return bool((found is not _MISSING and found is not None) == value)
    if found is _MISSING or found is None:
        return False
    if op == "eq":
        return bool(found == value)
    if op == "ne":
        return bool(found != value)
    if op == "in":
        return bool(found in value)
    if op == "not_in":
        return bool(found not in value)
    if op == "contains":
        return isinstance(found, list | str) and value in found
    pair = _ordered(found, value)
    if pair is None:
        return False
    left, right = pair
    return bool(
        {"gt": left > right, "gte": left >= right, "lt": left < right, "lte": left <= right}[op]
    )


def membership_changes(before: set[str], after: set[str]) -> tuple[set[str], set[str]]:
    """(entered, left): who joined the segment and who dropped out since ``before``."""
    return after - before, before - after
