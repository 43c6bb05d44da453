"""Customer identifiers, normalised (issue 9, item 1): one identifier, one spelling, so
that the same customer is recognised whichever way a source writes them; refusals name
the field and the reason. The published patterns are conservative: whatever they allow,
the parser accepts."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.touchpoints import (
    EMAIL_MAX_LENGTH,
    EMAIL_PATTERN,
    IDENTIFIER_KINDS,
    PHONE_MAX_LENGTH,
    PHONE_PATTERN,
    FieldError,
    InvalidTouchpoint,
    parse_touchpoint,
    touchpoint_schemas,
)
from infra.settings import Settings
from tests.builders import T0, envelope


def customer(identifiers: dict[str, Any], **kwargs: Any) -> dict[str, str]:
    """The identifiers of an accepted touchpoint naming its customer by ``identifiers``."""
    return parse_touchpoint(envelope(identifiers), **kwargs).customer.present()


def refusal(identifiers: dict[str, Any], **kwargs: Any) -> FieldError:
    with pytest.raises(InvalidTouchpoint) as caught:
        parse_touchpoint(envelope(identifiers), **kwargs)
    errors = caught.value.errors
    assert len(errors) == 1, errors
    return errors[0]


# -- e-mail -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "ann.lee@example.com",
        "  Ann.Lee@Example.COM ",
        "ANN.LEE@EXAMPLE.COM",
        "\tann.lee@example.com\n",
    ],
)
def test_an_email_is_trimmed_and_lower_cased_as_a_whole(spelling: str) -> None:
    assert customer({"email": spelling}) == {"email": "ann.lee@example.com"}


def test_an_internationalised_domain_has_one_spelling() -> None:
    unicode = customer({"email": "ann@Bücher.de"})
    punycode = customer({"email": "ann@xn--bcher-kva.de"})
    decomposed = customer({"email": "ann@bu\u0308cher.de"})

    assert unicode == punycode == decomposed == {"email": "ann@bücher.de"}


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("not-an-address", "must have an @-sign"),
        ("ann@", "something after the @-sign"),
        ("ann..lee@example.com", "two periods in a row"),
        (".ann@example.com", "cannot start with a period"),
        ("ann@example", "not valid. It should have a period"),
        ("ann@x.test", "special-use or reserved name"),
        ("ann@shop.local", "special-use or reserved name"),
        ("ann@mail.invalid", "special-use or reserved name"),
        ('"ann lee"@example.com', "Quoting the part before the @-sign is not allowed"),
        ("Ann Lee <ann@example.com>", "display name"),
        ("ann@[192.0.2.1]", "bracketed IP address"),
        ("ann@ab--cd.com", "two dashes"),
        ("ann@exa_mple.com", "invalid character"),
        ("ann@" + "b" * 64 + ".com", "so many characters"),
    ],
)
def test_an_address_email_validator_refuses_is_refused_in_its_words(
    address: str, reason: str
) -> None:
    error = refusal({"email": address})

    assert error.field == "customer.email"
    assert reason in error.message


def test_an_email_refusal_is_printable_whatever_the_address_holds() -> None:
    error = refusal({"email": "ann\x01\x7f@example.com"})

    assert error.field == "customer.email"
    assert "\x01" not in error.message and "\x7f" not in error.message
    error.message.encode("utf-8")


def test_invisible_characters_in_an_email_are_named_before_any_other_rule() -> None:
    error = refusal({"email": "ann\u200b@@example"})

    assert error.field == "customer.email"
    assert "U+200B" in error.message


@given(st.from_regex(EMAIL_PATTERN, fullmatch=True).filter(lambda a: len(a) <= EMAIL_MAX_LENGTH))
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_address_the_published_pattern_allows_is_accepted_as_it_is(address: str) -> None:
    assert customer({"email": address}) == {"email": address}


# -- phone ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "030 1234567",
        "0301234567",
        "030/123 45 67",
        "(030) 123-4567",
        "+49 30 1234567",
        "+49301234567",
        "+49 (0)30 1234567",
        "+49.30.123.45.67",
        "0049 30 1234567",
        "\uff0b49 30 1234567",  # a full-width plus
    ],
)
def test_every_spelling_of_a_number_is_one_e164_with_a_default_region(spelling: str) -> None:
    assert customer({"phone": spelling}, phone_region="DE") == {"phone": "+49301234567"}


def test_an_international_number_needs_no_region_and_ignores_it() -> None:
    alone = customer({"phone": "+33 1 23 45 67 89"})
    elsewhere = customer({"phone": "+33 1 23 45 67 89"}, phone_region="DE")

    assert alone == elsewhere == {"phone": "+33123456789"}


def test_the_region_reads_a_national_number_as_its_own() -> None:
    assert customer({"phone": "01 23 45 67 89"}, phone_region="FR") == {"phone": "+33123456789"}
    assert customer({"phone": "(201) 555-0123"}, phone_region="US") == {"phone": "+12015550123"}


@pytest.mark.parametrize("national", ["030 1234567", "0049 30 1234567", "301234567"])
def test_a_number_without_a_country_code_is_refused_without_a_region(national: str) -> None:
    error = refusal({"phone": national})

    assert error.field == "customer.phone"
    assert "country code" in error.message
    assert "PEAKEND_PHONE_DEFAULT_REGION" in error.message


@pytest.mark.parametrize(
    ("phone", "region", "reason"),
    [
        ("((((((  ", "DE", "not a phone number"),
        ("call me", "DE", "not a phone number"),
        ("+999 1234567", None, "no known country code"),
        ("+49 1", None, "too short"),
        ("+49 30 1234567 ext. 12", None, "extension"),
        ("555 0123", "US", "local number without its area code"),
        ("+1 201 555 01234", None, "too long"),
        ("+" + "4" * 40, None, "too long"),
        ("+49 30 123" + "4" * 60, None, "at most 64 characters"),
    ],
)
def test_an_unusable_phone_is_refused_naming_the_field(
    phone: str, region: str | None, reason: str
) -> None:
    error = refusal({"phone": phone}, phone_region=region)

    assert error.field == "customer.phone"
    assert reason in error.message


def test_invisible_characters_in_a_phone_are_refused() -> None:
    error = refusal({"phone": "+49 30\u200d 1234567"})

    assert (error.field, "U+200D" in error.message) == ("customer.phone", True)


@given(st.from_regex(PHONE_PATTERN, fullmatch=True).filter(lambda p: len(p) <= PHONE_MAX_LENGTH))
@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_number_the_published_pattern_allows_is_accepted_without_a_region(
    phone: str,
) -> None:
    normalised = customer({"phone": phone})["phone"]

    assert normalised.startswith("+") and normalised[1:].isdigit()


def test_the_published_phone_pattern_is_the_international_form() -> None:
    schema = touchpoint_schemas()["CustomerIdentifiers"]["properties"]["phone"]["anyOf"][0]

    assert schema["pattern"] == PHONE_PATTERN
    assert "PEAKEND_PHONE_DEFAULT_REGION" in schema["description"]
    assert jsonschema.Draft202012Validator(schema).is_valid("+49 30 1234567")
    assert not jsonschema.Draft202012Validator(schema).is_valid("030 1234567")


# -- kinds declared in settings ---------------------------------------------------------


def test_a_declared_kind_is_an_identifier_like_the_built_in_ones() -> None:
    found = customer(
        {"member_no": "  Cafe\u0301-1 ", "email": "ann@example.com"}, identifier_kinds=["member_no"]
    )

    assert found == {"email": "ann@example.com", "member_no": "Caf\u00e9-1"}
    assert customer({"member_no": "M-1"}, identifier_kinds=["member_no"]) == {"member_no": "M-1"}


def test_declared_kinds_come_after_the_built_in_ones_in_one_order() -> None:
    kinds = ["ticket", "member_no"]
    one = customer({"ticket": "T", "member_no": "M", "device_id": "D"}, identifier_kinds=kinds)
    other = customer({"member_no": "M", "device_id": "D", "ticket": "T"}, identifier_kinds=kinds)

    assert list(one) == list(other) == ["device_id", "member_no", "ticket"]


def test_an_undeclared_kind_is_refused_by_name_with_the_known_kinds() -> None:
    error = refusal({"id": "C1", "member_no": "M-1"})

    assert error.field == "customer.member_no"
    assert "not an identifier kind" in error.message
    assert all(kind in error.message for kind in IDENTIFIER_KINDS)
    assert "PEAKEND_IDENTIFIER_KINDS" in error.message


def test_every_undeclared_kind_is_refused_with_the_other_faults_of_the_customer() -> None:
    with pytest.raises(InvalidTouchpoint) as caught:
        parse_touchpoint(
            envelope(None, T0, customer={"email": "nope", "member_no": "M", "ticket": 7}),
            identifier_kinds=["other"],
        )

    assert sorted(e.field for e in caught.value.errors) == [
        "customer.email",
        "customer.member_no",
        "customer.ticket",
    ]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("   ", "at least 1 character"),
        (7, "valid string"),
        (None, "valid string"),
        ("a\u200bb", "U+200B"),
    ],
)
def test_a_declared_kind_follows_the_rules_of_an_id(value: object, reason: str) -> None:
    error = refusal({"member_no": value}, identifier_kinds=["member_no"])

    assert error.field == "customer.member_no"
    assert reason in error.message


def test_the_published_schema_lists_the_declared_kinds() -> None:
    plain = touchpoint_schemas()
    declared = touchpoint_schemas(identifier_kinds=["member_no"])
    body = envelope({"member_no": "M-1"})

    def valid(schemas: dict[str, dict[str, Any]]) -> bool:
        document = {"$defs": schemas, **schemas["TouchpointIn"]}
        return bool(jsonschema.Draft202012Validator(document).is_valid(body))

    assert "member_no" in declared["CustomerIdentifiers"]["properties"]
    assert declared["CustomerIdentifiers"]["additionalProperties"] is False
    assert valid(declared) and not valid(plain)


# -- the settings -----------------------------------------------------------------------


def test_the_settings_default_to_no_region_and_no_extra_kinds() -> None:
    defaults = Settings()

    assert (defaults.phone_default_region, defaults.identifier_kinds) == (None, [])


def test_the_settings_read_a_region_and_kinds_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PEAKEND_PHONE_DEFAULT_REGION", "DE")
    monkeypatch.setenv("PEAKEND_IDENTIFIER_KINDS", '["member_no", "ticket_holder"]')

    configured = Settings()

    assert configured.phone_default_region == "DE"
    assert configured.identifier_kinds == ["member_no", "ticket_holder"]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"phone_default_region": "XX"}, "not a region"),
        ({"phone_default_region": "de"}, "not a region"),
        ({"identifier_kinds": ["email"]}, "built-in"),
        ({"identifier_kinds": ["Member"]}, "not an identifier kind name"),
        ({"identifier_kinds": ["m"]}, "not an identifier kind name"),
        ({"identifier_kinds": ["a" * 33]}, "not an identifier kind name"),
        ({"identifier_kinds": ["member_no", "member_no"]}, "twice"),
    ],
)
def test_the_settings_refuse_an_unknown_region_and_bad_kind_names(
    overrides: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ValidationError, match=reason):
        Settings(**overrides)
