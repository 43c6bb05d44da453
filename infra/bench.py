"""``peakend bench``: how fast touchpoints become projections, measured, on this machine.

Every figure comes from one run on fresh databases:

- *throughput*: N simulator touchpoints offered as fast as the path takes them, from the
  first send to the last one visible in the read models;
- *freshness*: touchpoints offered at a fixed rate; a share of them are probes, each the
  only touchpoint of its customer, and a probe's lag is the time from its send to the
  write of its customer's document (``rm_customer.updated_at``);
- *naive*: the same N with one event-store transaction per touchpoint and one
  read-model transaction per event, the way a first version would do it;
- *raw limit*: PostgreSQL ``COPY`` of the same N events (uuid + jsonb) into one table.

The embedded API and the cluster workers run as separate processes, as in production;
the bench process only offers load and watches the read models.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg2

from domain.identity import identifier_digest
from domain.touchpoints import parse_touchpoint
from infra.broker import LocalBroker, free_port
from infra.database import create_database, drop_database, with_database
from infra.progress import progress
from infra.settings import Settings
from infra.simulator import Simulator, SimulatorConfig

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Figure:
    path: str
    touchpoints: int
    seconds: float
    lags_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.touchpoints / self.seconds if self.seconds else math.inf

    def percentile(self, p: float) -> float | None:
        if not self.lags_ms:
            return None
        ordered = sorted(self.lags_ms)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# -- load ----------------------------------------------------------------------------


def workload(n: int, seed: int) -> list[dict[str, Any]]:
    """N distinct simulator touchpoints (no re-sends, so every one must show)."""
    simulator = Simulator(
        SimulatorConfig(seed=seed, customers=max(200, n // 20), duplicate_rate=0.0)
    )
    return simulator.touchpoints(n)


def probe(now: datetime) -> dict[str, Any]:
    return {
        "event_id": f"probe-{uuid.uuid4()}",
        "type": "visit",
        "occurred_at": now.isoformat(),
        "channel": "web",
        "customer": {"id": f"probe-{uuid.uuid4().hex[:16]}"},
    }


def with_probes(envelopes: list[dict[str, Any]], every: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, envelope in enumerate(envelopes):
        out.append(envelope)
        if i % every == 0:
            out.append(probe(datetime.now(UTC)))
    return out


# -- databases and processes ---------------------------------------------------------


def admin_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    from infra.database import embedded_server_url

    return embedded_server_url(settings.data_dir, "postgres")


@contextmanager
def fresh_database(admin: str) -> Iterator[str]:
    name = f"peakend_bench_{uuid.uuid4().hex[:10]}"
    create_database(admin, name)
    try:
        yield with_database(admin, name)
    finally:
        drop_database(admin, name)


@contextmanager
def processes(
    commands: Sequence[list[str]], env: dict[str, str], log_dir: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``peakend`` sub-commands in their own processes, logging to ``log_dir``."""
    started = []
    try:
        for i, command in enumerate(commands):
            log = open(log_dir / f"{command[0]}-{i}.log", "wb")  # noqa: SIM115
            started.append(
                subprocess.Popen(
                    [sys.executable, "-m", "infra.cli", *command],
                    env={**os.environ, **env},
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        yield started
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def visible_total(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('rm_customer') IS NOT NULL")
        if not cur.fetchone()[0]:
            return 0
        cur.execute("SELECT coalesce(sum((state->>'touchpoints_total')::int), 0) FROM rm_customer")
        return int(cur.fetchone()[0])


def wait_visible(url: str, expected: int, *, timeout: float, desc: str) -> float:
    """Block until ``expected`` touchpoints are in the read models; return when it was
    seen (time.time())."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    deadline = time.monotonic() + timeout
    try:
        with progress(expected, desc, unit="tp", leave=False) as bar:
            while True:
                seen = visible_total(conn)
                bar.n = seen
                bar.refresh()
                if seen >= expected:
                    return time.time()
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{desc}: {seen} of {expected} visible after {timeout:.0f} s"
                    )
                time.sleep(0.02)
    finally:
        conn.close()


def probe_lags(url: str, sent_at: dict[str, float], secret: bytes) -> list[float]:
    conn = psycopg2.connect(url)
    by_digest = {identifier_digest(secret, "id", value): value for value in sent_at}
    try:
        with conn.cursor() as cur:
            # A probe's customer is found by its source id, through the identity index.
            cur.execute(
                "SELECT i.digest, extract(epoch FROM r.updated_at) FROM identity_identifier i"
                " JOIN identity_customer c ON c.customer_id = i.customer_id"
                " JOIN rm_customer r ON r.key = c.survivor"
                " WHERE i.kind = 'id' AND i.digest = ANY(%s)",
                ([psycopg2.Binary(d) for d in by_digest],),
            )
            return [
                (float(at) - sent_at[by_digest[bytes(digest)]]) * 1000
                for digest, at in cur.fetchall()
            ]
    finally:
        conn.close()


def paced(
    envelopes: list[dict[str, Any]], rate: float, chunk: int
) -> Iterator[list[dict[str, Any]]]:
    """Chunks of ``chunk`` envelopes at ``rate`` per second (stamped when released)."""
    start = time.monotonic()
    for i in range(0, len(envelopes), chunk):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = datetime.now(UTC).isoformat()
        part = envelopes[i : i + chunk]
        for envelope in part:
            if envelope["event_id"].startswith("probe-"):
                envelope["occurred_at"] = now
        yield part


# -- paths -----------------------------------------------------------------------------


def raw_copy(admin: str, envelopes: list[dict[str, Any]]) -> Figure:
    """The write limit: COPY of the events, uuid + jsonb, into one table."""
    with fresh_database(admin) as url:
        conn = psycopg2.connect(url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute("CREATE TABLE raw_events (id uuid PRIMARY KEY, body jsonb)")
            start = time.perf_counter()
            buffer = io.StringIO()
            for envelope in envelopes:
                body = json.dumps(envelope).replace("\\", "\\\\")
                buffer.write(f"{uuid.uuid4()}\t{body}\n")
            buffer.seek(0)
            with conn, conn.cursor() as cur:
                cur.copy_expert("COPY raw_events (id, body) FROM STDIN", buffer)
            return Figure("raw limit: PostgreSQL COPY", len(envelopes), time.perf_counter() - start)
        finally:
            conn.close()


def naive(admin: str, envelopes: list[dict[str, Any]]) -> Figure:
    """One event-store transaction per touchpoint, one read-model transaction per event."""
    from infra.bootstrap import bootstrap
    from streams.projector import FOLLOWER, project

    with fresh_database(admin) as url:
        settings = Settings(database_url=url)
        with bootstrap(settings, mode="none", start=False) as platform:
            touchpoints = [
                parse_touchpoint(
                    e,
                    earliest=settings.earliest_occurred_at,
                    phone_region=settings.phone_default_region,
                    identifier_kinds=settings.identifier_kinds,
                )
                for e in envelopes
            ]
            start = time.perf_counter()
            for touchpoint in progress(
                len(touchpoints), "naive", unit="tp", iterable=touchpoints, leave=False
            ):
                platform.records.record([touchpoint])
                position = platform.store.position(FOLLOWER)
                for n in platform.records.recorder.select_notifications(
                    start=position, limit=10, inclusive_of_start=False
                ):
                    with platform.store.connection() as conn:
                        platform.store.lock_position(conn, FOLLOWER)
                        event = platform.records.mapper.to_domain_event(n)
                        project(platform.records, platform.store, conn, [event])
                        platform.store.set_position(conn, FOLLOWER, n.id)
            return Figure(
                "naive: 1 transaction per touchpoint and per event",
                len(touchpoints),
                time.perf_counter() - start,
            )


async def _post_all(
    base: str,
    key: str,
    chunks: Iterator[list[dict[str, Any]]],
    senders: int,
    sent_at: dict[str, float],
    on_sent: Callable[[int], object],
) -> None:
    queue: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(maxsize=senders * 2)

    async def sender(client: httpx.AsyncClient) -> None:
        while (chunk := await queue.get()) is not None:
            stamped = time.time()
            response = await client.post("/v1/touchpoints", json=chunk)
            if response.status_code != 202:
                raise RuntimeError(f"ingest refused: {response.status_code} {response.text}")
            for envelope in chunk:
                if envelope["event_id"].startswith("probe-"):
                    sent_at[envelope["customer"]["id"]] = stamped
            on_sent(len(chunk))

    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, timeout=60, headers=headers) as client:
        tasks = [asyncio.create_task(sender(client)) for _ in range(senders)]
        for chunk in chunks:
            await queue.put(chunk)
            await asyncio.sleep(0)
        for _ in tasks:
            await queue.put(None)
        await asyncio.gather(*tasks)


def embedded(
    admin: str, envelopes: list[dict[str, Any]], *, rate: float, log_dir: Path, batch: int = 250
) -> tuple[Figure, Figure]:
    """HTTP ingest -> event store -> projections, in one `peakend api` process."""
    from infra.bootstrap import bootstrap

    figures = []
    for offered in (math.inf, rate):
        with fresh_database(admin) as url:
            port = free_port()
            env = {"PEAKEND_DATABASE_URL": url}
            with bootstrap(Settings(database_url=url), mode="none", start=False) as setup:
                _, key = setup.keys.create("bench", ["ingest"])
            with processes([["api", "--port", str(port)]], env, log_dir):
                base = f"http://127.0.0.1:{port}"
                _wait_http(base)
                load = with_probes([dict(e) for e in envelopes], 20)
                sent_at: dict[str, float] = {}
                chunk = batch if offered == math.inf else max(1, int(offered / 100))
                chunks = (
                    iter([load[i : i + chunk] for i in range(0, len(load), chunk)])
                    if offered == math.inf
                    else paced(load, offered, chunk)
                )
                with progress(len(load), "embedded: offering", unit="tp", leave=False) as bar:
                    start = time.time()
                    asyncio.run(
                        _post_all(
                            base,
                            key,
                            chunks,
                            4 if offered == math.inf else 2,
                            sent_at,
                            bar.update,
                        )
                    )
                done = wait_visible(url, len(load), timeout=600, desc="embedded: projecting")
                name = (
                    "embedded: HTTP -> event store -> projections"
                    if offered == math.inf
                    else f"embedded: freshness at {offered:g}/s offered"
                )
                secret = Settings(database_url=url).identity_secret_bytes  # the api's
                figures.append(
                    Figure(name, len(load), done - start, probe_lags(url, sent_at, secret))
                )
    return figures[0], figures[1]


def _wait_http(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/v1/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"the API at {base} did not come up")


def cluster(
    admin: str,
    envelopes: list[dict[str, Any]],
    *,
    rate: float,
    workers: int,
    split: bool,
    bootstrap_servers: str | None,
    log_dir: Path,
) -> tuple[Figure, Figure]:
    """Producer -> Kafka -> recorder workers -> event store -> relay -> Kafka ->
    projector workers -> read models."""
    from infra.kafka import Topics, TouchpointProducer, create_topics

    figures = []
    broker = None if bootstrap_servers else LocalBroker().start()
    servers = bootstrap_servers or (broker.bootstrap if broker else "")
    try:
        for offered in (math.inf, rate):
            prefix = f"bench{uuid.uuid4().hex[:8]}"
            with fresh_database(admin) as url:
                settings = Settings(
                    database_url=url, kafka_bootstrap=servers, kafka_topic_prefix=prefix
                )
                create_topics(settings)
                env = {
                    "PEAKEND_DATABASE_URL": url,
                    "PEAKEND_KAFKA_BOOTSTRAP": servers,
                    "PEAKEND_KAFKA_TOPIC_PREFIX": prefix,
                    "PEAKEND_KAFKA_PARTITIONS": str(settings.kafka_partitions),
                }
                commands = (
                    (
                        [["worker", "--roles", "record", "--no-relay"]] * workers
                        + [["worker", "--roles", "project"]] * workers
                    )
                    if split
                    else ([["worker"]] * workers)
                )
                with processes(commands, env, log_dir):
                    producer = TouchpointProducer(
                        servers,
                        identity_secret=settings.identity_secret_bytes,
                        topic=Topics.named(prefix).touchpoints,
                        linger_ms=5,
                    )
                    _warm_up(producer, url)
                    load = with_probes([dict(e) for e in envelopes], 20)
                    sent_at: dict[str, float] = {}
                    chunk = 1000 if offered == math.inf else max(1, int(offered / 100))
                    chunks = (
                        [load[i : i + chunk] for i in range(0, len(load), chunk)]
                        if offered == math.inf
                        else paced(load, offered, chunk)
                    )
                    start = time.time()
                    with progress(len(load), "cluster: publishing", unit="tp", leave=False) as bar:
                        for part in chunks:
                            stamped = time.time()
                            producer.send(part)
                            for envelope in part:
                                if envelope["event_id"].startswith("probe-"):
                                    sent_at[envelope["customer"]["id"]] = stamped
                            bar.update(len(part))
                        producer.flush()
                    expected = len(load) + 1  # and the warm-up touchpoint
                    done = wait_visible(url, expected, timeout=900, desc="cluster: projecting")
                    producer.close()
                    layout = (
                        f"{workers} recorder + {workers} projector workers"
                        if split
                        else f"{workers} worker{'s' if workers > 1 else ''}"
                    )
                    name = (
                        f"cluster ({layout}): Kafka -> event store -> Kafka -> projections"
                        if offered == math.inf
                        else f"cluster: freshness at {offered:g}/s offered"
                    )
                    lags = probe_lags(url, sent_at, settings.identity_secret_bytes)
                    figures.append(Figure(name, len(load), done - start, lags))
    finally:
        if broker is not None:
            broker.stop()
    return figures[0], figures[1]


def _warm_up(producer: Any, url: str) -> None:
    """One touchpoint through the whole path: the workers have joined and are assigned."""
    producer.send([probe(datetime.now(UTC))])
    producer.flush()
    wait_visible(url, 1, timeout=180, desc="cluster: workers joining")


# -- report ----------------------------------------------------------------------------


def table(figures: list[Figure], baseline: Figure | None) -> str:
    def ms(value: float | None) -> str:
        return "" if value is None else f"{value:,.0f}"

    rows = [
        "| path | touchpoints | seconds | touchpoints/s | x naive | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in figures:
        ratio = f"{f.rate / baseline.rate:,.1f}" if baseline and baseline.rate else ""
        rows.append(
            f"| {f.path} | {f.touchpoints:,} | {f.seconds:,.2f} | {f.rate:,.0f} | "
            f"{ratio} | {ms(f.percentile(50))} | {ms(f.percentile(95))} | "
            f"{ms(f.percentile(99))} |"
        )
    return "\n".join(rows)


def run(
    settings: Settings,
    *,
    n: int,
    naive_n: int,
    rate: float,
    modes: Sequence[str],
    workers: int,
    split: bool,
    seed: int,
    log_dir: Path,
) -> str:
    log_dir.mkdir(parents=True, exist_ok=True)
    admin = admin_url(settings)
    envelopes = workload(n, seed)
    figures: list[Figure] = []
    baseline = naive(admin, envelopes[:naive_n])
    figures.append(baseline)
    figures.append(raw_copy(admin, envelopes))
    if "embedded" in modes:
        figures.extend(embedded(admin, envelopes, rate=rate, log_dir=log_dir))
    if "cluster" in modes:
        servers = os.environ.get("PEAKEND_KAFKA_BOOTSTRAP")
        figures.extend(
            cluster(
                admin,
                envelopes,
                rate=rate,
                workers=workers,
                split=split,
                bootstrap_servers=servers,
                log_dir=log_dir,
            )
        )
    return table(figures, baseline)
