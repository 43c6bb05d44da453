from __future__ import annotations

from collections.abc import Callable

from infra.bootstrap import Platform
from tests.builders import envelope, new_id, purchase
from tests.conftest import Served, embedded


def test_a_recorded_touchpoint_is_readable_in_its_projections(
    platform: Platform, serve: Callable[[Platform], Served]
) -> None:
    served = serve(platform)
    customer = new_id("C")
    batch = [
        envelope(
            customer,
            "2026-03-01T10:00:00+01:00",
            journey={"id": "J1", "type": "car_service", "step": "arrival"},
            emotion=1,
        ),
        purchase(
            customer,
            "19.99",
            "2026-03-01T10:30:00+01:00",
            order_id="O1",
            journey={"id": "J1", "type": "car_service", "step": "farewell"},
            emotion=-2,
        ),
    ]
    with served.client() as client:
        accepted = client.post("/v1/touchpoints", json=batch)
        assert accepted.status_code == 202, accepted.text
        recorded = [r["event_id"] for r in accepted.json()["recorded"]]
        assert recorded == [b["event_id"] for b in batch]
        assert embedded(platform).wait_until_projected()
        found = client.get(f"/v1/customers/{customer}").json()
        journey = client.get("/v1/journeys/J1").json()
    assert found["touchpoints_total"] == 2
    assert found["total_spend"] == "19.99"
    assert found["orders"] == 1
    assert journey["peak"] == -2 and journey["end"] == -2 and journey["peak_end_score"] == -2
    assert journey["mean_emotion"] == -0.5
    assert journey["closed"] is True and journey["closed_by"] == "end_step"
