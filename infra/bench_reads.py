"""``peakend bench --mode reads``: what reads cost once measures are maintained at write
time, per population size, measured on this machine.

For each population (``--customers``), on a fresh database:

1. *recording*: about ten simulator touchpoints per customer over the last two years
   (purchases in EUR, survey answers, complaints, journeys with emotions, visits) are
   recorded in-process through the embedded driver (parsed beforehand, not timed), and
   timed until recorded, then until projected with the measures maintained;
2. *roll-out*: ``jobs.refresh_population`` publishes new population inputs and ticks
   until every customer was re-derived with them;
3. *reads*: ``peakend api`` in its own process (no background jobs), measured over HTTP
   with concurrent keep-alive clients: a customer, each analytics endpoint and the change
   feed, now and as of one past instant.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg2
from psycopg2 import sql

from domain.idempotency import Recorded
from domain.touchpoints import TouchpointIn, parse_touchpoint
from infra import jobs
from infra.bench import Figure, _wait_http, admin_url, fresh_database, processes
from infra.bootstrap import Platform, bootstrap
from infra.broker import free_port
from infra.progress import progress
from infra.settings import Settings
from infra.simulator import Simulator, SimulatorConfig, period
from projections import maintained
from streams.projector import head

log = logging.getLogger(__name__)

DAYS = 730  # the history: the last two years
TOUCHPOINTS_PER_CUSTOMER = 10
TOUCHPOINTS_PER_ACTIVITY = 6  # the simulator's journeys, surveys and complaints, on average
BATCH = 500  # touchpoints a submission
IN_FLIGHT = 8  # submissions awaiting their commit at once
AS_OF_DAYS = 90  # the past instant the as_of reads ask for
WARM_UP = 3  # requests per endpoint before those counted
ANALYTICS = (
    "pyramid",
    "migration",
    "rfm",
    "satisfaction",
    "kano",
    "opportunities",
    "emotion-curves",
)
ANALYZE_SECONDS = 60.0  # autovacuum_naptime's default
QUIET_API = {  # the API process runs no background job while it is measured
    "PEAKEND_POPULATION_REFRESH_SECONDS": "0",
    "PEAKEND_SEGMENT_EVALUATE_SECONDS": "0",
    "PEAKEND_CLV_REFIT_HOURS": "0",
    "PEAKEND_CLOCK_TICK_SECONDS": "86400",
}


@dataclass
class Loaded:
    """One population recorded, projected and given new population inputs."""

    customers: int
    touchpoints: int
    recorded_s: float  # first submission to the last commit
    projected_s: float  # first submission to nothing left to project
    rollout_s: float
    ticks: int
    inputs_version: int | None
    measures_rows: int
    behind: int  # rows derived with older inputs after the roll-out (0 expected)
    analyzed: bool = False  # the bench stood in for autovacuum's ANALYZE (it is off)


@dataclass
class Timing:
    customers: int
    endpoint: str
    when: str  # "now" or the as_of instant
    latencies_ms: list[float] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)  # status code (or error) -> count

    def percentile(self, p: float) -> float | None:
        return Figure(self.endpoint, len(self.latencies_ms), 0.0, self.latencies_ms).percentile(p)

    @property
    def not_ok(self) -> dict[str, int]:
        return {k: v for k, v in sorted(self.answers.items()) if k != "200"}


# -- the population ------------------------------------------------------------------


def population(n: int, seed: int, settings: Settings) -> list[TouchpointIn]:
    """About ``TOUCHPOINTS_PER_CUSTOMER`` touchpoints for each of ``n`` customers, all
    dated in the last ``DAYS`` days. The simulator's spend (and so its activity) follows
    a Pareto law, which leaves some customers without any activity in the period: each
    of those gets one web visit, so that there are ``n`` customers."""
    now = datetime.now(UTC)
    start, end = period(DAYS, until=now - timedelta(hours=1))
    years = DAYS / 365.25
    simulator = Simulator(
        SimulatorConfig(
            seed=seed,
            customers=n,
            duplicate_rate=0.0,
            start=start,
            end=end,
            activities_per_customer_per_year=TOUCHPOINTS_PER_CUSTOMER
            / (TOUCHPOINTS_PER_ACTIVITY * years),
        )
    )

    def parsed(raw: dict[str, Any]) -> TouchpointIn:
        return parse_touchpoint(
            raw,
            earliest=settings.earliest_occurred_at,
            phone_region=settings.phone_default_region,
            identifier_kinds=settings.identifier_kinds,
        )

    out: list[TouchpointIn] = []
    seen: set[str] = set()
    later = 0
    with progress(
        n * TOUCHPOINTS_PER_CUSTOMER, f"{n:,}: generating", unit="tp", leave=False
    ) as bar:
        for envelope in simulator:
            touchpoint = parsed(envelope)
            if touchpoint.occurred_at >= now:  # not expected: the period ends an hour ago
                later += 1
                continue
            seen.add(envelope["customer"]["id"])
            out.append(touchpoint)
            bar.update()
        rng = random.Random(seed)
        for profile in simulator.customers:
            if profile.id in seen:
                continue
            at = start + (end - start) * rng.random()
            visit = {
                "event_id": f"bench-visit-{profile.id}",
                "type": "visit",
                "occurred_at": at.isoformat(),
                "channel": "web",
                "customer": {"id": profile.id},
            }
            out.append(parsed(visit))
            bar.update()
    if later:
        log.warning("%d simulated touchpoints dated after now were left out", later)
    return out


# -- recording ------------------------------------------------------------------------


def record(
    platform: Platform, touchpoints: Sequence[TouchpointIn], desc: str
) -> tuple[float, float]:
    """Submit in batches of ``BATCH``, ``IN_FLIGHT`` at once; return the seconds until
    all were committed and until all were projected (measures maintained)."""
    waiting: deque[tuple[Future[list[Recorded]], int]] = deque()
    start = time.perf_counter()
    with progress(len(touchpoints), f"{desc}: recording", unit="tp", leave=False) as bar:
        for i in range(0, len(touchpoints), BATCH):
            while len(waiting) >= IN_FLIGHT:
                future, size = waiting.popleft()
                future.result()
                bar.update(size)
            part = touchpoints[i : i + BATCH]
            waiting.append((platform.driver.submit(part), len(part)))
        while waiting:
            future, size = waiting.popleft()
            future.result()
            bar.update(size)
    recorded = time.perf_counter() - start
    target = head(platform.records)
    with progress(target, f"{desc}: projecting", unit="event", leave=False) as bar:
        while (lag := platform.driver.lag()) > 0:
            if platform.driver.projector_error:
                raise RuntimeError(f"the projector failed: {platform.driver.projector_error}")
            bar.n = target - lag
            bar.refresh()
            time.sleep(0.1)
        bar.n = target
        bar.refresh()
    return recorded, time.perf_counter() - start


def _scalar(url: str, query: sql.Composable | str) -> int:
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query)
            row = cur.fetchone()
            return int(row[0]) if row and row[0] is not None else 0
    finally:
        conn.close()


def _behind(platform: Platform) -> sql.Composed:
    measures, _ = maintained.tables(platform.store)
    return sql.SQL(
        "SELECT count(*) FROM {} WHERE inputs_version <"
        " (SELECT max(version) FROM population_inputs)"
    ).format(measures)


@contextmanager
def _watching(url: str, query: sql.Composable, total: int, desc: str) -> Iterator[None]:
    """A progress bar of ``total`` minus what ``query`` counts, while the block runs."""
    done = threading.Event()

    def watch() -> None:
        with progress(total, desc, unit="customer", leave=False) as bar:
            while True:
                stop = done.wait(0.5)
                bar.n = total - _scalar(url, query)
                bar.refresh()
                if stop:
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


@contextmanager
def _analyzing(url: str, every: float = ANALYZE_SECONDS) -> Iterator[bool]:
    """Where the server runs no autovacuum, its ANALYZE: every ``every`` seconds while
    the block runs, and once after it; without it the planner has no statistics on the
    tables just filled and picks sequential scans (a customer's identifiers read by
    scanning every identifier). Yields whether it stands in."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SHOW autovacuum")
        row = cur.fetchone()
    if row and row[0] == "on":
        conn.close()
        yield False
        return
    log.warning("autovacuum is off on this server: the bench runs ANALYZE every %.0f s", every)
    done = threading.Event()

    def analyze() -> None:
        with conn.cursor() as cur:
            cur.execute("ANALYZE")

    def periodically() -> None:
        while not done.wait(every):
            analyze()

    thread = threading.Thread(target=periodically, daemon=True)
    thread.start()
    try:
        yield True
    finally:
        done.set()
        thread.join()
        analyze()
        conn.close()


def load(url: str, n: int, seed: int) -> tuple[Loaded, str]:
    """Record a population of ``n`` customers, roll out new population inputs; return
    the figures and an API key with scope "read"."""
    settings = Settings(database_url=url, environment="development")
    touchpoints = population(n, seed, settings)
    desc = f"{n:,} customers"
    with _analyzing(url) as analyzed, bootstrap(settings, mode="embedded") as platform:
        recorded_s, projected_s = record(platform, touchpoints, desc)
        measures, _ = maintained.tables(platform.store)
        rows = _scalar(url, sql.SQL("SELECT count(*) FROM {}").format(measures))
        start = time.perf_counter()
        with _watching(url, _behind(platform), rows, f"{desc}: rolling out"):
            refreshed = jobs.refresh_population(platform, datetime.now(UTC))
        rollout_s = time.perf_counter() - start
        behind = _scalar(url, _behind(platform))
        if behind:
            log.warning("%d customers still behind the new population inputs", behind)
        _, key = platform.keys.create("bench", ["read"])
        loaded = Loaded(
            customers=n,
            touchpoints=len(touchpoints),
            recorded_s=recorded_s,
            projected_s=projected_s,
            rollout_s=rollout_s,
            ticks=refreshed.ticks,
            inputs_version=refreshed.version,
            measures_rows=_scalar(url, sql.SQL("SELECT count(*) FROM {}").format(measures)),
            behind=behind,
            analyzed=analyzed,
        )
    return loaded, key


# -- reads ------------------------------------------------------------------------------


async def _timed(
    client: httpx.AsyncClient,
    paths: Sequence[str],
    concurrency: int,
    timing: Timing,
    on_done: Callable[[int], object],
) -> None:
    """The first ``WARM_UP`` paths one after another (not counted), then the others
    over ``concurrency`` clients."""

    async def get(path: str) -> tuple[float, str]:
        started = time.perf_counter()
        try:
            response = await client.get(path)
            answer = str(response.status_code)
        except httpx.HTTPError as why:
            answer = type(why).__name__
        return (time.perf_counter() - started) * 1000, answer

    for path in paths[:WARM_UP]:
        await get(path)
    todo = iter(paths[WARM_UP:])

    async def worker() -> None:
        for path in todo:
            ms, answer = await get(path)
            timing.latencies_ms.append(ms)
            timing.answers[answer] += 1
            on_done(1)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _measure(
    base: str,
    key: str,
    plan: Sequence[tuple[Timing, Sequence[str], float]],
    concurrency: int,
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    for timing, paths, timeout in plan:
        async with httpx.AsyncClient(
            base_url=base, headers=headers, limits=limits, timeout=timeout
        ) as client:
            with progress(
                len(paths) - WARM_UP,
                f"{timing.customers:,}: {timing.endpoint} {timing.when}",
                unit="req",
                leave=False,
            ) as bar:
                await _timed(client, paths, concurrency, timing, bar.update)
        log.info(
            "%s customers %s %s: p50 %.0f ms p99 %.0f ms %s",
            timing.customers,
            timing.endpoint,
            timing.when,
            timing.percentile(50) or 0,
            timing.percentile(99) or 0,
            timing.not_ok or "",
        )


def reads(
    url: str,
    key: str,
    n: int,
    *,
    requests: int,
    analytics_requests: int,
    concurrency: int,
    as_of: str,
    seed: int,
    log_dir: Path,
) -> list[Timing]:
    """The endpoints' latencies over HTTP, against ``peakend api`` in its own process."""
    customers = _ids(url)
    # A fresh database: the live generation's tables have no suffix.
    last = _scalar(url, "SELECT coalesce(max(position), 0) FROM rm_change")
    rng = random.Random(seed)
    plan: list[tuple[Timing, Sequence[str], float]] = []

    def add(endpoint: str, when: str, paths: list[str], timeout: float) -> None:
        plan.append((Timing(n, endpoint, when), paths, timeout))

    # Warm-up requests first, then those counted: the same kind of path.
    past = f"?as_of={quote(as_of)}"
    counted, counted_analytics = WARM_UP + requests, WARM_UP + analytics_requests
    for when, query in (("now", ""), (as_of, past)):
        paths = [
            f"/v1/customers/{quote(rng.choice(customers), safe='')}{query}" for _ in range(counted)
        ]
        add("GET /v1/customers/{id}", when, paths, 60)
    for name in ANALYTICS:
        for when, query in (("now", ""), (as_of, past)):
            add(
                f"GET /v1/analytics/{name}",
                when,
                [f"/v1/analytics/{name}{query}"] * counted_analytics,
                900,
            )
    paths = [f"/v1/changes?after={rng.randint(0, last)}&limit=100" for _ in range(counted)]
    add("GET /v1/changes?after=&limit=100", "now", paths, 60)
    port = free_port()
    env = {
        "PEAKEND_DATABASE_URL": url,
        "PEAKEND_ENVIRONMENT": "development",  # as the loading platform's settings
        **QUIET_API,
    }
    with processes([["api", "--port", str(port)]], env, log_dir):
        base = f"http://127.0.0.1:{port}"
        _wait_http(base, timeout=180)
        asyncio.run(_measure(base, key, plan, concurrency))
    return [timing for timing, _, _ in plan]


def _ids(url: str) -> list[str]:
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT customer_id FROM rm_measures")
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


# -- report ----------------------------------------------------------------------------


def report(loaded: Sequence[Loaded], timings: Sequence[Timing], as_of: str) -> str:
    def ms(value: float | None) -> str:
        return "" if value is None else f"{value:,.1f}" if value < 10 else f"{value:,.0f}"

    rows = [
        "| customers | endpoint | as_of | requests | p50 ms | p99 ms | not 200 |",
        "|---:|---|---|---:|---:|---:|---|",
    ]
    for t in timings:
        bad = ", ".join(f"{k}: {v}" for k, v in t.not_ok.items())
        rows.append(
            f"| {t.customers:,} | {t.endpoint} | {'now' if t.when == 'now' else t.when} | "
            f"{len(t.latencies_ms):,} | {ms(t.percentile(50))} | {ms(t.percentile(99))} | {bad} |"
        )
    lines = ["\n".join(rows), ""]
    for f in loaded:
        lines.append(
            f"- {f.customers:,} customers, {f.touchpoints:,} touchpoints: recorded in "
            f"{f.recorded_s:,.1f} s ({f.touchpoints / f.recorded_s:,.0f} tp/s); projected with "
            f"the measures maintained in {f.projected_s:,.1f} s "
            f"({f.touchpoints / f.projected_s:,.0f} tp/s)"
        )
        version = f"v{f.inputs_version}" if f.inputs_version is not None else "(unchanged)"
        ticks = f"{f.ticks} tick" + ("" if f.ticks == 1 else "s")
        lines.append(
            f"- {f.customers:,} customers: population inputs {version} rolled out to "
            f"{f.measures_rows:,} rm_measures rows in {f.rollout_s:,.1f} s ({ticks}); "
            f"rows behind afterwards: {f.behind}"
        )
    now_reads = {
        t.customers: t.percentile(99)
        for t in timings
        if t.endpoint == "GET /v1/customers/{id}" and t.when == "now"
    }
    if len(now_reads) > 1:
        small, large = min(now_reads), max(now_reads)
        p_small, p_large = now_reads[small], now_reads[large]
        if p_small and p_large:
            lines.append(
                f"- GET /v1/customers/{{id}} now, p99 at {large:,} / p99 at {small:,} customers: "
                f"{p_large:,.1f} / {p_small:,.1f} ms = {p_large / p_small:.2f}"
            )
    if any(f.analyzed for f in loaded):
        lines.append(
            f"- autovacuum is off on this server: the bench ran ANALYZE every "
            f"{ANALYZE_SECONDS:.0f} s while loading and once before the reads"
        )
    lines.append(f"- as_of: {as_of} for every past read; the API ran no background job")
    return "\n".join(lines)


def run(
    settings: Settings,
    *,
    customers: Sequence[int],
    requests: int,
    analytics_requests: int,
    concurrency: int,
    seed: int,
    log_dir: Path,
) -> str:
    log_dir.mkdir(parents=True, exist_ok=True)
    admin = admin_url(settings)
    as_of = (datetime.now(UTC) - timedelta(days=AS_OF_DAYS)).strftime("%Y-%m-%dT%H:%M:%SZ")
    loaded: list[Loaded] = []
    timings: list[Timing] = []
    for n in customers:
        with fresh_database(admin) as url:
            figures, key = load(url, n, seed)
            loaded.append(figures)
            timings.extend(
                reads(
                    url,
                    key,
                    n,
                    requests=requests,
                    analytics_requests=analytics_requests,
                    concurrency=concurrency,
                    as_of=as_of,
                    seed=seed,
                    log_dir=log_dir,
                )
            )
    return report(loaded, timings, as_of)
