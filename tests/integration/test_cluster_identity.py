"""Identity resolution in cluster mode (DOMAIN.md §1, *Identify*), on real services:
Faust workers as subprocesses, a Kafka-protocol broker, PostgreSQL.

Touchpoints are keyed by their strongest identifier (``domain.identity.source_key``: its
keyed digest), so one person's touchpoints under an e-mail address and under a phone
number travel in different partitions, to different workers; the relay keys customer
events by the survivor. Whatever the partitions and workers, the end must be what
embedded mode (the oracle) makes of the same envelopes, which is what a person known as
one customer from the start has: compared through ``customer_names`` (customer ids are
random), and with the identity index holding one customer per person, and no document
left under a customer merged into another.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.partitioner.default import murmur2

from domain.identity import source_key
from domain.touchpoints import parse_touchpoint
from infra.bootstrap import Platform
from infra.kafka import TouchpointProducer
from infra.settings import Settings
from projections import maintained
from projections.base import utc_iso
from tests.builders import T0, Envelope, complaint, envelope, purchase, survey_answer
from tests.conftest import embedded, free_port
from tests.integration.test_cluster import (
    PARTITIONS,
    Cluster,
    Oracle,
    Service,
    open_cluster,
    read_all,
    recorded_touchpoints,
    snapshot,
    wait_for,
    worker_outcomes,
)

Phases = Sequence[Sequence[Envelope]]
PHASE_S = 60.0  # a phase's recording, the first one's including the worker's start

# -- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def cluster(broker: str, fresh_database: Callable[[], str], tmp_path: Path) -> Iterator[Cluster]:
    with open_cluster(broker, fresh_database(), tmp_path) as made:
        yield made


def partition_of(raw: Envelope) -> int:
    """The touchpoints partition the producer client sends ``raw`` to: its key is the
    strongest of its (normalised) identifiers' keyed digest (under the identity secret
    the cluster's settings have, as these tests': the development one), hashed as
    Kafka's default partitioner does."""
    identifiers = parse_touchpoint(raw).customer.present()
    key = source_key(identifiers, Settings().identity_secret_bytes).encode()
    return int(murmur2(key) & 0x7FFFFFFF) % PARTITIONS


def landing(kind: str, make: Callable[[], str], partitions: set[int]) -> str:
    """A fresh value of ``make`` whose touchpoints (naming it as their strongest
    identifier) land in one of ``partitions``."""
    for _ in range(10_000):
        value = make()
        if partition_of(envelope({kind: value})) in partitions:
            return value
    raise AssertionError(f"no {kind} value lands in partitions {partitions}")


def new_tag() -> str:
    return uuid.uuid4().hex[:10]


@dataclass(frozen=True)
class Person:
    """One person, known to the sources by up to four identifiers (normalised already)."""

    tag: str
    email: str
    phone: str
    loyalty_card: str
    device_id: str
    start: datetime

    @classmethod
    def new(cls, number: int, email_in: set[int], phone_in: set[int]) -> Person:
        """Person ``number`` (their touchpoints an hour apart from the others'), their
        e-mail address keyed to a partition in ``email_in``, their phone number to one
        in ``phone_in``."""
        tag = new_tag()
        return cls(
            tag=tag,
            email=landing("email", lambda: f"ann.{new_tag()}@shop.de", email_in),
            phone=landing("phone", lambda: f"+49151{uuid.uuid4().int % 10**8:08d}", phone_in),
            loyalty_card=f"LC{tag}",
            device_id=f"dev-{tag}",
            start=T0 + timedelta(hours=number),
        )

    def at(self, minutes: float) -> datetime:
        return self.start + timedelta(minutes=minutes)

    def identifiers(self) -> list[tuple[str, str]]:
        return [
            ("email", self.email),
            ("phone", self.phone),
            ("loyalty_card", self.loyalty_card),
            ("device_id", self.device_id),
        ]

    def journey(self, raw: Envelope, step: str, emotion: int) -> Envelope:
        raw.update(
            journey={"id": f"{self.tag}-J1", "type": "visit_flow", "step": step}, emotion=emotion
        )
        return raw


def as_one(phases: Phases, people: Sequence[Person], kinds: Sequence[str]) -> list[Envelope]:
    """Every envelope of ``phases`` with its person named by all of ``kinds`` at once:
    the same person, known as one customer from the start."""
    by_value = {value: p for p in people for _, value in p.identifiers()}
    out = []
    for raw in (raw for phase in phases for raw in phase):
        person = by_value[next(iter(raw["customer"].values()))]
        known = dict(person.identifiers())
        out.append({**raw, "customer": {kind: known[kind] for kind in kinds}})
    return out


def embedded_phases(platform: Platform, phases: Phases) -> Oracle:
    """What embedded mode makes of ``phases`` recorded one after the other."""
    driver = embedded(platform)
    for phase in phases:
        driver.submit([parse_touchpoint(raw) for raw in phase]).result(timeout=60)
    assert driver.wait_until_projected(timeout=60)
    return Oracle(snapshot(platform), recorded_touchpoints(platform))


def publish(producer: TouchpointProducer, batch: Sequence[Envelope]) -> list[int]:
    """Publish with the producer client, every acknowledgement awaited (acks=all);
    returns the partition each envelope went to."""
    return [future.result(timeout=30).partition for future in producer.send(batch)]


def survivors(platform: Platform, identifiers: Sequence[tuple[str, str]]) -> list[str]:
    """The customer each of ``identifiers`` is linked to (in order; unknown ones left
    out), as the platform's identity index has it."""
    return [survivor for _, _, survivor in platform.records.identity.find(list(identifiers))]


def one_customer(platform: Platform, identifiers: Sequence[tuple[str, str]]) -> str:
    """The one customer every one of ``identifiers`` is linked to."""
    found = survivors(platform, identifiers)
    assert len(found) == len(identifiers) and len(set(found)) == 1, (identifiers, found)
    return found[0]


def assert_nothing_left_under_absorbed(platform: Platform, survivor: str) -> list[str]:
    """No document is held under a stream merged into ``survivor``; returns the
    streams absorbed."""
    store = platform.store
    absorbed = [s for s in platform.records.identity.members(survivor) if s != survivor]
    for stream in absorbed:
        assert platform.records.identity.locate(stream) is not None
        assert store.get("customer", stream) is None, stream
        assert maintained.measures_of(store, stream) is None, stream
        assert store.find("journey", "customer_id", stream) == [], stream
        assert store.find("survey_answer", "customer_id", stream) == [], stream
    assert store.get("customer", survivor) is not None
    return absorbed


def assert_only_survivors_hold_documents(platform: Platform) -> None:
    """Every customer document is a survivor's."""
    identity = platform.records.identity
    for key in platform.store.dump("customer"):
        located = identity.locate(key)
        assert located is not None and located.survivor == key, (key, located)


def problems(services: Sequence[Service]) -> list[str]:
    """Error lines and tracebacks in the services' logs."""
    return [
        f"{service.name}: {line}"
        for service in services
        for line in service.log().splitlines()
        if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")
    ]


# -- the tests ----------------------------------------------------------------------------


def test_one_person_under_an_email_and_a_phone_in_other_partitions_ends_as_one_customer(
    cluster: Cluster, make_platform: Callable[..., Platform]
) -> None:
    """E-mail-only and phone-only touchpoints, in different partitions, start two
    customers; one carrying both merges them; later ones under either identifier (a
    late one among them) land on the survivor. The documents equal the oracle's and
    those of a person known by both from the start."""
    worker = cluster.worker()
    people = [
        Person.new(n, email_in={n % PARTITIONS}, phone_in={(n + 1) % PARTITIONS}) for n in range(8)
    ]
    separate = [
        raw
        for p in people
        for raw in (
            p.journey(envelope({"email": p.email}, p.at(0)), "arrival", 1),
            p.journey(purchase({"email": p.email}, "120.00", p.at(5)), "payment", 2),
            p.journey(envelope({"phone": p.phone}, p.at(10), type="call"), "waiting", -2),
            complaint({"phone": p.phone}, "filed", p.at(15), complaint_id=f"K-{p.tag}"),
            survey_answer({"phone": p.phone}, "nps", 4, p.at(20)),
        )
    ]
    both = [
        p.journey(purchase({"email": p.email, "phone": p.phone}, "30.00", p.at(30)), "farewell", 3)
        for p in people
    ]
    after = [
        raw
        for p in people
        for raw in (
            envelope({"email": p.email}, p.at(-60)),  # late: before everything else
            complaint({"phone": p.phone}, "resolved", p.at(40), complaint_id=f"K-{p.tag}"),
            survey_answer({"email": p.email}, "csat", 5, p.at(50)),
        )
    ]
    phases = [separate, both, after]
    embedded = make_platform()
    oracle = embedded_phases(embedded, phases)
    reference = make_platform()
    embedded_phases(reference, [as_one(phases, people, ["email", "phone"])])

    producer = cluster.producer()
    try:
        partitions = publish(producer, separate)
        # Each person's e-mail and phone travel in partitions of their own; all are used.
        assert partitions == [partition_of(raw) for raw in separate]
        assert set(partitions) == set(range(PARTITIONS))
        for p in people:
            assert partition_of(envelope({"email": p.email})) != partition_of(
                envelope({"phone": p.phone})
            )

        def customers_each(n: int) -> Callable[[], bool]:
            def check() -> bool:
                return all(
                    len(
                        found := survivors(
                            cluster.platform, [("email", p.email), ("phone", p.phone)]
                        )
                    )
                    == 2
                    and len(set(found)) == n
                    for p in people
                )

            return check

        wait_for(customers_each(2), PHASE_S, "two customers per person", cluster.logs_tail)
        publish(producer, both)
        wait_for(customers_each(1), PHASE_S, "the merges", cluster.logs_tail)
        publish(producer, after)
    finally:
        producer.close(10)

    cluster.converge(oracle)
    assert recorded_touchpoints(cluster.platform) == oracle.touchpoints
    assert snapshot(reference) == oracle.snapshot, "merged, as if one from the start"
    for platform in (cluster.platform, embedded):
        for p in people:
            survivor = one_customer(platform, [("email", p.email), ("phone", p.phone)])
            assert len(assert_nothing_left_under_absorbed(platform, survivor)) == 1
            assert len(platform.records.identity.merge_history(survivor)) == 1
            document = platform.store.get("customer", survivor)
            assert document is not None
            assert document["touchpoints_total"] == 9
            assert document["first_seen"] == utc_iso(p.at(-60))
        assert_only_survivors_hold_documents(platform)
    assert problems([worker]) == []


def stream_shape(platform: Platform, survivor: str) -> set[tuple[str, str | None]]:
    """A group's merge tree, each stream named by the kinds of the identifiers linked to
    it: (stream, the stream it was merged into)."""
    identity = platform.records.identity
    kinds: dict[str, list[str]] = {}
    for linked in identity.identifiers_of(survivor):
        kinds.setdefault(linked["stream"], []).append(linked["kind"])
    named = {stream: "+".join(sorted(k)) for stream, k in kinds.items()}
    return {
        (named[stream], named[parent] if parent else None)
        for stream, parent in identity.parents(survivor).items()
    }


def test_a_chain_of_merges_and_a_late_touchpoint_end_at_one_survivor_in_both_modes(
    cluster: Cluster, make_platform: Callable[..., Platform]
) -> None:
    """Three customers (a loyalty card first seen earliest, then a phone, then an
    e-mail, each in its own partition); e-mail + phone merges the e-mail's into the
    phone's, phone + card the phone's into the card's; a late touchpoint under the
    e-mail lands on the card's customer. Both modes: one survivor, the same tree."""
    worker = cluster.worker()
    p = replace(
        Person.new(0, email_in={0}, phone_in={1}),
        loyalty_card=landing("loyalty_card", lambda: f"LC{new_tag()}", {2}),
    )
    a, b, c = {"email": p.email}, {"phone": p.phone}, {"loyalty_card": p.loyalty_card}
    phases: list[list[Envelope]] = [
        [
            p.journey(envelope(c, p.at(0)), "arrival", 0),
            p.journey(envelope(b, p.at(10), type="call"), "waiting", -3),
            p.journey(purchase(a, "80.00", p.at(20)), "payment", 1),
        ],
        [envelope({**a, **b}, p.at(30))],
        [p.journey(survey_answer({**b, **c}, "nps", 9, p.at(40)), "farewell", 2)],
        [envelope(a, p.at(-30), type="call")],  # late: before everything else
    ]
    everyone = [("email", p.email), ("phone", p.phone), ("loyalty_card", p.loyalty_card)]
    embedded = make_platform()
    oracle = embedded_phases(embedded, phases)
    reference = make_platform()
    embedded_phases(reference, [as_one(phases, [p], ["email", "phone", "loyalty_card"])])

    def customers(n: int, *of: tuple[str, str]) -> Callable[[], bool]:
        return lambda: (
            len(found := survivors(cluster.platform, of)) == len(of) and len(set(found)) == n
        )

    producer = cluster.producer()
    try:
        assert publish(producer, phases[0]) == [2, 1, 0]
        wait_for(customers(3, *everyone), PHASE_S, "three customers", cluster.logs_tail)
        publish(producer, phases[1])
        wait_for(customers(1, *everyone[:2]), PHASE_S, "e-mail + phone", cluster.logs_tail)
        publish(producer, phases[2])
        wait_for(customers(1, *everyone), PHASE_S, "phone + card", cluster.logs_tail)
        publish(producer, phases[3])
    finally:
        producer.close(10)

    cluster.converge(oracle)
    assert recorded_touchpoints(cluster.platform) == oracle.touchpoints
    assert snapshot(reference) == oracle.snapshot, "merged, as if one from the start"
    for platform in (cluster.platform, embedded):
        survivor = one_customer(platform, everyone)
        assert stream_shape(platform, survivor) == {
            ("loyalty_card", None),
            ("phone", "loyalty_card"),
            ("email", "phone"),
        }
        assert [m["identifiers"] for m in platform.records.identity.merge_history(survivor)] == [
            {**a, **b},
            {**b, **c},
        ]
        assert len(assert_nothing_left_under_absorbed(platform, survivor)) == 2
        document = platform.store.get("customer", survivor)
        assert document is not None
        assert document["touchpoints_total"] == 6
        assert document["first_seen"] == utc_iso(p.at(-30))
        (journey,) = platform.store.find("journey", "customer_id", survivor)
        assert [t["step"] for t in journey["touchpoints"]] == [
            "arrival",
            "waiting",
            "payment",
            "farewell",
        ]
        assert_only_survivors_hold_documents(platform)
    assert problems([worker]) == []


def test_an_event_id_resent_after_a_merge_stays_a_duplicate_in_any_partition(
    cluster: Cluster, make_platform: Callable[..., Platform]
) -> None:
    """Touchpoints recorded on two customers before they merge, re-sent after it (in
    their own partition, and forced into another), are duplicates: counted once, in the
    event store and in the documents; re-sent with other content, a conflict."""
    metrics_port = free_port()
    worker = cluster.worker("--metrics-port", str(metrics_port))
    p = Person.new(0, email_in={0}, phone_in={2})
    by_email = purchase({"email": p.email}, "55.00", p.at(0))
    by_phone = envelope({"phone": p.phone}, p.at(5), type="call")
    by_both = envelope({"email": p.email, "phone": p.phone}, p.at(10))
    phases = [[by_email, by_phone], [by_both]]
    resent = [dict(by_email), dict(by_phone), dict(by_both)]
    oracle = embedded_phases(make_platform(), [*phases, resent])
    distinct = len(phases[0]) + len(phases[1])

    producer = cluster.producer()
    raw = KafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all")
    try:
        assert publish(producer, phases[0]) == [0, 2]
        wait_for(
            lambda: (
                len(set(survivors(cluster.platform, [("email", p.email), ("phone", p.phone)]))) == 2
            ),
            PHASE_S,
            "two customers",
            cluster.logs_tail,
        )
        publish(producer, phases[1])
        wait_for(
            lambda: (
                len(set(survivors(cluster.platform, [("email", p.email), ("phone", p.phone)]))) == 1
            ),
            PHASE_S,
            "the merge",
            cluster.logs_tail,
        )
        publish(producer, resent)
        # The e-mail's touchpoint once more, in the phone's partition (another worker's,
        # in a bigger cluster), and with other content: a conflict.
        raw.send(
            cluster.topics.touchpoints, value=json.dumps(by_email).encode(), key=b"x", partition=2
        ).get(timeout=30)
        changed = {**by_email, "channel": "web"}
        raw.send(cluster.topics.touchpoints, value=json.dumps(changed).encode()).get(timeout=30)
    finally:
        raw.close(10)
        producer.close(10)

    sent = distinct + len(resent) + 2
    wait_for(
        lambda: sum(worker_outcomes(metrics_port).values()) >= sent,
        PHASE_S,
        "every touchpoint judged",
        cluster.logs_tail,
    )
    outcomes = worker_outcomes(metrics_port)
    assert outcomes["recorded"] == distinct
    assert outcomes["duplicate"] == len(resent) + 1
    assert outcomes["conflict"] == 1
    cluster.converge(oracle)
    stored = recorded_touchpoints(cluster.platform)
    assert stored == oracle.touchpoints
    assert sorted(stored.values()) == [1] * distinct
    survivor = one_customer(cluster.platform, [("email", p.email), ("phone", p.phone)])
    document = cluster.platform.store.get("customer", survivor)
    assert document is not None and document["touchpoints_total"] == distinct
    assert document["spend_by_currency"] == {"EUR": "55.00"}
    letters = read_all(cluster.bootstrap, cluster.topics.dead_letters, 1)
    assert [(m["reason"], m["errors"][0]["field"]) for m in letters] == [("conflict", "event_id")]
    assert "channel" in letters[0]["errors"][0]["message"]
    assert_nothing_left_under_absorbed(cluster.platform, survivor)
    assert problems([worker]) == []


def test_two_workers_recording_one_new_person_at_once_end_with_one_customer(
    cluster: Cluster, make_platform: Callable[..., Platform]
) -> None:
    """Two workers, each owning the partitions of one of a new person's identifiers,
    record at the same moment touchpoints that name two identifiers of the person (some
    people: e-mail + phone on one worker, phone + device on the other; others: e-mail
    only and phone only, then both). Each person ends as one customer: every identifier
    linked to one survivor, no document under a stream merged into it, and the
    documents those of embedded mode, and of a person known by all from the start."""
    workers = [cluster.worker(), cluster.worker()]
    cluster.wait_until_balanced(workers)
    owned = [w.assigned(cluster.topics.touchpoints) or set() for w in workers]
    people = [Person.new(n, email_in=owned[0], phone_in=owned[1]) for n in range(40)]
    batch: list[Envelope] = []
    for n, p in enumerate(people):
        email, phone, device = {"email": p.email}, {"phone": p.phone}, {"device_id": p.device_id}
        if n % 2 == 0:  # every touchpoint names two identifiers, shared with the other side
            batch += [
                p.journey(envelope({**email, **phone}, p.at(0)), "arrival", 1),
                p.journey(envelope({**phone, **device}, p.at(1), type="call"), "waiting", -1),
                purchase({**email, **phone}, "10.00", p.at(2)),
                survey_answer({**phone, **device}, "nps", 7, p.at(3)),
            ]
        else:  # one identifier each side, then both (in the e-mail's partition)
            batch += [
                p.journey(envelope(email, p.at(0)), "arrival", 1),
                p.journey(envelope(phone, p.at(1), type="call"), "waiting", -1),
                purchase({**email, **phone}, "10.00", p.at(2)),
                survey_answer(phone, "nps", 7, p.at(3)),
            ]
    kinds = {0: ["email", "phone", "device_id"], 1: ["email", "phone"]}
    embedded = make_platform()
    oracle = embedded_phases(embedded, [batch])
    reference = make_platform()
    embedded_phases(
        reference,
        [as_one([batch[4 * n : 4 * n + 4]], [p], kinds[n % 2]) for n, p in enumerate(people)],
    )

    producer = cluster.producer()
    try:
        partitions = publish(producer, batch)
    finally:
        producer.close(10)
    for n in range(len(people)):  # the two sides of a person: one worker each
        mine = partitions[4 * n : 4 * n + 4]
        assert {mine[0], mine[2]} <= owned[0] and {mine[1], mine[3]} <= owned[1], (mine, owned)

    cluster.converge(oracle)
    assert recorded_touchpoints(cluster.platform) == oracle.touchpoints
    assert snapshot(reference) == oracle.snapshot, "one customer from the start"
    merged = 0
    for platform in (cluster.platform, embedded):
        for n, p in enumerate(people):
            known = dict(p.identifiers())
            survivor = one_customer(platform, [(k, known[k]) for k in kinds[n % 2]])
            absorbed = assert_nothing_left_under_absorbed(platform, survivor)
            merged += len(absorbed) if platform is cluster.platform else 0
        assert_only_survivors_hold_documents(platform)
        assert len(platform.store.dump("customer")) == len(people)
    retried = sum(w.log().count("a concurrent write") for w in workers)
    print(
        f"recorded per worker {[w.recorded() for w in workers]}; {merged} streams merged; "
        f"{retried} retries after a concurrent write"
    )
    assert all(w.recorded() > 0 for w in workers)
    assert problems(workers) == [], [w.log() for w in workers]
