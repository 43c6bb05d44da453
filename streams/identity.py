"""The identity index: identifier -> customer stream, stream -> survivor, on the write side.

Derived state, written by the recorder in the same transaction as the events it follows
from (``IdentityIndex.write`` reads the identity events about to be stored), and rebuilt
from the event store alone by folding the same function over the log (``rebuild``).

Tables (in the event store's schema):
- ``identity_customer``: every stream, its parent (the stream it was merged into) and
  its survivor (the root of its group, which answers for it);
- ``identity_identifier``: (kind, value) -> the stream that first carried it, when and by
  which touchpoint: unique, so two recorders linking one identifier at once conflict and
  one retries;
- ``identity_merge``: every merge, with its proof and, once undone, when it was split;
- ``identity_apart``: pairs a split keeps apart;
- ``identity_conflict``: every merge or link a guard rail refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.sql import SQL, Composed, Identifier

from domain.customer import Customer
from domain.identity import Group, IdentityRules, Known
from projections.base import utc_iso
from projections.store import RESURVIVE

TABLES = (
    "identity_customer",
    "identity_identifier",
    "identity_merge",
    "identity_apart",
    "identity_conflict",
)


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
    def __init__(self, schema: str, connect: Callable[[], Any]) -> None:
        self._connect = connect  # a context manager giving a psycopg connection

        def t(name: str) -> Identifier:
            return Identifier(schema, name)

        self.customers, self.identifiers = t("identity_customer"), t("identity_identifier")
        self.merges, self.apart = t("identity_merge"), t("identity_apart")
        self.refusals = t("identity_conflict")
        self.touchpoints = t("touchpoint_index")
        self.refuse = t("peakend_identity_conflict")

    def create_statements(self) -> list[Composed]:
        return [
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (customer_id text PRIMARY KEY,"
                " originator_id uuid NOT NULL, parent text, survivor text NOT NULL)"
            ).format(self.customers),
            SQL(
                "CREATE INDEX IF NOT EXISTS identity_customer_survivor_idx ON {} (survivor)"
            ).format(self.customers),
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (kind text NOT NULL, value text NOT NULL,"
                " customer_id text NOT NULL, linked_at timestamptz NOT NULL,"
                " linked_by text NOT NULL, PRIMARY KEY (kind, value))"
            ).format(self.identifiers),
            SQL(
                "CREATE INDEX IF NOT EXISTS identity_identifier_customer_idx ON {} (customer_id)"
            ).format(self.identifiers),
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (survivor text NOT NULL, absorbed text NOT NULL,"
                " event_id text NOT NULL, merged_at timestamptz NOT NULL,"
                " identifiers jsonb NOT NULL, split_at timestamptz,"
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
                " reason text NOT NULL, identifiers jsonb NOT NULL, customers text[] NOT NULL,"
                " refused_at timestamptz NOT NULL)"
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
        links: list[tuple[str, str, str, datetime, str]] = []
        refusals: list[tuple[str, str, str, str, str, list[str], datetime]] = []
        changes: list[Any] = []  # merges and splits, applied in order after the inserts
        legacy: set[str] = set()
        for event in events:
            if isinstance(event, Customer.Registered):
                customers.append((event.customer_id, event.originator_id))
                if not event.identified:
                    legacy.add(event.customer_id)
            elif isinstance(event, Customer.IdentifiersLinked):
                links += [
                    (kind, value, event.customer_id, event.linked_at, event.event_id)
                    for kind, value in event.identifiers.items()
                ]
            elif isinstance(event, Customer.TouchpointRecorded) and legacy_links:
                if event.customer_id in legacy:
                    links += [
                        (kind, value, event.customer_id, event.occurred_at, event.event_id)
                        for kind, value in event.identifiers.items()
                    ]
            elif isinstance(event, Customer.IdentityRefused):
                refusals.append(
                    (
                        event.event_id,
                        event.customer_id,
                        event.rule,
                        event.reason,
                        json.dumps(event.identifiers, sort_keys=True),
                        list(event.customers),
                        event.refused_at,
                    )
                )
            elif isinstance(event, Customer.Merged | Customer.Split):
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
                    "INSERT INTO {} (kind, value, customer_id, linked_at, linked_by)"
                    " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[],"
                    " %b::timestamptz[], %s::text[])"
                    + (" ON CONFLICT DO NOTHING" if legacy_links else "")
                ).format(self.identifiers),
                tuple(map(list, zip(*links, strict=True))),
                prepare=False,
            )
        for change in changes:
            if isinstance(change, Customer.Merged):
                self._merge(cursor, change)
            else:
                self._split(cursor, change)
        if refusals:
            cursor.execute(
                SQL(
                    "INSERT INTO {} (event_id, customer_id, rule, reason, identifiers, customers,"
                    " refused_at) SELECT e, c, r, why, i::jsonb, string_to_array(cs, chr(31)),"
                    " at FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
                    " %s::text[], %b::timestamptz[]) AS u(e, c, r, why, i, cs, at)"
                ).format(self.refusals),
                (
                    [r[0] for r in refusals],
                    [r[1] for r in refusals],
                    [r[2] for r in refusals],
                    [r[3] for r in refusals],
                    [r[4] for r in refusals],
                    [chr(31).join(r[5]) for r in refusals],
                    [r[6] for r in refusals],
                ),
                prepare=False,
            )

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
                "INSERT INTO {} (survivor, absorbed, event_id, merged_at, identifiers)"
                " VALUES (%s, %s, %s, %s, %s::jsonb)"
            ).format(self.merges),
            (
                merged.customer_id,
                merged.absorbed,
                merged.event_id,
                merged.merged_at,
                json.dumps(merged.identifiers, sort_keys=True),
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

    # -- reading ----------------------------------------------------------------------

    def known(self, identifiers: Sequence[tuple[str, str]]) -> Known:
        """What resolution needs to know of a batch's identifiers: one query for their
        owners, and (when any is known) one for their groups and the pairs kept apart."""
        known = Known()
        if not identifiers:
            return known
        kinds, values = [k for k, _ in identifiers], [v for _, v in identifiers]
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(
                SQL(
                    "SELECT i.kind, i.value, i.customer_id, c.survivor FROM {} i"
                    " JOIN unnest(%s::text[], %s::text[]) AS w(kind, value)"
                    " ON i.kind = w.kind AND i.value = w.value"
                    " JOIN {} c ON c.customer_id = i.customer_id"
                ).format(self.identifiers, self.customers),
                (kinds, values),
            )
            for row in cursor.fetchall():
                known.owners[(row["kind"], row["value"])] = row["customer_id"]
                known.survivors[row["customer_id"]] = row["survivor"]
            survivors = sorted(set(known.survivors.values()))
            if not survivors:
                return known
            cursor.execute(
                SQL(
                    "SELECT c.survivor, i.kind, count(*) AS n,"
                    " array_agg(i.value) FILTER (WHERE i.kind = 'id') AS source_ids"
                    " FROM {} c JOIN {} i ON i.customer_id = c.customer_id"
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
        stream merged into one), else a source customer id (kind ``id``)."""
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(
                SQL(
                    "SELECT customer_id, survivor, false AS by_source FROM {}"
                    " WHERE customer_id = %s"
                    " UNION ALL SELECT i.customer_id, c.survivor, true FROM {} i"
                    " JOIN {} c ON c.customer_id = i.customer_id"
                    " WHERE i.kind = 'id' AND i.value = %s ORDER BY by_source LIMIT 1"
                ).format(self.customers, self.identifiers, self.customers),
                (reference, reference),
            )
            row = cursor.fetchone()
        if row is None:
            return None
        return Located(
            reference if row["by_source"] else row["customer_id"], row["survivor"], row["by_source"]
        )

    def find(self, identifiers: Sequence[tuple[str, str]]) -> list[tuple[str, str, str]]:
        """(kind, value, survivor) for each of these identifiers the index knows."""
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(
                SQL(
                    "SELECT i.kind, i.value, c.survivor FROM {} i"
                    " JOIN unnest(%s::text[], %s::text[]) WITH ORDINALITY AS w(kind, value, n)"
                    " ON i.kind = w.kind AND i.value = w.value"
                    " JOIN {} c ON c.customer_id = i.customer_id ORDER BY w.n"
                ).format(self.identifiers, self.customers),
                ([k for k, _ in identifiers], [v for _, v in identifiers]),
            )
            return [(r["kind"], r["value"], r["survivor"]) for r in cursor.fetchall()]

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
        """Every identifier linked to a customer's streams, first seen first."""
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(
                SQL(
                    "SELECT i.kind, i.value, i.customer_id, i.linked_at, i.linked_by FROM {} i"
                    " JOIN {} c ON c.customer_id = i.customer_id WHERE c.survivor = %s"
                    ' ORDER BY i.linked_at, i.kind, i.value COLLATE "C"'
                ).format(self.identifiers, self.customers),
                (survivor,),
            )
            return [
                {
                    "kind": row["kind"],
                    "value": row["value"],
                    "first_seen": utc_iso(row["linked_at"]),
                    "first_seen_in": row["linked_by"],
                    "stream": row["customer_id"],
                }
                for row in cursor.fetchall()
            ]

    def merge_history(self, survivor: str) -> list[dict[str, Any]]:
        """Every merge into or of the customer's streams (split ones too), oldest first."""
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(
                SQL(
                    "SELECT m.* FROM {} m WHERE m.survivor IN"
                    " (SELECT customer_id FROM {} WHERE survivor = %s)"
                    " OR m.absorbed IN (SELECT customer_id FROM {} WHERE survivor = %s)"
                    " ORDER BY m.merged_at, m.absorbed"
                ).format(self.merges, self.customers, self.customers),
                (survivor, survivor),
            )
            return [_merge_out(row) for row in cursor.fetchall()]

    def conflicts(self, *, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        """Refused merges and links, newest first, and how many there are."""
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(SQL("SELECT count(*) AS n FROM {}").format(self.refusals))
            row = cursor.fetchone()
            cursor.execute(
                SQL("SELECT * FROM {} ORDER BY seq DESC LIMIT %s OFFSET %s").format(self.refusals),
                (limit, offset),
            )
            return int(row["n"]) if row else 0, [
                {
                    "event_id": r["event_id"],
                    "recorded_on": r["customer_id"],
                    "rule": r["rule"],
                    "reason": r["reason"],
                    "identifiers": r["identifiers"],
                    "customers": list(r["customers"]),
                    "refused_at": utc_iso(r["refused_at"]),
                }
                for r in cursor.fetchall()
            ]

    def is_empty(self) -> bool:
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(
                SQL("SELECT NOT EXISTS (SELECT 1 FROM {}) AS empty").format(self.customers)
            )
            row = cursor.fetchone()
            return bool(row and row["empty"])

    def clear(self, cursor: Any) -> None:
        cursor.execute(
            SQL("TRUNCATE {}, {}, {}, {}, {} RESTART IDENTITY").format(
                self.customers, self.identifiers, self.merges, self.apart, self.refusals
            )
        )

    def survivors_of(self, streams: Sequence[str]) -> dict[str, str]:
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(
                SQL("SELECT customer_id, survivor FROM {} WHERE customer_id = ANY(%s)").format(
                    self.customers
                ),
                (list(streams),),
            )
            return {row["customer_id"]: row["survivor"] for row in cursor.fetchall()}


def _merge_out(row: Any) -> dict[str, Any]:
    return {
        "survivor": row["survivor"],
        "absorbed": row["absorbed"],
        "event_id": row["event_id"],
        "merged_at": utc_iso(row["merged_at"]),
        "identifiers": row["identifiers"],
        "split_at": utc_iso(row["split_at"]) if row["split_at"] else None,
    }
