"""The demo-traffic simulator: what its stream of touchpoint envelopes looks like, and how
``send_http`` delivers it (against an in-memory transport: no network)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from domain.metrics import peak_end
from domain.touchpoints import parse_touchpoint
from infra.settings import Settings
from infra.simulator import (
    JOURNEY_TYPES,
    SendStats,
    Simulator,
    SimulatorConfig,
    period,
    send_http,
)

Envelope = dict[str, Any]

NOW = datetime(2025, 6, 2, 9, 30, tzinfo=UTC)
LIVE = SimulatorConfig(seed=7)
HISTORY = SimulatorConfig(seed=7, start=NOW - timedelta(days=730), end=NOW - timedelta(days=1))
MONEY = re.compile(r"^\d+\.\d{2}$")


def fixed_clock() -> datetime:
    return NOW


def at(envelope: Envelope) -> datetime:
    return datetime.fromisoformat(envelope["occurred_at"])


def unique(envelopes: list[Envelope]) -> list[Envelope]:
    """The stream without its re-sends (each event_id where it was first sent)."""
    first: dict[str, Envelope] = {}
    for envelope in envelopes:
        first.setdefault(envelope["event_id"], envelope)
    return list(first.values())


def late_and_duplicate_counts(envelopes: list[Envelope]) -> tuple[int, int]:
    """Late: a new standalone event whose event time is before one already sent for its
    customer (journeys in live mode start minutes ago by design). Duplicate: an event_id
    already sent."""
    seen: set[str] = set()
    latest: dict[str, datetime] = {}
    late = duplicates = 0
    for envelope in envelopes:
        if envelope["event_id"] in seen:
            duplicates += 1
            continue
        seen.add(envelope["event_id"])
        customer, occurred = envelope["customer"]["id"], at(envelope)
        if customer in latest and occurred < latest[customer] and "journey" not in envelope:
            late += 1
        else:
            latest[customer] = occurred
    return late, duplicates


def journeys_of(envelopes: list[Envelope]) -> dict[str, list[Envelope]]:
    out: dict[str, list[Envelope]] = defaultdict(list)
    for envelope in unique(envelopes):
        if "journey" in envelope:
            out[envelope["journey"]["id"]].append(envelope)
    return out


@pytest.fixture(scope="module")
def live() -> list[Envelope]:
    return Simulator(LIVE, clock=fixed_clock).touchpoints(60_000)


@pytest.fixture(scope="module")
def history() -> list[Envelope]:
    return Simulator(HISTORY, clock=fixed_clock).touchpoints(60_000)


@pytest.fixture(scope="module")
def whole_short_period() -> tuple[SimulatorConfig, list[Envelope]]:
    """Every touchpoint of a 60-day period: all its journeys are complete."""
    config = SimulatorConfig(
        seed=11, customers=150, start=NOW - timedelta(days=61), end=NOW - timedelta(days=1)
    )
    return config, list(Simulator(config, clock=fixed_clock))


# ---------------------------------------------------------------------------------------
# The contract: envelope v1
# ---------------------------------------------------------------------------------------


def test_every_generated_touchpoint_is_a_valid_envelope_in_live_mode() -> None:
    simulator = Simulator(LIVE, clock=fixed_clock)
    for envelope in simulator.touchpoints(5000):
        parse_touchpoint(envelope, now=fixed_clock(), max_future_skew=timedelta(minutes=5))


def test_every_generated_touchpoint_is_a_valid_envelope_in_historical_mode() -> None:
    simulator = Simulator(HISTORY, clock=fixed_clock)
    for envelope in simulator.touchpoints(5000):
        parse_touchpoint(envelope, now=fixed_clock(), max_future_skew=timedelta(minutes=5))


def test_envelopes_are_json_ready() -> None:
    envelopes = Simulator(LIVE, clock=fixed_clock).touchpoints(2000)
    assert json.loads(json.dumps(envelopes)) == envelopes


def test_live_touchpoints_are_never_ahead_of_the_real_clock() -> None:
    envelopes = Simulator(LIVE).touchpoints(3000)
    now = datetime.now(UTC)
    for envelope in envelopes:
        parse_touchpoint(envelope, now=now, max_future_skew=timedelta(0))
    assert now - max(map(at, envelopes)) < timedelta(seconds=5)


def test_live_touchpoints_happen_now_and_late_ones_minutes_to_hours_before(
    live: list[Envelope],
) -> None:
    outside_journeys = [e for e in live if "journey" not in e]
    ages = Counter(NOW - at(e) for e in outside_journeys)
    assert ages[timedelta(0)] > 0.85 * len(outside_journeys)
    late_ages = [age for age in ages if age > timedelta(0)]
    assert late_ages
    assert min(late_ages) >= timedelta(minutes=1)
    assert max(late_ages) <= timedelta(hours=12)


def test_live_journeys_keep_their_step_spacing_and_end_now(live: list[Envelope]) -> None:
    journeys: dict[str, list[Envelope]] = {}
    for envelope in unique(live):
        if "journey" in envelope:
            journeys.setdefault(envelope["journey"]["id"], []).append(envelope)
    assert journeys
    for steps in journeys.values():
        times = [at(e) for e in steps]
        assert times == sorted(times)
        assert len(set(times)) == len(times)  # minutes apart, never tied
        if steps[-1]["journey"]["step"] in ("farewell", "end"):  # not cut off by the sample
            assert times[-1] == NOW


def test_event_time_carries_an_offset_and_money_two_decimals(live: list[Envelope]) -> None:
    for envelope in live[:5000]:
        assert at(envelope).utcoffset() is not None
    purchases = [e for e in live if e["type"] == "purchase"]
    assert purchases
    for purchase in purchases:
        payload = purchase["payload"]
        assert MONEY.match(payload["amount"])
        assert payload["currency"] == "EUR"
        assert payload["items"]
        assert all(MONEY.match(item["unit_price"]) for item in payload["items"])
        assert Decimal(payload["amount"]) == sum(
            Decimal(item["unit_price"]) * item["quantity"] for item in payload["items"]
        )


def test_event_ids_are_unique_but_for_exact_resends(live: list[Envelope]) -> None:
    first: dict[str, Envelope] = {}
    for envelope in live:
        assert first.setdefault(envelope["event_id"], envelope) == envelope
    assert len(first) < len(live)


# ---------------------------------------------------------------------------------------
# Determinism and the stream
# ---------------------------------------------------------------------------------------


def test_the_same_seed_and_clock_give_the_same_stream() -> None:
    for config in (LIVE, HISTORY):
        one = Simulator(config, clock=fixed_clock).touchpoints(3000)
        two = Simulator(config, clock=fixed_clock).touchpoints(3000)
        assert one == two


def test_another_seed_gives_another_stream() -> None:
    one = Simulator(LIVE, clock=fixed_clock).touchpoints(100)
    two = Simulator(replace(LIVE, seed=8), clock=fixed_clock).touchpoints(100)
    assert [e["event_id"] for e in one] != [e["event_id"] for e in two]


def test_batches_and_iteration_continue_one_stream() -> None:
    simulator = Simulator(LIVE, clock=fixed_clock)
    head = simulator.touchpoints(10)
    stream = iter(simulator)
    tail = [next(stream) for _ in range(10)]
    assert head + tail == Simulator(LIVE, clock=fixed_clock).touchpoints(20)


def test_a_historical_stream_spreads_over_its_period_and_then_ends(
    whole_short_period: tuple[SimulatorConfig, list[Envelope]],
) -> None:
    config, envelopes = whole_short_period
    assert config.start is not None and config.end is not None
    times = [at(e) for e in envelopes]
    assert config.start <= min(times) and max(times) <= config.end
    assert max(times) - min(times) > timedelta(days=55)
    simulator = Simulator(config, clock=fixed_clock)
    assert len(simulator.touchpoints(10**6)) == len(envelopes)
    assert simulator.touchpoints(10) == []


def test_historical_touchpoints_come_in_event_time_order_but_for_late_ones(
    history: list[Envelope],
) -> None:
    late, _ = late_and_duplicate_counts(history)
    assert 0 < late < 0.05 * len(history)
    assert min(map(at, history)) >= NOW - timedelta(days=730)
    # Journey, complaint and survey touchpoints are never late: in order overall.
    in_order = [
        at(e)
        for e in unique(history)
        if "journey" in e or e["type"].startswith(("complaint_", "survey_"))
    ]
    assert in_order == sorted(in_order)


def test_the_period_of_a_historical_stream_lies_in_the_past() -> None:
    with pytest.raises(ValueError, match="past"):
        Simulator(replace(HISTORY, end=NOW + timedelta(days=1)), clock=fixed_clock)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"customers": 0}, "customers"),
        ({"late_rate": 1.5}, "late_rate"),
        ({"survey_rate": -0.1}, "survey_rate"),
        ({"journey_types": ("space_flight",)}, "space_flight"),
        ({"channels": ("web",)}, "car_service"),
        ({"channels": ("Not A Channel",)}, "channel"),
        ({"currency": "euro"}, "currency"),
        ({"pareto_alpha": 1.0}, "pareto_alpha"),
        ({"start": NOW - timedelta(days=3)}, "both"),
        ({"start": NOW, "end": NOW - timedelta(days=1)}, "before"),
        ({"start": datetime(2024, 1, 1), "end": datetime(2024, 2, 1)}, "aware"),
    ],
)
def test_a_config_that_makes_no_sense_is_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(LIVE, **change)


# ---------------------------------------------------------------------------------------
# Customers and value
# ---------------------------------------------------------------------------------------


def revenue_by_customer(envelopes: list[Envelope]) -> dict[str, float]:
    revenue: dict[str, float] = defaultdict(float)
    for envelope in unique(envelopes):
        if envelope["type"] == "purchase":
            revenue[envelope["customer"]["id"]] += float(envelope["payload"]["amount"])
    return revenue


@pytest.mark.parametrize("sample", ["live", "history"])
def test_a_fifth_of_the_customers_make_most_of_the_revenue(
    sample: str,
    request: pytest.FixtureRequest,
) -> None:
    revenue = revenue_by_customer(request.getfixturevalue(sample))
    amounts = sorted(revenue.values(), reverse=True)
    top = amounts[: LIVE.customers // 5]
    assert sum(top) >= 0.6 * sum(amounts)


def test_high_value_customers_buy_more_often_and_more_per_order(live: list[Envelope]) -> None:
    profiles = Simulator(LIVE, clock=fixed_clock).customers
    buyers = sorted((p for p in profiles if not p.prospect), key=lambda p: -p.value_weight)
    high = {p.id for p in buyers[: len(buyers) // 5]}
    low = {p.id for p in buyers[len(buyers) // 5 :]}
    orders: dict[str, list[float]] = defaultdict(list)
    for envelope in unique(live):
        if envelope["type"] == "purchase":
            orders[envelope["customer"]["id"]].append(float(envelope["payload"]["amount"]))

    def orders_per_customer(ids: set[str]) -> float:
        return sum(len(orders[c]) for c in ids) / len(ids)

    def mean_order(ids: set[str]) -> float:
        return statistics.mean(a for c in ids for a in orders[c])

    assert orders_per_customer(high) > 1.5 * orders_per_customer(low)
    assert mean_order(high) > 1.5 * mean_order(low)


def test_prospects_never_buy(live: list[Envelope]) -> None:
    profiles = Simulator(LIVE, clock=fixed_clock).customers
    prospects = {p.id for p in profiles if p.prospect}
    assert 0.05 * len(profiles) < len(prospects) < 0.3 * len(profiles)
    seen = {e["customer"]["id"] for e in live}
    assert prospects & seen
    assert not prospects & {e["customer"]["id"] for e in live if e["type"] == "purchase"}


def test_a_customer_is_named_by_id_and_sometimes_one_more_of_their_identifiers(
    live: list[Envelope],
) -> None:
    profiles = {p.id: p for p in Simulator(LIVE, clock=fixed_clock).customers}
    assert all(re.fullmatch(r"C-\d{6}", c) for c in profiles)
    extra: Counter[str] = Counter()
    for envelope in live:
        customer = dict(envelope["customer"])
        profile = profiles[customer.pop("id")]
        assert len(customer) <= 1
        for kind, value in customer.items():
            assert getattr(profile, kind) == value
            extra[kind] += 1
    assert set(extra) == {"email", "phone", "loyalty_card", "device_id"}
    assert 0.05 * len(live) < sum(extra.values()) < 0.5 * len(live)


# ---------------------------------------------------------------------------------------
# Journeys and emotions
# ---------------------------------------------------------------------------------------


def test_every_journey_follows_its_steps_and_ends_with_an_end_step(
    whole_short_period: tuple[SimulatorConfig, list[Envelope]],
) -> None:
    settings = Settings()
    journeys = journeys_of(whole_short_period[1])
    assert len(journeys) > 100
    for touchpoints in journeys.values():
        touchpoints.sort(key=at)
        journey_type = JOURNEY_TYPES[touchpoints[0]["journey"]["type"]]
        assert [t["journey"]["step"] for t in touchpoints] == [s.name for s in journey_type.steps]
        assert touchpoints[-1]["journey"]["step"] in settings.end_steps(journey_type.name)
        assert [t["type"] for t in touchpoints] == [s.type for s in journey_type.steps]
        assert len({t["customer"]["id"] for t in touchpoints}) == 1


def test_a_journeys_touchpoints_are_minutes_apart_within_the_inactivity_gap(
    history: list[Envelope],
) -> None:
    gap = Settings().inactivity_gap("*")
    gaps: list[timedelta] = []
    for touchpoints in journeys_of(history).values():
        gaps += [b - a for a, b in itertools.pairwise(sorted(map(at, touchpoints)))]
    assert all(timedelta(0) < g < gap for g in gaps)
    gaps.sort()
    assert timedelta(minutes=2) < gaps[len(gaps) // 2] < timedelta(hours=1)


def test_journeys_of_different_customers_interleave_in_the_stream(live: list[Envelope]) -> None:
    positions: dict[str, list[int]] = defaultdict(list)
    for index, envelope in enumerate(live[:10_000]):
        if "journey" in envelope:
            positions[envelope["journey"]["id"]].append(index)
    interleaved = [p for p in positions.values() if p[-1] - p[0] + 1 > len(p)]
    assert len(interleaved) > 0.5 * len(positions)


def test_emotions_are_integers_from_minus_three_to_three(live: list[Envelope]) -> None:
    emotions = [e["emotion"] for e in live if "emotion" in e]
    assert all(type(x) is int and -3 <= x <= 3 for x in emotions)
    assert set(emotions) == set(range(-3, 4))
    assert all("emotion" in e for e in live if "journey" in e)


def test_each_journey_type_has_its_own_pain_points(live: list[Envelope]) -> None:
    by_step: dict[tuple[str, str], list[int]] = defaultdict(list)
    for envelope in live:
        if "journey" in envelope:
            journey = envelope["journey"]
            by_step[journey["type"], journey["step"]].append(envelope["emotion"])
    mean = {key: statistics.mean(values) for key, values in by_step.items()}
    assert mean["car_service", "waiting"] < -0.8
    assert mean["car_service", "price_explanation"] < -0.5
    assert mean["car_service", "welcome"] > 0.5
    assert mean["support_call", "queue"] < -0.8
    assert mean["test_drive", "test_drive"] > 1.0


def test_purchase_and_delivery_steps_carry_their_payloads(live: list[Envelope]) -> None:
    orders = {e["payload"]["order_id"] for e in live if e["type"] == "purchase"}
    deliveries = [e for e in live if e["type"] == "delivery"]
    assert deliveries
    for delivery in deliveries:
        assert delivery["payload"]["order_id"] in orders
        promised = datetime.fromisoformat(delivery["payload"]["promised_at"])
        assert delivery["payload"]["on_time"] == (at(delivery) <= promised)


def test_standalone_touchpoints_come_without_a_journey(live: list[Envelope]) -> None:
    standalone = Counter(
        e["type"]
        for e in live
        if "journey" not in e and not e["type"].startswith(("complaint_", "survey_"))
    )
    assert {"visit", "call", "message", "service_appointment"} <= set(standalone)


# ---------------------------------------------------------------------------------------
# Complaints and surveys
# ---------------------------------------------------------------------------------------


def test_complaints_follow_a_strongly_negative_journey_and_proceed_in_order(
    history: list[Envelope],
) -> None:
    envelopes = unique(history)
    journeys = journeys_of(history)
    steps: dict[str, list[Envelope]] = defaultdict(list)
    for envelope in envelopes:
        if envelope["type"].startswith("complaint_"):
            steps[envelope["payload"]["complaint_id"]].append(envelope)
    assert len(steps) > 100
    order = [
        "complaint_filed",
        "complaint_acknowledged",
        "complaint_resolved",
        "complaint_followed_up",
    ]
    open_complaints = compensated = 0
    for chain in steps.values():
        chain.sort(key=at)
        types = [e["type"] for e in chain]
        # The stream may stop mid-chain, but it never skips a step nor reorders them.
        assert types == order[: len(types)]
        filed = chain[0]
        assert filed["payload"]["category"]
        assert filed["payload"]["severity"] in ("low", "medium", "high", "critical")
        journey = journeys.get(filed["additional"]["journey_id"])
        if journey:
            assert min(t["emotion"] for t in journey) <= -2
            assert at(filed) > max(map(at, journey))
        open_complaints += "complaint_resolved" not in types
        for envelope in chain:
            if "compensation" in envelope["payload"]:
                compensated += 1
                assert MONEY.match(envelope["payload"]["compensation"])
    assert 0 < open_complaints < len(steps)
    assert compensated > 0


def test_nps_answers_rise_with_the_peak_end_score_of_the_journey(
    history: list[Envelope],
) -> None:
    journeys = journeys_of(history)
    nps: dict[str, list[int]] = {"bad": [], "good": []}
    for envelope in unique(history):
        payload = envelope["payload"]
        if envelope["type"] != "survey_answered" or payload["metric"] != "nps":
            continue
        journey = journeys.get(envelope["additional"]["journey_id"])
        if not journey:
            continue
        remembered = peak_end([t["emotion"] for t in sorted(journey, key=at)])
        assert remembered is not None
        if remembered.peak_end_score <= -1:
            nps["bad"].append(payload["value"])
        elif remembered.peak_end_score >= 1:
            nps["good"].append(payload["value"])
    assert statistics.mean(nps["good"]) > statistics.mean(nps["bad"]) + 2.5


def test_surveys_are_short_and_ask_every_kind_of_question(history: list[Envelope]) -> None:
    surveys: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for envelope in unique(history):
        if envelope["type"] == "survey_answered":
            surveys[envelope["payload"]["survey_id"]].append(envelope["payload"])
    assert len(surveys) > 500
    metrics: Counter[str] = Counter()
    for answers in surveys.values():
        assert len(answers) <= 5
        assert len({a["question_id"] for a in answers}) == len(answers)
        assert answers[0]["metric"] == "nps"
        metrics.update(a["metric"] for a in answers)
        kano = [a for a in answers if a["metric"].startswith("kano_")]
        if kano:
            assert sorted(a["metric"] for a in kano) == ["kano_dysfunctional", "kano_functional"]
            assert kano[0]["feature"] == kano[1]["feature"]
        rated = {
            a["attribute"]
            for a in answers
            if a["metric"] == "perceived_quality" and a.get("attribute")
        }
        for answer in answers:
            if answer["metric"] == "importance":  # asked with its satisfaction rating
                assert answer["attribute"] in rated
    assert set(metrics) == {
        "nps",
        "csat",
        "ces",
        "expectation",
        "perceived_quality",
        "importance",
        "kano_functional",
        "kano_dysfunctional",
    }
    # perceived quality is asked beside an expectation, or beside an importance
    assert metrics["expectation"] + metrics["importance"] == metrics["perceived_quality"]


# ---------------------------------------------------------------------------------------
# Faults: re-sends and late touchpoints
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", ["live", "history"])
def test_duplicates_and_late_touchpoints_occur_at_about_the_configured_rates(
    sample: str,
    request: pytest.FixtureRequest,
) -> None:
    envelopes = request.getfixturevalue(sample)
    late, duplicates = late_and_duplicate_counts(envelopes)
    assert 0.7 * LIVE.duplicate_rate < duplicates / len(envelopes) < 1.3 * LIVE.duplicate_rate
    assert 0.7 * LIVE.late_rate < late / len(envelopes) < 1.3 * LIVE.late_rate


def test_without_fault_rates_there_are_no_duplicates_nor_late_touchpoints() -> None:
    for config in (LIVE, HISTORY):
        clean = replace(config, duplicate_rate=0.0, late_rate=0.0)
        envelopes = Simulator(clean, clock=fixed_clock).touchpoints(20_000)
        assert late_and_duplicate_counts(envelopes) == (0, 0)


# ---------------------------------------------------------------------------------------
# send_http, against an in-memory transport
# ---------------------------------------------------------------------------------------


def accepting(requests: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(202, json={"accepted": len(json.loads(request.content))})

    return handle


def send(
    handler: Callable[[httpx.Request], httpx.Response],
    simulator: Simulator | None = None,
    **kwargs: Any,
) -> SendStats:
    arguments: dict[str, Any] = {"rate": float("inf"), "batch_size": 100, "backoff": 0.001}
    arguments.update(kwargs)
    return asyncio.run(
        send_http(
            "http://peakend.test/",
            simulator or Simulator(LIVE, clock=fixed_clock),
            transport=httpx.MockTransport(handler),
            **arguments,
        )
    )


def test_send_http_posts_json_batches_to_the_ingest_endpoint_until_the_total() -> None:
    requests: list[httpx.Request] = []
    batches: list[tuple[int, int]] = []
    stats = send(
        accepting(requests),
        total=250,
        on_batch=lambda accepted, rejected: batches.append((accepted, rejected)),
    )
    assert (stats.sent, stats.accepted, stats.rejected, stats.errors) == (250, 250, 0, [])
    assert [r.method for r in requests] == ["POST"] * 3
    assert {str(r.url) for r in requests} == {"http://peakend.test/v1/touchpoints"}
    bodies = [json.loads(r.content) for r in requests]
    assert [len(b) for b in bodies] == [100, 100, 50]
    assert [e for b in bodies for e in b] == Simulator(LIVE, clock=fixed_clock).touchpoints(250)
    assert batches == [(100, 0), (100, 0), (50, 0)]
    assert stats.seconds > 0


def test_send_http_counts_refused_batches_and_keeps_the_first_error_bodies() -> None:
    calls = 0

    def refuse_every_other(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls % 2:
            return httpx.Response(202, json={})
        return httpx.Response(422, json={"detail": f"refusal {calls}"})

    stats = send(refuse_every_other, total=2000)
    assert (stats.sent, stats.accepted, stats.rejected) == (2000, 1000, 1000)
    assert len(stats.errors) == 5
    assert stats.errors[0].startswith("HTTP 422") and "refusal 2" in stats.errors[0]


def test_send_http_retries_connection_errors_with_backoff() -> None:
    requests: list[httpx.Request] = []
    failures = 2

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal failures
        if failures:
            failures -= 1
            raise httpx.ConnectError("connection refused", request=request)
        return accepting(requests)(request)

    stats = send(flaky, total=100, retries=3)
    assert (stats.accepted, stats.rejected) == (100, 0)
    assert len(requests) == 1


def test_send_http_gives_a_batch_up_after_the_retries() -> None:
    attempts = 0

    def down(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        raise httpx.ConnectError("connection refused", request=request)

    stats = send(down, total=100, retries=2)
    assert (stats.sent, stats.accepted, stats.rejected) == (100, 0, 100)
    assert attempts == 3
    assert "ConnectError" in stats.errors[0]


def test_send_http_stops_when_asked() -> None:
    requests: list[httpx.Request] = []

    async def run() -> SendStats:
        stop = asyncio.Event()

        def after_batch(accepted: int, rejected: int) -> None:
            if len(requests) == 3:
                stop.set()

        return await send_http(
            "http://peakend.test",
            Simulator(LIVE, clock=fixed_clock),
            rate=float("inf"),
            batch_size=10,
            stop=stop,
            on_batch=after_batch,
            transport=httpx.MockTransport(accepting(requests)),
        )

    stats = asyncio.run(run())
    assert (stats.sent, stats.accepted) == (30, 30)


def test_send_http_paces_batches_at_the_requested_rate() -> None:
    stats = send(accepting([]), total=500, rate=2000.0, batch_size=100)
    # The 5th batch is due 4 batches (400 touchpoints) after the start: at 0.2 s.
    assert stats.seconds >= 0.19
    assert stats.accepted == 500


def test_send_http_ends_with_a_historical_stream(
    whole_short_period: tuple[SimulatorConfig, list[Envelope]],
) -> None:
    config, envelopes = whole_short_period
    stats = send(accepting([]), Simulator(config, clock=fixed_clock), batch_size=500)
    assert stats.sent == stats.accepted == len(envelopes)


def test_history_and_live_traffic_from_one_seed_share_customers_not_event_ids() -> None:
    start, end = period(30)
    history = Simulator(SimulatorConfig(seed=3, customers=50, start=start, end=end))
    live = Simulator(SimulatorConfig(seed=3, customers=50))
    assert [c.id for c in history.customers] == [c.id for c in live.customers]
    assert not {e["event_id"] for e in history.touchpoints(500)} & {
        e["event_id"] for e in live.touchpoints(500)
    }
