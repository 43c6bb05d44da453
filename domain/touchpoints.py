"""The touchpoint envelope, version 1: what a touchpoint system tells us about one contact.

A touchpoint is an immutable fact: one contact between a customer and the company on one
channel, with the time it happened (event time, ``occurred_at``). The envelope is the
public contract of the ingest (HTTP and Kafka); it is validated here, field by field,
before anything is recorded.

Each ``type`` has its own payload model; an unknown type is refused with the list of the
known ones. Free-form ``additional`` attributes are kept but not interpreted.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 1
CENT = Decimal("0.01")

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


def _no_slash(value: str) -> str:
    if "/" in value:
        raise ValueError(
            "'/' is not allowed in an id: ids are read back at URL paths such as /v1/customers/{id}"
        )
    return value


UrlSafeId = Annotated[Text, AfterValidator(_no_slash)]
Money = Annotated[
    Decimal,
    Field(ge=0, max_digits=14, decimal_places=2, allow_inf_nan=False),
    # Always two decimals: "1e2" is stored as "100.00", never as "1E+2".
    AfterValidator(lambda amount: amount.quantize(CENT)),
]
CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Emotion = Annotated[int, Field(ge=-3, le=3, strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------
# Payloads, one model per touchpoint type
# ---------------------------------------------------------------------------------------


class VisitPayload(_Strict):
    location: Text | None = None
    duration_seconds: Annotated[int, Field(ge=0)] | None = None


class CallPayload(_Strict):
    direction: Literal["inbound", "outbound"] = "inbound"
    duration_seconds: Annotated[int, Field(ge=0)] | None = None
    wait_seconds: Annotated[int, Field(ge=0)] | None = None
    reason: Text | None = None


class PurchaseItem(_Strict):
    sku: Text
    quantity: Annotated[int, Field(ge=1)] = 1
    unit_price: Money | None = None


class PurchasePayload(_Strict):
    order_id: Text
    amount: Money
    currency: CurrencyCode
    items: list[PurchaseItem] = Field(default_factory=list, max_length=1000)


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class ComplaintPayload(_Strict):
    """Every step of complaint handling names the complaint it belongs to."""

    complaint_id: Text
    category: Text | None = None
    severity: Severity | None = None
    compensation: Money | None = None
    note: Annotated[str, StringConstraints(max_length=2000)] | None = None


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
    """A money amount given as a string or an integer: >= 0, at most two decimals."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    try:
        amount = Decimal(value)
    except ArithmeticError:
        return None
    if not amount.is_finite() or amount < 0 or amount != amount.quantize(CENT):
        return None
    return amount


class SurveyAnsweredPayload(_Strict):
    survey_id: Text
    question_id: Text
    metric: SurveyMetric
    value: Any = Field(
        description="an integer on the metric's scale, a Kano answer, or an amount (category_spend)"
    )
    attribute: Text | None = None
    feature: Text | None = None
    currency: CurrencyCode | None = None

    @model_validator(mode="after")
    def _value_fits_metric(self) -> SurveyAnsweredPayload:
        if self.metric is SurveyMetric.CATEGORY_SPEND:
            if self.currency is None:
                raise ValueError("currency: a declared category spend names its currency")
            amount = _amount(self.value)
            if amount is None:
                raise ValueError(
                    'value: category_spend is an amount such as "1200.00" '
                    "(at least 0, at most two decimals)"
                )
            object.__setattr__(self, "value", str(amount.quantize(CENT)))  # model is frozen
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
    order_id: Text | None = None
    promised_at: AwareDatetime | None = None
    on_time: bool | None = None


class ServiceAppointmentPayload(_Strict):
    appointment_id: Text | None = None
    service: Text | None = None


class MessagePayload(_Strict):
    direction: Literal["inbound", "outbound"] = "inbound"
    subject: Text | None = None


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
}
KNOWN_TYPES = tuple(sorted(PAYLOADS))
COMPLAINT_TYPES = frozenset(t for t in PAYLOADS if t.startswith("complaint_"))


# ---------------------------------------------------------------------------------------
# Envelope
# ---------------------------------------------------------------------------------------

IDENTIFIER_KINDS = ("id", "email", "phone", "loyalty_card", "device_id", "crm_id", "account_id")


class CustomerIdentifiers(_Strict):
    """One or more identifiers of the customer, as the source knows them."""

    id: UrlSafeId | None = None
    email: (
        Annotated[
            str,
            StringConstraints(
                strip_whitespace=True,
                to_lower=True,
                pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
                max_length=254,
            ),
        ]
        | None
    ) = None
    phone: (
        Annotated[
            str,
            StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9 ()\-.]{6,24}$"),
            # One number, one spelling: "+49 30 123456" and "+4930123456" are the same phone.
            AfterValidator(lambda phone: re.sub(r"[ ()\-.]", "", phone)),
        ]
        | None
    ) = None
    loyalty_card: Text | None = None
    device_id: Text | None = None
    crm_id: Text | None = None
    account_id: Text | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> CustomerIdentifiers:
        if not self.present():
            raise ValueError(
                "a touchpoint names its customer by at least one identifier: "
                + ", ".join(IDENTIFIER_KINDS)
            )
        return self

    def present(self) -> dict[str, str]:
        """The identifiers given, by kind, in the order of IDENTIFIER_KINDS."""
        return {
            kind: value for kind in IDENTIFIER_KINDS if (value := getattr(self, kind)) is not None
        }


class JourneyMembership(_Strict):
    id: UrlSafeId
    type: Text
    step: Text


class TouchpointIn(_Strict):
    """Touchpoint envelope v1 (DESIGN.md). ``payload`` is checked against ``type``."""

    schema_: Literal[1] = Field(default=1, alias="schema")
    event_id: Text
    type: str
    occurred_at: AwareDatetime
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
                f"unknown touchpoint type {value!r}; known types: " + ", ".join(KNOWN_TYPES)
            )
        return value

    @field_validator("occurred_at")
    @classmethod
    def _not_in_the_future(cls, value: datetime, info: ValidationInfo) -> datetime:
        context = info.context or {}
        now: datetime | None = context.get("now")
        skew: timedelta | None = context.get("max_future_skew")
        if now is not None and skew is not None and value - now > skew:
            raise ValueError(
                f"occurred_at is {value - now} ahead of the server clock; "
                f"at most {skew} of clock skew is accepted"
            )
        return value


class FieldError(BaseModel):
    """One reason a field was refused: ``field`` is a dotted path into the envelope."""

    field: str
    message: str


def field_errors(error: ValidationError) -> list[FieldError]:
    """Flatten a pydantic error into ``field``/``message`` pairs a client can act on."""
    out = []
    for item in error.errors(include_url=False):
        path = [str(p) for p in item["loc"]]
        message = str(item["msg"]).removeprefix("Value error, ")
        # Our model validators prefix the message with the field they judge.
        head, sep, rest = message.partition(": ")
        if sep and " " not in head and head.replace("_", "").isalnum():
            path.append(head)
            message = rest
        out.append(FieldError(field=".".join(path) or "body", message=message))
    return out


class InvalidTouchpoint(ValueError):
    """A touchpoint refused at the door, with every reason, field by field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


def _unstorable_text(value: Any, path: str = "") -> list[FieldError]:
    """Strings PostgreSQL text and jsonb cannot hold (NUL) or UTF-8 cannot encode (lone
    surrogates), anywhere in the envelope, keys included: refused at the door, because
    once recorded they would stall every projection behind them."""
    if isinstance(value, str):
        if "\x00" in value:
            return [FieldError(field=path or "body", message="contains a NUL character")]
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return [
                FieldError(
                    field=path or "body", message="contains a lone surrogate (not valid Unicode)"
                )
            ]
        return []
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            found += _unstorable_text(key, where) if isinstance(key, str) else []
            found += _unstorable_text(item, where)
        return found
    if isinstance(value, list):
        return [e for i, item in enumerate(value) for e in _unstorable_text(item, f"{path}.{i}")]
    return []


def parse_touchpoint(
    raw: Any, *, now: datetime | None = None, max_future_skew: timedelta | None = None
) -> TouchpointIn:
    """Validate one envelope and its type's payload; raise ``InvalidTouchpoint`` listing
    every bad field (envelope and payload together, so one round trip shows them all)."""
    errors = _unstorable_text(raw)
    if errors:
        raise InvalidTouchpoint(errors)
    envelope: TouchpointIn | None = None
    try:
        envelope = TouchpointIn.model_validate(
            raw, context={"now": now, "max_future_skew": max_future_skew}
        )
    except ValidationError as error:
        errors.extend(field_errors(error))
    kind = raw.get("type") if isinstance(raw, dict) else None
    model = PAYLOADS.get(kind) if isinstance(kind, str) else None
    payload: dict[str, Any] = {}
    if model is not None and isinstance(raw, dict) and isinstance(raw.get("payload", {}), dict):
        try:
            parsed = model.model_validate(raw.get("payload", {}))
            payload = parsed.model_dump(mode="json", exclude_none=True)
        except ValidationError as error:
            errors.extend(
                FieldError(field=f"payload.{e.field}", message=e.message)
                for e in field_errors(error)
            )
    if errors or envelope is None:
        raise InvalidTouchpoint(errors)
    return envelope.model_copy(update={"payload": payload})
