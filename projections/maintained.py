"""Maintained measures and the change feed, written in the projector's transaction.

Every customer has one row in ``rm_measures``: the measures document
(``measures.derive``) as of ``derived_at``, its derived facts, the population-inputs
version it was derived with, and ``due_at``, the next instant it would change with no
new event. Three things re-derive a customer, all of them met by the projector in the
event log, and each writes the changes of the customer's facts to ``rm_change`` in the
same transaction as the row:

- a touchpoint (``after_events``, with the batch's trail): the customer is derived after
  each of its events, at the event's recorded time, first stepping through the instants
  that fell due before it;
- a tick of the clock (``on_tick``; ``domain.clock.Tick``, recorded by the scheduler):
  customers whose ``due_at`` has passed, then customers behind the tick's inputs
  version, a bounded number per tick;
- a merge, split or erasure (``rederive``), after the documents were refolded.

Time passes for the measures only where the log says so, so the changes a history
produces do not depend on how events were batched or when the projector ran, and a
replay of the log rebuilds the same rows and the same feed
(``tests/integration/test_change_feed.py``). Positions are taken under one advisory
lock held to commit, so a follower reading ``position > p`` never skips a row committed
later with a lower position; a change's ``change_id`` is the same on a replay.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from domain import segments, value
from domain.alerting import OperatorAction, Silence, silenced_by
from domain.segments import Segment
from projections import alerts, analytics, customer, journeys
from projections.base import RecordedTouchpoint, State, utc_iso
from projections.measures import (
    Change,
    ChangeKind,
    Inputs,
    Rules,
    changes,
    derive,
    dumps,
    facts,
    gap_end,
    journey_changes,
    journey_status,
    next_due,
    rfm_bounds,
    segment_document,
    tier_thresholds,
)
from projections.store import ReadModelStore, Step

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key of the change feed's position order ("peakend-feed").
FEED_LOCK = 0x7065616B_66656564
MAX_STEPS = 10_000  # clock instants one customer is stepped through at most, per call


@dataclass
class Row:
    """A customer's maintained state while it is being re-derived."""

    customer_id: str
    measures: State | None = None
    facts: State | None = None
    derived_at: datetime | None = None
    due_at: datetime | None = None
    inputs_version: int = 0
    segments_version: int = 0
    dirty: bool = False
    # The measures were derived (or restored) here: the whole row is written. A row only
    # dirty (a journey step of a type no measure reads) writes its facts and due instant.
    measured: bool = False
    # The revenue at risk the row held when loaded: what _write adds the change of to
    # the totals.
    loaded_at_risk: State = field(default_factory=dict)
    error: str | None = None  # why the rules failed on this customer (None: they did not)
    found: list[tuple[str, Change, dict[str, Any]]] = field(default_factory=list)


def tables(store: ReadModelStore) -> tuple[sql.Identifier, sql.Identifier]:
    """This generation's measures and change-feed tables."""
    return (
        sql.Identifier(f"rm_measures{store.generation}"),
        sql.Identifier(f"rm_change{store.generation}"),
    )


def create_tables(store: ReadModelStore, *, fresh: bool = False) -> bool:
    """Create what is missing; True when the measures table is new."""
    measures_table, changes_table = tables(store)
    g = store.generation
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NULL", (measures_table.strings[0],))
        row = cur.fetchone()
        created = bool(row and row[0])
        if fresh:
            cur.execute(
                sql.SQL("DROP TABLE IF EXISTS {}, {}").format(measures_table, changes_table)
            )
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (customer_id text PRIMARY KEY,"
                " measures jsonb NOT NULL, facts jsonb NOT NULL,"
                " derived_at timestamptz NOT NULL, due_at timestamptz,"
                " inputs_version integer NOT NULL, segments_version integer NOT NULL,"
                " rule_version integer NOT NULL, error text)"
            ).format(measures_table)
        )
        cur.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (due_at, customer_id)").format(
                sql.Identifier(f"rm_measures{g}_due_idx"), measures_table
            )
        )
        cur.execute(
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} (customer_id) WHERE error IS NOT NULL"
            ).format(sql.Identifier(f"rm_measures{g}_failed_idx"), measures_table)
        )
        for column in ("inputs_version", "segments_version"):
            cur.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({}, customer_id)").format(
                    sql.Identifier(f"rm_measures{g}_{column.split('_')[0]}_idx"),
                    measures_table,
                    sql.Identifier(column),
                )
            )
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (position bigserial PRIMARY KEY,"
                " change_id text NOT NULL UNIQUE, kind text NOT NULL,"
                " customer_id text NOT NULL, subject text, before jsonb, after jsonb,"
                " cause jsonb NOT NULL, at timestamptz NOT NULL,"
                " recorded_at timestamptz NOT NULL DEFAULT now())"
            ).format(changes_table)
        )
        for column in ("customer_id", "kind"):
            cur.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({}, position)").format(
                    sql.Identifier(f"rm_change{g}_{column}_idx"),
                    changes_table,
                    sql.Identifier(column),
                )
            )
        if fresh:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_clock_table(store)))
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id int PRIMARY KEY CHECK (id = 1),"
                " at timestamptz, inputs_version integer NOT NULL DEFAULT 0, tick text,"
                " segments_version integer NOT NULL DEFAULT 0, segments_at timestamptz)"
            ).format(_clock_table(store))
        )
        if fresh:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_segment_table(store)))
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, stream uuid NOT NULL UNIQUE,"
                " rule jsonb NOT NULL,"
                " description text, version integer NOT NULL, deleted boolean NOT NULL,"
                " created_at timestamptz NOT NULL, defined_at timestamptz NOT NULL)"
            ).format(_segment_table(store))
        )
        cur.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin ((facts -> 'segments'))").format(
                sql.Identifier(f"rm_measures{g}_members_idx"), measures_table
            )
        )
        if fresh:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(alert_table(store)))
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, customer_id text NOT NULL,"
                " rule text NOT NULL, severity text NOT NULL, status text NOT NULL,"
                " tier text, alert jsonb NOT NULL, opened_at timestamptz NOT NULL,"
                " updated_at timestamptz NOT NULL, position bigint NOT NULL)"
            ).format(alert_table(store))
        )
        for name, columns in (
            ("status", "status, position"),
            ("customer", "customer_id, position"),
            ("subject", "(alert -> 'subject' ->> 'id'), position"),
        ):
            cur.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                    sql.Identifier(f"rm_alert{g}_{name}_idx"),
                    alert_table(store),
                    sql.SQL(columns),
                )
            )
        if fresh:
            cur.execute(
                sql.SQL("DROP TABLE IF EXISTS {}, {}").format(
                    demand_table(store), channel_table(store)
                )
            )
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (channel text NOT NULL,"
                " slot_start timestamptz NOT NULL, touchpoints integer NOT NULL,"
                " PRIMARY KEY (channel, slot_start))"
            ).format(demand_table(store))
        )
        # Waits came after the table: a database made before has them added, empty.
        cur.execute(
            sql.SQL(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS waits integer NOT NULL DEFAULT 0,"
                " ADD COLUMN IF NOT EXISTS wait_seconds double precision NOT NULL DEFAULT 0"
            ).format(demand_table(store))
        )
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (channel text PRIMARY KEY, alerts jsonb NOT NULL,"
                " derived_at timestamptz NOT NULL, due_at timestamptz)"
            ).format(channel_table(store))
        )
        if fresh:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(risk_table(store)))
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (key text PRIMARY KEY, amount numeric NOT NULL,"
                " customers integer NOT NULL)"
            ).format(risk_table(store))
        )
        if fresh:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(silence_table(store)))
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, matcher jsonb NOT NULL,"
                " starts_at timestamptz NOT NULL, ends_at timestamptz NOT NULL,"
                " created_by text NOT NULL, comment text, expired_at timestamptz,"
                " expired_by text)"
            ).format(silence_table(store))
        )
        cur.execute(
            "CREATE TABLE IF NOT EXISTS population_inputs (version serial PRIMARY KEY,"
            " computed_at timestamptz NOT NULL, inputs jsonb NOT NULL)"
        )
    return created


def swap_in(cur: Any, rebuilt: ReadModelStore, live: ReadModelStore) -> None:
    """Rename a rebuilt generation's tables (and their indexes) to the live names."""
    for name, indexes in (
        ("rm_clock", ("pkey",)),
        ("rm_segment", ("pkey", "stream_key")),
        (
            "rm_measures",
            ("pkey", "due_idx", "inputs_idx", "segments_idx", "members_idx", "failed_idx"),
        ),
        ("rm_change", ("pkey", "change_id_key", "customer_id_idx", "kind_idx")),
        ("rm_alert", ("pkey", "status_idx", "customer_idx", "subject_idx")),
        ("rm_silence", ("pkey",)),
        ("rm_risk", ("pkey",)),
        ("rm_demand", ("pkey",)),
        ("rm_channel", ("pkey",)),
    ):
        old, new = f"{name}{rebuilt.generation}", f"{name}{live.generation}"
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(new)))
        cur.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
        )
        for index in indexes:
            cur.execute(
                sql.SQL("ALTER INDEX IF EXISTS {} RENAME TO {}").format(
                    sql.Identifier(f"{old}_{index}"), sql.Identifier(f"{new}_{index}")
                )
            )
    cur.execute(
        sql.SQL("ALTER SEQUENCE IF EXISTS {} RENAME TO {}").format(
            sql.Identifier(f"rm_change{rebuilt.generation}_position_seq"),
            sql.Identifier(f"rm_change{live.generation}_position_seq"),
        )
    )


# -- population inputs ------------------------------------------------------------------


def input_versions(cur: Any, since: int = 0) -> list[Inputs]:
    """The population-inputs versions from ``since`` on, oldest first."""
    cur.execute(
        "SELECT version, computed_at, inputs FROM population_inputs WHERE version >= %s"
        " ORDER BY version",
        (since,),
    )
    return [
        Inputs.of({**held, "version": version, "computed_at": utc_iso(at)})
        for version, at, held in cur.fetchall()
    ]


def input_versions_all(store: ReadModelStore) -> list[Inputs]:
    """Every population-inputs version, oldest first."""
    with store.connection() as conn, conn.cursor() as cur:
        return input_versions(cur)


def publish_inputs(store: ReadModelStore, inputs: Inputs, at: datetime) -> Inputs | None:
    """Store ``inputs`` as a new version effective from ``at``, unless they say what the
    latest version says; return the new version (None: unchanged)."""
    held = {k: v for k, v in inputs.to_json().items() if k not in ("version", "computed_at")}
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute("LOCK TABLE population_inputs IN EXCLUSIVE MODE")
        cur.execute("SELECT inputs FROM population_inputs ORDER BY version DESC LIMIT 1")
        row = cur.fetchone()
        if row is not None and row[0] == json.loads(json.dumps(held)):
            return None
        cur.execute(
            "INSERT INTO population_inputs (computed_at, inputs) VALUES (%s, %s) RETURNING version",
            (at, json.dumps(held)),
        )
        created = cur.fetchone()
        if created is None:  # INSERT ... RETURNING returns the row
            raise RuntimeError("population_inputs: the insert returned no version")
        return Inputs.of({**held, "version": created[0], "computed_at": utc_iso(at)})


def _version(versions: Sequence[Inputs], number: int) -> Inputs:
    return next((v for v in versions if v.version == number), Inputs())


# -- re-deriving one customer -------------------------------------------------------------


def _cause_key(cause: Mapping[str, Any]) -> str:
    return json.dumps(cause, sort_keys=True, separators=(",", ":"))


def _record(row: Row, found: Iterable[Change], cause: dict[str, Any], at: datetime) -> None:
    for change in found:
        row.found.append((utc_iso(at), change, cause))


@dataclass(frozen=True)
class Context:
    """What one transaction derives with: the rules, where the clock stands at this
    point of the log, the population-inputs versions some customer may still need (from
    the oldest any row has on), and the segments defined (name -> rule)."""

    rules: Rules
    clock: Clock
    versions: Sequence[Inputs]
    segments: Mapping[str, dict[str, Any]]
    silences: Sequence[Mapping[str, Any]] = ()

    @property
    def segments_version(self) -> int:
        return self.clock.segments_version

    @property
    def segments_at(self) -> datetime | None:
        return self.clock.segments_at


# Population-inputs versions never change once published: each is parsed once a process
# (per database: tests run several platforms in one process).
_PARSED_INPUTS: dict[tuple[str, int], Inputs] = {}


def _context(cur: Any, store: ReadModelStore, rules: Rules) -> Context:
    """The context of one transaction, read in one statement. Versions only grow and
    every row is rolled out to the latest: the oldest a row holds bounds what a
    derivation may ask for (the index answers it in one step)."""
    measures_table, _ = tables(store)
    cur.execute(
        sql.SQL(
            "WITH clock AS (SELECT at, inputs_version, tick, segments_version, segments_at"
            " FROM {clock} WHERE id = 1),"
            " since AS (SELECT least((SELECT coalesce(min(inputs_version), 0) FROM {measures}),"
            " coalesce((SELECT inputs_version FROM clock), 0)) AS version)"
            " SELECT (SELECT row_to_json(clock) FROM clock),"
            " (SELECT coalesce(array_agg(version ORDER BY version), '{{}}')"
            " FROM population_inputs WHERE version >= (SELECT version FROM since)),"
            " (SELECT coalesce(json_agg(json_build_array(name, rule) ORDER BY name), '[]')"
            " FROM {segments} WHERE NOT deleted),"
            " ({silences})"
        ).format(
            clock=_clock_table(store),
            measures=measures_table,
            segments=_segment_table(store),
            silences=_SILENCES.format(silences=silence_table(store), clock=sql.SQL("clock")),
        )
    )
    held, numbers, defined, silenced = cur.fetchone()
    clock = (
        Clock(
            _instant(held["at"]),
            held["inputs_version"],
            held["tick"],
            held["segments_version"],
            _instant(held["segments_at"]),
        )
        if held
        else Clock(None, 0, None)
    )
    database = cur.connection.dsn
    missing = [n for n in numbers if (database, n) not in _PARSED_INPUTS]
    if missing:
        for inputs in input_versions(cur, since=min(missing)):
            _PARSED_INPUTS.setdefault((database, inputs.version), inputs)
    versions = [_PARSED_INPUTS[database, n] for n in numbers]
    segments = {name: rule for name, rule in defined}
    return Context(rules, clock, versions, segments, _parsed_silences(silenced))


# Silences still active at the clock, give or take: derivations happen at recording and
# tick times, which follow the clock.
_SILENCES = sql.SQL(
    "SELECT coalesce(json_agg(s ORDER BY s.id), '[]') FROM {silences} s"
    " WHERE least(s.ends_at, coalesce(s.expired_at, 'infinity')) >"
    " coalesce((SELECT at FROM {clock}), '-infinity') - interval '1 day'"
)


def _silences(cur: Any, store: ReadModelStore) -> list[dict[str, Any]]:
    """The silences a transition recorded now could be held back by (as ``_context``
    reads them)."""
    clock = sql.SQL("{} WHERE id = 1").format(_clock_table(store))
    cur.execute(_SILENCES.format(silences=silence_table(store), clock=clock))
    return _parsed_silences(cur.fetchone()[0])


def _parsed_silences(found: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            **s,
            "starts_at": datetime.fromisoformat(s["starts_at"]),
            "ends_at": datetime.fromisoformat(s["ends_at"]),
            "expired_at": _instant(s["expired_at"]),
        }
        for s in found
    ]


def _instant(text: str | None) -> datetime | None:
    """A timestamptz as ``row_to_json`` writes it (ISO 8601 with its offset)."""
    return datetime.fromisoformat(text) if text is not None else None


def _derive(
    row: Row,
    doc: State,
    inputs: Inputs,
    ctx: Context,
    at: datetime,
    cause: dict[str, Any],
    journeys_now: Mapping[str, State] | None = None,
) -> None:
    """Derive the customer at ``at`` (measures, facts, the segments it is in), record
    the changes of their facts with ``cause``. ``journeys_now``: journey statuses that
    changed with the event (or all of them, after a refold); the others are aged."""
    rules = ctx.rules
    measures = derive(doc, inputs, rules, at, json_ready=False)  # to JSON once, at _write
    held = row.facts["journeys"] if row.facts else {}
    statuses = {jid: _aged(status, rules, at) for jid, status in held.items()}
    statuses.update(journeys_now or {})
    document = segment_document(doc, measures) if ctx.segments else {}
    member_of = [name for name, rule in ctx.segments.items() if segments.matches(rule, document)]
    now = facts(doc, measures, statuses, rules, member_of)
    _record(row, changes(row.facts, now), cause, at)
    _record(row, _alerting(row, doc, measures, now, ctx, at), cause, at)
    row.measures, row.facts, row.derived_at = measures, now, at
    row.inputs_version, row.segments_version = inputs.version, ctx.segments_version
    row.due_at = _earliest(
        next_due(doc, measures, statuses, rules, at),
        alerts.next_instant(doc, now, now["alerts"], at, rules.alerts),
    )
    row.dirty = row.measured = True


_TRANSITIONS = {
    "opened": ChangeKind.ALERT_OPENED,
    "updated": ChangeKind.ALERT_UPDATED,
    "acknowledged": ChangeKind.ALERT_ACKNOWLEDGED,
    "resolved": ChangeKind.ALERT_RESOLVED,
}
ALERT_KINDS = frozenset(_TRANSITIONS.values())


def _alert_changes(
    moves: Sequence[alerts.Transition], silences: Sequence[Mapping[str, Any]], at: datetime
) -> list[Change]:
    """The transitions as changes of the feed, each marked by the silence that holds it
    back at ``at`` (``silenced_by``; None: it is delivered)."""
    return [
        Change(
            _TRANSITIONS[m.kind],
            m.alert["id"],
            None,
            {**m.alert, "silenced_by": silenced_by(silences, m.alert, at)},
        )
        for m in moves
    ]


def _alerting(
    row: Row, doc: State, measures: State, now: State, ctx: Context, at: datetime
) -> list[Change]:
    """The alert rules on the customer as of ``at`` (``now``: its new facts, which
    then hold its alerts), and the changes of its alerts' lifecycle. An alert of a rule
    serving a consent purpose the customer has not granted is kept, marked suppressed;
    a transition that an active silence matches, marked silenced."""
    rules = ctx.rules
    now["alerts"], moves = alerts.evaluate(
        row.customer_id,
        doc,
        measures,
        now,
        (row.facts or {}).get("alerts", {}),
        at,
        rules.alerts,
    )
    now["at_risk"] = alerts.revenue_at_risk(measures, now["alerts"], rules.alerts)
    return _alert_changes(moves, ctx.silences, at)


def _earliest(*instants: datetime | None) -> datetime | None:
    return min((t for t in instants if t is not None), default=None)


def _light_step(
    row: Row,
    doc: State | None,
    journey: Step | None,
    ctx: Context,
    at: datetime,
    cause: dict[str, Any],
) -> None:
    """An event of a type no measure reads (``doc``: the document after it): only the
    journey it is a step of (if any) and the alerts can change, so they alone are
    updated (and their changes recorded); the measures stay as derived last.
    Everything due by ``at`` has been stepped through before (``catch_up``)."""
    if row.facts is None or row.measures is None:
        return
    held = row.facts["journeys"]
    statuses = dict(held)
    found: list[Change] = []
    if journey is not None:
        statuses = {jid: _aged(s, ctx.rules, at) for jid, s in held.items()}
        statuses[journey.key] = journey_status(journey.after, ctx.rules, at)
        # Only journeys change here: compare those (``changes`` would compare every fact).
        found = [
            change
            for jid in sorted(statuses)
            if statuses[jid] is not held.get(jid)
            for change in journey_changes(jid, held.get(jid), statuses[jid])
        ]
    now = {**row.facts, "journeys": statuses}
    _record(row, found, cause, at)
    if doc is not None:
        _record(row, _alerting(row, doc, row.measures, now, ctx, at), cause, at)
    row.facts = now
    ends = [gap_end(s, ctx.rules) for s in statuses.values() if s["closed_by"] is None]
    alerting = (
        alerts.next_instant(doc, now, now.get("alerts", {}), at, ctx.rules.alerts)
        if doc is not None
        else None
    )
    row.due_at = _earliest(row.due_at, alerting, *(t for t in ends if t > at))
    row.dirty = True


def _aged(status: State, rules: Rules, at: datetime) -> State:
    """A journey's status once time has passed: an open journey whose inactivity gap has
    ended is closed by inactivity at the gap's end."""
    if status["closed_by"] is not None:
        return status
    ends = gap_end(status, rules)
    if at < ends:
        return status
    return {**status, "closed_by": "inactivity", "closed_at": utc_iso(ends)}


def catch_up(
    row: Row, doc: State | None, ctx: Context, until: datetime, *, inputs_version: int
) -> None:
    """Step the customer, in time order, through every instant its measures fell due by
    ``until`` (``due_at``), every inputs version up to ``inputs_version`` it has not had
    and the segment definitions it has not been evaluated against, each derived at its
    own instant (a version or definition at the later of when it was made and when the
    customer was last derived, never after ``until``)."""
    if doc is None or row.measures is None:
        return
    for _ in range(MAX_STEPS):
        current = row.derived_at or until

        def at_most(moment: datetime | None, current: datetime = current) -> datetime:
            return max(current, min(moment or current, until))

        steps: list[tuple[datetime, int, Inputs, dict[str, Any]]] = []
        newer = next(
            (v for v in ctx.versions if row.inputs_version < v.version <= inputs_version), None
        )
        if newer is not None and newer.computed_at is not None:
            made = datetime.fromisoformat(newer.computed_at)
            steps.append((at_most(made), 0, newer, {"inputs": newer.version}))
        inputs = _version(ctx.versions, row.inputs_version)
        if row.segments_version < ctx.segments_version:
            cause = {"segments": ctx.segments_version}
            steps.append((at_most(ctx.segments_at), 1, inputs, cause))
        if row.due_at is not None and row.due_at <= until:
            steps.append((max(row.due_at, current), 2, inputs, {"clock": utc_iso(row.due_at)}))
        if not steps:
            return
        at, _, chosen, cause = min(steps, key=lambda s: (s[0], s[1]))
        _derive(row, doc, chosen, ctx, at, cause)


# -- the projector's three steps: events, ticks, refolds ---------------------------------


def _lock_rows(cur: Any, store: ReadModelStore, customers: Iterable[str]) -> dict[str, Row]:
    measures_table, _ = tables(store)
    cur.execute(
        sql.SQL(
            "SELECT customer_id, measures, facts, derived_at, due_at, inputs_version,"
            " segments_version FROM {} WHERE customer_id = ANY(%s) ORDER BY customer_id"
            " FOR UPDATE"
        ).format(measures_table),
        (sorted(set(customers)),),
    )
    return {
        r[0]: Row(r[0], r[1], r[2], r[3], r[4], r[5], r[6], loaded_at_risk=_at_risk(r[2]))
        for r in cur.fetchall()
    }


def _at_risk(facts: State | None) -> State:
    return dict((facts or {}).get("at_risk") or {})


@dataclass(frozen=True)
class Clock:
    """Where the projections' clock stands: the latest time a tick said (None: no tick
    yet), the inputs version in effect, and the id of the last tick applied."""

    at: datetime | None
    inputs_version: int
    tick: str | None
    segments_version: int = 0  # segment definitions and deletions seen in the log
    segments_at: datetime | None = None  # when the latest was made


def clock_of(cur: Any, store: ReadModelStore) -> Clock:
    cur.execute(
        sql.SQL(
            "SELECT at, inputs_version, tick, segments_version, segments_at FROM {} WHERE id = 1"
        ).format(_clock_table(store))
    )
    row = cur.fetchone()
    return Clock(*row) if row else Clock(None, 0, None)


def alert_table(store: ReadModelStore) -> sql.Identifier:
    """This generation's alerts: each alert as its latest transition left it."""
    return sql.Identifier(f"rm_alert{store.generation}")


def demand_table(store: ReadModelStore) -> sql.Identifier:
    """Touchpoints and their waits per watched channel and time slot (event time):
    capacity's demand."""
    return sql.Identifier(f"rm_demand{store.generation}")


def channel_table(store: ReadModelStore) -> sql.Identifier:
    """Each watched channel's alerts (capacity), when it was last evaluated and next due."""
    return sql.Identifier(f"rm_channel{store.generation}")


def risk_table(store: ReadModelStore) -> sql.Identifier:
    """This generation's revenue at risk: overall and per rule, maintained by deltas."""
    return sql.Identifier(f"rm_risk{store.generation}")


def silence_table(store: ReadModelStore) -> sql.Identifier:
    """This generation's silences, as their events left them."""
    return sql.Identifier(f"rm_silence{store.generation}")


def _clock_table(store: ReadModelStore) -> sql.Identifier:
    return sql.Identifier(f"rm_clock{store.generation}")


def _segment_table(store: ReadModelStore) -> sql.Identifier:
    return sql.Identifier(f"rm_segment{store.generation}")


def on_operator(
    store: ReadModelStore,
    conn: psycopg2.extensions.connection,
    rules: Rules,
    event: OperatorAction.Taken,
) -> None:
    """An operator acknowledged or resolved one of a customer's alerts: the alert's
    transition is recorded at the instant the operator acted. An alert no longer held
    (resolved meanwhile) is left as it is."""
    with conn.cursor() as cur:
        rows = _lock_rows(cur, store, [event.customer_id])
        row = rows.get(event.customer_id)
        if row is None or row.facts is None:
            return
        held, moves = alerts.operator(
            row.facts.get("alerts", {}), event.alert_id, event.action, event.by, event.at
        )
        if not moves:
            return
        cause = {"event": "OperatorAction", "action": event.action, "by": event.by}
        _record(row, _alert_changes(moves, _silences(cur, store), event.at), cause, event.at)
        at_risk = (
            alerts.revenue_at_risk(row.measures or {}, held, rules.alerts) if row.measures else {}
        )
        row.facts = {**row.facts, "alerts": held, "at_risk": at_risk}
        row.dirty = True
        _write(cur, store, [row])


def on_silence(
    store: ReadModelStore,
    conn: psycopg2.extensions.connection,
    event: Silence.Created | Silence.Expired,
) -> None:
    """A silence created or expired, where it stands in the log: alert transitions
    recorded after it, while it is active, are marked by it (``_alert_changes``)."""
    table = silence_table(store)
    with conn.cursor() as cur:
        if isinstance(event, Silence.Created):
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (id, matcher, starts_at, ends_at, created_by, comment)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING"
                ).format(table),
                (
                    event.originator_id.hex,
                    json.dumps(event.matcher),
                    event.starts_at,
                    event.ends_at,
                    event.by,
                    event.comment,
                ),
            )
        else:
            cur.execute(
                sql.SQL(
                    "UPDATE {} SET expired_at = %s, expired_by = %s"
                    " WHERE id = %s AND expired_at IS NULL"
                ).format(table),
                (event.at, event.by, event.originator_id.hex),
            )


def silence_list(store: ReadModelStore, *, active_at: datetime | None) -> list[dict[str, Any]]:
    """Silences, the newest first; ``active_at``: only those active then."""
    clause = sql.SQL("true")
    params: list[Any] = []
    if active_at is not None:
        clause = sql.SQL(
            "starts_at <= %s AND least(ends_at, coalesce(expired_at, 'infinity')) > %s"
        )
        params = [active_at, active_at]
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT id, matcher, starts_at, ends_at, created_by, comment, expired_at,"
                " expired_by FROM {} WHERE {} ORDER BY starts_at DESC, id LIMIT 1000"
            ).format(silence_table(store), clause),
            params,
        )
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def on_segment(
    store: ReadModelStore,
    conn: psycopg2.extensions.connection,
    event: Segment.Defined | Segment.Redefined | Segment.Deleted,
) -> None:
    """A segment defined, redefined or deleted, where it stands in the log: the
    definitions change, and every customer is behind them until a tick (or its next
    event) evaluates it again (``catch_up``)."""
    table = _segment_table(store)
    with conn.cursor() as cur:
        if isinstance(event, Segment.Defined):
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (stream, name, rule, description, version, deleted,"
                    " created_at, defined_at) VALUES (%s, %s, %s, %s, %s, false, %s, %s)"
                    " ON CONFLICT (name) DO NOTHING"
                ).format(table),
                (
                    str(event.originator_id),
                    event.name,
                    json.dumps(event.rule),
                    event.description,
                    event.originator_version,
                    event.timestamp,
                    event.timestamp,
                ),
            )
        elif isinstance(event, Segment.Redefined):
            cur.execute(
                sql.SQL(
                    "UPDATE {} SET rule = %s, description = %s, version = %s, deleted = false,"
                    " defined_at = %s, created_at = CASE WHEN deleted THEN %s ELSE created_at"
                    " END WHERE stream = %s AND version < %s"
                ).format(table),
                (
                    json.dumps(event.rule),
                    event.description,
                    event.originator_version,
                    event.timestamp,
                    event.timestamp,
                    str(event.originator_id),
                    event.originator_version,
                ),
            )
        else:
            cur.execute(
                sql.SQL(
                    "UPDATE {} SET deleted = true, version = %s, defined_at = %s"
                    " WHERE stream = %s AND version < %s"
                ).format(table),
                (
                    event.originator_version,
                    event.timestamp,
                    str(event.originator_id),
                    event.originator_version,
                ),
            )
        cur.execute(
            sql.SQL(
                "INSERT INTO {c} (id, segments_version, segments_at) VALUES (1, 1, %(at)s)"
                " ON CONFLICT (id) DO UPDATE SET segments_version = {c}.segments_version + 1,"
                " segments_at = GREATEST({c}.segments_at, EXCLUDED.segments_at)"
            ).format(c=_clock_table(store)),
            {"at": event.timestamp},
        )


def after_events(
    store: ReadModelStore,
    conn: psycopg2.extensions.connection,
    rules: Rules,
    events: Sequence[RecordedTouchpoint],
    trail: Sequence[Step],
) -> int:
    """Derive each customer after each of their events in the batch (``trail``: the
    documents each event changed), at the event's recorded time (never before the
    customer was last derived), with the inputs version it has (a new customer: the
    version the last tick put in effect); the instants that fell due before the event
    are stepped through first. Returns how many changes were recorded."""
    if rules.alerts.capacity.enabled and rules.alerts.capacity.channels:
        with conn.cursor() as cur:
            _channels_after(cur, store, rules, events)
    of_customer: dict[int, Step] = {}
    of_journey: dict[int, Step] = {}
    for step in trail:
        if step.projection == customer.PROJECTION.name:
            of_customer[step.index] = step
        elif step.projection == journeys.PROJECTION.name:
            of_journey[step.index] = step
    indexes: dict[str, list[int]] = {}
    for index in sorted(of_customer.keys() | of_journey.keys()):
        indexes.setdefault(events[index].customer_id, []).append(index)
    if not indexes:
        return 0
    with conn.cursor() as cur:
        ctx = _context(cur, store, rules)
        rows = _lock_rows(cur, store, indexes)
        for customer_id in sorted(indexes):
            row = rows.setdefault(
                customer_id, Row(customer_id, inputs_version=ctx.clock.inputs_version)
            )
            first = of_customer.get(indexes[customer_id][0])
            doc = first.before if first else _doc(cur, store, customer_id)

            def each_event(
                row: Row = row, doc: State | None = doc, mine: list[int] = indexes[customer_id]
            ) -> None:
                for index in mine:
                    event = events[index]
                    journey = of_journey.get(index)
                    if row.measures is not None and not _matters(event, ctx):
                        at = max(event.timestamp, row.derived_at or event.timestamp)
                        catch_up(row, doc, ctx, at, inputs_version=row.inputs_version)
                        if index in of_customer:
                            doc = of_customer[index].after
                        cause = {"event_id": event.event_id, "type": event.type}
                        _light_step(row, doc, journey, ctx, at, cause)
                        continue
                    at = max(event.timestamp, row.derived_at or event.timestamp)
                    catch_up(row, doc, ctx, at, inputs_version=row.inputs_version)
                    if index in of_customer:
                        doc = of_customer[index].after
                    if doc is None:
                        continue  # no customer document yet (its first event quarantined)
                    _derive(
                        row,
                        doc,
                        _version(ctx.versions, row.inputs_version),
                        ctx,
                        at,
                        {"event_id": event.event_id, "type": event.type},
                        {journey.key: journey_status(journey.after, rules, at)}
                        if journey
                        else None,
                    )

            _guarded(row, each_event)
        return _write(cur, store, rows.values())


@dataclass
class _Channel:
    """A watched channel while its capacity alerts are evaluated."""

    row: Row
    held: dict[str, State]
    derived_at: datetime | None
    due_at: datetime | None = None


Demand = dict[tuple[str, datetime], alerts.SlotDemand]  # (channel, slot start) -> demand


def _load_channels(
    cur: Any, store: ReadModelStore, names: Sequence[str], since: datetime
) -> tuple[dict[str, _Channel], Demand]:
    cur.execute(
        sql.SQL(
            "SELECT channel, alerts, derived_at, due_at FROM {} WHERE channel = ANY(%s)"
            " ORDER BY channel FOR UPDATE"
        ).format(channel_table(store)),
        (list(names),),
    )
    held = {r[0]: (r[1], r[2], r[3]) for r in cur.fetchall()}
    channels = {
        name: _Channel(
            Row(f"channel:{name}"),
            dict(held[name][0]) if name in held else {},
            held[name][1] if name in held else None,
            held[name][2] if name in held else None,
        )
        for name in names
    }
    cur.execute(
        sql.SQL(
            "SELECT channel, slot_start, touchpoints, waits, wait_seconds FROM {}"
            " WHERE channel = ANY(%s) AND slot_start >= %s"
        ).format(demand_table(store)),
        (list(names), since),
    )
    return channels, {(r[0], r[1]): alerts.SlotDemand(r[2], r[3], r[4]) for r in cur.fetchall()}


def _evaluate_channel(
    name: str,
    channel: _Channel,
    demand: Demand,
    rules: Rules,
    silences: Sequence[Mapping[str, Any]],
    at: datetime,
    cause: dict[str, Any],
) -> None:
    mine = {slot: n for (c, slot), n in demand.items() if c == name}
    channel.held, moves, channel.due_at = alerts.channel_at(
        name, channel.held, mine, at, rules.alerts
    )
    _record(channel.row, _alert_changes(moves, silences, at), cause, at)
    channel.derived_at = at


def _step_channel(
    name: str,
    channel: _Channel,
    demand: Demand,
    rules: Rules,
    silences: Sequence[Mapping[str, Any]],
    until: datetime,
) -> None:
    """Evaluate the channel at every instant it fell due by ``until`` (a slot ending, a
    hold-down ending)."""
    for _ in range(MAX_STEPS):
        if channel.due_at is None or channel.due_at > until:
            return
        due = max(channel.due_at, channel.derived_at or channel.due_at)
        cause = {"clock": utc_iso(channel.due_at)}
        _evaluate_channel(name, channel, demand, rules, silences, due, cause)


def _channels_after(
    cur: Any, store: ReadModelStore, rules: Rules, events: Sequence[RecordedTouchpoint]
) -> None:
    """Capacity (a rule on a channel): each touchpoint of a watched channel counts in
    its slot (by event time), then the channel is evaluated at the instant it was
    recorded, as customers are; the slots that ended before are stepped through first."""
    cap = rules.alerts.capacity
    mine = [e for e in events if e.channel in cap.channels]
    if not mine:
        return
    names = sorted({e.channel for e in mine})
    earliest = min(min(e.timestamp, e.occurred_at) for e in mine)
    since = alerts.slot_of(earliest, cap.slot) - cap.slot * (cap.sustained_slots + 1)
    channels, demand = _load_channels(cur, store, names, since)
    silences = _silences(cur, store)
    counted: Demand = {}
    for event in mine:
        channel = channels[event.channel]
        slot = (event.channel, alerts.slot_of(event.occurred_at, cap.slot))
        at = max(event.timestamp, channel.derived_at or event.timestamp)
        _step_channel(event.channel, channel, demand, rules, silences, at)
        wait = alerts.wait_of(event.payload)
        demand[slot] = demand.get(slot, alerts.SlotDemand()).plus(wait)
        counted[slot] = counted.get(slot, alerts.SlotDemand()).plus(wait)
        _evaluate_channel(
            event.channel,
            channel,
            demand,
            rules,
            silences,
            at,
            {"event_id": event.event_id, "type": event.type},
        )
    keys = sorted(counted)
    cur.execute(
        sql.SQL(
            "INSERT INTO {t} (channel, slot_start, touchpoints, waits, wait_seconds)"
            " SELECT c, s, n, w, ws FROM unnest(%s::text[], %s::timestamptz[], %s::int[],"
            " %s::int[], %s::float8[]) AS u (c, s, n, w, ws)"
            " ON CONFLICT (channel, slot_start) DO UPDATE SET"
            " touchpoints = {t}.touchpoints + EXCLUDED.touchpoints,"
            " waits = {t}.waits + EXCLUDED.waits,"
            " wait_seconds = {t}.wait_seconds + EXCLUDED.wait_seconds"
        ).format(t=demand_table(store)),
        (
            [k[0] for k in keys],
            [k[1] for k in keys],
            [counted[k].touchpoints for k in keys],
            [counted[k].waits for k in keys],
            [counted[k].wait_seconds for k in keys],
        ),
    )
    _save_channels(cur, store, channels)


def _save_channels(cur: Any, store: ReadModelStore, channels: Mapping[str, _Channel]) -> None:
    names = sorted(n for n, c in channels.items() if c.derived_at is not None)
    if names:
        cur.execute(
            sql.SQL(
                "INSERT INTO {t} (channel, alerts, derived_at, due_at) SELECT c, a::jsonb, d,"
                " du FROM unnest(%s::text[], %s::text[], %s::timestamptz[],"
                " %s::timestamptz[]) AS u (c, a, d, du) ON CONFLICT (channel) DO UPDATE SET"
                " alerts = EXCLUDED.alerts, derived_at = EXCLUDED.derived_at,"
                " due_at = EXCLUDED.due_at"
            ).format(t=channel_table(store)),
            (
                names,
                [json.dumps(channels[n].held) for n in names],
                [channels[n].derived_at for n in names],
                [channels[n].due_at for n in names],
            ),
        )
    _write(cur, store, [c.row for c in channels.values()])


def _channels_on_tick(
    cur: Any,
    store: ReadModelStore,
    rules: Rules,
    silences: Sequence[Mapping[str, Any]],
    at: datetime,
) -> int:
    """The watched channels due by the tick's time, stepped through what fell due."""
    cap = rules.alerts.capacity
    cur.execute(
        sql.SQL("SELECT channel FROM {} WHERE due_at <= %s ORDER BY channel").format(
            channel_table(store)
        ),
        (at,),
    )
    names = [r[0] for r in cur.fetchall()]
    if not names:
        return 0
    since = alerts.slot_of(at, cap.slot) - cap.slot * (cap.sustained_slots + 1)
    channels, demand = _load_channels(cur, store, names, since)
    for name, channel in channels.items():
        _step_channel(name, channel, demand, rules, silences, at)
    _save_channels(cur, store, channels)
    return len(names)


# The touchpoint types whose documents' fields a measure or a fact reads (orders,
# answers, complaints, promises); any other type changes only what segments read.
MEASURED = frozenset(
    {
        "purchase",
        "survey_answered",
        "delivery",
        *customer.COMPLAINT_STEPS,
    }
)


def _matters(event: RecordedTouchpoint, ctx: Context) -> bool:
    """Whether deriving after ``event`` could change a measure: a type the measures
    read, or anything while segments are defined (their rules read counts, channels,
    traits, first and last seen). Skipping the others (a journey step of another type
    updates its journey's status alone) is the same live and on a replay: time passing
    is stepped through by the next derivation or tick, at its own instants."""
    return bool(ctx.segments) or event.type in MEASURED


def _guarded(row: Row, work: Callable[[], None]) -> None:
    """Re-derive one customer; if the rules fail on it, keep its row as it was, with the
    error (visible in health, retried at its next event), and let the others go on
    (guarantee 7)."""
    held = (row.measures, row.facts, row.derived_at, row.due_at, row.inputs_version)
    recorded = len(row.found)
    try:
        work()
    except Exception as error:
        log.exception("measures of customer %r not derived; kept as they were", row.customer_id)
        row.measures, row.facts, row.derived_at, row.due_at, row.inputs_version = held
        del row.found[recorded:]
        row.error = f"{type(error).__name__}: {error}"[:2000]
        row.due_at = None  # not retried by the clock: by the customer's next event
        row.dirty = row.measured = True
    else:
        row.error = None


def on_tick(
    store: ReadModelStore,
    conn: psycopg2.extensions.connection,
    rules: Rules,
    tick: str,
    at: datetime,
    inputs_version: int,
    limit: int,
) -> int:
    """A tick of the clock (``tick``: its id), where it stands in the log: up to
    ``limit`` customers are re-derived, first those due by ``at`` (earliest first), then
    those behind ``inputs_version``; returns how many."""
    measures_table, _ = tables(store)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "INSERT INTO {c} (id, at, inputs_version, tick) VALUES (1, %(at)s, %(v)s, %(t)s)"
                " ON CONFLICT (id) DO UPDATE SET at = GREATEST({c}.at, EXCLUDED.at),"
                " inputs_version = GREATEST({c}.inputs_version, EXCLUDED.inputs_version),"
                " tick = EXCLUDED.tick"
            ).format(c=_clock_table(store)),
            {"at": at, "v": inputs_version, "t": tick},
        )
        ctx = _context(cur, store, rules)
        stepped = _channels_on_tick(cur, store, rules, ctx.silences, at)
        wanted: dict[str, None] = {}  # insertion-ordered: due first, then behind
        for where, order in (
            ("due_at <= %(at)s", "due_at, customer_id"),
            ("inputs_version < %(v)s", "inputs_version, customer_id"),
            ("segments_version < %(s)s", "segments_version, customer_id"),
        ):
            if len(wanted) >= limit:
                break
            cur.execute(
                sql.SQL("SELECT customer_id FROM {} WHERE {} ORDER BY {} LIMIT %(n)s").format(
                    measures_table, sql.SQL(where), sql.SQL(order)
                ),
                {"at": at, "v": inputs_version, "s": ctx.segments_version, "n": limit},
            )
            wanted.update(dict.fromkeys(r[0] for r in cur.fetchall()))
        chosen = list(wanted)[:limit]
        if not chosen:
            return stepped
        rows = _lock_rows(cur, store, chosen)
        docs = _docs(cur, store, list(rows))
        for customer_id, row in rows.items():
            _guarded(
                row,
                partial(
                    catch_up, row, docs.get(customer_id), ctx, at, inputs_version=inputs_version
                ),
            )
            if not row.dirty:  # nothing to step (no document): not due again until an event
                row.due_at, row.inputs_version, row.dirty = None, inputs_version, True
                row.segments_version = ctx.segments_version
            if row.error:  # not picked again by every tick: retried at its next event
                row.inputs_version = max(row.inputs_version, inputs_version)
                row.segments_version = ctx.segments_version
        _write(cur, store, rows.values())
        return stepped + len(chosen)


@dataclass(frozen=True)
class Pending:
    """What a tick at some instant would find: customers due by then, customers behind
    the latest population inputs or segment definitions."""

    due: bool
    behind: bool

    def __bool__(self) -> bool:
        return self.due or self.behind


def pending(store: ReadModelStore, at: datetime) -> Pending:
    measures_table, _ = tables(store)
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT EXISTS (SELECT 1 FROM {m} WHERE due_at <= %s)"
                " OR EXISTS (SELECT 1 FROM {ch} WHERE due_at <= %s),"
                " EXISTS (SELECT 1 FROM {m} WHERE inputs_version <"
                " (SELECT coalesce(max(version), 0) FROM population_inputs))"
                " OR EXISTS (SELECT 1 FROM {m} WHERE segments_version <"
                " (SELECT coalesce(max(segments_version), 0) FROM {c}))"
            ).format(m=measures_table, c=_clock_table(store), ch=channel_table(store)),
            (at, at),
        )
        row = cur.fetchone()
        return Pending(bool(row and row[0]), bool(row and row[1]))


def latest_inputs(store: ReadModelStore) -> Inputs:
    """The latest population inputs published (the empty population before any)."""
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(max(version), 0) FROM population_inputs")
        row = cur.fetchone()
        found = input_versions(cur, since=int(row[0]) if row else 0)
    return found[-1] if found else Inputs()


def latest_version(store: ReadModelStore) -> int:
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(max(version), 0) FROM population_inputs")
        row = cur.fetchone()
        return int(row[0]) if row else 0


def clock(store: ReadModelStore) -> Clock:
    with store.connection() as conn, conn.cursor() as cur:
        return clock_of(cur, store)


def _doc(cur: Any, store: ReadModelStore, customer_id: str) -> State | None:
    cur.execute(
        sql.SQL("SELECT state FROM {} WHERE key = %s").format(store.table(customer.PROJECTION)),
        (customer_id,),
    )
    found = cur.fetchone()
    return found[0] if found else None


def _docs(cur: Any, store: ReadModelStore, customers: Sequence[str]) -> dict[str, State]:
    cur.execute(
        sql.SQL("SELECT key, state FROM {} WHERE key = ANY(%s)").format(
            store.table(customer.PROJECTION)
        ),
        (sorted(customers),),
    )
    return {key: state for key, state in cur.fetchall()}


def _journeys(cur: Any, store: ReadModelStore, customer_id: str) -> list[State]:
    cur.execute(
        sql.SQL("SELECT state FROM {} WHERE state->>'customer_id' = %s").format(
            store.table(journeys.PROJECTION)
        ),
        (customer_id,),
    )
    return [r[0] for r in cur.fetchall()]


def rederive(
    store: ReadModelStore,
    conn: psycopg2.extensions.connection,
    rules: Rules,
    customers: Iterable[str],
    at: datetime,
    cause: dict[str, Any],
    extra: Sequence[tuple[str, Change]] = (),
) -> int:
    """After a merge, split or erasure refolded these customers' documents: derive each
    afresh at ``at`` (journeys from their documents); a customer left with no document
    (merged away) loses its row. ``extra`` changes (the merge itself) are recorded with
    the same cause."""
    measures_table, _ = tables(store)
    wanted = sorted(set(customers))
    with conn.cursor() as cur:
        ctx = _context(cur, store, rules)
        rows = _lock_rows(cur, store, wanted)
        docs = _docs(cur, store, wanted)
        gone = [c for c in wanted if c not in docs]
        if gone:
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE customer_id = ANY(%s)").format(measures_table),
                (gone,),
            )
        for customer_id in wanted:
            row = rows.setdefault(
                customer_id, Row(customer_id, inputs_version=ctx.clock.inputs_version)
            )
            doc = docs.get(customer_id)
            for subject_customer, change in extra:
                if subject_customer == customer_id:
                    _record(row, [change], cause, at)
            if doc is None:  # merged away: its alerts end, only its changes are written
                held = (row.facts or {}).get("alerts", {})
                _record(
                    row,
                    _alert_changes(alerts.ended(held, at, "merged"), ctx.silences, at),
                    cause,
                    at,
                )
                row.measures = None
                continue
            found = _journeys(cur, store, customer_id)

            def afresh(row: Row = row, doc: State = doc, found: list[State] = found) -> None:
                when = max(at, row.derived_at or at)
                catch_up(row, doc, ctx, when, inputs_version=row.inputs_version)
                statuses = {j["journey_id"]: journey_status(j, rules, when) for j in found}
                if row.facts is not None:  # journeys no longer the customer's are dropped
                    kept = {k: v for k, v in row.facts["journeys"].items() if k in statuses}
                    row.facts = {**row.facts, "journeys": kept}
                inputs = _version(ctx.versions, row.inputs_version)
                _derive(row, doc, inputs, ctx, when, cause, statuses)

            _guarded(row, afresh)
        return _write(cur, store, rows.values())


def _change_id(customer_id: str, at: str, change: Change, cause: Mapping[str, Any]) -> str:
    """The same change of the same history has the same id, live and after a replay."""
    text = "|".join((customer_id, change.kind, change.subject or "", at, _cause_key(cause)))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _write(cur: Any, store: ReadModelStore, rows: Iterable[Row]) -> int:
    """Upsert the changed rows; append their changes under the feed's lock."""
    measures_table, changes_table = tables(store)
    dirty = [r for r in rows if r.dirty and r.measures is not None and r.facts is not None]
    facts_only = [r for r in dirty if not r.measured]
    if facts_only:
        cur.execute(
            sql.SQL(
                "UPDATE {} m SET facts = u.f::jsonb, due_at = u.du, error = u.e FROM"
                " unnest(%s::text[], %s::text[], %s::timestamptz[], %s::text[])"
                " AS u (c, f, du, e) WHERE m.customer_id = u.c"
            ).format(measures_table),
            (
                [r.customer_id for r in facts_only],
                [json.dumps(r.facts) for r in facts_only],
                [r.due_at for r in facts_only],
                [r.error for r in facts_only],
            ),
        )
    dirty = [r for r in dirty if r.measured]
    if dirty:
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (customer_id, measures, facts, derived_at, due_at,"
                " inputs_version, segments_version, rule_version, error)"
                " SELECT c, m::jsonb, f::jsonb, d, du, i, s, r, e FROM unnest(%s::text[],"
                " %s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[], %s::int[],"
                " %s::int[], %s::int[], %s::text[]) AS u (c, m, f, d, du, i, s, r, e)"
                " ON CONFLICT (customer_id) DO UPDATE SET measures = EXCLUDED.measures,"
                " facts = EXCLUDED.facts,"
                " derived_at = EXCLUDED.derived_at, due_at = EXCLUDED.due_at,"
                " inputs_version = EXCLUDED.inputs_version,"
                " segments_version = EXCLUDED.segments_version,"
                " rule_version = EXCLUDED.rule_version, error = EXCLUDED.error"
            ).format(measures_table),
            (
                [r.customer_id for r in dirty],
                [dumps(r.measures) for r in dirty],
                [json.dumps(r.facts) for r in dirty],
                [r.derived_at for r in dirty],
                [r.due_at for r in dirty],
                [r.inputs_version for r in dirty],
                [r.segments_version for r in dirty],
                [(r.measures or {}).get("rule_version", 0) for r in dirty],
                [r.error for r in dirty],
            ),
        )
    found = [
        (
            _change_id(r.customer_id, at, change, cause),
            str(change.kind),
            r.customer_id,
            change.subject,
            json.dumps(change.before),
            json.dumps(change.after),
            json.dumps(cause),
            at,
        )
        for r in rows
        for at, change, cause in r.found
    ]
    if found:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (FEED_LOCK,))
        # One array a column: far fewer Python-side calls than a VALUES row a change.
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (change_id, kind, customer_id, subject, before, after, cause,"
                " at) SELECT c, k, cu, s, b::jsonb, a::jsonb, ca::jsonb, t FROM"
                " unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
                " %s::text[], %s::text[], %s::timestamptz[])"
                " WITH ORDINALITY AS u (c, k, cu, s, b, a, ca, t, n)"
                " ORDER BY n ON CONFLICT (change_id) DO NOTHING"
            ).format(changes_table),
            [list(column) for column in zip(*found, strict=True)],
        )
        _write_alerts(cur, store, found)
    _write_risk(cur, store, rows)
    for r in rows:
        r.found.clear()
        r.dirty = r.measured = False
    return len(found)


def _write_risk(cur: Any, store: ReadModelStore, rows: Iterable[Row]) -> None:
    """Add each row's change of revenue at risk to the totals (overall, and per rule)."""
    deltas: dict[str, list[Any]] = {}
    for r in rows:
        after = _at_risk(r.facts) if r.measures is not None else {}
        before = r.loaded_at_risk
        if after == before:
            continue
        for held, sign in ((before, -1), (after, 1)):
            if not held:
                continue
            amount = Decimal(held["amount"]) * sign
            for key in ("overall", *held["rules"]):
                total = deltas.setdefault(key, [Decimal(0), 0])
                total[0] += amount
                total[1] += sign
        r.loaded_at_risk = after
    if not deltas:
        return
    keys = sorted(deltas)
    cur.execute(
        sql.SQL(
            "INSERT INTO {t} (key, amount, customers) SELECT k, a, c FROM unnest(%s::text[],"
            " %s::numeric[], %s::int[]) AS u (k, a, c) ON CONFLICT (key) DO UPDATE SET"
            " amount = {t}.amount + EXCLUDED.amount, customers = {t}.customers + EXCLUDED.customers"
        ).format(t=risk_table(store)),
        (keys, [deltas[k][0] for k in keys], [deltas[k][1] for k in keys]),
    )


def revenue_at_risk(store: ReadModelStore) -> dict[str, dict[str, Any]]:
    """The maintained totals: key (``overall`` or a rule) -> amount and customers."""
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT key, amount, customers FROM {}").format(risk_table(store)))
        return {k: {"amount": a, "customers": c} for k, a, c in cur.fetchall()}


def _write_alerts(cur: Any, store: ReadModelStore, found: Sequence[tuple[Any, ...]]) -> None:
    """Each alert as its latest transition in ``found`` (change rows, in feed order)
    left it, with that change's position."""
    _, changes_table = tables(store)
    ids = [row[0] for row in found if row[1] in ALERT_KINDS]
    if not ids:
        return
    cur.execute(
        sql.SQL(
            "INSERT INTO {a} (id, customer_id, rule, severity, status, tier, alert, opened_at,"
            " updated_at, position) SELECT DISTINCT ON (c.subject) c.subject, c.customer_id,"
            " c.after ->> 'rule', c.after ->> 'severity', c.after ->> 'status',"
            " c.after ->> 'tier', c.after, (c.after ->> 'opened_at')::timestamptz, c.at,"
            " c.position FROM {c} c WHERE c.change_id = ANY(%s)"
            " ORDER BY c.subject, c.position DESC"
            " ON CONFLICT (id) DO UPDATE SET severity = EXCLUDED.severity,"
            " status = EXCLUDED.status, alert = EXCLUDED.alert,"
            " updated_at = EXCLUDED.updated_at, position = EXCLUDED.position"
        ).format(a=alert_table(store), c=changes_table),
        (ids,),
    )


# -- reading ----------------------------------------------------------------------------


def measures_of(store: ReadModelStore, customer_id: str) -> State | None:
    """The customer's maintained measures (None: not derived yet)."""
    measures_table, _ = tables(store)
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT measures FROM {} WHERE customer_id = %s").format(measures_table),
            (customer_id,),
        )
        row = cur.fetchone()
        return row[0] if row else None


def customer_read(
    store: ReadModelStore, customer_id: str
) -> tuple[State | None, State | None, bool]:
    """What a customer read needs of the read models, in one query: the customer's
    document, its maintained measures (None: not derived yet) and whether any of its
    documents is quarantined (then ``store.quarantines`` says which and why). A store
    that keeps no measures (a test's own projections) has no measures table."""
    measures_table, _ = tables(store)
    keeps = store.measure_rules is not None
    joined = sql.SQL("LEFT JOIN {} m ON m.customer_id = d.key").format(measures_table)
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT d.state, {measures}, EXISTS (SELECT 1 FROM {q} q WHERE q.key = d.key"
                " AND q.resolved_at IS NULL) FROM {d} d {joined} WHERE d.key = %s"
            ).format(
                measures=sql.SQL("m.measures" if keeps else "NULL"),
                d=store.table(customer.PROJECTION.name),
                joined=joined if keeps else sql.SQL(""),
                q=store.quarantine,
            ),
            (customer_id,),
        )
        row = cur.fetchone()
        return (row[0], row[1], row[2]) if row else (None, None, False)


def change_page(
    store: ReadModelStore,
    *,
    after: int,
    limit: int,
    kinds: Sequence[str] = (),
    customer_id: str | None = None,
) -> list[dict[str, Any]]:
    """Changes after ``position``, oldest first, filtered by kind and customer."""
    _, changes_table = tables(store)
    clauses = [sql.SQL("position > %s")]
    params: list[Any] = [after]
    if kinds:
        clauses.append(sql.SQL("kind = ANY(%s)"))
        params.append(list(kinds))
    if customer_id is not None:
        clauses.append(sql.SQL("customer_id = %s"))
        params.append(customer_id)
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT position, change_id, kind, customer_id, subject, before, after, cause,"
                " at, recorded_at FROM {} WHERE {} ORDER BY position LIMIT %s"
            ).format(changes_table, sql.SQL(" AND ").join(clauses)),
            (*params, limit),
        )
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def alert_page(
    store: ReadModelStore,
    *,
    before: int | None,
    limit: int,
    status: Sequence[str] = (),
    rule: Sequence[str] = (),
    severity: Sequence[str] = (),
    tier: Sequence[str] = (),
    customer_id: str | None = None,
    subject: str | None = None,
    since: datetime | None = None,
) -> list[dict[str, Any]]:
    """Alerts, the latest transition first, filtered (``subject``: the id of what it is
    about: a customer, complaint, journey or channel); ``before``: a position to page
    from (the ``position`` of the last alert of the previous page)."""
    clauses: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    for column, values in (("status", status), ("rule", rule), ("severity", severity)):
        if values:
            clauses.append(sql.SQL("{} = ANY(%s)").format(sql.Identifier(column)))
            params.append(list(values))
    if tier:
        clauses.append(sql.SQL("tier = ANY(%s)"))
        params.append(list(tier))
    if customer_id is not None:
        clauses.append(sql.SQL("customer_id = %s"))
        params.append(customer_id)
    if subject is not None:
        clauses.append(sql.SQL("(alert -> 'subject' ->> 'id') = %s"))
        params.append(subject)
    if since is not None:
        clauses.append(sql.SQL("updated_at >= %s"))
        params.append(since)
    if before is not None:
        clauses.append(sql.SQL("position < %s"))
        params.append(before)
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT position, alert FROM {} WHERE {} ORDER BY position DESC LIMIT %s"
            ).format(alert_table(store), sql.SQL(" AND ").join(clauses)),
            (*params, limit),
        )
        return [{**alert, "position": position} for position, alert in cur.fetchall()]


def latest_position(store: ReadModelStore) -> int:
    """The change feed's latest position (0: empty)."""
    _, changes_table = tables(store)
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT coalesce(max(position), 0) FROM {}").format(changes_table))
        row = cur.fetchone()
        return int(row[0]) if row else 0


def customer_ids(store: ReadModelStore) -> list[str]:
    """Every customer with a document, in id order."""
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT key FROM {} ORDER BY key").format(store.table(customer.PROJECTION.name))
        )
        return [row[0] for row in cur.fetchall()]


def alert_of(store: ReadModelStore, alert_id: str) -> dict[str, Any] | None:
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT position, alert FROM {} WHERE id = %s").format(alert_table(store)),
            (alert_id,),
        )
        row = cur.fetchone()
        return {**row[1], "position": row[0]} if row else None


# -- the population -----------------------------------------------------------------------


def population_inputs(
    store: ReadModelStore,
    *,
    as_of: datetime,
    rules: Rules,
    cutoffs: value.TierCutoffs,
    money: analytics.Money,
) -> Inputs:
    """The population inputs as of ``as_of``, from every customer's orders (a pass over
    the population: the scheduler's job for "now", a read's for a past instant)."""
    found = analytics.purchase_log(store, as_of=as_of, money=money)
    values = analytics.window_values(found.history, as_of=as_of, window=rules.value_window)
    scored = analytics.rfm_of(found.history, as_of=as_of, window=rules.rfm_window)
    retention = analytics.retention_rate(found.history, as_of=as_of)
    model = analytics.current_clv_model(store)
    return Inputs(
        computed_at=utc_iso(as_of),
        currency=found.currency,
        tiers=tier_thresholds(values.values(), cutoffs),
        rfm=rfm_bounds(scored),
        retention=None if retention is None else str(retention),
        model=None
        if model is None
        else {k: model[k] for k in ("version", "time_unit", "parameters")},
    )


def model_is_newer(store: ReadModelStore) -> bool:
    """A lifetime-value model was fitted after the latest population inputs were."""
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT (SELECT max(version) FROM clv_model),"
            " (SELECT (inputs->'model'->>'version')::int FROM population_inputs"
            " ORDER BY version DESC LIMIT 1)"
        )
        row = cur.fetchone()
    return row is not None and row[0] is not None and (row[1] is None or row[0] > row[1])


# -- segments ---------------------------------------------------------------------------


def segment_definitions(store: ReadModelStore) -> list[dict[str, Any]]:
    """Every segment defined (not deleted), with its member count and how many
    customers are still to be evaluated against its current definition."""
    measures_table, _ = tables(store)
    with store.connection() as conn, conn.cursor() as cur:
        clock = clock_of(cur, store)
        cur.execute(
            sql.SQL(
                "SELECT s.name, s.rule, s.description, s.created_at, s.defined_at, s.version,"
                " (SELECT count(*) FROM {m} m WHERE m.facts -> 'segments' ? s.name)"
                " FROM {s} s WHERE NOT s.deleted ORDER BY s.name"
            ).format(m=measures_table, s=_segment_table(store)),
        )
        found = cur.fetchall()
        cur.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE segments_version < %s").format(measures_table),
            (clock.segments_version,),
        )
        row = cur.fetchone()
        pending = int(row[0]) if row else 0
    names = ("name", "rule", "description", "created_at", "defined_at", "version", "members")
    return [{**dict(zip(names, r, strict=True)), "pending": pending} for r in found]


def segment_members(store: ReadModelStore, name: str, limit: int) -> list[dict[str, Any]]:
    """The segment's members (by customer id), each with when it entered."""
    measures_table, changes_table = tables(store)
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT m.customer_id, (SELECT max(c.at) FROM {c} c WHERE c.customer_id ="
                " m.customer_id AND c.kind = 'segment_entered' AND c.subject = %(n)s)"
                " FROM {m} m WHERE m.facts -> 'segments' ? %(n)s ORDER BY m.customer_id"
                " LIMIT %(limit)s"
            ).format(m=measures_table, c=changes_table),
            {"n": name, "limit": limit},
        )
        return [{"customer_id": r[0], "since": r[1]} for r in cur.fetchall()]


def segment_history(store: ReadModelStore, name: str, limit: int) -> list[dict[str, Any]]:
    """Who entered and who left the segment since it was (last) created, newest first."""
    _, changes_table = tables(store)
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT c.position, c.customer_id, c.kind, c.at FROM {c} c JOIN {s} s"
                " ON s.name = c.subject WHERE c.subject = %s"
                " AND c.kind IN ('segment_entered', 'segment_left') AND c.at >= s.created_at"
                " ORDER BY c.position DESC LIMIT %s"
            ).format(c=changes_table, s=_segment_table(store)),
            (name, limit),
        )
        return [
            {
                "position": r[0],
                "customer_id": r[1],
                "change": "entered" if r[2] == "segment_entered" else "left",
                "at": r[3],
            }
            for r in cur.fetchall()
        ]


def segments_of(store: ReadModelStore, customer_id: str) -> list[dict[str, Any]]:
    """The segments a customer is in now, and since when."""
    measures_table, changes_table = tables(store)
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT s.name, (SELECT max(c.at) FROM {c} c WHERE c.customer_id = %(id)s"
                " AND c.kind = 'segment_entered' AND c.subject = s.name)"
                " FROM {m} m, jsonb_array_elements_text(m.facts -> 'segments') AS s(name)"
                " WHERE m.customer_id = %(id)s ORDER BY s.name"
            ).format(m=measures_table, c=changes_table),
            {"id": customer_id},
        )
        return [{"segment": name, "since": since} for name, since in cur.fetchall()]


def health(store: ReadModelStore) -> dict[str, Any]:
    """Where the maintained measures stand: the clock's last tick, the inputs version in
    effect, and how many customers the rules failed on (kept as they were)."""
    measures_table, _ = tables(store)
    with store.connection() as conn, conn.cursor() as cur:
        clock = clock_of(cur, store)
        cur.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE error IS NOT NULL").format(measures_table)
        )
        row = cur.fetchone()
    return {
        "clock_at": utc_iso(clock.at) if clock.at else None,
        "inputs_version": clock.inputs_version,
        "failed_customers": int(row[0]) if row else 0,
    }
