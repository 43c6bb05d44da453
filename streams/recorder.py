"""The recorder: touchpoints in, Customer aggregates saved to the event store, in batches.

``record`` takes a batch from any driver (HTTP ingest, a Kafka consumer, a bulk import)
and saves it in ONE event-store transaction: the event store's insert lock makes writers
serialise, so throughput comes from many events per transaction, not more writers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from domain.customer import Customer, customer_aggregate_id, resolve_customer_id
from domain.touchpoints import TouchpointIn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recorded:
    """The outcome for one touchpoint: which customer it landed on, and whether it was
    already recorded before (a duplicate ``event_id`` changes nothing); None when not
    known yet (cluster mode answers once Kafka has the touchpoint)."""

    event_id: str
    customer_id: str
    duplicate: bool | None


class CustomerRecords(Application[UUID]):
    """The event-sourced application holding every Customer aggregate."""

    name = "peakend"

    def record(self, touchpoints: Sequence[TouchpointIn], *, attempts: int = 3) -> list[Recorded]:
        """Record a batch of touchpoints in one transaction; idempotent by ``event_id``.

        Another writer saving the same customer at the same time makes the insert fail
        on the stream's version; the batch is then retried on fresh aggregates.
        """
        for attempt in range(1, attempts + 1):
            customers: dict[UUID, Customer] = {}
            try:
                outcomes = [self._record_one(customers, tp) for tp in touchpoints]
                self.save(*customers.values())
            except Exception as error:
                self._forget(customers)
                if isinstance(error, IntegrityError) and attempt < attempts:
                    log.warning("concurrent write to one of %d customers; retry %d",
                                len(customers), attempt)
                    continue
                raise
            return outcomes
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _forget(self, customers: dict[UUID, Customer]) -> None:
        """Drop aggregates changed in memory but not saved, so none is reused from the
        cache."""
        cache = self.repository.cache
        if cache is None:
            return
        for aggregate_id in customers:
            with contextlib.suppress(KeyError):  # not cached: nothing to forget
                cache.get(aggregate_id, evict=True)

    def _record_one(self, customers: dict[UUID, Customer], touchpoint: TouchpointIn) -> Recorded:
        customer_id = resolve_customer_id(touchpoint.customer.present())
        aggregate_id = customer_aggregate_id(customer_id)
        customer = customers.get(aggregate_id)
        if customer is None:
            customer = customers[aggregate_id] = self._customer(customer_id)
        recorded = customer.record_touchpoint(touchpoint)
        return Recorded(touchpoint.event_id, customer_id, duplicate=not recorded)

    def _customer(self, customer_id: str) -> Customer:
        try:
            customer: Customer = self.repository.get(customer_aggregate_id(customer_id))
        except AggregateNotFoundError:
            customer = Customer.register(customer_id)
        return customer

    def touchpoints_of(self, customer_id: str) -> list[Customer.TouchpointRecorded]:
        """Every touchpoint recorded for a customer, straight from the event store, in
        event-time order (ties: by ``event_id``, as in the projections)."""
        events: Iterable[Any] = self.events.get(customer_aggregate_id(customer_id))
        recorded = [e for e in events if isinstance(e, Customer.TouchpointRecorded)]
        return sorted(recorded, key=_event_time_order)


def _event_time_order(event: Customer.TouchpointRecorded) -> tuple[datetime, str]:
    return event.occurred_at, event.event_id
