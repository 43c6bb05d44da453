"""The recorder: touchpoints in, Customer aggregates saved to the event store, in batches.

``record`` takes a batch from any driver (HTTP ingest, a Kafka consumer, a bulk import)
and saves it in ONE event-store transaction: the event store's insert lock makes writers
serialise, so throughput comes from many events per transaction, not more writers.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, project_aggregate
from eventsourcing.domain import DomainEventProtocol, MutableOrImmutableAggregate
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    Mapper,
    OperationalError,
    Recording,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier

from domain.alerting import Action, OperatorAction, Silence
from domain.clock import Tick
from domain.customer import Customer, IdentityError, customer_aggregate_id
from domain.idempotency import (
    Content,
    Outcome,
    Recorded,
    content,
    differing_fields,
    fingerprint,
)
from domain.identity import Arrival, IdentityRules, Link, Merge, Refusal, Resolution, resolve
from domain.segments import Segment, segment_aggregate_id
from domain.touchpoints import Touchpoint, TouchpointIn, touchpoint_of
from streams import sealing
from streams.identity import IdentityIndex
from streams.sealing import Keyring, Sealing, SealingMapper

log = logging.getLogger(__name__)

# How a touchpoint event's topic ends in the notification log (its class's qualified name).
TOUCHPOINT_TOPIC_SUFFIX = Customer.TouchpointRecorded.__qualname__


@dataclass(frozen=True)
class _Known:
    """A touchpoint already in the store, as the touchpoint index has it."""

    fingerprint: bytes
    customer_id: str
    originator_id: UUID
    originator_version: int


class ColumnarRecorder(PostgresApplicationRecorder):
    """eventsourcing's PostgreSQL recorder (same table, same lock, same notifications),
    inserting a batch as four column arrays that psycopg sends in binary, instead of one
    array of a composite type formatted as text in Python: the recorder's hot path.

    It keeps the *touchpoint index* beside the events, written in the same transaction:
    one row per touchpoint, keyed by ``event_id`` (unique across the whole store, so a
    concurrent recording of the same event id fails the whole transaction and is retried),
    with its content fingerprint, its place in the store and its event time (the
    timeline is paged by event time from it).

    And the *keyring* (``streams.sealing``): a stream's first data key is inserted in the
    same transaction as the events it seals (``customer_keys``)."""

    index_table = "touchpoint_index"

    def __init__(self, datastore: Any, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.insert_events_statement = SQL(
            "INSERT INTO {}.{} (originator_id, originator_version, topic, state)"
            " SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[])"
            " RETURNING notification_id"
        ).format(Identifier(datastore.schema), Identifier(events_table_name))
        self.index = Identifier(datastore.schema, self.index_table)
        self.insert_index_statement = SQL(
            "INSERT INTO {} (event_id, fingerprint, customer_id, originator_id,"
            " originator_version, occurred_at) SELECT * FROM unnest("
            "%b::text[], %b::bytea[], %b::text[], %b::uuid[], %b::bigint[], %b::timestamptz[])"
        ).format(self.index)
        self.sql_create_statements.extend(
            [
                SQL(
                    "CREATE TABLE IF NOT EXISTS {} (event_id text PRIMARY KEY,"
                    " fingerprint bytea NOT NULL, customer_id text NOT NULL,"
                    " originator_id uuid NOT NULL, originator_version bigint NOT NULL,"
                    " occurred_at timestamptz NOT NULL)"
                ).format(self.index),
                SQL(
                    "CREATE INDEX IF NOT EXISTS {} ON {}"
                    ' (originator_id, occurred_at, event_id COLLATE "C")'
                ).format(Identifier(f"{self.index_table}_timeline_idx"), self.index),
            ]
        )
        self.identity = IdentityIndex(
            datastore.schema, datastore.get_connection, events_table=events_table_name
        )
        self.sql_create_statements.extend(self.identity.create_statements())
        self.sql_create_statements.extend(sealing.create_statements(datastore.schema))
        self.insert_keys_statement = sealing.insert_statement(datastore.schema)
        self.delete_keys_statement = sealing.delete_statement(datastore.schema)
        # The relay keys each stored event by the survivor of its stream (``customers_of``).
        self.sql_create_statements.append(
            SQL(
                "CREATE INDEX IF NOT EXISTS identity_customer_stream_idx ON {} (originator_id)"
            ).format(self.identity.customers)
        )

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """eventsourcing's insert, in one transaction, its statements sent in turn rather
        than as one psycopg pipeline: the pipeline, with a projector reading the log at the
        same time, now and then never completed its sync (the server waiting to read, the
        client waiting for results: the demo's history hung within two batches out of
        three on psycopg 3.3.9). A batch's few statements cost a round trip each."""
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            self._insert_events(curs, stored_events, **kwargs)
            if not stored_events:
                return None
            self._insert_stored_events(curs, stored_events, **kwargs)
            return self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)

    def _insert_stored_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        self._lock_table(curs)
        self._notify_channel(curs)
        # The index first: the caller fetches notification ids from the last statement.
        indexed: Sequence[_Indexed] = kwargs.get("touchpoint_index", ())
        # Each may fail (a concurrent writer): none is a prepared statement, since psycopg
        # would take one prepared after a failure in this pipeline as prepared, and the
        # server never saw it (``IdentityIndex.write``).
        if indexed:
            curs.execute(
                self.insert_index_statement,
                tuple(map(list, zip(*indexed, strict=True))),
                prepare=False,
            )
        if identity_events := kwargs.get("identity_events"):
            self.identity.write(curs, identity_events)
            self.identity.check_limits(curs, identity_events, kwargs["identity_rules"])
        if erased := [customer_aggregate_id(s) for s in kwargs.get("erased_streams", ())]:
            # Crypto-shredding: the keys go with the event that says so, or not at all.
            curs.execute(self.delete_keys_statement, (erased,), prepare=False)
        if keys := kwargs.get("customer_keys"):  # a concurrent writer's key: unique violation
            curs.execute(
                self.insert_keys_statement,
                ([stream for stream, _ in keys], [wrapped for _, wrapped in keys]),
                prepare=False,
            )
        curs.execute(
            self.insert_events_statement,
            (
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
            prepare=False,
        )


class SegmentConflict(Exception):
    """Two requests changed one segment at once: the later must read it again."""


_Indexed = tuple[str, bytes, str, UUID, int, datetime]


class CustomerRecords(Application[UUID]):
    """The event-sourced application holding every Customer aggregate."""

    name = "peakend"

    def __init__(
        self,
        env: dict[str, str] | None = None,
        rules: IdentityRules | None = None,
        sealing: Sealing | None = None,
        identity_secret: bytes | None = None,
    ):
        """``sealing``: seal personal fields per customer (``streams.sealing``); the
        composition root always gives it. Without it events are stored as eventsourcing's
        mapper stores them (an in-memory store for tests of the event schema).
        ``identity_secret``: what the identity index digests identifiers under (the
        ``identity_secret`` setting); without it (an in-memory store) nothing resolves."""
        self.sealing = sealing
        super().__init__(env=env)
        self.identity_rules = rules or IdentityRules()
        if identity_secret is not None:
            self.identity.configure(secret=identity_secret, decoder=self.decoder)
        if isinstance(self.mapper, SealingMapper):
            datastore = self._columnar().datastore
            self.mapper.keyring.attach(datastore.schema, datastore.get_connection)

    def construct_mapper(self) -> Mapper[UUID]:
        base = super().construct_mapper()
        return base if self.sealing is None else self.sealing.mapper(base)

    @property
    def keyring(self) -> Keyring:
        """The customers' data keys (``Keyring.destroy`` erases a customer's)."""
        if not isinstance(self.mapper, SealingMapper):
            raise TypeError("these customer records seal nothing (built without sealing)")
        return self.mapper.keyring

    def save(
        self,
        *objs: MutableOrImmutableAggregate[UUID] | DomainEventProtocol[UUID] | None,
        **kwargs: Any,
    ) -> list[Recording[UUID]]:
        """eventsourcing's save, with the data keys of the streams saved prepared first
        (one query), and those made for new streams inserted in the same transaction."""
        mapper = self.mapper
        if not isinstance(mapper, SealingMapper):
            return super().save(*objs, **kwargs)
        streams: set[UUID] = set()
        for obj in objs:
            pending = getattr(obj, "pending_events", None)
            if isinstance(obj, Tick | Segment | OperatorAction | Silence):
                continue  # a clock reading, a rule, an operator's act: nothing personal
            if pending:
                streams.add(obj.id)  # type: ignore[union-attr]  # an aggregate
            elif pending is None and obj is not None:
                streams.add(obj.originator_id)  # type: ignore[union-attr]  # an event
        with mapper.writing(streams) as new_keys:
            return super().save(*objs, customer_keys=new_keys, **kwargs)

    def segment(self, name: str) -> Segment | None:
        """The segment as stored now (None: never defined), read afresh: another process
        may have changed it since this one cached it."""
        try:
            # An explicit version reads the stream, not this process's aggregate cache.
            found: Segment = self.repository.get(segment_aggregate_id(name), version=2**62)
        except AggregateNotFoundError:
            return None
        return found

    def save_segment(self, segment: Segment) -> None:
        """Store a segment's new events; ``SegmentConflict`` when another request changed
        it meanwhile (the caller reads it again and retries)."""
        try:
            self.save(segment)
        except IntegrityError as conflict:
            raise SegmentConflict(segment.name) from conflict

    def act_on_alert(
        self, alert_id: str, customer_id: str, action: Action, by: str, note: str | None
    ) -> str:
        """Record an operator's action on an alert (``domain.alerting``); returns its id."""
        taken = OperatorAction.take(alert_id, customer_id, action, by, datetime.now(UTC), note)
        self.save(taken)
        return taken.id.hex

    def silence(self, silence_id: UUID) -> Silence | None:
        """The silence as stored now (None: none has this id)."""
        try:
            found: Silence = self.repository.get(silence_id, version=2**62)
        except AggregateNotFoundError:
            return None
        return found

    def tick_id(self, at: datetime, inputs_version: int, limit: int) -> str:
        """Record a clock reading (``domain.clock.Tick``); returns its id (hex)."""
        reading = Tick.record(at, inputs_version, limit)
        self.save(reading)
        return reading.id.hex

    def decoder(self, stored_events: Sequence[StoredEvent]) -> Callable[[StoredEvent], Any]:
        """Decode the events of one batch: their streams' keys are loaded first, in one
        query (``streams.sealing.decoder``)."""
        return sealing.decoder(self.mapper, stored_events)

    @property
    def identity(self) -> IdentityIndex:
        return self._columnar().identity

    def record(
        self,
        touchpoints: Sequence[TouchpointIn],
        *,
        units: Sequence[int] | None = None,
        attempts: int = 10,
    ) -> list[Recorded]:
        """Record a batch of touchpoints in one transaction; idempotent by ``event_id``
        across the whole store, each placed on its customer by the identity index.

        ``units`` splits the batch into consecutive all-or-nothing requests (their sizes;
        default: each touchpoint alone): a unit holding a conflict records nothing.
        Another writer saving the same customer, event id or identifier at the same time
        makes the insert fail; the batch is then retried on fresh aggregates and a fresh
        index."""
        sizes = list(units) if units is not None else [1] * len(touchpoints)
        if sum(sizes) != len(touchpoints):
            raise ValueError(f"units: sizes sum to {sum(sizes)}, not {len(touchpoints)}")
        return self._retrying(
            lambda customers: self._judge(touchpoints, sizes, customers), attempts
        )

    def split(self, survivor: str, released: str, *, reason: str, attempts: int = 10) -> None:
        """Undo the merge of ``released`` into ``survivor`` (a wrong merge): from now on
        each answers for itself and its own streams, and the two are kept apart.
        Raises ``IdentityError`` when ``released`` is not merged into ``survivor``."""

        if self.identity.parents(survivor).get(released) != survivor:
            raise IdentityError(f"customer {released} was not merged into {survivor}")

        def decide(customers: dict[UUID, Customer]) -> tuple[list[Recorded], list[_Indexed]]:
            customers.update(self._customers({survivor, released}))
            customers[customer_aggregate_id(survivor)].split(
                customers[customer_aggregate_id(released)],
                at=datetime.now(UTC),
                reason=reason,
            )
            return [], []

        self._retrying(decide, attempts)

    def erase(self, survivor: str, *, at: datetime, attempts: int = 10) -> tuple[list[str], bool]:
        """Erase ``survivor`` and every customer merged into it (the right to be
        forgotten): an ``Erased`` event whose transaction destroys their keys and makes the
        identity index forget their identifiers. Returns the streams and whether this call
        erased them (False: it was erased already, by this call's rival too: two erasures
        at once record one event, the other collides with it and finds it done)."""
        streams: list[str] = []
        erased = [False]

        def decide(customers: dict[UUID, Customer]) -> tuple[list[Recorded], list[_Indexed]]:
            # Read again on every attempt: a merge into the survivor meanwhile is an event
            # on its stream, so the save collides with it and is retried with the newcomer.
            streams[:] = self.identity.members(survivor)
            customers.update(self._customers({survivor}))
            customer = customers[customer_aggregate_id(survivor)]
            erased[0] = customer.erased_at is None
            if erased[0]:
                customer.erase(list(streams), at=at)
            return [], []

        self._retrying(decide, attempts)
        self.keyring.forget([customer_aggregate_id(s) for s in streams])
        return streams, erased[0]

    def erased_at(self, customer_id: str) -> datetime | None:
        """When the customer was erased, if it was."""
        customer = self._customers({customer_id})[customer_aggregate_id(customer_id)]
        return customer.erased_at

    def _retrying(
        self,
        decide: Callable[[dict[UUID, Customer]], tuple[list[Recorded], list[_Indexed]]],
        attempts: int,
    ) -> list[Recorded]:
        """Decide on fresh aggregates and save what was decided in one transaction, again
        when a concurrent writer got there first."""
        for attempt in range(1, attempts + 1):
            customers: dict[UUID, Customer] = {}
            try:
                outcomes, index = decide(customers)
                # The identity index takes what it follows from out of the batch's events.
                pending = [e for c in customers.values() for e in c.pending_events]
                if pending:
                    self.save(
                        *customers.values(),
                        touchpoint_index=index,
                        identity_events=pending,
                        identity_rules=self.identity_rules,
                        erased_streams=[
                            s for e in pending if isinstance(e, Customer.Erased) for s in e.streams
                        ],
                    )
            except (IntegrityError, IdentityError):
                # IdentityError: a cached aggregate disagreed with the (fresh) identity
                # index, as when another process merged or split it meanwhile.
                self._forget(customers)
                if attempt == attempts:
                    raise
                log.info(
                    "a concurrent write to one of %d customers; retry %d", len(customers), attempt
                )
                time.sleep(random.uniform(0, 0.005 * attempt))  # two writers: break the tie
                continue
            except Exception:
                self._forget(customers)
                raise
            return outcomes
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _judge(
        self,
        envelopes: Sequence[TouchpointIn],
        sizes: Sequence[int],
        customers: dict[UUID, Customer],
    ) -> tuple[list[Recorded], list[_Indexed]]:
        """Judge each touchpoint against the store and the batch so far, unit by unit,
        resolve the new ones' customers, and apply them (and what resolution decided) to
        their loaded customers; nothing is saved here."""
        touchpoints = [touchpoint_of(envelope) for envelope in envelopes]
        contents = [_content_of(tp) for tp in touchpoints]
        prints = [fingerprint(c) for c in contents]
        known = self._known({tp.event_id for tp in touchpoints})
        batch_first: dict[str, int] = {}  # event id -> the index that records it
        against: dict[int, int] = {}  # a repeat in the batch -> the index it repeats
        verdicts: list[Outcome] = []
        start = 0
        for size in sizes:
            unit: list[Outcome] = []
            claimed: dict[str, int] = {}
            for i in range(start, start + size):
                event_id = touchpoints[i].event_id
                if event_id in known:
                    same = known[event_id].fingerprint == prints[i]
                elif (first := batch_first.get(event_id, claimed.get(event_id))) is not None:
                    same = prints[first] == prints[i]
                    against[i] = first
                else:
                    claimed[event_id] = i
                    unit.append(Outcome.RECORDED)
                    continue
                unit.append(Outcome.DUPLICATE if same else Outcome.CONFLICT)
            if Outcome.CONFLICT in unit:
                unit = [Outcome.WITHHELD if o is Outcome.RECORDED else o for o in unit]
            else:
                batch_first.update(claimed)
            verdicts += unit
            start += size
        differing = self._differing(touchpoints, contents, verdicts, known, against)
        recorded = [i for i, o in enumerate(verdicts) if o is Outcome.RECORDED]
        resolution = self._resolve([touchpoints[i] for i in recorded])
        placed = dict(zip(recorded, resolution.placements, strict=True))
        customers.update(self._customers(_existing(resolution)))
        for placement in resolution.placements:
            if placement.registers:
                customers[customer_aggregate_id(placement.stream)] = Customer.register(
                    placement.stream
                )
        index = self._apply(touchpoints, recorded, resolution, customers, prints)
        outcomes: list[Recorded] = []
        # A touchpoint recorded before belongs to the customer its stream answers for now
        # (a survivor, when the stream has been merged since).
        earlier = {known[tp.event_id].customer_id for tp in touchpoints if tp.event_id in known}
        survivors = self.identity.survivors_of(sorted(earlier)) if earlier else {}
        for i, (tp, outcome) in enumerate(zip(touchpoints, verdicts, strict=True)):
            if i in placed:
                owner = placed[i].survivor
                if tp.event_id not in index:  # recorded on this stream before the index
                    outcome = Outcome.DUPLICATE
            elif tp.event_id in known:
                stream = known[tp.event_id].customer_id
                owner = survivors.get(stream, stream)
            else:  # a repeat within the batch, or withheld with its unit
                first = against.get(i)
                owner = placed[first].survivor if first in placed else ""
            outcomes.append(Recorded(tp.event_id, owner, outcome, differing.get(i, ())))
        return outcomes, list(index.values())

    def _resolve(self, touchpoints: Sequence[Touchpoint]) -> Resolution:
        """Where each touchpoint goes: the identity index's facts about the batch's usable
        identifiers in one query (two more when any is known), then ``resolve``."""
        rules = self.identity_rules
        wanted = sorted({ident for tp in touchpoints for ident in rules.usable(tp.identifiers)})
        return resolve(
            [Arrival(tp.identifiers, tp.occurred_at) for tp in touchpoints],
            self.identity.known(wanted),
            rules,
            self._first_seen,
        )

    def _first_seen(self, survivors: Sequence[str]) -> dict[str, datetime]:
        """Each group's earliest touchpoint (``IdentityIndex.first_seen``). A group the
        store has, but no longer as a survivor, was merged by another writer since the
        index was read: the batch is retried on a fresh index (``IdentityError``)."""
        seen = self.identity.first_seen(survivors)
        missing = [s for s in survivors if s not in seen]  # else new in this batch
        if missing and (
            moved := sorted(c for c, s in self.identity.survivors_of(missing).items() if s != c)
        ):
            raise IdentityError(f"customers {', '.join(moved)} were merged meanwhile")
        return seen

    def _apply(
        self,
        touchpoints: Sequence[Touchpoint],
        recorded: Sequence[int],
        resolution: Resolution,
        customers: dict[UUID, Customer],
        prints: Sequence[bytes],
    ) -> dict[str, _Indexed]:
        """Apply the batch to its customers in the order resolution decided, each
        touchpoint with the merges it proves, its links and its refusals; return the
        touchpoint index rows of those recorded, by event id."""

        def customer(customer_id: str) -> Customer:
            return customers[customer_aggregate_id(customer_id)]

        merges = _by_touchpoint(resolution.merges)
        links = _by_touchpoint(resolution.links)
        refusals = _by_touchpoint(resolution.refusals)
        index: dict[str, _Indexed] = {}
        for n, (i, placement) in enumerate(zip(recorded, resolution.placements, strict=True)):
            tp = touchpoints[i]
            for merge in merges.get(n, ()):
                customer(merge.survivor).merge(
                    customer(merge.absorbed),
                    event_id=tp.event_id,
                    at=tp.occurred_at,
                    identifiers=merge.identifiers,
                )
            stream = customer(placement.stream)
            if stream.record_touchpoint(tp):
                index[tp.event_id] = (
                    tp.event_id,
                    prints[i],
                    placement.stream,
                    stream.id,
                    stream.version,
                    tp.occurred_at,
                )
            for link in links.get(n, ()):
                customer(link.stream).link(
                    link.identifiers, event_id=tp.event_id, at=tp.occurred_at
                )
            for refusal in refusals.get(n, ()):
                customer(refusal.stream).refuse(
                    event_id=tp.event_id,
                    at=tp.occurred_at,
                    rule=refusal.rule,
                    reason=refusal.reason,
                    identifiers=refusal.identifiers,
                    customers=list(refusal.customers),
                )
        return index

    def _differing(
        self,
        touchpoints: Sequence[Touchpoint],
        contents: Sequence[Content],
        verdicts: Sequence[Outcome],
        known: dict[str, _Known],
        against: dict[int, int],
    ) -> dict[int, tuple[str, ...]]:
        """For each conflict, the fields that differ from the touchpoint recorded (or about
        to be recorded in this batch) under its event id."""
        conflicts = [i for i, o in enumerate(verdicts) if o is Outcome.CONFLICT]
        if not conflicts:
            return {}
        stored = self._recorded_contents(
            [known[touchpoints[i].event_id] for i in conflicts if touchpoints[i].event_id in known]
        )
        found: dict[int, tuple[str, ...]] = {}
        for i in conflicts:
            first = against.get(i)
            original = stored.get(touchpoints[i].event_id) if first is None else contents[first]
            found[i] = tuple(differing_fields(original, contents[i])) if original else ()
        return found

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
        rebuilt: dict[UUID, Any] = {
            i: project_aggregate(None, events)
            for i, events in self._streams(aggregate_ids, skip_undecodable=False).items()
        }
        return {i: c for i, c in rebuilt.items() if isinstance(c, Customer)}

    def _streams(
        self, aggregate_ids: Sequence[UUID], *, skip_undecodable: bool
    ) -> dict[UUID, list[Any]]:
        """Every event of these streams, in version order, in ONE query (eventsourcing
        reads one stream per query). ``skip_undecodable``: leave out (and log) a stored
        event this code cannot read, else raise: an aggregate is never folded with a gap."""
        if not aggregate_ids:
            return {}
        recorder = self._columnar()
        query = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {}.{}"
            " WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
        ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
        streams: dict[UUID, list[Any]] = {}
        with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(query, (list(aggregate_ids),))
            rows = [
                StoredEvent(
                    row["originator_id"],
                    row["originator_version"],
                    row["topic"],
                    bytes(row["state"]),
                )
                for row in cursor.fetchall()
            ]
        decode = self.decoder(rows)
        for stored in rows:
            try:
                event = decode(stored)
            except Exception:  # the follower quarantines it as undecodable
                if not skip_undecodable:
                    raise
                log.exception(
                    "stream %s@%d cannot be decoded",
                    stored.originator_id,
                    stored.originator_version,
                )
                continue
            streams.setdefault(event.originator_id, []).append(event)
        return streams

    def stored_touchpoints(
        self, aggregate_ids: Sequence[UUID]
    ) -> list[Customer.TouchpointRecorded]:
        """Every touchpoint of these streams, by stream and version, in ONE query."""
        return [
            e
            for events in self._streams(aggregate_ids, skip_undecodable=True).values()
            for e in events
            if isinstance(e, Customer.TouchpointRecorded)
        ]

    # -- the touchpoint index --------------------------------------------------------

    def _known(self, event_ids: set[str]) -> dict[str, _Known]:
        """The batch's event ids already in the store, in ONE query."""
        recorder = self._columnar()
        query = SQL(
            "SELECT event_id, fingerprint, customer_id, originator_id, originator_version"
            " FROM {} WHERE event_id = ANY(%s)"
        ).format(recorder.index)
        with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(query, (list(event_ids),))
            return {
                row["event_id"]: _Known(
                    bytes(row["fingerprint"]),
                    row["customer_id"],
                    row["originator_id"],
                    row["originator_version"],
                )
                for row in cursor.fetchall()
            }

    def touchpoints_at(
        self, places: Sequence[tuple[UUID, int]]
    ) -> list[Customer.TouchpointRecorded]:
        """The touchpoints stored at these (stream, version) places, in ONE query."""
        if not places:
            return []
        recorder = self._columnar()
        query = SQL(
            "SELECT e.originator_id, e.originator_version, e.topic, e.state"
            " FROM unnest(%s::uuid[], %s::bigint[]) WITH ORDINALITY AS p(id, version, n)"
            " JOIN {}.{} e ON e.originator_id = p.id AND e.originator_version = p.version"
            " ORDER BY p.n"
        ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
        with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(query, ([p[0] for p in places], [p[1] for p in places]))
            rows = cursor.fetchall()
        stored = [
            StoredEvent(r["originator_id"], r["originator_version"], r["topic"], bytes(r["state"]))
            for r in rows
        ]
        decode = self.decoder(stored)
        events = [decode(s) for s in stored]
        return [e for e in events if isinstance(e, Customer.TouchpointRecorded)]

    def _recorded_contents(self, known: Sequence[_Known]) -> dict[str, Content]:
        places = [(k.originator_id, k.originator_version) for k in known]
        return {e.event_id: _recorded_content(e) for e in self.touchpoints_at(places)}

    def timeline(
        self, customer_id: str, *, limit: int, offset: int, newest_first: bool
    ) -> tuple[int, list[Customer.TouchpointRecorded]]:
        """One page of a customer's touchpoints (every stream it answers for) in
        event-time order (ties: by ``event_id``), and how many there are: paged in the
        database by the touchpoint index, so a page costs the same at 20 or 20,000
        touchpoints."""
        recorder = self._columnar()
        direction = SQL("DESC") if newest_first else SQL("ASC")
        streams = [customer_aggregate_id(c) for c in self.identity.members(customer_id)]
        with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                SQL("SELECT count(*) AS n FROM {} WHERE originator_id = ANY(%s)").format(
                    recorder.index
                ),
                (streams,),
            )
            row = cursor.fetchone()
            total = int(row["n"]) if row else 0
            cursor.execute(
                SQL(
                    "SELECT originator_id, originator_version FROM {} WHERE originator_id = ANY(%s)"
                    ' ORDER BY occurred_at {}, event_id COLLATE "C" {} LIMIT %s OFFSET %s'
                ).format(recorder.index, direction, direction),
                (streams, limit, offset),
            )
            places = [(r["originator_id"], r["originator_version"]) for r in cursor.fetchall()]
        return total, self.touchpoints_at(places)

    def index_touchpoints(self, *, page: int = 5000) -> int:
        """Fill the touchpoint index from the event store when it is empty (a store
        written before the index existed); return how many touchpoints it indexed. The
        first recording of an event id stands; later ones are left as they were."""
        recorder = self._columnar()
        with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(SQL("SELECT EXISTS (SELECT 1 FROM {}) AS any").format(recorder.index))
            row = cursor.fetchone()
            if row and row["any"]:
                return 0
        indexed, position = 0, 0
        while notifications := recorder.select_notifications(
            start=position, limit=page, inclusive_of_start=False
        ):
            position = notifications[-1].id
            touchpoints = [n for n in notifications if n.topic.endswith(TOUCHPOINT_TOPIC_SUFFIX)]
            decode = self.decoder(touchpoints)
            rows = [
                (
                    e.event_id,
                    fingerprint(_recorded_content(e)),
                    e.customer_id,
                    e.originator_id,
                    e.originator_version,
                    e.occurred_at,
                )
                for n in touchpoints
                if isinstance(e := decode(n), Customer.TouchpointRecorded)
            ]
            if rows:
                with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
                    cursor.execute(
                        SQL("{} ON CONFLICT (event_id) DO NOTHING").format(
                            recorder.insert_index_statement
                        ),
                        tuple(map(list, zip(*rows, strict=True))),
                    )
                    indexed += cursor.rowcount
        return indexed

    def _columnar(self) -> ColumnarRecorder:
        recorder = self.recorder
        if not isinstance(recorder, ColumnarRecorder):
            raise TypeError("the customer records live in PostgreSQL (ColumnarRecorder)")
        return recorder

    def touchpoints_of(self, customer_id: str) -> list[Customer.TouchpointRecorded]:
        """Every touchpoint recorded for a customer (every stream it answers for),
        straight from the event store, in event-time order (ties: by ``event_id``, as in
        the projections)."""
        streams = [customer_aggregate_id(s) for s in self.identity.members(customer_id)]
        recorded = [
            e
            for events in self._streams(streams, skip_undecodable=False).values()
            for e in events
            if isinstance(e, Customer.TouchpointRecorded)
        ]
        return sorted(recorded, key=_event_time_order)

    def customers_of(self, streams: Sequence[UUID]) -> dict[UUID, tuple[str, str]]:
        """Each stream's customer id and the survivor that answers for it (the identity
        index), in ONE query: the relay keys stored events by it without reading them."""
        if not streams:
            return {}
        recorder = self._columnar()
        query = SQL(
            "SELECT originator_id, customer_id, survivor FROM {} WHERE originator_id = ANY(%s)"
        ).format(recorder.identity.customers)
        with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(query, (list(streams),))
            return {
                row["originator_id"]: (row["customer_id"], row["survivor"])
                for row in cursor.fetchall()
            }

    def index_identities(self, *, page: int = 5000, rebuild: bool = False) -> int:
        """Build the identity index from the event store alone: when it is empty (a
        store from before the index), when it was not built to the end in this code's
        format (one of clear values, from before digests: its tables were dropped as they
        were created), or always (``rebuild``: drop what it holds first). The same
        function writes it live and here, folded over the log in order. Returns how many
        notifications it read."""
        recorder = self._columnar()
        identity = recorder.identity
        if not rebuild and identity.is_current() and not identity.is_empty():
            return 0
        with recorder.datastore.transaction(commit=True) as cursor:
            identity.clear(cursor)
        read, position = 0, 0
        while notifications := recorder.select_notifications(
            start=position, limit=page, inclusive_of_start=False
        ):
            position = notifications[-1].id
            read += len(notifications)
            decode = self.decoder(notifications)
            events = [decode(n) for n in notifications]
            with recorder.datastore.transaction(commit=True) as cursor:
                identity.write(cursor, events, legacy_links=True)
        with recorder.datastore.transaction(commit=True) as cursor:
            identity.mark_current(cursor)
        return read


def _event_time_order(event: Customer.TouchpointRecorded) -> tuple[datetime, str]:
    return event.occurred_at, event.event_id


def _content_of(touchpoint: Touchpoint) -> Content:
    return content(touchpoint, identifiers=touchpoint.identifiers, journey=touchpoint.journey)


def _recorded_content(event: Customer.TouchpointRecorded) -> Content:
    return content(event, identifiers=event.identifiers, journey=event.journey)


_T = TypeVar("_T", Link, Merge, Refusal)


def _by_touchpoint(decisions: Sequence[_T]) -> dict[int, list[_T]]:
    grouped: dict[int, list[_T]] = {}
    for decision in decisions:
        grouped.setdefault(decision.touchpoint, []).append(decision)
    return grouped


def _existing(resolution: Resolution) -> set[str]:
    """The streams a resolution writes to that the store already holds."""
    new = {p.stream for p in resolution.placements if p.registers}
    streams = {p.stream for p in resolution.placements}
    streams |= {m.survivor for m in resolution.merges} | {m.absorbed for m in resolution.merges}
    streams |= {link.stream for link in resolution.links}
    streams |= {r.stream for r in resolution.refusals}
    return streams - new
