"""The one scheduler: one leads across processes, a new leader continues the schedule,
and when the leader dies (kill -9) another takes over within its poll."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import psycopg2

from infra.bootstrap import Platform
from infra.clock import ManualClock
from infra.scheduler import Job, Scheduler
from tests.conftest import Served

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
EVERY = timedelta(minutes=10)


def counting(ran: list[tuple[str, datetime]], name: str = "count") -> Job:
    return Job(name, EVERY, lambda now: ran.append((name, now)))


def test_one_scheduler_leads_and_runs_what_is_due(platform: Platform) -> None:
    clock = ManualClock(T0)
    ran: list[tuple[str, datetime]] = []
    first = Scheduler(platform.database_url, [counting(ran)], clock=clock, name="first")
    second = Scheduler(platform.database_url, [counting(ran)], clock=clock, name="second")
    try:
        assert first.tick() == []  # leads; the job's period starts now
        assert first.leading
        assert second.tick() == [] and not second.leading
        clock.advance(EVERY - timedelta(seconds=1))
        assert first.tick() == [] and second.tick() == []
        clock.advance(timedelta(seconds=1))
        assert first.tick() == ["count"]
        assert second.tick() == []
        assert ran == [("count", T0 + EVERY)]
    finally:
        first.stop()
        second.stop()


def test_a_new_leader_continues_the_schedule(platform: Platform) -> None:
    clock = ManualClock(T0)
    ran: list[tuple[str, datetime]] = []
    first = Scheduler(platform.database_url, [counting(ran)], clock=clock, name="first")
    second = Scheduler(platform.database_url, [counting(ran)], clock=clock, name="second")
    try:
        first.tick()
        clock.advance(EVERY)
        assert first.tick() == ["count"]
        first.stop()  # resigns: its session ends
        clock.advance(EVERY / 2)
        assert second.tick() == [] and second.leading  # not again at once
        clock.advance(EVERY / 2)
        assert second.tick() == ["count"]
        assert [at for _, at in ran] == [T0 + EVERY, T0 + 2 * EVERY]
    finally:
        second.stop()


def test_a_failing_job_is_recorded_and_the_others_still_run(platform: Platform) -> None:
    clock = ManualClock(T0)
    ran: list[tuple[str, datetime]] = []

    def fail(_: datetime) -> None:
        raise RuntimeError("no model today")

    jobs = [Job("failing", EVERY, fail), counting(ran)]
    scheduler = Scheduler(platform.database_url, jobs, clock=clock)
    try:
        scheduler.tick()
        clock.advance(EVERY)
        assert scheduler.tick() == ["failing", "count"]
        assert ran == [("count", T0 + EVERY)]
        with (
            contextlib.closing(psycopg2.connect(platform.database_url)) as conn,
            conn.cursor() as cur,
        ):
            cur.execute("SELECT name, last_ok_at, last_error FROM scheduler_job ORDER BY name")
            rows = cur.fetchall()
        assert rows[0][0] == "count" and rows[0][1] is not None and rows[0][2] is None
        assert rows[1][0] == "failing" and rows[1][1] is None
        assert rows[1][2] == "RuntimeError: no model today"
    finally:
        scheduler.stop()


def lease_holder(database_url: str) -> str | None:
    with contextlib.closing(psycopg2.connect(database_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT holder FROM scheduler_lease")
        row = cur.fetchone()
        return str(row[0]) if row else None


def wait_for(condition: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError("condition not met")
        time.sleep(0.05)
    return time.monotonic() - started


def test_when_the_leader_is_killed_another_takes_over_within_seconds(
    platform: Platform,
) -> None:
    env = {
        **os.environ,
        "PEAKEND_DATABASE_URL": platform.database_url,
        "PEAKEND_SCHEDULER_POLL_SECONDS": "0.2",
    }
    leader = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "scheduler"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    clock = ManualClock(T0)
    standby = Scheduler(platform.database_url, [], clock=clock, poll=0.2, name="standby")
    try:
        wait_for(lambda: lease_holder(platform.database_url) not in (None, "standby"), 30)
        assert standby.tick() == [] and not standby.leading
        leader.send_signal(signal.SIGKILL)
        leader.wait(timeout=10)
        took = wait_for(lambda: standby.tick() == [] and standby.leading, 10)
        assert took < 5
        assert lease_holder(platform.database_url) == "standby"
    finally:
        if leader.poll() is None:
            leader.kill()
        standby.stop()


def test_health_names_the_leading_scheduler_and_its_heartbeat(
    platform: Platform, serve: Callable[[Platform], Served]
) -> None:
    served = serve(platform)
    assert httpx.get(f"{served.url}/v1/healthz").json()["scheduler"] is None
    leader = Scheduler(platform.database_url, [], clock=ManualClock(T0), name="the-leader")
    try:
        leader.tick()
        report = httpx.get(f"{served.url}/v1/healthz").json()["scheduler"]
        assert report["holder"] == "the-leader"
        assert report["heartbeat_at"].startswith("2026-03-01T09:00")
    finally:
        leader.stop()
