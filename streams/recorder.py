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

from eventsourcing.application import Application, project_aggregate
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.sql import SQL, Identifier

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


class ColumnarRecorder(PostgresApplicationRecorder):
    """eventsourcing's PostgreSQL recorder (same table, same lock, same notifications),
    inserting a batch as four column arrays that psycopg sends in binary, instead of one
    array of a composite type formatted as text in Python: the recorder's hot path."""

    def __init__(self, datastore: Any, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.insert_events_statement = SQL(
            "INSERT INTO {}.{} (originator_id, originator_version, topic, state)"
            " SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[])"
            " RETURNING notification_id"
        ).format(Identifier(datastore.schema), Identifier(events_table_name))

    def _insert_stored_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **_: Any
    ) -> None:
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(
            self.insert_events_statement,
            (
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
        )


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
                customer_ids = [resolve_customer_id(tp.customer.present()) for tp in touchpoints]
                customers.update(self._customers(set(customer_ids)))
                outcomes = [
                    Recorded(
                        tp.event_id,
                        customer_id,
                        duplicate=not customers[
                            customer_aggregate_id(customer_id)
                        ].record_touchpoint(tp),
                    )
                    for tp, customer_id in zip(touchpoints, customer_ids, strict=True)
                ]
                self.save(*customers.values())
            except Exception as error:
                self._forget(customers)
                if isinstance(error, IntegrityError) and attempt < attempts:
                    log.warning(
                        "concurrent write to one of %d customers; retry %d", len(customers), attempt
                    )
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

    def _customers(self, customer_ids: set[str]) -> dict[UUID, Customer]:
        """The batch's customers: from the aggregate cache, else all the others' events in
        ONE query (not a query per customer), else newly registered."""
        wanted = {customer_aggregate_id(c): c for c in customer_ids}
        found: dict[UUID, Customer] = {}
        cache = self.repository.cache
        for aggregate_id in wanted:
            if cache is not None:
                with contextlib.suppress(KeyError):
                    cached = cache.get(aggregate_id)
                    if isinstance(cached, Customer):
                        found[aggregate_id] = cached
        missing = [aggregate_id for aggregate_id in wanted if aggregate_id not in found]
        for aggregate_id, customer in self._reconstruct(missing).items():
            found[aggregate_id] = customer
            if cache is not None:
                cache.put(aggregate_id, customer)
        for aggregate_id in wanted.keys() - found.keys():
            found[aggregate_id] = Customer.register(wanted[aggregate_id])
        return found

    def _reconstruct(self, aggregate_ids: list[UUID]) -> dict[UUID, Customer]:
        if not aggregate_ids:
            return {}
        recorder = self.recorder
        if not isinstance(recorder, PostgresApplicationRecorder):
            raise TypeError("the customer records live in PostgreSQL (ColumnarRecorder)")
        # eventsourcing reads one stream per query; this reads them all at once from its
        # table, in stream-version order, and folds them as its repository would.
        query = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {}.{}"
            " WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
        ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
        streams: dict[UUID, list[Any]] = {}
        with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(query, (aggregate_ids,))
            for row in cursor.fetchall():
                streams.setdefault(row["originator_id"], []).append(
                    self.mapper.to_domain_event(
                        StoredEvent(
                            row["originator_id"],
                            row["originator_version"],
                            row["topic"],
                            bytes(row["state"]),
                        )
                    )
                )
        rebuilt: dict[UUID, Any] = {
            i: project_aggregate(None, events) for i, events in streams.items()
        }
        return {i: c for i, c in rebuilt.items() if isinstance(c, Customer)}

    def touchpoints_of(self, customer_id: str) -> list[Customer.TouchpointRecorded]:
        """Every touchpoint recorded for a customer, straight from the event store, in
        event-time order (ties: by ``event_id``, as in the projections)."""
        events: Iterable[Any] = self.events.get(customer_aggregate_id(customer_id))
        recorded = [e for e in events if isinstance(e, Customer.TouchpointRecorded)]
        return sorted(recorded, key=_event_time_order)


def _event_time_order(event: Customer.TouchpointRecorded) -> tuple[datetime, str]:
    return event.occurred_at, event.event_id
