"""The read-model store: one generic PostgreSQL table per projection, written in batches.

Exactly once in effect: each document carries ``applied``, the last version applied of
each event stream (aggregate) that touched it, and an event at or below that version is
skipped. That check, the document write and the follower's ``position`` in the event
store's notification log all commit in one transaction, so a crash between any two of
them replays nothing twice and loses nothing.

A store instance writes one *generation* of tables: the live one, or the rebuild that a
replay fills in beside it and then swaps in (``swap_in``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg2
import psycopg2.extensions
import psycopg2.extras
import psycopg2.pool
from psycopg2 import sql

from projections.base import Projection, RecordedTouchpoint, State

if TYPE_CHECKING:  # measures reads the store's analytics, which import this module
    from projections.measures import Rules

log = logging.getLogger(__name__)

UNDECODABLE = "(undecodable)"

# Give stream %(s)s and every stream merged into it (its subtree, by parent) the root of
# its parent chain as survivor. Parents are the truth and survivors follow from them, so
# the merges stored in one transaction (aggregate by aggregate, not in the order they were
# decided) give the same survivors in any order. Used on both sides: the write side's
# identity index and the read side's survivor table.
RESURVIVE = (
    "WITH RECURSIVE up(customer_id, parent, depth) AS ("
    " SELECT customer_id, parent, 0 FROM {t} WHERE customer_id = %(s)s UNION ALL"
    " SELECT c.customer_id, c.parent, up.depth + 1 FROM {t} c"
    " JOIN up ON c.customer_id = up.parent),"
    " down(customer_id) AS (SELECT %(s)s::text UNION"
    " SELECT c.customer_id FROM {t} c JOIN down d ON c.parent = d.customer_id)"
    " UPDATE {t} SET survivor = (SELECT customer_id FROM up ORDER BY depth DESC LIMIT 1)"
    " WHERE customer_id IN (SELECT customer_id FROM down)"
)
LIVE = ""
REBUILD = "__rebuild"


@dataclass(frozen=True)
class Quarantine:
    """A document its reducer failed on: the first failed event, the error, since when,
    and how many events (the failed one included) wait to be re-applied."""

    projection: str
    key: str
    event_id: str
    error: str
    since: datetime
    events: int


@dataclass(frozen=True)
class Step:
    """One event applied to one document: the event's index in the batch, the
    document, its state before (None: new) and after."""

    index: int
    projection: str
    key: str
    before: State | None
    after: State


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"[:2000]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class ReadModelStore:
    def __init__(
        self,
        pool: psycopg2.pool.ThreadedConnectionPool,
        projections: Sequence[Projection],
        generation: str = LIVE,
        *,
        on_pool_wait: Callable[[float], None] | None = None,
        measure_rules: Rules | None = None,
    ) -> None:
        self.pool = pool
        self.projections = tuple(projections)
        self.generation = generation
        self.on_pool_wait = on_pool_wait  # seconds each getconn took (operational metrics)
        # The rules of the maintained measures (``projections.maintained``); None: this
        # store keeps documents only (a test's own projections).
        self.measure_rules = measure_rules

    def rebuild(self) -> ReadModelStore:
        """A store of the rebuild generation beside this one (``replay``)."""
        return ReadModelStore(
            self.pool,
            self.projections,
            generation=REBUILD,
            on_pool_wait=self.on_pool_wait,
            measure_rules=self.measure_rules,
        )

    # -- schema ---------------------------------------------------------------------

    def table(self, projection: Projection | str) -> sql.Identifier:
        name = projection if isinstance(projection, str) else projection.name
        return sql.Identifier(f"rm_{name}{self.generation}")

    def index(self, projection: Projection, field: str) -> sql.Identifier:
        return sql.Identifier(f"rm_{projection.name}{self.generation}_{field}_idx")

    @property
    def quarantine(self) -> sql.Identifier:
        """Events a reducer failed on, and the events held behind them (``error`` null),
        per document, until ``retry_quarantined`` applies them (``resolved_at``)."""
        return sql.Identifier(f"rm_quarantine{self.generation}")

    @property
    def survivors_table(self) -> sql.Identifier:
        """The read side's view of identity: each customer stream the projections have
        seen, the stream it is merged into (``parent``) and its survivor, whose documents
        hold its touchpoints. Kept from the Merged and Split events, so it replays."""
        return sql.Identifier(f"rm_survivor{self.generation}")

    @property
    def quarantine_index(self) -> sql.Identifier:
        return sql.Identifier(f"rm_quarantine{self.generation}_open_idx")

    def tracking_name(self, follower: str) -> str:
        return f"{follower}{self.generation}"

    def create_tables(self, *, fresh: bool = False) -> list[str]:
        """Create what is missing; return the projections whose table is new."""
        created = []
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS rm_tracking ("
                " follower text PRIMARY KEY, position bigint NOT NULL,"
                " updated_at timestamptz NOT NULL DEFAULT now())"
            )
            for projection in self.projections:
                if fresh:
                    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.table(projection)))
                cur.execute("SELECT to_regclass(%s) IS NULL", (self.table(projection).strings[0],))
                row = cur.fetchone()
                if row and row[0]:
                    created.append(projection.name)
                cur.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} ("
                        " key text PRIMARY KEY, state jsonb NOT NULL, applied jsonb NOT NULL,"
                        " updated_at timestamptz NOT NULL DEFAULT now())"
                    ).format(self.table(projection))
                )
                for field in projection.indexed:
                    cur.execute(
                        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ((state ->> {}))").format(
                            self.index(projection, field),
                            self.table(projection),
                            sql.Literal(field),
                        )
                    )
            if fresh:
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.survivors_table))
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (customer_id text PRIMARY KEY, parent text,"
                    " survivor text NOT NULL)"
                ).format(self.survivors_table)
            )
            if fresh:
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.quarantine))
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (seq bigserial PRIMARY KEY,"
                    " projection text NOT NULL, key text NOT NULL, event_id text NOT NULL,"
                    " customer_id text NOT NULL, originator_id uuid NOT NULL,"
                    " originator_version bigint NOT NULL, error text,"
                    " failed_at timestamptz NOT NULL DEFAULT now(), resolved_at timestamptz,"
                    " UNIQUE (projection, key, originator_id, originator_version))"
                ).format(self.quarantine)
            )
            cur.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {} ON {} (key) WHERE resolved_at IS NULL"
                ).format(
                    sql.Identifier(f"rm_quarantine{self.generation}_open_idx"), self.quarantine
                )
            )
            if fresh:
                # Forget where this generation's followers were: it starts from scratch.
                cur.execute(
                    "DELETE FROM rm_tracking WHERE right(follower, %s) = %s"
                    if self.generation
                    else "DELETE FROM rm_tracking WHERE right(follower, %s) <> %s",
                    (len(self.generation or REBUILD), self.generation or REBUILD),
                )
        return created

    # -- transactions ---------------------------------------------------------------

    @contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        """A pooled connection inside one transaction: committed on success, rolled back
        on error."""
        asked = time.perf_counter()
        conn = self.pool.getconn()
        if self.on_pool_wait is not None:
            self.on_pool_wait(time.perf_counter() - asked)
        try:
            with conn:
                yield conn
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            # The server went away: the idle connections went with it. Drop them now
            # rather than fail one request for each of them once it is back.
            discard_idle = getattr(self.pool, "discard_idle", None)
            if discard_idle is not None:
                discard_idle()
            raise
        finally:
            self.pool.putconn(conn)

    def lock_position(
        self, conn: psycopg2.extensions.connection, follower: str, *, wait: bool = True
    ) -> int:
        """The follower's position in the notification log, locked until commit, so two
        followers (or a follower and a replay's swap) never apply the same events.
        With ``wait=False``, raise ``psycopg2.errors.LockNotAvailable`` at once if another
        transaction holds it."""
        name = self.tracking_name(follower)
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO rm_tracking (follower, position) VALUES (%s, 0)"
                " ON CONFLICT (follower) DO NOTHING",
                (name,),
            )
            cur.execute(
                "SELECT position FROM rm_tracking WHERE follower = %s FOR UPDATE"
                + ("" if wait else " NOWAIT"),
                (name,),
            )
            row = cur.fetchone()
            return int(row[0]) if row else 0

    def set_position(
        self, conn: psycopg2.extensions.connection, follower: str, position: int
    ) -> None:
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE rm_tracking SET position = %s, updated_at = now() WHERE follower = %s",
                (position, self.tracking_name(follower)),
            )

    def position(self, follower: str) -> int:
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT position FROM rm_tracking WHERE follower = %s",
                (self.tracking_name(follower),),
            )
            row = cur.fetchone()
            return int(row[0]) if row else 0

    # -- writing --------------------------------------------------------------------

    def apply(
        self,
        conn: psycopg2.extensions.connection,
        events: Sequence[RecordedTouchpoint],
        only: Mapping[str, set[str]] | None = None,
        trail: list[Step] | None = None,
    ) -> int:
        """Apply events (each stream's in version order) to every projection, in the
        caller's transaction: one read and one write statement per projection.
        Returns how many (projection, event) applications took effect. ``trail``
        receives a ``Step`` per document an event changed: the state before and after,
        what the maintained measures derive from, event by event.

        A reducer that raises on an event quarantines that one document: the event is
        recorded with the error, later events of the document are held behind it (in
        order), and every other document goes on (guarantee 7). ``only``: apply to
        these documents (keys by projection name) and no others."""
        applied_count = 0
        by_projection = [
            (projection, keyed)
            for projection in self.projections
            if (
                keyed := [
                    (key, e, index)
                    for index, e in enumerate(events)
                    if (key := projection.key(e)) is not None
                    and (only is None or key in only.get(projection.name, ()))
                ]
            )
        ]
        with conn.cursor() as cur:
            held_in_batch = self._held(
                cur, [(p.name, key) for p, keyed in by_projection for key, _, _ in keyed]
            )
            for projection, keyed in by_projection:
                table = self.table(projection)
                keys = sorted({key for key, _, _ in keyed})  # sorted: a fixed lock order
                cur.execute(
                    sql.SQL(
                        "SELECT key, state, applied FROM {} WHERE key = ANY(%s)"
                        " ORDER BY key FOR UPDATE"
                    ).format(table),
                    (keys,),
                )
                docs: dict[str, tuple[State | None, dict[str, int]]] = {
                    key: (state, applied) for key, state, applied in cur.fetchall()
                }
                held = {key for name, key in held_in_batch if name == projection.name}
                quarantined: list[tuple[str, RecordedTouchpoint, str | None]] = []
                changed: set[str] = set()
                for key, event, index in keyed:
                    state, applied = docs.get(key, (None, {}))
                    stream = event.originator_id.hex
                    if applied.get(stream, 0) >= event.originator_version:
                        continue  # already applied: a redelivery
                    if key in held:
                        quarantined.append((key, event, None))
                        next_state = state
                    else:
                        try:
                            next_state = projection.reduce(state, event)
                        except Exception as error:
                            log.exception(
                                "projection %s quarantined document %r at event %r",
                                projection.name,
                                key,
                                event.event_id,
                            )
                            held.add(key)
                            quarantined.append((key, event, _describe(error)))
                            next_state = state
                        else:
                            applied_count += 1
                            if trail is not None:
                                trail.append(Step(index, projection.name, key, state, next_state))
                    if next_state is None:
                        continue  # its first event failed: nothing to write yet
                    docs[key] = (next_state, {**applied, stream: event.originator_version})
                    changed.add(key)
                if quarantined:
                    self._quarantine(cur, projection.name, quarantined)
                if changed:
                    self._write(cur, projection, {key: docs[key] for key in sorted(changed)})
        return applied_count

    def _write(
        self, cur: Any, projection: Projection, docs: dict[str, tuple[State | None, dict[str, int]]]
    ) -> None:
        """Upsert documents with the stream versions they have applied: one statement,
        one array a column (far fewer Python-side calls than a VALUES row a document)."""
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (key, state, applied) SELECT k, s::jsonb, a::jsonb"
                " FROM unnest(%s::text[], %s::text[], %s::text[]) AS u (k, s, a)"
                " ON CONFLICT (key) DO UPDATE SET state = EXCLUDED.state,"
                " applied = EXCLUDED.applied, updated_at = now()"
            ).format(self.table(projection)),
            (
                list(docs),
                [_dumps(state) for state, _ in docs.values()],
                [_dumps(applied) for _, applied in docs.values()],
            ),
        )

    # -- identity ---------------------------------------------------------------------

    def survivors(
        self, conn: psycopg2.extensions.connection, customer_ids: Iterable[str]
    ) -> dict[str, str]:
        """The survivor of each customer stream, its row share-locked until commit: a
        merge or split of these customers (which updates the rows) waits for this
        transaction, or this one for it, so no document is written under a survivor
        that a concurrent merge has just replaced. Streams not seen before are their own."""
        ids = sorted(set(customer_ids))
        if not ids:
            return {}
        with conn.cursor() as cur:
            # One round trip: the rows already there, locked, and those this inserts (which
            # the locking read cannot see, its snapshot being the statement's).
            cur.execute(
                sql.SQL(
                    "WITH locked AS (SELECT customer_id, survivor FROM {t}"
                    " WHERE customer_id = ANY(%(ids)s) ORDER BY customer_id FOR SHARE),"
                    " added AS (INSERT INTO {t} (customer_id, survivor)"
                    " SELECT c, c FROM unnest(%(ids)s::text[]) c ON CONFLICT DO NOTHING"
                    " RETURNING customer_id, survivor)"
                    " SELECT * FROM locked UNION ALL SELECT * FROM added"
                ).format(t=self.survivors_table),
                {"ids": ids},
            )
            found = {row[0]: row[1] for row in cur.fetchall()}
            if missing := [c for c in ids if c not in found]:
                # Inserted by a concurrent transaction that committed while this one
                # waited on it (a merge, perhaps): read them as they are now, locked.
                cur.execute(
                    sql.SQL(
                        "SELECT customer_id, survivor FROM {} WHERE customer_id = ANY(%s)"
                        " ORDER BY customer_id FOR SHARE"
                    ).format(self.survivors_table),
                    (missing,),
                )
                found.update((row[0], row[1]) for row in cur.fetchall())
            return found

    def members(self, conn: psycopg2.extensions.connection, survivors: Iterable[str]) -> set[str]:
        """Every stream these survivors answer for (themselves included)."""
        wanted = sorted(set(survivors))
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT customer_id FROM {} WHERE survivor = ANY(%s)").format(
                    self.survivors_table
                ),
                (wanted,),
            )
            return {row[0] for row in cur.fetchall()} | set(wanted)

    def regroup(
        self, conn: psycopg2.extensions.connection, stream: str, parent: str | None
    ) -> None:
        """Merge ``stream`` into ``parent`` (None: split it off its parent): it and the
        streams merged into it take the root of the new parent chain as survivor."""
        self.survivors(conn, [stream, *([parent] if parent else [])])
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("UPDATE {} SET parent = %s WHERE customer_id = %s").format(
                    self.survivors_table
                ),
                (parent, stream),
            )
            cur.execute(
                sql.SQL(RESURVIVE).format(t=self.survivors_table).as_string(cur), {"s": stream}
            )

    def streams_of(
        self, conn: psycopg2.extensions.connection, documents: Mapping[str, set[str]]
    ) -> set[str]:
        """The event streams (hex) that have touched these documents."""
        streams: set[str] = set()
        with conn.cursor() as cur:
            for name, keys in documents.items():
                cur.execute(
                    sql.SQL("SELECT applied FROM {} WHERE key = ANY(%s)").format(self.table(name)),
                    (sorted(keys),),
                )
                for (applied,) in cur.fetchall():
                    streams |= set(applied)
        return streams

    def refold(
        self,
        conn: psycopg2.extensions.connection,
        documents: Mapping[str, set[str]],
        events: Sequence[RecordedTouchpoint],
    ) -> int:
        """Rebuild these documents from ``events`` (every event that keys to them, each
        stream's in version order): dropped with their quarantine, then folded afresh."""
        with conn.cursor() as cur:
            for name, keys in documents.items():
                cur.execute(
                    sql.SQL("DELETE FROM {} WHERE key = ANY(%s)").format(self.table(name)),
                    (sorted(keys),),
                )
                cur.execute(
                    sql.SQL(
                        "DELETE FROM {} WHERE projection = %s AND key = ANY(%s)"
                        " AND resolved_at IS NULL"
                    ).format(self.quarantine),
                    (name, sorted(keys)),
                )
        return self.apply(conn, events, only=documents)

    # -- quarantine -----------------------------------------------------------------

    def _held(self, cur: Any, documents: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (projection, key) documents are quarantined: one query a batch."""
        if not documents:
            return set()
        cur.execute(
            sql.SQL(
                "SELECT DISTINCT projection, key FROM {} WHERE resolved_at IS NULL"
                " AND key = ANY(%s) AND (projection, key) IN"
                " (SELECT * FROM unnest(%s::text[], %s::text[]))"
            ).format(self.quarantine),
            (
                sorted({k for _, k in documents}),
                [p for p, _ in documents],
                [k for _, k in documents],
            ),
        )
        return {(row[0], row[1]) for row in cur.fetchall()}

    def _quarantine(
        self, cur: Any, projection: str, rows: Sequence[tuple[str, RecordedTouchpoint, str | None]]
    ) -> None:
        psycopg2.extras.execute_values(
            cur,
            sql.SQL(
                "INSERT INTO {} (projection, key, event_id, customer_id, originator_id,"
                " originator_version, error) VALUES %s ON CONFLICT DO NOTHING"
            )
            .format(self.quarantine)
            .as_string(cur),
            [
                (
                    projection,
                    key,
                    e.event_id,
                    e.customer_id,
                    str(e.originator_id),
                    e.originator_version,
                    error,
                )
                for key, e, error in rows
            ],
        )

    def quarantine_undecodable(
        self,
        conn: psycopg2.extensions.connection,
        stream: UUID | str,
        version: int,
        error: Exception,
    ) -> None:
        """Set aside a stored event that cannot be decoded into a domain event, under the
        pseudo-projection ``(undecodable)`` keyed by its stream: visible in health and
        metrics, never retried by ``retry_quarantined`` (a replay after the fix is)."""
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (projection, key, event_id, customer_id, originator_id,"
                    " originator_version, error) VALUES (%s, %s, %s, '', %s, %s, %s)"
                    " ON CONFLICT DO NOTHING"
                ).format(self.quarantine),
                (
                    UNDECODABLE,
                    str(stream),
                    f"{stream}@{version}",
                    str(stream),
                    version,
                    _describe(error),
                ),
            )

    def quarantine_of(self, projection: str, key: str) -> Quarantine | None:
        """Why one projection's document is quarantined (None: it is not)."""
        return next((q for q in self.quarantines(key) if q.projection == projection), None)

    def quarantines(self, key: str) -> list[Quarantine]:
        """Every projection's quarantine of documents under ``key`` (a customer id...)."""
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT DISTINCT ON (projection) projection, event_id, error, failed_at,"
                    " count(*) OVER (PARTITION BY projection) FROM {}"
                    " WHERE key = %s AND resolved_at IS NULL ORDER BY projection, seq"
                ).format(self.quarantine),
                (key,),
            )
            return [
                Quarantine(row[0], key, row[1], row[2] or "held", row[3], int(row[4]))
                for row in cur.fetchall()
            ]

    def quarantined_events(self) -> int:
        """How many events are quarantined (failed, or held behind a failure)."""
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE resolved_at IS NULL").format(self.quarantine)
            )
            row = cur.fetchone()
            return int(row[0]) if row else 0

    def quarantined_count(self) -> int:
        """How many documents are quarantined."""
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT count(DISTINCT (projection, key)) FROM {} WHERE resolved_at IS NULL"
                ).format(self.quarantine)
            )
            row = cur.fetchone()
            return int(row[0]) if row else 0

    def quarantined_documents(self) -> list[tuple[str, str]]:
        """(projection, key) of every quarantined document, oldest failure first."""
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT projection, key FROM {} WHERE resolved_at IS NULL"
                    " GROUP BY projection, key ORDER BY min(seq)"
                ).format(self.quarantine)
            )
            return [(row[0], row[1]) for row in cur.fetchall()]

    def held_events(
        self, conn: psycopg2.extensions.connection, projection: str, key: str
    ) -> list[tuple[UUID, int]]:
        """The (stream, version) of a quarantined document's events, in the order they
        were held, locked until the caller's transaction ends."""
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT originator_id, originator_version FROM {} WHERE projection = %s"
                    " AND key = %s AND resolved_at IS NULL ORDER BY seq FOR UPDATE"
                ).format(self.quarantine),
                (projection, key),
            )
            return [(UUID(str(row[0])), int(row[1])) for row in cur.fetchall()]

    def release(
        self,
        conn: psycopg2.extensions.connection,
        projection: Projection,
        key: str,
        events: Sequence[RecordedTouchpoint],
    ) -> str | None:
        """Re-apply a quarantined document's held events in the caller's transaction;
        on success mark them resolved and return None, else record and return the error
        (the document stays quarantined, unchanged)."""
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT state, applied FROM {} WHERE key = %s FOR UPDATE").format(
                    self.table(projection)
                ),
                (key,),
            )
            row = cur.fetchone()
            state, applied = (row[0], row[1]) if row else (None, {})
            for event in events:
                try:
                    state = projection.reduce(state, event)
                except Exception as error:
                    cur.execute(
                        sql.SQL(
                            "UPDATE {} SET error = %s, failed_at = now() WHERE projection = %s"
                            " AND key = %s AND originator_id = %s AND originator_version = %s"
                        ).format(self.quarantine),
                        (
                            _describe(error),
                            projection.name,
                            key,
                            str(event.originator_id),
                            event.originator_version,
                        ),
                    )
                    return _describe(error)
                stream = event.originator_id.hex
                applied = {**applied, stream: max(applied.get(stream, 0), event.originator_version)}
            if state is not None:
                self._write(cur, projection, {key: (state, applied)})
            cur.execute(
                sql.SQL(
                    "UPDATE {} SET resolved_at = now() WHERE projection = %s AND key = %s"
                    " AND resolved_at IS NULL"
                ).format(self.quarantine),
                (projection.name, key),
            )
        return None

    # -- reading --------------------------------------------------------------------

    def get(self, projection: str, key: str) -> State | None:
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT state FROM {} WHERE key = %s").format(self.table(projection)),
                (key,),
            )
            row = cur.fetchone()
            return row[0] if row else None

    def find(self, projection: str, field: str, value: str, limit: int = 1000) -> list[State]:
        """Documents whose top-level ``field`` equals ``value``."""
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT state FROM {} WHERE state ->> %s = %s ORDER BY key LIMIT %s"
                ).format(self.table(projection)),
                (field, value, limit),
            )
            return [row[0] for row in cur.fetchall()]

    def dump(self, projection: str) -> dict[str, State]:
        """Every document of a projection (tests, replay checks)."""
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT key, state FROM {}").format(self.table(projection)))
            return {key: state for key, state in cur.fetchall()}

    # -- replay ---------------------------------------------------------------------

    def swap_in(
        self, conn: psycopg2.extensions.connection, live: ReadModelStore, follower: str
    ) -> None:
        """Make this (rebuilt) generation the live one, in the caller's transaction.

        The caller holds both tracking rows locked and has caught this generation up, so
        the live follower resumes, after commit, from exactly where the rebuild ended."""
        position = self.lock_position(conn, follower)
        with conn.cursor() as cur:
            for projection in self.projections:
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(live.table(projection)))
                cur.execute(
                    sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                        self.table(projection), live.table(projection)
                    )
                )
                # The primary key index keeps its generation's name; rename it too so the
                # next rebuild can create its own.
                cur.execute(
                    sql.SQL("ALTER INDEX IF EXISTS {} RENAME TO {}").format(
                        sql.Identifier(f"rm_{projection.name}{self.generation}_pkey"),
                        sql.Identifier(f"rm_{projection.name}{live.generation}_pkey"),
                    )
                )
                for field in projection.indexed:
                    cur.execute(
                        sql.SQL("ALTER INDEX IF EXISTS {} RENAME TO {}").format(
                            self.index(projection, field), live.index(projection, field)
                        )
                    )
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(live.survivors_table))
            cur.execute(
                sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                    self.survivors_table, live.survivors_table
                )
            )
            cur.execute(
                sql.SQL("ALTER INDEX IF EXISTS {} RENAME TO {}").format(
                    sql.Identifier(f"rm_survivor{self.generation}_pkey"),
                    sql.Identifier(f"rm_survivor{live.generation}_pkey"),
                )
            )
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(live.quarantine))
            cur.execute(
                sql.SQL("ALTER TABLE {} RENAME TO {}").format(self.quarantine, live.quarantine)
            )
            cur.execute(
                sql.SQL("ALTER INDEX IF EXISTS {} RENAME TO {}").format(
                    self.quarantine_index, live.quarantine_index
                )
            )
            cur.execute(
                "DELETE FROM rm_tracking WHERE follower = %s", (self.tracking_name(follower),)
            )
        live.set_position(conn, follower, position)
