"""``/v1/alerts`` over real HTTP: the Server-Sent Events stream (heartbeats, and resuming
with ``Last-Event-ID`` with nothing lost or repeated), listing and filters, and the
scopes of every alert endpoint."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from infra.bootstrap import Platform
from tests.builders import survey_answer
from tests.conftest import Served, embedded, key_for


def events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The stream's events as they come: id, event, data, or a heartbeat comment."""
    event: dict[str, Any] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            yield {"heartbeat": True}
        elif line == "":
            if event:
                yield event
            event = {}
        else:
            field, _, value = line.partition(": ")
            event[field] = json.loads(value) if field == "data" else value


def next_opened(stream: Iterator[dict[str, Any]], seconds: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    for event in stream:
        if event.get("event") == "alert_opened":
            return event
        assert time.monotonic() < deadline, "no alert_opened in time"
    raise AssertionError("the stream ended")


def detractor(source_id: str) -> dict[str, Any]:
    return survey_answer(source_id, "nps", 2, datetime.now(UTC) - timedelta(minutes=1))


def test_the_stream_sends_each_transition_once_and_resumes_after_last_event_id(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    platform = make_platform(sse_heartbeat_seconds=0.2, sse_poll_seconds=0.05)
    served = serve(platform)
    with served.client(timeout=20) as client:
        with client.stream("GET", "/v1/alerts/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = events(response)
            assert next(e for e in stream if "heartbeat" in e or "retry" in e)
            assert client.post("/v1/touchpoints", json=[detractor("S1")]).status_code == 202
            first = next_opened(stream)
        assert first["data"]["after"]["rule"] == "detractor_follow_up"

        # While nobody listens, another alert opens; a reconnect gets it, and only it.
        assert client.post("/v1/touchpoints", json=[detractor("S2")]).status_code == 202
        assert embedded(platform).wait_until_projected()
        with client.stream(
            "GET", "/v1/alerts/stream", headers={"Last-Event-ID": first["id"]}
        ) as response:
            stream = events(response)
            second = next_opened(stream)
            assert second["data"]["after"]["customer_id"] != first["data"]["after"]["customer_id"]
            assert int(second["id"]) > int(first["id"])
            assert any("heartbeat" in e for e in (next(stream) for _ in range(3)))

        listed = client.get("/v1/alerts", params={"status": "open", "limit": 1}).json()
        assert len(listed["alerts"]) == 1 and listed["next_before"] is not None
        rest = client.get("/v1/alerts", params={"before": listed["next_before"]}).json()
        ids = {a["id"] for a in listed["alerts"] + rest["alerts"]}
        assert {first["data"]["subject"], second["data"]["subject"]} == ids
        about = first["data"]["after"]["subject"]["id"]
        (found,) = client.get("/v1/alerts", params={"subject": about}).json()["alerts"]
        assert found["id"] == first["data"]["subject"]
        one = client.get(f"/v1/alerts/{first['data']['subject']}").json()
        assert one["evidence"]["answer"]["value"] == 2
        assert client.get("/v1/alerts/alt_nope").status_code == 404
        refused = client.get("/v1/alerts", params={"severity": "loud"})
        assert refused.status_code == 422 and "severity" in refused.json()["detail"][0]["loc"]


def test_alert_endpoints_need_their_scopes_and_an_action_names_its_key(
    platform: Platform, serve: Callable[[Platform], Served]
) -> None:
    served = serve(platform)
    reader = {"Authorization": f"Bearer {key_for(platform, 'read')}"}
    ingester = {"Authorization": f"Bearer {key_for(platform, 'ingest')}"}
    operator = {
        "Authorization": f"Bearer {key_for(platform, 'read', 'operate', name='night-shift')}"
    }
    with httpx.Client(base_url=served.url, timeout=20) as client:
        assert (
            client.post("/v1/touchpoints", json=[detractor("S3")], headers=ingester).status_code
            == 202
        )
        assert embedded(platform).wait_until_projected()
        assert client.get("/v1/alerts").status_code == 401
        assert client.get("/v1/alerts", headers=ingester).status_code == 403
        assert client.get("/v1/alerts/stream", headers=ingester).status_code == 403
        (alert,) = client.get("/v1/alerts", headers=reader).json()["alerts"]
        path = f"/v1/alerts/{alert['id']}"
        refused = client.post(f"{path}/acknowledge", headers=reader)
        assert refused.status_code == 403 and refused.json()["missing_scope"] == "operate"
        acked = client.post(f"{path}/acknowledge", headers=operator, json={"note": "on it"})
        assert acked.status_code == 202 and acked.json()["action"] == "acknowledge"
        assert embedded(platform).wait_until_projected()
        shown = client.get(path, headers=reader).json()
        assert shown["status"] == "acknowledged" and shown["acknowledged_by"] == "night-shift"
        assert client.post(f"{path}/resolve", headers=operator).status_code == 202
        assert embedded(platform).wait_until_projected()
        assert client.get(path, headers=reader).json()["resolved_by"] == "night-shift"
        again = client.post(f"{path}/resolve", headers=operator)
        assert again.status_code == 409
        assert client.post("/v1/alerts/alt_nope/resolve", headers=operator).status_code == 404
        bad = client.post(f"{path}/acknowledge", headers=operator, json={"note": "x", "y": 1})
        assert bad.status_code == 422


def test_a_silence_marks_the_alerts_it_holds_and_the_stream_leaves_them_out(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    platform = make_platform(sse_heartbeat_seconds=0.2, sse_poll_seconds=0.05)
    served = serve(platform)
    ends = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with served.client(timeout=20) as client:
        refused = client.post("/v1/silences", json={"matcher": {"colour": "red"}, "ends_at": ends})
        assert refused.status_code == 422
        assert client.post("/v1/silences", json={"matcher": {}, "ends_at": ends}).status_code == 422
        created = client.post(
            "/v1/silences",
            json={"matcher": {"rule": "detractor_follow_up"}, "ends_at": ends, "comment": "drill"},
        )
        assert created.status_code == 201, created.text
        silence = created.json()["id"]
        assert embedded(platform).wait_until_projected()
        (held,) = client.get("/v1/silences", params={"active": True}).json()["silences"]
        assert held["id"] == silence and held["matcher"] == {"rule": "detractor_follow_up"}

        assert client.post("/v1/touchpoints", json=[detractor("S9")]).status_code == 202
        assert embedded(platform).wait_until_projected()
        (alert,) = client.get("/v1/alerts").json()["alerts"]
        assert alert["silenced_by"] == silence  # recorded, marked

        def opened(params: dict[str, Any]) -> list[dict[str, Any]]:
            seen: list[dict[str, Any]] = []
            with client.stream("GET", "/v1/alerts/stream", params=params) as response:
                beats = 0
                for event in events(response):
                    beats += "heartbeat" in event
                    if event.get("event") == "alert_opened":
                        seen.append(event)
                    if beats >= 3:
                        return seen
            return seen

        assert opened({"after": 0}) == []  # not delivered
        assert len(opened({"after": 0, "include_silenced": True})) == 1

        assert client.post(f"/v1/silences/{silence}/expire").status_code == 202
        assert client.post(f"/v1/silences/{silence}/expire").status_code == 409
        assert client.post("/v1/silences/nope/expire").status_code == 404
        assert embedded(platform).wait_until_projected()
        assert client.get("/v1/silences", params={"active": True}).json()["silences"] == []
        assert client.post("/v1/touchpoints", json=[detractor("S10")]).status_code == 202
        assert embedded(platform).wait_until_projected()
        assert len(opened({"after": 0})) == 1  # the new one is delivered
