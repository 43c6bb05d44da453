"""Segments over HTTP: define, evaluate, members, and who entered and left."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from infra.bootstrap import Platform


def touchpoint(
    customer: str, kind: str, payload: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": kind,
        "channel": "web",
        "occurred_at": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
        "customer": {"id": customer},
        "payload": payload or {},
        **fields,
    }


def nps(customer: str, score: int) -> dict[str, Any]:
    return touchpoint(
        customer,
        "survey_answered",
        {
            "survey_id": f"S-{uuid.uuid4().hex[:6]}",
            "question_id": "nps",
            "metric": "nps",
            "value": score,
        },
    )


def test_a_segment_tracks_who_enters_and_who_leaves(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], str]
) -> None:
    platform = make_platform(population_cache_seconds=0, segment_evaluate_seconds=0)
    base = serve(platform)
    north, south = f"N-{uuid.uuid4().hex[:6]}", f"S-{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=base, timeout=30) as client:

        def record(*items: dict[str, Any]) -> None:
            assert client.post("/v1/touchpoints", json=list(items)).status_code == 202
            assert platform.driver.wait_until_projected()  # type: ignore[attr-defined]

        record(
            touchpoint(north, "visit", additional={"traits": {"region": "north"}}),
            nps(north, 3),
            touchpoint(south, "visit", additional={"traits": {"region": "south"}}),
            nps(south, 2),
        )
        rule = {
            "all": [
                {"field": "nps_category", "op": "eq", "value": "detractor"},
                {"field": "traits.region", "op": "eq", "value": "north"},
            ]
        }
        defined = client.post("/v1/segments", json={"name": "north-detractors", "rule": rule})
        assert defined.status_code == 201, defined.text
        assert (defined.json()["members"], defined.json()["entered"]) == (1, 1)

        record(nps(north, 10))  # a promoter now: leaves the segment
        members = client.get("/v1/segments/north-detractors/members").json()
        assert members["count"] == 0
        changes = client.get("/v1/segments/north-detractors/changes").json()["changes"]
        assert [(c["customer_id"], c["change"]) for c in changes] == [
            (north, "left"),
            (north, "entered"),
        ]
        listed = client.get("/v1/segments").json()
        assert [(s["name"], s["members"]) for s in listed] == [("north-detractors", 0)]


def test_a_wrong_rule_is_refused_naming_where_in_the_rule(
    platform: Platform, serve: Callable[[Platform], str]
) -> None:
    base = serve(platform)
    refused = httpx.post(
        f"{base}/v1/segments",
        json={"name": "x", "rule": {"any": [{"field": "lifecycle", "op": "like", "value": 1}]}},
    )
    assert refused.status_code == 422
    assert refused.json()["detail"]["field"] == "rule.any.0.op"
    assert httpx.get(f"{base}/v1/segments/nope/members").status_code == 404
