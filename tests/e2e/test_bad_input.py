"""Bad input at the HTTP ingest, over real HTTP: every refusal is a clear 4xx that names
the field and the reason, and nothing reaches the event store."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from infra.bootstrap import Platform
from streams.projector import head

Item = dict[str, Any]


def new_customer() -> str:
    return f"C-{uuid.uuid4().hex[:12]}"


def envelope(customer_id: str, /, **fields: Any) -> Item:
    return {
        "event_id": str(uuid.uuid4()),
        "type": "visit",
        "occurred_at": "2026-03-01T10:00:00+01:00",
        "channel": "store",
        "customer": {"id": customer_id},
        **fields,
    }


def purchase(customer: str, **payload: Any) -> Item:
    return envelope(
        customer,
        type="purchase",
        payload={
            "order_id": f"O-{uuid.uuid4().hex[:8]}",
            "amount": "19.99",
            "currency": "EUR",
            **payload,
        },
    )


def survey(customer: str, metric: str, value: Any, **payload: Any) -> Item:
    return envelope(
        customer,
        type="survey_answered",
        payload={
            "survey_id": "S1",
            "question_id": "Q1",
            "metric": metric,
            "value": value,
            **payload,
        },
    )


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
    assert platform.driver.wait_until_projected()
    for customer in customers:
        assert platform.records.touchpoints_of(customer) == []
        assert client.get(f"/v1/customers/{customer}").status_code == 404
        assert client.get(f"/v1/customers/{customer}/timeline").status_code == 404


@pytest.fixture
def client(platform: Platform, serve: Callable[[Platform], str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve(platform)) as http:
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
    make_platform: Callable[..., Platform], serve: Callable[[Platform], str]
) -> None:
    platform = make_platform(ingest_max_batch=5)
    customer = new_customer()
    before = head(platform.records)
    with httpx.Client(base_url=serve(platform)) as client:
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
    make_platform: Callable[..., Platform], serve: Callable[[Platform], str], chunked: bool
) -> None:
    platform = make_platform(ingest_max_body_bytes=2048)
    customer = new_customer()
    body = json.dumps(envelope(customer, additional={"note": "x" * 4096})).encode()
    assert len(body) > 2048
    before = head(platform.records)
    with httpx.Client(base_url=serve(platform)) as client:
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


BAD_ITEMS: list[tuple[str, Callable[[str], Item], str, list[str]]] = [
    # (case id, item for a customer, the refused field, fragments of the reason)
    ("emotion-as-string", lambda c: envelope(c, emotion="2"), "emotion", ["integer"]),
    ("emotion-as-float", lambda c: envelope(c, emotion=1.5), "emotion", ["integer"]),
    ("emotion-as-bool", lambda c: envelope(c, emotion=True), "emotion", ["integer"]),
    ("emotion-above-range", lambda c: envelope(c, emotion=4), "emotion", ["3"]),
    ("emotion-below-range", lambda c: envelope(c, emotion=-4), "emotion", ["-3"]),
    ("amount-as-list", lambda c: purchase(c, amount=[19, 99]), "payload.amount", ["Decimal"]),
    (
        "amount-3-decimals",
        lambda c: purchase(c, amount="19.999"),
        "payload.amount",
        ["2 decimal places"],
    ),
    ("amount-negative", lambda c: purchase(c, amount="-1.00"), "payload.amount", ["0"]),
    ("currency-lowercase", lambda c: purchase(c, currency="eur"), "payload.currency", ["[A-Z]{3}"]),
    (
        "payload-missing-order",
        lambda c: envelope(c, type="purchase", payload={"amount": "1.00", "currency": "EUR"}),
        "payload.order_id",
        ["required"],
    ),
    (
        "payload-unknown-field",
        lambda c: envelope(c, payload={"colour": "red"}),
        "payload.colour",
        ["not permitted"],
    ),
    ("payload-as-string", lambda c: envelope(c, payload="x"), "payload", ["dictionary"]),
    (
        "unknown-type",
        lambda c: envelope(c, type="teleport"),
        "type",
        ["teleport", "purchase", "visit", "survey_answered"],
    ),
    (
        "customer-without-identifier",
        lambda c: envelope(c, customer={}),
        "customer",
        ["at least one identifier"],
    ),
    (
        "customer-missing",
        lambda c: {k: v for k, v in envelope(c).items() if k != "customer"},
        "customer",
        ["required"],
    ),
    (
        "customer-bad-email",
        lambda c: envelope(c, customer={"email": "not-an-address"}),
        "customer.email",
        ["pattern"],
    ),
    (
        "occurred-at-without-offset",
        lambda c: envelope(c, occurred_at="2026-03-01T10:00:00"),
        "occurred_at",
        ["timezone"],
    ),
    (
        "occurred-at-not-a-time",
        lambda c: envelope(c, occurred_at="yesterday"),
        "occurred_at",
        ["datetime"],
    ),
    ("event-id-as-number", lambda c: envelope(c, event_id=123), "event_id", ["string"]),
    ("event-id-blank", lambda c: envelope(c, event_id="  "), "event_id", ["at least 1"]),
    ("channel-as-number", lambda c: envelope(c, channel=5), "channel", ["string"]),
    (
        "journey-without-step",
        lambda c: envelope(c, journey={"id": "J1", "type": "car"}),
        "journey.step",
        ["required"],
    ),
    ("unknown-envelope-field", lambda c: envelope(c, colour="red"), "colour", ["not permitted"]),
    ("schema-version-2", lambda c: envelope(c, schema=2), "schema", ["1"]),
    ("nps-above-range", lambda c: survey(c, "nps", 11), "payload.value", ["0 to 10", "11"]),
    ("nps-below-range", lambda c: survey(c, "nps", -1), "payload.value", ["0 to 10", "-1"]),
    ("csat-below-range", lambda c: survey(c, "csat", 0), "payload.value", ["1 to 5", "0"]),
    ("ces-above-range", lambda c: survey(c, "ces", 8), "payload.value", ["1 to 7", "8"]),
    ("nps-as-text", lambda c: survey(c, "nps", "ten"), "payload.value", ["integer"]),
    (
        "kano-unknown-answer",
        lambda c: survey(c, "kano_functional", "love", feature="wifi"),
        "payload.value",
        ["like", "dislike"],
    ),
    ("unknown-metric", lambda c: survey(c, "happiness", 5), "payload.metric", ["nps"]),
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
    make_platform: Callable[..., Platform], serve: Callable[[Platform], str]
) -> None:
    platform = make_platform(max_future_skew_seconds=60)
    customer = new_customer()
    ahead = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    before = head(platform.records)
    with httpx.Client(base_url=serve(platform)) as client:
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
    item = purchase(customer, amount="1.001", currency="eur")
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
    assert [e.event_id for e in platform.records.touchpoints_of(customer)] == [
        b["event_id"] for b in batch
    ]


# -- duplicates -----------------------------------------------------------------------


def test_a_valid_duplicate_resend_is_accepted_as_a_duplicate_and_changes_nothing(
    platform: Platform, client: httpx.Client
) -> None:
    customer = new_customer()
    item = purchase(customer, amount="12.34")
    first = client.post("/v1/touchpoints", json=item)
    assert first.status_code == 202, first.text
    assert first.json() == {
        "accepted": 1,
        "duplicates": 0,
        "recorded": [
            {
                "event_id": item["event_id"],
                "customer_id": customer,
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
                "customer_id": customer,
                "outcome": "duplicate",
                "duplicate": True,
            }
        ],
    }
    assert head(platform.records) == before
    assert platform.driver.wait_until_projected()
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
    assert len(platform.records.touchpoints_of(customer)) == 2


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
    make_platform: Callable[..., Platform], serve: Callable[[Platform], str]
) -> None:
    """The recorder gathers concurrent requests into one transaction (``record_linger_ms``):
    one client's bad touchpoint must not make another client's good one fail."""
    platform = make_platform(record_linger_ms=500)
    base = serve(platform)
    good_customer, bad_customer = new_customer(), new_customer()
    good = envelope(good_customer)

    def send_good() -> httpx.Response:
        with httpx.Client(base_url=base, timeout=30) as own:
            return own.post("/v1/touchpoints", json=good)

    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=base, timeout=30) as client:
        good_response = pool.submit(send_good)
        time.sleep(0.1)  # the good request is waiting in the recorder's linger window
        bad_response = client.post(
            "/v1/touchpoints",
            content=with_lone_surrogate(bad_customer),
            headers={"content-type": "application/json"},
        )
        assert good_response.result().status_code == 202, good_response.result().text
        assert bad_response.status_code < 500, bad_response.text
        assert [e.event_id for e in platform.records.touchpoints_of(good_customer)] == [
            good["event_id"]
        ]


NUL_IN_IDENTIFIERS: list[tuple[str, Callable[[str], Item], str]] = [
    # (case id, item for a customer, the refused field)
    ("customer-id", lambda c: envelope(f"{c}\u0000"), "customer.id"),
    ("event-id", lambda c: envelope(c, event_id=f"{uuid.uuid4()}\u0000"), "event_id"),
    (
        "journey-id",
        lambda c: envelope(
            c,
            journey={"id": f"J\u0000{uuid.uuid4().hex}", "type": "car_service", "step": "arrival"},
        ),
        "journey.id",
    ),
    (
        "journey-step",
        lambda c: envelope(
            c,
            journey={"id": f"J-{uuid.uuid4().hex}", "type": "car_service", "step": "arr\u0000ival"},
        ),
        "journey.step",
    ),
    ("order-id", lambda c: purchase(c, order_id="O\u00001"), "payload.order_id"),
    (
        "complaint-id",
        lambda c: envelope(
            c, type="complaint_filed", payload={"complaint_id": "K\u00001", "category": "billing"}
        ),
        "payload.complaint_id",
    ),
    ("survey-id", lambda c: survey(c, "nps", 9, survey_id="S\u00001"), "payload.survey_id"),
]


@pytest.mark.parametrize(
    ("make_item", "field"), [pytest.param(*case[1:], id=case[0]) for case in NUL_IN_IDENTIFIERS]
)
def test_a_nul_character_in_an_identifier_is_refused_naming_the_field(
    platform: Platform,
    client: httpx.Client,
    started: int,
    make_item: Callable[[str], Item],
    field: str,
) -> None:
    """PostgreSQL text cannot hold NUL: such an id cannot be projected, so it is refused."""
    customer = new_customer()
    item = make_item(customer)
    errors = refusal(client.post("/v1/touchpoints", json=item), 422)
    assert [e["field"] for e in errors] == [field], errors
    assert_nothing_recorded(platform, client, started, customer)


@pytest.mark.parametrize(
    "make_item", [pytest.param(case[1], id=case[0]) for case in NUL_IN_IDENTIFIERS]
)
def test_no_accepted_touchpoint_stalls_the_projections_for_everyone(
    platform: Platform, client: httpx.Client, make_item: Callable[[str], Item]
) -> None:
    """Whatever the ingest answers to an odd touchpoint, the touchpoints recorded after it
    still reach the projections."""
    client.post("/v1/touchpoints", json=make_item(new_customer()))
    later = new_customer()
    accepted = client.post("/v1/touchpoints", json=envelope(later))
    assert accepted.status_code == 202, accepted.text
    assert platform.driver.wait_until_projected(timeout=5), (
        f"projection lag stays at {platform.driver.lag()}"
    )
    assert client.get(f"/v1/customers/{later}").status_code == 200
