"""Segments over HTTP: define, members as maintained, who entered and left, delete;
refusals. A definition reaches the customers through the scheduler's ticks: the tests
drive them (``jobs.drive_clock``) where the scheduler would."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

import domain.segments
from infra import jobs
from infra.bootstrap import Platform
from streams.embedded import EmbeddedDriver
from tests.builders import envelope, new_id, purchase, survey_answer
from tests.conftest import Served, customer_of, embedded

Recorder = Callable[..., None]


def _yesterday() -> datetime:
    return datetime.now(UTC) - timedelta(days=1)


def visit(customer: str, **traits: Any) -> dict[str, Any]:
    return envelope(customer, _yesterday(), channel="web", additional={"traits": traits})


def nps(customer: str, score: int) -> dict[str, Any]:
    return survey_answer(customer, "nps", score, datetime.now(UTC) - timedelta(hours=1))


@pytest.fixture
def live(make_platform: Callable[..., Platform]) -> Platform:
    return make_platform()


def evaluated(live: Platform) -> None:
    """What the scheduler does after a definition: tick until every customer has it."""
    assert embedded(live).wait_until_projected()
    jobs.drive_clock(live, datetime.now(UTC))


@pytest.fixture
def client(live: Platform, serve: Callable[[Platform], Served]) -> Iterator[httpx.Client]:
    with serve(live).client(timeout=30) as http:
        yield http


@pytest.fixture
def record(live: Platform, client: httpx.Client) -> Recorder:
    def post(*items: dict[str, Any]) -> None:
        assert client.post("/v1/touchpoints", json=list(items)).status_code == 202
        assert isinstance(live.driver, EmbeddedDriver)
        assert embedded(live).wait_until_projected()

    return post


def test_a_segment_tracks_who_enters_and_who_leaves(
    live: Platform, client: httpx.Client, record: Recorder
) -> None:
    north, south = new_id("N"), new_id("S")
    record(visit(north, region="north"), nps(north, 3), visit(south, region="south"))
    record(nps(south, 2))
    rule = {
        "all": [
            {"field": "nps_category", "op": "eq", "value": "detractor"},
            {"field": "traits.region", "op": "eq", "value": "north"},
        ]
    }
    defined = client.post("/v1/segments", json={"name": "north-detractors", "rule": rule})
    assert defined.status_code == 201, defined.text
    assert defined.json() == {"name": "north-detractors", "created": True, "version": 1}
    evaluated(live)
    members = client.get("/v1/segments/north-detractors/members").json()
    assert [m["customer_id"] for m in members["members"]] == [customer_of(live, north)]

    record(survey_answer(north, "nps", 10, datetime.now(UTC)))  # a promoter now: leaves
    members = client.get("/v1/segments/north-detractors/members").json()
    assert members["count"] == 0  # at once: the event re-evaluated the customer
    changes = client.get("/v1/segments/north-detractors/changes").json()["changes"]
    assert [(c["customer_id"], c["change"]) for c in changes] == [
        (customer_of(live, north), "left"),
        (customer_of(live, north), "entered"),
    ]
    feed = client.get("/v1/changes", params={"kind": ["segment_entered", "segment_left"]}).json()[
        "changes"
    ]
    assert [(c["kind"], c["subject"], c["cause"].get("type")) for c in feed] == [
        ("segment_entered", "north-detractors", None),
        ("segment_left", "north-detractors", "survey_answered"),
    ]
    listed = client.get("/v1/segments").json()
    assert [(s["name"], s["members"], s["pending"]) for s in listed] == [("north-detractors", 0, 0)]


@pytest.mark.parametrize(
    ("rule", "loc"),
    [
        ({"any": [{"field": "lifecycle", "op": "like", "value": 1}]}, ["any", 0, "op"]),
        # The rule: accepted, 500, stored, and every evaluation failed after it.
        ({"field": "traits.x", "op": "contains", "value": [1]}, ["value"]),
        ({"all": [{"field": "orders", "op": "gt", "value": "NaN"}]}, ["all", 0, "value"]),
        ({"field": "traits.x", "op": "eq", "value": "a\u0000b"}, ["value"]),
        ({"field": "traits.a.b", "op": "eq", "value": 1}, ["field"]),
    ],
)
def test_a_refused_rule_names_where_and_is_not_stored(
    live: Platform,
    client: httpx.Client,
    record: Recorder,
    rule: dict[str, Any],
    loc: list[str | int],
) -> None:
    someone = new_id("C")
    record(visit(someone, x="abc"))
    refused = client.post("/v1/segments", json={"name": "refused", "rule": rule})
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["detail"]
    assert error["loc"] == ["body", "rule", *loc]
    assert error["msg"]
    assert client.get("/v1/segments").json() == []
    assert client.get("/v1/segments/refused/members").status_code == 404
    # Nothing stored means nothing breaks: another segment still evaluates.
    fine = {"field": "traits.x", "op": "contains", "value": "b"}
    assert client.post("/v1/segments", json={"name": "fine", "rule": fine}).status_code == 201
    evaluated(live)
    assert client.get("/v1/segments/fine/members").json()["count"] == 1


def test_a_description_that_cannot_be_stored_is_refused(client: httpx.Client) -> None:
    rule = {"field": "orders", "op": "gt", "value": 1}
    refused = client.post("/v1/segments", json={"name": "x", "rule": rule, "description": "\0"})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "description"]
    assert client.get("/v1/segments").json() == []


def test_a_deep_rule_is_refused_before_it_costs_anything(client: httpx.Client) -> None:
    rule: dict[str, Any] = {"field": "orders", "op": "gt", "value": 1}
    for _ in range(200):
        rule = {"not": rule}
    refused = client.post("/v1/segments", json={"name": "deep", "rule": rule})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"][:4] == ["body", "rule", "not", "not"]


def test_a_customer_whose_evaluation_raises_keeps_its_row_and_the_others_go_on(
    live: Platform, client: httpx.Client, record: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: a defect in evaluation (simulated) on one customer keeps that
    customer's measures as they were, with the error; the other customers are members."""
    broken_one, fine_one = new_id("C"), new_id("C")
    record(visit(broken_one, x="a"), visit(fine_one, x="b"))
    real = domain.segments.matches

    def broken(rule: Any, document: Any) -> bool:
        if document.get("traits", {}).get("x") == "a":
            raise RuntimeError("a defect")
        return real(rule, document)

    monkeypatch.setattr(domain.segments, "matches", broken)
    rule = {"field": "traits.x", "op": "exists", "value": True}
    assert client.post("/v1/segments", json={"name": "any-x", "rule": rule}).status_code == 201
    evaluated(live)
    members = client.get("/v1/segments/any-x/members").json()["members"]
    assert [m["customer_id"] for m in members] == [customer_of(live, fine_one)]
    with live.store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT error FROM rm_measures WHERE customer_id = %s",
            (customer_of(live, broken_one),),
        )
        assert cur.fetchone() == ("RuntimeError: a defect",)
    health = client.get("/v1/healthz").json()
    assert (health["status"], health["measures"]["failed_customers"]) == ("degraded", 1)
    monkeypatch.setattr(domain.segments, "matches", real)
    record(visit(broken_one, x="a"))  # its next event derives it again
    members = client.get("/v1/segments/any-x/members").json()["members"]
    assert len(members) == 2
    assert client.get("/v1/healthz").json()["measures"]["failed_customers"] == 0


def test_a_deleted_segment_is_gone_with_its_history(
    live: Platform, client: httpx.Client, record: Recorder
) -> None:
    someone = new_id("C")
    record(visit(someone, region="north"))
    rule = {"field": "traits.region", "op": "eq", "value": "north"}
    assert client.post("/v1/segments", json={"name": "north", "rule": rule}).status_code == 201
    evaluated(live)
    assert client.get("/v1/segments/north/members").json()["count"] == 1

    deleted = client.delete("/v1/segments/north")
    assert (deleted.status_code, deleted.content) == (204, b"")
    evaluated(live)  # projected (definitions follow the log), and the members leave it
    for path in ("/v1/segments/north/members", "/v1/segments/north/changes"):
        missing = client.get(path)
        assert missing.status_code == 404
        assert missing.json()["detail"][0]["loc"] == ["path", "name"]
    assert client.get("/v1/segments").json() == []
    assert client.delete("/v1/segments/north").status_code == 404
    assert client.delete("/v1/segments/never-was").status_code == 404

    left = client.get("/v1/changes", params={"kind": "segment_left"}).json()["changes"]
    assert [(c["customer_id"], c["subject"]) for c in left] == [
        (customer_of(live, someone), "north")
    ]

    # Defined again, it starts a history of its own.
    again = client.post("/v1/segments", json={"name": "north", "rule": rule})
    assert (again.status_code, again.json()["created"]) == (201, True)
    evaluated(live)
    changes = client.get("/v1/segments/north/changes").json()["changes"]
    assert [(c["customer_id"], c["change"]) for c in changes] == [
        (customer_of(live, someone), "entered")
    ]


def test_every_segment_endpoint_publishes_its_answers(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    operations = [
        (path, method, operation)
        for path, item in paths.items()
        if path.startswith("/v1/segments")
        for method, operation in item.items()
    ]
    assert len(operations) == 5
    for path, method, operation in operations:
        responses = operation["responses"]
        success = next(code for code in responses if code.startswith("2"))
        if success != "204":
            assert responses[success]["content"]["application/json"]["schema"], (path, method)
        assert "422" in responses, (path, method)
        if "{name}" in path:
            assert "404" in responses, (path, method)


def test_orders_in_any_currency_count_in_a_segment_rule(
    live: Platform, client: httpx.Client, record: Recorder
) -> None:
    """The reporting currency is EUR by default: USD purchases still count as orders
    (and their lifecycle), as on the customer's page."""
    buyer = new_id("C")
    record(
        purchase(buyer, "10.00", _yesterday() - timedelta(days=3), currency="USD"),
        purchase(buyer, "12.00", _yesterday(), currency="EUR"),
        visit(new_id("C")),  # two currencies in the store: EUR stays the reporting one
    )
    rule = {
        "all": [
            {"field": "orders", "op": "gte", "value": 2},
            {"field": "lifecycle", "op": "eq", "value": "repeat"},
        ]
    }
    assert client.post("/v1/segments", json={"name": "repeat", "rule": rule}).status_code == 201
    evaluated(live)
    members = client.get("/v1/segments/repeat/members").json()["members"]
    assert [m["customer_id"] for m in members] == [customer_of(live, buyer)]
