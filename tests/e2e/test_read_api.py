"""The read API over real HTTP: customers, timelines, journeys, health and the docs."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from infra.bootstrap import Platform
from tests import builders
from tests.builders import envelope, new_id
from tests.conftest import Served, customer_of, embedded

Item = dict[str, Any]

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


# Each kind of touchpoint arrives on its own channel: counts_by_channel is asserted.
def purchase(customer_id: str, amount: str, at: datetime = T0, **fields: Any) -> Item:
    return builders.purchase(customer_id, amount, at, channel="web", **fields)


def nps(customer_id: str, value: int, at: datetime = T0) -> Item:
    return builders.survey_answer(customer_id, "nps", value, at) | {"channel": "email"}


def complaint(customer_id: str, step: str, complaint_id: str, at: datetime) -> Item:
    answer = builders.complaint(customer_id, step, at, complaint_id=complaint_id)
    return answer | {"channel": "phone"}


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture
def client(platform: Platform, serve: Callable[[Platform], Served]) -> Iterator[httpx.Client]:
    with serve(platform).client() as http:
        yield http


@pytest.fixture
def record(platform: Platform, client: httpx.Client) -> Callable[..., None]:
    """Post touchpoints (one request each, in the order given) and wait for the
    projections."""

    def post(*items: Item) -> None:
        for item in items:
            response = client.post("/v1/touchpoints", json=item)
            assert response.status_code == 202, response.text
        assert embedded(platform).wait_until_projected()

    return post


# -- unknown ids --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/customers/{id}",
        "/v1/customers/{id}/timeline",
        "/v1/customers/{id}/journeys",
        "/v1/journeys/{id}",
    ],
)
def test_an_unknown_id_answers_404(
    client: httpx.Client, record: Callable[..., None], path: str
) -> None:
    record(envelope(new_id("C"), T0, journey={"id": new_id("J"), "type": "visit", "step": "in"}))
    unknown = new_id("X")
    response = client.get(path.format(id=unknown))
    assert response.status_code == 404, response.text
    assert unknown in response.json()["detail"]


# -- timeline -------------------------------------------------------------------------


def test_the_timeline_pages_newest_first_by_event_time_whatever_the_arrival_order(
    platform: Platform, client: httpx.Client, record: Callable[..., None]
) -> None:
    customer = new_id("C")
    items = [envelope(customer, T0 + timedelta(hours=h)) for h in range(7)]
    record(*(items[i] for i in (3, 0, 6, 1, 5, 2, 4)))
    resolved = customer_of(platform, customer)

    pages, offset = [], 0
    while offset is not None:
        response = client.get(
            f"/v1/customers/{customer}/timeline", params={"limit": 3, "offset": offset}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert (page["customer_id"], page["total"], page["limit"], page["offset"]) == (
            resolved,
            7,
            3,
            offset,
        )
        pages.append(page)
        offset = page["next_offset"]

    assert [p["next_offset"] for p in pages] == [3, 6, None]
    assert [len(p["items"]) for p in pages] == [3, 3, 1]
    seen = [item for p in pages for item in p["items"]]
    assert [i["event_id"] for i in seen] == [i["event_id"] for i in reversed(items)]
    assert [when(i["occurred_at"]) for i in seen] == [
        T0 + timedelta(hours=h) for h in reversed(range(7))
    ]


def test_the_timeline_in_ascending_order_starts_with_the_oldest(
    client: httpx.Client, record: Callable[..., None]
) -> None:
    customer = new_id("C")
    items = [envelope(customer, T0 + timedelta(hours=h), emotion=h - 3) for h in range(7)]
    record(*(items[i] for i in (5, 2, 6, 0, 4, 1, 3)))

    first = client.get(
        f"/v1/customers/{customer}/timeline", params={"limit": 3, "order": "asc"}
    ).json()
    assert [i["event_id"] for i in first["items"]] == [i["event_id"] for i in items[:3]]
    assert first["next_offset"] == 3
    everything = client.get(f"/v1/customers/{customer}/timeline", params={"order": "asc"}).json()
    assert everything["next_offset"] is None
    assert [i["event_id"] for i in everything["items"]] == [i["event_id"] for i in items]
    assert [i["emotion"] for i in everything["items"]] == list(range(-3, 4))
    assert {i["type"] for i in everything["items"]} == {"visit"}
    assert {i["channel"] for i in everything["items"]} == {"store"}


def test_a_timeline_offset_past_the_end_is_an_empty_last_page(
    client: httpx.Client, record: Callable[..., None]
) -> None:
    customer = new_id("C")
    record(envelope(customer, T0), envelope(customer, T0 + timedelta(minutes=1)))
    page = client.get(f"/v1/customers/{customer}/timeline", params={"offset": 10}).json()
    assert (page["total"], page["items"], page["next_offset"]) == (2, [], None)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"limit": -1},
        {"limit": "ten"},
        {"offset": -1},
        {"order": "sideways"},
    ],
    ids=[
        "limit-0",
        "limit-501",
        "limit-negative",
        "limit-not-a-number",
        "offset-negative",
        "order-unknown",
    ],
)
def test_timeline_paging_out_of_range_answers_422_naming_the_parameter(
    client: httpx.Client, record: Callable[..., None], params: dict[str, Any]
) -> None:
    customer = new_id("C")
    record(envelope(customer, T0))
    response = client.get(f"/v1/customers/{customer}/timeline", params=params)
    assert response.status_code == 422, response.text
    [name] = params
    assert any(name in error["loc"] for error in response.json()["detail"]), response.text


@pytest.mark.parametrize("limit", [1, 500])
def test_timeline_limits_at_the_bounds_are_accepted(
    client: httpx.Client, record: Callable[..., None], limit: int
) -> None:
    customer = new_id("C")
    record(envelope(customer, T0), envelope(customer, T0 + timedelta(minutes=1)))
    page = client.get(f"/v1/customers/{customer}/timeline", params={"limit": limit}).json()
    assert page["limit"] == limit and len(page["items"]) == min(limit, 2)


# -- journeys -------------------------------------------------------------------------


def test_the_customer_journeys_lists_each_of_the_customers_journeys_newest_first(
    platform: Platform, client: httpx.Client, record: Callable[..., None]
) -> None:
    customer, other = new_id("C"), new_id("C")
    older, newer, theirs = new_id("J"), new_id("J"), new_id("J")
    record(
        envelope(
            customer, T0, journey={"id": older, "type": "car_service", "step": "arrival"}, emotion=2
        ),
        envelope(
            customer,
            T0 + timedelta(minutes=30),
            journey={"id": older, "type": "car_service", "step": "farewell"},
            emotion=-1,
        ),
        envelope(
            customer,
            T0 + timedelta(days=2),
            journey={"id": newer, "type": "onboarding", "step": "welcome"},
            emotion=1,
        ),
        envelope(other, T0, journey={"id": theirs, "type": "car_service", "step": "arrival"}),
    )
    response = client.get(f"/v1/customers/{customer}/journeys")
    assert response.status_code == 200, response.text
    journeys = response.json()
    assert [j["journey_id"] for j in journeys] == [newer, older]
    assert {j["customer_id"] for j in journeys} == {customer_of(platform, customer)}
    by_id = {j["journey_id"]: j for j in journeys}
    assert by_id[older]["journey_type"] == "car_service"
    assert [t["step"] for t in by_id[older]["touchpoints"]] == ["arrival", "farewell"]
    assert (by_id[older]["peak"], by_id[older]["end"], by_id[older]["closed"]) == (2, -1, True)
    assert by_id[newer]["journey_type"] == "onboarding"
    assert client.get(f"/v1/journeys/{older}").json() == by_id[older]


def test_a_customer_without_journeys_has_an_empty_journey_list(
    client: httpx.Client, record: Callable[..., None]
) -> None:
    customer = new_id("C")
    record(envelope(customer, T0))
    response = client.get(f"/v1/customers/{customer}/journeys")
    assert response.status_code == 200, response.text
    assert response.json() == []


# -- health and docs ------------------------------------------------------------------


def test_healthz_is_ok_with_no_lag_once_projected(
    platform: Platform, client: httpx.Client, record: Callable[..., None]
) -> None:
    record(*(envelope(new_id("C"), T0) for _ in range(3)))
    assert embedded(platform).wait_until_projected()
    response = client.get("/v1/healthz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "projection_lag": 0,
        "projector_error": None,
        "quarantined_documents": 0,
        "last_clv_fit": None,
        "scheduler": None,  # the test runs none
        "measures": {"clock_at": None, "inputs_version": 0, "failed_customers": 0},
    }


def test_the_docs_and_the_openapi_document_are_served(client: httpx.Client) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    document = client.get("/openapi.json")
    assert document.status_code == 200
    spec = document.json()
    assert "TouchpointIn" in spec["components"]["schemas"]
    schemas = spec["components"]["schemas"]
    envelope_schema = schemas["TouchpointIn"]  # one variant per type, each with its payload
    assert envelope_schema["discriminator"]["propertyName"] == "type"
    purchase_schema = schemas["Touchpoint_purchase"]
    assert {"event_id", "type", "occurred_at", "channel", "customer"} <= set(
        purchase_schema["properties"]
    )
    assert purchase_schema["properties"]["payload"] == {
        "$ref": "#/components/schemas/PurchasePayload"
    }
    assert "post" in spec["paths"]["/v1/touchpoints"]
    assert "TouchpointIn" in str(spec["paths"]["/v1/touchpoints"]["post"]["requestBody"])
    for path in (
        "/v1/customers/{customer_id}",
        "/v1/customers/{customer_id}/timeline",
        "/v1/journeys/{journey_id}",
        "/v1/healthz",
    ):
        assert path in spec["paths"], path


# -- the customer document ------------------------------------------------------------

CONTRACT_FIELDS = {
    "customer_id",
    "identifiers",
    "first_seen",
    "last_seen",
    "touchpoints_total",
    "counts_by_type",
    "counts_by_channel",
    "total_spend",
    "orders",
    "loyalty_status",
    "open_complaints",
    "last_survey_answers",
}


def test_the_customer_document_has_the_contract_fields_and_exact_spend(
    platform: Platform, client: httpx.Client, record: Callable[..., None]
) -> None:
    customer = new_id("C")
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    identified = envelope(
        customer, T0 + timedelta(hours=2), customer={"id": customer, "email": email}
    )
    record(
        identified,
        purchase(customer, "10.10", T0),
        purchase(customer, "20.20", T0 + timedelta(hours=1)),
        nps(customer, 8, T0 + timedelta(hours=3)),
    )
    response = client.get(f"/v1/customers/{customer}")
    assert response.status_code == 200, response.text
    found = response.json()
    assert set(found) >= CONTRACT_FIELDS
    resolved = customer_of(platform, customer)
    assert found["customer_id"] == resolved
    # Both linked by the touchpoint that carried them first (recorded first, though not
    # the earliest by event time); ties in first_seen go by kind.
    first_seen = T0 + timedelta(hours=2)
    assert [
        (i["kind"], i["value"], when(i["first_seen"]), i["first_seen_in"], i["stream"])
        for i in found["identifiers"]
    ] == [
        ("email", email, first_seen, identified["event_id"], resolved),
        ("id", customer, first_seen, identified["event_id"], resolved),
    ]
    assert found["merges"] == []
    assert when(found["first_seen"]) == T0
    assert when(found["last_seen"]) == T0 + timedelta(hours=3)
    assert found["touchpoints_total"] == 4
    assert found["counts_by_type"] == {"visit": 1, "purchase": 2, "survey_answered": 1}
    assert found["counts_by_channel"] == {"store": 1, "web": 2, "email": 1}
    assert found["total_spend"] == "30.30"
    assert found["orders"] == 2
    assert found["open_complaints"] == []
    assert [(a["question_id"], a["value"]) for a in found["last_survey_answers"]] == [("Q-nps", 8)]
    assert isinstance(found["loyalty_status"], str)


def test_a_complaint_filed_then_resolved_is_no_longer_open(
    client: httpx.Client, record: Callable[..., None]
) -> None:
    customer, complaint_id = new_id("C"), new_id("K")
    record(complaint(customer, "filed", complaint_id, T0))
    filed = client.get(f"/v1/customers/{customer}").json()
    assert [c["complaint_id"] for c in filed["open_complaints"]] == [complaint_id]

    record(complaint(customer, "acknowledged", complaint_id, T0 + timedelta(hours=1)))
    acknowledged = client.get(f"/v1/customers/{customer}").json()
    assert [c["complaint_id"] for c in acknowledged["open_complaints"]] == [complaint_id]

    record(complaint(customer, "resolved", complaint_id, T0 + timedelta(days=1)))
    resolved = client.get(f"/v1/customers/{customer}").json()
    assert resolved["open_complaints"] == []
    assert resolved["complaints_total"] == 1


@pytest.mark.parametrize(
    ("answer", "status"), [(10, "true"), (9, "true"), (3, "spurious"), (8, "spurious")]
)
def test_loyalty_of_a_repeat_buyer_follows_the_nps_answer_as_of_a_given_day(
    client: httpx.Client, record: Callable[..., None], answer: int, status: str
) -> None:
    customer = new_id("C")
    record(
        purchase(customer, "10.00", T0),
        purchase(customer, "15.00", T0 + timedelta(days=20)),
        nps(customer, answer, T0 + timedelta(days=21)),
    )
    as_of = (T0 + timedelta(days=30)).isoformat().replace("+00:00", "Z")
    found = client.get(f"/v1/customers/{customer}", params={"as_of": as_of}).json()
    assert found["loyalty_status"] == status
    assert found["loyalty"]["orders_in_window"] == 2
    assert found["loyalty"]["attitude_basis"]["value"] == answer


def test_loyalty_with_recent_activity_reads_as_of_now_by_default(
    client: httpx.Client, record: Callable[..., None]
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    loyal, inert = new_id("C"), new_id("C")
    record(
        purchase(loyal, "10.00", now - timedelta(days=40)),
        purchase(loyal, "10.00", now - timedelta(days=3)),
        nps(loyal, 10, now - timedelta(days=2)),
        purchase(inert, "10.00", now - timedelta(days=40)),
        purchase(inert, "10.00", now - timedelta(days=3)),
        nps(inert, 3, now - timedelta(days=2)),
    )
    assert client.get(f"/v1/customers/{loyal}").json()["loyalty_status"] == "true"
    assert client.get(f"/v1/customers/{inert}").json()["loyalty_status"] == "spurious"


def test_loyalty_as_of_before_the_second_purchase_is_not_repeat_patronage(
    client: httpx.Client, record: Callable[..., None]
) -> None:
    customer = new_id("C")
    record(
        purchase(customer, "10.00", T0),
        nps(customer, 10, T0 + timedelta(days=1)),
        purchase(customer, "10.00", T0 + timedelta(days=20)),
    )
    as_of = (T0 + timedelta(days=10)).isoformat().replace("+00:00", "Z")
    found = client.get(f"/v1/customers/{customer}", params={"as_of": as_of}).json()
    assert found["loyalty_status"] == "latent"
    assert found["loyalty"]["orders_in_window"] == 1


@pytest.mark.parametrize(
    ("amounts", "expected"),
    [
        (["10.10", "20.20"], "30.30"),
        (["10.1"], "10.10"),
        ([5], "5.00"),
        (["0.1", "0.2"], "0.30"),
        ([], "0.00"),
    ],
    # JSON numbers with a fraction and exponents are refused at the door (unit-tested).
    ids=["cents", "one-decimal", "integer", "tenths", "no-purchase"],
)
def test_total_spend_is_always_a_string_with_cents(
    client: httpx.Client, record: Callable[..., None], amounts: list[Any], expected: str
) -> None:
    customer = new_id("C")
    record(
        envelope(customer, T0),
        *(purchase(customer, a, T0 + timedelta(minutes=i)) for i, a in enumerate(amounts)),
    )
    found = client.get(f"/v1/customers/{customer}").json()
    assert found["total_spend"] == expected
    assert found["orders"] == len(amounts)


def test_a_customer_id_with_a_slash_is_refused_naming_the_field(client: httpx.Client) -> None:
    response = client.post("/v1/touchpoints", json=envelope(f"DE/4711-{uuid.uuid4().hex[:8]}", T0))
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["field"] == "customer.id"
    assert "'/'" in error["message"]


@pytest.mark.parametrize("customer_id", ["C 1", "C?1", "C#1", "Cé1", "C%2F1"])
def test_an_accepted_customer_id_is_readable_whatever_its_characters(
    platform: Platform, client: httpx.Client, record: Callable[..., None], customer_id: str
) -> None:
    """Ingest accepts any text as a customer id; the read API must then serve it (or the
    ingest must refuse it)."""
    unique = f"{customer_id}-{uuid.uuid4().hex[:8]}"
    record(envelope(unique, T0))
    path = "/v1/customers/" + quote(unique, safe="")
    for suffix in ("", "/timeline", "/journeys"):
        response = client.get(path + suffix)
        assert response.status_code == 200, (suffix, response.status_code, response.text)
    found = client.get(path).json()
    assert found["customer_id"] == customer_of(platform, unique)
    assert [(i["kind"], i["value"]) for i in found["identifiers"]] == [("id", unique)]


@pytest.mark.parametrize("suffix", ["", "/timeline", "/journeys"])
def test_a_customer_id_with_a_nul_character_is_nobody(client: httpx.Client, suffix: str) -> None:
    """PostgreSQL text holds no NUL, so no customer id has one: a 404, not a 500."""
    response = client.get(f"/v1/customers/C%001{suffix}")
    assert response.status_code == 404, response.text


@pytest.mark.parametrize("kind", ["id", "device_id", "crm_id"])
def test_finding_customers_by_an_identifier_with_a_nul_character_is_refused_naming_it(
    client: httpx.Client, kind: str
) -> None:
    response = client.get("/v1/customers", params={kind: "C\x001"})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", kind]
    assert "NUL" in error["msg"]
