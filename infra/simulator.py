"""Demo traffic: a seeded simulator of omnichannel touchpoints (envelope v1).

The simulator plays a small company (car workshop and showroom, a web shop and stores,
a support hotline) and its customers. It yields JSON-ready dicts that satisfy
``domain.touchpoints.parse_touchpoint``, and ``send_http`` posts them to the ingest API.
It is used by the demo, the benchmarks and the dashboard.

What the traffic looks like (DOMAIN.md §2-5, §8):

- **Customers** ``C-000000``.. each have an email, and some a phone, a loyalty card or a
  device id; an envelope's ``customer`` carries the ``id``, sometimes with one of the
  others (the one the channel knows). Spend follows a Pareto law
  (``random.paretovariate(1.16)``: about 20% of the customers make 80% of the revenue):
  a customer of value weight ``w`` starts activities ``sqrt(w)`` times as often as the
  smallest buyer, and spends ``sqrt(w)`` times as much per order. Prospects never buy.
- **Journeys** (``JOURNEY_TYPES``) are ordered steps ending in a default end step
  (``farewell`` / ``handover`` / ``end``, see ``infra.settings``), minutes apart (always
  less than the default 240-minute inactivity gap). Each step has a touchpoint type
  (purchase on the paying step, delivery, call, ...) and an emotion -3..+3 drawn around
  the step's mean, so every journey type has its own pain points, plus a per-customer
  mood and a per-journey noise.
- **Complaints** may follow a journey with a moment at -2 or worse: filed, then maybe
  acknowledged, resolved (sometimes with compensation) and followed up; some stay open.
- **Surveys** may follow a journey: at most five ``survey_answered`` touchpoints (NPS
  correlated with the journey's peak-end score, CSAT, CES, expectation vs. perceived
  quality, importance of an attribute, a Kano question pair). Complaint and survey
  touchpoints carry ``additional.journey_id``; they are not part of the journey.
- **Standalone** touchpoints (visit, call, message, service appointment) without journey.
- **Faults**: exact re-sends of an envelope (same ``event_id``, a few envelopes later)
  at ``duplicate_rate``; late touchpoints (event time before that of touchpoints of the
  same customer already sent: a till or a call centre uploading a backlog) at
  ``late_rate``.

Time: in **live** mode every touchpoint happens "now" (the clock at generation, never in
the future), except late ones, minutes to hours in the past. The simulated timeline then
only orders the stream: a journey's steps are as far apart as the sending makes them. In
**historical** mode (``start`` and ``end`` given) event time is the simulated time, spread
over the period with a day-and-week pattern, in time order per customer (but for late
touchpoints); the stream ends with the period.

The output depends only on the config and, in live mode, on what the clock returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import heapq
import itertools
import math
import random
import re
import time
from bisect import bisect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Literal, TypeVar

import httpx

from domain.metrics import peak_end

__all__ = [
    "DEFAULT_CHANNELS",
    "JOURNEY_TYPES",
    "CustomerProfile",
    "JourneyType",
    "SendStats",
    "Simulator",
    "SimulatorConfig",
    "Step",
    "period",
    "send_http",
]

# ---------------------------------------------------------------------------------------
# The catalog: journey types, their steps and what customers feel at each
# ---------------------------------------------------------------------------------------

KanoCategory = Literal["attractive", "one_dimensional", "must_be", "indifferent"]


@dataclass(frozen=True)
class Step:
    """One step of a journey type.

    ``gap_minutes`` is the range of the event-time gap since the previous step (ignored
    for the first step); ``mean_emotion`` is the average emotion felt at the step.
    """

    name: str
    type: str
    mean_emotion: float
    gap_minutes: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class JourneyType:
    """A kind of episode: its steps, channels and what its surveys and complaints are about.

    ``weight`` is its relative frequency among journeys; ``order_value`` the typical order
    of the smallest buyer (journeys with a purchase step only); ``attributes`` pairs each
    attribute an importance question may rate with its mean importance (0-10);
    ``features`` pairs each feature a Kano question pair may ask about with its true
    Kano category; ``complaint_categories`` maps a step to the category of a complaint
    about it ("*": the others).
    """

    name: str
    channels: tuple[str, ...]
    steps: tuple[Step, ...]
    weight: float
    order_value: float
    sku_prefix: str
    topic: str
    attributes: tuple[tuple[str, float], ...]
    features: tuple[tuple[str, KanoCategory], ...]
    complaint_categories: Mapping[str, str]

    @property
    def buys(self) -> bool:
        """Whether the journey holds a purchase (prospects only take the others)."""
        return any(step.type == "purchase" for step in self.steps)


JOURNEY_TYPES: Mapping[str, JourneyType] = MappingProxyType(
    {
        jt.name: jt
        for jt in (
            JourneyType(
                name="car_service",
                channels=("workshop",),
                steps=(
                    Step("arrival", "service_appointment", 0.4),
                    Step("welcome", "visit", 1.2, (1, 5)),
                    Step("waiting", "visit", -1.4, (3, 10)),
                    Step("price_explanation", "visit", -1.0, (25, 100)),
                    Step("staff_contact", "visit", 0.8, (5, 20)),
                    Step("handover", "purchase", 0.5, (10, 45)),
                    Step("farewell", "visit", 1.0, (1, 5)),
                ),
                weight=1.0,
                order_value=280.0,
                sku_prefix="SRV",
                topic="car service",
                attributes=(
                    ("waiting_time", 8.0),
                    ("price_transparency", 8.5),
                    ("repair_quality", 9.5),
                    ("staff_friendliness", 7.0),
                    ("cleanliness", 5.0),
                ),
                features=(
                    ("courtesy_car", "attractive"),
                    ("online_booking", "one_dimensional"),
                    ("free_car_wash", "attractive"),
                    ("repair_warranty", "must_be"),
                    ("lounge_wifi", "indifferent"),
                ),
                complaint_categories=MappingProxyType(
                    {
                        "waiting": "waiting_time",
                        "price_explanation": "pricing",
                        "staff_contact": "staff",
                        "handover": "billing",
                        "*": "service_quality",
                    }
                ),
            ),
            JourneyType(
                name="online_order",
                channels=("web", "app"),
                steps=(
                    Step("browse", "visit", 0.5),
                    Step("product_page", "visit", 0.8, (1, 8)),
                    Step("checkout", "visit", -0.4, (1, 12)),
                    Step("payment", "purchase", -0.1, (1, 4)),
                    Step("delivery", "delivery", -0.5, (60, 200)),
                    Step("end", "message", 0.6, (5, 30)),
                ),
                weight=1.6,
                order_value=65.0,
                sku_prefix="WEB",
                topic="online order",
                attributes=(
                    ("delivery_speed", 8.0),
                    ("price", 8.5),
                    ("website_usability", 7.0),
                    ("product_range", 6.5),
                    ("returns_policy", 6.0),
                ),
                features=(
                    ("free_shipping", "one_dimensional"),
                    ("live_tracking", "attractive"),
                    ("order_confirmation", "must_be"),
                    ("gift_wrapping", "indifferent"),
                    ("one_click_checkout", "attractive"),
                ),
                complaint_categories=MappingProxyType(
                    {
                        "checkout": "website",
                        "payment": "payment",
                        "delivery": "delivery",
                        "*": "service_quality",
                    }
                ),
            ),
            JourneyType(
                name="support_call",
                channels=("phone",),
                steps=(
                    Step("ivr", "call", -0.5),
                    Step("queue", "call", -1.6, (0.5, 2)),
                    Step("agent", "call", 0.7, (2, 25)),
                    Step("resolution", "call", 0.6, (3, 15)),
                    Step("end", "call", 0.5, (1, 3)),
                ),
                weight=0.9,
                order_value=0.0,
                sku_prefix="",
                topic="support call",
                attributes=(
                    ("waiting_time", 8.5),
                    ("first_contact_resolution", 9.0),
                    ("agent_competence", 8.5),
                    ("friendliness", 6.5),
                ),
                features=(
                    ("callback_option", "attractive"),
                    ("hotline_24_7", "one_dimensional"),
                    ("agent_knows_history", "must_be"),
                    ("hold_music", "indifferent"),
                ),
                complaint_categories=MappingProxyType(
                    {
                        "queue": "waiting_time",
                        "ivr": "waiting_time",
                        "agent": "staff",
                        "*": "unresolved_issue",
                    }
                ),
            ),
            JourneyType(
                name="store_visit",
                channels=("store",),
                steps=(
                    Step("entrance", "visit", 0.6),
                    Step("browse", "visit", 0.4, (1, 10)),
                    Step("advice", "visit", 1.1, (2, 15)),
                    Step("queue", "visit", -1.3, (2, 15)),
                    Step("checkout", "purchase", 0.3, (3, 20)),
                    Step("farewell", "visit", 0.8, (0.5, 3)),
                ),
                weight=1.3,
                order_value=45.0,
                sku_prefix="STO",
                topic="store visit",
                attributes=(
                    ("advice_quality", 7.5),
                    ("queue_time", 7.0),
                    ("product_availability", 8.5),
                    ("price", 8.0),
                    ("store_ambience", 5.0),
                ),
                features=(
                    ("self_checkout", "indifferent"),
                    ("loyalty_points", "one_dimensional"),
                    ("personal_advice", "attractive"),
                    ("price_labels", "must_be"),
                    ("click_and_collect", "attractive"),
                ),
                complaint_categories=MappingProxyType(
                    {
                        "queue": "waiting_time",
                        "advice": "staff",
                        "checkout": "billing",
                        "browse": "product_availability",
                        "*": "service_quality",
                    }
                ),
            ),
            JourneyType(
                name="test_drive",
                channels=("showroom",),
                steps=(
                    Step("booking", "service_appointment", 0.5),
                    Step("arrival", "visit", 0.3, (20, 120)),
                    Step("test_drive", "visit", 2.0, (5, 20)),
                    Step("offer", "visit", -0.9, (20, 60)),
                    Step("farewell", "visit", 0.6, (5, 15)),
                ),
                weight=0.4,
                order_value=0.0,
                sku_prefix="",
                topic="test drive",
                attributes=(
                    ("vehicle_choice", 8.0),
                    ("price", 9.0),
                    ("advice_quality", 7.5),
                    ("flexibility", 6.0),
                ),
                features=(
                    ("home_test_drive", "attractive"),
                    ("extended_test_drive", "one_dimensional"),
                    ("clean_vehicle", "must_be"),
                    ("free_coffee", "indifferent"),
                ),
                complaint_categories=MappingProxyType(
                    {"offer": "pricing", "arrival": "waiting_time", "*": "staff"}
                ),
            ),
        )
    }
)

DEFAULT_CHANNELS = ("store", "workshop", "showroom", "phone", "web", "app", "email", "chat")

# Standalone touchpoints: the type each channel produces, and how often the channel is used.
_STANDALONE_TYPE = {
    "store": "visit",
    "workshop": "visit",
    "showroom": "visit",
    "web": "visit",
    "app": "visit",
    "phone": "call",
    "email": "message",
    "chat": "message",
}
_STANDALONE_WEIGHT = {
    "web": 3.0,
    "app": 2.0,
    "store": 2.0,
    "phone": 2.0,
    "email": 2.0,
    "chat": 1.0,
    "workshop": 1.0,
    "showroom": 0.5,
}
# Which identifier, besides the id, a channel may see.
_CHANNEL_IDENTIFIERS: dict[str, tuple[str, ...]] = {
    "store": ("loyalty_card",),
    "workshop": ("loyalty_card", "phone"),
    "showroom": ("phone", "email"),
    "phone": ("phone",),
    "web": ("email", "device_id"),
    "app": ("device_id",),
    "email": ("email",),
    "chat": ("email", "device_id"),
}
_COMPLAINT_CHANNELS = ("email", "phone", "chat", "web", "store")
_SURVEY_CHANNELS = ("email", "app", "web")

_LOCATIONS = {
    "store": ("Berlin Mitte", "Munich Centre", "Hamburg Harbour", "Cologne Dom", "Leipzig"),
    "workshop": ("Workshop Berlin", "Workshop Munich", "Workshop Hamburg"),
    "showroom": ("Showroom Berlin", "Showroom Munich"),
}
_PAGES = ("/", "/offers", "/accessories", "/parts", "/service", "/account", "/help")
_SERVICES = ("inspection", "oil_change", "brake_repair", "tyre_change", "diagnostics")
_MODELS = ("city_ev", "family_suv", "estate", "roadster")
_CALL_REASONS = (
    "billing_question",
    "technical_issue",
    "order_status",
    "warranty",
    "appointment_change",
)
_SUBJECTS = {
    "inbound": ("order question", "invoice copy", "appointment request", "feedback"),
    "outbound": ("newsletter", "appointment reminder", "offer", "invoice"),
}
_FIRST_NAMES = (
    "anna",
    "ben",
    "clara",
    "david",
    "emma",
    "felix",
    "greta",
    "hugo",
    "ida",
    "jonas",
    "lena",
    "max",
    "nina",
    "oskar",
    "paula",
    "rafael",
    "sofia",
    "tom",
)
_LAST_NAMES = (
    "mueller",
    "schmidt",
    "schneider",
    "fischer",
    "weber",
    "meyer",
    "wagner",
    "becker",
    "schulz",
    "hoffmann",
    "koch",
    "richter",
    "klein",
    "wolf",
)
_MAIL_DOMAINS = ("example.com", "example.org", "example.net")
_COMPENSATION_CENTS = {
    "low": (500, 1000),
    "medium": (1000, 1250, 2000),
    "high": (2500, 5000, 7500),
    "critical": (10000, 15000),
}
_KANO_OTHERS = ("expect", "neutral", "tolerate")
_KANO_ANSWERS = ("like", "expect", "neutral", "tolerate", "dislike")

# Demand pattern of historical mode (UTC hour of day; Monday first).
_HOUR_PROFILE = (
    0.05,
    0.03,
    0.02,
    0.02,
    0.03,
    0.08,
    0.25,
    0.55,
    0.9,
    1.0,
    1.0,
    0.95,
    0.9,
    0.95,
    1.0,
    1.0,
    0.95,
    0.9,
    0.8,
    0.65,
    0.5,
    0.35,
    0.2,
    0.1,
)
_DAY_PROFILE = (1.0, 0.95, 0.95, 1.0, 1.05, 0.8, 0.25)
_PEAK_DEMAND = max(_HOUR_PROFILE) * max(_DAY_PROFILE)
_MEAN_DEMAND = sum(_HOUR_PROFILE) / 24 * sum(_DAY_PROFILE) / 7

_T = TypeVar("_T")
_YEAR_SECONDS = 365.25 * 86400
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)
_CHANNEL_PATTERN = re.compile(r"^[a-z][a-z0-9_\-]{0,39}$")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(ts: float) -> str:
    """ISO-8601 in UTC, to the microsecond (truncated), with its offset."""
    second = math.floor(ts)
    return f"{_second(second)}.{int((ts - second) * 1_000_000):06d}+00:00"


@functools.lru_cache(maxsize=64)
def _second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _uuid4(bits: int) -> str:
    """``str(uuid.UUID(int=bits, version=4))``, twice as fast."""
    h = f"{(bits & _UUID_CLEAR) | _UUID_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _clip(value: float, low: int, high: int) -> int:
    return max(low, min(high, round(value)))


# ---------------------------------------------------------------------------------------
# Configuration and customers
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatorConfig:
    """What to simulate. Live mode unless ``start`` and ``end`` (aware) are given.

    Rates are probabilities: ``complaint_rate`` that a journey with a moment at -2 leads
    to a complaint (doubled at -3; in real life about 1 unhappy customer in 25
    complains, DOMAIN.md §8: the demo default is higher so complaints show);
    ``survey_rate`` that a journey is followed by a survey; ``duplicate_rate`` and
    ``late_rate`` the share of envelopes that are re-sends and late touchpoints;
    ``standalone_rate`` the share of activities that are a single touchpoint without a
    journey; ``prospect_rate`` the share of customers who never buy; ``sourceless_rate``
    the share of the touchpoints naming their customer by another identifier (e-mail,
    phone, loyalty card, device) that do not carry the source's customer id as well (a
    call centre that knows only the number calling): identity resolution links them, and
    merges the customers they started.
    ``activities_per_customer_per_year`` sets the pace of the simulated timeline (the
    volume of a historical period: about 6 touchpoints per activity).
    """

    seed: int = 0
    customers: int = 500
    journey_types: tuple[str, ...] = tuple(JOURNEY_TYPES)
    channels: tuple[str, ...] = DEFAULT_CHANNELS
    complaint_rate: float = 0.2
    survey_rate: float = 0.3
    duplicate_rate: float = 0.01
    late_rate: float = 0.03
    standalone_rate: float = 0.25
    prospect_rate: float = 0.15
    sourceless_rate: float = 0.0
    pareto_alpha: float = 1.16
    activities_per_customer_per_year: float = 24.0
    currency: str = "EUR"
    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.customers < 1:
            raise ValueError("customers: at least one")
        for name in (
            "complaint_rate",
            "survey_rate",
            "duplicate_rate",
            "late_rate",
            "standalone_rate",
            "prospect_rate",
            "sourceless_rate",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: a probability, from 0 to 1")
        if not self.pareto_alpha > 1.0:
            raise ValueError("pareto_alpha: above 1 (1.16 gives the 80/20 rule)")
        if not 0.0 < self.activities_per_customer_per_year < math.inf:
            raise ValueError("activities_per_customer_per_year: a positive number")
        if not re.fullmatch(r"[A-Z]{3}", self.currency):
            raise ValueError("currency: an ISO 4217 code such as EUR")
        if not self.channels:
            raise ValueError("channels: at least one")
        for channel in self.channels:
            if not _CHANNEL_PATTERN.match(channel):
                raise ValueError(f"channels: {channel!r} is not a valid channel name")
        for name in self.journey_types:
            journey_type = JOURNEY_TYPES.get(name)
            if journey_type is None:
                raise ValueError(
                    f"journey_types: unknown {name!r}; known: " + ", ".join(JOURNEY_TYPES)
                )
            if not set(journey_type.channels) & set(self.channels):
                raise ValueError(
                    f"channels: journey type {name!r} needs one of "
                    + ", ".join(journey_type.channels)
                )
        if (self.start is None) != (self.end is None):
            raise ValueError("start, end: give both (historical mode) or neither (live)")
        if self.start is not None and self.end is not None:
            if self.start.tzinfo is None or self.end.tzinfo is None:
                raise ValueError("start, end: aware datetimes (with a UTC offset)")
            if not self.start < self.end:
                raise ValueError("start, end: start comes before end")

    @property
    def mode(self) -> Literal["live", "historical"]:
        """``historical`` when a period is given, else ``live``."""
        return "live" if self.start is None else "historical"


@dataclass(frozen=True)
class CustomerProfile:
    """A simulated customer: identifiers and the hidden traits that drive the traffic.

    ``value_weight`` is the Pareto draw (>= 1; 0 for prospects); ``mood`` shifts every
    emotion the customer feels; ``expectation`` is the quality (0-10) they expect.
    """

    id: str
    email: str
    phone: str | None
    loyalty_card: str | None
    device_id: str | None
    prospect: bool
    value_weight: float
    mood: float
    expectation: float

    @property
    def spend_factor(self) -> float:
        """How much more than the smallest buyer the customer buys, per order and in
        frequency (so revenue grows like ``value_weight``); 0 for a prospect."""
        return math.sqrt(self.value_weight)


def _population(rng: random.Random, config: SimulatorConfig) -> list[CustomerProfile]:
    n = config.customers
    phones = rng.sample(range(10_000_000, 100_000_000), n)
    cards = rng.sample(range(100_000_000, 1_000_000_000), n)
    customers = []
    for i in range(n):
        prospect = rng.random() < config.prospect_rate
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        customers.append(
            CustomerProfile(
                id=f"C-{i:06d}",
                email=f"{first}.{last}.{i}@{rng.choice(_MAIL_DOMAINS)}",
                phone=f"+49 15{rng.randint(1, 9)} {phones[i]}" if rng.random() < 0.6 else None,
                loyalty_card=f"LC{cards[i]}" if rng.random() < 0.4 else None,
                device_id=f"dev-{rng.getrandbits(64):016x}" if rng.random() < 0.5 else None,
                prospect=prospect,
                value_weight=0.0 if prospect else rng.paretovariate(config.pareto_alpha),
                mood=rng.gauss(0.0, 0.6),
                expectation=min(10.0, max(0.0, rng.gauss(7.0, 1.2))),
            )
        )
    return customers


# ---------------------------------------------------------------------------------------
# The simulator
# ---------------------------------------------------------------------------------------


class _Draft:
    """A touchpoint scheduled on the simulated timeline, not yet stamped nor identified."""

    __slots__ = (
        "additional",
        "anchor",
        "channel",
        "customer",
        "emotion",
        "identifier",
        "journey",
        "payload",
        "promise",
        "type",
    )

    def __init__(
        self,
        customer: int,
        type_: str,
        channel: str,
        identifier: tuple[str, str] | None,
        payload: dict[str, Any],
        *,
        journey: tuple[str, str, str] | None = None,
        emotion: int | None = None,
        additional: dict[str, Any] | None = None,
        promise: float | None = None,
        anchor: float | None = None,
    ) -> None:
        self.anchor = anchor  # live mode: the simulated time stamped "now" (a journey's end)
        self.customer = customer
        self.type = type_
        self.channel = channel
        self.identifier = identifier
        self.payload = payload
        self.journey = journey
        self.emotion = emotion
        self.additional = additional
        self.promise = promise  # payload.promised_at = occurred_at + promise (seconds)


class Simulator:
    """An endless (live) or period-long (historical) stream of touchpoint envelopes.

    ``touchpoints(n)`` returns the next ``n``; iterating continues the same stream. Two
    simulators with the same config (and, in live mode, clocks returning the same
    values) produce the same envelopes.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.config = config = config or SimulatorConfig()
        self._clock = clock
        now = clock()
        if now.tzinfo is None:
            raise ValueError("clock: it returns aware datetimes")
        self._rng = rng = random.Random(config.seed)
        self._customers = tuple(_population(rng, config))
        self._historical = config.start is not None and config.end is not None
        if self._historical:
            # The same customers as live mode with this seed, but touchpoints of their own:
            # a demo's history and its live traffic must never share an event id (one
            # event id names one touchpoint: a reuse with other content is a conflict).
            rng.seed(f"{config.seed}:history")
        if config.start is not None and config.end is not None:
            if config.end > now:
                raise ValueError("end: a historical period lies in the past")
            self._start_ts = config.start.timestamp()
            self._end_ts = config.end.timestamp()
        else:
            self._start_ts = now.timestamp()
            self._end_ts = math.inf

        # Activity starts: a Poisson process, thinned by the demand pattern in
        # historical mode; who starts one is drawn in proportion to spend_factor.
        rate = config.customers * config.activities_per_customer_per_year / _YEAR_SECONDS
        self._arrival_rate = rate * (_PEAK_DEMAND / _MEAN_DEMAND if self._historical else 1)
        self._cum_activity = list(
            itertools.accumulate(1.0 if c.prospect else c.spend_factor for c in self._customers)
        )
        types = [JOURNEY_TYPES[name] for name in config.journey_types]
        self._buyer_types = types
        self._buyer_cum = list(itertools.accumulate(t.weight for t in types))
        self._prospect_types = [t for t in types if not t.buys]
        self._prospect_cum = list(itertools.accumulate(t.weight for t in self._prospect_types))
        self._journey_channels = {
            t.name: [c for c in t.channels if c in config.channels] for t in types
        }
        self._standalone_channels = list(config.channels)
        self._standalone_cum = list(
            itertools.accumulate(_STANDALONE_WEIGHT.get(c, 1.0) for c in config.channels)
        )
        self._complaint_channels = [c for c in _COMPLAINT_CHANNELS if c in config.channels]
        self._survey_channels = [c for c in _SURVEY_CHANNELS if c in config.channels]

        self._heap: list[tuple[float, int, _Draft]] = []
        self._seq = itertools.count()
        self._journeys = itertools.count()
        self._orders = itertools.count()
        self._appointments = itertools.count()
        self._complaints = itertools.count()
        self._surveys = itertools.count()
        self._next_start = self._next_arrival(self._start_ts)
        self._exhausted = False
        # Per customer: the latest event time sent (late touchpoints go before it).
        self._last: list[float] = [-math.inf] * config.customers
        self._recent: list[int] = []  # customers recently sent, candidates for late ones
        self._slot = 0
        self._resends: list[tuple[int, int, dict[str, Any]]] = []

    # -- public ----------------------------------------------------------------------

    @property
    def customers(self) -> Sequence[CustomerProfile]:
        """The simulated population (ground truth for tests and dashboards)."""
        return self._customers

    @property
    def mode(self) -> Literal["live", "historical"]:
        """``live`` (endless, stamped by the clock) or ``historical`` (the config's period)."""
        return self.config.mode

    def touchpoints(self, n: int) -> list[dict[str, Any]]:
        """The next ``n`` envelopes (fewer only when a historical period is exhausted)."""
        out = []
        for _ in range(n):
            envelope = self._next()
            if envelope is None:
                break
            out.append(envelope)
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The stream, envelope after envelope: endless in live mode."""
        while (envelope := self._next()) is not None:
            yield envelope

    # -- the stream --------------------------------------------------------------------

    def _pick(self, options: Sequence[_T]) -> _T:
        """``rng.choice``, faster (one float instead of rejection sampling)."""
        return options[int(self._rng.random() * len(options))]

    def _between(self, low: int, high: int) -> int:
        """``rng.randint``, faster."""
        return low + int(self._rng.random() * (high - low + 1))

    def _next(self) -> dict[str, Any] | None:
        self._slot += 1
        resends = self._resends
        if resends and resends[0][0] <= self._slot:
            return heapq.heappop(resends)[2]
        envelope = None
        if not self._exhausted and self._rng.random() < self.config.late_rate:
            envelope = self._late()
        if envelope is None:
            envelope = self._regular()
        if envelope is None:
            return heapq.heappop(resends)[2] if resends else None
        if self._rng.random() < self.config.duplicate_rate:
            copy_ = copy.deepcopy(envelope)
            heapq.heappush(resends, (self._slot + self._rng.randint(1, 50), self._slot, copy_))
        return envelope

    def _regular(self) -> dict[str, Any] | None:
        heap = self._heap
        while True:
            if heap and heap[0][0] <= self._next_start:
                ts, _, draft = heapq.heappop(heap)
                return self._emit(draft, ts)
            if self._next_start > self._end_ts:
                if heap:
                    ts, _, draft = heapq.heappop(heap)
                    return self._emit(draft, ts)
                self._exhausted = True
                return None
            self._start_activity(self._next_start)
            self._next_start = self._next_arrival(self._next_start)

    def _next_arrival(self, t: float) -> float:
        rng = self._rng
        while True:
            t += rng.expovariate(self._arrival_rate)
            if not self._historical or t > self._end_ts:
                return t
            hour = int(t // 3600)
            demand = _HOUR_PROFILE[hour % 24] * _DAY_PROFILE[(hour // 24 + 3) % 7]
            if rng.random() * _PEAK_DEMAND < demand:
                return t

    def _emit(self, draft: _Draft, ts: float, *, late: bool = False) -> dict[str, Any]:
        c = draft.customer
        if not late:
            if self._historical:
                ts = max(ts, self._last[c])
            elif draft.anchor is not None:
                # A journey keeps its simulated spacing and ends now: its earlier steps
                # are stamped minutes ago, in step order.
                ts = self._clock().timestamp() - (draft.anchor - ts)
            else:
                ts = max(self._clock().timestamp(), self._last[c])
            self._last[c] = max(self._last[c], ts)
            recent = self._recent
            if len(recent) < 1024:
                recent.append(c)
            else:
                recent[self._slot % 1024] = c
        customer = {"id": self._customers[c].id}
        bits = self._rng.getrandbits(128)
        if draft.identifier is not None:
            # Decided from the event id's bits: no extra draw, so the rest of the traffic
            # is the same whatever the rate.
            if (bits >> 96) / 2**32 < self.config.sourceless_rate:
                customer = {}
            customer[draft.identifier[0]] = draft.identifier[1]
        envelope: dict[str, Any] = {
            "schema": 1,
            "event_id": _uuid4(bits),
            "type": draft.type,
            "occurred_at": _iso(ts),
            "channel": draft.channel,
            "customer": customer,
        }
        if draft.journey is not None:
            journey_id, journey_type, step = draft.journey
            envelope["journey"] = {"id": journey_id, "type": journey_type, "step": step}
        if draft.emotion is not None:
            envelope["emotion"] = draft.emotion
        if draft.promise is not None:
            draft.payload["promised_at"] = _iso(ts + draft.promise)
        envelope["payload"] = draft.payload
        if draft.additional:
            envelope["additional"] = draft.additional
        return envelope

    def _late(self) -> dict[str, Any] | None:
        """A standalone touchpoint of a recently seen customer, from minutes to hours
        before that customer's latest one: it reaches us after later ones."""
        if not self._recent:
            return None
        rng = self._rng
        c = self._recent[rng.randrange(len(self._recent))]
        latest = self._last[c]
        ts = latest - math.exp(rng.uniform(math.log(120), math.log(4 * 3600)))
        if self._historical and ts < self._start_ts:
            if latest <= self._start_ts + 1:
                return None
            ts = rng.uniform(self._start_ts, latest - 1)
        return self._emit(self._standalone(c), ts, late=True)

    def _push(self, ts: float, draft: _Draft) -> None:
        if ts <= self._end_ts:
            heapq.heappush(self._heap, (ts, next(self._seq), draft))

    # -- activities --------------------------------------------------------------------

    def _start_activity(self, t: float) -> None:
        rng = self._rng
        c = bisect(self._cum_activity, rng.random() * self._cum_activity[-1])
        c = min(c, len(self._customers) - 1)
        if self._customers[c].prospect:
            types, cum = self._prospect_types, self._prospect_cum
        else:
            types, cum = self._buyer_types, self._buyer_cum
        if not types or rng.random() < self.config.standalone_rate:
            self._push(t, self._standalone(c))
            return
        self._journey(c, types[bisect(cum, rng.random() * cum[-1])], t)

    def _identifier(self, c: int, channel: str) -> tuple[str, str] | None:
        rng = self._rng
        if rng.random() >= 0.35:
            return None
        kind = self._pick(_CHANNEL_IDENTIFIERS.get(channel, ("email",)))
        value = getattr(self._customers[c], kind)
        return None if value is None else (kind, value)

    def _standalone(self, c: int) -> _Draft:
        rng = self._rng
        cum = self._standalone_cum
        channel = self._standalone_channels[bisect(cum, rng.random() * cum[-1])]
        type_ = _STANDALONE_TYPE.get(channel, "visit")
        payload: dict[str, Any]
        if channel in ("web", "phone", "workshop") and rng.random() < 0.1:
            type_ = "service_appointment"
            payload = {
                "appointment_id": f"A-{next(self._appointments):08d}",
                "service": self._pick(_SERVICES),
            }
        elif type_ == "call":
            payload = {
                "direction": "inbound" if rng.random() < 0.7 else "outbound",
                "duration_seconds": self._between(30, 900),
                "wait_seconds": self._between(0, 300),
                "reason": self._pick(_CALL_REASONS),
            }
        elif type_ == "message":
            direction = "inbound" if rng.random() < 0.4 else "outbound"
            payload = {"direction": direction, "subject": self._pick(_SUBJECTS[direction])}
        else:
            payload = {
                "location": self._location(channel),
                "duration_seconds": self._between(20, 1800),
            }
        emotion = None
        if rng.random() < 0.5:
            emotion = _clip(0.3 + self._customers[c].mood + rng.gauss(0.0, 1.0), -3, 3)
        return _Draft(c, type_, channel, self._identifier(c, channel), payload, emotion=emotion)

    def _location(self, channel: str) -> str:
        places = _LOCATIONS.get(channel)
        return self._pick(places) if places else self._pick(_PAGES)

    def _journey(self, c: int, jt: JourneyType, t0: float) -> None:
        rng = self._rng
        steps = jt.steps
        times = [t0]
        for step in steps[1:]:
            times.append(times[-1] + rng.uniform(*step.gap_minutes) * 60.0)
        if times[-1] > self._end_ts:
            return  # it would not end within the period: it does not start
        customer = self._customers[c]
        journey_id = f"J-{next(self._journeys):08d}"
        channel = self._pick(self._journey_channels[jt.name])
        mood = customer.mood + rng.gauss(0.0, 0.5)
        order_id: str | None = None
        reason = jt.topic.replace(" ", "_")
        emotions: list[int] = []
        for i, step in enumerate(steps):
            emotion = round(step.mean_emotion + mood + rng.gauss(0.0, 0.9))
            emotion = -3 if emotion < -3 else 3 if emotion > 3 else emotion
            emotions.append(emotion)
            following = times[i + 1] - times[i] if i + 1 < len(steps) else None
            payload: dict[str, Any]
            promise = None
            if step.type == "purchase":
                order_id = f"O-{next(self._orders):08d}"
                payload = self._order(order_id, jt, customer)
            elif step.type == "delivery":
                on_time = emotion >= 0 or (emotion == -1 and rng.random() < 0.5)
                minutes = rng.uniform(5, 120)
                promise = minutes * 60.0 if on_time else -minutes * 60.0
                payload = {"on_time": on_time}
                if order_id is not None:
                    payload["order_id"] = order_id
            elif step.type == "call":
                wait = self._between(0, 30)
                if following is not None and step.name == "queue":
                    wait = int(following)
                payload = {
                    "direction": "inbound",
                    "wait_seconds": wait,
                    "duration_seconds": int(following or self._between(30, 180)),
                    "reason": reason,
                }
            elif step.type == "message":
                payload = {"direction": "outbound", "subject": f"your {jt.topic}"}
            elif step.type == "service_appointment":
                service = self._pick(_MODELS if jt.name == "test_drive" else _SERVICES)
                payload = {
                    "appointment_id": f"A-{next(self._appointments):08d}",
                    "service": service,
                }
            else:
                payload = {
                    "location": self._location(channel),
                    "duration_seconds": int(following or self._between(60, 600)),
                }
            self._push(
                times[i],
                _Draft(
                    c,
                    step.type,
                    channel,
                    self._identifier(c, channel),
                    payload,
                    journey=(journey_id, jt.name, step.name),
                    emotion=emotion,
                    promise=promise,
                    anchor=times[-1],
                ),
            )

        worst = min(emotions)
        if worst <= -2:
            chance = self.config.complaint_rate * (2.0 if worst == -3 else 1.0)
            if rng.random() < chance:
                worst_step = steps[emotions.index(worst)].name
                self._complaint(c, jt, journey_id, worst, worst_step, times[-1], channel)
        if rng.random() < self.config.survey_rate:
            self._survey(c, jt, journey_id, emotions, times[-1], channel)

    def _order(self, order_id: str, jt: JourneyType, customer: CustomerProfile) -> dict[str, Any]:
        rng = self._rng
        target = jt.order_value * customer.spend_factor * rng.lognormvariate(0.0, 0.4) * 100
        count = self._pick((1, 1, 1, 2, 2, 3, 4))
        shares = [rng.random() + 0.2 for _ in range(count)]
        total_share = sum(shares)
        items = []
        cents = 0
        for share in shares:
            quantity = self._pick((1, 1, 1, 2, 3))
            unit = max(100, round(target * share / total_share / quantity))
            cents += unit * quantity
            items.append(
                {
                    "sku": f"{jt.sku_prefix}-{self._between(100, 999)}",
                    "quantity": quantity,
                    "unit_price": _money(unit),
                }
            )
        return {
            "order_id": order_id,
            "amount": _money(cents),
            "currency": self.config.currency,
            "items": items,
        }

    def _complaint(
        self,
        c: int,
        jt: JourneyType,
        journey_id: str,
        worst: int,
        worst_step: str,
        t: float,
        journey_channel: str,
    ) -> None:
        rng = self._rng
        complaint_id = f"CP-{next(self._complaints):07d}"
        if worst == -3:
            severity = "critical" if rng.random() < 0.25 else "high"
        else:
            severity = "low" if rng.random() < 0.3 else "medium"
        category = jt.complaint_categories.get(worst_step, jt.complaint_categories["*"])
        channel = (
            rng.choice(self._complaint_channels) if self._complaint_channels else journey_channel
        )
        urgency = 0.5 if severity in ("high", "critical") else 1.0
        additional = {"journey_id": journey_id}

        def later(low: float, high: float) -> float:
            return math.exp(rng.uniform(math.log(low), math.log(high))) * urgency

        def push(type_: str, payload: dict[str, Any], channel_: str) -> None:
            self._push(
                t,
                _Draft(
                    c,
                    type_,
                    channel_,
                    self._identifier(c, channel_),
                    {"complaint_id": complaint_id, **payload},
                    additional=dict(additional),
                ),
            )

        t += later(600, 2 * 86400)
        push(
            "complaint_filed",
            {
                "category": category,
                "severity": severity,
                "note": f"{worst_step.replace('_', ' ')} during {jt.topic}",
            },
            channel,
        )
        if rng.random() < 0.15:
            return  # stays open, not even acknowledged
        t += later(300, 12 * 3600)
        push("complaint_acknowledged", {}, "email" if "email" in self.config.channels else channel)
        if rng.random() < 0.15:
            return  # acknowledged, never resolved
        t += later(3600, 5 * 86400)
        resolution: dict[str, Any] = {}
        if rng.random() < 0.4:
            resolution["compensation"] = _money(rng.choice(_COMPENSATION_CENTS[severity]))
        push("complaint_resolved", resolution, channel)
        if rng.random() < 0.75:
            t += later(86400, 7 * 86400)
            push("complaint_followed_up", {}, channel)

    def _survey(
        self,
        c: int,
        jt: JourneyType,
        journey_id: str,
        emotions: list[int],
        t: float,
        journey_channel: str,
    ) -> None:
        rng = self._rng
        customer = self._customers[c]
        remembered = peak_end(emotions)
        assert remembered is not None
        score, mean = remembered.peak_end_score, remembered.mean_emotion
        survey_id = f"S-{next(self._surveys):08d}"
        channel = rng.choice(self._survey_channels) if self._survey_channels else journey_channel
        # (question_id, metric, value, extra fields); at most five questions (DOMAIN.md §4).
        questions: list[tuple[str, str, int | str, dict[str, str]]] = [
            (
                "nps",
                "nps",
                _clip(7.0 + 1.3 * score + 0.4 * customer.mood + rng.gauss(0.0, 1.2), 0, 10),
                {},
            )
        ]
        if rng.random() < 0.7:
            questions.append(
                ("csat", "csat", _clip(3.4 + 0.6 * score + rng.gauss(0.0, 0.7), 1, 5), {})
            )
        if rng.random() < 0.5:
            # CES 2.0: "the company made it easy for me", 1 (strongly disagree) .. 7.
            questions.append(
                ("ces", "ces", _clip(5.0 + 0.9 * mean + rng.gauss(0.0, 1.0), 1, 7), {})
            )
        module = rng.random()
        if module < 0.15:
            expected = _clip(customer.expectation + rng.gauss(0.0, 0.8), 0, 10)
            perceived = _clip(6.5 + 1.2 * mean + rng.gauss(0.0, 1.0), 0, 10)
            questions.append(("expectation", "expectation", expected, {}))
            questions.append(("perceived_quality", "perceived_quality", perceived, {}))
        elif module < 0.35:
            attribute, importance = rng.choice(jt.attributes)
            questions.append(
                (
                    f"importance_{attribute}",
                    "importance",
                    _clip(importance + rng.gauss(0.0, 1.2), 0, 10),
                    {"attribute": attribute},
                )
            )
            # ... and how satisfied with it: the pair behind importance vs satisfaction.
            questions.append(
                (
                    f"satisfaction_{attribute}",
                    "perceived_quality",
                    _clip(6.5 + 1.2 * mean + rng.gauss(0.0, 1.2), 0, 10),
                    {"attribute": attribute},
                )
            )
        elif module < 0.45:
            feature, category = rng.choice(jt.features)
            functional, dysfunctional = self._kano(category)
            questions.append(
                (f"kano_{feature}_functional", "kano_functional", functional, {"feature": feature})
            )
            questions.append(
                (
                    f"kano_{feature}_dysfunctional",
                    "kano_dysfunctional",
                    dysfunctional,
                    {"feature": feature},
                )
            )
        t += math.exp(rng.uniform(math.log(300), math.log(86400)))
        for question_id, metric, value, extra in questions[:5]:
            payload = {
                "survey_id": survey_id,
                "question_id": question_id,
                "metric": metric,
                "value": value,
                **extra,
            }
            self._push(
                t,
                _Draft(
                    c,
                    "survey_answered",
                    channel,
                    self._identifier(c, channel),
                    payload,
                    additional={"journey_id": journey_id},
                ),
            )
            t += rng.uniform(5.0, 40.0)

    def _kano(self, category: KanoCategory) -> tuple[str, str]:
        """A (functional, dysfunctional) answer pair of the feature's true category,
        with 15% of answers at random (real respondents are noisy)."""
        rng = self._rng
        if rng.random() < 0.15:
            return rng.choice(_KANO_ANSWERS), rng.choice(_KANO_ANSWERS)
        if category == "attractive":
            return "like", rng.choice(_KANO_OTHERS)
        if category == "one_dimensional":
            return "like", "dislike"
        if category == "must_be":
            return rng.choice(_KANO_OTHERS), "dislike"
        return rng.choice(_KANO_OTHERS), rng.choice(_KANO_OTHERS)


# ---------------------------------------------------------------------------------------
# Sending
# ---------------------------------------------------------------------------------------


@dataclass
class SendStats:
    """What ``send_http`` did: touchpoints sent, accepted (202) and rejected (any other
    answer, or no answer after the retries), the first few error bodies, and how long
    it took."""

    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Touchpoints sent per second."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


MAX_ERRORS_KEPT = 5


async def _pause(seconds: float, stop: asyncio.Event | None) -> None:
    """Sleep, waking early when ``stop`` is set."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _post(
    client: httpx.AsyncClient,
    url: str,
    batch: list[dict[str, Any]],
    *,
    retries: int,
    backoff: float,
    stop: asyncio.Event | None,
) -> tuple[bool, str | None]:
    """POST one batch; (accepted, error). Transport failures (connection refused, reset,
    timeout) are retried with exponential backoff: re-sending is harmless, ingest is
    idempotent by ``event_id``."""
    for attempt in itertools.count():
        try:
            response = await client.post(url, json=batch)
        except httpx.TransportError as error:
            if attempt >= retries or (stop is not None and stop.is_set()):
                return False, f"{type(error).__name__} after {attempt + 1} attempts: {error}"
            await _pause(backoff * 2**attempt, stop)
            continue
        if response.status_code == 202:
            return True, None
        return False, f"HTTP {response.status_code}: {response.text[:2000]}"
    raise AssertionError("unreachable")  # pragma: no cover


async def send_http(
    base_url: str,
    simulator: Simulator,
    *,
    rate: float,
    batch_size: int,
    total: int | None = None,
    stop: asyncio.Event | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    retries: int = 3,
    backoff: float = 0.2,
    timeout: float = 30.0,
    transport: httpx.AsyncBaseTransport | None = None,
    api_key: str | None = None,
) -> SendStats:
    """POST the simulator's touchpoints to ``{base_url}/v1/touchpoints`` in batches (a JSON
    list each) at about ``rate`` touchpoints per second (``math.inf``: as fast as the
    server answers), until ``total`` are sent, ``stop`` is set or a historical stream
    ends.

    Each batch is accepted whole (HTTP 202) or rejected whole (any other status; the API
    refuses a batch with any invalid item). ``on_batch(accepted, rejected)`` is called
    after each batch with that batch's counts. ``transport`` replaces the network (tests).
    ``api_key``: sent as ``Authorization: Bearer``; it needs the ingest scope.
    """
    if not rate > 0:
        raise ValueError("rate: touchpoints per second, above 0")
    if batch_size < 1:
        raise ValueError("batch_size: at least 1")
    if total is not None and total < 0:
        raise ValueError("total: 0 or more")
    url = base_url.rstrip("/") + "/v1/touchpoints"
    stats = SendStats()
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(timeout=timeout, transport=transport, headers=headers) as client:
        while total is None or stats.sent < total:
            if stop is not None and stop.is_set():
                break
            size = batch_size if total is None else min(batch_size, total - stats.sent)
            batch = simulator.touchpoints(size)
            if not batch:
                break
            ok, error = await _post(client, url, batch, retries=retries, backoff=backoff, stop=stop)
            stats.sent += len(batch)
            if ok:
                stats.accepted += len(batch)
            else:
                stats.rejected += len(batch)
                if error is not None and len(stats.errors) < MAX_ERRORS_KEPT:
                    stats.errors.append(error)
            if on_batch is not None:
                on_batch(len(batch) if ok else 0, 0 if ok else len(batch))
            ahead = started + stats.sent / rate - time.monotonic()
            if ahead > 0 and (total is None or stats.sent < total):
                await _pause(ahead, stop)
    stats.seconds = time.monotonic() - started
    return stats


def period(days: float, *, until: datetime | None = None) -> tuple[datetime, datetime]:
    """``(start, end)`` of the ``days`` up to ``until`` (default: now), for a historical
    config: ``SimulatorConfig(start=..., end=...)``."""
    end = until or _utc_now()
    return end - timedelta(days=days), end
