"""Projectors: domain events from the event store's notification log into read models.

``follow`` applies the next batch of notifications after the store's tracked position,
in one read-model transaction with the new position. ``replay`` rebuilds every
projection from the event store alone into fresh tables and swaps them in atomically.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg2.extensions

from domain.alerting import OperatorAction, Silence
from domain.clock import Tick
from domain.customer import Customer, customer_aggregate_id
from domain.segments import Segment
from projections import maintained
from projections.base import RecordedTouchpoint
from projections.measures import Change, ChangeKind
from projections.store import ReadModelStore, Step
from streams.recorder import CustomerRecords

log = logging.getLogger(__name__)

FOLLOWER = "event-log"

# What the projectors read of the log: touchpoints, the identity changes that move
# touchpoints from one customer's documents to another's, erasures (documents refolded
# without the personal data their keys no longer open), the clock's ticks (measures
# that fell due) and segment definitions.
PROJECTED = (
    Customer.TouchpointRecorded,
    Customer.Merged,
    Customer.Split,
    Customer.Erased,
    Tick.Recorded,
    Segment.Defined,
    Segment.Redefined,
    Segment.Deleted,
    OperatorAction.Taken,
    Silence.Created,
    Silence.Expired,
)
_PROJECTED_TOPICS = tuple(c.__qualname__ for c in PROJECTED)


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
    projected = [n for n in notifications if n.topic.endswith(_PROJECTED_TOPICS)]
    decode = records.decoder(projected)  # the page's keys, in one query
    for notification in projected:
        try:
            events.append(decode(notification))
        except Exception as error:  # a stored event this code cannot read: set it aside
            log.exception("notification %d cannot be decoded; quarantined", notification.id)
            store.quarantine_undecodable(
                conn, notification.originator_id, notification.originator_version, error
            )
    applied = project(records, store, conn, events)
    position = notifications[-1].id
    store.set_position(conn, FOLLOWER, position)
    return Progress(position, len(notifications), applied)


def project(
    records: CustomerRecords,
    store: ReadModelStore,
    conn: psycopg2.extensions.connection,
    events: Iterable[Any],
) -> int:
    """Apply events in log order, in the caller's transaction: touchpoints, a run at a
    time, to the documents of the customer that answers for them (the survivor of their
    stream); every other event after the touchpoints before it (``_apply_one``).
    Returns how many projection updates took effect."""
    applied, touchpoints = 0, []
    for event in events:
        if isinstance(event, Customer.TouchpointRecorded):
            touchpoints.append(event)
            continue
        applied += _apply(store, conn, touchpoints) + _apply_one(records, store, conn, event)
        touchpoints = []
    return applied + _apply(store, conn, touchpoints)


def _apply_one(
    records: CustomerRecords,
    store: ReadModelStore,
    conn: psycopg2.extensions.connection,
    event: Any,
) -> int:
    """A merge or split moves touchpoints between customers' documents (``regroup``); an
    erasure refolds them without personal data (``forget``); a segment definition and a
    clock tick reach the maintained measures."""
    if isinstance(event, Customer.Merged | Customer.Split):
        return regroup(records, store, conn, event)
    if isinstance(event, Customer.Erased):
        return forget(records, store, conn, event)
    rules = store.measure_rules
    if rules is None:
        return 0
    if isinstance(event, Segment.Defined | Segment.Redefined | Segment.Deleted):
        maintained.on_segment(store, conn, event)
        return 0
    if isinstance(event, Silence.Created | Silence.Expired):
        maintained.on_silence(store, conn, event)
        return 0
    if isinstance(event, OperatorAction.Taken):
        maintained.on_operator(store, conn, rules, event)
        return 0
    if isinstance(event, Tick.Recorded):
        return maintained.on_tick(
            store, conn, rules, event.originator_id.hex, event.at, event.inputs_version, event.limit
        )
    return 0


def _apply(
    store: ReadModelStore,
    conn: psycopg2.extensions.connection,
    touchpoints: Sequence[RecordedTouchpoint],
) -> int:
    survivors = store.survivors(conn, {t.customer_id for t in touchpoints})
    events = readdressed(touchpoints, survivors)
    trail: list[Step] = []
    applied = store.apply(conn, events, trail=trail)
    if store.measure_rules is not None:
        maintained.after_events(store, conn, store.measure_rules, events, trail)
    return applied


def readdressed(
    touchpoints: Iterable[RecordedTouchpoint], survivors: Mapping[str, str]
) -> list[RecordedTouchpoint]:
    """The touchpoints as the customer that answers for them holds them: a stream
    merged into another is read as its survivor (the event itself is not changed)."""
    return [
        t
        if survivors.get(t.customer_id, t.customer_id) == t.customer_id
        else _replace(t, customer_id=survivors[t.customer_id])
        for t in touchpoints
    ]


# mypy reads replace's fields from eventsourcing's base event, not the nested subclass.
_replace: Callable[..., RecordedTouchpoint] = dataclasses.replace


def regroup(
    records: CustomerRecords,
    store: ReadModelStore,
    conn: psycopg2.extensions.connection,
    change: Customer.Merged | Customer.Split,
) -> int:
    """A merge or a split: every document holding touchpoints of the streams whose
    survivor changes is folded afresh from the event store under the new survivors.

    Reducers do not depend on the order of events (tests/unit/test_reducers.py), so a
    survivor's documents folded from all its streams equal those it would have had, had
    every touchpoint been sent under one customer from the start; a split folds each side
    from its own streams, as if the merge had never happened. Documents not keyed by the
    customer (a journey, an answer) are refolded from every stream that touched them."""
    moved = change.absorbed if isinstance(change, Customer.Merged) else change.released
    before = store.survivors(conn, [moved, change.customer_id])
    involved = store.members(conn, before.values())
    was = store.survivors(conn, involved)
    store.regroup(conn, moved, change.customer_id if isinstance(change, Customer.Merged) else None)
    now = store.survivors(conn, involved)
    applied = _refold(records, store, conn, involved, was, now, f"{type(change).__name__} {moved}")
    if isinstance(change, Customer.Merged):
        what = Change(ChangeKind.MERGED, moved, None, now[moved])
    else:
        what = Change(ChangeKind.SPLIT, was[moved], was[moved], moved)
    _rederive(store, conn, {*was.values(), *now.values()}, change, [(now[moved], what)])
    return applied


def _rederive(
    store: ReadModelStore,
    conn: psycopg2.extensions.connection,
    customers: set[str],
    event: Customer.Merged | Customer.Split | Customer.Erased,
    extra: list[tuple[str, Change]],
) -> None:
    if store.measure_rules is None:
        return
    cause = {"event": type(event).__name__, "customer_id": event.customer_id}
    maintained.rederive(store, conn, store.measure_rules, customers, event.timestamp, cause, extra)


def forget(
    records: CustomerRecords,
    store: ReadModelStore,
    conn: psycopg2.extensions.connection,
    erased: Customer.Erased,
) -> int:
    """An erasure: every document holding touchpoints of the erased streams is folded
    afresh from the event store, where those streams now read without personal data.
    This process's cached keys of the streams go first: another process destroyed them,
    and a key cached here must not open them once more."""
    records.keyring.forget([customer_aggregate_id(c) for c in erased.streams])
    involved = store.members(conn, [erased.customer_id]) | set(erased.streams)
    survivors = store.survivors(conn, involved)
    applied = _refold(
        records, store, conn, involved, survivors, survivors, f"erasure {erased.customer_id}"
    )
    survivor = survivors.get(erased.customer_id, erased.customer_id)
    what = Change(ChangeKind.ERASED, None, None, None)
    _rederive(store, conn, set(survivors.values()), erased, [(survivor, what)])
    return applied


def _refold(
    records: CustomerRecords,
    store: ReadModelStore,
    conn: psycopg2.extensions.connection,
    involved: set[str],
    was: Mapping[str, str],
    now: dict[str, str],
    why: str,
) -> int:
    """Refold every document holding touchpoints of the ``involved`` streams, under the
    survivors they had (``was``) and have (``now``), with the touchpoints of every other
    stream that shares a document with them."""
    own = records.stored_touchpoints([customer_aggregate_id(c) for c in sorted(involved)])
    documents: dict[str, set[str]] = {}
    for projection in store.projections:
        keys = {projection.key(t) for t in [*readdressed(own, was), *readdressed(own, now)]}
        if keys := {k for k in keys if k is not None}:
            documents[projection.name] = keys
    streams = {t.originator_id.hex for t in own}
    foreign = records.stored_touchpoints(
        [UUID(hex=s) for s in sorted(store.streams_of(conn, documents) - streams)]
    )
    now |= store.survivors(conn, {t.customer_id for t in foreign})
    log.info(
        "%s: refolding %d documents from %d touchpoints",
        why,
        sum(map(len, documents.values())),
        len(own) + len(foreign),
    )
    return store.refold(conn, documents, readdressed([*own, *foreign], now))


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
    rebuild = live.rebuild()
    rebuild.create_tables(fresh=True)
    maintained.create_tables(rebuild, fresh=True)
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
        with conn.cursor() as cur:
            maintained.swap_in(cur, rebuild, live)
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
            held = records.touchpoints_at(store.held_events(conn, name, key))
            events = readdressed(held, store.survivors(conn, {e.customer_id for e in held}))
            error = store.release(conn, projection, key, events)
        if error is None:
            released += 1
            log.info("released quarantined %s document %r (%d events)", name, key, len(events))
        else:
            failing.append((name, key, error))
            log.warning("quarantined %s document %r still fails: %s", name, key, error)
    return Retried(released, failing)
