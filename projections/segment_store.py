"""Segment definitions, current members and the history of who entered and left."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import psycopg2.extras

from domain.segments import membership_changes
from projections.store import ReadModelStore


def create_tables(store: ReadModelStore) -> None:
    """Segment tables (created at start-up)."""
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS segment (name text PRIMARY KEY, rule jsonb NOT NULL,"
            " description text, created_at timestamptz NOT NULL DEFAULT now());"
            "CREATE TABLE IF NOT EXISTS segment_member (segment text NOT NULL REFERENCES"
            " segment ON DELETE CASCADE, customer_id text NOT NULL,"
            " since timestamptz NOT NULL, PRIMARY KEY (segment, customer_id));"
            "CREATE TABLE IF NOT EXISTS segment_change (id bigserial PRIMARY KEY,"
            " segment text NOT NULL REFERENCES segment ON DELETE CASCADE,"
            " customer_id text NOT NULL, change text NOT NULL, at timestamptz NOT NULL);"
            # Why the last evaluation of a segment failed, if it did: one failing segment
            # is marked and skipped, the others are evaluated (api/segments.py).
            "ALTER TABLE segment ADD COLUMN IF NOT EXISTS evaluated_at timestamptz,"
            " ADD COLUMN IF NOT EXISTS error text"
        )


def define(store: ReadModelStore, name: str, rule: dict[str, Any], description: str | None) -> bool:
    """Create or replace a segment; True when it is new."""
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO segment (name, rule, description) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET rule = EXCLUDED.rule,"
            " description = EXCLUDED.description RETURNING (xmax = 0)",
            (name, json.dumps(rule), description),
        )
        row = cur.fetchone()
        return bool(row and row[0])


def definitions(store: ReadModelStore) -> list[dict[str, Any]]:
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT s.name, s.rule, s.description, s.created_at, s.evaluated_at, s.error,"
            " (SELECT count(*) FROM segment_member m WHERE m.segment = s.name)"
            " FROM segment s ORDER BY s.name"
        )
        return [
            {
                "name": n,
                "rule": r,
                "description": d,
                "created_at": c.isoformat(),
                "evaluated_at": e.isoformat() if e else None,
                "error": why,
                "members": k,
            }
            for n, r, d, c, e, why, k in cur.fetchall()
        ]


def delete(store: ReadModelStore, name: str) -> bool:
    """Delete a segment with its members and its entries/exits history (the foreign keys
    cascade); False when there was none."""
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM segment WHERE name = %s", (name,))
        return bool(cur.rowcount)


def mark_failed(store: ReadModelStore, name: str, error: str, at: datetime) -> None:
    """Record why the segment could not be evaluated at ``at``; members stay as they were."""
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE segment SET evaluated_at = %s, error = %s WHERE name = %s", (at, error, name)
        )


def record_membership(
    store: ReadModelStore, name: str, members: set[str], at: datetime
) -> tuple[set[str], set[str]]:
    """Make ``members`` the segment's members, recording who entered and who left, in
    one transaction (concurrent evaluations queue on the segment's row)."""
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE segment SET evaluated_at = %s, error = NULL WHERE name = %s RETURNING 1",
            (at, name),
        )  # the row lock makes concurrent evaluations of one segment queue
        if cur.fetchone() is None:
            raise KeyError(name)
        cur.execute("SELECT customer_id FROM segment_member WHERE segment = %s", (name,))
        before = {row[0] for row in cur.fetchall()}
        entered, left = membership_changes(before, members)
        if left:
            cur.execute(
                "DELETE FROM segment_member WHERE segment = %s AND customer_id = ANY(%s)",
                (name, sorted(left)),
            )
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO segment_member (segment, customer_id, since) VALUES %s",
            [(name, c, at) for c in sorted(entered)],
        )
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO segment_change (segment, customer_id, change, at) VALUES %s",
            [(name, c, "entered", at) for c in sorted(entered)]
            + [(name, c, "left", at) for c in sorted(left)],
        )
        return entered, left


def members(store: ReadModelStore, name: str) -> list[dict[str, Any]]:
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT customer_id, since FROM segment_member WHERE segment = %s ORDER BY customer_id",
            (name,),
        )
        return [{"customer_id": c, "since": s.isoformat()} for c, s in cur.fetchall()]


def changes(store: ReadModelStore, name: str, limit: int) -> list[dict[str, Any]]:
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT id, customer_id, change, at FROM segment_change"
            " WHERE segment = %s ORDER BY id DESC LIMIT %s",
            (name, limit),
        )
        return [
            {"id": i, "customer_id": c, "change": k, "at": a.isoformat()}
            for i, c, k, a in cur.fetchall()
        ]
