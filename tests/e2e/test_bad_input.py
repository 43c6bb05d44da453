"""Bad input at the HTTP ingest, over real HTTP: every refusal is a clear 4xx that names
the field and the reason, and nothing reaches the event store."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from infra.bootstrap import Platform
from streams.projector import head
from tests.builders import envelope, nested, new_id, purchase, with_payload
from tests.conftest import Served, customer_of, embedded

Item = dict[str, Any]


def new_customer() -> str:
    return new_id("C")


def refusal(response: httpx.Response, status: int) -> list[dict[str, Any]]:
    """Assert the response is a refusal with ``status`` in the documented format; return
    its errors."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"detail", "errors"}, body
    assert isinstance(body["detail"], str) and body["detail"], body
    assert body["errors"], body
    for error in body["errors"]:
        assert set(error) == {"index", "event_id", "field", "message"}, error
        assert error["field"] and error["message"], error
    errors: list[dict[str, Any]] = body["errors"]
    return errors


def assert_nothing_recorded(
    platform: Platform, client: httpx.Client, head_before: int, *customers: str
) -> None:
    assert head(platform.records) == head_before
    assert embedded(platform).wait_until_projected()
    for customer in customers:
        assert platform.records.identity.locate(customer) is None  # no customer holds it
        assert client.get(f"/v1/customers/{customer}").status_code == 404
        assert client.get(f"/v1/customers/{customer}/timeline").status_code == 404


@pytest.fixture
def client(platform: Platform, serve: Callable[[Platform], Served]) -> Iterator[httpx.Client]:
    with serve(platform).client() as http:
        yield http


@pytest.fixture
def started(platform: Platform, client: httpx.Client) -> int:
    """Record one unrelated touchpoint first, so the event store is not empty; return
    its head."""
    accepted = client.post("/v1/touchpoints", json=envelope(new_customer()))
    assert accepted.status_code == 202, accepted.text
    return head(platform.records)


# -- the body ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [b"{not json", b'{"event_id": "e1",', b"", b"\xff\xfe\xfd", b"[1, 2,]", b"NaNa"]
)
def test_malformed_json_is_refused_with_400_naming_the_body(
    platform: Platform, client: httpx.Client, started: int, body: bytes
) -> None:
    response = client.post(
        "/v1/touchpoints", content=body, headers={"content-type": "application/json"}
    )
    errors = refusal(response, 400)
    assert [(e["index"], e["field"]) for e in errors] == [(None, "body")]
    assert "malformed JSON" in errors[0]["message"]
    assert_nothing_recorded(platform, client, started)


@pytest.mark.parametrize("body", [42, "x", None, True, 3.5])
def test_a_json_scalar_body_is_refused_naming_the_body(
    platform: Platform, client: httpx.Client, started: int, body: Any
) -> None:
    response = client.post(
        "/v1/touchpoints", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    errors = refusal(response, 422)
    assert [e["field"] for e in errors] == ["body"]
    assert "dictionary" in errors[0]["message"] or "object" in errors[0]["message"]
    assert_nothing_recorded(platform, client, started)


def test_an_empty_batch_is_refused_naming_the_body(
    platform: Platform, client: httpx.Client, started: int
) -> None:
    errors = refusal(client.post("/v1/touchpoints", json=[]), 422)
    assert [(e["index"], e["field"]) for e in errors] == [(None, "body")]
    assert "at least one" in errors[0]["message"]
    assert_nothing_recorded(platform, client, started)


def test_a_batch_over_the_limit_is_refused_with_413_naming_the_limit(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    platform = make_platform(ingest_max_batch=5)
    customer = new_customer()
    before = head(platform.records)
    with serve(platform).client() as client:
        response = client.post("/v1/touchpoints", json=[envelope(customer) for _ in range(6)])
        errors = refusal(response, 413)
        assert [(e["index"], e["field"]) for e in errors] == [(None, "body")]
        assert "at most 5" in errors[0]["message"] and "6" in errors[0]["message"]
        assert_nothing_recorded(platform, client, before, customer)
        # The limit itself is accepted.
        at_limit = client.post("/v1/touchpoints", json=[envelope(customer) for _ in range(5)])
        assert at_limit.status_code == 202, at_limit.text
        assert at_limit.json()["accepted"] == 5


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_body_is_refused_with_413_naming_the_limit(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served], chunked: bool
) -> None:
    platform = make_platform(ingest_max_body_bytes=2048)
    customer = new_customer()
    body = json.dumps(envelope(customer, additional={"note": "x" * 4096})).encode()
    assert len(body) > 2048
    before = head(platform.records)
    with serve(platform).client() as client:
        content: bytes | Iterator[bytes] = (
            iter([body[i : i + 512] for i in range(0, len(body), 512)]) if chunked else body
        )
        response = client.post(
            "/v1/touchpoints", content=content, headers={"content-type": "application/json"}
        )
        errors = refusal(response, 413)
        assert [(e["index"], e["field"]) for e in errors] == [(None, "body")]
        assert "2048" in errors[0]["message"]
        assert_nothing_recorded(platform, client, before, customer)


# -- one bad field ------------------------------------------------------------------------


# The field rules themselves are unit-tested (tests/unit/test_touchpoints.py); these few
# show the HTTP side: 422, the field, the index and the event id, single or in a batch.
BAD_ITEMS: list[tuple[str, Callable[[str], Item], str, list[str]]] = [
    # (case id, item for a customer, the refused field, fragments of the reason)
    ("emotion-as-string", lambda c: envelope(c, emotion="2"), "emotion", ["integer"]),
    (
        "amount-as-float",
        lambda c: purchase(c, 19.99),
        "payload.amount",
        ["not exact"],
    ),
    ("unknown-type", lambda c: envelope(c, type="teleport"), "type", ["teleport", "purchase"]),
    ("event-id-as-number", lambda c: envelope(c, event_id=123), "event_id", ["string"]),
]


@pytest.mark.parametrize(
    ("make_item", "field", "reasons"), [pytest.param(*case[1:], id=case[0]) for case in BAD_ITEMS]
)
@pytest.mark.parametrize("as_batch", [False, True], ids=["single", "batch"])
def test_a_bad_field_is_refused_with_422_naming_the_field_and_the_reason(
    platform: Platform,
    client: httpx.Client,
    started: int,
    make_item: Callable[[str], Item],
    field: str,
    reasons: list[str],
    as_batch: bool,
) -> None:
    customer = new_customer()
    item = make_item(customer)
    response = client.post("/v1/touchpoints", json=[item] if as_batch else item)
    errors = refusal(response, 422)
    assert [e["field"] for e in errors] == [field], errors
    assert errors[0]["index"] == 0
    expected_id = item.get("event_id") if isinstance(item.get("event_id"), str) else None
    assert errors[0]["event_id"] == expected_id
    for reason in reasons:
        assert reason in errors[0]["message"], errors[0]["message"]
    assert_nothing_recorded(platform, client, started, customer)


def test_a_touchpoint_beyond_the_future_skew_is_refused_naming_occurred_at(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    platform = make_platform(max_future_skew_seconds=60)
    customer = new_customer()
    ahead = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    before = head(platform.records)
    with serve(platform).client() as client:
        errors = refusal(
            client.post("/v1/touchpoints", json=envelope(customer, occurred_at=ahead)), 422
        )
        assert [e["field"] for e in errors] == ["occurred_at"]
        assert "ahead of the server clock" in errors[0]["message"]
        assert "0:01:00" in errors[0]["message"]
        assert_nothing_recorded(platform, client, before, customer)
        # Within the skew is accepted.
        close = (datetime.now(UTC) + timedelta(seconds=20)).isoformat()
        accepted = client.post("/v1/touchpoints", json=envelope(customer, occurred_at=close))
        assert accepted.status_code == 202, accepted.text


def test_every_bad_field_of_one_item_is_listed(
    platform: Platform, client: httpx.Client, started: int
) -> None:
    customer = new_customer()
    item = purchase(customer, "1.001", currency="eur")
    item.update(emotion=7, occurred_at="2026-03-01T10:00:00")
    errors = refusal(client.post("/v1/touchpoints", json=item), 422)
    assert sorted(e["field"] for e in errors) == [
        "emotion",
        "occurred_at",
        "payload.amount",
        "payload.currency",
    ]
    assert {(e["index"], e["event_id"]) for e in errors} == {(0, item["event_id"])}
    assert_nothing_recorded(platform, client, started, customer)


# -- batches --------------------------------------------------------------------------


def test_a_batch_with_one_bad_item_is_refused_whole(
    platform: Platform, client: httpx.Client, started: int
) -> None:
    customers = [new_customer() for _ in range(4)]
    batch = [envelope(c) for c in customers]
    batch[2]["emotion"] = 9
    response = client.post("/v1/touchpoints", json=batch)
    errors = refusal(response, 422)
    assert [(e["index"], e["event_id"], e["field"]) for e in errors] == [
        (2, batch[2]["event_id"], "emotion")
    ]
    detail = response.json()["detail"]
    assert "1 of 4" in detail and "nothing was recorded" in detail
    assert_nothing_recorded(platform, client, started, *customers)


def test_a_batch_with_several_bad_items_lists_each(
    platform: Platform, client: httpx.Client, started: int
) -> None:
    customer = new_customer()
    batch = [envelope(customer) for _ in range(5)]
    batch[1]["type"] = "teleport"
    batch[3] = purchase(customer, currency="eur")
    batch[4]["customer"] = {}
    response = client.post("/v1/touchpoints", json=batch)
    errors = refusal(response, 422)
    assert [(e["index"], e["event_id"], e["field"]) for e in errors] == [
        (1, batch[1]["event_id"], "type"),
        (3, batch[3]["event_id"], "payload.currency"),
        (4, batch[4]["event_id"], "customer"),
    ]
    assert "3 of 5" in response.json()["detail"]
    assert_nothing_recorded(platform, client, started, customer)


def test_a_refused_batch_once_fixed_is_recorded_whole(
    platform: Platform, client: httpx.Client, started: int
) -> None:
    customer = new_customer()
    batch = [envelope(customer, occurred_at=f"2026-03-01T1{i}:00:00+00:00") for i in range(3)]
    batch[1]["emotion"] = "2"
    refusal(client.post("/v1/touchpoints", json=batch), 422)
    batch[1]["emotion"] = 2
    accepted = client.post("/v1/touchpoints", json=batch)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["accepted"] == 3 and accepted.json()["duplicates"] == 0
    assert [
        e.event_id for e in platform.records.touchpoints_of(customer_of(platform, customer))
    ] == [b["event_id"] for b in batch]


# -- duplicates -----------------------------------------------------------------------


def test_a_valid_duplicate_resend_is_accepted_as_a_duplicate_and_changes_nothing(
    platform: Platform, client: httpx.Client
) -> None:
    customer = new_customer()
    item = purchase(customer, "12.34")
    first = client.post("/v1/touchpoints", json=item)
    assert first.status_code == 202, first.text
    resolved = customer_of(platform, customer)
    assert first.json() == {
        "accepted": 1,
        "duplicates": 0,
        "recorded": [
            {
                "event_id": item["event_id"],
                "customer_id": resolved,
                "outcome": "recorded",
                "duplicate": False,
            }
        ],
    }
    before = head(platform.records)

    again = client.post("/v1/touchpoints", json=item)
    assert again.status_code == 202, again.text
    assert again.json() == {
        "accepted": 1,
        "duplicates": 1,
        "recorded": [
            {
                "event_id": item["event_id"],
                "customer_id": resolved,
                "outcome": "duplicate",
                "duplicate": True,
            }
        ],
    }
    assert head(platform.records) == before
    assert embedded(platform).wait_until_projected()
    found = client.get(f"/v1/customers/{customer}").json()
    assert found["touchpoints_total"] == 1
    assert found["total_spend"] == "12.34"


def test_a_batch_mixing_new_and_already_recorded_items_reports_each(
    platform: Platform, client: httpx.Client
) -> None:
    customer = new_customer()
    old, new = envelope(customer), envelope(customer, occurred_at="2026-03-02T10:00:00+00:00")
    assert client.post("/v1/touchpoints", json=old).status_code == 202
    response = client.post("/v1/touchpoints", json=[old, new])
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 2 and body["duplicates"] == 1
    assert [(r["event_id"], r["duplicate"]) for r in body["recorded"]] == [
        (old["event_id"], True),
        (new["event_id"], False),
    ]
    assert len(platform.records.touchpoints_of(customer_of(platform, customer))) == 2


# -- input that is valid JSON to Python but not to the platform -------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_refused_as_malformed_json(
    platform: Platform, client: httpx.Client, started: int, literal: str
) -> None:
    """RFC 8259 has no NaN or Infinity; accepted, they would be read back as null."""
    customer = new_customer()
    body = json.dumps(envelope(customer, additional={"score": 0}))
    body = body.replace('"score": 0', f'"score": {literal}')
    response = client.post(
        "/v1/touchpoints", content=body, headers={"content-type": "application/json"}
    )
    errors = refusal(response, 400)
    assert [(e["index"], e["field"]) for e in errors] == [(None, "body")]
    assert_nothing_recorded(platform, client, started, customer)


def test_deeply_nested_json_is_refused_as_malformed_not_a_server_error(
    platform: Platform, client: httpx.Client, started: int
) -> None:
    depth = 100_000
    response = client.post(
        "/v1/touchpoints",
        content="[" * depth + "]" * depth,
        headers={"content-type": "application/json"},
    )
    errors = refusal(response, 400)
    assert [(e["index"], e["field"]) for e in errors] == [(None, "body")]
    assert_nothing_recorded(platform, client, started)


def with_lone_surrogate(customer: str) -> str:
    """A touchpoint whose ``additional.note`` is the escape of a lone UTF-16 surrogate:
    valid JSON syntax, but no Unicode text (it cannot be encoded as UTF-8)."""
    body = json.dumps(envelope(customer, additional={"note": "SURROGATE"}))
    return body.replace("SURROGATE", "\\ud800")


def test_a_lone_surrogate_is_refused_with_a_4xx_not_a_server_error(
    platform: Platform, client: httpx.Client, started: int
) -> None:
    customer = new_customer()
    response = client.post(
        "/v1/touchpoints",
        content=with_lone_surrogate(customer),
        headers={"content-type": "application/json"},
    )
    assert response.status_code in (400, 422), response.text
    refusal(response, response.status_code)
    assert_nothing_recorded(platform, client, started, customer)


def test_bad_input_from_one_client_never_fails_another_clients_good_request(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    """The recorder gathers concurrent requests into one transaction (``record_linger_ms``):
    one client's bad touchpoint must not make another client's good one fail."""
    platform = make_platform(record_linger_ms=500)
    served = serve(platform)
    good_customer, bad_customer = new_customer(), new_customer()
    good = envelope(good_customer)

    def send_good() -> httpx.Response:
        with served.client(timeout=30) as own:
            return own.post("/v1/touchpoints", json=good)

    with ThreadPoolExecutor(1) as pool, served.client(timeout=30) as client:
        good_response = pool.submit(send_good)
        time.sleep(0.1)  # the good request is waiting in the recorder's linger window
        bad_response = client.post(
            "/v1/touchpoints",
            content=with_lone_surrogate(bad_customer),
            headers={"content-type": "application/json"},
        )
        assert good_response.result().status_code == 202, good_response.result().text
        assert bad_response.status_code < 500, bad_response.text
        recorded = platform.records.touchpoints_of(customer_of(platform, good_customer))
        assert [e.event_id for e in recorded] == [good["event_id"]]


ODD_ITEMS: list[tuple[str, Callable[[str], Item]]] = [
    ("nul-in-customer-id", lambda c: envelope(f"{c}\u0000")),
    ("nul-in-order-id", lambda c: with_payload(purchase(c), order_id="O\u00001")),
    ("year-1", lambda c: envelope(c, "0001-01-01T00:30:00+01:00")),
    ("nested-beyond-the-limit", lambda c: envelope(c, additional=nested(32))),
    ("dot-dot-customer", lambda c: envelope("..")),
]


@pytest.mark.parametrize("make_item", [pytest.param(case[1], id=case[0]) for case in ODD_ITEMS])
def test_no_accepted_touchpoint_stalls_the_projections_for_everyone(
    platform: Platform, client: httpx.Client, make_item: Callable[[str], Item]
) -> None:
    """Whatever the ingest answers to an odd touchpoint, the touchpoints recorded after it
    still reach the projections."""
    client.post("/v1/touchpoints", json=make_item(new_customer()))
    later = new_customer()
    accepted = client.post("/v1/touchpoints", json=envelope(later))
    assert accepted.status_code == 202, accepted.text
    assert embedded(platform).wait_until_projected(timeout=5), (
        f"projection lag stays at {platform.driver.lag()}"
    )
    assert client.get(f"/v1/customers/{later}").status_code == 200


# -- HTTP-only refusals ------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_a_body_not_sent_as_application_json_is_refused_with_415(
    platform: Platform, client: httpx.Client, started: int, content_type: str | None
) -> None:
    customer = new_customer()
    headers = {"content-type": content_type} if content_type else {}
    response = client.post(
        "/v1/touchpoints", content=json.dumps(envelope(customer)), headers=headers
    )
    errors = refusal(response, 415)
    assert [(e["index"], e["field"]) for e in errors] == [(None, "content-type")]
    assert "application/json" in errors[0]["message"]
    assert_nothing_recorded(platform, client, started, customer)


def test_application_json_with_a_charset_is_accepted(client: httpx.Client) -> None:
    response = client.post(
        "/v1/touchpoints",
        content=json.dumps(envelope(new_customer())),
        headers={"content-type": "Application/JSON; charset=utf-8"},
    )
    assert response.status_code == 202, response.text


def test_a_duplicate_json_key_is_refused_with_400_naming_the_key(
    platform: Platform, client: httpx.Client, started: int
) -> None:
    customer = new_customer()
    body = json.dumps(envelope(customer)).replace('"type":', '"channel": "web", "type":')
    assert body.count('"channel"') == 2
    response = client.post(
        "/v1/touchpoints", content=body, headers={"content-type": "application/json"}
    )
    errors = refusal(response, 400)
    assert [(e["index"], e["field"]) for e in errors] == [(None, "body")]
    assert "duplicate key 'channel'" in errors[0]["message"]
    assert_nothing_recorded(platform, client, started, customer)


@pytest.mark.parametrize(
    ("placeholder_in", "field", "echoed_id"),
    [
        ("event_id", "event_id", False),
        ("additional-key", "additional.k\\ud800", True),
    ],
)
def test_a_lone_surrogate_in_an_event_id_or_a_key_is_a_422_not_a_500(
    platform: Platform,
    client: httpx.Client,
    started: int,
    placeholder_in: str,
    field: str,
    echoed_id: bool,
) -> None:
    """The refusal quoted the event id and the key path, and that answer could not be
    encoded as UTF-8: a 500 for a client error."""
    customer = new_customer()
    item = (
        envelope(customer, event_id="SURROGATE")
        if placeholder_in == "event_id"
        else envelope(customer, additional={"kSURROGATE": 1})
    )
    body = json.dumps(item).replace("SURROGATE", "\\ud800")
    response = client.post(
        "/v1/touchpoints", content=body, headers={"content-type": "application/json"}
    )
    errors = refusal(response, 422)
    assert [(e["index"], e["field"]) for e in errors] == [(0, field)]
    assert errors[0]["event_id"] == (item["event_id"] if echoed_id else None)
    assert_nothing_recorded(platform, client, started, customer)


def test_the_earliest_instant_is_the_setting(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    platform = make_platform(earliest_occurred_at="2000-01-01T00:00:00Z")
    customer = new_customer()
    with serve(platform).client() as client:
        before = head(platform.records)
        errors = refusal(
            client.post("/v1/touchpoints", json=envelope(customer, "1999-12-31T23:59:59Z")), 422
        )
        assert [e["field"] for e in errors] == ["occurred_at"]
        assert "before 2000-01-01T00:00:00+00:00" in errors[0]["message"]
        assert_nothing_recorded(platform, client, before, customer)
        accepted = client.post("/v1/touchpoints", json=envelope(customer, "2000-01-01T00:00:00Z"))
        assert accepted.status_code == 202, accepted.text


def test_a_phone_without_a_country_code_is_refused_unless_a_region_is_set(
    platform: Platform, client: httpx.Client
) -> None:
    customer = new_customer()
    before = head(platform.records)
    for phone in ("030 1234567", "+999 1234567", "((((("):
        sent = envelope(None, customer={"id": customer, "phone": phone})
        errors = refusal(client.post("/v1/touchpoints", json=sent), 422)
        assert [e["field"] for e in errors] == ["customer.phone"], errors
    assert_nothing_recorded(platform, client, before, customer)


def test_the_phone_region_and_the_identifier_kinds_are_settings(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    platform = make_platform(phone_default_region="DE", identifier_kinds=["member_no"])
    customer = new_customer()
    with serve(platform).client() as client:
        identifiers = {"id": customer, "phone": "030 1234567", "member_no": "M-1"}
        accepted = client.post("/v1/touchpoints", json=envelope(None, customer=identifiers))
        assert accepted.status_code == 202, accepted.text
        recorded = platform.records.touchpoints_of(customer_of(platform, customer))
        assert [t.identifiers for t in recorded] == [
            {"id": customer, "phone": "+49301234567", "member_no": "M-1"}
        ]
        before = head(platform.records)
        undeclared = envelope(None, customer={"id": customer, "ticket": "T-1"})
        errors = refusal(client.post("/v1/touchpoints", json=undeclared), 422)
        assert [e["field"] for e in errors] == ["customer.ticket"]
        assert head(platform.records) == before
        published = client.get("/openapi.json").json()["components"]["schemas"]
        assert "member_no" in published["CustomerIdentifiers"]["properties"]
        assert "ticket" not in published["CustomerIdentifiers"]["properties"]


def test_an_envelope_at_the_nesting_limit_is_served_by_the_timeline(
    platform: Platform, client: httpx.Client
) -> None:
    """What ingest accepts, every read can serve: additional nested 256+ levels deep was
    accepted and the customer's timeline answered 500 forever. At the limit (32 levels
    counted from the envelope) the timeline answers; one level more is refused."""
    customer = new_customer()
    at_limit = envelope(customer, additional=nested(31, leaf="deepest"))
    beyond = envelope(customer, additional=nested(32, leaf="deepest"))

    errors = refusal(client.post("/v1/touchpoints", json=beyond), 422)
    assert [(e["index"], e["field"]) for e in errors] == [(0, "additional" + ".a" * 31)]
    assert "at most 32 levels" in errors[0]["message"]

    accepted = client.post("/v1/touchpoints", json=at_limit)
    assert accepted.status_code == 202, accepted.text
    assert embedded(platform).wait_until_projected()
    timeline = client.get(f"/v1/customers/{customer}/timeline")
    assert timeline.status_code == 200, timeline.text
    [item] = timeline.json()["items"]
    assert item["event_id"] == at_limit["event_id"]
    assert item["additional"] == nested(31, leaf="deepest")
    assert client.get(f"/v1/customers/{customer}").status_code == 200


def test_an_event_id_resent_with_other_content_is_a_409_naming_the_fields_and_nothing_changes(
    platform: Platform, client: httpx.Client
) -> None:
    customer = new_customer()
    item = purchase(customer, "12.34")
    assert client.post("/v1/touchpoints", json=item).status_code == 202
    before = head(platform.records)
    changed = {
        **item,
        "customer": {"id": new_customer()},
        "payload": {**item["payload"], "amount": "99.00"},
    }
    fine = purchase(customer, "1.00")

    answer = client.post("/v1/touchpoints", json=[fine, changed])

    assert answer.status_code == 409, answer.text
    (error,) = answer.json()["errors"]
    assert (error["index"], error["event_id"], error["field"]) == (1, item["event_id"], "event_id")
    assert "customer.id" in error["message"] and "payload.amount" in error["message"]
    assert head(platform.records) == before  # neither item of the request was recorded


def test_an_offset_beyond_what_postgresql_takes_is_recorded_and_read_back(
    platform: Platform, client: httpx.Client
) -> None:
    """ISO 8601 allows offsets up to +-23:59, PostgreSQL only to +-15:59: an envelope at
    +17:09 is recorded and every read of it answers."""
    customer = new_customer()
    item = envelope(customer, "2024-05-01T20:00:00+17:09")
    assert client.post("/v1/touchpoints", json=item).status_code == 202
    assert embedded(platform).wait_until_projected()
    for path in ("", "/timeline", "/journeys"):
        answer = client.get(f"/v1/customers/{customer}{path}")
        assert answer.status_code == 200, (path, answer.text)
    as_of = client.get(f"/v1/customers/{customer}", params={"as_of": "2025-01-01T00:00:00+17:09"})
    assert as_of.status_code == 200, as_of.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/customers/cus_0/split", b'{"absorbed": "\\ud800"}'),
        ("/v1/customers/cus_0/split", b'{"absorbed": "cus_1", "reason": 7, "x": "\\udfff"}'),
        ("/v1/segments", b'{"name": "\\ud800", "rule": {}}'),
    ],
)
def test_a_lone_surrogate_in_a_json_body_is_answered_not_a_500(
    client: httpx.Client, path: str, body: bytes
) -> None:
    """FastAPI's own 404 and 422 echo what was sent; a lone surrogate made them a 500."""
    response = client.post(path, content=body, headers={"content-type": "application/json"})

    assert response.status_code in (404, 409, 422), response.text
    assert response.json()["detail"]  # the answer is well-formed JSON, escaped
