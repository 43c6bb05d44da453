"""Touchpoint envelope v1: what is refused at the door (field by field, with a reason a
client can act on) and how accepted envelopes are normalised."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.touchpoints import (
    KANO_ANSWERS,
    KNOWN_TYPES,
    FieldError,
    InvalidTouchpoint,
    parse_touchpoint,
)


def envelope(**overrides: Any) -> dict[str, Any]:
    """A valid visit envelope, with ``overrides`` replacing (or adding) top-level fields."""
    raw: dict[str, Any] = {
        "event_id": "tp-1",
        "type": "visit",
        "occurred_at": "2024-05-01T10:00:00+02:00",
        "channel": "store",
        "customer": {"id": "C1"},
    }
    raw.update(overrides)
    return raw


def survey(metric: str, value: Any, **extra: Any) -> dict[str, Any]:
    payload = {"survey_id": "S1", "question_id": "Q1", "metric": metric, "value": value, **extra}
    return envelope(type="survey_answered", payload=payload)


def purchase(**payload: Any) -> dict[str, Any]:
    return envelope(
        type="purchase", payload={"order_id": "O1", "amount": "10.00", "currency": "EUR", **payload}
    )


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
    error = only_refusal(envelope(type="teleport"))

    assert error.field == "type"
    assert "'teleport'" in error.message
    for known in KNOWN_TYPES:
        assert known in error.message
    assert "purchase" in error.message and "survey_answered" in error.message


def test_customer_without_any_identifier_is_refused_with_the_identifier_kinds() -> None:
    error = only_refusal(envelope(customer={}))

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
    error = only_refusal(envelope(customer={"email": "not-an-address"}))

    assert error.field == "customer.email"
    assert "pattern" in error.message


@pytest.mark.parametrize(
    ("emotion", "reason"),
    [(4, "less than or equal to 3"), (-4, "greater than or equal to -3"), (100, "3")],
)
def test_emotion_outside_the_seven_level_scale_is_refused(emotion: int, reason: str) -> None:
    error = only_refusal(envelope(emotion=emotion))

    assert error.field == "emotion"
    assert reason in error.message


@pytest.mark.parametrize("emotion", [1.5, 2.0, "2", True])
def test_emotion_that_is_not_an_integer_is_refused(emotion: Any) -> None:
    error = only_refusal(envelope(emotion=emotion))

    assert error.field == "emotion"
    assert "valid integer" in error.message


@pytest.mark.parametrize("emotion", [-3, -2, -1, 0, 1, 2, 3])
def test_every_level_of_the_emotion_scale_is_accepted(emotion: int) -> None:
    assert parse_touchpoint(envelope(emotion=emotion)).emotion == emotion


def test_timestamp_without_offset_is_refused() -> None:
    error = only_refusal(envelope(occurred_at="2024-05-01T10:00:00"))

    assert error.field == "occurred_at"
    assert "timezone" in error.message


def test_timestamp_that_is_not_a_date_is_refused() -> None:
    error = only_refusal(envelope(occurred_at="yesterday"))

    assert error.field == "occurred_at"
    assert "datetime" in error.message


def test_timestamp_beyond_the_allowed_clock_skew_is_refused() -> None:
    now = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)

    error = only_refusal(
        envelope(occurred_at="2024-05-01T08:05:01+00:00"),
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
        envelope(occurred_at=occurred_at), now=now, max_future_skew=timedelta(minutes=5)
    )

    assert touchpoint.occurred_at == datetime.fromisoformat(occurred_at)


def test_future_timestamps_are_only_checked_against_a_given_clock() -> None:
    touchpoint = parse_touchpoint(envelope(occurred_at="2999-01-01T00:00:00+00:00"))

    assert touchpoint.occurred_at.year == 2999


def test_fields_of_the_wrong_type_are_each_refused() -> None:
    errors = refusals(envelope(event_id=5, channel=7, payload=[1]))

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
    error = only_refusal(envelope(channel="Web Shop"))

    assert error.field == "channel"


def test_other_schema_versions_are_refused() -> None:
    error = only_refusal(envelope(schema=2))

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
    error = only_refusal(survey(metric, value))

    assert error.field == "payload.value"
    assert error.message == f"{metric} is from {low} to {high}, got {value}"


@pytest.mark.parametrize(
    ("metric", "value"),
    [("nps", 0), ("nps", 10), ("csat", 1), ("csat", 5), ("ces", 1), ("ces", 7)],
)
def test_survey_answer_at_the_ends_of_its_metric_range_is_accepted(metric: str, value: int) -> None:
    assert parse_touchpoint(survey(metric, value)).payload["value"] == value


@pytest.mark.parametrize("value", ["nine", "9"])
def test_scored_survey_answer_must_be_an_integer(value: str) -> None:
    error = only_refusal(survey("nps", value))

    assert error.field == "payload.value"
    assert error.message == "nps is an integer from 0 to 10"


def test_scored_survey_answer_refuses_a_boolean() -> None:
    # SurveyAnsweredPayload means to refuse booleans (its isinstance(bool) check), but
    # True is coerced to 1 before that check runs: a stray boolean becomes a detractor.
    error = only_refusal(survey("nps", True))

    assert error.field == "payload.value"


def test_unknown_survey_metric_is_refused_with_the_known_metrics() -> None:
    error = only_refusal(survey("happiness", 7))

    assert error.field == "payload.metric"
    for metric in ("nps", "csat", "ces", "kano_functional"):
        assert metric in error.message


def test_kano_answer_must_name_its_feature() -> None:
    error = only_refusal(survey("kano_functional", "like"))

    assert error.field == "payload.feature"
    assert "feature" in error.message


def test_kano_answer_must_be_one_of_the_five_answers() -> None:
    error = only_refusal(survey("kano_dysfunctional", "love", feature="wifi"))

    assert error.field == "payload.value"
    for answer in KANO_ANSWERS:
        assert answer in error.message


@pytest.mark.parametrize("metric", ["kano_functional", "kano_dysfunctional"])
@pytest.mark.parametrize("answer", KANO_ANSWERS)
def test_kano_answer_naming_its_feature_is_accepted(metric: str, answer: str) -> None:
    payload = parse_touchpoint(survey(metric, answer, feature="wifi")).payload

    assert (payload["value"], payload["feature"]) == (answer, "wifi")


def test_importance_answer_must_name_its_attribute() -> None:
    error = only_refusal(survey("importance", 7))

    assert error.field == "payload.attribute"
    assert "attribute" in error.message


def test_importance_answer_naming_its_attribute_is_accepted() -> None:
    payload = parse_touchpoint(survey("importance", 7, attribute="waiting time")).payload

    assert payload["attribute"] == "waiting time"


def test_purchase_amount_with_three_decimals_is_refused() -> None:
    error = only_refusal(purchase(amount="10.005"))

    assert error.field == "payload.amount"
    assert "2 decimal places" in error.message


def test_negative_purchase_amount_is_refused() -> None:
    error = only_refusal(purchase(amount="-0.01"))

    assert error.field == "payload.amount"
    assert "greater than or equal to 0" in error.message


def test_purchase_amount_that_is_not_a_number_is_refused() -> None:
    error = only_refusal(purchase(amount="NaN"))

    assert error.field == "payload.amount"


@pytest.mark.parametrize("currency", ["eur", "EURO", "E1R"])
def test_currency_that_is_not_three_capital_letters_is_refused(currency: str) -> None:
    error = only_refusal(purchase(currency=currency))

    assert error.field == "payload.currency"
    assert "[A-Z]{3}" in error.message


def test_purchase_without_order_id_is_refused() -> None:
    error = only_refusal(envelope(type="purchase", payload={"amount": "1.00", "currency": "EUR"}))

    assert (error.field, error.message) == ("payload.order_id", "Field required")


def test_complaint_step_must_name_its_complaint() -> None:
    error = only_refusal(envelope(type="complaint_resolved", payload={"note": "refunded"}))

    assert (error.field, error.message) == ("payload.complaint_id", "Field required")


def test_unknown_envelope_field_is_refused() -> None:
    error = only_refusal(envelope(colour="red"))

    assert (error.field, error.message) == ("colour", "Extra inputs are not permitted")


def test_unknown_payload_field_is_refused() -> None:
    error = only_refusal(purchase(coupon="SPRING"))

    assert (error.field, error.message) == ("payload.coupon", "Extra inputs are not permitted")


def test_unknown_item_field_is_refused_with_its_position() -> None:
    error = only_refusal(purchase(items=[{"sku": "A"}, {"sku": "B", "colour": "red"}]))

    assert error.field == "payload.items.1.colour"


def test_envelope_and_payload_errors_are_reported_together() -> None:
    raw = purchase(amount="-1", currency="eur")
    raw.update(emotion=9, customer={})

    with pytest.raises(InvalidTouchpoint) as caught:
        parse_touchpoint(raw)

    fields = [e.field for e in caught.value.errors]
    assert sorted(fields) == ["customer", "emotion", "payload.amount", "payload.currency"]
    for field in fields:
        assert f"{field}: " in str(caught.value)


def test_unknown_type_does_not_hide_other_envelope_errors() -> None:
    errors = refusals(envelope(type="teleport", emotion=-5, occurred_at="2024-05-01T10:00:00"))

    assert sorted(e.field for e in errors) == ["emotion", "occurred_at", "type"]


# ---------------------------------------------------------------------------------------
# Accepted envelopes are normalised
# ---------------------------------------------------------------------------------------


def test_valid_envelope_is_accepted_as_given() -> None:
    touchpoint = parse_touchpoint(
        envelope(
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
    assert parse_touchpoint(envelope(channel="  WEB ")).channel == "web"


def test_email_is_trimmed_and_lower_cased() -> None:
    touchpoint = parse_touchpoint(envelope(customer={"email": "  Ann.Lee@Example.COM "}))

    assert touchpoint.customer.email == "ann.lee@example.com"


def test_identifiers_are_listed_strongest_first() -> None:
    touchpoint = parse_touchpoint(
        envelope(customer={"device_id": "dev-9", "phone": "+49 30 123456", "email": "a@b.co"})
    )

    assert list(touchpoint.customer.present()) == ["email", "phone", "device_id"]


def test_missing_emotion_and_journey_are_none() -> None:
    touchpoint = parse_touchpoint(envelope())

    assert (touchpoint.emotion, touchpoint.journey) == (None, None)


def test_call_payload_gets_its_defaults() -> None:
    touchpoint = parse_touchpoint(envelope(type="call", payload={"wait_seconds": 30}))

    assert touchpoint.payload == {"direction": "inbound", "wait_seconds": 30}


def test_filed_complaint_defaults_to_medium_severity() -> None:
    touchpoint = parse_touchpoint(
        envelope(type="complaint_filed", payload={"complaint_id": "K1", "category": "billing"})
    )

    assert touchpoint.payload == {"complaint_id": "K1", "category": "billing", "severity": "medium"}


def test_purchase_payload_keeps_the_exact_amount_and_fills_item_defaults() -> None:
    touchpoint = parse_touchpoint(purchase(amount="10.10", items=[{"sku": "A-1"}]))

    assert touchpoint.payload == {
        "order_id": "O1",
        "amount": "10.10",
        "currency": "EUR",
        "items": [{"sku": "A-1", "quantity": 1}],
    }


def test_optional_payload_fields_left_out_are_not_stored() -> None:
    touchpoint = parse_touchpoint(envelope(type="visit", payload={"location": " Berlin "}))

    assert touchpoint.payload == {"location": "Berlin"}


def _category_spend(value: object, **extra: object) -> dict[str, object]:
    return {
        "event_id": "e-cs",
        "type": "survey_answered",
        "channel": "web",
        "occurred_at": "2026-01-01T00:00:00Z",
        "customer": {"id": "C1"},
        "payload": {
            "survey_id": "s",
            "question_id": "wallet",
            "metric": "category_spend",
            "value": value,
            **extra,
        },
    }


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
