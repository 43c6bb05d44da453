"""The published contract is the enforced contract: every envelope the parser accepts
in the samples is valid by the published JSON Schema, and every body the schema allows
(generated from it) is accepted by the parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.touchpoints import (
    INSTANT_PATTERN,
    KNOWN_TYPES,
    InvalidTouchpoint,
    parse_touchpoint,
    touchpoint_schemas,
)
from tests.builders import T0, complaint, envelope, nested, purchase, survey_answer, with_payload

SCHEMAS = touchpoint_schemas()


def published(name: str = "TouchpointIn", defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """One self-contained schema document (``$defs`` holds the others)."""
    return {"$defs": defs if defs is not None else SCHEMAS, **SCHEMAS[name]}


VALIDATOR = jsonschema.Draft202012Validator(
    published(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)

SAMPLES: list[tuple[str, dict[str, Any]]] = [
    ("visit", envelope(None, T0, payload={"location": "Berlin", "duration_seconds": 600})),
    ("visit-bare", envelope()),
    (
        "visit-everything",
        envelope(
            "C1",
            "2024-05-01T10:00:00.123+02:00",
            journey={"id": "J-1", "type": "car_service", "step": "arrival"},
            emotion=-3,
            schema=1,
            additional={"store": {"no": 12, "tags": ["a", None, True, 1.5]}, "deep": nested(30)},
        ),
    ),
    (
        "call",
        envelope(None, T0, type="call", payload={"direction": "outbound", "wait_seconds": 30}),
    ),
    ("message", envelope(None, T0, type="message", payload={"subject": "Hello"})),
    ("purchase", purchase()),
    ("purchase-integer", purchase(None, 1500, currency="USD")),
    (
        "purchase-items",
        with_payload(purchase(), items=[{"sku": "A-1", "quantity": 3, "unit_price": "1.50"}]),
    ),
    (
        "delivery",
        envelope(
            None,
            T0,
            type="delivery",
            payload={"order_id": "O1", "promised_at": "2024-05-03T12:00:00Z", "on_time": True},
        ),
    ),
    (
        "service_appointment",
        envelope(None, T0, type="service_appointment", payload={"appointment_id": "A1"}),
    ),
    ("complaint_filed", complaint(None, "filed", severity="high", note="")),
    ("complaint_acknowledged", complaint(None, "acknowledged")),
    ("complaint_resolved", complaint(None, "resolved", compensation="20.00")),
    ("complaint_followed_up", complaint(None, "followed_up")),
    ("survey-nps", survey_answer(None, "nps", 0)),
    ("survey-csat", survey_answer(None, "csat", 5)),
    ("survey-ces", survey_answer(None, "ces", 7)),
    ("survey-importance", survey_answer(None, "importance", 10, attribute="speed")),
    ("survey-kano", survey_answer(None, "kano_functional", "like", feature="wifi")),
    ("survey-spend", survey_answer(None, "category_spend", "1200.50", currency="EUR")),
    ("consent_given", envelope(None, T0, type="consent_given", payload={"purpose": "marketing"})),
    (
        "consent_withdrawn",
        envelope(
            None,
            T0,
            type="consent_withdrawn",
            payload={
                "purpose": "profiling_v2",
                "policy_version": "2026-01",
                "method": "unsubscribe_link",
                "evidence_ref": "msg-77",
                "captured_by": "newsletter",
            },
        ),
    ),
    (
        # The e-mail and phone patterns are conservative (tests/unit/test_identifiers.py):
        # "Ann@Example.com" and "+49 (30) 123-456" are accepted, in the schema's own words
        # they are spelled as here.
        "identifiers",
        envelope(
            None,
            T0,
            customer={
                "email": "ann@example.com",
                "phone": "+49 30 123456",
                "loyalty_card": "L1",
                "device_id": "d",
                "crm_id": "c",
                "account_id": "a",
            },
        ),
    ),
]


def test_the_samples_cover_every_touchpoint_type() -> None:
    assert {raw["type"] for _, raw in SAMPLES} == set(KNOWN_TYPES)


@pytest.mark.parametrize("raw", [pytest.param(raw, id=name) for name, raw in SAMPLES])
def test_a_valid_envelope_of_every_type_is_valid_by_the_published_schema(
    raw: dict[str, Any],
) -> None:
    parse_touchpoint(raw)  # accepted by the parser...
    VALIDATOR.validate(raw)  # ...and by the schema


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(envelope(None, T0, type="teleport"), id="unknown-type"),
        pytest.param(purchase(None, 10.5), id="float-amount"),
        pytest.param(purchase(None, "1_000"), id="underscore-amount"),
        pytest.param(purchase(None, "-0"), id="negative-zero"),
        pytest.param(purchase(currency="ABC"), id="not-iso-4217"),
        pytest.param(envelope(None, "19970101"), id="digit-timestamp"),
        pytest.param(envelope(None, "0001-01-01T00:30:00+01:00"), id="year-1"),
        pytest.param(envelope(".."), id="dot-dot-id"),
        pytest.param(envelope("a/b"), id="slash-id"),
        pytest.param(envelope("C\u200b1"), id="zero-width-id"),
        pytest.param(survey_answer(None, "nps", 11), id="nps-11"),
        pytest.param(survey_answer(None, "kano_functional", "like"), id="kano-without-feature"),
        pytest.param(survey_answer(None, "importance", 5), id="importance-without-attribute"),
        pytest.param(survey_answer(None, "category_spend", "10"), id="spend-without-currency"),
        pytest.param(envelope(None, T0, customer={}), id="no-identifier"),
        pytest.param(envelope(None, T0, customer={"id": None}), id="null-identifier"),
        pytest.param(
            with_payload(purchase(), items=[{"sku": "A", "quantity": 10**30}]), id="quantity"
        ),
        pytest.param(envelope(None, T0, additional={"n\u0000": 1}), id="nul-key"),
        pytest.param(envelope(None, T0, type="consent_given"), id="consent-without-purpose"),
        pytest.param(
            envelope(None, T0, type="consent_given", payload={"purpose": "Marketing"}),
            id="upper-case-purpose",
        ),
        pytest.param(
            envelope(None, T0, type="consent_withdrawn", payload={"purpose": "a" * 41}),
            id="long-purpose",
        ),
        pytest.param(
            envelope(None, T0, type="consent_given", payload={"purpose": "x", "method": "fax"}),
            id="unknown-consent-method",
        ),
    ],
)
def test_what_the_parser_refuses_the_schema_refuses_too(raw: dict[str, Any]) -> None:
    with pytest.raises(InvalidTouchpoint):
        parse_touchpoint(raw)
    assert not VALIDATOR.is_valid(raw)


def test_the_published_schema_is_a_discriminated_one_of_with_each_payload() -> None:
    root = SCHEMAS["TouchpointIn"]
    assert root["discriminator"]["propertyName"] == "type"
    assert set(root["discriminator"]["mapping"]) == set(KNOWN_TYPES)
    purchase_variant = SCHEMAS["Touchpoint_purchase"]
    assert purchase_variant["properties"]["type"]["const"] == "purchase"
    assert purchase_variant["properties"]["payload"] == {"$ref": "#/$defs/PurchasePayload"}
    assert "payload" in purchase_variant["required"]


# -- generated bodies --------------------------------------------------------------------

# hypothesis-jsonschema 0.23 fails inside this Hypothesis version (and cannot follow the
# recursive AdditionalValue), so bodies are drawn by a small generator of the JSON Schema
# subset the published schema uses. What a static schema cannot say is fixed here, each
# part stated in the schema's descriptions: the parser gets a clock far ahead (the skew
# bound moves with the clock), instants are drawn in the years the pattern allows, and
# AdditionalValue is drawn a few levels deep (nesting has its own tests).
FAR_AHEAD = datetime(2101, 1, 1, tzinfo=UTC)
TEXT = st.characters(codec="utf-8")  # JSON text is Unicode: no lone surrogates

instants = st.builds(
    lambda moment, minutes, digits: moment.astimezone(
        timezone(timedelta(minutes=minutes))
    ).isoformat(timespec=digits),
    st.datetimes(
        min_value=datetime(1900, 1, 2), max_value=datetime(2099, 12, 30), timezones=st.just(UTC)
    ),
    st.integers(-(23 * 60 + 59), 23 * 60 + 59),
    st.sampled_from(["seconds", "milliseconds", "microseconds"]),
).map(lambda text: text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text)


def strategy(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values valid by ``schema`` (the subset of JSON Schema that SCHEMAS uses)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        if name == "AdditionalValue" and depth > 3:
            return st.none() | st.integers() | st.text(TEXT.filter(lambda c: c != "\x00"))
        return st.deferred(lambda: strategy(SCHEMAS[name], depth + 1))
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if schema.get("oneOf") and "properties" in schema:  # an object with variants: merge
        return st.sampled_from(schema["oneOf"]).flatmap(
            lambda variant: strategy(
                {
                    **schema,
                    "oneOf": None,
                    "properties": {**schema["properties"], **variant["properties"]},
                    "required": [*schema.get("required", []), *variant["required"]],
                },
                depth,
            )
        )
    for combinator in ("oneOf", "anyOf"):
        if schema.get(combinator) and "properties" not in schema:
            return st.one_of([strategy(option, depth) for option in schema[combinator]])
    kind = schema.get("type")
    if kind == "object":
        return objects(schema, depth)
    if kind == "array":
        return st.lists(strategy(schema["items"], depth + 1), max_size=3)
    if kind == "string":
        if schema.get("format") == "date-time":
            return instants
        text = (
            st.from_regex(schema["pattern"], fullmatch=True, alphabet=TEXT)
            if "pattern" in schema
            else st.text(TEXT)
        )
        low, high = schema.get("minLength", 0), schema.get("maxLength", 10**6)
        return text.filter(lambda value: low <= len(value) <= high)
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    raise AssertionError(f"no strategy for {schema}")


def objects(schema: dict[str, Any], depth: int) -> st.SearchStrategy[dict[str, Any]]:
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    fixed = st.fixed_dictionaries(
        {name: strategy(properties[name], depth) for name in sorted(required)},
        optional={
            name: strategy(sub, depth) for name, sub in properties.items() if name not in required
        },
    )
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):  # free-form: additional and its values
        keys = st.from_regex(schema["propertyNames"]["pattern"], fullmatch=True, alphabet=TEXT)
        extras = st.dictionaries(keys, strategy(extra, depth + 1), max_size=3)
        fixed = st.builds(lambda a, b: {**b, **a}, fixed, extras)
    if "anyOf" in schema:  # customer: at least one identifier, given as text
        fixed = fixed.filter(lambda value: any(isinstance(value.get(k), str) for k in properties))
    return fixed


# The generator approximates the schema; the published schema itself decides what is
# drawn (the few drafts it gets wrong are dropped).
@given(strategy(SCHEMAS["TouchpointIn"]).filter(VALIDATOR.is_valid))
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_body_the_published_schema_allows_is_accepted(body: dict[str, Any]) -> None:
    try:
        parse_touchpoint(body, now=FAR_AHEAD, max_future_skew=timedelta(0))
    except InvalidTouchpoint as refusal:
        pytest.fail(f"valid by the published schema, refused: {refusal}\n{body!r}")


def test_the_generated_instants_match_the_published_pattern() -> None:
    import re

    pattern = re.compile(SCHEMAS["Touchpoint_visit"]["properties"]["occurred_at"]["pattern"])
    assert pattern.search("2024-05-01T10:00:00+02:00")
    assert INSTANT_PATTERN.startswith("^")
