"""Identity over real HTTP: what only HTTP shows. A customer merged into another answers
307 to the same request for the survivor; a source id answers for its holder; look-up by
identifier normalises as ingest does; the customer answer carries its identifiers and
merge history; a split is refused as HTTP says (404, 409, 422); conflicts are paged.

Touchpoints are recorded through the platform's driver (ingest over HTTP has tests of
its own); every read and every split goes over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from domain.idempotency import Recorded
from domain.touchpoints import parse_touchpoint
from infra.bootstrap import Platform
from tests.builders import Envelope, envelope
from tests.conftest import Served, embedded

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def record(platform: Platform, *raws: Envelope) -> list[Recorded]:
    outcome = platform.driver.submit([parse_touchpoint(raw) for raw in raws]).result(timeout=30)
    assert embedded(platform).wait_until_projected()
    return outcome


def customer_id(platform: Platform, raw: Envelope) -> str:
    (outcome,) = record(platform, raw)
    assert outcome.customer_id
    return outcome.customer_id


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def tag() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def client(platform: Platform, serve: Callable[[Platform], Served]) -> Iterator[httpx.Client]:
    with serve(platform).client(timeout=30) as http:
        yield http


class Merged:
    """Two customers (one by e-mail, first seen first; one by phone, with a journey)
    merged by a touchpoint carrying both."""

    def __init__(self, platform: Platform) -> None:
        self.email, self.phone = f"ann.{tag()}@shop.de", f"+49151{uuid.uuid4().int % 10**8:08d}"
        self.journey = f"J-{tag()}"
        self.survivor = customer_id(platform, envelope({"email": self.email}, at(0)))
        self.absorbed = customer_id(
            platform,
            envelope(
                {"phone": self.phone},
                at(10),
                journey={"id": self.journey, "type": "visit", "step": "arrival"},
                emotion=2,
            ),
        )
        self.proof = envelope({"email": self.email, "phone": self.phone}, at(20))
        assert customer_id(platform, self.proof) == self.survivor


@pytest.fixture
def merged(platform: Platform) -> Merged:
    return Merged(platform)


# -- the redirect ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "query"),
    [
        ("", ""),
        ("", "?as_of=2026-03-02T00:00:00Z"),
        ("/timeline", "?limit=1&order=asc"),
        ("/journeys", ""),
    ],
)
def test_a_merged_customer_answers_307_to_the_same_request_for_the_survivor(
    client: httpx.Client, merged: Merged, suffix: str, query: str
) -> None:
    response = client.get(f"/v1/customers/{merged.absorbed}{suffix}{query}")
    assert response.status_code == 307, response.text
    location = f"/v1/customers/{merged.survivor}{suffix}{query}"
    assert response.headers["location"] == location
    assert response.json() == {
        "detail": f"customer {merged.absorbed} was merged into {merged.survivor}",
        "customer_id": merged.absorbed,
        "merged_into": merged.survivor,
        "location": location,
    }
    followed = client.get(f"/v1/customers/{merged.absorbed}{suffix}{query}", follow_redirects=True)
    assert followed.status_code == 200, followed.text
    assert str(followed.url).endswith(location)
    answer = followed.json()
    owners = (
        {j["customer_id"] for j in answer} if suffix == "/journeys" else {answer["customer_id"]}
    )
    assert owners == {merged.survivor}
    if suffix == "/timeline":
        assert (answer["limit"], len(answer["items"])) == (1, 1)
    if query.startswith("?as_of"):
        assert answer["loyalty"]["as_of"].startswith("2026-03-02T00:00:00")


def test_the_redirect_followed_answers_with_everything_both_customers_did(
    client: httpx.Client, merged: Merged
) -> None:
    customer = client.get(f"/v1/customers/{merged.absorbed}", follow_redirects=True).json()
    assert customer["customer_id"] == merged.survivor
    assert customer["touchpoints_total"] == 3
    timeline = client.get(
        f"/v1/customers/{merged.absorbed}/timeline?order=asc", follow_redirects=True
    ).json()
    assert [item["occurred_at"] for item in timeline["items"]] == [
        "2026-03-01T09:00:00Z",
        "2026-03-01T09:10:00Z",
        "2026-03-01T09:20:00Z",
    ]
    journeys = client.get(f"/v1/customers/{merged.absorbed}/journeys", follow_redirects=True)
    assert [(j["journey_id"], j["customer_id"]) for j in journeys.json()] == [
        (merged.journey, merged.survivor)
    ]


def test_a_split_on_a_merged_customer_is_redirected_with_its_method_and_body(
    client: httpx.Client, merged: Merged
) -> None:
    body = {"absorbed": merged.absorbed, "reason": "asked on the wrong id"}
    response = client.post(f"/v1/customers/{merged.absorbed}/split", json=body)
    assert response.status_code == 307, response.text
    assert response.headers["location"] == f"/v1/customers/{merged.survivor}/split"
    followed = client.post(
        f"/v1/customers/{merged.absorbed}/split", json=body, follow_redirects=True
    )
    assert followed.status_code == 202, followed.text
    assert followed.json() == {"survivor": merged.survivor, "released": merged.absorbed}


# -- source ids and look-ups ---------------------------------------------------------------


def test_a_source_customer_id_answers_for_the_customer_holding_it_without_a_redirect(
    platform: Platform, client: httpx.Client
) -> None:
    source = f"CRM-{tag()}"
    email = f"lee.{tag()}@shop.de"
    survivor = customer_id(platform, envelope({"email": email}, at(0)))
    holder = customer_id(platform, envelope({"id": source}, at(5)))
    record(platform, envelope({"id": source, "email": email}, at(9)))  # holder is absorbed
    assert holder != survivor
    for path in (f"/v1/customers/{quote(source)}", f"/v1/customers/{quote(source)}/timeline"):
        response = client.get(path)
        assert response.status_code == 200, response.text
        assert response.json()["customer_id"] == survivor


def test_customers_are_found_by_an_address_spelled_any_way(
    platform: Platform, client: httpx.Client
) -> None:
    found = customer_id(platform, envelope({"email": "ann@shop.de"}, at(0)))
    response = client.get("/v1/customers", params={"email": "Ann@Shop.DE"})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "customers": [{"customer_id": found, "kind": "email", "value": "ann@shop.de"}]
    }
    nobody = client.get("/v1/customers", params={"email": "bob@shop.de"})
    assert nobody.status_code == 200 and nobody.json() == {"customers": []}


def test_a_national_phone_number_is_read_in_the_default_region(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    platform = make_platform(phone_default_region="DE")
    found = customer_id(platform, envelope({"phone": "+49 30 1234567"}, at(0)))
    with serve(platform).client(timeout=30) as client:
        response = client.get("/v1/customers", params={"phone": "030 1234567"})
    assert response.status_code == 200, response.text
    assert response.json()["customers"] == [
        {"customer_id": found, "kind": "phone", "value": "+49301234567"}
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"phone": "not a number"}, "phone"), ({"phone": "030 1234567"}, "phone")],
)
def test_a_phone_number_that_cannot_be_read_is_refused_naming_the_field(
    client: httpx.Client, params: dict[str, str], field: str
) -> None:
    """No country code and no default region: the same digits are other numbers
    elsewhere, so a national number is refused like one that is not a number."""
    response = client.get("/v1/customers", params=params)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", field]
    assert error["msg"]


@pytest.mark.parametrize("query", ["", "?as_of=2026-03-01", "?name=ann"])
def test_a_look_up_without_an_identifier_is_refused(client: httpx.Client, query: str) -> None:
    response = client.get(f"/v1/customers{query}")
    assert response.status_code == 422, response.text
    assert "email" in str(response.json()["detail"])


# -- the customer's identifiers and merge history -----------------------------------------


def test_the_customer_answer_lists_its_identifiers_and_merges_and_a_split_dates_the_merge(
    platform: Platform, client: httpx.Client, merged: Merged
) -> None:
    customer = client.get(f"/v1/customers/{merged.survivor}").json()
    assert [
        (i["kind"], i["value"], when(i["first_seen"]), i["stream"]) for i in customer["identifiers"]
    ] == [
        ("email", merged.email, at(0), merged.survivor),
        ("phone", merged.phone, at(10), merged.absorbed),
    ]
    (merge,) = customer["merges"]
    assert (merge["survivor"], merge["absorbed"], merge["event_id"]) == (
        merged.survivor,
        merged.absorbed,
        merged.proof["event_id"],
    )
    assert when(merge["merged_at"]) == at(20) and merge["split_at"] is None
    assert merge["identifiers"] == {"email": merged.email, "phone": merged.phone}

    before = datetime.now(UTC)
    split = client.post(
        f"/v1/customers/{merged.survivor}/split",
        json={"absorbed": merged.absorbed, "reason": "two people"},
    )
    assert split.status_code == 202, split.text
    assert embedded(platform).wait_until_projected()  # 202: the projections follow
    survivor = client.get(f"/v1/customers/{merged.survivor}").json()
    released = client.get(f"/v1/customers/{merged.absorbed}")
    assert released.status_code == 200, released.text  # answers for itself again
    assert [i["kind"] for i in survivor["identifiers"]] == ["email"]
    assert [i["kind"] for i in released.json()["identifiers"]] == ["phone"]
    for answer in (survivor, released.json()):
        (undone,) = answer["merges"]
        assert undone["absorbed"] == merged.absorbed
        assert before <= when(undone["split_at"]) <= datetime.now(UTC)
    assert survivor["touchpoints_total"] == 2 and released.json()["touchpoints_total"] == 1


# -- split refusals --------------------------------------------------------------------


def test_a_split_repeated_is_409_and_the_customer_stays_apart(
    client: httpx.Client, merged: Merged
) -> None:
    body = {"absorbed": merged.absorbed, "reason": "two people"}
    first = client.post(f"/v1/customers/{merged.survivor}/split", json=body)
    assert first.status_code == 202, first.text
    again = client.post(f"/v1/customers/{merged.survivor}/split", json=body)
    assert again.status_code == 409, again.text
    assert merged.absorbed in again.json()["detail"]


def test_a_split_of_customers_never_merged_is_409(
    platform: Platform, client: httpx.Client, merged: Merged
) -> None:
    stranger = customer_id(platform, envelope({"email": f"x.{tag()}@shop.de"}, at(0)))
    response = client.post(f"/v1/customers/{merged.survivor}/split", json={"absorbed": stranger})
    assert response.status_code == 409, response.text
    backwards = client.post(
        f"/v1/customers/{merged.absorbed}/split",
        json={"absorbed": merged.survivor},
        follow_redirects=True,
    )
    assert backwards.status_code == 409, backwards.text


def test_a_split_of_an_unknown_customer_is_404(client: httpx.Client, merged: Merged) -> None:
    response = client.post(
        f"/v1/customers/cus_{uuid.uuid4().hex}/split", json={"absorbed": merged.absorbed}
    )
    assert response.status_code == 404, response.text


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"absorbed": ""},
        {"absorbed": 7},
        {"absorbed": "x" * 201},
        {"absorbed": "cus_1", "reason": "r" * 2001},
        {"absorbed": "cus_1", "surplus": True},
        ["cus_1"],
    ],
)
def test_a_split_with_a_bad_body_is_422(client: httpx.Client, merged: Merged, body: Any) -> None:
    response = client.post(f"/v1/customers/{merged.survivor}/split", json=body)
    assert response.status_code == 422, response.text
    assert client.get(f"/v1/customers/{merged.absorbed}").status_code == 307  # still merged


# -- conflicts, paged ----------------------------------------------------------------------


def refused(platform: Platform, count: int) -> list[str]:
    """``count`` refusals (addresses over the limit of one customer), oldest first: their
    touchpoints' event ids."""
    source = f"CRM-{tag()}"
    record(
        platform,
        *(envelope({"id": source, "email": f"n{i}.{tag()}@shop.de"}, at(i)) for i in range(3)),
    )
    over = [
        envelope({"id": source, "email": f"over{i}.{tag()}@shop.de"}, at(10 + i))
        for i in range(count)
    ]
    for raw in over:
        record(platform, raw)
    return [raw["event_id"] for raw in over]


def pages(client: httpx.Client, limit: int) -> Sequence[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    offset = 0
    while True:
        response = client.get("/v1/identity/conflicts", params={"limit": limit, "offset": offset})
        assert response.status_code == 200, response.text
        page = response.json()
        assert (page["limit"], page["offset"]) == (limit, offset)
        if not page["items"]:
            return items
        assert len(page["items"]) <= limit
        items += page["items"]
        offset += limit


@pytest.mark.parametrize("limit", [1, 2, 5, 500])
def test_conflicts_are_paged_newest_first(
    platform: Platform, client: httpx.Client, limit: int
) -> None:
    event_ids = refused(platform, 5)
    first = client.get("/v1/identity/conflicts", params={"limit": limit}).json()
    assert first["total"] == 5 and first["offset"] == 0
    every = pages(client, limit)
    assert [item["event_id"] for item in every] == list(reversed(event_ids))
    assert {item["rule"] for item in every} == {"limit"}
    assert all(item["reason"].startswith("email:") for item in every)


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 501}, {"offset": -1}, {"limit": "x"}])
def test_a_bad_page_of_conflicts_is_422(client: httpx.Client, params: dict[str, Any]) -> None:
    response = client.get("/v1/identity/conflicts", params=params)
    assert response.status_code == 422, response.text


def test_no_conflict_is_an_empty_page(client: httpx.Client) -> None:
    response = client.get("/v1/identity/conflicts")
    assert response.status_code == 200
    assert response.json() == {"total": 0, "offset": 0, "limit": 50, "items": []}
