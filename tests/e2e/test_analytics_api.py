"""The analytics read side over real HTTP, checked against hand-computed values.

Each test builds a small, deliberate data set on its own fresh platform (random ids), then
reads /v1/analytics/* and GET /v1/customers/{id} ``as_of`` a fixed instant, so nothing
depends on today's date. The expected numbers are worked out by hand in the comments from
the rules in DOMAIN.md §4-§7 and the docstrings of domain/value.py, domain/satisfaction.py
and domain/clv.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from infra.bootstrap import Platform
from projections.analytics import last_fit_outcome
from tests.builders import envelope, new_id, purchase, survey_answer
from tests.conftest import Served, embedded

Item = dict[str, Any]

AS_OF = datetime(2026, 6, 15, tzinfo=UTC)  # a Monday, in the middle of June
TIERS = ("vip", "major", "ordinary", "small", "inactive", "prospect")
SEGMENTS = (
    "champions",
    "loyal",
    "potential_loyalist",
    "new",
    "need_attention",
    "at_risk",
    "cannot_lose",
    "hibernating",
    "lost",
)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def ago(days: float, hours: float = 0) -> datetime:
    return AS_OF - timedelta(days=days, hours=hours)


def answer(
    customer_id: str,
    metric: str,
    value: Any,
    at: datetime,
    *,
    channel: str = "email",
    survey: str = "S1",
    question: str | None = None,
    **fields: Any,
) -> Item:
    """A survey answer; ``attribute``/``feature`` go to the payload, anything else
    (``journey``, ``additional``) to the envelope."""
    payload: Item = {k: fields.pop(k) for k in ("attribute", "feature") if k in fields}
    if question:
        payload["question_id"] = question
    raw = survey_answer(customer_id, metric, value, at, survey_id=survey, **payload)
    return raw | {"channel": channel, **fields}


def delivery(customer_id: str, at: datetime, on_time: bool | None) -> Item:
    payload: dict[str, Any] = {"order_id": new_id("O")}
    if on_time is not None:
        payload["on_time"] = on_time
    return envelope(customer_id, at, type="delivery", channel="courier", payload=payload)


def step(
    customer_id: str, journey_id: str, kind: str, name: str, at: datetime, emotion: int | None
) -> Item:
    fields: dict[str, Any] = {"journey": {"id": journey_id, "type": kind, "step": name}}
    if emotion is not None:
        fields["emotion"] = emotion
    return envelope(customer_id, at, **fields)


def refusal(response: httpx.Response) -> str:
    """The message of a refusal: every analytics error has FastAPI's validation shape."""
    (error,) = response.json()["detail"]
    message: str = error["msg"]
    return message


def dec(value: Any) -> Decimal:
    """A money or share figure must be an exact decimal string, never a JSON float."""
    assert isinstance(value, str), f"expected a decimal string, got {value!r}"
    return Decimal(value)


@pytest.fixture
def client(platform: Platform, serve: Callable[[Platform], Served]) -> Iterator[httpx.Client]:
    with serve(platform).client(timeout=60) as http:
        yield http


@pytest.fixture
def record(platform: Platform, client: httpx.Client) -> Callable[..., None]:
    """Post touchpoints as one batch and wait for the projections."""

    def post(*items: Item) -> None:
        response = client.post("/v1/touchpoints", json=list(items))
        assert response.status_code == 202, response.text
        assert embedded(platform).wait_until_projected()

    return post


@pytest.fixture
def get(client: httpx.Client) -> Callable[..., Any]:
    """GET a path as of AS_OF (unless ``as_of`` is given) and return the JSON body."""

    def read(path: str, **params: Any) -> Any:
        params.setdefault("as_of", iso(AS_OF))
        response = client.get(path, params={k: v for k, v in params.items() if v is not None})
        assert response.status_code == 200, response.text
        return response.json()

    return read


def tier_rows(pyramid: dict[str, Any]) -> dict[str, tuple[int, Decimal, Decimal | None]]:
    """Per tier: customers, revenue and revenue share (a decimal string to 4 places)."""
    assert [row["tier"] for row in pyramid["tiers"]] == list(TIERS)
    return {
        row["tier"]: (
            row["customers"],
            dec(row["revenue"]),
            None if row["revenue_share"] is None else dec(row["revenue_share"]),
        )
        for row in pyramid["tiers"]
    }


# -- pyramid ------------------------------------------------------------------------------


def test_the_pyramid_of_100_buyers_is_1_4_15_80_with_exact_revenue_and_shares(
    record: Callable[..., None], get: Callable[..., Any]
) -> None:
    buyers = [new_id("C") for _ in range(100)]  # buyers[i] spends i + 1 euros in the window
    inactive, prospect = new_id("C"), new_id("C")
    items = [purchase(c, f"{i + 1}.00", ago(i + 1)) for i, c in enumerate(buyers[:99])]
    top = buyers[99]
    items += [
        purchase(top, "60.00", ago(100)),
        purchase(top, "40.00", ago(50)),  # 100.00 in window
        purchase(top, "1000.00", ago(400)),  # before the window: not counted
        purchase(buyers[0], "10000.00", ago(3), currency="USD"),  # not the reporting currency
        purchase(inactive, "500.00", ago(700)),  # bought only about two years ago
        envelope(prospect, ago(30)),  # only a visit
    ]
    record(*items)

    pyramid = get("/v1/analytics/pyramid")
    assert when(pyramid["as_of"]) == AS_OF
    assert (pyramid["window_days"], pyramid["currency"]) == (365, "EUR")
    assert pyramid["cutoffs"] == {"vip": 0.01, "major": 0.05, "ordinary": 0.2}
    # ceil(1%, 5%, 20% of 100) = 1, 5, 20: ranks 1 | 2-5 | 6-20 | 21-100.
    # vip: 100; major: 99+98+97+96 = 390; ordinary: 81..95 = 1320; small: 1..80 = 3240;
    # total 5050: shares 0.019802, 0.077228, 0.261386, 0.641584 -> 4 places.
    assert tier_rows(pyramid) == {
        "vip": (1, Decimal("100.00"), Decimal("0.0198")),
        "major": (4, Decimal("390.00"), Decimal("0.0772")),
        "ordinary": (15, Decimal("1320.00"), Decimal("0.2614")),
        "small": (80, Decimal("3240.00"), Decimal("0.6416")),
        "inactive": (1, Decimal(0), Decimal(0)),
        "prospect": (1, Decimal(0), Decimal(0)),
    }
    # The top 20% of the 100 active customers spent 81..100 = 1810 of 5050 = 0.358416.
    assert pyramid["pareto"]["active_customers"] == 100
    assert dec(pyramid["pareto"]["top_20_percent_revenue_share"]) == Decimal("0.3584")

    # No USD rate: the 10,000 USD are left out of the revenue, and the answer says so.
    assert pyramid["unconverted"] == {"USD": "10000.00"}
    assert get(f"/v1/customers/{top}")["value_tier"] == {
        "tier": "vip",
        "value_in_window": "100.00",
        "window_days": 365,
        "currency": "EUR",
        "unconverted": {},
    }
    usd_buyer = get(f"/v1/customers/{buyers[0]}")
    assert usd_buyer["value_tier"]["unconverted"] == {"USD": "10000.00"}
    assert (usd_buyer["orders"], usd_buyer["rfm"]["frequency"]) == (2, 2)
    assert get(f"/v1/customers/{buyers[95]}")["value_tier"]["tier"] == "major"
    assert get(f"/v1/customers/{buyers[94]}")["value_tier"]["tier"] == "ordinary"
    assert get(f"/v1/customers/{buyers[79]}")["value_tier"]["tier"] == "small"
    assert get(f"/v1/customers/{inactive}")["value_tier"]["tier"] == "inactive"
    assert get(f"/v1/customers/{prospect}")["value_tier"]["tier"] == "prospect"


def test_a_tie_group_straddling_a_cut_goes_whole_to_the_higher_tier(
    record: Callable[..., None], get: Callable[..., Any]
) -> None:
    # 20 active customers: ceil(0.2)=1 vip, ceil(1.0)=1 up to major, ceil(4.0)=4 up to
    # ordinary. Values 50, 50 | 40, 20, 20 | 15 .. 1: the 50s (ranks 1, 1) are both vip,
    # so major is empty; the 20s sit at ranks 4 and 5 (competition rank 4) -> ordinary.
    values = ["50.00", "50.00", "40.00", "20.00", "20.00"] + [f"{v}.00" for v in range(15, 0, -1)]
    customers = [new_id("C") for _ in values]
    record(
        *(
            purchase(c, v, ago(10 + i))
            for i, (c, v) in enumerate(zip(customers, values, strict=True))
        )
    )
    pyramid = get("/v1/analytics/pyramid")
    assert tier_rows(pyramid) == {  # of 300 in all
        "vip": (2, Decimal(100), Decimal("0.3333")),
        "major": (0, Decimal(0), Decimal(0)),
        "ordinary": (3, Decimal(80), Decimal("0.2667")),
        "small": (15, Decimal(120), Decimal("0.4000")),
        "inactive": (0, Decimal(0), Decimal(0)),
        "prospect": (0, Decimal(0), Decimal(0)),
    }
    # top round(20 * 0.2) = 4 customers: 50 + 50 + 40 + 20 = 160 of 300
    assert dec(pyramid["pareto"]["top_20_percent_revenue_share"]) == Decimal("0.5333")
    assert get(f"/v1/customers/{customers[4]}")["value_tier"]["tier"] == "ordinary"


def test_the_pyramid_as_of_an_earlier_date_ignores_later_purchases(
    record: Callable[..., None], get: Callable[..., Any]
) -> None:
    later_vip, steady, small = new_id("C"), new_id("C"), new_id("C")
    converted, newcomer = new_id("C"), new_id("C")
    record(
        purchase(later_vip, "5.00", ago(200)),
        purchase(later_vip, "1000.00", ago(10)),  # becomes the VIP only 10 days before AS_OF
        purchase(steady, "500.00", ago(100)),
        purchase(small, "50.00", ago(100)),
        envelope(converted, ago(300)),  # a visitor ...
        purchase(converted, "30.00", ago(5)),  # ... who buys 5 days before AS_OF
        purchase(newcomer, "20.00", ago(10)),  # unknown until 10 days before AS_OF
    )
    earlier = ago(50)

    now = get("/v1/analytics/pyramid")
    # 5 active: 1005, 500, 50, 30, 20 -> 1 vip (1005 of 1605 = 0.62617), the rest small
    assert tier_rows(now) == {
        "vip": (1, Decimal("1005.00"), Decimal("0.6262")),
        "major": (0, Decimal(0), Decimal(0)),
        "ordinary": (0, Decimal(0), Decimal(0)),
        "small": (4, Decimal("600.00"), Decimal("0.3738")),
        "inactive": (0, Decimal(0), Decimal(0)),
        "prospect": (0, Decimal(0), Decimal(0)),
    }

    before = get("/v1/analytics/pyramid", as_of=iso(earlier))
    assert when(before["as_of"]) == earlier
    # As of 50 days before: 3 active (500, 50, 5) -> steady is the vip; the visitor is a
    # prospect; the newcomer is not known yet. 500 / 555 = 0.90090, 55 / 555 = 0.09910.
    assert tier_rows(before) == {
        "vip": (1, Decimal("500.00"), Decimal("0.9009")),
        "major": (0, Decimal(0), Decimal(0)),
        "ordinary": (0, Decimal(0), Decimal(0)),
        "small": (2, Decimal("55.00"), Decimal("0.0991")),
        "inactive": (0, Decimal(0), Decimal(0)),
        "prospect": (1, Decimal(0), Decimal(0)),
    }
    assert before["pareto"]["active_customers"] == 3

    at_now = get(f"/v1/customers/{later_vip}")["value_tier"]
    assert (at_now["tier"], dec(at_now["value_in_window"])) == ("vip", Decimal("1005.00"))
    then = get(f"/v1/customers/{later_vip}", as_of=iso(earlier))
    assert when(then["measures_as_of"]) == earlier
    assert (then["value_tier"]["tier"], dec(then["value_tier"]["value_in_window"])) == (
        "small",
        Decimal("5.00"),
    )
    assert get(f"/v1/customers/{converted}", as_of=iso(earlier))["value_tier"]["tier"] == (
        "prospect"
    )
    assert get(f"/v1/customers/{converted}")["value_tier"]["tier"] == "small"


# -- migration ----------------------------------------------------------------------------


def empty_matrix() -> dict[str, dict[str, int]]:
    return {row: dict.fromkeys(TIERS, 0) for row in TIERS}


def test_monthly_migration_counts_each_move_between_the_calendar_months(
    record: Callable[..., None], get: Callable[..., Any]
) -> None:
    def on(month: int, day: int) -> datetime:
        return datetime(2026, month, day, 12, tzinfo=UTC)

    lapsing, faded, grower, newcomer, returner, visitor = (new_id("C") for _ in range(6))
    record(
        purchase(faded, "5.00", on(4, 10)),
        purchase(lapsing, "100.00", on(5, 10)),  # May only
        purchase(grower, "50.00", on(5, 12)),
        purchase(grower, "200.00", on(6, 3)),
        purchase(faded, "10.00", on(5, 20)),  # April and May, not June
        envelope(newcomer, on(6, 1)),
        purchase(newcomer, "30.00", on(6, 5)),  # new in June
        purchase(returner, "7.00", on(3, 10)),
        purchase(returner, "1.00", on(6, 10)),
        envelope(visitor, on(3, 1)),
        purchase(grower, "999.00", on(6, 20)),  # after as_of: ignored
    )
    # Tiers from the spend within each month (as_of June 15: June is June 1-15):
    #   April: faded 5 -> vip (1 active); returner inactive; the others prospects.
    #   May: lapsing 100 vip; grower 50, faded 10 small (3 active); returner inactive.
    #   June: grower 200 vip; newcomer 30, returner 1 small; lapsing, faded inactive.
    april_to_may = empty_matrix()
    april_to_may["vip"]["small"] = 1  # faded
    april_to_may["prospect"]["vip"] = 1  # lapsing
    april_to_may["prospect"]["small"] = 1  # grower
    april_to_may["inactive"]["inactive"] = 1  # returner
    april_to_may["prospect"]["prospect"] = 2  # newcomer, visitor
    may_to_june = empty_matrix()
    may_to_june["vip"]["inactive"] = 1  # lapsing: active last month, not this month
    may_to_june["small"]["inactive"] = 1  # faded
    may_to_june["small"]["vip"] = 1  # grower
    may_to_june["prospect"]["small"] = 1  # newcomer: a new buyer this month
    may_to_june["inactive"]["small"] = 1  # returner
    may_to_june["prospect"]["prospect"] = 1  # visitor

    two = get("/v1/analytics/migration", period="month", periods=2)
    assert (two["period"], two["currency"]) == ("month", "EUR")
    may: Item = {"name": "2026-05", "start": "2026-05-01T00:00:00Z"}
    may |= {"end": "2026-06-01T00:00:00Z", "complete": True}
    june: Item = {"name": "2026-06", "start": "2026-06-01T00:00:00Z"}
    june |= {"end": "2026-07-01T00:00:00Z", "complete": False}  # measured to as_of
    april: Item = {"name": "2026-04", "start": "2026-04-01T00:00:00Z"}
    april |= {"end": "2026-05-01T00:00:00Z", "complete": True}
    assert [(h["from_period"], h["to_period"]) for h in two["history"]] == [
        (april, may),
        (may, june),
    ]
    assert (two["timezone"], two["unconverted"]) == ("UTC", {})
    first, second = two["history"]
    assert first["matrix"] == april_to_may
    assert (first["up"], first["down"]) == (2, 1)  # up: lapsing, grower; down: faded
    assert second["matrix"] == may_to_june
    assert (second["up"], second["down"]) == (3, 2)  # up: grower, newcomer, returner

    one = get("/v1/analytics/migration", period="month", periods=1)
    assert one["history"] == [second]


# -- RFM ----------------------------------------------------------------------------------


def test_rfm_scores_by_quintile_with_ties_at_their_middle_rank_and_names_the_segments(
    record: Callable[..., None], get: Callable[..., Any]
) -> None:
    a, b, c, d, e, f, visitor = (new_id("C") for _ in range(7))
    record(
        *(purchase(a, "20.00", ago(days)) for days in (1, 20, 40, 60, 80)),
        *(purchase(b, "25.00", ago(days)) for days in (10, 30, 50, 70)),
        purchase(c, "50.00", ago(30)),
        purchase(d, "10.00", ago(200)),
        *(purchase(e, "30.00", ago(days)) for days in (300, 310, 320)),
        purchase(f, "70.00", ago(500)),  # outside the 365-day window
        envelope(visitor, ago(5)),  # never bought: no RFM
    )
    # score = 1 + floor(5 * r / n), r = the tie group's mean 0-based position, worst
    # first. R against all n = 6 buyers; F and M against the n = 5 who bought in the
    # window (f did not: F = M = 1).
    #   R (days, fewest best): f 500, e 300, d 200, c 30, b 10, a 1 -> 1, 1, 2, 3, 4, 5
    #   F (count): c 1, d 1 (positions 0-1, middle 0.5) | e 3 | b 4 | a 5
    #              -> c 1, d 1, e 3, b 4, a 5
    #   M (spend): d 10, c 50, e 90 | a 100, b 100 (positions 3-4, middle 3.5)
    #              -> 1, 2, 3, 4, 4
    # Segments (R x F): a (5,5), b (4,4) champions; c (3,1) need_attention;
    # d (2,1) hibernating; e (1,3) at_risk; f (1,1) lost.
    rfm = get("/v1/analytics/rfm")
    assert (rfm["customers"], rfm["window_days"]) == (6, 365)
    assert rfm["segments"] == {
        **dict.fromkeys(SEGMENTS, 0),
        "champions": 2,
        "need_attention": 1,
        "hibernating": 1,
        "at_risk": 1,
        "lost": 1,
    }

    expected = {
        a: (1, 5, "100.00", 5, 5, 4, "champions"),
        b: (10, 4, "100.00", 4, 4, 4, "champions"),
        c: (30, 1, "50.00", 3, 1, 2, "need_attention"),
        d: (200, 1, "10.00", 2, 1, 1, "hibernating"),
        e: (300, 3, "90.00", 1, 3, 3, "at_risk"),
        f: (500, 0, "0", 1, 1, 1, "lost"),
    }
    for customer, (days, count, spend, r, f_score, m, segment) in expected.items():
        found = get(f"/v1/customers/{customer}")["rfm"]
        assert (
            found["recency_days"],
            found["frequency"],
            dec(found["monetary"]),
            found["r"],
            found["f"],
            found["m"],
            found["segment"],
            found["window_days"],
        ) == (days, count, Decimal(spend), r, f_score, m, segment, 365), customer
    assert get(f"/v1/customers/{visitor}")["rfm"] is None


# -- satisfaction -------------------------------------------------------------------------


def nps_block(promoters: int, passives: int, detractors: int, score: float | None) -> Item:
    return {
        "promoters": promoters,
        "passives": passives,
        "detractors": detractors,
        "responses": promoters + passives + detractors,
        "nps": score,
    }


def csat_block(
    counts: dict[int, int], top: float | None, bottom: float | None, mean: float | None
) -> Item:
    return {
        "counts": {str(level): counts.get(level, 0) for level in range(1, 6)},
        "responses": sum(counts.values()),
        "mean": mean,
        "share_top": top,
        "share_bottom": bottom,
    }


def assert_summary(found: Item, nps: Item, csat: Item, ces: Item) -> None:
    assert found["nps"] == pytest.approx(nps)
    assert found["csat"]["counts"] == csat.pop("counts")
    assert {k: v for k, v in found["csat"].items() if k != "counts"} == pytest.approx(csat)
    assert found["ces"] == pytest.approx(ces)


def test_satisfaction_summarises_nps_csat_and_ces_overall_by_channel_journey_and_month(
    record: Callable[..., None], get: Callable[..., Any]
) -> None:
    def on(month: int, day: int) -> datetime:
        return datetime(2026, month, day, 10, tzinfo=UTC)

    who = [new_id("C") for _ in range(4)]
    service, welcome = new_id("J"), new_id("J")
    in_service: Item = {"additional": {"journey_id": service}}  # named by the survey tool
    in_welcome: Item = {"journey": {"id": welcome, "type": "onboarding", "step": "survey"}}
    record(
        step(who[0], service, "car_service", "arrival", on(4, 9), 1),
        # web
        answer(who[0], "nps", 10, on(4, 10), channel="web", **in_service),
        answer(who[1], "nps", 9, on(5, 10), channel="web", **in_welcome),
        answer(who[0], "csat", 5, on(5, 12), channel="web", **in_service),
        answer(who[2], "ces", 7, on(6, 1), channel="web"),
        # email
        answer(who[1], "nps", 8, on(4, 20)),
        answer(who[2], "nps", 6, on(5, 20)),
        answer(who[3], "nps", 0, on(6, 5)),
        answer(who[1], "csat", 5, on(4, 5)),
        answer(who[2], "csat", 4, on(5, 5)),
        answer(who[3], "csat", 2, on(6, 2)),
        answer(who[3], "csat", 1, on(6, 10), survey="S2"),
        answer(who[1], "ces", 5, on(5, 1)),
        answer(who[3], "ces", 3, on(6, 3)),
        # not counted: after as_of, or not an NPS/CSAT/CES metric
        answer(who[0], "nps", 0, on(6, 20), channel="web"),
        answer(who[0], "importance", 3, on(5, 1), attribute="price"),
    )
    summary = get("/v1/analytics/satisfaction", period="month")
    assert summary["filters"] == {"since": None, "channel": None, "journey_type": None}
    # NPS 10, 9, 8, 6, 0: 2 promoters, 1 passive, 2 detractors -> (2 - 2) / 5 * 100 = 0.
    # CSAT 5, 5, 4, 2, 1: mean 17/5, L5 share 2/5, L1+L2 share 2/5. CES 7, 5, 3: mean 5.
    assert_summary(
        summary["overall"],
        nps_block(2, 1, 2, 0.0),
        csat_block({1: 1, 2: 1, 4: 1, 5: 2}, 0.4, 0.4, 3.4),
        {"responses": 3, "mean": 5.0},
    )

    assert sorted(summary["by_channel"]) == ["email", "web"]
    assert_summary(
        summary["by_channel"]["web"],
        nps_block(2, 0, 0, 100.0),
        csat_block({5: 1}, 1.0, 0.0, 5.0),
        {"responses": 1, "mean": 7.0},
    )
    assert_summary(
        summary["by_channel"]["email"],
        nps_block(0, 1, 2, -200 / 3),
        csat_block({1: 1, 2: 1, 4: 1, 5: 1}, 0.25, 0.5, 3.0),
        {"responses": 2, "mean": 4.0},
    )

    no_csat = csat_block({}, None, None, None)
    no_ces = {"responses": 0, "mean": None}
    assert sorted(summary["by_journey_type"]) == ["car_service", "none", "onboarding"]
    assert_summary(
        summary["by_journey_type"]["car_service"],
        nps_block(1, 0, 0, 100.0),
        csat_block({5: 1}, 1.0, 0.0, 5.0),
        no_ces,
    )
    assert_summary(
        summary["by_journey_type"]["onboarding"], nps_block(1, 0, 0, 100.0), no_csat, no_ces
    )
    assert_summary(
        summary["by_journey_type"]["none"],
        nps_block(0, 1, 2, -200 / 3),
        csat_block({1: 1, 2: 1, 4: 1, 5: 1}, 0.25, 0.5, 3.0),
        {"responses": 3, "mean": 5.0},
    )

    by_month = {when(key): value for key, value in summary["by_period"].items()}
    april, may, june = (datetime(2026, m, 1, tzinfo=UTC) for m in (4, 5, 6))
    assert sorted(by_month) == [april, may, june]
    assert_summary(
        by_month[april], nps_block(1, 1, 0, 50.0), csat_block({5: 1}, 1.0, 0.0, 5.0), no_ces
    )
    assert_summary(
        by_month[may],
        nps_block(1, 0, 1, 0.0),
        csat_block({4: 1, 5: 1}, 0.5, 0.0, 4.5),
        {"responses": 1, "mean": 5.0},
    )
    assert_summary(
        by_month[june],
        nps_block(0, 0, 1, -100.0),
        csat_block({1: 1, 2: 1}, 0.0, 1.0, 1.5),
        {"responses": 2, "mean": 5.0},
    )

    web = get("/v1/analytics/satisfaction", channel="web")
    assert web["filters"]["channel"] == "web"
    assert web["by_period"] is None
    assert sorted(web["by_channel"]) == ["web"]
    assert web["overall"] == summary["by_channel"]["web"]

    serviced = get("/v1/analytics/satisfaction", journey_type="car_service")
    assert serviced["overall"] == summary["by_journey_type"]["car_service"]


# -- Kano ---------------------------------------------------------------------------------


def test_kano_classifies_each_respondents_latest_pair_and_computes_better_and_worse(
    record: Callable[..., None], get: Callable[..., Any]
) -> None:
    people = [new_id("C") for _ in range(7)]

    def pair(
        customer: str, feature: str, functional: str, dysfunctional: str, at: datetime
    ) -> list[Item]:
        return [
            answer(
                customer,
                "kano_functional",
                functional,
                at,
                feature=feature,
                question=f"Q-{feature}-f",
                survey=f"K-{feature}",
            ),
            answer(
                customer,
                "kano_dysfunctional",
                dysfunctional,
                at,
                feature=feature,
                question=f"Q-{feature}-d",
                survey=f"K-{feature}",
            ),
        ]

    seats, wheel = "heated_seats", "spare_wheel"
    record(
        *pair(people[0], seats, "like", "dislike", ago(9)),  # O
        *pair(people[1], seats, "like", "dislike", ago(9)),  # O
        *pair(people[2], seats, "like", "dislike", ago(9)),  # O
        *pair(people[3], seats, "like", "dislike", ago(9)),  # replaced by the next answer:
        answer(
            people[3],
            "kano_dysfunctional",
            "neutral",
            ago(8),
            feature=seats,
            question="Q-again",
            survey=f"K-{seats}",
        ),  # -> (like, neutral): A
        answer(
            people[4], "kano_functional", "like", ago(9), feature=seats, survey=f"K-{seats}"
        ),  # half a pair: not counted
        *pair(people[5], seats, "dislike", "like", AS_OF + timedelta(days=2)),  # after as_of
        *pair(people[0], wheel, "expect", "dislike", ago(9)),  # M
        *pair(people[1], wheel, "neutral", "dislike", ago(9)),  # M
        *pair(people[2], wheel, "neutral", "neutral", ago(9)),  # I
        *pair(people[3], wheel, "tolerate", "expect", ago(9)),  # I
        *pair(people[6], wheel, "dislike", "like", ago(9)),  # R
    )
    features = get("/v1/analytics/kano")["features"]
    assert sorted(features) == [seats, wheel]
    zero = dict.fromkeys(
        ("attractive", "one_dimensional", "must_be", "indifferent", "reverse", "questionable"), 0
    )
    # heated seats: O 3, A 1 -> one_dimensional; CS+ = (1+3)/4 = 1.0; CS- = -(3+0)/4
    assert features[seats] == {
        "counts": {**zero, "one_dimensional": 3, "attractive": 1},
        "category": "one_dimensional",
        "better": 1.0,
        "worse": -0.75,
    }
    # spare wheel: M 2, I 2, R 1 -> the M/I tie goes to must_be (M > O > A > I);
    # CS+ = 0/4 = 0, CS- = -(0+2)/4 = -0.5 (reverse answers are not in the denominator)
    assert features[wheel] == {
        "counts": {**zero, "must_be": 2, "indifferent": 2, "reverse": 1},
        "category": "must_be",
        "better": 0.0,
        "worse": -0.5,
    }


# -- importance vs satisfaction -----------------------------------------------------------


def test_opportunities_rank_attributes_by_importance_plus_unmet_importance(
    record: Callable[..., None], get: Callable[..., Any]
) -> None:
    people = [new_id("C") for _ in range(3)]

    def rate(
        i: int,
        attribute: str,
        importance: int | None,
        quality: int | None,
        at: datetime | None = None,
    ) -> list[Item]:
        at = at or ago(5)
        out = []
        if importance is not None:
            out.append(
                answer(
                    people[i],
                    "importance",
                    importance,
                    at,
                    attribute=attribute,
                    question=f"I-{attribute}",
                    survey=f"S{i}",
                )
            )
        if quality is not None:
            out.append(
                answer(
                    people[i],
                    "perceived_quality",
                    quality,
                    at,
                    attribute=attribute,
                    question=f"P-{attribute}",
                    survey=f"S{i}",
                )
            )
        return out

    record(
        *rate(0, "friendliness", 10, 2),
        *rate(1, "friendliness", 10, None),
        *rate(0, "wifi", 7, 3),
        *rate(1, "wifi", 8, 4),
        *rate(2, "wifi", None, 4),
        *rate(0, "speed", 9, 4),
        *rate(1, "speed", 7, 6),
        *rate(0, "price", 6, 9),
        *rate(2, "price", 10, 0, AS_OF + timedelta(days=1)),  # after as_of: ignored
        *rate(0, "parking", 5, None),
        *rate(1, "music", None, 8),
        answer(people[2], "perceived_quality", 0, ago(5)),  # no attribute: ignored
    )
    found = get("/v1/analytics/opportunities")
    # friendliness: 10 + max(10 - 2, 0) = 18; wifi: 7.5 + (7.5 - 11/3) = 11.333;
    # speed: 8 + (8 - 5) = 11; price: 6 + max(6 - 9, 0) = 6.
    assert found["ranked"] == [
        {"attribute": "friendliness", "importance": 10.0, "satisfaction": 2.0, "opportunity": 18.0},
        {"attribute": "wifi", "importance": 7.5, "satisfaction": 3.667, "opportunity": 11.333},
        {"attribute": "speed", "importance": 8.0, "satisfaction": 5.0, "opportunity": 11.0},
        {"attribute": "price", "importance": 6.0, "satisfaction": 9.0, "opportunity": 6.0},
    ]
    assert found["incomplete"] == ["music", "parking"]


# -- emotion curves -----------------------------------------------------------------------


def test_emotion_curves_average_each_step_split_new_and_returning_with_moments_of_truth(
    record: Callable[..., None], get: Callable[..., Any]
) -> None:
    fresh, regular, other, late, onboarded = (new_id("C") for _ in range(5))
    j1, j2, j3, j4, j5 = (new_id("J") for _ in range(5))
    kind = "car_service"

    def journey(
        customer: str, journey_id: str, start: datetime, emotions: list[tuple[str, int | None]]
    ) -> list[Item]:
        return [
            step(customer, journey_id, kind, name, start + timedelta(minutes=20 * i), e)
            for i, (name, e) in enumerate(emotions)
        ]

    record(
        envelope(regular, ago(60)),  # an earlier contact: the regular is returning
        *journey(fresh, j1, ago(40), [("arrival", 1), ("waiting", -2), ("farewell", 2)]),
        *journey(regular, j2, ago(30), [("arrival", 3), ("waiting", -1), ("farewell", -3)]),
        *journey(
            other,
            j3,
            ago(20),
            [("arrival", 0), ("waiting", -3), ("paperwork", None), ("farewell", 1)],
        ),
        *journey(late, j4, AS_OF + timedelta(days=2), [("arrival", -3)]),  # after as_of
        step(onboarded, j5, "onboarding", "welcome", ago(10), 2),
    )
    # Peak-end per journey (peak: largest |e|, the negative one on a tie):
    #   j1 [1, -2, 2] peak -2 (waiting), end 2 -> 0.0;
    #   j2 [3, -1, -3] peak -3 (farewell), end -3 -> -3.0;
    #   j3 [0, -3, 1] peak -3 (waiting), end 1 -> -1.0.
    # Pearson r of each step's emotion with the peak-end scores [0, -3, -1]:
    #   arrival [1, 3, 0] -> -11/14; waiting [-2, -1, -3] -> -2/sqrt(28/3);
    #   farewell [2, -3, 1] -> 8/sqrt(196/3).
    curves = get("/v1/analytics/emotion-curves")["journey_types"]
    assert sorted(curves) == ["car_service", "onboarding"]
    car = curves[kind]
    assert car["journeys"] == 3
    assert car["steps"] == [
        {
            "step": "arrival",
            "mean_emotion": round(4 / 3, 3),
            "new_customers": 0.5,
            "returning_customers": 3.0,
            "responses": 3,
        },
        {
            "step": "waiting",
            "mean_emotion": -2.0,
            "new_customers": -2.5,
            "returning_customers": -1.0,
            "responses": 3,
        },
        {
            "step": "farewell",
            "mean_emotion": 0.0,
            "new_customers": 1.5,
            "returning_customers": -3.0,
            "responses": 3,
        },
    ]
    assert car["moments_of_truth"] == [
        {
            "step": "farewell",
            "peak_share": round(1 / 3, 3),
            "end_share": 1.0,
            "predicts_peak_end": round(8 / math.sqrt(196 / 3), 3),
        },
        {
            "step": "waiting",
            "peak_share": round(2 / 3, 3),
            "end_share": 0.0,
            "predicts_peak_end": round(-2 / math.sqrt(28 / 3), 3),
        },
        {
            "step": "arrival",
            "peak_share": 0.0,
            "end_share": 0.0,
            "predicts_peak_end": round(-11 / 14, 3),
        },
    ]
    assert curves["onboarding"]["journeys"] == 1
    assert curves["onboarding"]["steps"] == [
        {
            "step": "welcome",
            "mean_emotion": 2.0,
            "new_customers": 2.0,
            "returning_customers": None,
            "responses": 1,
        }
    ]

    only = get("/v1/analytics/emotion-curves", journey_type=kind)["journey_types"]
    assert only == {kind: car}


def test_emotion_curves_of_two_journeys_have_no_correlation_and_split_peak_and_end(
    record: Callable[..., None], get: Callable[..., Any]
) -> None:
    fresh, regular = new_id("C"), new_id("C")
    record(
        purchase(regular, "10.00", ago(90)),
        *(
            step(fresh, "J1-" + fresh, "visit", name, ago(40, hours=-i), e)
            for i, (name, e) in enumerate([("in", 1), ("queue", -2), ("out", 2)])
        ),
        *(
            step(regular, "J2-" + regular, "visit", name, ago(30, hours=-i), e)
            for i, (name, e) in enumerate([("in", 3), ("queue", -1), ("out", -3)])
        ),
    )
    visit = get("/v1/analytics/emotion-curves")["journey_types"]["visit"]
    assert [
        (s["step"], s["mean_emotion"], s["new_customers"], s["returning_customers"])
        for s in visit["steps"]
    ] == [("in", 2.0, 1.0, 3.0), ("queue", -1.5, -2.0, -1.0), ("out", -0.5, 2.0, -3.0)]
    # peaks: queue (-2 beats 2) and out (-3 beats 3); both end at out; two journeys are
    # too few for a correlation.
    shares = {
        m["step"]: (m["peak_share"], m["end_share"], m["predicts_peak_end"])
        for m in visit["moments_of_truth"]
    }
    assert shares == {"in": (0.0, 0.0, None), "queue": (0.5, 0.0, None), "out": (0.5, 1.0, None)}


# -- per-customer measures ----------------------------------------------------------------


def test_the_lifecycle_stage_and_the_rule_that_decided_it(
    record: Callable[..., None], get: Callable[..., Any]
) -> None:
    first, repeat, client, advocate, promoter_once = (new_id("C") for _ in range(5))
    lapsed_year, lapsed_rhythm, prospect = (new_id("C") for _ in range(3))
    record(
        purchase(first, "10.00", ago(10)),
        purchase(first, "10.00", AS_OF + timedelta(days=5)),  # after as_of: not counted
        purchase(repeat, "10.00", ago(20)),
        purchase(repeat, "10.00", ago(10)),
        *(purchase(client, "10.00", ago(days)) for days in (31, 24, 17, 10, 3)),
        purchase(advocate, "10.00", ago(20)),
        purchase(advocate, "10.00", ago(10)),
        answer(advocate, "nps", 9, ago(5)),
        purchase(promoter_once, "10.00", ago(10)),
        answer(promoter_once, "nps", 10, ago(5)),
        purchase(lapsed_year, "10.00", ago(400)),
        purchase(lapsed_year, "10.00", ago(380)),
        *(purchase(lapsed_rhythm, "10.00", ago(days)) for days in (100, 90, 80)),
        envelope(prospect, ago(3)),
    )
    expected = {
        first: ("first_time", ["one order"]),
        repeat: ("repeat", ["2 orders"]),
        client: ("client", ["5 orders"]),  # usual gap 7 days: threshold max(21, 30) days
        advocate: ("advocate", ["promoter", "2 orders"]),
        promoter_once: ("first_time", ["one order"]),  # an advocate needs 2 orders
        lapsed_year: ("lapsed", ["380 days", "365 days"]),
        lapsed_rhythm: ("lapsed", ["80 days", "30 days"]),  # max(3 x 10 days, 30 days)
        prospect: ("prospect", ["no order"]),
    }
    for customer, (stage, words) in expected.items():
        lifecycle = get(f"/v1/customers/{customer}")["lifecycle"]
        assert lifecycle["stage"] == stage, (customer, lifecycle)
        assert lifecycle["rule"].startswith(f"{stage}:"), lifecycle
        for word in words:
            assert word in lifecycle["rule"], lifecycle


def test_customer_satisfaction_measures_read_the_latest_answers_as_of_the_instant(
    record: Callable[..., None], get: Callable[..., Any]
) -> None:
    pleased, unhappy, silent = new_id("C"), new_id("C"), new_id("C")
    record(
        answer(pleased, "csat", 2, ago(400), survey="S0"),  # outside the trailing year
        answer(pleased, "csat", 3, ago(100), survey="S1"),
        answer(pleased, "csat", 5, ago(10), survey="S2"),
        answer(pleased, "csat", 1, AS_OF + timedelta(days=3), survey="S3"),  # after as_of
        answer(pleased, "nps", 9, ago(10), survey="S2"),
        answer(pleased, "ces", 6, ago(10), survey="S2"),
        answer(pleased, "expectation", 7, ago(10), survey="S2"),
        answer(pleased, "perceived_quality", 9, ago(10), survey="S2", attribute="service"),
        answer(unhappy, "csat", 1, ago(4)),
        answer(unhappy, "nps", 6, ago(4)),
        answer(unhappy, "expectation", 8, ago(4)),
        answer(unhappy, "perceived_quality", 5, ago(4)),
        envelope(silent, ago(4)),
    )
    found = get(f"/v1/customers/{pleased}")["satisfaction"]
    assert found["csat_latest"]["level"] == 5
    assert found["csat_latest"]["name"] == "dazzled"
    assert when(found["csat_latest"]["occurred_at"]) == ago(10)
    assert found["csat_trailing_mean"] == pytest.approx(4.0)  # (3 + 5) / 2
    assert (found["nps_latest"], found["nps_category"], found["ces_latest"]) == (9, "promoter", 6)
    assert (found["expectation"], found["perceived_quality"], found["delta"]) == (7, 9, 2)

    found = get(f"/v1/customers/{unhappy}")["satisfaction"]
    assert (found["csat_latest"]["level"], found["csat_latest"]["name"]) == (1, "outraged")
    assert (found["nps_latest"], found["nps_category"]) == (6, "detractor")
    assert found["delta"] == -3  # perceived 5 - expected 8

    earlier = get(f"/v1/customers/{pleased}", as_of=iso(ago(50)))["satisfaction"]
    assert earlier["csat_latest"]["name"] == "satisfied"  # only L3 was given by then
    assert earlier["nps_latest"] is None and earlier["delta"] is None

    assert get(f"/v1/customers/{silent}")["satisfaction"] == {
        "csat_latest": None,
        "csat_trailing_mean": None,
        "nps_latest": None,
        "nps_category": None,
        "ces_latest": None,
        "expectation": None,
        "perceived_quality": None,
        "delta": None,
    }


def test_trust_counts_delivery_promises_made_and_kept(
    record: Callable[..., None], get: Callable[..., Any]
) -> None:
    customer, nobody = new_id("C"), new_id("C")
    record(
        delivery(customer, ago(30), on_time=True),
        delivery(customer, ago(20), on_time=True),
        delivery(customer, ago(10), on_time=False),
        delivery(customer, ago(5), on_time=None),  # no promised date: no promise
        envelope(nobody, ago(5)),
    )
    trust = get(f"/v1/customers/{customer}")["trust"]
    assert (trust["promises_made"], trust["promises_kept"]) == (3, 2)
    assert trust["reliability"] == pytest.approx(2 / 3)
    assert get(f"/v1/customers/{nobody}")["trust"] == {
        "promises_made": 0,
        "promises_kept": 0,
        "reliability": None,
    }


def test_trust_as_of_an_earlier_instant_counts_only_the_promises_due_by_then(
    record: Callable[..., None], get: Callable[..., Any]
) -> None:
    """README: GET /v1/customers/{id} adds, as of ``as_of``, ... ``trust``."""
    customer = new_id("C")
    record(
        delivery(customer, ago(30), on_time=True),
        delivery(customer, ago(20), on_time=True),
        delivery(customer, ago(10), on_time=False),
    )
    trust = get(f"/v1/customers/{customer}", as_of=iso(ago(15)))["trust"]
    assert (trust["promises_made"], trust["promises_kept"], trust["reliability"]) == (2, 2, 1.0)


def test_simple_lifetime_value_is_margin_times_retention_over_one_plus_discount_minus_it(
    record: Callable[..., None], get: Callable[..., Any]
) -> None:
    kept, lost = new_id("C"), new_id("C")
    record(
        purchase(kept, "80.00", ago(500)),
        purchase(kept, "200.00", ago(100)),
        purchase(lost, "90.00", ago(600)),
    )
    # Retention: of the 2 buyers of the year before last, 1 bought again -> r = 1/2.
    # kept: m = 200.00 (margin share 1.0), d = 0.10 -> 200 * 0.5 / (1 + 0.1 - 0.5).
    simple = get(f"/v1/customers/{kept}")["lifetime_value"]["simple"]
    assert dec(simple["annual_margin"]) == Decimal(200)
    assert dec(simple["retention_rate"]) == Decimal("0.5")
    assert dec(simple["discount_rate"]) == Decimal("0.1")
    assert dec(simple["value"]) == Decimal(100) / Decimal("0.6")
    assert dec(get(f"/v1/customers/{lost}")["lifetime_value"]["simple"]["value"]) == 0


def test_the_customer_document_is_served_when_every_earlier_buyer_came_back(
    client: httpx.Client, record: Callable[..., None]
) -> None:
    """Retention r = 1 is a possible population (every buyer of the year before last
    bought again); m * r / (1 + d - r) is still finite for d > 0, and at worst the simple
    CLV is left out: the customer document must not fail."""
    kept = new_id("C")
    record(purchase(kept, "80.00", ago(500)), purchase(kept, "200.00", ago(100)))
    response = client.get(f"/v1/customers/{kept}", params={"as_of": iso(AS_OF)})
    assert response.status_code == 200, response.text
    simple = response.json()["lifetime_value"]["simple"]
    if simple is not None:  # 200 * 1 / (1 + 0.1 - 1)
        assert dec(simple["retention_rate"]) == 1
        assert dec(simple["value"]) == Decimal(200) / Decimal("0.1")


# -- lifetime value model -----------------------------------------------------------------


def clv_population() -> list[Item]:
    """41 customers with repeat purchases spread over weeks of the past year; built from
    the index, so the data set is the same every run."""
    items = []
    for i in range(40):
        customer = new_id("C")
        first = ago(360 - 3 * i)  # first purchases from 360 to 243 days before AS_OF
        gap = timedelta(days=7 * (1 + i % 3))
        for j in range(1 + i % 5):
            items.append(purchase(customer, f"{10 + (7 * i + 3 * j) % 40}.00", first + j * gap))
    return items


def test_a_lifetime_value_fit_needs_enough_buyers_as_of_its_instant(
    client: httpx.Client, record: Callable[..., None]
) -> None:
    assert client.get("/v1/analytics/clv/model").status_code == 404
    empty = client.post("/v1/analytics/clv/fit", json={"as_of": iso(AS_OF)})
    assert empty.status_code == 422, empty.text
    assert refusal(empty).startswith("as_of:")

    # 12 buyers, none of whom came back: no repeat purchase to fit on.
    record(*(purchase(new_id("C"), "10.00", ago(100 + i)) for i in range(12)))
    once = client.post("/v1/analytics/clv/fit", json={"as_of": iso(AS_OF)})
    assert once.status_code == 422, once.text
    assert refusal(once).startswith("as_of:") and "12 customers" in refusal(once)

    record(*clv_population())
    # As of 340 days before AS_OF only customers 0..6 (first purchase 360..342 days
    # before) had bought: 7 < 10.
    early = client.post("/v1/analytics/clv/fit", json={"as_of": iso(ago(340))})
    assert early.status_code == 422, early.text
    detail = refusal(early)
    assert detail.startswith("as_of:") and "7 customers" in detail, detail
    assert client.get("/v1/analytics/clv/model").status_code == 404


def record_scored_population(record: Callable[..., None]) -> str:
    """The CLV population and one more customer whose summary is worked out by hand."""
    scored = new_id("C")
    record(
        *clv_population(),
        purchase(scored, "20.00", ago(280)),
        purchase(scored, "10.00", ago(210)),
        purchase(scored, "20.00", ago(210, hours=-3)),
        purchase(scored, "50.00", ago(140)),
    )
    return scored


def fit(client: httpx.Client) -> dict[str, Any]:
    response = client.post("/v1/analytics/clv/fit", json={"as_of": iso(AS_OF)})
    assert response.status_code == 201, response.text
    fitted: dict[str, Any] = response.json()
    return fitted


def test_a_lifetime_value_fit_stores_a_versioned_model_that_scores_each_customer(
    client: httpx.Client, record: Callable[..., None], get: Callable[..., Any]
) -> None:
    scored = record_scored_population(record)
    assert get(f"/v1/customers/{scored}")["lifetime_value"]["model"] is None

    fitted = fit(client)
    model = client.get("/v1/analytics/clv/model")
    assert model.status_code == 200, model.text
    current = model.json()
    assert current == fitted
    assert current["version"] == 1
    assert set(current["parameters"]) == {"r", "alpha", "a", "b", "p", "q", "gamma"}
    for name, value in current["parameters"].items():
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (name, value)
    assert current["time_unit"] == "week"
    assert when(current["as_of"]) == AS_OF
    assert (current["currency"], current["customers"], current["repeat_customers"]) == (
        "EUR",
        41,
        33,
    )  # customers 0, 5, ..., 35 never bought again
    assert all(math.isfinite(v) for v in current["log_likelihood"].values())
    assert when(current["fitted_at"]) <= datetime.now(UTC)

    mine = get(f"/v1/customers/{scored}")["lifetime_value"]["model"]
    # Purchase days 280, 210 (two orders, one occasion: 30.00), 140 days before AS_OF:
    # x = 2, t_x = 140 days = 20 weeks, T = 280 days = 40 weeks, monetary (30 + 50) / 2.
    assert (mine["model_version"], mine["time_unit"], mine["horizon"]) == (1, "week", 52.0)
    assert (mine["frequency"], mine["recency"], mine["age"], mine["monetary"]) == (
        2,
        20.0,
        40.0,
        40.0,
    )
    assert 0 <= mine["p_alive"] <= 1
    assert mine["expected_spend"] > 0

    again = fit(client)
    assert again["version"] == 2
    assert client.get("/v1/analytics/clv/model").json()["version"] == 2
    assert get(f"/v1/customers/{scored}")["lifetime_value"]["model"]["model_version"] == 2


def test_a_fitted_model_gives_each_customer_finite_expected_purchases_and_value(
    client: httpx.Client, record: Callable[..., None], get: Callable[..., Any]
) -> None:
    """On this population the maximum-likelihood fit has large a and b (a nearly common
    dropout probability); the expected purchases must still be a number (eq. 10 has a
    finite value there), not NaN serialised as null."""
    scored = record_scored_population(record)
    fit(client)
    mine = get(f"/v1/customers/{scored}")["lifetime_value"]["model"]
    assert isinstance(mine["expected_purchases"], float), mine
    assert mine["expected_purchases"] >= 0
    assert isinstance(mine["expected_value"], float), mine
    assert mine["expected_value"] == pytest.approx(
        mine["expected_purchases"] * mine["expected_spend"]
    )


# -- the population pass behind tier and RFM ----------------------------------------------


def test_the_population_measured_now_belongs_to_the_platform_asked(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    """Without ``as_of``, tier and RFM come from a cached population pass; two platforms
    in one process (two apps, two databases) must not see each other's population."""
    now = datetime.now(UTC)
    for n in range(2):
        platform = make_platform()
        customer = new_id("C")
        with serve(platform).client(timeout=60) as http:
            accepted = http.post(
                "/v1/touchpoints", json=purchase(customer, "10.00", now - timedelta(days=1))
            )
            assert accepted.status_code == 202, accepted.text
            assert embedded(platform).wait_until_projected()
            found = http.get(f"/v1/customers/{customer}").json()
        # the platform's only buyer: a vip, with an RFM of one purchase
        assert found["value_tier"]["tier"] == "vip", (f"platform {n + 1}", found["value_tier"])
        assert found["rfm"] is not None and found["rfm"]["frequency"] == 1, found["rfm"]


# -- money in the reporting currency (issue 8, E) ----------------------------------------


def test_a_single_currency_data_set_reports_in_its_currency_without_configuration(
    record: Callable[..., None], get: Callable[..., Any]
) -> None:
    """All USD, PEAKEND_CURRENCY not set: USD is the reporting currency (today every
    measure read EUR and saw nothing: prospect, RFM null, revenue 0)."""
    buyer, other = new_id("C"), new_id("C")
    record(
        *(purchase(buyer, "25.00", ago(days), currency="USD") for days in (200, 100, 50, 10)),
        purchase(other, "5.50", ago(20), currency="USD"),
    )
    found = get(f"/v1/customers/{buyer}")
    assert (found["currency"], dec(found["total_spend"]), found["orders"]) == (
        "USD",
        Decimal("100.00"),
        4,
    )
    assert found["lifecycle"]["stage"] == "repeat", found["lifecycle"]
    assert found["rfm"]["frequency"] == 4 and dec(found["rfm"]["monetary"]) == 100
    assert found["value_tier"] == {
        "tier": "vip",
        "value_in_window": "100.00",
        "window_days": 365,
        "currency": "USD",
        "unconverted": {},
    }
    pyramid = get("/v1/analytics/pyramid")
    assert (pyramid["currency"], pyramid["unconverted"]) == ("USD", {})
    assert sum(dec(row["revenue"]) for row in pyramid["tiers"]) == Decimal("105.50")


def test_purchases_without_a_rate_count_and_their_money_is_listed_as_unconverted(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    """PEAKEND_CURRENCY=EUR and no USD rate: the USD orders count (orders, recency,
    frequency, lifecycle, the CLV model's purchases), their money is left out of every
    value measure, and every such answer says how much."""
    platform = make_platform(currency="EUR")
    mixed = new_id("C")
    items = [
        purchase(mixed, "100.50", ago(40), currency="USD"),
        purchase(mixed, "20.00", ago(30)),
        purchase(mixed, "10.00", ago(10), currency="USD"),
    ]
    items += [purchase(new_id("C"), "10.00", ago(5)) for _ in range(3)]
    with serve(platform).client(timeout=60) as http:
        assert http.post("/v1/touchpoints", json=items).status_code == 202
        assert embedded(platform).wait_until_projected()

        def get(path: str, **params: Any) -> Any:
            response = http.get(path, params={"as_of": iso(AS_OF), **params})
            assert response.status_code == 200, response.text
            return response.json()

        found = get(f"/v1/customers/{mixed}")
        assert (found["orders"], found["lifecycle"]["stage"]) == (3, "repeat")
        assert (found["currency"], dec(found["total_spend"])) == ("EUR", Decimal("20.00"))
        assert found["rfm"]["frequency"] == 3 and found["rfm"]["recency_days"] == 10
        assert found["rfm"]["unconverted"] == {"USD": "110.50"}
        assert found["value_tier"]["unconverted"] == {"USD": "110.50"}
        assert found["lifetime_value"]["unconverted"] == {"USD": "110.50"}
        assert get("/v1/analytics/pyramid")["unconverted"] == {"USD": "110.50"}
        assert get("/v1/analytics/rfm")["unconverted"] == {"USD": "110.50"}
        migration = get("/v1/analytics/migration", period="month", periods=2)
        assert migration["unconverted"] == {"USD": "110.50"}


def test_exchange_rates_value_each_purchase_at_the_rate_of_its_day(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    platform = make_platform(
        currency="EUR",
        exchange_rates={"USD": [["2020-01-01", "0.90"], ["2026-06-01", "0.95"]]},
    )
    buyer = new_id("C")
    with serve(platform).client(timeout=60) as http:
        items = [
            purchase(buyer, "100.00", datetime(2026, 5, 31, 23, tzinfo=UTC), currency="USD"),
            purchase(buyer, "100.00", datetime(2026, 6, 1, 1, tzinfo=UTC), currency="USD"),
            purchase(buyer, "1.00", datetime(2026, 6, 2, tzinfo=UTC)),
        ]
        assert http.post("/v1/touchpoints", json=items).status_code == 202
        assert embedded(platform).wait_until_projected()
        found = http.get(f"/v1/customers/{buyer}", params={"as_of": iso(AS_OF)}).json()
    # 100 x 0.90 + 100 x 0.95 + 1.00 = 186.00 EUR, exactly
    assert dec(found["total_spend"]) == Decimal("186.00")
    assert dec(found["value_tier"]["value_in_window"]) == Decimal("186.00")
    assert found["value_tier"]["unconverted"] == {}


def test_a_zero_dollar_repeat_purchase_leaves_that_customer_out_of_gamma_gamma_only(
    platform: Platform,
    client: httpx.Client,
    record: Callable[..., None],
    get: Callable[..., Any],
) -> None:
    """CDNOW has a customer whose only repeat purchase cost $0.00; today the whole fit
    failed with a 422 quoting an internal object."""
    free = new_id("C")
    record_scored_population(record)
    record(purchase(free, "12.00", ago(300)), purchase(free, "0.00", ago(200)))
    model = fit(client)
    assert model["customers"] == 42  # BG/NBD: everyone
    assert model["gamma_gamma"] == {
        "customers": 33,
        "left_out": {"zero_spend": 1, "unconverted": 0},
        "note": None,
    }
    mine = get(f"/v1/customers/{free}")["lifetime_value"]["model"]
    assert (mine["frequency"], mine["monetary"]) == (1, 0.0)
    outcome = last_fit_outcome(platform.store)
    assert outcome is not None
    assert (outcome["status"], outcome["model_version"], outcome["message"]) == ("ok", 1, None)
    assert mine["expected_spend"] > 0  # shrunk towards the population mean


def test_a_refused_fit_is_a_422_recorded_as_the_last_outcome(
    platform: Platform,
    client: httpx.Client,
    record: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fit the platform cannot make answers 422 with the reason, is recorded as the
    last outcome (health shows it), and the periodic refit logs a warning, not a 500.

    (This once used a population on which L-BFGS-B stopped without a maximum, a and b
    running off along the likelihood's ridge. SciPy's C port of L-BFGS-B, from 1.15 on,
    reports success there, so such a history now fits the limiting model: a and b large,
    the dropout probability the same for everyone. The refusal path is shown with a
    history too thin to fit, which every optimiser refuses alike.)"""
    from infra.jobs import refit_clv

    assert last_fit_outcome(platform.store) is None
    record(*(purchase(new_id("C"), "10.00", ago(100 + i)) for i in range(12)))
    response = client.post("/v1/analytics/clv/fit", json={"as_of": iso(AS_OF)})
    assert response.status_code == 422, response.text
    message = refusal(response)
    assert message.startswith("as_of:") and "12 customers" in message, message
    assert "PurchaseSummary" not in message
    failed = last_fit_outcome(platform.store)
    assert failed is not None
    assert (failed["status"], failed["model_version"], failed["message"]) == (
        "failed",
        None,
        message,
    )
    assert when(failed["as_of"]) == AS_OF
    with caplog.at_level("WARNING", logger="infra.jobs"):
        refit_clv(platform, as_of=AS_OF)
    assert [r.levelname for r in caplog.records if r.name == "infra.jobs"] == ["WARNING"]
    assert client.get("/v1/analytics/clv/model").status_code == 404  # nothing stored


# -- calendar periods in the reporting time zone --------------------------------------------


def test_a_purchase_at_midnight_on_the_first_day_of_a_quarter_counts_in_that_quarter(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    platform = make_platform(reporting_timezone="Europe/Paris")
    at_midnight, before = new_id("C"), new_id("C")
    items = [
        # 1998-04-01T00:00 in Paris (UTC+2): the first instant of Q2 there
        purchase(at_midnight, "10.00", datetime(1998, 3, 31, 22, tzinfo=UTC)),
        purchase(before, "10.00", datetime(1998, 3, 31, 21, 59, 59, tzinfo=UTC)),
    ]
    with serve(platform).client(timeout=60) as http:
        assert http.post("/v1/touchpoints", json=items).status_code == 202
        assert embedded(platform).wait_until_projected()
        answer = http.get(
            "/v1/analytics/migration",
            params={"as_of": "1998-06-30T00:00:00+02:00", "period": "quarter", "periods": 1},
        )
    assert answer.status_code == 200, answer.text
    (step,) = answer.json()["history"]
    assert answer.json()["timezone"] == "Europe/Paris"
    assert step["from_period"] == {
        "name": "1998-Q1",
        "start": "1998-01-01T00:00:00+01:00",
        "end": "1998-04-01T00:00:00+02:00",
        "complete": True,
    }
    assert step["to_period"]["name"] == "1998-Q2"
    assert step["matrix"]["prospect"]["vip"] == 1  # at_midnight: first bought in Q2
    assert step["matrix"]["vip"]["inactive"] == 1  # before: bought in Q1 only


# -- query parameters: refused with the parameter and the reason ---------------------------


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/journeys/J-1", {"as_of": "2026-01-01T00:00:00"}, "as_of"),
        ("/v1/customers/C-1/journeys", {"as_of": "2026-01-01T00:00:00"}, "as_of"),
        ("/v1/customers/C-1", {"as_of": "0001-01-01T00:00:00Z"}, "as_of"),
        ("/v1/analytics/pyramid", {"as_of": "0001-01-01T00:00:00Z"}, "as_of"),
        ("/v1/analytics/migration", {"as_of": "0001-01-01T00:00:00Z"}, "as_of"),
        ("/v1/analytics/migration", {"as_of": "0001-01-01T00:30:00+01:00"}, "as_of"),
        ("/v1/analytics/rfm", {"as_of": "1899-12-31T23:59:59Z"}, "as_of"),
        ("/v1/analytics/pyramid", {"as_of": "3000-01-01T00:00:00Z"}, "as_of"),
        ("/v1/analytics/kano", {"since": "2026-01-01T00:00:00"}, "since"),
        ("/v1/analytics/emotion-curves", {"journey_type": "\x00"}, "journey_type"),
        ("/v1/analytics/satisfaction", {"channel": "we\x00b"}, "channel"),
    ],
)
def test_a_wrong_query_parameter_is_a_422_naming_it(
    client: httpx.Client, path: str, params: dict[str, str], field: str
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", field], error
    assert f"{field}: " in error["msg"], error


def test_the_range_of_as_of_is_open_from_1900_to_3000(
    record: Callable[..., None], client: httpx.Client
) -> None:
    customer = new_id("C")
    record(purchase(customer, "10.00", ago(1)))
    for as_of in ("1900-01-01T00:00:00Z", "2999-12-31T23:59:59Z"):
        for path in (f"/v1/customers/{customer}", "/v1/analytics/pyramid"):
            response = client.get(path, params={"as_of": as_of})
            assert response.status_code == 200, (path, as_of, response.text)
        migration = client.get(
            "/v1/analytics/migration", params={"as_of": as_of, "period": "quarter", "periods": 24}
        )
        assert migration.status_code == 200, (as_of, migration.text)


def test_every_analytics_endpoint_declares_its_answer_and_its_errors(
    client: httpx.Client,
) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    analytics = {p: ops for p, ops in paths.items() if p.startswith("/v1/analytics")}
    assert len(analytics) == 10  # revenue-at-risk with the alerts
    for path, operations in analytics.items():
        for method, operation in operations.items():
            ok = operation["responses"]["201" if method == "post" else "200"]
            assert "$ref" in ok["content"]["application/json"]["schema"], (path, method)
            error = operation["responses"].get("422") or operation["responses"]["404"]
            assert error["content"]["application/json"]["schema"]["$ref"].endswith(
                ("ErrorOut", "HTTPValidationError")
            ), (path, method)
