"""The touchpoint envelope, version 1: what a touchpoint system tells us about one contact.

A touchpoint is an immutable fact: one contact between a customer and the company on one
channel, with the time it happened (event time, ``occurred_at``). The envelope is the
public contract of the ingest (HTTP and Kafka); it is validated here, field by field,
before anything is recorded.

Each ``type`` has its own payload model; an unknown type is refused with the list of the
known ones. Free-form ``additional`` attributes are kept but not interpreted.

What ingest accepts, every reducer and every read must handle (DESIGN.md, guarantee 7),
so the door is narrow on purpose: instants in a plausible range and in one format,
amounts as exact decimals within ``Money``'s digits, ISO 4217 currencies, bounded
quantities and durations, ids that read as they compare (NFC, no invisible characters,
never a relative path segment), text PostgreSQL and UTF-8 can hold, and at most
``MAX_NESTING`` levels of objects and arrays. ``touchpoint_schemas`` publishes the same
rules as JSON Schema.
"""

from __future__ import annotations

import copy
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, cast

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import NumberParseException, PhoneMetadata, PhoneNumberFormat
from phonenumbers.phonenumberutil import (
    COUNTRY_CODE_TO_REGION_CODE,
    ValidationResult,
    region_code_for_country_code,
)
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from domain.consent import (
    CONSENT_GIVEN,
    CONSENT_WITHDRAWN,
    PURPOSE_PATTERN,
    PURPOSE_RULE,
    ConsentMethod,
)

SCHEMA_VERSION = 1
CENT = Decimal("0.01")

# Levels of objects and arrays in one envelope, the envelope itself being level 1 (so
# ``additional`` is level 2). Reads serialise stored envelopes recursively (FastAPI's
# encoder, pydantic, json): an envelope 256+ levels deep once made a customer's timeline
# answer 500 forever. 32 is far below any such limit and far above any real attribute.
MAX_NESTING = 32
# The default of PEAKEND_EARLIEST_OCCURRED_AT: older instants are typing errors, and an
# instant near year 1 overflows when converted to UTC.
EARLIEST_OCCURRED_AT = datetime(1900, 1, 1, tzinfo=UTC)
MAX_QUANTITY = 1_000_000
MAX_DURATION_SECONDS = 31 * 24 * 3600  # a month: longer is a clock or unit error
# Money is numeric(14, 2) in spirit: 12 digits before the point, 2 after.
MAX_AMOUNT = Decimal("999999999999.99")

# ISO 4217 list one, as shipped by Debian's iso-codes 4.15.0
# (/usr/share/iso-codes/json/iso_4217.json, maintained from the SIX list), plus XCG
# (Caribbean guilder, 2025) and ZWG (Zimbabwe gold, 2024) added since; less XTS (codes
# reserved for testing) and XXX (no currency), which no purchase is in. A few codes
# withdrawn lately (HRK, SLL, ZWL, CUC, ANG) are kept: historical data carries them.
_ISO_4217_CODES = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD "
    "BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP "
    "DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HRK HTG HUF IDR ILS "
    "INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD "
    "MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR "
    "PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS "
    "SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW "
    "UZS VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XUA "
    "YER ZAR ZMW ZWG ZWL"
)
ISO_4217 = frozenset(_ISO_4217_CODES.split())

# Zero-width characters and bidirectional overrides/isolates: two ids that differ only in
# these look the same on every screen and in every log.
_INVISIBLE = frozenset(
    "\u200b\u200c\u200d\u2060\ufeff\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)

# JSON Schema patterns (ECMA-262 syntax that Python's re reads the same way). Every text
# excludes NUL (PostgreSQL text cannot hold it); ids also exclude the invisible characters.
_INVISIBLE_CLASS = r"\u200b-\u200d\u2060\ufeff\u202a-\u202e\u2066-\u2069"
NO_NUL_PATTERN = r"^[^\u0000]*$"
TEXT_PATTERN = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
ID_PATTERN = (
    rf"^[^\u0000{_INVISIBLE_CLASS}]*[^\s\u0000{_INVISIBLE_CLASS}][^\u0000{_INVISIBLE_CLASS}]*$"
)
URL_ID_PATTERN = (
    rf"^(?!\s*\.{{1,2}}\s*$)[^/\u0000{_INVISIBLE_CLASS}]*"
    rf"[^/\s\u0000{_INVISIBLE_CLASS}][^/\u0000{_INVISIBLE_CLASS}]*$"
)
AMOUNT_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,2})?$"
# The format occurred_at and every other instant is read in (RFC 3339, seconds required).
INSTANT_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"(Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
INSTANT_EXAMPLE = "2026-03-01T10:30:00+01:00"
_INSTANT = re.compile(INSTANT_PATTERN)
_AMOUNT = re.compile(AMOUNT_PATTERN)
_PURPOSE = re.compile(PURPOSE_PATTERN)


def _string_schema(pattern: str, max_length: int, min_length: int = 1) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "maxLength": max_length, "pattern": pattern}
    if min_length:
        schema["minLength"] = min_length
    return schema


def printable(text: str, limit: int = 80) -> str:
    """``text`` made safe to echo in an error: lone surrogates and NUL escaped (an answer
    or a log line that cannot be encoded would turn a 4xx into a 500), and cut short."""
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return safe if len(safe) <= limit else safe[: limit - 1] + "\u2026"


# ---------------------------------------------------------------------------------------
# Field types
# ---------------------------------------------------------------------------------------

Text = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    WithJsonSchema(_string_schema(TEXT_PATTERN, 200)),
]


def _nfc(value: Any) -> Any:
    # One id, one spelling: "é" typed as e + U+0301 is the same customer as U+00E9.
    return unicodedata.normalize("NFC", value) if isinstance(value, str) else value


def _visible(value: str) -> str:
    hidden = sorted({f"U+{ord(ch):04X}" for ch in value if ch in _INVISIBLE})
    if hidden:
        raise ValueError(
            "an id cannot hold zero-width or bidirectional control characters "
            f"({', '.join(hidden)}): two such ids look identical and are not"
        )
    return value


def _url_segment(value: str) -> str:
    if "/" in value:
        raise ValueError(
            "'/' is not allowed in an id: ids are read back at URL paths such as /v1/customers/{id}"
        )
    if value in (".", ".."):
        raise ValueError(
            f"{value!r} is not allowed as an id: it is a relative path segment, so it "
            "cannot be read back at /v1/customers/{id}"
        )
    return value


Identifier = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    BeforeValidator(_nfc),
    AfterValidator(_visible),
    WithJsonSchema(_string_schema(ID_PATTERN, 200)),
]
UrlSafeId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    BeforeValidator(_nfc),
    AfterValidator(_visible),
    AfterValidator(_url_segment),
    WithJsonSchema(_string_schema(URL_ID_PATTERN, 200)),
]

AMOUNT_RULE = (
    'a decimal string such as "19.99" or an integer, from 0 to 999999999999.99, '
    "with at most two decimals"
)


def _amount_or_reason(value: Any) -> Decimal | str:
    """An exact, non-negative amount of at most 12 + 2 digits, or why ``value`` is not one.

    JSON numbers with a fraction are refused (10.5 has already been through a binary
    float), as are Python's extra spellings that are not decimal notation ("1_000",
    "1e3", " 5"), and every negative, "-0" included: an amount paid is never negative,
    and "-0" would be stored as "-0.00"."""
    if isinstance(value, bool):
        return "true or false is not an amount"
    if isinstance(value, float):
        return 'a JSON number with a fraction is not exact: send a string such as "10.50"'
    if isinstance(value, int):
        if 0 <= value <= MAX_AMOUNT:
            return Decimal(value).quantize(CENT)
        return f"{value} is out of range"
    if isinstance(value, Decimal):  # from Python callers (simulator, importer), not JSON
        if value.is_finite() and 0 <= value <= MAX_AMOUNT and value == value.quantize(CENT):
            return value.quantize(CENT) + 0  # + 0 turns -0 into 0
        return f"{value} is not an amount"
    if not isinstance(value, str):
        return f"a JSON {type(value).__name__} is not an amount"
    if _AMOUNT.fullmatch(value):
        return Decimal(value).quantize(CENT)
    text = value.strip()
    if text.startswith("-"):
        reason = "negative amounts are refused (-0 included)"
    elif "_" in text:
        reason = "digit separators such as '_' are not allowed"
    elif "e" in text.lower() and text.lower() not in ("nan", "inf", "infinity"):
        reason = "exponent notation is not allowed"
    elif re.fullmatch(r"[0-9]+\.[0-9]{3,}", text):
        reason = "at most 2 decimal places"
    elif re.fullmatch(r"[0-9]{13,}(\.[0-9]*)?", text):
        reason = "at most 12 digits before the decimal point"
    else:
        reason = "not a decimal amount"
    return reason


def _money(value: Any) -> Decimal:
    amount = _amount_or_reason(value)
    if isinstance(amount, str):
        raise ValueError(f"{amount}; an amount is {AMOUNT_RULE}")
    return amount


AMOUNT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": AMOUNT_PATTERN},
        {"type": "integer", "minimum": 0, "maximum": int(MAX_AMOUNT)},
    ],
    "description": f"an exact amount: {AMOUNT_RULE}; stored with two decimals",
}
Money = Annotated[Decimal, BeforeValidator(_money), WithJsonSchema(AMOUNT_SCHEMA)]


def _iso_currency(value: str) -> str:
    if value not in ISO_4217:
        raise ValueError(
            f"{printable(value, 12)!r} is not an active ISO 4217 currency code (such as EUR, USD)"
        )
    return value


CurrencyCode = Annotated[
    str,
    AfterValidator(_iso_currency),
    WithJsonSchema({"type": "string", "enum": sorted(ISO_4217)}),
]
Emotion = Annotated[int, Field(ge=-3, le=3, strict=True)]
Quantity = Annotated[int, Field(ge=1, le=MAX_QUANTITY, strict=True)]
Seconds = Annotated[int, Field(ge=0, le=MAX_DURATION_SECONDS, strict=True)]


def _instant_text(value: Any) -> Any:
    """Only ISO-8601 text with an offset: pydantic would also read 19970101 (a JSON number
    or a bare digit string) as Unix seconds, 1970-08-20, silently."""
    if isinstance(value, datetime):  # from Python callers; AwareDatetime checks the offset
        return value
    if isinstance(value, str) and _INSTANT.fullmatch(value):
        return value
    refused = ""
    if isinstance(value, int | float):
        refused = "; a JSON number is not read as a timestamp"
    elif isinstance(value, str) and value.strip().isdigit():
        refused = "; a bare digit string is not read as a timestamp"
    raise ValueError(
        "expected an ISO-8601 date and time with seconds and a timezone offset, "
        f"e.g. {INSTANT_EXAMPLE}{refused}"
    )


def _earliest(info: ValidationInfo) -> datetime:
    earliest = (info.context or {}).get("earliest")
    return earliest if isinstance(earliest, datetime) else EARLIEST_OCCURRED_AT


def _plausible(value: datetime, info: ValidationInfo) -> datetime:
    earliest = _earliest(info)
    if value < earliest:
        raise ValueError(
            f"{value.isoformat()} is before {earliest.isoformat()}, the earliest instant accepted"
        )
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value.isoformat()} is beyond the last representable instant") from None
    return value


def _not_in_the_future(value: datetime, info: ValidationInfo) -> datetime:
    context = info.context or {}
    now: datetime | None = context.get("now")
    skew: timedelta | None = context.get("max_future_skew")
    if now is not None and skew is not None and value - now > skew:
        raise ValueError(
            f"occurred_at is {value - now} ahead of the server clock; "
            f"at most {skew} of clock skew is accepted"
        )
    return value


def _instant_schema(description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "format": "date-time",
        # The years the default range allows; the exact bounds are in the description.
        "pattern": INSTANT_PATTERN.replace("^[0-9]{4}", "^(19|20)[0-9]{2}"),
        "description": description,
        "examples": [INSTANT_EXAMPLE],
    }


Instant = Annotated[
    AwareDatetime,
    BeforeValidator(_instant_text),
    AfterValidator(_plausible),
    WithJsonSchema(
        _instant_schema(
            "ISO-8601 date and time with seconds and an offset; not before "
            "PEAKEND_EARLIEST_OCCURRED_AT (default 1900-01-01T00:00:00Z)"
        )
    ),
]
OccurredAt = Annotated[
    AwareDatetime,
    BeforeValidator(_instant_text),
    AfterValidator(_plausible),
    AfterValidator(_not_in_the_future),
    WithJsonSchema(
        _instant_schema(
            "when the contact happened: ISO-8601 date and time with seconds and an offset "
            f"(e.g. {INSTANT_EXAMPLE}); not before PEAKEND_EARLIEST_OCCURRED_AT (default "
            "1900-01-01T00:00:00Z) and not more than PEAKEND_MAX_FUTURE_SKEW_SECONDS "
            "(default 300) ahead of the server clock"
        )
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------
# Payloads, one model per touchpoint type
# ---------------------------------------------------------------------------------------


class VisitPayload(_Strict):
    location: Text | None = None
    duration_seconds: Seconds | None = None


class CallPayload(_Strict):
    direction: Literal["inbound", "outbound"] = "inbound"
    duration_seconds: Seconds | None = None
    wait_seconds: Seconds | None = None
    reason: Text | None = None


class PurchaseItem(_Strict):
    sku: Identifier
    quantity: Quantity = 1
    unit_price: Money | None = None


class PurchasePayload(_Strict):
    order_id: Identifier
    amount: Money
    currency: CurrencyCode
    items: list[PurchaseItem] = Field(default_factory=list, max_length=1000)


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


Note = Annotated[
    str, StringConstraints(max_length=2000), WithJsonSchema(_string_schema(NO_NUL_PATTERN, 2000, 0))
]


class ComplaintPayload(_Strict):
    """Every step of complaint handling names the complaint it belongs to."""

    complaint_id: Identifier
    category: Text | None = None
    severity: Severity | None = None
    compensation: Money | None = None
    note: Note | None = None


class ComplaintFiledPayload(ComplaintPayload):
    category: Text
    severity: Severity = Severity.MEDIUM


class SurveyMetric(StrEnum):
    NPS = "nps"
    CSAT = "csat"
    CES = "ces"
    EXPECTATION = "expectation"
    PERCEIVED_QUALITY = "perceived_quality"
    IMPORTANCE = "importance"
    KANO_FUNCTIONAL = "kano_functional"
    KANO_DYSFUNCTIONAL = "kano_dysfunctional"
    CATEGORY_SPEND = "category_spend"  # what the customer spends a year in our category


KANO_ANSWERS = ("like", "expect", "neutral", "tolerate", "dislike")

# Inclusive numeric range of each scored metric (DOMAIN.md §4).
METRIC_RANGES: dict[SurveyMetric, tuple[int, int]] = {
    SurveyMetric.NPS: (0, 10),
    SurveyMetric.CSAT: (1, 5),
    SurveyMetric.CES: (1, 7),
    SurveyMetric.EXPECTATION: (0, 10),
    SurveyMetric.PERCEIVED_QUALITY: (0, 10),
    SurveyMetric.IMPORTANCE: (0, 10),
}


def _amount(value: Any) -> Decimal | None:
    """A money amount given as a string or an integer (``Money``'s rule), else None."""
    amount = _amount_or_reason(value)
    return None if isinstance(amount, str) else amount


def _survey_variants(schema: dict[str, Any]) -> None:
    """The value each metric takes, and what it must name, as one variant per metric."""
    variants: list[dict[str, Any]] = []
    for metric in SurveyMetric:
        value: dict[str, Any]
        required = ["metric"]
        if metric is SurveyMetric.CATEGORY_SPEND:
            value, required = AMOUNT_SCHEMA, [*required, "currency"]
        elif metric in (SurveyMetric.KANO_FUNCTIONAL, SurveyMetric.KANO_DYSFUNCTIONAL):
            value, required = {"enum": list(KANO_ANSWERS)}, [*required, "feature"]
        else:
            low, high = METRIC_RANGES[metric]
            value = {"type": "integer", "minimum": low, "maximum": high}
            if metric is SurveyMetric.IMPORTANCE:
                required.append("attribute")
        properties: dict[str, Any] = {"metric": {"const": metric.value}, "value": value}
        # A name this metric needs is given as text, never null.
        properties.update({name: {"type": "string"} for name in required[1:]})
        variants.append({"properties": properties, "required": required})
    schema["oneOf"] = variants


class SurveyAnsweredPayload(_Strict):
    survey_id: Identifier
    question_id: Identifier
    metric: SurveyMetric
    value: Any = Field(
        description="an integer on the metric's scale, a Kano answer, or an amount (category_spend)"
    )
    attribute: Text | None = None
    feature: Text | None = None
    currency: CurrencyCode | None = None

    model_config = ConfigDict(json_schema_extra=_survey_variants)

    @model_validator(mode="after")
    def _value_fits_metric(self) -> SurveyAnsweredPayload:
        if self.metric is SurveyMetric.CATEGORY_SPEND:
            if self.currency is None:
                raise ValueError("currency: a declared category spend names its currency")
            amount = _amount_or_reason(self.value)
            if isinstance(amount, str):
                raise ValueError(f"value: category_spend is {AMOUNT_RULE}; {amount}")
            object.__setattr__(self, "value", str(amount))  # model is frozen
            return self
        if self.metric in (SurveyMetric.KANO_FUNCTIONAL, SurveyMetric.KANO_DYSFUNCTIONAL):
            if self.value not in KANO_ANSWERS:
                raise ValueError(f"value: a Kano answer is one of {', '.join(KANO_ANSWERS)}")
            if self.feature is None:
                raise ValueError("feature: a Kano answer names the feature it is about")
            return self
        low, high = METRIC_RANGES[self.metric]
        if isinstance(self.value, bool) or not isinstance(self.value, int):  # 9.0, true: no
            raise ValueError(f"value: {self.metric} is an integer from {low} to {high}")
        if not low <= self.value <= high:
            raise ValueError(f"value: {self.metric} is from {low} to {high}, got {self.value}")
        if self.metric is SurveyMetric.IMPORTANCE and self.attribute is None:
            raise ValueError("attribute: an importance answer names the attribute it rates")
        return self


class DeliveryPayload(_Strict):
    order_id: Identifier | None = None
    promised_at: Instant | None = None
    on_time: bool | None = None


class ServiceAppointmentPayload(_Strict):
    appointment_id: Identifier | None = None
    service: Text | None = None


class MessagePayload(_Strict):
    direction: Literal["inbound", "outbound"] = "inbound"
    subject: Text | None = None


def _purpose(value: str) -> str:
    if not _PURPOSE.fullmatch(value):
        raise ValueError(f"{printable(value, 40)!r} is not a purpose name; {PURPOSE_RULE}")
    return value


Purpose = Annotated[
    str,
    AfterValidator(_purpose),
    WithJsonSchema({"type": "string", "pattern": PURPOSE_PATTERN, "description": PURPOSE_RULE}),
]


class ConsentPayload(_Strict):
    """A consent decision for one purpose (``domain.consent``): what a controller needs to
    demonstrate it (GDPR Art. 7(1)): what it was for, which notice the customer saw, how
    it was captured, by whom, and where the proof is kept. The proof itself (a signed
    form, a recording) stays where it is; ``evidence_ref`` names it."""

    purpose: Purpose = Field(description="what the consent is for, such as marketing")
    policy_version: Text | None = Field(
        default=None, description="the version of the notice or consent text shown"
    )
    method: ConsentMethod | None = Field(default=None, description="how it was captured")
    evidence_ref: Identifier | None = Field(
        default=None, description="where the proof is kept: a form number, a recording id"
    )
    captured_by: Identifier | None = Field(
        default=None, description="the staff member or system that captured it"
    )


PAYLOADS: dict[str, type[BaseModel]] = {
    "visit": VisitPayload,
    "call": CallPayload,
    "message": MessagePayload,
    "purchase": PurchasePayload,
    "delivery": DeliveryPayload,
    "service_appointment": ServiceAppointmentPayload,
    "complaint_filed": ComplaintFiledPayload,
    "complaint_acknowledged": ComplaintPayload,
    "complaint_resolved": ComplaintPayload,
    "complaint_followed_up": ComplaintPayload,
    "survey_answered": SurveyAnsweredPayload,
    CONSENT_GIVEN: ConsentPayload,
    CONSENT_WITHDRAWN: ConsentPayload,
}
KNOWN_TYPES = tuple(sorted(PAYLOADS))
COMPLAINT_TYPES = frozenset(t for t in PAYLOADS if t.startswith("complaint_"))


# ---------------------------------------------------------------------------------------
# Envelope
# ---------------------------------------------------------------------------------------

# The built-in kinds, strongest first: the order a customer is resolved in. Kinds declared
# in settings (PEAKEND_IDENTIFIER_KINDS) come after them.
IDENTIFIER_KINDS = ("id", "email", "phone", "loyalty_card", "device_id", "crm_id", "account_id")
IDENTIFIER_KIND_PATTERN = r"^[a-z][a-z0-9_]{1,31}$"
_IDENTIFIER_KIND = re.compile(IDENTIFIER_KIND_PATTERN)


def declared_identifier_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """``kinds`` checked as the names of extra identifier kinds: each matches
    ``IDENTIFIER_KIND_PATTERN``, none is a built-in kind or given twice."""
    names = tuple(kinds)
    for name in names:
        if not _IDENTIFIER_KIND.fullmatch(name):
            raise ValueError(
                f"{printable(name, 40)!r} is not an identifier kind name: lower-case letters, "
                "digits and '_', starting with a letter, 2 to 32 characters"
            )
        if name in IDENTIFIER_KINDS:
            raise ValueError(f"{name!r} is a built-in identifier kind already")
    if len(set(names)) != len(names):
        raise ValueError("an identifier kind is declared twice")
    return names


# -- e-mail -----------------------------------------------------------------------------

EMAIL_MAX_LENGTH = 254  # RFC 5321 (a path of 256 octets less the angle brackets)
EMAIL_RULE = (
    "an e-mail address, checked by email-validator (syntax only, no DNS): a dot-atom "
    "local part (no quotes, no display name), a domain name (internationalised names "
    "allowed, no IP address, no special-use domain such as .test, .local or localhost); "
    "trimmed, normalised to NFC and lower-cased as a whole"
)
# What the published schema allows: a conservative subset of what the parser accepts (a
# regex cannot state IDNA or every special-use name), so that every address it matches is
# accepted. ASCII only; labels of letters and digits joined by single hyphens (IDNA 2008
# refuses "--" in the third and fourth places); a top-level domain of letters that is not
# a special-use name. Upper case is accepted by the parser (and lower-cased), not here.
_LOCAL_ATOM = r"[a-z0-9_%+-]{1,20}"
_LABEL = r"[a-z0-9]{1,20}(?:-[a-z0-9]{1,20}){0,2}"
_SPECIAL_USE_TLDS = "arpa|invalid|local|localhost|onion|test"
EMAIL_PATTERN = (
    rf"^{_LOCAL_ATOM}(?:\.{_LOCAL_ATOM}){{0,2}}@(?:{_LABEL}\.){{1,3}}"
    rf"(?!(?:{_SPECIAL_USE_TLDS})$)[a-z]{{2,24}}$"
)


def _email_address(address: str) -> str:
    """One address, one spelling: email-validator's normalised form (NFC local part,
    IDNA domain in Unicode: "xn--bcher-kva.de" and "bücher.de" are one domain), lower
    case as a whole. Mailboxes are case-sensitive in theory and never in practice; one
    customer typing "Ann@" and "ann@" is one customer."""
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError as error:
        raise ValueError(str(error)) from None
    return checked.normalized.lower()


Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_lower=True, max_length=EMAIL_MAX_LENGTH),
    BeforeValidator(_nfc),
    AfterValidator(_visible),  # invisible characters first: its message names them
    AfterValidator(_email_address),
    WithJsonSchema(
        _string_schema(EMAIL_PATTERN, EMAIL_MAX_LENGTH)
        | {"description": f"{EMAIL_RULE}. The pattern is a conservative subset of the rule."}
    ),
]


# -- phone ------------------------------------------------------------------------------

PHONE_MAX_LENGTH = 64
PHONE_RULE = (
    "a phone number, normalised to E.164 (+49301234567) by libphonenumber: in "
    "international form with a leading + (spaces, dots, dashes and parentheses "
    "allowed), or in national form when PEAKEND_PHONE_DEFAULT_REGION names the region "
    "it is read in; refused unless its length is possible for its country (a local "
    "number without its area code is refused); no extension"
)


def _phone_pattern() -> str:
    """The published pattern of a phone: "+", a calling code, and a national number
    starting with 1-9 of a length libphonenumber holds possible for that code (its
    metadata, so the pattern is what the installed library accepts), digits optionally
    separated by single spaces. Stricter than the parser (no national form, no
    punctuation), never looser: tests/unit/test_identifiers.py checks that every match is
    accepted without a default region."""
    by_lengths: dict[tuple[int, ...], list[str]] = {}
    for code in sorted(COUNTRY_CODE_TO_REGION_CODE):
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(
            code, region_code_for_country_code(code)
        )
        if metadata is None or metadata.general_desc is None:
            continue
        lengths = tuple(sorted(metadata.general_desc.possible_length))
        if lengths:
            by_lengths.setdefault(lengths, []).append(str(code))
    alternatives = []
    for lengths, codes in sorted(by_lengths.items()):
        spans = _spans(lengths)
        rest = "|".join(f"(?: ?[0-9]){{{low - 1},{high - 1}}}" for low, high in spans)
        alternatives.append(f"(?:{'|'.join(codes)}) ?[1-9](?:{rest})")
    return rf"^\+(?:{'|'.join(alternatives)})$"


def _spans(lengths: tuple[int, ...]) -> list[tuple[int, int]]:
    """Sorted lengths as runs of consecutive values: (6, 7, 8, 10) -> [(6, 8), (10, 10)]."""
    spans: list[tuple[int, int]] = []
    for length in lengths:
        if spans and spans[-1][1] == length - 1:
            spans[-1] = (spans[-1][0], length)
        else:
            spans.append((length, length))
    return spans


PHONE_PATTERN = _phone_pattern()
_PLUS = ("+", "\uff0b")  # libphonenumber reads the full-width plus as a plus too

_LENGTH_REFUSALS = {
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "not of a possible length",
}


def _phone_region(info: ValidationInfo) -> str | None:
    region = (info.context or {}).get("phone_region")
    return region if isinstance(region, str) else None


def _phone_number(text: str, info: ValidationInfo) -> str:
    """The number in E.164. Possible, not valid (libphonenumber's two checks): validity
    follows the numbering plans' allocations, which change with every library release, so
    a newly allocated range would be refused (a lost touchpoint) until an upgrade; a
    possible length is what tells a typo, and the spelling is what identity needs."""
    region = _phone_region(info)
    if region is None and not text.startswith(_PLUS):
        raise ValueError(
            "a phone number without a country code: send it in international form with a "
            "leading + (such as +49 30 1234567), or set PEAKEND_PHONE_DEFAULT_REGION to the "
            "region national numbers are read in"
        )
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as error:
        reason = {
            NumberParseException.INVALID_COUNTRY_CODE: "no known country code after the +",
            NumberParseException.TOO_SHORT_NSN: "too short to be a phone number",
            NumberParseException.TOO_SHORT_AFTER_IDD: "too short after the international prefix",
            NumberParseException.TOO_LONG: "too long to be a phone number",
        }.get(error.error_type, "not a phone number")
        national = region is not None and not text.startswith(_PLUS)
        raise ValueError(f"{reason} (read in region {region})" if national else reason) from None
    if number.extension:
        # An extension reaches a desk behind a shared switchboard: dropping it would make
        # every caller from that company one phone identifier.
        raise ValueError("a phone number with an extension: send the customer's own number")
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible == ValidationResult.IS_POSSIBLE_LOCAL_ONLY:
        raise ValueError(
            f"{e164} is a local number without its area code: it is ambiguous, send the "
            "whole number"
        )
    if possible != ValidationResult.IS_POSSIBLE:
        region_of = phonenumbers.region_code_for_number(number) or "its country"
        reason = _LENGTH_REFUSALS.get(possible, "not a possible number")
        raise ValueError(f"{e164} is {reason} for a number of {region_of}")
    return e164


Phone = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=PHONE_MAX_LENGTH),
    BeforeValidator(_nfc),
    AfterValidator(_visible),
    AfterValidator(_phone_number),
    WithJsonSchema(
        _string_schema(PHONE_PATTERN, PHONE_MAX_LENGTH)
        | {
            "description": f"{PHONE_RULE}. The pattern is the international form only, "
            "as the default configuration (no default region) accepts it.",
            "examples": ["+49 30 1234567"],
        }
    ),
]


# -- the identifiers object -------------------------------------------------------------


def _declared_kinds(info: ValidationInfo) -> tuple[str, ...]:
    kinds = (info.context or {}).get("identifier_kinds")
    return tuple(kinds) if isinstance(kinds, tuple | list) else ()


def _identifiers_schema(schema: dict[str, Any]) -> None:
    # Extra kinds are published by touchpoint_schemas, with the configured names.
    schema["additionalProperties"] = False
    schema["anyOf"] = [
        {"required": [kind], "properties": {kind: {"type": "string"}}} for kind in IDENTIFIER_KINDS
    ]


class CustomerIdentifiers(_Strict):
    """One or more identifiers of the customer, as the source knows them: the built-in
    kinds, and the kinds declared in settings (validated as ids, like ``loyalty_card``;
    held as pydantic extras, since their names are configuration)."""

    id: UrlSafeId | None = None
    email: Email | None = None
    phone: Phone | None = None
    loyalty_card: Identifier | None = None
    device_id: Identifier | None = None
    crm_id: Identifier | None = None
    account_id: Identifier | None = None

    __pydantic_extra__: dict[str, Identifier] = Field(init=False)

    model_config = ConfigDict(extra="allow", frozen=True, json_schema_extra=_identifiers_schema)

    @model_validator(mode="wrap")
    @classmethod
    def _only_declared_kinds(
        cls,
        data: Any,
        handler: ModelWrapValidatorHandler[CustomerIdentifiers],
        info: ValidationInfo,
    ) -> CustomerIdentifiers:
        """Keys beyond the built-in kinds are accepted only when declared; each other one
        is refused by name, together with whatever else is wrong in the object."""
        if not isinstance(data, dict):
            return handler(data)
        declared = _declared_kinds(info)
        undeclared = [k for k in data if k not in cls.model_fields and k not in declared]
        if not undeclared:
            return handler(data)
        known = ", ".join((*IDENTIFIER_KINDS, *declared))
        reason = (
            f"not an identifier kind; the kinds are {known} (more can be declared in "
            "PEAKEND_IDENTIFIER_KINDS)"
        )
        errors: list[InitErrorDetails] = []
        try:
            handler({k: v for k, v in data.items() if k not in undeclared})
        except ValidationError as error:
            errors.extend(cast(list[InitErrorDetails], error.errors()))
        errors.extend(
            {
                "type": PydanticCustomError("identifier_kind", "{reason}", {"reason": reason}),
                "loc": (key,),
                "input": data[key],
            }
            for key in undeclared
        )
        raise ValidationError.from_exception_data(cls.__name__, errors)

    @model_validator(mode="after")
    def _at_least_one(self) -> CustomerIdentifiers:
        if not self.present():
            raise ValueError(
                "a touchpoint names its customer by at least one identifier: "
                + ", ".join(IDENTIFIER_KINDS)
                + ", or a kind declared in PEAKEND_IDENTIFIER_KINDS"
            )
        return self

    def present(self) -> dict[str, str]:
        """The identifiers given, by kind: the built-in kinds in the order of
        IDENTIFIER_KINDS, then the declared kinds in alphabetical order (an order that
        does not depend on how the sender, or the setting, orders them)."""
        found = {
            kind: value for kind in IDENTIFIER_KINDS if (value := getattr(self, kind)) is not None
        }
        extra = self.__pydantic_extra__ or {}
        found.update((kind, extra[kind]) for kind in sorted(extra))
        return found


class JourneyMembership(_Strict):
    id: UrlSafeId
    type: Text
    step: Text


class TouchpointIn(_Strict):
    """Touchpoint envelope v1 (DESIGN.md). ``payload`` is checked against ``type``."""

    schema_: Literal[1] = Field(default=1, alias="schema")
    event_id: Identifier
    type: Annotated[str, Field(json_schema_extra={"enum": list(KNOWN_TYPES)})]
    occurred_at: OccurredAt
    channel: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_\-]{0,39}$")]
    customer: CustomerIdentifiers
    journey: JourneyMembership | None = None
    emotion: Emotion | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    additional: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("channel", mode="before")
    @classmethod
    def _channel_in_lower_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in PAYLOADS:
            raise ValueError(
                f"unknown touchpoint type {printable(value, 40)!r}; known types: "
                + ", ".join(KNOWN_TYPES)
            )
        return value


@dataclass(frozen=True)
class Touchpoint:
    """One contact, as the domain records it: the validated envelope's values, with the
    customer's identifiers normalised and present by kind, and the ``schema`` version
    of the envelope it came in (a later envelope version may say the same thing in
    other words; whoever reads the record then knows which words it was told in)."""

    event_id: str
    type: str
    occurred_at: datetime
    channel: str
    identifiers: dict[str, str]
    journey: dict[str, str] | None
    emotion: int | None
    payload: dict[str, Any]
    additional: dict[str, Any]
    envelope_schema: int


def touchpoint_of(envelope: TouchpointIn) -> Touchpoint:
    """The domain value of a validated envelope: the one place the wire becomes the
    domain, so the aggregate never sees the wire DTO."""
    return Touchpoint(
        event_id=envelope.event_id,
        type=envelope.type,
        occurred_at=envelope.occurred_at,
        channel=envelope.channel,
        identifiers=envelope.customer.present(),
        journey=envelope.journey.model_dump() if envelope.journey else None,
        emotion=envelope.emotion,
        payload=dict(envelope.payload),
        additional=dict(envelope.additional),
        envelope_schema=envelope.schema_,
    )


class FieldError(BaseModel):
    """One reason a field was refused: ``field`` is a dotted path into the envelope."""

    field: str
    message: str


def field_errors(error: ValidationError) -> list[FieldError]:
    """Flatten a pydantic error into ``field``/``message`` pairs a client can act on."""
    out = []
    for item in error.errors(include_url=False):
        path = [printable(str(p), 40) for p in item["loc"]]
        message = str(item["msg"]).removeprefix("Value error, ")
        # Our model validators prefix the message with the field they judge.
        head, sep, rest = message.partition(": ")
        if sep and " " not in head and head.replace("_", "").isalnum():
            path.append(head)
            message = rest
        out.append(FieldError(field=".".join(path) or "body", message=message))
    return out


def parse_identifiers(
    raw: Mapping[str, Any], *, phone_region: str | None = None, identifier_kinds: Iterable[str] = ()
) -> dict[str, str]:
    """Customer identifiers as an envelope's ``customer`` takes them, normalised the same
    way (so a lookup by e-mail or phone finds what ingest linked); raise
    ``InvalidTouchpoint`` naming each bad one."""
    if errors := _unhandleable(dict(raw)):  # NUL, lone surrogates: as at ingest
        raise InvalidTouchpoint(errors)
    context = {"phone_region": phone_region, "identifier_kinds": tuple(identifier_kinds)}
    try:
        return CustomerIdentifiers.model_validate(dict(raw), context=context).present()
    except ValidationError as error:
        raise InvalidTouchpoint(field_errors(error)) from None


class InvalidTouchpoint(ValueError):
    """A touchpoint refused at the door, with every reason, field by field. ``event_id``
    is the id as sent, when it can be echoed (a string UTF-8 can encode), else None."""

    def __init__(self, errors: list[FieldError], event_id: str | None = None) -> None:
        # Every field and message is made safe to encode, whatever a validator quoted.
        self.errors = [
            FieldError(field=printable(e.field, 400), message=printable(e.message, 2000))
            for e in errors
        ]
        self.event_id = event_id
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in self.errors))


def _echoable_event_id(raw: Any) -> str | None:
    event_id = raw.get("event_id") if isinstance(raw, dict) else None
    if not isinstance(event_id, str) or len(event_id) > 200:
        return None
    return event_id if printable(event_id, 201) == event_id else None


def _dotted(path: Iterable[object]) -> str:
    return ".".join(printable(str(p), 40) for p in path) or "body"


def _unhandleable(raw: Any, max_nesting: int = MAX_NESTING) -> list[FieldError]:
    """What no read could serve, anywhere in the envelope, keys included: nesting deeper
    than ``max_nesting``; strings PostgreSQL text and jsonb cannot hold (NUL) or UTF-8
    cannot encode (lone surrogates: json.loads turns a "\\ud800" escape into one). Refused
    at the door, because once recorded they would fail every read of the customer.
    Iterative, so that no depth of input can exhaust the stack here."""
    found: list[FieldError] = []
    stack: list[tuple[Any, int, tuple[object, ...]]] = [(raw, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                found.append(FieldError(field=_dotted(path), message="contains a NUL character"))
            elif printable(value, len(value) + 1) != value:
                found.append(
                    FieldError(
                        field=_dotted(path),
                        message="contains a lone surrogate (not valid Unicode)",
                    )
                )
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > max_nesting:
            found.append(
                FieldError(
                    field=_dotted(path),
                    message=f"nested too deeply: at most {max_nesting} levels of objects and "
                    "arrays are accepted, counted from the envelope",
                )
            )
            continue
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in reversed(list(items)):  # reversed: errors come out in input order
            if isinstance(key, str):
                stack.append((key, depth, (*path, key)))
            stack.append((item, depth + 1, (*path, key)))
    return found


def parse_touchpoint(
    raw: Any,
    *,
    now: datetime | None = None,
    max_future_skew: timedelta | None = None,
    earliest: datetime = EARLIEST_OCCURRED_AT,
    phone_region: str | None = None,
    identifier_kinds: Iterable[str] = (),
) -> TouchpointIn:
    """Validate one envelope and its type's payload; raise ``InvalidTouchpoint`` listing
    every bad field (envelope and payload together, so one round trip shows them all).

    ``now`` and ``max_future_skew`` bound ``occurred_at`` from above (no bound without
    them); ``earliest`` bounds every instant from below. ``phone_region`` (an ISO 3166
    region such as DE) is the region a phone number without a country code is read in;
    without it such a number is refused. ``identifier_kinds`` are the extra kinds of
    customer identifier accepted besides ``IDENTIFIER_KINDS``."""
    event_id = _echoable_event_id(raw)
    errors = _unhandleable(raw)
    if errors:
        raise InvalidTouchpoint(errors, event_id)
    context = {
        "now": now,
        "max_future_skew": max_future_skew,
        "earliest": earliest,
        "phone_region": phone_region,
        "identifier_kinds": tuple(identifier_kinds),
    }
    envelope: TouchpointIn | None = None
    try:
        envelope = TouchpointIn.model_validate(raw, context=context)
    except ValidationError as error:
        errors.extend(field_errors(error))
    kind = raw.get("type") if isinstance(raw, dict) else None
    model = PAYLOADS.get(kind) if isinstance(kind, str) else None
    payload: dict[str, Any] = {}
    if model is not None and isinstance(raw, dict) and isinstance(raw.get("payload", {}), dict):
        try:
            parsed = model.model_validate(raw.get("payload", {}), context=context)
            payload = parsed.model_dump(mode="json", exclude_none=True)
        except ValidationError as error:
            errors.extend(
                FieldError(field=f"payload.{e.field}", message=e.message)
                for e in field_errors(error)
            )
    if errors or envelope is None:
        raise InvalidTouchpoint(errors, event_id)
    return envelope.model_copy(update={"payload": payload})


# ---------------------------------------------------------------------------------------
# The wire: strict JSON in, published JSON Schema out
# ---------------------------------------------------------------------------------------


class MalformedJson(ValueError):
    """A body or message that is not strict JSON (RFC 8259): nothing of it is read."""


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys: the sender meant one of them, and
    # which one is a guess. Refused, naming the key.
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {printable(key, 40)!r}: give each key once")
            seen.add(key)
    return found


def _non_finite(constant: str) -> float:
    raise ValueError(f"{constant} is not a JSON number")


def _finite_float(text: str) -> float | int:
    """A JSON number written with a fraction or an exponent. One with no fractional part
    (``10.0``, ``1e2``) is the integer it equals, as JSON Schema's ``integer`` has it, when
    it is exact (below 2**53); any other stays a float, which amounts refuse as inexact."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{printable(text, 40)} is out of range for a number")
    if value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def loads_json(body: bytes | str) -> Any:
    """Parse strict JSON (RFC 8259): no NaN or Infinity, no number that overflows a
    double, no key twice in one object. Raise ``MalformedJson`` with a printable reason."""
    try:
        return json.loads(
            body,
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_non_finite,
            parse_float=_finite_float,
        )
    except RecursionError:
        raise MalformedJson(
            f"nested too deeply (at most {MAX_NESTING} levels are accepted)"
        ) from None
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MalformedJson(printable(str(error), 300)) from None


def touchpoint_schemas(
    ref_template: str = "#/$defs/{model}", identifier_kinds: Iterable[str] = ()
) -> dict[str, dict[str, Any]]:
    """The published JSON Schemas of the envelope, by name. ``TouchpointIn`` is a ``oneOf``
    with one variant per ``type`` (an OpenAPI discriminator), each carrying its payload's
    schema; the payload models and ``AdditionalValue`` come along.

    The schema says what the parser enforces, as far as a static schema can: the parser's
    own patterns, lengths, ranges and enums. The rest is stated in descriptions: the
    clock bound of ``occurred_at``, a configured earliest instant, the nesting limit
    inside ``additional``, NFC normalisation of ids, that text is trimmed, the e-mail
    and phone rules beyond their (conservative) patterns. ``identifier_kinds`` are the
    extra kinds ``customer`` accepts, as configured."""

    def ref(name: str) -> dict[str, str]:
        return {"$ref": ref_template.format(model=name)}

    schemas: dict[str, dict[str, Any]] = {}
    base = TouchpointIn.model_json_schema(by_alias=True, ref_template=ref_template)
    schemas.update(base.pop("$defs", {}))
    customer = schemas["CustomerIdentifiers"]
    for kind in identifier_kinds:
        customer["properties"][kind] = _string_schema(ID_PATTERN, 200) | {
            "description": "an identifier of a kind declared in PEAKEND_IDENTIFIER_KINDS"
        }
        customer["anyOf"].append({"required": [kind], "properties": {kind: {"type": "string"}}})
    base["properties"]["additional"] = {
        "type": "object",
        "propertyNames": {"pattern": NO_NUL_PATTERN},
        "additionalProperties": ref("AdditionalValue"),
        "description": "free-form attributes, kept but not interpreted",
    }
    schemas["AdditionalValue"] = {
        "description": (
            f"any JSON value; objects and arrays nest at most {MAX_NESTING} levels counted "
            "from the envelope (the envelope is level 1, additional level 2); no NUL in "
            "strings or keys"
        ),
        "anyOf": [
            {"type": "null"},
            {"type": "boolean"},
            {"type": "number"},
            {"type": "string", "pattern": NO_NUL_PATTERN},
            {"type": "array", "items": ref("AdditionalValue")},
            {
                "type": "object",
                "propertyNames": {"pattern": NO_NUL_PATTERN},
                "additionalProperties": ref("AdditionalValue"),
            },
        ],
    }
    variants: dict[str, str] = {}
    for kind, model in PAYLOADS.items():
        payload = model.model_json_schema(ref_template=ref_template)
        schemas.update(payload.pop("$defs", {}))
        schemas[model.__name__] = payload
        variant = copy.deepcopy(base)
        variant["title"] = f"Touchpoint ({kind})"
        variant["properties"]["type"] = {"type": "string", "const": kind}
        variant["properties"]["payload"] = ref(model.__name__)
        if payload.get("required"):
            variant["required"] = [*variant["required"], "payload"]
        variants[kind] = f"Touchpoint_{kind}"
        schemas[variants[kind]] = variant
    schemas["TouchpointIn"] = {
        "title": "TouchpointIn",
        "description": (
            "Touchpoint envelope v1: one variant per type, each with its payload. Ids are "
            "trimmed and normalised to Unicode NFC; the whole envelope nests at most "
            f"{MAX_NESTING} levels of objects and arrays."
        ),
        "oneOf": [ref(name) for name in variants.values()],
        "discriminator": {
            "propertyName": "type",
            "mapping": {kind: ref_template.format(model=name) for kind, name in variants.items()},
        },
    }
    return schemas
