"""API schemas, one per purpose. Field names are the API contract: keep them stable."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, AwareDatetime, BaseModel, ConfigDict, Field

from api.deps import INSTANT_PATTERN, plausible_instant


class NotFoundOut(BaseModel):
    detail: str = Field(description="what was not found")


NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": NotFoundOut, "description": "no such customer or journey"}
}


class BoundaryErrorOut(BaseModel):
    """A 500 or 503 from the error boundary: nothing internal, the id it was logged under."""

    detail: str
    correlation_id: str


class RecordedOut(BaseModel):
    event_id: str
    customer_id: str | None = Field(
        description="the customer that answers for the touchpoint (after identity "
        "resolution); null in cluster mode, where a worker resolves it after the 202"
    )
    outcome: Literal["recorded", "duplicate", "accepted"] = Field(
        description="recorded: durable in the event store; duplicate: this event_id was "
        "recorded before with the same content, nothing changed; accepted (cluster mode): "
        "durable in Kafka (acks=all), a worker records it next and judges duplicates "
        "then (a conflict goes to the dead-letter topic with reason conflict)"
    )
    duplicate: bool | None = Field(
        description="true for a duplicate, false once recorded; null in cluster mode, "
        "where it is not known at 202 time"
    )


class IngestAccepted(BaseModel):
    accepted: int = Field(description="touchpoints in the request")
    duplicates: int = Field(description="of which already recorded before (no effect)")
    recorded: list[RecordedOut]


class ItemError(BaseModel):
    index: int | None = Field(
        description="position in the batch (0 for a single "
        "touchpoint); null when the body itself is wrong"
    )
    event_id: str | None = None
    field: str = Field(description="dotted path of the refused field, e.g. payload.amount")
    message: str


class IngestRefused(BaseModel):
    detail: str
    errors: list[ItemError]


class JourneyTouchpointOut(BaseModel):
    event_id: str
    occurred_at: datetime
    step: str
    type: str
    channel: str
    emotion: int | None


class CurvePointOut(BaseModel):
    step: str
    occurred_at: datetime
    emotion: int


class QuarantineOut(BaseModel):
    projection: str
    key: str
    event_id: str = Field(description="the event its reducer failed on")
    error: str
    since: datetime
    events: int = Field(description="held events, the failed one included")


class JourneyOut(BaseModel):
    journey_id: str
    journey_type: str
    customer_id: str
    started_at: datetime
    last_at: datetime
    touchpoints: list[JourneyTouchpointOut]
    curve: list[CurvePointOut] = Field(
        description="emotion per scored touchpoint, in event-time order"
    )
    peak: int | None = Field(description="largest |emotion|; the negative one on a tie")
    best: int | None
    worst: int | None
    end: int | None = Field(description="the last scored touchpoint's emotion")
    peak_end_score: float | None = Field(description="(peak + end) / 2")
    mean_emotion: float | None = Field(description="plain mean, beside the peak-end score")
    closed: bool
    closed_by: str | None = Field(description="end_step or inactivity")
    closed_at: datetime | None
    quarantined: list[QuarantineOut] = Field(
        default_factory=list,
        description="set on GET /v1/journeys/{id} when its reducer failed on an event: "
        "the journey stops at it until `peakend retry-quarantined` or a replay",
    )


class LoyaltyOut(BaseModel):
    status: str = Field(description="true | latent | spurious | none (Dick & Basu)")
    attitude: str
    attitude_basis: dict[str, Any] | None
    repeat_patronage: str
    orders_in_window: int
    window_days: int
    thresholds: dict[str, int]
    as_of: datetime


class IdentifierOut(BaseModel):
    kind: str
    value: str = Field(description="normalised: e-mail lower-cased, phone in E.164")
    first_seen: datetime = Field(description="event time of the touchpoint that carried it first")
    first_seen_in: str = Field(description="the event_id of that touchpoint")
    stream: str = Field(description="the customer id it was linked to (a merged one, or this)")


class MergeOut(BaseModel):
    survivor: str
    absorbed: str
    event_id: str = Field(description="the touchpoint that carried identifiers of both")
    merged_at: datetime
    identifiers: dict[str, str] = Field(description="that touchpoint's identifiers: the proof")
    split_at: datetime | None = Field(description="when the merge was undone; null: it stands")


class ConsentRecordOut(BaseModel):
    """One consent touchpoint (consent_given or consent_withdrawn)."""

    purpose: str = Field(description="what it is for, such as marketing")
    granted: bool = Field(description="true: consent_given; false: consent_withdrawn")
    at: datetime = Field(description="event time: when the customer decided")
    event_id: str = Field(description="the touchpoint that recorded it")
    channel: str
    policy_version: str | None = Field(description="the notice or consent text shown")
    method: str | None = Field(
        description="how it was captured: web_form, app, double_opt_in, paper_form, verbal, "
        "email_reply, preference_center, unsubscribe_link, import, other"
    )
    evidence_ref: str | None = Field(description="where the proof is kept")
    captured_by: str | None = Field(description="the staff member or system that took it")


class ConsentOut(BaseModel):
    """The consent state of one purpose after every recorded decision (domain.consent)."""

    granted: bool = Field(description="whether the purpose may be served now (opt-in)")
    since: datetime = Field(description="event time from which this state holds unbroken")
    decided_at: datetime = Field(description="event time of the deciding (latest) decision")
    event_id: str = Field(description="the touchpoint of the deciding decision")
    channel: str
    policy_version: str | None
    method: str | None
    evidence_ref: str | None
    captured_by: str | None


class CustomerOut(BaseModel):
    customer_id: str
    identifiers: list[IdentifierOut] = Field(
        description="every identifier linked to the customer (its merged customers' too), "
        "first seen first"
    )
    merges: list[MergeOut] = Field(description="the merge history, oldest first")
    first_seen: datetime
    last_seen: datetime
    touchpoints_total: int
    counts_by_type: dict[str, int]
    counts_by_channel: dict[str, int]
    currency: str = Field(description="the reporting currency of total_spend")
    total_spend: Decimal = Field(description="exact, serialised as a string")
    spend_by_currency: dict[str, Decimal]
    unconverted: dict[str, Decimal] = Field(
        default_factory=dict,
        description="spend left out of total_spend for want of an exchange rate, per "
        "currency; empty when everything converted",
    )
    orders: int = Field(description="distinct orders")
    recent_touchpoints: list[dict[str, Any]] = Field(
        description="the latest 20, newest first, all channels"
    )
    open_complaints: list[dict[str, Any]]
    complaints_total: int
    last_survey_answers: list[dict[str, Any]]
    consents: dict[str, ConsentOut] = Field(
        description="per purpose ever decided, the current state: the latest decision by "
        "event time wins, a withdrawal on a tie; a purpose not listed is not permitted"
    )
    consent_history: list[ConsentRecordOut] = Field(
        description="every consent touchpoint, in event-time order (a withdrawal after a "
        "grant at the same instant)"
    )
    loyalty_status: str
    loyalty: LoyaltyOut
    measures_as_of: datetime = Field(
        description="the instant the measures describe: when they were last derived (an "
        "event, the clock or new population inputs), or the as_of asked for"
    )
    rule_version: int = Field(description="the version of the rules that derived them")
    inputs_version: int = Field(
        description="the population inputs version (tier thresholds, RFM boundaries, "
        "retention, model) they were derived with; 0: none computed yet"
    )
    population_computed_at: datetime | None = Field(
        description="when the population inputs behind tier, RFM and lifetime value "
        "were computed (null: none yet)"
    )
    value_tier: dict[str, Any] = Field(
        description="vip | major | ordinary | small | inactive | prospect, by trailing value"
    )
    rfm: dict[str, Any] | None = Field(
        description="recency days, frequency, monetary, "
        "1-5 quintile scores, segment; null before a purchase"
    )
    lifecycle: dict[str, Any] = Field(description="stage and the rule that decided it")
    satisfaction: dict[str, Any]
    share_of_wallet: dict[str, Any] = Field(
        description="our spend over the window / the "
        "category spend the customer declared (survey "
        "metric category_spend); null share when none"
    )
    trust: dict[str, Any] = Field(description="promises made (deliveries with a date) and kept")
    lifetime_value: dict[str, Any] = Field(
        description="simple margin/retention CLV and the BG/NBD + Gamma-Gamma model's figures"
    )
    churn_risk: dict[str, Any] = Field(
        description="early-warning inputs: whole days since the last order, the "
        "customer's usual gap between orders (days) and their ratio, P(alive), P(alive) "
        "30 days before under the same model and the trend (now - then)"
    )
    quarantined: list[QuarantineOut] = Field(
        default_factory=list,
        description="projections of this customer that a reducer failed on: their part of "
        "this answer stops at the failed event until `peakend retry-quarantined` or a replay",
    )


class TimelineItemOut(BaseModel):
    event_id: str
    type: str
    occurred_at: datetime
    recorded_at: datetime
    channel: str
    journey: dict[str, str] | None
    emotion: int | None
    payload: dict[str, Any]
    additional: dict[str, Any]


class TimelineOut(BaseModel):
    customer_id: str
    total: int
    offset: int
    limit: int
    next_offset: int | None
    items: list[TimelineItemOut]


class HealthOut(BaseModel):
    status: str
    database: str
    projection_lag: int | None = Field(description="events recorded, not yet projected")
    projector_error: str | None = Field(
        default=None, description="why projecting fails, when it does (status unavailable)"
    )
    quarantined_documents: int | None = Field(
        default=None,
        description="documents a reducer failed on, held until `peakend retry-quarantined` "
        "or a replay (status degraded; everything else goes on)",
    )
    last_clv_fit: dict[str, Any] | None = Field(
        default=None,
        description="the latest lifetime-value fit attempt: status ok | failed, at, as_of, "
        "message (why it failed), model_version; null before any",
    )
    measures: dict[str, Any] | None = Field(
        default=None,
        description="the maintained measures: clock_at (the last tick applied), "
        "inputs_version in effect, failed_customers (the rules failed on them: their rows "
        "are kept as they were, retried at their next event; degraded while any)",
    )
    scheduler: dict[str, Any] | None = Field(
        default=None,
        description="the scheduler that leads (holder, since, heartbeat_at, "
        "heartbeat_age_seconds: a large age means none runs); null before any led",
    )


# Segments


class SegmentDefinedOut(BaseModel):
    name: str
    created: bool = Field(
        description="true when new (or defined again after it was deleted); false when an "
        "existing one was redefined"
    )
    version: int = Field(description="the version of the segment's stream in the event store")


class SegmentOut(BaseModel):
    name: str
    rule: dict[str, Any]
    description: str | None
    created_at: datetime = Field(description="when it was (last) created")
    defined_at: datetime = Field(description="when its current rule was recorded")
    version: int
    members: int
    pending: int = Field(
        description="customers not yet evaluated against the current definitions (0: done)"
    )


class SegmentMemberOut(BaseModel):
    customer_id: str
    since: datetime | None = Field(description="when it entered the segment")


class SegmentMembersOut(BaseModel):
    segment: str
    count: int
    members: list[SegmentMemberOut]


class SegmentChangeOut(BaseModel):
    position: int = Field(description="the change's position in /v1/changes")
    customer_id: str
    change: str = Field(pattern="^(entered|left)$", description="entered or left")
    at: datetime


class SegmentChangesOut(BaseModel):
    segment: str
    changes: list[SegmentChangeOut]


class SegmentErrorItemOut(BaseModel):
    loc: list[str | int] = Field(description='where: ["body", "rule", "all", 0, "op"], ["path", …]')
    msg: str
    type: str


class SegmentErrorOut(BaseModel):
    """Every segment error, 404 and 422 alike: the shape of FastAPI's own validation
    errors, so that a client reads one shape whoever refused the request."""

    detail: list[SegmentErrorItemOut]


# -- analytics (/v1/analytics/*) -----------------------------------------------------------


class ErrorItemOut(BaseModel):
    """One reason an analytics request was refused (FastAPI's validation-error shape)."""

    loc: list[str | int] = Field(description="where: e.g. [query, as_of] or [body, as_of]")
    msg: str = Field(description="the parameter and the reason")
    type: str


class ErrorOut(BaseModel):
    """Every error answer of the analytics endpoints."""

    detail: list[ErrorItemOut]


Unconverted = Field(
    description="money left out of this answer's figures, per currency (no exchange rate "
    "into the reporting currency on the purchase's day): exact decimal strings; empty when "
    "nothing was left out"
)


class PyramidTierOut(BaseModel):
    tier: str = Field(description="vip | major | ordinary | small | inactive | prospect")
    customers: int
    revenue: Decimal = Field(description="in the reporting currency, exact")
    revenue_share: Decimal | None = Field(description="of all tiers' revenue, 4 decimals")


class TierCutoffsOut(BaseModel):
    vip: float
    major: float
    ordinary: float


class ParetoOut(BaseModel):
    active_customers: int
    top_20_percent_revenue_share: Decimal | None


class PyramidOut(BaseModel):
    as_of: datetime
    computed_at: datetime
    window_days: int
    currency: str = Field(description="the reporting currency of the revenue figures")
    unconverted: dict[str, Decimal] = Unconverted
    cutoffs: TierCutoffsOut
    tiers: list[PyramidTierOut]
    pareto: ParetoOut


class PeriodOut(BaseModel):
    name: str = Field(description="2026-W24, 2026-06 or 2026-Q2")
    start: datetime = Field(description="first instant, midnight in the reporting time zone")
    end: datetime = Field(description="the next period's start: not included")
    complete: bool = Field(description="false for the current period, measured up to as_of")


class MigrationStepOut(BaseModel):
    from_period: PeriodOut
    to_period: PeriodOut
    matrix: dict[str, dict[str, int]] = Field(description="customers, from tier (row) to tier")
    up: int
    down: int


class MigrationOut(BaseModel):
    as_of: datetime
    computed_at: datetime
    period: str
    timezone: str = Field(description="the reporting time zone of the calendar periods")
    currency: str
    unconverted: dict[str, Decimal] = Unconverted
    history: list[MigrationStepOut]


class RfmSegmentsOut(BaseModel):
    as_of: datetime
    computed_at: datetime
    window_days: int
    currency: str = Field(description="the reporting currency of M (monetary)")
    unconverted: dict[str, Decimal] = Unconverted
    customers: int
    segments: dict[str, int]


class NpsOut(BaseModel):
    promoters: int
    passives: int
    detractors: int
    responses: int
    nps: float | None


class CsatOut(BaseModel):
    counts: dict[int, int] = Field(description="answers per level 1..5")
    responses: int
    mean: float | None
    share_top: float | None
    share_bottom: float | None


class CesOut(BaseModel):
    responses: int
    mean: float | None


class SatisfactionBlockOut(BaseModel):
    nps: NpsOut
    csat: CsatOut
    ces: CesOut


class SatisfactionFiltersOut(BaseModel):
    since: datetime | None
    channel: str | None
    journey_type: str | None


class SatisfactionOut(BaseModel):
    as_of: datetime
    computed_at: datetime
    filters: SatisfactionFiltersOut
    overall: SatisfactionBlockOut
    by_channel: dict[str, SatisfactionBlockOut]
    by_journey_type: dict[str, SatisfactionBlockOut]
    by_period: dict[str, SatisfactionBlockOut] | None = Field(
        default=None, description="keyed by each period's start instant; null unless asked"
    )


class KanoFeatureOut(BaseModel):
    counts: dict[str, int]
    category: str | None
    better: float | None = Field(description="CS+ = (A+O)/(A+O+M+I)")
    worse: float | None = Field(description="CS- = -(O+M)/(A+O+M+I)")


class KanoOut(BaseModel):
    as_of: datetime
    computed_at: datetime
    features: dict[str, KanoFeatureOut]


class OpportunityOut(BaseModel):
    attribute: str
    importance: float
    satisfaction: float
    opportunity: float = Field(description="importance + max(importance - satisfaction, 0)")


class OpportunitiesOut(BaseModel):
    as_of: datetime
    computed_at: datetime
    ranked: list[OpportunityOut]
    incomplete: list[str] = Field(description="attributes lacking importance or satisfaction")


class StepEmotionOut(BaseModel):
    step: str
    mean_emotion: float | None
    new_customers: float | None
    returning_customers: float | None
    responses: int


class MomentOfTruthOut(BaseModel):
    step: str
    peak_share: float | None
    end_share: float | None
    predicts_peak_end: float | None


class EmotionCurveOut(BaseModel):
    journeys: int
    steps: list[StepEmotionOut]
    moments_of_truth: list[MomentOfTruthOut]


class EmotionCurvesOut(BaseModel):
    as_of: datetime
    computed_at: datetime
    journey_types: dict[str, EmotionCurveOut]


class ClvFitIn(BaseModel):
    as_of: Annotated[
        datetime | None,
        Field(
            description="fit on purchases up to this instant, ISO 8601 with an offset, from "
            "1900-01-01 to 3000-01-01 (default: now)",
            json_schema_extra={"pattern": INSTANT_PATTERN},
        ),
        plausible_instant("as_of"),
    ] = None


class GammaGammaCoverageOut(BaseModel):
    customers: int = Field(description="repeat buyers the spend model was fitted on")
    left_out: dict[str, int] = Field(
        description="repeat buyers left out: zero_spend (mean repeat spend not positive), "
        "unconverted (repeat spend not known in the reporting currency)"
    )
    note: str | None = Field(description="why there is no spend model, when there is none")


class ClvModelOut(BaseModel):
    version: int
    fitted_at: datetime
    parameters: dict[str, float] = Field(description="r, alpha, a, b; p, q, gamma when fitted")
    time_unit: str
    as_of: datetime
    currency: str
    customers: int = Field(description="customers the BG/NBD model was fitted on: everyone")
    repeat_customers: int = Field(description="customers the Gamma-Gamma model was fitted on")
    gamma_gamma: GammaGammaCoverageOut | None = Field(
        default=None, description="who the spend model covers (absent in models before it)"
    )
    unconverted: dict[str, Decimal] = Field(
        default_factory=dict, description="money of the purchases fitted, not converted"
    )
    log_likelihood: dict[str, float | None]


class MovedOut(BaseModel):
    """307: the customer was merged into another, which answers for it now."""

    detail: str
    customer_id: str = Field(description="the id asked for")
    merged_into: str = Field(description="the survivor")
    location: str = Field(description="the same request, for the survivor (also in Location)")


class CustomerMatchOut(BaseModel):
    customer_id: str = Field(description="the customer that holds the identifier")
    kind: str
    value: str = Field(description="as normalised")


class CustomerSearchOut(BaseModel):
    customers: list[CustomerMatchOut] = Field(
        description="one entry per identifier asked for that is known; empty: none is"
    )


class ConflictOut(BaseModel):
    event_id: str = Field(description="the touchpoint that asked for the merge or link")
    recorded_on: str = Field(description="the customer the touchpoint was recorded on")
    rule: Literal["source_ids_differ", "kept_apart", "limit"]
    reason: str
    identifiers: dict[str, str]
    customers: list[str] = Field(description="the customers involved")
    refused_at: datetime = Field(description="event time of the touchpoint")


class ConflictsOut(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[ConflictOut]


class SplitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    absorbed: str = Field(
        min_length=1, max_length=200, description="the customer merged into this one, to split off"
    )
    reason: str = Field("", max_length=2000, description="why the merge was wrong")


class SplitOut(BaseModel):
    survivor: str
    released: str = Field(description="answers for itself again, with its own touchpoints")


class ChangeOut(BaseModel):
    position: int = Field(description="increasing; page with after=<the last one seen>")
    change_id: str = Field(description="the same change of the same history has the same id")
    kind: str
    customer_id: str
    subject: str | None = Field(description="the complaint, journey or segment it is about")
    before: Any
    after: Any
    cause: dict[str, Any] = Field(
        description="{event_id, type}: an event; {clock}: time passing; {inputs}: new "
        "population inputs; {event: Merged | Split | Erased}"
    )
    at: datetime = Field(description="the instant the fact changed")
    recorded_at: datetime


class ChangesOut(BaseModel):
    changes: list[ChangeOut]
    next_after: int = Field(description="pass as after= for the next page")


# Literals, not projections.alerts' enums: the published schema names an enum by its
# class, and the touchpoint envelope has a Severity (a complaint's) of its own.
AlertRuleName = Literal[
    "detractor_follow_up",
    "complaint_sla",
    "negative_journey",
    "silent_dissatisfaction",
    "churn_warning",
    "capacity",
]
AlertSeverity = Literal["info", "warning", "critical"]
AlertStatus = Literal["open", "acknowledged", "resolved"]


class AlertOut(BaseModel):
    """An alert as its latest transition left it (projections/alerts.py)."""

    id: str
    position: int = Field(description="the change-feed position of its latest transition")
    key: str = Field(description="rule and subject: one open alert per key")
    rule: str
    subject: dict[str, str] = Field(
        description="kind (customer, complaint, journey, channel) and id"
    )
    customer_id: str = Field(description="channel:<name> for a channel's alert (capacity)")
    tier: str | None
    severity: AlertSeverity
    status: AlertStatus
    evidence: dict[str, Any] = Field(description="the values that fired it")
    since: datetime = Field(description="when its condition began to hold")
    purpose: str | None = Field(description="the consent purpose the rule serves")
    suppressed: str | None = Field(
        None, description="consent: recorded, not delivered (the purpose is not granted)"
    )
    silenced_by: str | None = Field(
        None,
        description="not resolved: the silence holding it now (its transitions are not"
        " delivered); resolved: the one that held back its resolution",
    )
    channel: str | None = None
    opened_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None = Field(description="the API key's name")
    resolved_at: datetime | None
    resolved_by: str | None = Field(description="the API key's name; null: its condition cleared")
    resolution: Literal["cleared", "operator", "merged"] | None = Field(
        description="cleared: its condition; operator: by hand; merged: into another customer"
    )
    clear_since: datetime | None = Field(description="clear since then, held down before resolving")


class AlertsOut(BaseModel):
    alerts: list[AlertOut]
    next_before: int | None = Field(description="pass as before= for the next page")


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(None, max_length=2000, pattern=r"^[^\u0000]*$")


class ActedOut(BaseModel):
    alert_id: str
    action: Literal["acknowledge", "resolve"]
    action_id: str = Field(description="the recorded action; the alert shows it once projected")


class MatcherIn(BaseModel):
    """Alerts a silence holds: every field given must equal the alert's."""

    model_config = ConfigDict(extra="forbid")

    rule: (
        Literal[
            "detractor_follow_up",
            "complaint_sla",
            "negative_journey",
            "silent_dissatisfaction",
            "churn_warning",
        ]
        | None
    ) = None
    tier: str | None = Field(None, min_length=1, max_length=40, pattern=r"^[a-z_]+$")
    channel: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[\w\-]+$")
    customer: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[^\u0000]+$")


class SilenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    matcher: MatcherIn
    ends_at: AwareDatetime = Field(description="when it stops holding (after now)")
    comment: str | None = Field(None, max_length=2000, pattern=r"^[^\u0000]*$")


class SilenceOut(BaseModel):
    id: str
    matcher: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str | None
    expired_at: datetime | None
    expired_by: str | None


class SilencesOut(BaseModel):
    silences: list[SilenceOut]


class SilenceCreatedOut(BaseModel):
    id: str = Field(description="while it holds, the alerts it matches are marked silenced_by it")


class SilenceExpiredOut(BaseModel):
    id: str
    status: Literal["expired"]


class BacktestIn(BaseModel):
    """A candidate configuration of one rule and the time range to run it over."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="the rule's settings that differ from those in effect, as in "
        "PEAKEND_ALERT_RULES (durations in seconds, a field's name with _seconds)",
    )
    from_: AwareDatetime = Field(alias="from")
    to: AwareDatetime = Field(description="at most 366 days after from")


class BacktestAlertOut(BaseModel):
    customer_id: str
    subject: dict[str, str]
    severity: str
    opened_at: datetime
    resolved_at: datetime | None = Field(description="null: still open at the range's end")
    evidence: dict[str, Any]


class BacktestOut(BaseModel):
    rule: str
    from_: datetime = Field(alias="from")
    to: datetime
    settings: dict[str, Any] = Field(description="the rule's settings it ran with")
    customers: int = Field(description="customers whose history was replayed")
    raised: int = Field(description="alerts it would have opened in the range")
    per_day: dict[str, int] = Field(description="opened per day (UTC)")
    alerts: list[BacktestAlertOut] = Field(description="the first 1,000, oldest first")


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl = Field(description="POSTed to, with a JSON body, for each transition")
    rules: list[AlertRuleName] = Field(default_factory=list, max_length=10)
    severities: list[AlertSeverity] = Field(default_factory=list, max_length=3)


class WebhookCreatedOut(BaseModel):
    id: str
    secret: str = Field(description="whsec_...: shown once")


class WebhookSecretOut(WebhookCreatedOut):
    pass


class WebhookOut(BaseModel):
    id: str
    url: str
    rules: list[str]
    severities: list[str]
    created_at: datetime
    created_by: str
    disabled_at: datetime | None = Field(description="set when the receiver answered 410")
    disabled_reason: str | None
    secrets: int = Field(description="secrets signing (2 during a rotation)")


class WebhooksOut(BaseModel):
    webhooks: list[WebhookOut]


class AttemptOut(BaseModel):
    """One send, logged as it starts: neither status nor error means no answer yet (or
    none ever, if the sender stopped while waiting: the next attempt follows it)."""

    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float


class DeliveryOut(BaseModel):
    id: str = Field(description="webhook-id: the same on every attempt")
    position: int
    alert_id: str
    kind: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    log: list[AttemptOut]


class DeliveriesOut(BaseModel):
    deliveries: list[DeliveryOut]


class AtRiskOut(BaseModel):
    amount: Decimal = Field(description="trailing revenue x chance of leaving, summed")
    customers: int


class RevenueAtRiskOut(BaseModel):
    currency: str
    overall: AtRiskOut = Field(description="each customer once, whatever its alerts")
    by_rule: dict[str, AtRiskOut]
    leave_share_without_model: float | None = Field(
        description="the chance of leaving counted where no model gives P(alive)"
    )
