from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx

from infra.bootstrap import Platform


def envelope(customer: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": "visit",
        "occurred_at": "2026-03-01T10:00:00+01:00",
        "channel": "store",
        "customer": {"id": customer},
        **fields,
    }


def test_a_recorded_touchpoint_is_readable_in_its_projections(
    platform: Platform, serve: Callable[[Platform], str]
) -> None:
    base = serve(platform)
    customer = f"C-{uuid.uuid4().hex[:8]}"
    batch = [
        envelope(
            customer, journey={"id": "J1", "type": "car_service", "step": "arrival"}, emotion=1
        ),
        envelope(
            customer,
            type="purchase",
            occurred_at="2026-03-01T10:30:00+01:00",
            journey={"id": "J1", "type": "car_service", "step": "farewell"},
            emotion=-2,
            payload={"order_id": "O1", "amount": "19.99", "currency": "EUR"},
        ),
    ]
    with httpx.Client(base_url=base) as client:
        accepted = client.post("/v1/touchpoints", json=batch)
        assert accepted.status_code == 202, accepted.text
        recorded = [r["event_id"] for r in accepted.json()["recorded"]]
        assert recorded == [b["event_id"] for b in batch]
        assert platform.driver.wait_until_projected()
        found = client.get(f"/v1/customers/{customer}").json()
        journey = client.get("/v1/journeys/J1").json()
    assert found["touchpoints_total"] == 2
    assert found["total_spend"] == "19.99"
    assert found["orders"] == 1
    assert journey["peak"] == -2 and journey["end"] == -2 and journey["peak_end_score"] == -2
    assert journey["mean_emotion"] == -0.5
    assert journey["closed"] is True and journey["closed_by"] == "end_step"
