"""One builder of touchpoint envelopes for every test layer (cosmicpython's random_refs).

Each builder returns a raw envelope (a JSON-ready dict, as a touchpoint system sends it)
that is valid by default; keyword arguments replace or add top-level fields. Ids are
random unless given, so tests never share state.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

Envelope = dict[str, Any]

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def new_id(prefix: str) -> str:
    """A random id with a readable prefix (``C-1a2b3c4d5e6f``)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def envelope(
    customer: str | dict[str, str] | None = None,
    at: datetime | str = T0,
    /,
    **fields: Any,
) -> Envelope:
    """A valid ``visit`` by ``customer`` (a customer id, or an identifiers object) at
    ``at``; ``fields`` replace or add top-level fields (``type``, ``payload``...)."""
    identifiers = {"id": customer} if isinstance(customer, str) else customer
    raw: Envelope = {
        "event_id": new_id("tp"),
        "type": "visit",
        "occurred_at": at if isinstance(at, str) else at.isoformat(),
        "channel": "store",
        "customer": identifiers or {"id": new_id("C")},
    }
    raw.update(fields)
    return raw


def purchase(
    customer: str | dict[str, str] | None = None,
    amount: object = "10.00",
    at: datetime | str = T0,
    /,
    *,
    currency: str = "EUR",
    order_id: str | None = None,
    **fields: Any,
) -> Envelope:
    """A valid ``purchase`` of ``amount`` in ``currency`` (a new order unless named).

    ``amount`` is a decimal string; any other JSON value makes the refusals to test
    (``19.99``, ``[19, 99]``)."""
    payload = {"order_id": order_id or new_id("O"), "amount": amount, "currency": currency}
    return envelope(customer, at, type="purchase", payload=payload, **fields)


def survey_answer(
    customer: str | dict[str, str] | None = None,
    metric: str = "nps",
    value: Any = 9,
    at: datetime | str = T0,
    /,
    **payload: Any,
) -> Envelope:
    """A valid ``survey_answered`` for ``metric`` with ``value``; ``payload`` adds or
    replaces payload fields (``question_id``, ``attribute``, ``feature``...)."""
    body = {"survey_id": "S1", "question_id": f"Q-{metric}", "metric": metric, "value": value}
    body.update(payload)
    return envelope(customer, at, type="survey_answered", payload=body)


def complaint(
    customer: str | dict[str, str] | None = None,
    step: str = "filed",
    at: datetime | str = T0,
    /,
    *,
    complaint_id: str = "K1",
    **payload: Any,
) -> Envelope:
    """A valid complaint step (``filed``, ``acknowledged``, ``resolved``, ``followed_up``)."""
    body: dict[str, Any] = {"complaint_id": complaint_id}
    if step == "filed":
        body["category"] = "billing"
    body.update(payload)
    return envelope(customer, at, type=f"complaint_{step}", payload=body)


def with_payload(raw: Envelope, **fields: Any) -> Envelope:
    """``raw`` with ``fields`` added to (or replacing fields of) its payload."""
    raw["payload"] = {**raw.get("payload", {}), **fields}
    return raw


def nested(depth: int, leaf: Any = None) -> Any:
    """A value of ``depth`` levels of objects ({"a": {"a": ... leaf}}); 0 is the leaf."""
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value
