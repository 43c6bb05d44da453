"""``peakend bench --mode alerts``: how long an alert takes to reach a Server-Sent Events
subscriber after the touchpoint that caused it, measured on this machine, in embedded
mode and in cluster mode.

On a fresh database each time:

1. a subscriber holds ``GET /v1/alerts/stream`` open from before the first send, in a
   thread of its own, so that its arrival times do not wait on the senders;
2. N simulator touchpoints are *offered* at ``--rate`` per second, open loop: a batch
   of rate/100 is released every 10 ms whether or not earlier ones were answered (at
   most ``IN_FLIGHT`` requests outstanding; if the platform holds that many the schedule
   slips, and the report says by how much). Embedded: each batch is one ``POST
   /v1/touchpoints``. Cluster: each batch is published to Kafka by the producer client
   (``acks=all``), recorded and projected by ``peakend worker``, and the stream is
   served by ``peakend api --mode cluster``. After every ``PROBE_EVERY``-th touchpoint
   comes a *probe*: an NPS 2 answer by a customer of its own, dated when its batch is
   released, which opens exactly one ``detractor_follow_up`` alert whose evidence names
   the answer's event id;
3. a probe's latency is from its batch's release (``time.time()``: the touchpoint
   happened then) to the arrival of the ``alert_opened`` event naming it, so a platform
   that falls behind the offered rate shows it as latency; a probe with no alert
   ``ARRIVAL_TIMEOUT_S`` after the last release has not arrived.

The latency is the whole path: ingest (HTTP or Kafka), the recorder's batching and
commit, projection with the measures and the alert rules, and the stream's reading of
the change feed. The goal (p99 under 1 s at 2,000 touchpoints/s offered) is a figure
reported here, not a timed test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from infra.bench import Figure, _wait_http, _warm_up, admin_url, fresh_database, processes
from infra.bench import workload as simulated
from infra.broker import LocalBroker, free_port
from infra.progress import progress
from infra.settings import Settings

PROBE_EVERY = 20  # touchpoints of background traffic per probe, as infra.bench's probes
IN_FLIGHT = 32  # requests outstanding at most: a busy set of touchpoint systems
ARRIVAL_TIMEOUT_S = 30.0
SUBSCRIBE_TIMEOUT_S = 30.0
GOAL_P99_MS = 1000.0
DETRACTOR_RULE = "detractor_follow_up"


# -- the stream ------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSentEvent:
    id: str | None
    event: str
    data: str


class EventParser:
    """Server-Sent Events from a stream's lines (without their line ends), as the
    WHATWG parser reads them: fields gather until a blank line ends the event; comment
    lines (the heartbeats) and blocks without data (``retry:``) give none."""

    def __init__(self) -> None:
        self._id: str | None = None  # kept across events, as a browser's last event id
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> ServerSentEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = ServerSentEvent(self._id, self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


def caused_by(event: ServerSentEvent) -> str | None:
    """The event id of the survey answer that opened this ``detractor_follow_up``
    alert; None for any other event."""
    if event.event != "alert_opened":
        return None
    alert = json.loads(event.data).get("after") or {}
    if alert.get("rule") != DETRACTOR_RULE:
        return None
    answer = (alert.get("evidence") or {}).get("answer") or {}
    event_id = answer.get("event_id")
    return event_id if isinstance(event_id, str) else None


class Subscriber:
    """One ``GET /v1/alerts/stream`` held open in a thread of its own: when each
    detractor alert arrived, by the event id of the answer that caused it."""

    def __init__(self, base: str, key: str) -> None:
        self.base, self.key = base, key
        self.arrived: dict[str, float] = {}  # answer event id -> time.time() on arrival
        self.kinds: Counter[str] = Counter()  # every event received, by kind
        self.error: BaseException | None = None
        self._subscribed = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name="sse-subscriber", daemon=True)

    def start(self, timeout: float = SUBSCRIBE_TIMEOUT_S) -> None:
        """Return once the stream answered: its start position is taken before the
        answer, so every alert of a later send is on it."""
        self._thread.start()
        if not self._subscribed.wait(timeout):
            raise TimeoutError(f"no answer from {self.base}/v1/alerts/stream in {timeout:.0f} s")
        if self.error is not None:
            raise RuntimeError(f"the alert stream failed: {self.error!r}") from self.error

    def stop(self) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                loop.call_soon_threadsafe(task.cancel)
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as why:  # reported by start() and the report
            self.error = why
        finally:
            self._subscribed.set()  # start() must not wait out its timeout on a failure

    async def _main(self) -> None:
        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        with contextlib.suppress(asyncio.CancelledError):  # stop() cancels it
            await self._listen()

    async def _listen(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}", "Accept": "text/event-stream"}
        # No read timeout: a quiet stream sends only a heartbeat every 15 s.
        timeout = httpx.Timeout(10.0, read=None)
        async with (
            httpx.AsyncClient(base_url=self.base, headers=headers, timeout=timeout) as client,
            client.stream("GET", "/v1/alerts/stream") as response,
        ):
            if response.status_code != 200:
                body = (await response.aread()).decode(errors="replace")
                raise RuntimeError(f"alert stream refused: {response.status_code} {body}")
            self._subscribed.set()
            parser = EventParser()
            async for line in response.aiter_lines():
                event = parser.feed(line)
                if event is None:
                    continue
                at = time.time()
                self.kinds[event.event] += 1
                answer = caused_by(event)
                if answer is not None:
                    self.arrived.setdefault(answer, at)


# -- load ------------------------------------------------------------------------------


def detractor(now: datetime) -> dict[str, Any]:
    """A probe: an NPS 2 answer by a new customer, dated ``now`` (its release)."""
    return {
        "event_id": f"probe-{uuid.uuid4()}",
        "type": "survey_answered",
        "occurred_at": now.isoformat(),
        "channel": "web",
        "customer": {"id": f"probe-{uuid.uuid4().hex[:16]}"},
        "payload": {"survey_id": "bench-nps", "question_id": "Q-nps", "metric": "nps", "value": 2},
    }


def with_detractors(envelopes: list[dict[str, Any]], every: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, envelope in enumerate(envelopes):
        out.append(envelope)
        if i % every == 0:
            out.append(detractor(datetime.now(UTC)))
    return out


@dataclass
class Released:
    """What the offering did: when each probe was released (its event id -> time.time()),
    how far behind its schedule the last batch went out, and when the last was accepted."""

    probes: dict[str, float] = field(default_factory=dict)
    behind_s: float = 0.0
    accepted_at: float = 0.0

    def release(self, batch: list[dict[str, Any]], due: float) -> None:
        """Stamp the batch's probes as happening now (their release)."""
        now = datetime.now(UTC)
        at = now.timestamp()
        self.behind_s = max(self.behind_s, at - due)
        for envelope in batch:
            if envelope["event_id"].startswith("probe-"):
                envelope["occurred_at"] = now.isoformat()
                self.probes[envelope["event_id"]] = at


def schedule(rate: float) -> tuple[int, float]:
    """Batches of rate/100 touchpoints, one every ``chunk / rate`` seconds."""
    chunk = max(1, int(rate / 100))
    return chunk, chunk / rate


async def offer_http(
    base: str,
    key: str,
    load: list[dict[str, Any]],
    rate: float,
    released: Released,
    on_sent: Callable[[int], object],
) -> None:
    """Each batch ``POST``-ed when it is due, open loop: at most ``IN_FLIGHT`` requests
    outstanding (beyond that the schedule slips, which ``released.behind_s`` shows)."""
    chunk, every = schedule(rate)
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    room = asyncio.Semaphore(IN_FLIGHT)

    async def post(client: httpx.AsyncClient, batch: list[dict[str, Any]]) -> None:
        try:
            response = await client.post("/v1/touchpoints", json=batch)
            if response.status_code != 202:
                raise RuntimeError(f"ingest refused: {response.status_code} {response.text}")
            released.accepted_at = time.time()
            on_sent(len(batch))
        finally:
            room.release()

    async with httpx.AsyncClient(
        base_url=base, timeout=120, headers=headers, limits=limits
    ) as client:
        start = time.time()
        sending: list[asyncio.Task[None]] = []
        for i in range(0, len(load), chunk):
            due = start + (i // chunk) * every
            await asyncio.sleep(max(0.0, due - time.time()))
            await room.acquire()
            batch = load[i : i + chunk]
            released.release(batch, due)
            sending.append(asyncio.create_task(post(client, batch)))
        await asyncio.gather(*sending)


def offer_kafka(
    producer: Any,
    load: list[dict[str, Any]],
    rate: float,
    released: Released,
    on_sent: Callable[[int], object],
) -> None:
    """Each batch published when it is due (the producer batches and acknowledges on its
    own threads: a send does not wait for the broker)."""
    chunk, every = schedule(rate)
    start = time.time()
    for i in range(0, len(load), chunk):
        due = start + (i // chunk) * every
        time.sleep(max(0.0, due - time.time()))
        batch = load[i : i + chunk]
        released.release(batch, due)
        producer.send(batch)
        on_sent(len(batch))
    producer.flush()
    released.accepted_at = time.time()


# -- the run ---------------------------------------------------------------------------


@dataclass
class AlertFigure:
    path: str
    offered: float  # touchpoints/s
    touchpoints: int
    seconds: float  # first release to the last acceptance
    probes: int
    latencies_ms: list[float] = field(default_factory=list)  # the probes that arrived
    kinds: Counter[str] = field(default_factory=Counter)
    behind_s: float = 0.0  # how late the last batch was released against its schedule

    @property
    def rate(self) -> float:
        return self.touchpoints / self.seconds if self.seconds else math.inf

    @property
    def missing(self) -> int:
        return self.probes - len(self.latencies_ms)

    def percentile(self, p: float, *, counting_missing: bool = False) -> float | None:
        """Over the probes that arrived; ``counting_missing``: over all, those that did
        not arrive as never."""
        lags = self.latencies_ms + ([math.inf] * self.missing if counting_missing else [])
        return Figure(self.path, len(lags), 0.0, lags).percentile(p)


def _await_arrivals(subscriber: Subscriber, wanted: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with progress(len(wanted), "alerts: arriving", unit="alert", leave=False) as bar:
        while True:
            seen = sum(1 for event_id in wanted if event_id in subscriber.arrived)
            bar.n = seen
            bar.refresh()
            if seen >= len(wanted) or time.monotonic() > deadline:
                return
            if subscriber.error is not None:
                raise RuntimeError(f"the alert stream failed: {subscriber.error!r}")
            time.sleep(0.1)


def _measured(
    path: str,
    base: str,
    key: str,
    load: list[dict[str, Any]],
    rate: float,
    send: Callable[[Released, Callable[[int], object]], None],
) -> AlertFigure:
    """Subscribe, offer ``load`` with ``send``, wait for the probes' alerts."""
    subscriber = Subscriber(base, key)
    released = Released()
    try:
        subscriber.start()
        with progress(len(load), f"{path}: offering", unit="tp", leave=False) as bar:
            start = time.time()
            send(released, bar.update)
        _await_arrivals(subscriber, set(released.probes), ARRIVAL_TIMEOUT_S)
    finally:
        subscriber.stop()
    arrived = subscriber.arrived
    return AlertFigure(
        f"{path}: alerts at {rate:g}/s offered",
        rate,
        len(load),
        released.accepted_at - start,
        len(released.probes),
        [(arrived[e] - at) * 1000 for e, at in released.probes.items() if e in arrived],
        subscriber.kinds,
        released.behind_s,
    )


def embedded(
    admin: str, envelopes: list[dict[str, Any]], *, rate: float, log_dir: Path
) -> AlertFigure:
    """HTTP ingest -> event store -> projections and alert rules -> change feed -> SSE,
    in one ``peakend api`` process."""
    from infra.bootstrap import bootstrap

    with fresh_database(admin) as url:
        port = free_port()
        env = {"PEAKEND_DATABASE_URL": url}
        with bootstrap(Settings(database_url=url), mode="none", start=False) as setup:
            _, key = setup.keys.create("bench-alerts", ["ingest", "read"])
        with processes([["api", "--port", str(port)]], env, log_dir):
            base = f"http://127.0.0.1:{port}"
            _wait_http(base)
            load = with_detractors([dict(e) for e in envelopes], PROBE_EVERY)

            def send(released: Released, on_sent: Callable[[int], object]) -> None:
                asyncio.run(offer_http(base, key, load, rate, released, on_sent))

            return _measured("embedded", base, key, load, rate, send)


def cluster(
    admin: str,
    envelopes: list[dict[str, Any]],
    *,
    rate: float,
    workers: int,
    bootstrap_servers: str | None,
    log_dir: Path,
) -> AlertFigure:
    """Producer -> Kafka -> recorder -> event store -> relay -> Kafka -> projectors
    with the alert rules -> change feed -> ``peakend api --mode cluster`` -> SSE."""
    from infra.bootstrap import bootstrap
    from infra.kafka import Topics, TouchpointProducer, create_topics

    broker = None if bootstrap_servers else LocalBroker().start()
    servers = bootstrap_servers or (broker.bootstrap if broker else "")
    try:
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        with fresh_database(admin) as url:
            settings = Settings(
                database_url=url, kafka_bootstrap=servers, kafka_topic_prefix=prefix
            )
            create_topics(settings)
            with bootstrap(settings, mode="none", start=False) as setup:
                _, key = setup.keys.create("bench-alerts", ["read"])
            env = {
                "PEAKEND_DATABASE_URL": url,
                "PEAKEND_KAFKA_BOOTSTRAP": servers,
                "PEAKEND_KAFKA_TOPIC_PREFIX": prefix,
                "PEAKEND_KAFKA_PARTITIONS": str(settings.kafka_partitions),
            }
            port = free_port()
            commands = [["worker"]] * workers + [["api", "--mode", "cluster", "--port", str(port)]]
            with processes(commands, env, log_dir):
                base = f"http://127.0.0.1:{port}"
                _wait_http(base)
                producer = TouchpointProducer(
                    servers,
                    identity_secret=settings.identity_secret_bytes,
                    topic=Topics.named(prefix).touchpoints,
                    linger_ms=5,
                )
                try:
                    _warm_up(producer, url)
                    load = with_detractors([dict(e) for e in envelopes], PROBE_EVERY)

                    def send(released: Released, on_sent: Callable[[int], object]) -> None:
                        offer_kafka(producer, load, rate, released, on_sent)

                    layout = f"{workers} worker{'s' if workers > 1 else ''}"
                    return _measured(f"cluster ({layout})", base, key, load, rate, send)
                finally:
                    producer.close()
    finally:
        if broker is not None:
            broker.stop()


# -- report ----------------------------------------------------------------------------


def report(figures: list[AlertFigure]) -> str:
    def ms(value: float | None) -> str:
        return "" if value is None else f"{value:,.0f}"

    rows = [
        "| path | touchpoints | seconds | accepted tp/s | schedule slipped s | probes | arrived"
        " | p50 ms | p95 ms | p99 ms | max ms | not arrived |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in figures:
        rows.append(
            f"| {f.path} | {f.touchpoints:,} | {f.seconds:,.2f} | {f.rate:,.0f} | "
            f"{f.behind_s:,.2f} | {f.probes:,} | {len(f.latencies_ms):,} | "
            f"{ms(f.percentile(50))} | "
            f"{ms(f.percentile(95))} | {ms(f.percentile(99))} | "
            f"{ms(max(f.latencies_ms, default=None))} | {f.missing:,} |"
        )
    lines = ["\n".join(rows), ""]
    for f in figures:
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(f.kinds.items())) or "none"
        lines.append(
            f"- {f.path}: offered {f.offered:,.0f}/s open loop (at most {IN_FLIGHT} "
            f"requests in flight), accepted {f.rate:,.0f}/s; events on the stream: {kinds};"
            f" a probe is one touchpoint in {PROBE_EVERY + 1}; its latency counts from its"
            f" release; not arrived: no alert {ARRIVAL_TIMEOUT_S:.0f} s after the last"
        )
    for f in figures:
        p99 = f.percentile(99, counting_missing=True)
        met = p99 is not None and p99 < GOAL_P99_MS
        over = (
            "no probe"
            if p99 is None
            else f"p99 {ms(p99)} ms"
            if math.isfinite(p99)
            else "p99 never (more than 1% of the probes did not arrive)"
        )
        lines.append(
            f"- {f.path}: p99 < {GOAL_P99_MS:,.0f} ms: {'met' if met else 'not met'} "
            f"({over}, over all {f.probes:,} probes)"
        )
    return "\n".join(lines)


def run(
    settings: Settings,
    *,
    n: int,
    rate: float,
    seed: int,
    modes: Sequence[str],
    workers: int,
    log_dir: Path,
) -> str:
    log_dir.mkdir(parents=True, exist_ok=True)
    admin = admin_url(settings)
    envelopes = simulated(n, seed)
    figures = []
    if "embedded" in modes:
        figures.append(embedded(admin, envelopes, rate=rate, log_dir=log_dir))
    if "cluster" in modes:
        figures.append(
            cluster(
                admin,
                envelopes,
                rate=rate,
                workers=workers,
                bootstrap_servers=os.environ.get("PEAKEND_KAFKA_BOOTSTRAP"),
                log_dir=log_dir,
            )
        )
    return report(figures)
