"""Segments over HTTP: define, evaluate, members, who entered and left, delete; refusals."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

import domain.segments
from infra.bootstrap import Platform
from projections import segment_store
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
    return make_platform(population_cache_seconds=0, segment_evaluate_seconds=0)


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
    assert (defined.json()["members"], defined.json()["entered"]) == (1, 1)

    record(survey_answer(north, "nps", 10, datetime.now(UTC)))  # a promoter now: leaves
    members = client.get("/v1/segments/north-detractors/members").json()
    assert members["count"] == 0
    changes = client.get("/v1/segments/north-detractors/changes").json()["changes"]
    assert [(c["customer_id"], c["change"]) for c in changes] == [
        (customer_of(live, north), "left"),
        (customer_of(live, north), "entered"),
    ]
    listed = client.get("/v1/segments").json()
    assert [(s["name"], s["members"], s["error"]) for s in listed] == [
        ("north-detractors", 0, None)
    ]


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
    client: httpx.Client, record: Recorder, rule: dict[str, Any], loc: list[str | int]
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
    assert client.post("/v1/segments", json={"name": "fine", "rule": fine}).json()["members"] == 1
    assert client.post("/v1/segments/evaluate").status_code == 200


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


def test_a_failing_segment_is_marked_and_the_others_are_evaluated(
    live: Platform, client: httpx.Client, record: Recorder
) -> None:
    """A rule stored before today's checks (the issue's) fails; the others go on."""
    someone = new_id("C")
    record(visit(someone, x="abc"))
    segment_store.define(
        live.store, "old", {"field": "traits.x", "op": "contains", "value": [1]}, None
    )
    good = {"field": "traits.x", "op": "eq", "value": "abc"}
    assert client.post("/v1/segments", json={"name": "good", "rule": good}).status_code == 201

    evaluated = client.post("/v1/segments/evaluate")
    assert evaluated.status_code == 200, evaluated.text
    outcome = evaluated.json()["segments"]
    assert outcome["good"]["members"] == 1
    assert outcome["old"]["members"] is None
    assert "rule.value" in outcome["old"]["error"]
    listed = {s["name"]: s for s in client.get("/v1/segments").json()}
    assert listed["old"]["error"] == outcome["old"]["error"]
    assert listed["good"]["error"] is None


def test_a_segment_whose_evaluation_raises_does_not_stop_the_others(
    client: httpx.Client, record: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: a defect in evaluation (simulated) fails one segment only."""
    record(visit(new_id("C"), x="abc"))
    for name in ("a", "b"):
        rule = {"field": "traits.x", "op": "eq", "value": name}
        assert client.post("/v1/segments", json={"name": name, "rule": rule}).status_code == 201
    real = domain.segments.matches

    def broken(rule: Any, document: Any) -> bool:
        if rule.get("value") == "a":
            raise RuntimeError("a defect")
        return real(rule, document)

    monkeypatch.setattr(domain.segments, "matches", broken)
    outcome = client.post("/v1/segments/evaluate").json()["segments"]
    assert outcome["a"]["error"] == "RuntimeError: a defect"
    assert outcome["b"] == {"members": 0, "entered": 0, "left": 0, "error": None}
    # Defining a rule that fails on a customer is refused, not stored.
    rule = {"field": "traits.x", "op": "eq", "value": "a"}
    assert client.post("/v1/segments", json={"name": "c", "rule": rule}).status_code == 422
    assert {s["name"] for s in client.get("/v1/segments").json()} == {"a", "b"}


def test_a_deleted_segment_is_gone_with_its_history(
    live: Platform, client: httpx.Client, record: Recorder
) -> None:
    someone = new_id("C")
    record(visit(someone, region="north"))
    rule = {"field": "traits.region", "op": "eq", "value": "north"}
    assert client.post("/v1/segments", json={"name": "north", "rule": rule}).status_code == 201

    deleted = client.delete("/v1/segments/north")
    assert (deleted.status_code, deleted.content) == (204, b"")
    for path in ("/v1/segments/north/members", "/v1/segments/north/changes"):
        missing = client.get(path)
        assert missing.status_code == 404
        assert missing.json()["detail"][0]["loc"] == ["path", "name"]
    assert client.get("/v1/segments").json() == []
    assert client.delete("/v1/segments/north").status_code == 404
    assert client.delete("/v1/segments/never-was").status_code == 404

    # Defined again, it starts a history of its own.
    assert client.post("/v1/segments", json={"name": "north", "rule": rule}).status_code == 201
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
    assert len(operations) == 6
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
    assert client.post("/v1/segments", json={"name": "repeat", "rule": rule}).status_code in (
        200,
        201,
    )
    members = client.get("/v1/segments/repeat/members").json()["members"]
    assert [m["customer_id"] for m in members] == [customer_of(live, buyer)]
