"""Segments: declarative rules over a customer's profile and measures (DOMAIN.md §12).

A rule is JSON. A condition names a field (a dotted path into the customer's segment
document: ``value_tier``, ``rfm_segment``, ``loyalty_status``, ``lifecycle``,
``traits.region``, ``counts_by_channel.web``...), an operator and a value; conditions
combine with ``all``, ``any`` and ``not``:

    {"all": [{"field": "value_tier", "op": "in", "value": ["vip", "major"]},
             {"field": "nps_category", "op": "eq", "value": "detractor"},
             {"not": {"field": "traits.region", "op": "eq", "value": "north"}}]}

Operators: eq, ne, in, not_in, gt, gte, lt, lte (numbers, or ISO timestamps with an
offset), exists, contains (a list holds the value, or a text holds the text). A missing
field matches nothing but ``not`` and ``exists: false``.

The contract: ``check_rule`` accepts only rules that ``matches`` can evaluate on *any*
document without raising (tests/unit/test_segments.py proves it with random rules on
random documents). Each field has a kind (text, number, time, or any for traits) and
each operator takes values of that kind; a document value of another type than expected
(a trait that is a list, a number where text was expected, null) simply does not match.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from eventsourcing.domain import Aggregate

OPERATORS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "contains")
ORDERING = ("gt", "gte", "lt", "lte")
NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,62}$")

Kind = Literal["text", "number", "time", "any"]

# The segment document's fields (api/segments.py builds it) and what each holds.
FIELDS: dict[str, Kind] = {
    "customer_id": "text",
    "value_tier": "text",
    "rfm_segment": "text",
    "lifecycle": "text",
    "loyalty_status": "text",
    "nps_category": "text",
    "first_seen": "time",
    "last_seen": "time",
    "touchpoints_total": "number",
    "total_spend": "number",
    "orders": "number",
    "open_complaints": "number",
    "value_in_window": "number",
    "r": "number",
    "f": "number",
    "m": "number",
    "nps": "number",
    "csat": "number",
}
# Maps in the document, addressed as ``<map>.<key>``.
MAPS: dict[str, Kind] = {"traits": "any", "counts_by_channel": "number", "counts_by_type": "number"}
# A key as sources name traits and channels: word characters and dashes, no dot (the
# path separator), no control or invisible characters.
KEY = re.compile(r"^\w[\w\-]{0,63}$")

# Limits that keep one rule cheap to check, store and evaluate on every customer.
MAX_DEPTH = 8
MAX_NODES = 200
MAX_LIST = 1000
MAX_TEXT = 256

_MISSING = object()


class InvalidRule(ValueError):
    """A rule that cannot be evaluated; ``path`` says where in the rule."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path, self.message = path, message


def field_kind(field: str) -> Kind | None:
    """The kind of value ``field`` holds, or None when it names no field of the document."""
    if field in FIELDS:
        return FIELDS[field]
    head, dot, key = field.partition(".")
    if dot and head in MAPS and KEY.fullmatch(key):
        return MAPS[head]
    return None


def check_rule(rule: Any, path: str = "rule") -> None:
    """Raise ``InvalidRule`` naming the first wrong part of ``rule``."""
    _check(rule, path, depth=1, budget=[MAX_NODES])


def _check(rule: Any, path: str, *, depth: int, budget: list[int]) -> None:
    # Depth is checked before descending, so a hostile rule cannot exhaust the stack.
    if depth > MAX_DEPTH:
        raise InvalidRule(path, f"rules nest at most {MAX_DEPTH} levels deep")
    budget[0] -= 1
    if budget[0] < 0:
        raise InvalidRule(path, f"a rule holds at most {MAX_NODES} conditions and combinators")
    if not isinstance(rule, Mapping):
        raise InvalidRule(path, "a condition object, or all / any / not")
    combinators = {"all", "any", "not"} & rule.keys()
    if combinators:
        if len(rule) != 1:
            raise InvalidRule(path, f"{', '.join(sorted(combinators))} stands alone in its object")
        ((key, inner),) = rule.items()
        if key == "not":
            _check(inner, f"{path}.not", depth=depth + 1, budget=budget)
            return
        if not isinstance(inner, list) or not inner:
            raise InvalidRule(f"{path}.{key}", "a non-empty list of rules")
        for i, item in enumerate(inner):
            _check(item, f"{path}.{key}.{i}", depth=depth + 1, budget=budget)
        return
    unknown = [k for k in rule if k not in ("field", "op", "value")]
    if unknown:
        shown = ", ".join(sorted(repr(_printable(str(k))) for k in unknown))
        raise InvalidRule(path, f"unknown keys {shown}: a condition has field, op and value")
    _check_condition(rule, path)


def _check_condition(rule: Mapping[str, Any], path: str) -> None:
    field = rule.get("field")
    if not isinstance(field, str) or not field:
        raise InvalidRule(f"{path}.field", "a dotted path such as value_tier or traits.region")
    kind = field_kind(field)
    if kind is None:
        raise InvalidRule(
            f"{path}.field",
            f"{_printable(field)!r} is not a field of the segment document: one of "
            f"{', '.join(FIELDS)}, or traits.<key>, counts_by_channel.<key>, "
            "counts_by_type.<key> with a key of letters, digits, _ and -",
        )
    op = rule.get("op")
    if op not in OPERATORS:
        raise InvalidRule(f"{path}.op", f"one of {', '.join(OPERATORS)}")
    if "value" not in rule:
        raise InvalidRule(f"{path}.value", "required")
    value, where = rule["value"], f"{path}.value"
    if op == "exists":
        if not isinstance(value, bool):
            raise InvalidRule(where, "exists takes true or false")
    elif op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise InvalidRule(where, f"{op} takes a non-empty list of values")
        if len(value) > MAX_LIST:
            raise InvalidRule(where, f"{op} takes at most {MAX_LIST} values")
        for i, item in enumerate(value):
            _check_scalar(item, kind, field, f"{where}.{i}")
    elif op == "contains":
        if kind not in ("text", "any"):
            raise InvalidRule(f"{path}.op", f"{field} is a {kind}: contains needs a text or list")
        if kind == "text" and not isinstance(value, str):
            raise InvalidRule(where, f"{field} is text: contains takes a text")
        _check_scalar(value, "any", field, where)
    elif op in ORDERING:
        if kind == "text":
            raise InvalidRule(f"{path}.op", f"{field} is text: {op} compares numbers or times")
        if _ordering_key(value, kind) is None:
            wanted = {
                "number": "a number",
                "time": "an ISO-8601 time with an offset (2025-06-01T00:00:00+00:00)",
                "any": "a number or an ISO-8601 time with an offset",
            }[kind]
            raise InvalidRule(where, f"{op} on {field} takes {wanted}")
    else:
        _check_scalar(value, kind, field, where)


def _check_scalar(value: Any, kind: Kind, field: str, where: str) -> None:
    """A value an equality can test: text, a finite number or a boolean, of the field's kind."""
    if isinstance(value, str):
        _check_text(value, where)
        if kind == "number":
            raise InvalidRule(where, f"{field} is a number: compare it with a number")
        if kind == "time" and _time(value) is None:
            raise InvalidRule(where, f"{field} is a time: an ISO-8601 time with an offset")
    elif isinstance(value, bool):
        if kind != "any":
            raise InvalidRule(where, f"{field} holds a {kind}, never true or false")
    elif isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidRule(where, "a finite number")
        if kind in ("text", "time"):
            raise InvalidRule(where, f"{field} is a {kind}: compare it with a text")
    else:
        raise InvalidRule(where, "a text, a number or true/false (null, lists, objects: no)")


def _check_text(text: str, where: str) -> None:
    if len(text) > MAX_TEXT:
        raise InvalidRule(where, f"at most {MAX_TEXT} characters")
    if "\x00" in text:
        raise InvalidRule(where, "a NUL character cannot be stored")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRule(where, "not valid Unicode text (a lone surrogate)") from None


def _printable(text: str) -> str:
    """``text`` safe to quote in an error (no NUL, no lone surrogate), shortened."""
    return text[:64].encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _time(text: Any) -> Decimal | None:
    """``text`` as an instant, in microseconds since 0001-01-01 UTC, when it is an ISO-8601
    time with an offset; None otherwise. Plain arithmetic, so instants near the ends of
    the calendar compare without overflowing a datetime."""
    if not isinstance(text, str) or not 10 <= len(text) <= 64:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    offset = at.utcoffset()
    if offset is None:
        return None
    local = (at.toordinal() * 86_400 + at.hour * 3600 + at.minute * 60 + at.second) * 10**6
    return Decimal(local + at.microsecond - offset // timedelta(microseconds=1))


def _number(value: Any) -> Decimal | None:
    """``value`` as a finite Decimal: a JSON number, or a decimal text (money is text)."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float):
            number = Decimal(value)
        elif isinstance(value, str) and len(value) <= 64:
            number = Decimal(value.strip())
        else:
            return None
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _ordering_key(value: Any, kind: Kind) -> tuple[str, Decimal] | None:
    """A rule's comparison value, tagged with what it compares: a number or a time."""
    if kind in ("time", "any") and (at := _time(value)) is not None:
        return ("time", at)
    if kind in ("number", "any") and (number := _number(value)) is not None:
        return ("number", number)
    return None


def _same(left: Any, right: Any) -> bool:
    """JSON equality: true is not 1, 1 is 1.0; never raises on JSON values (nor on the
    finite Decimals that stand for times)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if isinstance(left, int | float | Decimal) and isinstance(right, int | float | Decimal):
        return bool(left == right)
    return type(left) is type(right) and isinstance(left, str) and left == right


def lookup(document: Mapping[str, Any], field: str) -> Any:
    node: Any = document
    for part in field.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


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
        return (found is not _MISSING and found is not None) is value
    if found is _MISSING or found is None:
        return False
    if field_kind(rule["field"]) == "time" and op in ("eq", "ne", "in", "not_in"):
        # Times are equal as instants, whatever their offset or precision.
        found = _time(found)
        if found is None:
            return op in ("ne", "not_in")
        value = [_time(v) for v in value] if isinstance(value, list) else _time(value)
    if op == "eq":
        return _same(found, value)
    if op == "ne":
        return not _same(found, value)
    if op == "in":
        return any(_same(found, v) for v in value)
    if op == "not_in":
        return not any(_same(found, v) for v in value)
    if op == "contains":
        if isinstance(found, list):
            return any(_same(item, value) for item in found)
        return isinstance(found, str) and isinstance(value, str) and value in found
    wanted = _ordering_key(value, field_kind(rule["field"]) or "any")
    if wanted is None:
        return False
    what, right = wanted
    left = _time(found) if what == "time" else _number(found)
    if left is None:
        return False
    # Both sides are finite Decimals here (NaN was refused): comparisons cannot raise.
    if op == "gt":
        return left > right
    if op == "gte":
        return left >= right
    if op == "lt":
        return left < right
    return left <= right


# Fixed namespace: a segment's stream is named after the segment.
SEGMENT_NAMESPACE = uuid.UUID("0c5b7a4e-2f1d-4e8b-9a6c-3d2e1f0a9b87")


def segment_aggregate_id(name: str) -> uuid.UUID:
    """The event-store stream of a segment name."""
    return uuid.uuid5(SEGMENT_NAMESPACE, f"segment:{name}")


class SegmentRemoved(ValueError):
    """The segment was deleted: there is nothing to delete."""


class Segment(Aggregate):
    """A segment's definition, versioned: every definition and deletion is an event, so
    a replay evaluates each customer against the rules that held at each point of the
    log. Membership is derived (``projections.maintained``), never stored here."""

    class Defined(Aggregate.Created):
        """A segment was defined: its name, its rule (``check_rule`` accepted it) and a
        description."""

        class_version = 1

        name: str
        rule: dict[str, Any]
        description: str | None

    class Redefined(Aggregate.Event):
        """A new rule (and description) replaced the segment's, or defined it again after
        it was deleted."""

        class_version = 1

        rule: dict[str, Any]
        description: str | None

        def apply(self, aggregate: Segment) -> None:
            aggregate.rule, aggregate.description = self.rule, self.description
            aggregate.deleted = False

    class Deleted(Aggregate.Event):
        """The segment was deleted: its members leave it."""

        class_version = 1

        def apply(self, aggregate: Segment) -> None:
            aggregate.deleted = True

    def __init__(self, name: str, rule: dict[str, Any], description: str | None) -> None:
        self.name, self.rule, self.description = name, rule, description
        self.deleted = False

    @classmethod
    def define(cls, name: str, rule: dict[str, Any], description: str | None) -> Segment:
        if not NAME.fullmatch(name):
            raise InvalidRule("name", "lower-case letters, digits, _ and -, at most 63")
        check_rule(rule)
        return cls._create(
            cls.Defined,
            id=segment_aggregate_id(name),
            name=name,
            rule=dict(rule),
            description=description,
        )

    def redefine(self, rule: dict[str, Any], description: str | None) -> None:
        check_rule(rule)
        self.trigger_event(self.Redefined, rule=dict(rule), description=description)

    def delete(self) -> None:
        if self.deleted:
            raise SegmentRemoved(f"segment {self.name!r} is already deleted")
        self.trigger_event(self.Deleted)
