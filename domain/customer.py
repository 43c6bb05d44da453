"""The Customer aggregate: the system of record of every touchpoint a customer had.

A customer stream is named by an opaque random customer id (``domain.identity``), never
by an identifier: the identity index (identifier -> stream, stream -> survivor) decides
which stream a touchpoint goes to, and every decision it takes (an identifier linked, two
customers merged or split, a merge refused) is an event on the streams involved, so the
index can be rebuilt from the event store alone.
"""

from __future__ import annotations

import functools
import uuid
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from domain.touchpoints import Touchpoint

# Fixed namespace: changing it would re-key every stream in every store.
CUSTOMER_NAMESPACE = uuid.UUID("6f1d8a52-5c2e-4a7e-9a43-7e0b7a1c2d11")


class IdentityError(ValueError):
    """A merge or split the customer's state does not allow."""


@functools.lru_cache(maxsize=100_000)  # a hash per touchpoint adds up: ~10% of recording
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
        """A customer stream was started (for a touchpoint no known identifier named).

        v2 (was v1): ``identified``: whether the stream's identifiers are linked by
        ``IdentifiersLinked`` events. Streams registered before the identity index (v1)
        were named after an identifier and link none: the index links the identifiers
        their touchpoints carry when it is rebuilt.
        """

        class_version = 2

        customer_id: str
        identified: bool

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["identified"] = False

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

    class IdentifiersLinked(Aggregate.Event):
        """Identifiers were linked to this stream: the touchpoint ``event_id`` carried
        them first, at ``linked_at`` (its event time)."""

        class_version = 1

        customer_id: str
        event_id: str
        linked_at: datetime
        identifiers: dict[str, str]

    class Merged(Aggregate.Event):
        """Customer ``absorbed`` (and every stream merged into it) was merged into this
        one: touchpoint ``event_id`` carried identifiers of both (``identifiers``)."""

        class_version = 1

        customer_id: str
        absorbed: str
        event_id: str
        merged_at: datetime
        identifiers: dict[str, str]

        def apply(self, aggregate: Customer) -> None:
            aggregate.absorbed.add(self.absorbed)

    class Absorbed(Aggregate.Event):
        """This customer was merged into ``survivor``, which answers for it from now on."""

        class_version = 1

        customer_id: str
        survivor: str
        event_id: str
        merged_at: datetime

        def apply(self, aggregate: Customer) -> None:
            aggregate.merged_into = self.survivor

    class Split(Aggregate.Event):
        """Customer ``released``, merged into this one, was split off again (a wrong
        merge undone): it and the streams merged into it are a customer of their own,
        and the two are never merged again automatically."""

        class_version = 1

        customer_id: str
        released: str
        split_at: datetime
        reason: str

        def apply(self, aggregate: Customer) -> None:
            aggregate.absorbed.discard(self.released)

    class Released(Aggregate.Event):
        """This customer was split off ``survivor``: it answers for itself again."""

        class_version = 1

        customer_id: str
        survivor: str
        split_at: datetime

        def apply(self, aggregate: Customer) -> None:
            aggregate.merged_into = None

    class IdentityRefused(Aggregate.Event):
        """A guard rail refused a merge or a link that touchpoint ``event_id`` asked for
        (recorded on this customer all the same): ``rule`` and ``reason`` say which and
        why, ``customers`` are the customers involved."""

        class_version = 1

        customer_id: str
        event_id: str
        refused_at: datetime
        rule: str
        reason: str
        identifiers: dict[str, str]
        customers: list[str]

    class Erased(Aggregate.Event):
        """The personal data of this customer and of every customer merged into it
        (``streams``, this one included) was erased at the customer's request (right to
        be forgotten): their encryption keys were destroyed with this event, so what
        their events held in personal fields can no longer be read, and the identity
        index forgot their identifiers. It holds no personal data itself; the anonymous
        facts (types, times, amounts, scores) stay, and so do the aggregates."""

        class_version = 1

        customer_id: str
        streams: list[str]
        erased_at: datetime

        def apply(self, aggregate: Customer) -> None:
            aggregate.erased_at = self.erased_at

    def __init__(self, customer_id: str, identified: bool) -> None:
        self.customer_id = customer_id
        self.identified = identified
        self.touchpoint_ids: set[str] = set()
        self.merged_into: str | None = None
        self.absorbed: set[str] = set()
        self.erased_at: datetime | None = None

    @classmethod
    def register(cls, customer_id: str) -> Customer:
        return cls._create(
            cls.Registered,
            id=customer_aggregate_id(customer_id),
            customer_id=customer_id,
            identified=True,
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

    def link(self, identifiers: dict[str, str], *, event_id: str, at: datetime) -> None:
        """Link identifiers that touchpoint ``event_id`` carried first."""
        self.trigger_event(
            self.IdentifiersLinked,
            customer_id=self.customer_id,
            event_id=event_id,
            linked_at=at,
            identifiers=dict(identifiers),
        )

    def merge(
        self, absorbed: Customer, *, event_id: str, at: datetime, identifiers: dict[str, str]
    ) -> None:
        """Merge ``absorbed`` into this customer: an event on each stream."""
        if absorbed.customer_id == self.customer_id:
            raise IdentityError(f"customer {self.customer_id} cannot be merged into itself")
        if self.merged_into is not None or absorbed.merged_into is not None:
            merged = self if self.merged_into is not None else absorbed
            raise IdentityError(
                f"customer {merged.customer_id} is merged into {merged.merged_into}; "
                "merges join survivors"
            )
        self.trigger_event(
            self.Merged,
            customer_id=self.customer_id,
            absorbed=absorbed.customer_id,
            event_id=event_id,
            merged_at=at,
            identifiers=dict(identifiers),
        )
        absorbed.trigger_event(
            self.Absorbed,
            customer_id=absorbed.customer_id,
            survivor=self.customer_id,
            event_id=event_id,
            merged_at=at,
        )

    def split(self, released: Customer, *, at: datetime, reason: str) -> None:
        """Undo the merge of ``released`` into this customer."""
        if released.customer_id not in self.absorbed or released.merged_into != self.customer_id:
            raise IdentityError(
                f"customer {released.customer_id} was not merged into {self.customer_id}"
            )
        self.trigger_event(
            self.Split,
            customer_id=self.customer_id,
            released=released.customer_id,
            split_at=at,
            reason=reason,
        )
        released.trigger_event(
            self.Released, customer_id=released.customer_id, survivor=self.customer_id, split_at=at
        )

    def erase(self, streams: list[str], *, at: datetime) -> None:
        """Erase this customer's personal data, and that of the customers merged into it
        (``streams``, this one included)."""
        if self.merged_into is not None:
            raise IdentityError(
                f"customer {self.customer_id} is merged into {self.merged_into}: erase that one"
            )
        if self.customer_id not in streams:
            raise IdentityError(f"the streams erased must include {self.customer_id} itself")
        self.trigger_event(
            self.Erased, customer_id=self.customer_id, streams=sorted(streams), erased_at=at
        )

    def refuse(
        self,
        *,
        event_id: str,
        at: datetime,
        rule: str,
        reason: str,
        identifiers: dict[str, str],
        customers: list[str],
    ) -> None:
        """Record that a guard rail refused what touchpoint ``event_id`` asked for."""
        self.trigger_event(
            self.IdentityRefused,
            customer_id=self.customer_id,
            event_id=event_id,
            refused_at=at,
            rule=rule,
            reason=reason,
            identifiers=dict(identifiers),
            customers=list(customers),
        )
