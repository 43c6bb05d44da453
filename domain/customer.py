"""The Customer aggregate: the system of record of every touchpoint a customer had.

A customer is known by a *resolved* customer id (see ``resolve_customer_id``); the
aggregate's UUID is derived from it, so recording needs no lookup table and the same
customer always lands on the same stream. Later, identity merges map several customer
ids to one survivor; raw identifiers (e-mail, phone) never name a stream.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from domain.touchpoints import IDENTIFIER_KINDS, Touchpoint

# Fixed namespace: changing it would re-key every stream in every store.
CUSTOMER_NAMESPACE = uuid.UUID("6f1d8a52-5c2e-4a7e-9a43-7e0b7a1c2d11")


def resolve_customer_id(identifiers: dict[str, str]) -> str:
    """The customer id a touchpoint belongs to.

    The source's own ``id`` when it sends one; otherwise an opaque id derived from the
    strongest identifier it sends (in the order of ``IDENTIFIER_KINDS``, then the kinds
    declared in settings in alphabetical order), so the same e-mail address always
    resolves to the same customer without storing it in an id. Declared kinds go by name,
    not by their order in the setting: reordering a setting must not move customers.
    """
    if "id" in identifiers:
        return identifiers["id"]
    declared = sorted(kind for kind in identifiers if kind not in IDENTIFIER_KINDS)
    for kind in (*IDENTIFIER_KINDS, *declared):
        if kind in identifiers:
            digest = uuid.uuid5(CUSTOMER_NAMESPACE, f"{kind}:{identifiers[kind]}")
            return f"cus_{digest.hex}"
    raise ValueError("a touchpoint names its customer by at least one identifier")


def customer_aggregate_id(customer_id: str) -> uuid.UUID:
    """The event-store stream of a customer id."""
    return uuid.uuid5(CUSTOMER_NAMESPACE, f"customer:{customer_id}")


class Customer(Aggregate):
    """One customer and every touchpoint recorded for them, in arrival order.

    Recording is idempotent by the touchpoint's ``event_id``: a redelivered touchpoint
    triggers no event. Event-time order is the projections' business: the stream keeps
    the order of arrival, each event carries its own ``occurred_at``.
    """

    # Events are versioned (eventsourcing's ``class_version``): a stored event is never
    # rewritten; one stored under an older version is brought up to date as it is read,
    # by the event class's ``upcast_vN_vN+1`` static methods, applied in turn by the
    # mapper. Version 1 is the schema before versions were declared (the mapper reads a
    # state without ``class_version`` as version 1); tests/fixtures holds such events.

    class Registered(Aggregate.Created):
        # Unchanged since the first stored events; declared so that the next change
        # starts from a stated version with its upcaster, not from an implicit one.
        class_version = 1

        customer_id: str

    class TouchpointRecorded(Aggregate.Event):
        """A touchpoint was recorded for this customer (payload validated).

        v2 (was v1): ``envelope_schema``, the version of the envelope the touchpoint
        came in, is recorded, so that a later envelope version can change the meaning
        or shape of a field and every stored touchpoint still says which it was told in.
        """

        class_version = 2

        customer_id: str
        event_id: str
        type: str
        occurred_at: datetime
        channel: str
        identifiers: dict[str, str]
        journey: dict[str, str] | None
        emotion: int | None
        payload: dict[str, Any]
        additional: dict[str, Any]
        envelope_schema: int

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            # Every v1 event came in envelope schema 1: the only one ingest accepted then.
            state["envelope_schema"] = 1

        def apply(self, aggregate: Customer) -> None:
            aggregate.touchpoint_ids.add(self.event_id)

    def __init__(self, customer_id: str) -> None:
        self.customer_id = customer_id
        self.touchpoint_ids: set[str] = set()

    @classmethod
    def register(cls, customer_id: str) -> Customer:
        return cls._create(
            cls.Registered, id=customer_aggregate_id(customer_id), customer_id=customer_id
        )

    def record_touchpoint(self, touchpoint: Touchpoint) -> bool:
        """Record a touchpoint; return False (and record nothing) if it is a duplicate."""
        if touchpoint.event_id in self.touchpoint_ids:
            return False
        # Copies: the event must not change if the caller's value is mutated afterwards.
        self.trigger_event(
            self.TouchpointRecorded,
            customer_id=self.customer_id,
            event_id=touchpoint.event_id,
            type=touchpoint.type,
            occurred_at=touchpoint.occurred_at,
            channel=touchpoint.channel,
            identifiers=dict(touchpoint.identifiers),
            journey=dict(touchpoint.journey) if touchpoint.journey is not None else None,
            emotion=touchpoint.emotion,
            payload=dict(touchpoint.payload),
            additional=dict(touchpoint.additional),
            envelope_schema=touchpoint.envelope_schema,
        )
        return True
