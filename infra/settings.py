"""One typed settings object; every field is an environment variable ``PEAKEND_<NAME>``."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import AwareDatetime, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.identity import DEFAULT_LIMITS, IdentityRules, blocked_setting
from domain.money import ExchangeRates
from domain.touchpoints import declared_identifier_kinds
from projections.alerts import AlertRules, with_rules

# Well known, so never secret: accepted only when ``environment`` is development (the
# demo prints the key; tests and a laptop need no secrets set up).
DEVELOPMENT_API_KEY = "pk_dev_0000000000000000000000000000000000000000000"
DEVELOPMENT_MASTER_KEY = "ZGV2ZWxvcG1lbnQtbWFzdGVyLWtleS0wMDAwMDAwMDA="  # 32 bytes, base64
DEVELOPMENT_IDENTITY_SECRET = "development-identity-secret-0000"

# Payload fields that hold personal data in the built-in touchpoint types: free text a
# customer or an agent wrote. Every ``additional`` attribute is personal by default ("*"):
# Peakend does not interpret them, so it cannot know they are not.
DEFAULT_PERSONAL_PAYLOAD = ["note", "subject", "reason", "comment", "text", "name", "address"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PEAKEND_", extra="ignore")

    # Deployment. Outside development, secrets must be set, the development key is
    # refused, and the API does not start without an API key.
    environment: Literal["development", "production"] = "production"

    # Access control (API keys: ``peakend keys``). The API re-reads its keys every
    # ``key_cache_seconds``, so a revoked key stops working within that time.
    key_cache_seconds: float = Field(5.0, ge=0, le=300)
    # Rate limits per API key, in the ``limits`` notation ("6000/minute", several
    # separated by ";"): ingest counts touchpoints, reads count requests. The storage is
    # a ``limits`` URI: memory:// counts per API process; redis://host:6379 shares the
    # count between processes.
    ingest_rate_limit: str = "600000/minute"
    read_rate_limit: str = "60000/minute"
    rate_limit_storage: str = "memory://"
    # Browsers: origins allowed to call the API from a web page (CORS); none by default.
    cors_origins: list[str] = []

    # Privacy. ``master_key`` (32 bytes, base64) wraps every customer's data key;
    # ``identity_secret`` keys the HMAC under which identifiers are looked up.
    master_key: SecretStr | None = None
    identity_secret: SecretStr | None = None
    # Which payload fields and ``additional`` attributes are personal (encrypted per
    # customer, erased with the customer); "*" means all of them.
    personal_payload_fields: list[str] = list(DEFAULT_PERSONAL_PAYLOAD)
    personal_additional_fields: list[str] = ["*"]
    # How long raw payloads are kept where Peakend keeps refused input: dead-letter
    # messages (the topic's retention) and import reject files.
    dead_letter_retention_hours: float = Field(72.0, gt=0)
    reject_file_retention_hours: float = Field(72.0, gt=0)

    # Storage. No database URL means: embedded PostgreSQL in ``data_dir``.
    database_url: str | None = None
    data_dir: Path = Path(".peakend")

    # Ingest (HTTP). A batch with any invalid item is refused whole.
    ingest_max_batch: int = Field(1000, ge=1, le=100_000)
    ingest_max_body_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    max_future_skew_seconds: int = Field(300, ge=0)
    earliest_occurred_at: AwareDatetime = datetime(1900, 1, 1, tzinfo=UTC)  # older: refused
    # The region (ISO 3166, such as DE) a phone number without a country code is read in;
    # none: such a number is refused, since the same digits are other numbers elsewhere.
    phone_default_region: str | None = None
    # Extra kinds of customer identifier, accepted in ``customer`` beside the built-in
    # ones (names such as "member_no"; as JSON: ["member_no", "ticket_holder"]).
    identifier_kinds: list[str] = []
    # Identity guard rails: identifiers of a kind one customer may hold (kinds not named:
    # 10), and values that never link or merge besides the built-in placeholders, as
    # "kind:value" or a bare value for every kind (a shared kiosk's device id).
    identity_limits: dict[str, int] = dict(DEFAULT_LIMITS)
    identity_blocked: list[str] = []

    # Recorder: touchpoints per event-store transaction, and how long to wait to fill one.
    record_batch_size: int = Field(500, ge=1)
    record_linger_ms: float = Field(5.0, ge=0)
    aggregate_cache_size: int = Field(100_000, ge=0)

    # Projectors: notifications per read-model transaction; idle poll period.
    project_batch_size: int = Field(2000, ge=1)
    project_poll_ms: float = Field(200.0, gt=0)

    # Journeys (DOMAIN.md §2): a journey ends at one of its type's end steps, or after an
    # inactivity gap. Keys are journey types; "*" is the default for the others.
    journey_end_steps: dict[str, list[str]] = {"*": ["farewell", "end"]}
    journey_inactivity_minutes: dict[str, float] = {"*": 240.0}

    # Loyalty (DOMAIN.md §5, Dick & Basu).
    loyalty_nps_high: int = Field(9, ge=0, le=10)
    loyalty_csat_high: int = Field(4, ge=1, le=5)
    loyalty_repeat_purchases: int = Field(2, ge=1)
    loyalty_window_days: int = Field(365, ge=1)

    # Cluster mode (Kafka). Topic names are "<prefix>.touchpoints", ".touchpoints.dlq",
    # ".customer-events" and ".alerts"; the Faust consumer group is "<prefix>".
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_topic_prefix: str = Field("peakend", pattern=r"^[A-Za-z0-9._\-]+$")
    kafka_partitions: int = Field(8, ge=1)
    kafka_replication: int = Field(1, ge=1)
    kafka_linger_ms: int = Field(5, ge=0)
    # How long a consumer fetch may wait for records: the latency floor of each hop on
    # brokers that hold a fetch for the whole wait (Faust's own default is 1,500 ms).
    kafka_fetch_max_wait_ms: int = Field(50, ge=1, le=30_000)
    # How long a produce may take, retries included, before the caller hears it failed.
    kafka_delivery_timeout_ms: int = Field(30_000, ge=1000)
    stream_batch_size: int = Field(1000, ge=1)
    stream_batch_within_ms: float = Field(50.0, gt=0)
    worker_runs_relay: bool = True

    # Value analytics (DOMAIN.md §6): the trailing window of the pyramid and of RFM, the
    # tier cut-offs (cumulative shares of active customers), lifetime-value horizon.
    value_window_days: int = Field(365, ge=1)
    rfm_window_days: int = Field(365, ge=1)
    tier_vip: float = Field(0.01, gt=0, le=1)
    tier_major: float = Field(0.05, gt=0, le=1)
    tier_ordinary: float = Field(0.20, gt=0, le=1)
    clv_time_unit: Literal["day", "week"] = "week"
    clv_horizon: float = Field(52.0, gt=0, description="in clv_time_unit")
    clv_margin: float = Field(1.0, gt=0, le=1, description="margin share of revenue")
    clv_discount_rate: float = Field(0.10, ge=0, le=1)
    # Lifecycle stages (DOMAIN.md §7; domain.value.lifecycle_stage): a client has at
    # least this many orders, an advocate is a promoter with at least this many; a
    # customer lapses after max(factor x their usual gap, floor) without an order, and
    # anyone after ``lapse_after_days``.
    lifecycle_client_orders: int = Field(5, ge=2)
    lifecycle_advocate_orders: int = Field(2, ge=1)
    lifecycle_lapse_factor: float = Field(3.0, gt=0)
    lifecycle_lapse_floor_days: float = Field(30.0, ge=0)
    lifecycle_lapse_after_days: float = Field(365.0, gt=0)
    # Churn early warning: P(alive) below this is "at risk" (a change when it crosses).
    p_alive_at_risk: float = Field(0.5, gt=0, lt=1)
    # Alert rules (projections/alerts.py, README "Alerts"): per rule, the settings that
    # differ from the defaults, as JSON: {"churn_warning": {"enabled": false},
    # "complaint_sla": {"tiers": ["vip"]}, "hold_down_seconds": 600}; durations in
    # seconds (a field's name with ``_seconds``).
    alert_rules: dict[str, Any] = {}
    # Server-Sent Events of GET /v1/alerts/stream: a comment line this often when quiet
    # (proxies close idle streams), and how often a stream looks for new transitions.
    sse_heartbeat_seconds: float = Field(15.0, gt=0)
    sse_poll_seconds: float = Field(0.2, gt=0)
    # Webhooks (README "Alerts"): a send's timeout, the waits before each retry (the
    # Standard Webhooks schedule), and how many sends run at once (one per endpoint).
    webhook_timeout_seconds: float = Field(15.0, gt=0)
    webhook_retry_seconds: list[float] = Field(
        [5, 300, 1800, 7200, 18000, 36000, 36000], min_length=1, max_length=20
    )
    webhook_senders: int = Field(8, ge=1, le=64)
    # Whether a webhook may point at an address that is not public (loopback, private,
    # link-local such as a cloud's metadata service, reserved): a way in to the network
    # the platform runs in. Unset: only in development, where receivers are local.
    webhook_private_targets: bool | None = None
    # The scheduler recomputes the population inputs (tier thresholds, RFM boundaries,
    # retention, the lifetime-value model in use) this often and rolls a new version
    # out to every customer in batches of ``maintain_batch_size``.
    # How often the scheduler's clock ticks, when anything is due: the latency of what
    # time passing changes (a journey closed by inactivity, a customer lapsing). Each
    # tick is one small event in the event store, so that a replay sees time pass at the
    # same places; a tick re-derives at most ``maintain_batch_size`` customers and more
    # follow at once while anything is left.
    clock_tick_seconds: float = Field(60.0, gt=0, le=86_400)
    population_refresh_seconds: float = Field(600.0, ge=0, description="0: only when asked")
    maintain_batch_size: int = Field(1000, ge=1, le=100_000)
    # How often a scheduler that does not lead tries to: a takeover after the leader died
    # takes at most this long.
    scheduler_poll_seconds: float = Field(1.0, gt=0, le=60)
    clv_refit_hours: float = Field(24.0, ge=0, description="0: only when asked")

    # Money: the reporting currency whose purchases make up ``total_spend``.
    currency: str = "EUR"
    log_format: Literal["text", "json"] = Field("text", description="json: one object a line")

    # Resources and outages (guarantee 9): a request waits at most ``pool_timeout_seconds``
    # for a read-model connection and ingest at most ``database_timeout_seconds`` for
    # durability, then answers 503 with Retry-After; never a 500, never a hang.
    read_pool_size: int = Field(16, ge=1, le=1000)
    project_pool_size: int = Field(2, ge=1, le=100, description="the embedded projector's own")
    pool_timeout_seconds: float = Field(2.0, gt=0, le=60)
    database_timeout_seconds: float = Field(5.0, gt=0, le=300)
    ingest_queue_limit: int = Field(20_000, ge=1, description="touchpoints waiting to record")
    retry_after_seconds: int = Field(2, ge=1, le=3600)

    @model_validator(mode="after")
    def _secrets_outside_development(self) -> Settings:
        if self.environment == "development":
            return self
        for name, development in (
            ("master_key", DEVELOPMENT_MASTER_KEY),
            ("identity_secret", DEVELOPMENT_IDENTITY_SECRET),
        ):
            value: SecretStr | None = getattr(self, name)
            if value is None:
                raise ValueError(
                    f"{name}: required outside development (PEAKEND_{name.upper()}; "
                    "or PEAKEND_ENVIRONMENT=development on a laptop)"
                )
            if value.get_secret_value() == development:
                raise ValueError(f"{name}: the development value is refused outside development")
        return self

    @property
    def webhooks_may_reach_private(self) -> bool:
        if self.webhook_private_targets is not None:
            return self.webhook_private_targets
        return self.environment == "development"

    @property
    def master_key_bytes(self) -> bytes:
        """The master key: the development one in development when none is set."""
        given = self.master_key.get_secret_value() if self.master_key else DEVELOPMENT_MASTER_KEY
        return base64.b64decode(given)

    @property
    def identity_secret_bytes(self) -> bytes:
        given = (
            self.identity_secret.get_secret_value()
            if self.identity_secret
            else DEVELOPMENT_IDENTITY_SECRET
        )
        return given.encode()

    @field_validator("master_key")
    @classmethod
    def _master_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            decoded = base64.b64decode(value.get_secret_value(), validate=True)
        except ValueError:
            decoded = b""
        if len(decoded) != 32:
            raise ValueError(
                "master_key: 32 random bytes in base64 (make one: "
                'python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())")'
            )
        return value

    @field_validator("identity_secret")
    @classmethod
    def _identity_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("identity_secret: at least 32 characters of random text")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _web_origins(cls, value: list[str]) -> list[str]:
        # Exactly as a browser sends Origin (compared as strings): no path, no default
        # port, lower case. No "*": an origin on the list may also send unsafe requests
        # past api/browsers.py's cross-site refusal, so each one is named.
        for origin in value:
            parts = urlsplit(origin)
            default = {"http": 80, "https": 443}.get(parts.scheme)
            try:
                port = parts.port
            except ValueError:  # not a number, or out of range: no origin to suggest
                port, default = None, None
            host = parts.hostname or ""
            shown = f"[{host}]" if ":" in host else host
            canonical = f"{parts.scheme}://{shown}" + (
                f":{port}" if port not in (None, default) else ""
            )
            if default is None or not host or not origin.isascii() or origin != canonical:
                raise ValueError(
                    f"cors_origins: {origin!r} is not a web origin, scheme://host[:port] with "
                    'no path, each one named (no "*"; e.g. https://app.example.com)'
                    + (f"; write {canonical!r}" if default and host and origin.isascii() else "")
                )
        return value

    @field_validator("phone_default_region")
    @classmethod
    def _phone_region(cls, value: str | None) -> str | None:
        if value is not None and value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(
                f"phone_default_region: {value!r} is not a region libphonenumber knows "
                "(an upper-case ISO 3166 code such as DE or US)"
            )
        return value

    @field_validator("identifier_kinds")
    @classmethod
    def _identifier_kinds(cls, value: list[str]) -> list[str]:
        try:
            return list(declared_identifier_kinds(value))
        except ValueError as error:
            raise ValueError(f"identifier_kinds: {error}") from None

    @field_validator("identity_limits")
    @classmethod
    def _identity_limits(cls, value: dict[str, int]) -> dict[str, int]:
        wrong = {kind: n for kind, n in value.items() if n < 1}
        if wrong:
            raise ValueError(
                f"identity_limits: a kind's limit is at least 1 ({', '.join(sorted(wrong))})"
            )
        return value

    @field_validator("alert_rules")
    @classmethod
    def _alert_rules(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            with_rules(AlertRules(), value)
        except (ValueError, TypeError, AttributeError) as error:
            raise ValueError(f"alert_rules: {error}") from None
        return value

    @field_validator("currency")
    @classmethod
    def _iso_currency(cls, value: str) -> str:
        if len(value) != 3 or not value.isalpha() or not value.isupper():
            raise ValueError("currency: an ISO 4217 code such as EUR")
        return value

    # Exchange rates into the reporting currency, units of it per unit of the other
    # currency, as JSON: one rate ({"USD": "0.92"}) or rates effective from a date until
    # the next ({"USD": [["1990-01-01", "0.92"], ["2025-01-01", "0.95"]]}). A purchase in
    # a currency without a rate that day is counted (orders, recency, frequency) but its
    # money is left out, and every answer says how much (``unconverted``).
    exchange_rates: dict[str, list[tuple[date, Decimal]]] = {}

    @field_validator("exchange_rates", mode="before")
    @classmethod
    def _one_rate_is_a_schedule(cls, value: object) -> object:
        # A single rate holds from the earliest date on.
        if isinstance(value, dict):
            return {
                code: [(date.min, rate)] if isinstance(rate, str | int | float | Decimal) else rate
                for code, rate in value.items()
            }
        return value

    @field_validator("exchange_rates")
    @classmethod
    def _valid_rates(
        cls, value: dict[str, list[tuple[date, Decimal]]]
    ) -> dict[str, list[tuple[date, Decimal]]]:
        for code, schedule in value.items():
            if len(code) != 3 or not code.isalpha() or not code.isupper():
                raise ValueError(f"exchange_rates: {code!r} is not an ISO 4217 code such as USD")
            # ExchangeRates checks the rest (positive rates, increasing dates).
            ExchangeRates(reporting="", rates={code: schedule})
        return value

    # Calendar periods (migration, satisfaction by period) start at midnight in this
    # IANA time zone.
    reporting_timezone: str = "UTC"

    @field_validator("reporting_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"reporting_timezone: {value!r} is not an IANA time zone such as Europe/Paris"
            ) from None
        return value

    @property
    def reporting_zone(self) -> ZoneInfo:
        return ZoneInfo(self.reporting_timezone)

    @field_validator("journey_end_steps", "journey_inactivity_minutes")
    @classmethod
    def _has_default(cls, value: dict[str, object]) -> dict[str, object]:
        if "*" not in value:
            raise ValueError('needs a "*" entry: the default for other journey types')
        return value

    @property
    def identity_rules(self) -> IdentityRules:
        return IdentityRules(
            limits={**DEFAULT_LIMITS, **self.identity_limits},
            blocked=blocked_setting(self.identity_blocked),
        )

    @property
    def max_future_skew(self) -> timedelta:
        return timedelta(seconds=self.max_future_skew_seconds)

    def end_steps(self, journey_type: str) -> list[str]:
        return self.journey_end_steps.get(journey_type, self.journey_end_steps["*"])

    def inactivity_gap(self, journey_type: str) -> timedelta:
        minutes = self.journey_inactivity_minutes.get(
            journey_type, self.journey_inactivity_minutes["*"]
        )
        return timedelta(minutes=minutes)
