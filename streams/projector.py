"""Projectors: domain events from the event store's notification log into read models.

``follow`` applies the next batch of notifications after the store's tracked position,
in one read-model transaction with the new position. ``replay`` rebuilds every
projection from the event store alone into fresh tables and swaps them in atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2.extensions

from domain.customer import Customer
from projections.store import REBUILD, ReadModelStore
from streams.recorder import TOUCHPOINT_TOPIC_SUFFIX, CustomerRecords

log = logging.getLogger(__name__)

FOLLOWER = "event-log"


@dataclass(frozen=True)
class Progress:
    """Where a follower stands: its log position, how many notifications it read in the
    step (or run) reported, and how many projection updates took effect."""

    position: int
    read: int
    applied: int


def follow(
    records: CustomerRecords,
    store: ReadModelStore,
    *,
    batch_size: int,
    conn: psycopg2.extensions.connection | None = None,
) -> Progress:
    """Apply the next ``batch_size`` notifications to every projection of ``store``.

    The tracked position is read under a row lock and written back in the same
    transaction as the documents, so concurrent followers (or a replay's swap) queue up
    instead of applying anything twice."""
    if conn is None:
        with store.connection() as own:
            return follow(records, store, batch_size=batch_size, conn=own)
    position = store.lock_position(conn, FOLLOWER)
    notifications = records.recorder.select_notifications(
        start=position, limit=batch_size, inclusive_of_start=False
    )
    if not notifications:
        return Progress(position, 0, 0)
    events = []
    for notification in notifications:
        if not notification.topic.endswith(TOUCHPOINT_TOPIC_SUFFIX):
            continue
        try:
            events.append(records.mapper.to_domain_event(notification))
        except Exception as error:  # a stored event this code cannot read: set it aside
            log.exception("notification %d cannot be decoded; quarantined", notification.id)
            store.quarantine_undecodable(
                conn, notification.originator_id, notification.originator_version, error
            )
    applied = store.apply(conn, [e for e in events if isinstance(e, Customer.TouchpointRecorded)])
    position = notifications[-1].id
    store.set_position(conn, FOLLOWER, position)
    return Progress(position, len(notifications), applied)


def head(records: CustomerRecords) -> int:
    """The newest notification id in the event store (0 when empty)."""
    return records.recorder.max_notification_id() or 0


def replay(
    records: CustomerRecords,
    live: ReadModelStore,
    *,
    batch_size: int,
    on_progress: Callable[[Progress], None] = lambda _: None,
) -> Progress:
    """Rebuild every projection of ``live`` from the event store into fresh tables, then
    swap them in atomically. Live processing goes on meanwhile: the swap holds the live
    follower's position lock, catches the rebuild up to the log's head, and renames.
    ``on_progress`` sees the running totals after each batch."""
    rebuild = ReadModelStore(
        live.pool, live.projections, generation=REBUILD, on_pool_wait=live.on_pool_wait
    )
    rebuild.create_tables(fresh=True)
    total = Progress(0, 0, 0)

    def advance(step: Progress) -> bool:
        nonlocal total
        total = Progress(step.position, total.read + step.read, total.applied + step.applied)
        if step.read:
            on_progress(total)
        return step.read > 0

    while advance(follow(records, rebuild, batch_size=batch_size)):
        pass
    with live.connection() as conn:
        live.lock_position(conn, FOLLOWER)  # the live follower waits from here to commit
        while advance(follow(records, rebuild, batch_size=batch_size, conn=conn)):
            pass
        rebuild.swap_in(conn, live, FOLLOWER)
    log.info("replay swapped in at position %d", total.position)
    return total


@dataclass(frozen=True)
class Retried:
    """What a retry of the quarantine did: documents released, and those still failing
    (projection, key, error)."""

    released: int
    failing: list[tuple[str, str, str]]


def retry_quarantined(records: CustomerRecords, store: ReadModelStore) -> Retried:
    """Re-apply every quarantined document's held events, in order, with the reducers
    as they are now (after a fix), one transaction per document."""
    by_name = {p.name: p for p in store.projections}
    released, failing = 0, []
    for name, key in store.quarantined_documents():
        projection = by_name.get(name)
        if projection is None:
            failing.append((name, key, "no such projection any more"))
            continue
        with store.connection() as conn:
            events = records.touchpoints_at(store.held_events(conn, name, key))
            error = store.release(conn, projection, key, events)
        if error is None:
            released += 1
            log.info("released quarantined %s document %r (%d events)", name, key, len(events))
        else:
            failing.append((name, key, error))
            log.warning("quarantined %s document %r still fails: %s", name, key, error)
    return Retried(released, failing)
