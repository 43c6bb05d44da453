"""The identity index: identifier -> customer stream, stream -> survivor, on the write side.

Derived state, written by the recorder in the same transaction as the events it follows
from (``IdentityIndex.write`` reads the identity events about to be stored), and rebuilt
from the event store alone by folding the same function over the log (``rebuild``).

It holds no identifier in clear: an identifier is its kind and its keyed digest
(``domain.identity.identifier_digest``: HMAC-SHA256 under the ``identity_secret``
setting, handed over by ``configure``), and every look-up digests the normalised value
asked for. Merges and refusals keep only the kinds of the identifiers involved.

Tables (in the event store's schema):
- ``identity_customer``: every stream, its parent (the stream it was merged into) and
  its survivor (the root of its group, which answers for it);
- ``identity_identifier``: (kind, digest) -> the stream that first carried it, when, by
  which touchpoint, and the version of the event that linked it: unique, so two
  recorders linking one identifier at once conflict and one retries;
- ``identity_merge``: every merge, with its proof (the touchpoint, the kinds, the
  version of the ``Merged`` event) and, once undone, when it was split;
- ``identity_apart``: pairs a split keeps apart;
- ``identity_conflict``: every merge or link a guard rail refused (the rule, the kinds,
  the customers, the version of the ``IdentityRefused`` event);
- ``identity_format``: the format the index was built in, to the end (``FORMAT``). The
  tables of format 1 (values in clear, no marker) are dropped when the tables are
  created, and start rebuilds every index not marked (``CustomerRecords.index_identities``).

Showing identifiers (a customer's, a merge's proof, a conflict's): the values come from
the events that carried them, decrypted as any event is read, found by the place each
row keeps (stream and version) and fetched in the same query as the rows. Chosen over
the customer document because it is exact (the document lags the index, and after a
split no longer holds the released customer's identifiers, which the merge history
still names), costs no query more, and is purged by the erasure as the events are: once
a customer's keys are destroyed its events cannot be read, and ``forget`` has deleted
its identifier rows and the kinds of the merges and conflicts its events hold. A value
whose event cannot be read is not shown (an identifier is left out; a merge or conflict
shows no identifiers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.persistence import StoredEvent
from psycopg.sql import SQL, Composed, Identifier, Literal

from domain.customer import Customer
from domain.identity import Group, IdentityRules, Known, identifier_digest
from projections.base import utc_iso
from projections.store import RESURVIVE

log = logging.getLogger(__name__)

# Reads a batch of stored events: given them all (their keys loaded at once), decodes one.
Decoder = Callable[[Sequence[StoredEvent]], Callable[[StoredEvent], Any]]

TABLES = (
    "identity_customer",
    "identity_identifier",
    "identity_merge",
    "identity_apart",
    "identity_conflict",
)
FORMAT_TABLE = "identity_format"
# 1 (no marker): values in clear. 2: keyed digests; merges and conflicts keep kinds.
FORMAT = 2

_UNIT = chr(31)  # joins a row's kinds or customers into one array element (unnest is flat)

# A refusal's reason when its event cannot be shown.
FORGOTTEN = "the personal data of a customer involved was erased"
UNREADABLE = "the refusal's event cannot be read"


@dataclass(frozen=True)
class Located:
    """Who answers for a customer reference: ``stream`` (the stream or the source id
    named), ``survivor`` (the customer that answers for it)."""

    stream: str
    survivor: str
    by_source_id: bool

    @property
    def absorbed(self) -> bool:
        return self.stream != self.survivor and not self.by_source_id


class IdentityIndex:
    def __init__(
        self, schema: str, connect: Callable[[], Any], events_table: str = "stored_events"
    ) -> None:
        self._connect = connect  # a context manager giving a psycopg connection
        self._schema = schema
        self._secret: bytes | None = None
        self._decoder: Decoder | None = None

        def t(name: str) -> Identifier:
            return Identifier(schema, name)

        self.customers, self.identifiers = t("identity_customer"), t("identity_identifier")
        self.merges, self.apart = t("identity_merge"), t("identity_apart")
        self.refusals = t("identity_conflict")
        self.format = t(FORMAT_TABLE)
        self.touchpoints = t("touchpoint_index")
        self.events = t(events_table)
        self.refuse = t("peakend_identity_conflict")

    def configure(self, *, secret: bytes, decoder: Decoder) -> None:
        """Hand the index what its owner holds: the secret identifiers are digested
        under, and how stored events are read (decrypted, a batch at a time), to show
        the values."""
        if not secret:
            raise ValueError("identity secret: empty")
        self._secret, self._decoder = secret, decoder

    def digest(self, kind: str, value: str) -> bytes:
        if self._secret is None:
            raise RuntimeError(
                "the identity index has no secret: CustomerRecords(identity_secret=...)"
            )
        return identifier_digest(self._secret, kind, value)

    def create_statements(self) -> list[Composed]:
        tables = SQL(", ").join(
            [self.customers, self.identifiers, self.merges, self.apart, self.refusals]
        )
        # By their shape, not the marker: a create never drops a rebuild in progress.
        identifiers = Literal('"{}"."identity_identifier"'.format(self._schema.replace('"', '""')))
        return [
            SQL("CREATE TABLE IF NOT EXISTS {} (format integer NOT NULL)").format(self.format),
            # Derived tables of format 1 (values in clear: no digest column) go; start
            # rebuilds them from the log (no marker: ``CustomerRecords.index_identities``).
            SQL(
                "DO $$ BEGIN IF to_regclass({i}) IS NOT NULL AND NOT EXISTS (SELECT 1"
                " FROM pg_attribute WHERE attrelid = to_regclass({i}) AND attname = 'digest'"
                " AND NOT attisdropped) THEN DROP TABLE IF EXISTS {t}; END IF; END $$"
            ).format(i=identifiers, t=tables),
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (customer_id text PRIMARY KEY,"
                " originator_id uuid NOT NULL, parent text, survivor text NOT NULL)"
            ).format(self.customers),
            SQL(
                "CREATE INDEX IF NOT EXISTS identity_customer_survivor_idx ON {} (survivor)"
            ).format(self.customers),
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (kind text NOT NULL, digest bytea NOT NULL,"
                " customer_id text NOT NULL, linked_at timestamptz NOT NULL,"
                " linked_by text NOT NULL, version bigint NOT NULL, PRIMARY KEY (kind, digest))"
            ).format(self.identifiers),
            SQL(
                "CREATE INDEX IF NOT EXISTS identity_identifier_customer_idx ON {} (customer_id)"
            ).format(self.identifiers),
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (survivor text NOT NULL, absorbed text NOT NULL,"
                " event_id text NOT NULL, merged_at timestamptz NOT NULL,"
                " kinds text[] NOT NULL, version bigint NOT NULL, split_at timestamptz,"
                " PRIMARY KEY (absorbed, event_id))"
            ).format(self.merges),
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (a text NOT NULL, b text NOT NULL,"
                " PRIMARY KEY (a, b))"
            ).format(self.apart),
            # Raises a unique violation: the recorder's retry on a concurrent write.
            SQL(
                "CREATE OR REPLACE FUNCTION {}(message text) RETURNS void LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'unique_violation',"
                " MESSAGE = message; END $$"
            ).format(self.refuse),
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (seq bigserial PRIMARY KEY,"
                " event_id text NOT NULL, customer_id text NOT NULL, rule text NOT NULL,"
                " kinds text[] NOT NULL, customers text[] NOT NULL,"
                " refused_at timestamptz NOT NULL, version bigint NOT NULL)"
            ).format(self.refusals),
        ]

    # -- writing (in the recorder's transaction, or a rebuild's) ----------------------

    def write(self, cursor: Any, events: Iterable[Any], legacy_links: bool = False) -> None:
        """Bring the index up to date with ``events`` (in log order). ``legacy_links``:
        also link the identifiers that touchpoints of streams from before the index carry
        (a rebuild; first come, first linked).

        Never a prepared statement: in the recorder's pipeline a statement psycopg
        prepares after one that failed (an identifier another recorder linked first) is
        skipped by the server, yet psycopg takes it as prepared, and every later use on
        that connection fails ("prepared statement _pg3_N does not exist")."""
        customers: list[tuple[str, Any]] = []
        links: list[tuple[str, bytes, str, datetime, str, int]] = []
        refusals: list[tuple[str, str, str, str, str, datetime, int]] = []
        changes: list[Any] = []  # merges, splits, erasures: in order after the inserts
        legacy: set[str] = set()
        for event in events:
            if isinstance(event, Customer.Registered):
                customers.append((event.customer_id, event.originator_id))
                if not event.identified:
                    legacy.add(event.customer_id)
            elif isinstance(event, Customer.IdentifiersLinked):
                links += self._links(event, event.linked_at)
            elif isinstance(event, Customer.TouchpointRecorded) and legacy_links:
                if event.customer_id in legacy:
                    links += self._links(event, event.occurred_at)
            elif isinstance(event, Customer.IdentityRefused):
                refusals.append(
                    (
                        event.event_id,
                        event.customer_id,
                        event.rule,
                        _UNIT.join(sorted(event.identifiers)),
                        _UNIT.join(event.customers),
                        event.refused_at,
                        event.originator_version,
                    )
                )
            elif isinstance(event, Customer.Merged | Customer.Split | Customer.Erased):
                changes.append(event)
        if customers:
            cursor.execute(
                SQL(
                    "INSERT INTO {} (customer_id, originator_id, survivor)"
                    " SELECT c, o, c FROM unnest(%s::text[], %s::uuid[]) AS u(c, o)"
                    + (" ON CONFLICT DO NOTHING" if legacy_links else "")
                ).format(self.customers),
                ([c for c, _ in customers], [o for _, o in customers]),
                prepare=False,
            )
        if links:
            cursor.execute(
                SQL(
                    "INSERT INTO {} (kind, digest, customer_id, linked_at, linked_by, version)"
                    " SELECT * FROM unnest(%s::text[], %b::bytea[], %s::text[],"
                    " %b::timestamptz[], %s::text[], %b::bigint[])"
                    + (" ON CONFLICT DO NOTHING" if legacy_links else "")
                ).format(self.identifiers),
                tuple(map(list, zip(*links, strict=True))),
                prepare=False,
            )
        for change in changes:
            if isinstance(change, Customer.Merged):
                self._merge(cursor, change)
            elif isinstance(change, Customer.Split):
                self._split(cursor, change)
            else:
                self.forget(cursor, change.streams)
        if refusals:
            cursor.execute(
                SQL(
                    "INSERT INTO {} (event_id, customer_id, rule, kinds, customers, refused_at,"
                    " version) SELECT e, c, r, string_to_array(ks, chr(31)),"
                    " string_to_array(cs, chr(31)), at, v FROM unnest(%s::text[], %s::text[],"
                    " %s::text[], %s::text[], %s::text[], %b::timestamptz[], %b::bigint[])"
                    " AS u(e, c, r, ks, cs, at, v)"
                ).format(self.refusals),
                tuple(map(list, zip(*refusals, strict=True))),
                prepare=False,
            )

    def _links(self, event: Any, at: datetime) -> list[tuple[str, bytes, str, datetime, str, int]]:
        return [
            (
                kind,
                self.digest(kind, value),
                event.customer_id,
                at,
                event.event_id,
                event.originator_version,
            )
            for kind, value in event.identifiers.items()
        ]

    def check_limits(self, cursor: Any, events: Sequence[Any], rules: IdentityRules) -> None:
        """Fail the write (a unique violation, which the recorder retries on a fresh
        index) when ``events``, just written, take an existing customer past a limit: a
        concurrent writer linked to another of its streams since the index was read.
        It runs inside the event store's write lock, where every earlier writer has
        committed, so it sees what resolution could not; one statement, no round trip."""
        new = {e.customer_id for e in events if isinstance(e, Customer.Registered)}
        streams = sorted(
            {
                e.customer_id
                for e in events
                if isinstance(e, Customer.IdentifiersLinked | Customer.Merged)
                and e.customer_id not in new
            }
        )
        if not streams:
            return
        linked = sorted(
            {k for e in events if isinstance(e, Customer.IdentifiersLinked) for k in e.identifiers}
        )
        merged = any(isinstance(e, Customer.Merged) for e in events)
        cursor.execute(
            SQL(
                "WITH counts AS (SELECT c.survivor, i.kind, count(*) AS n FROM {c} c"
                " JOIN {i} i ON i.customer_id = c.customer_id WHERE c.survivor IN"
                " (SELECT survivor FROM {c} WHERE customer_id = ANY(%(streams)s))"
                " GROUP BY c.survivor, i.kind)"
                " SELECT {refuse}('a concurrent write took customers past a limit: '"
                " || string_agg(survivor || ' ' || n || ' ' || kind, ', '))"
                " FROM counts LEFT JOIN unnest(%(kinds)s::text[], %(limits)s::int[])"
                " AS l(kind, lim) USING (kind)"
                " WHERE (%(merged)s OR kind = ANY(%(linked)s))"
                " AND n > coalesce(lim, %(default)s) HAVING count(*) > 0"
            ).format(c=self.customers, i=self.identifiers, refuse=self.refuse),
            {
                "streams": streams,
                "kinds": list(rules.limits),
                "limits": list(rules.limits.values()),
                "merged": merged,
                "linked": linked,
                "default": rules.default_limit,
            },
            prepare=False,
        )

    def _merge(self, cursor: Any, merged: Customer.Merged) -> None:
        cursor.execute(
            SQL("UPDATE {} SET parent = %s WHERE customer_id = %s").format(self.customers),
            (merged.customer_id, merged.absorbed),
            prepare=False,
        )
        self._resurvive(cursor, merged.absorbed)
        cursor.execute(
            SQL(
                "INSERT INTO {} (survivor, absorbed, event_id, merged_at, kinds, version)"
                " VALUES (%s, %s, %s, %s, %s, %s)"
            ).format(self.merges),
            (
                merged.customer_id,
                merged.absorbed,
                merged.event_id,
                merged.merged_at,
                sorted(merged.identifiers),
                merged.originator_version,
            ),
            prepare=False,
        )

    def _resurvive(self, cursor: Any, stream: str) -> None:
        cursor.execute(SQL(RESURVIVE).format(t=self.customers), {"s": stream}, prepare=False)

    def _split(self, cursor: Any, split: Customer.Split) -> None:
        cursor.execute(
            SQL("UPDATE {} SET parent = NULL WHERE customer_id = %s").format(self.customers),
            (split.released,),
            prepare=False,
        )
        self._resurvive(cursor, split.released)
        cursor.execute(
            SQL(
                "UPDATE {} SET split_at = %s WHERE survivor = %s AND absorbed = %s"
                " AND split_at IS NULL"
            ).format(self.merges),
            (split.split_at, split.customer_id, split.released),
            prepare=False,
        )
        a, b = sorted((split.customer_id, split.released))
        cursor.execute(
            SQL("INSERT INTO {} (a, b) VALUES (%s, %s) ON CONFLICT DO NOTHING").format(self.apart),
            (a, b),
            prepare=False,
        )

    def forget(self, cursor: Any, streams: Sequence[str]) -> None:
        """Erase what the index holds of ``streams`` (a customer erased on request, in
        the erasure's transaction, its keys destroyed): their identifiers go, so nothing
        finds them by one any more, and the merges and conflicts whose events they hold
        name no identifier any more (kinds emptied). The opaque structure stays: stream
        -> survivor, merges, pairs kept apart, so every id still resolves.

        Exactly what a rebuild makes of the erased events (identifiers ``{}``): rows whose
        event is on another stream (a merge into a customer not erased, a refusal
        recorded on one) keep their kinds, as that event keeps its identifiers."""
        wanted = list(streams)
        cursor.execute(
            SQL("DELETE FROM {} WHERE customer_id = ANY(%s)").format(self.identifiers),
            (wanted,),
            prepare=False,
        )
        for table, stream in ((self.merges, "survivor"), (self.refusals, "customer_id")):
            cursor.execute(
                SQL("UPDATE {} SET kinds = '{{}}' WHERE {} = ANY(%s) AND kinds <> '{{}}'").format(
                    table, Identifier(stream)
                ),
                (wanted,),
                prepare=False,
            )

    # -- reading ----------------------------------------------------------------------

    def known(self, identifiers: Sequence[tuple[str, str]]) -> Known:
        """What resolution needs to know of a batch's identifiers: one query for their
        owners (by digest), and (when any is known) one for their groups and the pairs
        kept apart. A group's source ids are their digests (hex): only counted."""
        known = Known()
        if not identifiers:
            return known
        digests = [self.digest(k, v) for k, v in identifiers]
        named = dict(zip(digests, identifiers, strict=True))
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(
                SQL(
                    "SELECT i.digest, i.customer_id, c.survivor FROM {} i"
                    " JOIN unnest(%s::text[], %b::bytea[]) AS w(kind, digest)"
                    " ON i.kind = w.kind AND i.digest = w.digest"
                    " JOIN {} c ON c.customer_id = i.customer_id"
                ).format(self.identifiers, self.customers),
                ([k for k, _ in identifiers], digests),
            )
            for row in cursor.fetchall():
                known.owners[named[bytes(row["digest"])]] = row["customer_id"]
                known.survivors[row["customer_id"]] = row["survivor"]
            survivors = sorted(set(known.survivors.values()))
            if not survivors:
                return known
            cursor.execute(
                SQL(
                    "SELECT c.survivor, i.kind, count(*) AS n,"
                    " array_agg(encode(i.digest, 'hex')) FILTER (WHERE i.kind = 'id')"
                    " AS source_ids FROM {} c JOIN {} i ON i.customer_id = c.customer_id"
                    " WHERE c.survivor = ANY(%s) GROUP BY c.survivor, i.kind"
                ).format(self.customers, self.identifiers),
                (survivors,),
            )
            for row in cursor.fetchall():
                group = known.groups.setdefault(row["survivor"], Group())
                group.counts[row["kind"]] = int(row["n"])
                group.source_ids |= set(row["source_ids"] or ())
            cursor.execute(
                SQL(
                    "SELECT p.a, p.b, ca.survivor AS sa, cb.survivor AS sb FROM {} p"
                    " JOIN {} ca ON ca.customer_id = p.a JOIN {} cb ON cb.customer_id = p.b"
                    " WHERE ca.survivor = ANY(%s) OR cb.survivor = ANY(%s)"
                ).format(self.apart, self.customers, self.customers),
                (survivors, survivors),
            )
            for row in cursor.fetchall():
                known.kept_apart.add(frozenset((row["a"], row["b"])))
                known.survivors.setdefault(row["a"], row["sa"])
                known.survivors.setdefault(row["b"], row["sb"])
        for survivor in survivors:
            known.groups.setdefault(survivor, Group())
        return known

    def first_seen(self, survivors: Sequence[str]) -> dict[str, datetime]:
        """Each group's earliest touchpoint, by event time (one query)."""
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(
                SQL(
                    "SELECT c.survivor, min(t.occurred_at) AS first FROM {} c"
                    " JOIN {} t ON t.originator_id = c.originator_id"
                    " WHERE c.survivor = ANY(%s) GROUP BY c.survivor"
                ).format(self.customers, self.touchpoints),
                (list(survivors),),
            )
            return {row["survivor"]: row["first"] for row in cursor.fetchall()}

    def locate(self, reference: str) -> Located | None:
        """The customer that answers for ``reference``: a customer id (a survivor, or a
        stream merged into one), else a source customer id (kind ``id``, by digest)."""
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(
                SQL(
                    "SELECT customer_id, survivor, false AS by_source FROM {}"
                    " WHERE customer_id = %s"
                    " UNION ALL SELECT i.customer_id, c.survivor, true FROM {} i"
                    " JOIN {} c ON c.customer_id = i.customer_id"
                    " WHERE i.kind = 'id' AND i.digest = %s ORDER BY by_source LIMIT 1"
                ).format(self.customers, self.identifiers, self.customers),
                (reference, self.digest("id", reference)),
            )
            row = cursor.fetchone()
        if row is None:
            return None
        return Located(
            reference if row["by_source"] else row["customer_id"], row["survivor"], row["by_source"]
        )

    def find(self, identifiers: Sequence[tuple[str, str]]) -> list[tuple[str, str, str]]:
        """(kind, value, survivor) for each of these (normalised) identifiers the index
        knows, in the order asked; looked up by digest."""
        digests = [self.digest(k, v) for k, v in identifiers]
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(
                SQL(
                    "SELECT w.n, c.survivor FROM {} i"
                    " JOIN unnest(%s::text[], %b::bytea[]) WITH ORDINALITY AS w(kind, digest, n)"
                    " ON i.kind = w.kind AND i.digest = w.digest"
                    " JOIN {} c ON c.customer_id = i.customer_id ORDER BY w.n"
                ).format(self.identifiers, self.customers),
                ([k for k, _ in identifiers], digests),
            )
            return [(*identifiers[r["n"] - 1], r["survivor"]) for r in cursor.fetchall()]

    def members(self, survivor: str) -> list[str]:
        """The streams a survivor answers for (itself first)."""
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(
                SQL(
                    "SELECT customer_id FROM {} WHERE survivor = %s"
                    " ORDER BY customer_id <> survivor, customer_id"
                ).format(self.customers),
                (survivor,),
            )
            return [row["customer_id"] for row in cursor.fetchall()] or [survivor]

    def parents(self, survivor: str) -> dict[str, str | None]:
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(
                SQL("SELECT customer_id, parent FROM {} WHERE survivor = %s").format(
                    self.customers
                ),
                (survivor,),
            )
            return {row["customer_id"]: row["parent"] for row in cursor.fetchall()}

    def identifiers_of(self, survivor: str) -> list[dict[str, Any]]:
        """Every identifier linked to a customer's streams, first seen first, each value
        read from the event that linked it (one query; see the module docstring)."""
        with self._connect() as conn, conn.cursor() as cursor:
            rows = self._identifier_rows(cursor, survivor)
        return self._identifiers_shown(rows, _Carriers(rows, self._decoder))

    def merge_history(self, survivor: str) -> list[dict[str, Any]]:
        """Every merge into or of the customer's streams (split ones too), oldest first,
        each with the identifiers that proved it as its ``Merged`` event holds them."""
        with self._connect() as conn, conn.cursor() as cursor:
            rows = self._merge_rows(cursor, survivor)
        return self._merges_shown(rows, _Carriers(rows, self._decoder))

    def identities(self, survivor: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``identifiers_of`` and ``merge_history`` together, as a customer read shows
        them: one connection, and the events of both read as one batch (one key load)."""
        with self._connect() as conn, conn.cursor() as cursor:
            identifier_rows = self._identifier_rows(cursor, survivor)
            merge_rows = self._merge_rows(cursor, survivor)
        carriers = _Carriers([*identifier_rows, *merge_rows], self._decoder)
        return (
            self._identifiers_shown(identifier_rows, carriers),
            self._merges_shown(merge_rows, carriers),
        )

    def _identifier_rows(self, cursor: Any, survivor: str) -> list[Any]:
        cursor.execute(
            SQL(
                "SELECT i.kind, i.digest, i.customer_id, i.linked_at, i.linked_by,"
                " i.version, c.originator_id, e.topic, e.state FROM {} i"
                " JOIN {} c ON c.customer_id = i.customer_id"
                " LEFT JOIN {} e ON e.originator_id = c.originator_id"
                " AND e.originator_version = i.version WHERE c.survivor = %s"
            ).format(self.identifiers, self.customers, self.events),
            (survivor,),
        )
        return list(cursor.fetchall())

    def _identifiers_shown(self, rows: Sequence[Any], carriers: _Carriers) -> list[dict[str, Any]]:
        shown: list[tuple[tuple[datetime, str, str], dict[str, Any]]] = []
        for row in rows:
            kind, value = row["kind"], carriers.identifiers(row).get(row["kind"])
            if value is None or self.digest(kind, value) != bytes(row["digest"]):
                continue  # its event cannot be read (erased): nothing to show
            item = {
                "kind": kind,
                "value": value,
                "first_seen": utc_iso(row["linked_at"]),
                "first_seen_in": row["linked_by"],
                "stream": row["customer_id"],
            }
            shown.append(((row["linked_at"], kind, value), item))
        return [item for _, item in sorted(shown, key=lambda pair: pair[0])]

    def _merge_rows(self, cursor: Any, survivor: str) -> list[Any]:
        cursor.execute(
            SQL(
                "SELECT m.*, c.originator_id, e.topic, e.state FROM {m} m"
                " JOIN {c} c ON c.customer_id = m.survivor"
                " LEFT JOIN {e} e ON e.originator_id = c.originator_id"
                " AND e.originator_version = m.version"
                " WHERE m.survivor IN (SELECT customer_id FROM {c} WHERE survivor = %s)"
                " OR m.absorbed IN (SELECT customer_id FROM {c} WHERE survivor = %s)"
                " ORDER BY m.merged_at, m.absorbed"
            ).format(m=self.merges, c=self.customers, e=self.events),
            (survivor, survivor),
        )
        return list(cursor.fetchall())

    @staticmethod
    def _merges_shown(rows: Sequence[Any], carriers: _Carriers) -> list[dict[str, Any]]:
        return [
            {
                "survivor": row["survivor"],
                "absorbed": row["absorbed"],
                "event_id": row["event_id"],
                "merged_at": utc_iso(row["merged_at"]),
                "identifiers": _kinds_of(carriers.identifiers(row), row["kinds"]),
                "split_at": utc_iso(row["split_at"]) if row["split_at"] else None,
            }
            for row in rows
        ]

    def conflicts(self, *, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        """Refused merges and links, newest first, and how many there are; the reason and
        the identifiers as the ``IdentityRefused`` event holds them (one query a page)."""
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(SQL("SELECT count(*) AS n FROM {}").format(self.refusals))
            row = cursor.fetchone()
            cursor.execute(
                SQL(
                    "SELECT r.*, c.originator_id, e.topic, e.state FROM {} r"
                    " JOIN {} c ON c.customer_id = r.customer_id"
                    " LEFT JOIN {} e ON e.originator_id = c.originator_id"
                    " AND e.originator_version = r.version"
                    " ORDER BY r.seq DESC LIMIT %s OFFSET %s"
                ).format(self.refusals, self.customers, self.events),
                (limit, offset),
            )
            rows = cursor.fetchall()
        carriers = _Carriers(rows, self._decoder)
        items = []
        for r in rows:
            event = carriers.event(r)
            if not r["kinds"] or (event is not None and not event.reason):
                reason = FORGOTTEN  # a refusal names at least one identifier, and why
            else:
                reason = event.reason if event is not None else UNREADABLE
            items.append(
                {
                    "event_id": r["event_id"],
                    "recorded_on": r["customer_id"],
                    "rule": r["rule"],
                    "reason": reason,
                    "identifiers": _kinds_of(carriers.identifiers(r), r["kinds"]),
                    "customers": list(r["customers"]),
                    "refused_at": utc_iso(r["refused_at"]),
                }
            )
        return int(row["n"]) if row else 0, items

    def is_empty(self) -> bool:
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(
                SQL("SELECT NOT EXISTS (SELECT 1 FROM {}) AS empty").format(self.customers)
            )
            row = cursor.fetchone()
            return bool(row and row["empty"])

    def is_current(self) -> bool:
        """Whether the index was built, to the end, in this code's ``FORMAT``."""
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(
                SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE format = %s) AS current").format(
                    self.format
                ),
                (FORMAT,),
            )
            row = cursor.fetchone()
            return bool(row and row["current"])

    def clear(self, cursor: Any) -> None:
        """Empty every table, the format marker too (a rebuild cut short is redone)."""
        cursor.execute(
            SQL("TRUNCATE {}, {}, {}, {}, {}, {} RESTART IDENTITY").format(
                self.customers,
                self.identifiers,
                self.merges,
                self.apart,
                self.refusals,
                self.format,
            )
        )

    def mark_current(self, cursor: Any) -> None:
        """Record that the index is built in ``FORMAT`` (a rebuild's last step)."""
        cursor.execute(SQL("DELETE FROM {}").format(self.format))
        cursor.execute(SQL("INSERT INTO {} (format) VALUES (%s)").format(self.format), (FORMAT,))

    def survivors_of(self, streams: Sequence[str]) -> dict[str, str]:
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(
                SQL("SELECT customer_id, survivor FROM {} WHERE customer_id = ANY(%s)").format(
                    self.customers
                ),
                (list(streams),),
            )
            return {row["customer_id"]: row["survivor"] for row in cursor.fetchall()}


class _Carriers:
    """The events a page of index rows points at (fetched with the rows), read as one
    batch; one that cannot be read (an erased customer's) is None."""

    def __init__(self, rows: Sequence[Any], decoder: Decoder | None) -> None:
        if decoder is None:
            raise RuntimeError("the identity index cannot read events: configure() it")
        stored = {
            (r["originator_id"], r["version"]): StoredEvent(
                r["originator_id"], r["version"], r["topic"], bytes(r["state"])
            )
            for r in rows
            if r["state"] is not None
        }
        self._read: dict[tuple[Any, int], Any] = {}
        if not stored:
            return
        try:
            decode = decoder(list(stored.values()))
        except Exception:  # one stream's keys cannot be loaded: each on its own
            log.debug("identity: a batch of events cannot be read together", exc_info=True)
            decode = _one_by_one(decoder)
        for place, event in stored.items():
            try:
                self._read[place] = decode(event)
            except Exception:  # erased (its key destroyed) or unreadable: not shown
                log.debug("identity: event %s@%d cannot be read", *place, exc_info=True)

    def event(self, row: Any) -> Any:
        return self._read.get((row["originator_id"], row["version"]))

    def identifiers(self, row: Any) -> dict[str, str]:
        identifiers = getattr(self.event(row), "identifiers", None)
        return dict(identifiers) if isinstance(identifiers, dict) else {}


def _one_by_one(decoder: Decoder) -> Callable[[StoredEvent], Any]:
    return lambda event: decoder([event])(event)


def _kinds_of(identifiers: dict[str, str], kinds: Sequence[str]) -> dict[str, str]:
    return {kind: identifiers[kind] for kind in kinds if kind in identifiers}
