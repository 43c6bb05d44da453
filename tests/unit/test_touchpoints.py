"""Touchpoint envelope v1: what is refused at the door (field by field, with a reason a
client can act on) and how accepted envelopes are normalised."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.touchpoints import (
    KANO_ANSWERS,
    KNOWN_TYPES,
    MAX_NESTING,
    FieldError,
    InvalidTouchpoint,
    MalformedJson,
    loads_json,
    parse_touchpoint,
)
from tests.builders import T0, envelope, nested, purchase, survey_answer, with_payload


def refusals(raw: Any, **kwargs: Any) -> list[FieldError]:
    with pytest.raises(InvalidTouchpoint) as caught:
        parse_touchpoint(raw, **kwargs)
    return caught.value.errors


def only_refusal(raw: Any, **kwargs: Any) -> FieldError:
    errors = refusals(raw, **kwargs)
    assert len(errors) == 1, errors
    return errors[0]


# ---------------------------------------------------------------------------------------
# Refusals: each names the field and why
# ---------------------------------------------------------------------------------------


def test_unknown_type_is_refused_with_the_list_of_known_types() -> None:
    error = only_refusal(envelope(None, T0, type="teleport"))

    assert error.field == "type"
    assert "'teleport'" in error.message
    for known in KNOWN_TYPES:
        assert known in error.message
    assert "purchase" in error.message and "survey_answered" in error.message


def test_customer_without_any_identifier_is_refused_with_the_identifier_kinds() -> None:
    error = only_refusal(envelope(None, T0, customer={}))

    assert error.field == "customer"
    assert "at least one identifier" in error.message
    for kind in ("id", "email", "phone", "loyalty_card"):
        assert kind in error.message


def test_envelope_without_customer_is_refused() -> None:
    raw = envelope()
    del raw["customer"]

    error = only_refusal(raw)

    assert (error.field, error.message) == ("customer", "Field required")


def test_malformed_email_is_refused_on_the_email_field() -> None:
    error = only_refusal(envelope(None, T0, customer={"email": "not-an-address"}))

    assert error.field == "customer.email"
    assert error.message == "An email address must have an @-sign."  # email-validator's words


@pytest.mark.parametrize(
    ("emotion", "reason"),
    [(4, "less than or equal to 3"), (-4, "greater than or equal to -3"), (100, "3")],
)
def test_emotion_outside_the_seven_level_scale_is_refused(emotion: int, reason: str) -> None:
    error = only_refusal(envelope(None, T0, emotion=emotion))

    assert error.field == "emotion"
    assert reason in error.message


@pytest.mark.parametrize("emotion", [1.5, 2.0, "2", True])
def test_emotion_that_is_not_an_integer_is_refused(emotion: Any) -> None:
    error = only_refusal(envelope(None, T0, emotion=emotion))

    assert error.field == "emotion"
    assert "valid integer" in error.message


@pytest.mark.parametrize("emotion", [-3, -2, -1, 0, 1, 2, 3])
def test_every_level_of_the_emotion_scale_is_accepted(emotion: int) -> None:
    assert parse_touchpoint(envelope(None, T0, emotion=emotion)).emotion == emotion


def test_timestamp_without_offset_is_refused() -> None:
    error = only_refusal(envelope(None, T0, occurred_at="2024-05-01T10:00:00"))

    assert error.field == "occurred_at"
    assert "timezone" in error.message


def test_timestamp_that_is_not_a_date_is_refused() -> None:
    error = only_refusal(envelope(None, T0, occurred_at="yesterday"))

    assert error.field == "occurred_at"
    assert "ISO-8601" in error.message


def test_timestamp_beyond_the_allowed_clock_skew_is_refused() -> None:
    now = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)

    error = only_refusal(
        envelope(None, T0, occurred_at="2024-05-01T08:05:01+00:00"),
        now=now,
        max_future_skew=timedelta(minutes=5),
    )

    assert error.field == "occurred_at"
    assert "0:05:01 ahead" in error.message
    assert "at most 0:05:00" in error.message


@pytest.mark.parametrize(
    "occurred_at",
    ["2024-05-01T08:05:00+00:00", "2024-05-01T10:04:59+02:00", "2024-04-30T23:00:00-05:00"],
)
def test_timestamp_within_the_allowed_clock_skew_is_accepted(occurred_at: str) -> None:
    # Instants are compared, not wall clocks: 10:04:59+02:00 is 08:04:59 UTC.
    now = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)

    touchpoint = parse_touchpoint(
        envelope(None, T0, occurred_at=occurred_at), now=now, max_future_skew=timedelta(minutes=5)
    )

    assert touchpoint.occurred_at == datetime.fromisoformat(occurred_at)


def test_future_timestamps_are_only_checked_against_a_given_clock() -> None:
    touchpoint = parse_touchpoint(envelope(None, T0, occurred_at="2999-01-01T00:00:00+00:00"))

    assert touchpoint.occurred_at.year == 2999


def test_fields_of_the_wrong_type_are_each_refused() -> None:
    errors = refusals(envelope(None, T0, event_id=5, channel=7, payload=[1]))

    assert {e.field: e.message for e in errors} == {
        "event_id": "Input should be a valid string",
        "channel": "Input should be a valid string",
        "payload": "Input should be a valid dictionary",
    }


def test_body_that_is_not_an_object_is_refused_as_a_whole() -> None:
    error = only_refusal(["not", "an", "envelope"])

    assert error.field == "body"
    assert "dictionary" in error.message


def test_channel_with_spaces_is_refused() -> None:
    error = only_refusal(envelope(None, T0, channel="Web Shop"))

    assert error.field == "channel"


def test_other_schema_versions_are_refused() -> None:
    error = only_refusal(envelope(None, T0, schema=2))

    assert (error.field, error.message) == ("schema", "Input should be 1")


@pytest.mark.parametrize(
    ("metric", "value", "low", "high"),
    [
        ("nps", -1, 0, 10),
        ("nps", 11, 0, 10),
        ("csat", 0, 1, 5),
        ("csat", 6, 1, 5),
        ("ces", 0, 1, 7),
        ("ces", 8, 1, 7),
    ],
)
def test_survey_answer_outside_its_metric_range_is_refused(
    metric: str, value: int, low: int, high: int
) -> None:
    error = only_refusal(survey_answer(None, metric, value))

    assert error.field == "payload.value"
    assert error.message == f"{metric} is from {low} to {high}, got {value}"


@pytest.mark.parametrize(
    ("metric", "value"),
    [("nps", 0), ("nps", 10), ("csat", 1), ("csat", 5), ("ces", 1), ("ces", 7)],
)
def test_survey_answer_at_the_ends_of_its_metric_range_is_accepted(metric: str, value: int) -> None:
    assert parse_touchpoint(survey_answer(None, metric, value)).payload["value"] == value


@pytest.mark.parametrize("value", ["nine", "9"])
def test_scored_survey_answer_must_be_an_integer(value: str) -> None:
    error = only_refusal(survey_answer(None, "nps", value))

    assert error.field == "payload.value"
    assert error.message == "nps is an integer from 0 to 10"


def test_scored_survey_answer_refuses_a_boolean() -> None:
    # SurveyAnsweredPayload means to refuse booleans (its isinstance(bool) check), but
    # True is coerced to 1 before that check runs: a stray boolean becomes a detractor.
    error = only_refusal(survey_answer(None, "nps", True))

    assert error.field == "payload.value"


def test_unknown_survey_metric_is_refused_with_the_known_metrics() -> None:
    error = only_refusal(survey_answer(None, "happiness", 7))

    assert error.field == "payload.metric"
    for metric in ("nps", "csat", "ces", "kano_functional"):
        assert metric in error.message


def test_kano_answer_must_name_its_feature() -> None:
    error = only_refusal(survey_answer(None, "kano_functional", "like"))

    assert error.field == "payload.feature"
    assert "feature" in error.message


def test_kano_answer_must_be_one_of_the_five_answers() -> None:
    error = only_refusal(survey_answer(None, "kano_dysfunctional", "love", feature="wifi"))

    assert error.field == "payload.value"
    for answer in KANO_ANSWERS:
        assert answer in error.message


@pytest.mark.parametrize("metric", ["kano_functional", "kano_dysfunctional"])
@pytest.mark.parametrize("answer", KANO_ANSWERS)
def test_kano_answer_naming_its_feature_is_accepted(metric: str, answer: str) -> None:
    payload = parse_touchpoint(survey_answer(None, metric, answer, feature="wifi")).payload

    assert (payload["value"], payload["feature"]) == (answer, "wifi")


def test_importance_answer_must_name_its_attribute() -> None:
    error = only_refusal(survey_answer(None, "importance", 7))

    assert error.field == "payload.attribute"
    assert "attribute" in error.message


def test_importance_answer_naming_its_attribute_is_accepted() -> None:
    payload = parse_touchpoint(
        survey_answer(None, "importance", 7, attribute="waiting time")
    ).payload

    assert payload["attribute"] == "waiting time"


def test_purchase_amount_with_three_decimals_is_refused() -> None:
    error = only_refusal(purchase(None, "10.005"))

    assert error.field == "payload.amount"
    assert "2 decimal places" in error.message


def test_negative_purchase_amount_is_refused() -> None:
    error = only_refusal(purchase(None, "-0.01"))

    assert error.field == "payload.amount"
    assert "negative" in error.message


def test_purchase_amount_that_is_not_a_number_is_refused() -> None:
    error = only_refusal(purchase(None, "NaN"))

    assert error.field == "payload.amount"


@pytest.mark.parametrize("currency", ["eur", "EURO", "E1R", "ABC", "XXX", 978])
def test_currency_outside_iso_4217_is_refused(currency: Any) -> None:
    error = only_refusal(purchase(currency=currency))

    assert error.field == "payload.currency"
    assert "ISO 4217" in error.message or "string" in error.message


@pytest.mark.parametrize("currency", ["EUR", "USD", "JPY", "CHF", "XAU", "ZWG"])
def test_iso_4217_currencies_are_accepted(currency: str) -> None:
    assert parse_touchpoint(purchase(currency=currency)).payload["currency"] == currency


def test_purchase_without_order_id_is_refused() -> None:
    error = only_refusal(
        envelope(None, T0, type="purchase", payload={"amount": "1.00", "currency": "EUR"})
    )

    assert (error.field, error.message) == ("payload.order_id", "Field required")


def test_complaint_step_must_name_its_complaint() -> None:
    error = only_refusal(
        envelope(None, T0, type="complaint_resolved", payload={"note": "refunded"})
    )

    assert (error.field, error.message) == ("payload.complaint_id", "Field required")


def test_unknown_envelope_field_is_refused() -> None:
    error = only_refusal(envelope(None, T0, colour="red"))

    assert (error.field, error.message) == ("colour", "Extra inputs are not permitted")


def test_unknown_payload_field_is_refused() -> None:
    error = only_refusal(with_payload(purchase(), coupon="SPRING"))

    assert (error.field, error.message) == ("payload.coupon", "Extra inputs are not permitted")


def test_unknown_item_field_is_refused_with_its_position() -> None:
    error = only_refusal(
        with_payload(purchase(), items=[{"sku": "A"}, {"sku": "B", "colour": "red"}])
    )

    assert error.field == "payload.items.1.colour"


def test_envelope_and_payload_errors_are_reported_together() -> None:
    raw = purchase(None, "-1", currency="eur")
    raw.update(emotion=9, customer={})

    with pytest.raises(InvalidTouchpoint) as caught:
        parse_touchpoint(raw)

    fields = [e.field for e in caught.value.errors]
    assert sorted(fields) == ["customer", "emotion", "payload.amount", "payload.currency"]
    for field in fields:
        assert f"{field}: " in str(caught.value)


def test_unknown_type_does_not_hide_other_envelope_errors() -> None:
    errors = refusals(
        envelope(None, T0, type="teleport", emotion=-5, occurred_at="2024-05-01T10:00:00")
    )

    assert sorted(e.field for e in errors) == ["emotion", "occurred_at", "type"]


# ---------------------------------------------------------------------------------------
# Accepted envelopes are normalised
# ---------------------------------------------------------------------------------------


def test_valid_envelope_is_accepted_as_given() -> None:
    touchpoint = parse_touchpoint(
        envelope(
            "C1",
            "2024-05-01T10:00:00+02:00",
            event_id="tp-1",
            journey={"id": "J1", "type": "car_service", "step": "arrival"},
            emotion=2,
            additional={"store_no": 12},
        )
    )

    assert touchpoint.schema_ == 1
    assert touchpoint.event_id == "tp-1"
    assert touchpoint.type == "visit"
    assert touchpoint.occurred_at == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    assert touchpoint.occurred_at.utcoffset() == timedelta(hours=2)
    assert touchpoint.customer.present() == {"id": "C1"}
    assert touchpoint.journey is not None
    assert touchpoint.journey.model_dump() == {"id": "J1", "type": "car_service", "step": "arrival"}
    assert touchpoint.emotion == 2
    assert touchpoint.payload == {}
    assert touchpoint.additional == {"store_no": 12}


def test_channel_is_trimmed_and_lower_cased() -> None:
    assert parse_touchpoint(envelope(None, T0, channel="  WEB ")).channel == "web"


def test_email_is_trimmed_and_lower_cased() -> None:
    touchpoint = parse_touchpoint(envelope(None, T0, customer={"email": "  Ann.Lee@Example.COM "}))

    assert touchpoint.customer.email == "ann.lee@example.com"


def test_identifiers_are_listed_strongest_first() -> None:
    touchpoint = parse_touchpoint(
        envelope(
            None, T0, customer={"device_id": "dev-9", "phone": "+49 30 123456", "email": "a@b.co"}
        )
    )

    assert list(touchpoint.customer.present()) == ["email", "phone", "device_id"]


def test_missing_emotion_and_journey_are_none() -> None:
    touchpoint = parse_touchpoint(envelope())

    assert (touchpoint.emotion, touchpoint.journey) == (None, None)


def test_call_payload_gets_its_defaults() -> None:
    touchpoint = parse_touchpoint(envelope(None, T0, type="call", payload={"wait_seconds": 30}))

    assert touchpoint.payload == {"direction": "inbound", "wait_seconds": 30}


def test_filed_complaint_defaults_to_medium_severity() -> None:
    touchpoint = parse_touchpoint(
        envelope(
            None, T0, type="complaint_filed", payload={"complaint_id": "K1", "category": "billing"}
        )
    )

    assert touchpoint.payload == {"complaint_id": "K1", "category": "billing", "severity": "medium"}


def test_purchase_payload_keeps_the_exact_amount_and_fills_item_defaults() -> None:
    touchpoint = parse_touchpoint(
        with_payload(purchase(None, "10.10", order_id="O1"), items=[{"sku": "A-1"}])
    )

    assert touchpoint.payload == {
        "order_id": "O1",
        "amount": "10.10",
        "currency": "EUR",
        "items": [{"sku": "A-1", "quantity": 1}],
    }


def test_optional_payload_fields_left_out_are_not_stored() -> None:
    touchpoint = parse_touchpoint(
        envelope(None, T0, type="visit", payload={"location": " Berlin "})
    )

    assert touchpoint.payload == {"location": "Berlin"}


def _category_spend(value: object, **extra: object) -> dict[str, object]:
    return survey_answer("C1", "category_spend", value, T0, question_id="wallet", **extra)


@pytest.mark.parametrize(
    ("given", "stored"), [("1200", "1200.00"), (1500, "1500.00"), ("99.5", "99.50")]
)
def test_a_declared_category_spend_is_an_exact_amount(given: object, stored: str) -> None:
    parsed = parse_touchpoint(_category_spend(given, currency="EUR"))
    assert parsed.payload["value"] == stored


@pytest.mark.parametrize("given", ["12.345", "-1", True, "abc", 9.5])
def test_a_category_spend_that_is_not_an_amount_is_refused(given: object) -> None:
    with pytest.raises(InvalidTouchpoint) as refusal:
        parse_touchpoint(_category_spend(given, currency="EUR"))
    assert [e.field for e in refusal.value.errors] == ["payload.value"]


def test_a_category_spend_names_its_currency() -> None:
    with pytest.raises(InvalidTouchpoint) as refusal:
        parse_touchpoint(_category_spend("100"))
    assert [e.field for e in refusal.value.errors] == ["payload.currency"]


# ---------------------------------------------------------------------------------------
# Moved from the HTTP tests: field rules not covered above
# ---------------------------------------------------------------------------------------


def test_blank_event_id_is_refused() -> None:
    error = only_refusal(envelope(None, T0, event_id="  "))

    assert error.field == "event_id"
    assert "at least 1" in error.message


def test_journey_without_step_is_refused() -> None:
    error = only_refusal(envelope(None, T0, journey={"id": "J1", "type": "car"}))

    assert (error.field, error.message) == ("journey.step", "Field required")


def test_amount_that_is_a_list_is_refused() -> None:
    error = only_refusal(purchase(None, [19, 99]))

    assert error.field == "payload.amount"
    assert "not an amount" in error.message


NUL_IN_IDENTIFIERS: list[tuple[str, dict[str, Any], str]] = [
    # (case id, envelope, the refused field)
    ("customer-id", envelope("C\u00001"), "customer.id"),
    ("event-id", envelope(None, T0, event_id="tp\u00001"), "event_id"),
    (
        "journey-id",
        envelope(None, T0, journey={"id": "J\u0000", "type": "t", "step": "s"}),
        "journey.id",
    ),
    (
        "journey-step",
        envelope(None, T0, journey={"id": "J", "type": "t", "step": "a\u0000"}),
        "journey.step",
    ),
    ("order-id", purchase(order_id="O\u00001"), "payload.order_id"),
    (
        "complaint-id",
        envelope(
            None, T0, type="complaint_filed", payload={"complaint_id": "K\u0000", "category": "x"}
        ),
        "payload.complaint_id",
    ),
    ("survey-id", survey_answer(None, "nps", 9, survey_id="S\u00001"), "payload.survey_id"),
    ("additional-key", envelope(None, T0, additional={"n\u0000te": 1}), "additional.n\\x00te"),
]


@pytest.mark.parametrize(
    ("raw", "field"), [pytest.param(*case[1:], id=case[0]) for case in NUL_IN_IDENTIFIERS]
)
def test_a_nul_character_anywhere_is_refused_naming_the_field(
    raw: dict[str, Any], field: str
) -> None:
    """PostgreSQL text cannot hold NUL: such a touchpoint could not be projected."""
    error = only_refusal(raw)

    assert error.field == field
    assert "NUL" in error.message


# ---------------------------------------------------------------------------------------
# occurred_at and every other instant: one format, a plausible range
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "occurred_at",
    [
        "0001-01-01T00:30:00+01:00",  # before year 1 in UTC: OverflowError downstream
        "1899-12-31T23:59:59Z",
        "1900-01-01T00:30:00+01:00",  # 1899-12-31T23:30Z
    ],
)
def test_an_instant_before_the_earliest_is_refused_naming_occurred_at(occurred_at: str) -> None:
    error = only_refusal(envelope(None, occurred_at))

    assert error.field == "occurred_at"
    assert "before 1900-01-01T00:00:00+00:00" in error.message


def test_the_earliest_instant_itself_is_accepted() -> None:
    touchpoint = parse_touchpoint(envelope(None, "1900-01-01T00:00:00Z"))

    assert touchpoint.occurred_at == datetime(1900, 1, 1, tzinfo=UTC)


def test_the_earliest_instant_is_a_parameter() -> None:
    earliest = datetime(1990, 1, 1, tzinfo=UTC)

    error = only_refusal(envelope(None, "1989-12-31T23:59:59Z"), earliest=earliest)
    accepted = parse_touchpoint(envelope(None, "1990-01-01T00:00:00Z"), earliest=earliest)

    assert error.field == "occurred_at" and "before 1990-01-01" in error.message
    assert accepted.occurred_at == earliest


def test_an_instant_beyond_the_last_representable_one_is_refused_without_a_clock() -> None:
    error = only_refusal(envelope(None, "9999-12-31T23:30:00-01:00"))  # year 10000 in UTC

    assert error.field == "occurred_at"
    assert "representable" in error.message


@pytest.mark.parametrize(
    ("occurred_at", "refused"),
    [
        ("19970101", "a bare digit string"),  # was read as Unix seconds: 1970-08-20
        (19970101, "a JSON number"),
        (867_715_200.5, "a JSON number"),
    ],
)
def test_numbers_and_digit_strings_are_not_read_as_timestamps(
    occurred_at: Any, refused: str
) -> None:
    error = only_refusal(envelope(None, T0, occurred_at=occurred_at))

    assert error.field == "occurred_at"
    assert "ISO-8601" in error.message and "2026-03-01T10:30:00+01:00" in error.message
    assert f"{refused} is not read as a timestamp" in error.message


@pytest.mark.parametrize(
    "occurred_at",
    ["2024-05-01T10:00+01:00", "2024-05-01 10:00:00Z", "2024-05-01T10:00:00+0100", "2024-W18-3"],
)
def test_other_spellings_of_an_instant_are_refused_with_the_expected_format(
    occurred_at: str,
) -> None:
    error = only_refusal(envelope(None, occurred_at))

    assert error.field == "occurred_at"
    assert "e.g. 2026-03-01T10:30:00+01:00" in error.message


@pytest.mark.parametrize(
    "occurred_at",
    ["2024-05-01T10:00:00Z", "2024-05-01T10:00:00.5+02:00", "2024-05-01T10:00:00.123456789-05:30"],
)
def test_rfc_3339_instants_are_accepted(occurred_at: str) -> None:
    assert parse_touchpoint(envelope(None, occurred_at)).occurred_at.tzinfo is not None


@pytest.mark.parametrize(
    ("promised_at", "reason"),
    [
        ("19970101", "bare digit string"),
        (1_700_000_000, "JSON number"),
        ("0001-01-01T00:30:00+01:00", "before 1900"),
        ("9999-12-31T23:30:00-01:00", "representable"),
    ],
)
def test_a_delivery_promise_follows_the_same_rule_as_occurred_at(
    promised_at: Any, reason: str
) -> None:
    error = only_refusal(envelope(None, T0, type="delivery", payload={"promised_at": promised_at}))

    assert error.field == "payload.promised_at"
    assert reason in error.message


def test_a_delivery_promise_in_the_future_is_accepted() -> None:
    raw = envelope(None, T0, type="delivery", payload={"promised_at": "2024-05-03T12:00:00+02:00"})

    touchpoint = parse_touchpoint(raw, now=T0, max_future_skew=timedelta(minutes=5))

    assert touchpoint.payload["promised_at"] == "2024-05-03T12:00:00+02:00"


# ---------------------------------------------------------------------------------------
# Amounts, quantities, durations: exact and bounded
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        (10.5, "not exact"),
        (10.0, "not exact"),
        ("1_000", "digit separators"),
        ("-0", "negative"),
        ("-0.00", "negative"),
        ("1e2", "exponent"),
        ("1e26", "exponent"),
        ("1000000000000", "12 digits"),
        (10**30, "out of range"),
        (-1, "out of range"),
        (" 5", "not a decimal amount"),
        ("Infinity", "not a decimal amount"),
        (True, "true or false"),
    ],
)
def test_an_amount_that_is_not_an_exact_bounded_decimal_is_refused(
    amount: Any, reason: str
) -> None:
    for raw, field in [
        (purchase(None, amount), "payload.amount"),
        (
            with_payload(purchase(), items=[{"sku": "A", "unit_price": amount}]),
            "payload.items.0.unit_price",
        ),
        (
            envelope(
                None,
                T0,
                type="complaint_resolved",
                payload={"complaint_id": "K1", "compensation": amount},
            ),
            "payload.compensation",
        ),
    ]:
        error = only_refusal(raw)

        assert error.field == field
        assert reason in error.message, error.message
        assert 'a decimal string such as "19.99" or an integer' in error.message


@pytest.mark.parametrize(
    ("amount", "stored"),
    [
        ("0", "0.00"),
        (0, "0.00"),
        ("19.9", "19.90"),
        (1500, "1500.00"),
        ("999999999999.99", "999999999999.99"),
        ("007", "7.00"),
    ],
)
def test_an_exact_amount_is_stored_with_two_decimals(amount: Any, stored: str) -> None:
    assert parse_touchpoint(purchase(None, amount)).payload["amount"] == stored


@pytest.mark.parametrize("given", ["1e26", "1_000", "-0", 10**30, 12.5])
def test_a_category_spend_that_is_not_an_exact_bounded_amount_is_refused(given: Any) -> None:
    # "1e26" used to raise decimal.InvalidOperation in the quantize, not a refusal.
    error = only_refusal(survey_answer(None, "category_spend", given, currency="EUR"))

    assert error.field == "payload.value"
    assert "category_spend is a decimal string" in error.message


@pytest.mark.parametrize(
    ("quantity", "reason"),
    [
        (10**30, "less than or equal to 1000000"),
        (0, "greater than or equal to 1"),
        (2.0, "valid integer"),
        ("3", "valid integer"),
    ],
)
def test_a_quantity_outside_1_to_a_million_is_refused(quantity: Any, reason: str) -> None:
    error = only_refusal(with_payload(purchase(), items=[{"sku": "A", "quantity": quantity}]))

    assert error.field == "payload.items.0.quantity"
    assert reason in error.message


def test_a_duration_longer_than_a_month_is_refused() -> None:
    error = only_refusal(envelope(None, T0, type="call", payload={"duration_seconds": 10**12}))

    assert error.field == "payload.duration_seconds"
    assert "less than or equal to 2678400" in error.message


# ---------------------------------------------------------------------------------------
# Ids read as they compare, and can be read back at their URL
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("id_", [".", "..", " .. "])
@pytest.mark.parametrize("where", ["customer.id", "journey.id"])
def test_a_dot_segment_is_refused_as_a_customer_or_journey_id(id_: str, where: str) -> None:
    raw = (
        envelope(id_)
        if where == "customer.id"
        else envelope(None, T0, journey={"id": id_, "type": "t", "step": "s"})
    )
    error = only_refusal(raw)

    assert error.field == where
    assert "relative path segment" in error.message


def test_ids_with_dots_inside_are_accepted() -> None:
    assert parse_touchpoint(envelope("...")).customer.id == "..."
    assert parse_touchpoint(envelope("a.b")).customer.id == "a.b"


@pytest.mark.parametrize(
    "char",
    ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u202a", "\u202e", "\u2066", "\u2069"],
)
@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda v: envelope(v), "customer.id"),
        (lambda v: envelope(None, T0, event_id=v), "event_id"),
        (lambda v: envelope(None, T0, customer={"loyalty_card": v}), "customer.loyalty_card"),
        (lambda v: envelope(None, T0, customer={"email": f"{v}@example.com"}), "customer.email"),
        (lambda v: envelope(None, T0, journey={"id": v, "type": "t", "step": "s"}), "journey.id"),
        (lambda v: purchase(order_id=v), "payload.order_id"),
    ],
)
def test_invisible_characters_are_refused_in_ids(char: str, make: Any, field: str) -> None:
    error = only_refusal(make(f"ab{char}c"))

    assert error.field == field
    assert f"U+{ord(char):04X}" in error.message


def test_ids_are_normalised_to_nfc() -> None:
    decomposed = "Cafe\u0301"  # e + combining acute accent
    raw = envelope(
        decomposed,
        T0,
        event_id=f"tp-{decomposed}",
        journey={"id": decomposed, "type": "t", "step": "s"},
    )
    raw["customer"]["email"] = f"{decomposed}@example.com"

    touchpoint = parse_touchpoint(raw)

    assert touchpoint.journey is not None
    assert touchpoint.customer.id == touchpoint.journey.id == "Caf\u00e9"
    assert touchpoint.event_id == "tp-Caf\u00e9"
    assert touchpoint.customer.email == "caf\u00e9@example.com"


def test_a_phone_without_digits_is_refused() -> None:
    error = only_refusal(envelope(None, T0, customer={"phone": "((((((  "}))

    assert error.field == "customer.phone"


# ---------------------------------------------------------------------------------------
# What no read can serve: nesting, lone surrogates; errors safe to encode
# ---------------------------------------------------------------------------------------


def test_an_envelope_nested_to_the_limit_is_accepted() -> None:
    # The envelope is level 1; additional, 31 objects deep, fills levels 2 to 32.
    assert MAX_NESTING == 32
    touchpoint = parse_touchpoint(envelope(None, T0, additional=nested(31, leaf=1)))

    assert touchpoint.additional == nested(31, leaf=1)


@pytest.mark.parametrize("depth", [32, 300, 5000])
def test_an_envelope_nested_beyond_the_limit_is_refused_naming_the_field(depth: int) -> None:
    error = only_refusal(envelope(None, T0, additional=nested(depth, leaf=1)))

    assert error.field == "additional" + ".a" * 31
    assert "at most 32 levels" in error.message


def test_nesting_beyond_the_limit_in_a_list_is_refused() -> None:
    deep: Any = 1
    for _ in range(31):  # additional (2), x's 31 lists: levels 3 to 33
        deep = [deep]

    error = only_refusal(envelope(None, T0, additional={"x": deep}))

    assert error.field.startswith("additional.x.0.0")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (envelope(None, T0, event_id="tp-\ud800"), "event_id"),
        (envelope(None, T0, additional={"k\udfff": 1}), "additional.k\\udfff"),
        (envelope(None, T0, additional={"a": [{"\ud800": "x"}]}), "additional.a.0.\\ud800"),
        (envelope(None, T0, additional={"a": ["\ud800"]}), "additional.a.0"),
        (envelope("C-\ud800"), "customer.id"),
        (with_payload(purchase(), order_id="\ud83d"), "payload.order_id"),
    ],
)
def test_a_lone_surrogate_in_any_string_or_key_is_refused_with_an_encodable_error(
    raw: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidTouchpoint) as caught:
        parse_touchpoint(raw)

    errors = caught.value.errors
    assert [(e.field, e.message) for e in errors] == [
        (field, "contains a lone surrogate (not valid Unicode)")
    ]
    # The answer carries the field and the event id: both must encode as UTF-8.
    json.dumps([e.model_dump() for e in errors], ensure_ascii=False).encode("utf-8")
    str(caught.value).encode("utf-8")
    if field == "event_id":
        assert caught.value.event_id is None
    else:
        assert caught.value.event_id == raw["event_id"]


def test_an_unknown_type_with_a_surrogate_gives_an_encodable_message() -> None:
    # The unknown-type message quotes the type; the surrogate is caught before it.
    error = only_refusal(envelope(None, T0, type="x\ud800"))

    assert error.field == "type"
    error.message.encode("utf-8")


# ---------------------------------------------------------------------------------------
# Strict JSON on the wire
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"event_id": "a", "event_id": "b"}', "duplicate key 'event_id'"),
        (b'{"additional": {"x": 1, "x": 2}}', "duplicate key 'x'"),
        (b'{"score": NaN}', "NaN is not a JSON number"),
        (b'{"score": 1e400}', "out of range"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"\xff\xfe\xfd", ""),
        (b'{"k\\ud800": 1, "k\\ud800": 2}', "duplicate key 'k\\\\ud800'"),
    ],
)
def test_json_that_is_not_strict_is_refused_with_a_printable_reason(
    body: bytes, reason: str
) -> None:
    with pytest.raises(MalformedJson) as caught:
        loads_json(body)

    assert reason in str(caught.value)
    str(caught.value).encode("utf-8")


def test_strict_json_is_parsed_as_json() -> None:
    assert loads_json(b'{"a": [1, 2.5, "x", null, true], "b": {"c": {}}}') == {
        "a": [1, 2.5, "x", None, True],
        "b": {"c": {}},
    }


@pytest.mark.parametrize("space", ["\u0085", "\u001c", "\ufeff", "\u00a0"])
def test_an_email_with_a_space_of_any_regex_dialect_is_refused(space: str) -> None:
    """The published pattern is read with ECMAScript's \\s, the parser's with Python's:
    both refuse every space either dialect knows."""
    error = only_refusal(envelope(None, T0, customer={"email": f"ann{space}x@example.com"}))
    assert error.field == "customer.email"


def test_a_json_number_without_a_fraction_is_the_integer_it_equals() -> None:
    """JSON Schema's integer: 3.0 and 3e0 are 3 (the published schema says integer)."""
    raw = loads_json(b'{"emotion": 2.0, "quantity": 1e1, "score": 0.5}')
    assert raw == {"emotion": 2, "quantity": 10, "score": 0.5}
    assert type(raw["emotion"]) is int and type(raw["quantity"]) is int
    parsed = parse_touchpoint(
        loads_json(
            b'{"event_id": "e", "type": "purchase", "occurred_at": "2024-05-01T08:00:00Z",'
            b' "channel": "web", "customer": {"id": "C"}, "emotion": -1.0,'
            b' "payload": {"order_id": "O", "amount": 12.0, "currency": "EUR"}}'
        )
    )
    assert parsed.emotion == -1 and parsed.payload["amount"] == "12.00"
