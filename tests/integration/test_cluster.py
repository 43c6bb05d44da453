"""Cluster mode on real services: Faust workers as subprocesses, a Kafka-protocol broker,
PostgreSQL.

The oracle is embedded mode: the same envelopes recorded in-process on a fresh database.
Reducers are order-independent, so whatever the partitioning, the number of workers,
crashes and redeliveries, every projection of the cluster must end equal to the
oracle's, and the event store must hold each touchpoint exactly once.

Customer ids are random (``cus_<hex>``, chosen by the identity index), so the two
platforms never share them: every comparison reads each platform's documents and event
store through ``customer_names``, which names every customer after what the identity
index links to it (its smallest identifier), the same in any platform that saw the same
touchpoints.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from domain.customer import Customer
from domain.touchpoints import parse_touchpoint
from infra.bootstrap import Platform, bootstrap
from infra.kafka import Topics, TouchpointProducer, create_topics
from infra.settings import Settings
from infra.simulator import Simulator, SimulatorConfig
from streams.embedded import EmbeddedDriver
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
CONVERGE_S = 120.0  # generous: a rebalance after a kill -9 takes ~12 s on Tansu
POLL_S = 0.5

Snapshot = dict[str, dict[str, Any]]

RECORDED = re.compile(r"worker-(\d+) recorded (\d+) touchpoints from partitions \[([\d, ]*)\]")
RELAYED = re.compile(r"relayed (\d+) events")


# -- helpers: the oracle, snapshots, waiting ---------------------------------------------


def envelopes(seed: int, n: int, customers: int = 300) -> list[dict[str, Any]]:
    """``n`` simulated touchpoints, with the simulator's ~1% exact re-sends and ~3%
    late ones."""
    return Simulator(SimulatorConfig(seed=seed, customers=customers)).touchpoints(n)


@dataclass(frozen=True)
class CustomerNames:
    """Stable names for a platform's random customer ids, from its identity index.

    A customer (a survivor) is named after the smallest identifier (``kind:digest``)
    linked to any of its streams, or, when none is (blocked values only), after the
    smallest event id recorded on them. A stream merged into another is named
    ``absorbed <...>`` after its own identifiers: a document still held under it never
    equals one held under a survivor."""

    streams: dict[str, str]  # every stream -> its own name (a survivor's: the customer's)
    answering: dict[str, str]  # every stream -> the name of the customer that answers for it


def customer_names(platform: Platform) -> CustomerNames:
    """Every customer stream of the platform's identity index, named (one query)."""
    query = """
        SELECT c.customer_id, c.survivor,
          (SELECT min(i.kind || ':' || encode(i.digest, 'hex')) FROM identity_identifier i
            WHERE i.customer_id = c.customer_id) AS identifier,
          (SELECT min(t.event_id COLLATE "C") FROM touchpoint_index t
            WHERE t.customer_id = c.customer_id) AS event_id
        FROM identity_customer c"""
    with (
        contextlib.closing(psycopg2.connect(platform.database_url)) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(query)
        rows: list[tuple[str, str, str | None, str | None]] = cur.fetchall()
    own = {stream: (identifier, event_id) for stream, _, identifier, event_id in rows}
    groups: dict[str, list[tuple[str | None, str | None]]] = {}
    for _, survivor, identifier, event_id in rows:
        groups.setdefault(survivor, []).append((identifier, event_id))

    def name(held: Sequence[tuple[str | None, str | None]]) -> str:
        identifiers = [i for i, _ in held if i is not None]
        if identifiers:
            return min(identifiers)
        return "touchpoint " + min((e for _, e in held if e is not None), default="(none)")

    customers = {survivor: name(held) for survivor, held in groups.items()}
    assert len(set(customers.values())) == len(customers), "two customers, one name"
    streams = {
        stream: customers[stream] if stream == survivor else f"absorbed {name([own[stream]])}"
        for stream, survivor, _, _ in rows
    }
    answering = {stream: customers[survivor] for stream, survivor, _, _ in rows}
    return CustomerNames(streams, answering)


def canonical(value: Any, names: Mapping[str, str]) -> Any:
    """``value`` (JSON: a document, a snapshot) with every customer id in ``names``
    replaced by its name, in keys and values alike, at any depth."""
    if isinstance(value, str):
        return names.get(value, value)
    if isinstance(value, dict):
        return {names.get(k, k): canonical(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v, names) for v in value]
    return value


def snapshot(platform: Platform) -> Snapshot:
    """Every document of every projection, customer ids named (``customer_names``), and
    the maintained facts that do not depend on when a worker derived them (tier against
    no population yet, NPS category, open complaints)."""
    store = platform.store
    dumped = {p.name: store.dump(p.name) for p in store.projections}
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT customer_id, jsonb_build_array(facts->'tier', facts->'nps_category',"
            " facts->'complaints') FROM rm_measures"
        )
        dumped["measures"] = dict(cur.fetchall())
    named: Snapshot = canonical(dumped, customer_names(platform).streams)
    # Names never collide with each other, nor (by their form) with ids: as many
    # documents after naming as before.
    assert {k: len(v) for k, v in named.items()} == {k: len(v) for k, v in dumped.items()}
    return named


def recorded_touchpoints(platform: Platform) -> Counter[tuple[str, str]]:
    """(customer, event id) of every TouchpointRecorded in the event store, counted,
    the customer named as the one that answers for the stream recording it
    (``customer_names``): a count above 1 is a double-recorded touchpoint."""
    records = platform.records
    answering = customer_names(platform).answering
    counts: Counter[tuple[str, str]] = Counter()
    position = 0
    while notifications := records.recorder.select_notifications(
        start=position, limit=1000, inclusive_of_start=False
    ):
        for notification in notifications:
            event = records.mapper.to_domain_event(notification)
            if isinstance(event, Customer.TouchpointRecorded):
                counts[answering.get(event.customer_id, event.customer_id), event.event_id] += 1
        position = notifications[-1].id
    return counts


@dataclass(frozen=True)
class Oracle:
    snapshot: Snapshot
    touchpoints: Counter[tuple[str, str]]


def embedded_oracle(platform: Platform, sent: Sequence[dict[str, Any]]) -> Oracle:
    """What embedded mode makes of the same envelopes."""
    driver = platform.driver
    assert isinstance(driver, EmbeddedDriver)
    driver.submit([parse_touchpoint(e) for e in sent]).result(timeout=60)
    assert driver.wait_until_projected(timeout=60)
    expected = snapshot(platform)
    assert all(expected.values()), "every projection has documents to compare"
    return Oracle(expected, recorded_touchpoints(platform))


def differences(actual: Snapshot, expected: Snapshot, shown: int = 3) -> str:
    """A short account of how two snapshots differ (pytest's own diff of dicts this big
    is truncated to uselessness)."""
    lines = []
    for name in sorted(set(actual) | set(expected)):
        got, want = actual.get(name, {}), expected.get(name, {})
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        differ = sorted(k for k in set(got) & set(want) if got[k] != want[k])
        if not (missing or extra or differ):
            continue
        lines.append(
            f"{name}: {len(missing)} missing {missing[:shown]}, {len(extra)} extra "
            f"{extra[:shown]}, {len(differ)} differ {differ[:shown]}"
        )
        for key in differ[:shown]:
            a, b = got[key], want[key]
            if isinstance(a, dict) and isinstance(b, dict):
                fields = sorted(f for f in set(a) | set(b) if a.get(f) != b.get(f))
                lines.extend(
                    f"  {key}.{f}: cluster {a.get(f)!r} != oracle {b.get(f)!r}"
                    for f in fields[:shown]
                )
    return "\n".join(lines) or "equal"


def wait_for(
    condition: Callable[[], object],
    timeout: float,
    what: str,
    context: Callable[[], str] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{context()}")
        time.sleep(0.05)


def send(producer: TouchpointProducer, batch: Sequence[dict[str, Any]]) -> None:
    """Publish and wait for every acknowledgement (acks=all)."""
    for future in producer.send(batch):
        future.result(timeout=30)


def parse_partitions(text: str) -> set[int]:
    """Faust prints partition sets as ``{0-1, 3}``."""
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        out.update(range(int(low), int(high or low) + 1))
    return out


def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list[Any]:
    """Every message of ``topic`` (JSON), read without a consumer group (kafka-python's
    group consumer is slow to join on Tansu), once ``expected`` are there."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        consumer.seek_to_beginning()
        messages: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(messages) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                messages.extend(json.loads(record.value) for record in batch)
        # Anything beyond what was expected would be a refusal of a valid touchpoint.
        for batch in consumer.poll(timeout_ms=1000).values():
            messages.extend(json.loads(record.value) for record in batch)
        return messages
    finally:
        consumer.close()


# -- subprocesses -------------------------------------------------------------------------


@dataclass
class Service:
    """A ``python -m infra.cli ...`` subprocess with its log file."""

    name: str
    args: list[str]
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 25) -> str:
        return f"--- {self.name} ({self.log_path}) ---\n" + "\n".join(
            self.log().splitlines()[-lines:]
        )

    def recorded(self) -> int:
        return sum(int(m.group(2)) for m in RECORDED.finditer(self.log()))

    def recorded_partitions(self) -> set[int]:
        return {p for m in RECORDED.finditer(self.log()) for p in parse_partitions(m.group(3))}

    def relayed(self) -> int:
        return sum(int(m.group(1)) for m in RELAYED.finditer(self.log()))

    def assigned(self, topic: str) -> set[int] | None:
        """The partitions of ``topic`` in the worker's latest assignment (None before
        the first one)."""
        chunks = self.log().split("Setting newly assigned partitions")
        if len(chunks) < 2:
            return None
        latest = chunks[-1].split(" for group ")[0]
        # aiokafka's own form (our log format), or Faust's table (Faust's formatter).
        plain = re.findall(
            rf"TopicPartition\(topic='{re.escape(topic)}', partition=(\d+)\)", latest
        )
        if plain:
            return {int(p) for p in plain}
        row = re.search(rf"\| {re.escape(topic)}\s*\| \{{([^}}]*)\}}", latest)
        return parse_partitions(row.group(1)) if row else set()

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """kill -9: no shutdown, no offset commit, no goodbye to the group."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@dataclass
class Cluster:
    """One test's cluster: its own topics (a fresh prefix), database and processes."""

    bootstrap: str
    prefix: str
    database_url: str
    logs: Path
    platform: Platform  # stores only, to read what the workers wrote
    services: list[Service] = field(default_factory=list)

    @property
    def topics(self) -> Topics:
        return Topics.named(self.prefix)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PEAKEND_DATABASE_URL": self.database_url,
            "PEAKEND_KAFKA_BOOTSTRAP": self.bootstrap,
            "PEAKEND_KAFKA_TOPIC_PREFIX": self.prefix,
            "PEAKEND_KAFKA_PARTITIONS": str(PARTITIONS),
            "PYTHONUNBUFFERED": "1",
        }

    def start(self, *args: str, env: dict[str, str] | None = None) -> Service:
        name = f"{args[0]}{len(self.services) + 1}"
        log_path = self.logs / f"{name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "infra.cli", *args],
                cwd=ROOT,
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        service = Service(name, list(args), log_path, process)
        self.services.append(service)
        return service

    def worker(self, *args: str) -> Service:
        """A ``peakend worker`` without its scheduler: the tests compare what the
        workers make of the touchpoints with embedded mode's, and a scheduler would
        roll population inputs out meanwhile (the clock is the tests' to drive)."""
        return self.start("worker", "--no-scheduler", *args)

    def producer(self) -> TouchpointProducer:
        return TouchpointProducer(
            self.bootstrap,
            identity_secret=self.platform.settings.identity_secret_bytes,
            topic=self.topics.touchpoints,
        )

    def logs_tail(self) -> str:
        return "\n".join(s.tail() for s in self.services)

    def snapshot(self) -> Snapshot:
        return snapshot(self.platform)

    def converge(self, oracle: Oracle, timeout: float = CONVERGE_S) -> Snapshot:
        """Poll the read models until they equal the oracle's (or time runs out), then
        assert they do, so a failure shows how they differ."""
        deadline = time.monotonic() + timeout
        actual = self.snapshot()
        while actual != oracle.snapshot and time.monotonic() < deadline:
            dead = [
                s.name
                for s in self.services
                if s.name.startswith("worker")
                and not s.alive()
                and s.process.returncode != -signal.SIGKILL
            ]
            assert not dead, f"workers exited: {dead}\n{self.logs_tail()}"
            time.sleep(POLL_S)
            actual = self.snapshot()
        assert actual == oracle.snapshot, (
            f"after {timeout:.0f} s the cluster's projections differ from the oracle's:\n"
            f"{differences(actual, oracle.snapshot)}\n{self.logs_tail()}"
        )
        return actual

    def wait_until_balanced(self, workers: Sequence[Service], timeout: float = 60) -> None:
        """Until every worker owns some touchpoints partitions, none owned twice."""

        def balanced() -> bool:
            owned = [w.assigned(self.topics.touchpoints) for w in workers]
            if any(not o for o in owned):
                return False
            sets = [o for o in owned if o]
            return sum(len(o) for o in sets) == PARTITIONS and set().union(*sets) == set(
                range(PARTITIONS)
            )

        wait_for(
            balanced, timeout, "the workers to share the touchpoints partitions", self.logs_tail
        )

    def close(self) -> None:
        for service in self.services:
            with contextlib.suppress(Exception):
                service.stop()
        self.platform.close()


@contextlib.contextmanager
def open_cluster(broker: str, database_url: str, logs: Path) -> Iterator[Cluster]:
    """A cluster on its own topics (a fresh prefix) and the given fresh database; its
    processes are stopped on leaving."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings(
        database_url=database_url,
        kafka_bootstrap=broker,
        kafka_topic_prefix=prefix,
        kafka_partitions=PARTITIONS,
    )
    create_topics(settings)
    # Built before any worker starts: it creates the event store's and read models' tables,
    # so the workers find them made.
    platform = bootstrap(settings, mode="none", start=False)
    made = Cluster(broker, prefix, database_url, logs, platform)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def cluster(broker: str, fresh_database: Callable[[], str], tmp_path: Path) -> Iterator[Cluster]:
    with open_cluster(broker, fresh_database(), tmp_path) as made:
        yield made


def worker_outcomes(metrics_port: int) -> dict[str, float]:
    """What a worker serves of its ``peakend_ingest_touchpoints_total``, by outcome."""
    scraped = text_string_to_metric_families(
        httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    )
    return {
        sample.labels["outcome"]: sample.value
        for family in scraped
        if family.name == "peakend_ingest_touchpoints"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


# -- the tests ----------------------------------------------------------------------------


def test_touchpoints_published_with_the_producer_client_project_as_in_embedded_mode(
    cluster: Cluster, make_platform: Callable[..., Platform]
) -> None:
    sent = envelopes(seed=11, n=3000)
    assert len({e["event_id"] for e in sent}) < len(sent)  # re-sends included
    metrics_port = free_port()
    cluster.worker("--metrics-port", str(metrics_port))
    producer = cluster.producer()
    try:
        send(producer, sent)
    finally:
        producer.close(10)
    oracle = embedded_oracle(make_platform(), sent)

    cluster.converge(oracle)
    assert recorded_touchpoints(cluster.platform) == oracle.touchpoints
    # The worker serves its own counts: every touchpoint sent, recorded or a duplicate.
    outcomes = worker_outcomes(metrics_port)
    assert outcomes["recorded"] == sum(oracle.touchpoints.values())
    assert outcomes["recorded"] + outcomes["duplicate"] == len(sent)


def test_a_recorder_only_and_a_projector_only_worker_end_equal_to_embedded_mode(
    cluster: Cluster, make_platform: Callable[..., Platform]
) -> None:
    sent = envelopes(seed=13, n=2000)
    recorder = cluster.worker("--roles", "record", "--no-relay")
    projector = cluster.worker("--roles", "project")
    producer = cluster.producer()
    try:
        send(producer, sent)
    finally:
        producer.close(10)
    oracle = embedded_oracle(make_platform(), sent)

    cluster.converge(oracle)
    assert recorded_touchpoints(cluster.platform) == oracle.touchpoints
    assert "recorded" in recorder.log() and "projected" not in recorder.log()
    assert "projected" in projector.log() and "recorded" not in projector.log()


def test_two_workers_share_the_partitions_and_end_equal_to_embedded_mode(
    cluster: Cluster, make_platform: Callable[..., Platform]
) -> None:
    sent = envelopes(seed=12, n=3000)
    workers = [cluster.worker(), cluster.worker()]
    oracle = embedded_oracle(make_platform(), sent)
    cluster.wait_until_balanced(workers)

    producer = cluster.producer()
    try:
        send(producer, sent)
    finally:
        producer.close(10)
    cluster.converge(oracle)

    counts = [w.recorded() for w in workers]
    print(
        "recorded per worker:",
        counts,
        "partitions:",
        [sorted(w.recorded_partitions()) for w in workers],
    )
    assert all(count > 0 for count in counts), cluster.logs_tail()
    assert sum(counts) >= len(sent)  # every message recorded (redelivered ones again)
    assert recorded_touchpoints(cluster.platform) == oracle.touchpoints


def test_a_worker_killed_mid_stream_loses_nothing_and_counts_nothing_twice(
    cluster: Cluster, make_platform: Callable[..., Platform]
) -> None:
    sent = envelopes(seed=13, n=4000)
    first, rest = sent[:2000], sent[2000:]
    victim, survivor = cluster.worker(), cluster.worker()
    oracle = embedded_oracle(make_platform(), sent)
    cluster.wait_until_balanced([victim, survivor])

    producer = cluster.producer()
    try:
        send(producer, first)
        wait_for(
            lambda: victim.recorded() > 0, 30, "the victim to record something", cluster.logs_tail
        )
        victim.kill()
        killed_after = victim.recorded()
        send(producer, rest)
    finally:
        producer.close(10)

    cluster.converge(oracle)
    print(
        f"victim recorded {killed_after} before kill -9; survivor recorded "
        f"{survivor.recorded()}; sent {len(sent)}"
    )
    assert survivor.alive()
    # The survivor took over the victim's partitions: it recorded from all of them.
    assert survivor.recorded_partitions() == set(range(PARTITIONS)), cluster.logs_tail()
    # The event store: every touchpoint once, none lost, none twice.
    stored = recorded_touchpoints(cluster.platform)
    assert stored == oracle.touchpoints
    assert max(stored.values()) == 1
    assert len(stored) == len({e["event_id"] for e in sent})


def test_the_relay_killed_and_restarted_mid_stream_loses_nothing_and_counts_nothing_twice(
    cluster: Cluster, make_platform: Callable[..., Platform]
) -> None:
    sent = envelopes(seed=14, n=3000)
    first, rest = sent[:1500], sent[1500:]
    worker = cluster.worker("--no-relay")
    # Small relay batches: the kill lands while the relay still has work to do.
    relay = cluster.start("relay", env={"PEAKEND_STREAM_BATCH_SIZE": "50"})
    oracle = embedded_oracle(make_platform(), sent)

    producer = cluster.producer()
    try:
        send(producer, first)
        wait_for(lambda: relay.relayed() > 0, 60, "the relay to relay something", cluster.logs_tail)
        relay.kill()
        relayed_before = relay.relayed()
        send(producer, rest)
        wait_for(
            lambda: worker.recorded() >= len(sent),
            60,
            "the worker to record every touchpoint",
            cluster.logs_tail,
        )
    finally:
        producer.close(10)
    # Recorded but not relayed: without a relay, the read models stay behind.
    store, records = cluster.platform.store, cluster.platform.records
    assert store.position("relay") < (records.recorder.max_notification_id() or 0)
    assert cluster.snapshot() != oracle.snapshot

    restarted = cluster.start("relay")
    cluster.converge(oracle)
    print(f"relayed {relayed_before} events before kill -9, {restarted.relayed()} after")
    assert restarted.relayed() > 0
    assert worker.alive()
    assert recorded_touchpoints(cluster.platform) == oracle.touchpoints


def test_poison_messages_go_to_the_dead_letter_topic_and_the_stream_goes_on(
    cluster: Cluster, make_platform: Callable[..., Platform]
) -> None:
    valid = envelopes(seed=15, n=2000)
    template = dict(valid[0], event_id=f"poison-{uuid.uuid4()}")
    poison: list[tuple[int, bytes, str, str]] = [
        # (partition, bytes, reason, field named in the errors)
        *[(p, b'{"event_id": "not json", ', "malformed JSON", "body") for p in range(PARTITIONS)],
        (0, json.dumps({**template, "type": "teleport"}).encode(), "invalid touchpoint", "type"),
        (1, json.dumps({**template, "emotion": 9}).encode(), "invalid touchpoint", "emotion"),
        (2, b"\xff\xfe\x00 not utf-8", "malformed JSON", "body"),
    ]
    cluster.worker()
    oracle = embedded_oracle(make_platform(), valid)

    raw = KafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all")
    try:
        where = {}
        for partition, value, reason, field_name in poison:
            meta = raw.send(
                cluster.topics.touchpoints, value=value, key=b"poison", partition=partition
            ).get(timeout=30)
            where[meta.partition, meta.offset] = (value, reason, field_name)
    finally:
        raw.close(10)
    producer = cluster.producer()
    try:
        send(producer, valid)  # after the poison, in every partition
    finally:
        producer.close(10)

    cluster.converge(oracle)
    assert recorded_touchpoints(cluster.platform) == oracle.touchpoints

    letters = read_all(cluster.bootstrap, cluster.topics.dead_letters, len(poison))
    by_source = {(m["source"]["partition"], m["source"]["offset"]): m for m in letters}
    assert len(letters) == len(poison)
    assert set(by_source) == set(where)
    for source, (value, reason, field_name) in where.items():
        letter = by_source[source]
        assert letter["schema"] == 1
        assert letter["source"]["topic"] == cluster.topics.touchpoints
        assert letter["reason"].startswith(reason), letter
        assert base64.b64decode(letter["original_base64"]) == value
        assert field_name in {e["field"] for e in letter["errors"]}, letter
        try:
            text: str | None = value.decode()
        except UnicodeDecodeError:
            text = None
        assert letter["original_text"] == text

    # A re-send of a recorded event id with other content: a conflict, dead-lettered
    # with the fields that differ, and nothing recorded changes.
    original = valid[0]
    changed = {**original, "channel": "web" if original["channel"] != "web" else "store"}
    raw = KafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all")
    try:
        raw.send(cluster.topics.touchpoints, value=json.dumps(changed).encode()).get(timeout=30)
    finally:
        raw.close(10)
    letters = read_all(cluster.bootstrap, cluster.topics.dead_letters, len(poison) + 1)
    conflicts = [m for m in letters if m["reason"] == "conflict"]
    assert len(conflicts) == 1, letters
    assert conflicts[0]["errors"][0]["field"] == "event_id"
    assert "channel" in conflicts[0]["errors"][0]["message"]
    assert recorded_touchpoints(cluster.platform) == oracle.touchpoints


def test_processes_setting_up_a_fresh_database_at_once_all_start(
    fresh_database: Callable[[], str],
) -> None:
    """A deployment starts its workers, relay and API at once, on a database nobody has
    set up yet: each process runs ``bootstrap``, which creates the event store's and the
    read models' tables. Every one of them must come up. (The other tests let the
    fixture create the tables before any worker starts.) Threads released together by a
    barrier make the collision certain; separate worker processes hit it most times."""
    processes = 4

    def start(url: str, barrier: threading.Barrier) -> str:
        barrier.wait(timeout=30)
        try:
            platform = bootstrap(Settings(database_url=url), mode="none", start=False)
        except Exception as error:
            return f"{type(error).__name__}: {error}".splitlines()[0]
        platform.close()
        return "started"

    for _ in range(3):
        url, barrier = fresh_database(), threading.Barrier(processes)
        with ThreadPoolExecutor(processes) as pool:
            outcomes = list(pool.map(start, [url] * processes, [barrier] * processes))
        assert outcomes == ["started"] * processes
