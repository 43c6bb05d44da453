"""One scheduler, one active at a time across every process: it owns the work that time
passing causes (segment evaluation, lifetime-value refits; issue 11 adds journeys
closing by inactivity, customers lapsing, population inputs).

Leadership is a PostgreSQL session advisory lock held on the scheduler's own connection:
the server releases it when that connection ends, so when the holder dies (kill -9, a
host lost) another scheduler takes over at its next poll, within ``poll`` seconds. While
it leads, the scheduler writes a heartbeat (``scheduler_lease``), and each job's last run
(``scheduler_job``), so a new leader continues the schedule where the old one left it
instead of running every job again at once. API processes run no scheduler: embedded
mode runs one beside its driver, cluster mode in every ``peakend worker`` (one of them
leads) or alone (``peakend scheduler``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg2
import psycopg2.extensions

from infra.clock import Clock

log = logging.getLogger(__name__)

LEADER_LOCK = 0x7065616B5343  # "peakSC": the advisory lock key of the active scheduler


@dataclass(frozen=True)
class Job:
    """Work due every ``every``; ``run`` gets the clock's "now"."""

    name: str
    every: timedelta
    run: Callable[[datetime], object]
    at_start: bool = False  # run when first seen, rather than one period later


def create_tables(cur: psycopg2.extensions.cursor) -> None:
    cur.execute(
        "CREATE TABLE IF NOT EXISTS scheduler_lease (id int PRIMARY KEY CHECK (id = 1),"
        " holder text NOT NULL, since timestamptz NOT NULL, heartbeat_at timestamptz NOT NULL);"
        "CREATE TABLE IF NOT EXISTS scheduler_job (name text PRIMARY KEY,"
        " last_run_at timestamptz, last_ok_at timestamptz, last_error text)"
    )


def lease(cur: psycopg2.extensions.cursor) -> dict[str, object] | None:
    """Who leads, since when, and how long ago it last beat (None: no scheduler has led
    this database yet)."""
    cur.execute(
        "SELECT holder, since, heartbeat_at, extract(epoch FROM now() - heartbeat_at)"
        " FROM scheduler_lease"
    )
    row = cur.fetchone()
    if row is None:
        return None
    holder, since, beat, age = row
    return {
        "holder": holder,
        "since": since.isoformat(),
        "heartbeat_at": beat.isoformat(),
        "heartbeat_age_seconds": round(float(age), 3),
    }


class Scheduler:
    """Poll for leadership every ``poll`` seconds; while leading, run the jobs that are
    due by the clock, one at a time, and beat the heartbeat."""

    def __init__(
        self,
        database_url: str,
        jobs: Sequence[Job],
        *,
        clock: Clock,
        poll: float = 1.0,
        name: str | None = None,
    ) -> None:
        self.database_url, self.jobs, self.clock, self.poll = database_url, jobs, clock, poll
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._conn: psycopg2.extensions.connection | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def leading(self) -> bool:
        return self._conn is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="peakend-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._resign()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except psycopg2.Error as error:
                log.warning("scheduler: the database is unavailable (%s)", type(error).__name__)
                self._resign()
            self._stop.wait(self.poll)

    def tick(self) -> list[str]:
        """One round: lead if nobody does, then run what is due; returns the jobs run."""
        if not self._lead():
            return []
        assert self._conn is not None  # leading
        now = self.clock.now()
        with self._conn.cursor() as cur:
            cur.execute(
                "INSERT INTO scheduler_lease (id, holder, since, heartbeat_at)"
                " VALUES (1, %(me)s, %(now)s, %(now)s) ON CONFLICT (id) DO UPDATE SET"
                " holder = EXCLUDED.holder, heartbeat_at = EXCLUDED.heartbeat_at,"
                " since = CASE WHEN scheduler_lease.holder = EXCLUDED.holder"
                " THEN scheduler_lease.since ELSE EXCLUDED.since END",
                {"me": self.name, "now": now},
            )
            cur.execute("SELECT name, last_run_at FROM scheduler_job")
            last = dict(cur.fetchall())
        ran = []
        for job in self.jobs:
            previous = last.get(job.name)
            if previous is None and not job.at_start:
                # A job the schedule has not seen: its period starts now, as a periodic
                # job's does at start-up, rather than running at once on every deploy.
                self._record(job.name, now, ok=None)
                continue
            if previous is not None and now - previous < job.every:
                continue
            ran.append(job.name)
            try:
                job.run(now)
            except Exception as error:
                log.exception("scheduled %s failed; next try in %s", job.name, job.every)
                self._record(job.name, now, ok=False, error=f"{type(error).__name__}: {error}")
            else:
                self._record(job.name, now, ok=True)
        return ran

    def _lead(self) -> bool:
        if self._conn is not None:
            return True
        conn = psycopg2.connect(self.database_url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,))
            row = cur.fetchone()
        if not (row and row[0]):
            conn.close()
            return False
        log.info("scheduler %s leads", self.name)
        self._conn = conn
        return True

    def _record(self, job: str, at: datetime, *, ok: bool | None, error: str | None = None) -> None:
        assert self._conn is not None  # leading
        with self._conn.cursor() as cur:
            cur.execute(
                "INSERT INTO scheduler_job (name, last_run_at, last_ok_at, last_error)"
                " VALUES (%(job)s, %(at)s, CASE WHEN %(ok)s THEN %(at)s END, %(error)s)"
                " ON CONFLICT (name) DO UPDATE SET last_run_at = EXCLUDED.last_run_at,"
                " last_ok_at = COALESCE(EXCLUDED.last_ok_at, scheduler_job.last_ok_at),"
                " last_error = EXCLUDED.last_error",
                {"job": job, "at": at, "ok": ok is True, "error": error},
            )

    def _resign(self) -> None:
        """Let another lead: closing the session releases the lock."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
