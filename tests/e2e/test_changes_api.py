"""``GET /v1/changes`` over HTTP: paging by position, filters, refusals."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from infra.bootstrap import Platform
from tests.builders import purchase, survey_answer
from tests.conftest import Served, customer_of, embedded


def test_the_feed_pages_by_position_and_filters_by_kind_and_customer(
    platform: Platform, serve: Callable[[Platform], Served]
) -> None:
    yesterday = datetime.now(UTC) - timedelta(days=1)
    with serve(platform).client(timeout=30) as client:
        sent = [purchase(f"F{i}", "10.00", yesterday) for i in range(3)]
        sent.append(survey_answer("F0", "nps", 2, yesterday + timedelta(hours=1)))
        assert client.post("/v1/touchpoints", json=sent).status_code == 202
        assert embedded(platform).wait_until_projected()

        pages, after = [], 0
        while page := client.get("/v1/changes", params={"after": after, "limit": 5}).json():
            if not page["changes"]:
                assert page["next_after"] == after
                break
            pages.append(page["changes"])
            after = page["next_after"]
        every = [c for p in pages for c in p]
        # 4 first facts x 3, a category, and the detractor's follow-up alert opened.
        assert [len(p) for p in pages] == [5, 5, 4]
        positions = [c["position"] for c in every]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)

        first = customer_of(platform, "F0")
        mine = client.get("/v1/changes", params={"customer": first}).json()["changes"]
        assert {c["customer_id"] for c in mine} == {first} and len(mine) == 6
        assert mine[-1]["kind"] == "alert_opened"
        detractor = client.get(
            "/v1/changes", params={"kind": ["nps_category", "lifecycle"], "customer": first}
        ).json()["changes"]
        assert [(c["kind"], c["after"]) for c in detractor] == [
            ("lifecycle", "first_time"),
            ("nps_category", "detractor"),
        ]
        assert detractor[1]["cause"]["type"] == "survey_answered"


def test_a_wrong_query_is_refused_naming_the_parameter(
    platform: Platform, serve: Callable[[Platform], Served]
) -> None:
    with serve(platform).client() as client:
        for params, where in (
            ({"after": -1}, "after"),
            ({"after": 2**63}, "after"),
            ({"limit": 0}, "limit"),
            ({"limit": 1001}, "limit"),
            ({"kind": "tier_up"}, "kind"),
            ({"customer": "a\u0000b"}, "customer"),
            ({"customer": ""}, "customer"),
        ):
            refused = client.get("/v1/changes", params=params)
            assert refused.status_code == 422, (params, refused.text)
            assert refused.json()["detail"][0]["loc"][:2] == ["query", where], params
        assert client.get("/v1/changes", params={"after": 2**63 - 1}).json() == {
            "changes": [],
            "next_after": 2**63 - 1,
        }
