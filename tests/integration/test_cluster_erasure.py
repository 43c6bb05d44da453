"""The right to be forgotten in cluster mode, on real services: ``peakend api --mode
cluster`` over HTTP, Faust workers as subprocesses, a Kafka-protocol broker, PostgreSQL.

Touchpoints go in through the cluster's HTTP ingest (to Kafka, acks=all); a worker
records them, relays the event store onto ``<prefix>.customer-events`` and projects
them. ``DELETE /v1/customers/{id}`` records ``Customer.Erased`` in the event store from
the API process (its transaction destroys the keys and makes the identity index forget
the identifiers); the worker's relay publishes it, and its projector refolds the
customer's documents. Within seconds no table (the workers' read models, the event
store, the identity index), no answer and no message on the topics holds an erased
value in clear; the other customer and the anonymous aggregates are unchanged; the same
e-mail again is a new customer. A worker killed with SIGKILL right after the DELETE and
restarted ends in the same state, nothing counted twice.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition

from infra.bootstrap import Platform, bootstrap
from tests.builders import envelope
from tests.conftest import Served, free_port
from tests.e2e.test_erasure import absent, every_row, everything, history, person, personal_values
from tests.integration.test_cluster import (
    Cluster,
    open_cluster,
    recorded_touchpoints,
    wait_for,
    worker_outcomes,
)
from tests.integration.test_cluster_identity import problems

PROJECTED_S = 60.0  # the first touchpoints' wait includes the worker's start
ERASED_S = 10.0  # "within seconds": the erasure relayed and refolded (~0.5 s measured)
RESTART_S = 30.0  # a restarted worker's joining the group (~5 s measured) included

Offsets = dict[TopicPartition, int]


# -- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def cluster(broker: str, fresh_database: Callable[[], str], tmp_path: Path) -> Iterator[Cluster]:
    with open_cluster(broker, fresh_database(), tmp_path) as made:
        yield made


@pytest.fixture
def api(cluster: Cluster, serve: Callable[[Platform], Served]) -> Iterator[Served]:
    """The cluster's API (ingest produces to its topics), over real HTTP."""
    with contextlib.closing(bootstrap(cluster.platform.settings, mode="cluster")) as platform:
        yield serve(platform)


def post(client: httpx.Client, batch: Sequence[dict[str, Any]]) -> None:
    answer = client.post("/v1/touchpoints", json=list(batch))
    assert answer.status_code == 202, answer.text
    assert {r["outcome"] for r in answer.json()["recorded"]} == {"accepted"}


def survivors_of(cluster: Cluster, who: dict[str, str]) -> list[str]:
    """The customers the identity index links the person's e-mail and phone to."""
    found = cluster.platform.records.identity.find(
        [("email", who["email"]), ("phone", who["phone"])]
    )
    return [survivor for _, _, survivor in found]


def ingest(
    cluster: Cluster, client: httpx.Client, people: dict[str, dict[str, str]]
) -> dict[str, list[dict[str, Any]]]:
    """Each person's ``history``: e-mail and phone touchpoints apart first (two customers
    each, their messages keyed to different partitions), then the survey answer naming
    both (the merge), in that order whatever the partitions; until projected. Returns
    the envelopes sent, by person."""
    histories = {tag: history(who, tag) for tag, who in people.items()}
    post(client, [raw for h in histories.values() for raw in h[:3]])
    wait_for(
        lambda: all(len(set(survivors_of(cluster, who))) == 2 for who in people.values()),
        PROJECTED_S,
        "two customers per person",
        cluster.logs_tail,
    )
    post(client, [h[3] for h in histories.values()])

    def projected() -> bool:
        for who in people.values():
            found = survivors_of(cluster, who)
            if len(found) != 2 or len(set(found)) != 1:
                return False
            document = cluster.platform.store.get("customer", found[0])
            if document is None or document["touchpoints_total"] != 4:
                return False
        return True

    wait_for(projected, PROJECTED_S, "the merges, projected", cluster.logs_tail)
    return histories


def end_offsets(bootstrap_servers: str, topics: Sequence[str]) -> Offsets:
    """The next offset of every partition of ``topics``: where a message produced from
    now on will be."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None)
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        ends: Offsets = consumer.end_offsets(partitions)
        return ends
    finally:
        consumer.close()


def messages_between(bootstrap_servers: str, start: Offsets, end: Offsets) -> list[Any]:
    """Every message in [start, end) of each partition, read without a consumer group
    (kafka-python's group consumer is slow to join on Tansu)."""
    wanted = {tp: offset for tp, offset in end.items() if offset > start.get(tp, 0)}
    if not wanted:
        return []
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False
    )
    try:
        consumer.assign(list(wanted))
        for tp in wanted:
            consumer.seek(tp, start.get(tp, 0))
        read: list[Any] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < offset for tp, offset in wanted.items()):
            assert time.monotonic() < deadline, "the topics could not be read to their end"
            for tp, batch in consumer.poll(timeout_ms=500).items():
                read.extend(r for r in batch if r.offset < wanted[tp])
        return read
    finally:
        consumer.close()


def in_clear(message: Any) -> str:
    """A message's key and value bytes as text, and for a customer-events message the
    stored state it carries (base64 on the topic) decoded too: a value there in clear
    would not show in the base64 text."""
    parts = [message.key or b"", message.value or b""]
    if message.topic.endswith(".customer-events"):
        parts.append(base64.b64decode(json.loads(message.value)["state_base64"], validate=True))
    return "\n".join(part.decode("utf-8", errors="replace") for part in parts)


def documents(cluster: Cluster) -> dict[str, dict[str, Any]]:
    store = cluster.platform.store
    return {p.name: store.dump(p.name) for p in store.projections}


def changed_documents(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> list[tuple[str, str, Any]]:
    """(projection, key, document after) of every document added, removed or changed."""
    return [
        (name, key, after.get(name, {}).get(key))
        for name in sorted(set(before) | set(after))
        for key in sorted(set(before.get(name, {})) | set(after.get(name, {})))
        if before.get(name, {}).get(key) != after.get(name, {}).get(key)
    ]


def aggregates(client: httpx.Client) -> dict[str, Any]:
    """The anonymous aggregates the erasure must leave as they were."""
    pyramid = client.get("/v1/analytics/pyramid")
    satisfaction = client.get("/v1/analytics/satisfaction")
    assert pyramid.status_code == satisfaction.status_code == 200, pyramid.text
    return {"tiers": pyramid.json()["tiers"], "satisfaction": satisfaction.json()["overall"]}


class Erasing:
    """Two people, projected through the cluster, one of them erased over HTTP."""

    def __init__(self, cluster: Cluster, client: httpx.Client) -> None:
        self.cluster, self.client = cluster, client
        self.tag, self.other_tag = f"erase{uuid.uuid4().hex[:6]}", f"keep{uuid.uuid4().hex[:6]}"
        self.who, self.other = person(self.tag), person(self.other_tag)
        self.values = personal_values(self.who, self.tag)
        self.history = ingest(cluster, client, {self.tag: self.who, self.other_tag: self.other})[
            self.tag
        ]
        (self.customer,) = set(survivors_of(cluster, self.who))
        (self.kept,) = set(survivors_of(cluster, self.other))
        self.streams = cluster.platform.records.identity.members(self.customer)
        assert len(self.streams) == 2  # merged: the e-mail's and the phone's
        self.kept_before = self.read(self.kept)
        self.aggregates = aggregates(client)
        self.documents = documents(cluster)
        # The scan sees them before: the read models hold the identifiers in clear.
        tables = every_row(cluster.database_url)
        assert [v for v in self.who.values() if v.lower() not in tables] == []
        exported = client.get(f"/v1/customers/{self.customer}/export")
        assert exported.status_code == 200 and self.who["email"] in exported.text
        assert f"{self.tag} Street 5" in exported.text  # decrypted, before
        topics = cluster.topics
        self.topics = [topics.touchpoints, topics.customer_events, topics.dead_letters]
        self.start = end_offsets(cluster.bootstrap, self.topics)
        # The topics' scan sees them before: the touchpoints as sent hold them in clear.
        sent = messages_between(cluster.bootstrap, {}, self.start)
        assert self.who["email"] in "\n".join(map(in_clear, sent))

    def read(self, customer: str) -> dict[str, Any]:
        answer = self.client.get(f"/v1/customers/{customer}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        # The moment of the read, not of the data.
        for stamp in ("computed_at", "measures_as_of"):
            body.pop(stamp, None)
        body.get("loyalty", {}).pop("as_of", None)
        return body

    def erase(self) -> None:
        erased = self.client.delete(f"/v1/customers/{self.customer}")
        assert erased.status_code == 202, erased.text
        assert sorted(erased.json()["streams"]) == sorted(self.streams)
        assert erased.json()["already_erased"] is False

    def forgotten(self) -> bool:
        """No table holds an erased value, and the customer reads without them."""
        if any(v.lower() in every_row(self.cluster.database_url) for v in self.values):
            return False
        document = self.cluster.platform.store.get("customer", self.customer)
        return document is not None and self.who["email"] not in json.dumps(document)

    def assert_forgotten(self) -> None:
        """Every table, every answer, the topics since the DELETE, the workers' logs."""
        absent(self.values, every_row(self.cluster.database_url), "a table")
        absent(self.values, everything(self.client, self.customer), "an answer")
        export = self.client.get(f"/v1/customers/{self.customer}/export").json()
        assert len(export["touchpoints"]) == 4  # the touchpoints stay, without personal data
        assert sorted(export["streams"]) == sorted(self.streams)
        timeline = self.client.get(f"/v1/customers/{self.customer}/timeline").json()
        assert timeline["total"] == 4
        erased = self.read(self.customer)
        assert erased["touchpoints_total"] == 4  # counted once, kill or no kill
        assert erased["identifiers"] == []
        assert (
            self.client.get("/v1/customers", params={"email": self.who["email"]}).json()[
                "customers"
            ]
            == []
        )
        assert self.client.get(f"/v1/customers/{self.who['id']}").status_code == 404

        produced = messages_between(
            self.cluster.bootstrap, self.start, end_offsets(self.cluster.bootstrap, self.topics)
        )
        relayed = [m for m in produced if m.topic == self.cluster.topics.customer_events]
        topics = [json.loads(m.value)["topic"] for m in relayed]
        assert any(t.endswith("Customer.Erased") for t in topics), topics
        absent(self.values, "\n".join(map(in_clear, produced)), "a message since the DELETE")
        # The customer's events relayed before, too: sealed, never in clear.
        everything_relayed = messages_between(
            self.cluster.bootstrap,
            {},
            end_offsets(self.cluster.bootstrap, [self.cluster.topics.customer_events]),
        )
        absent(self.values, "\n".join(map(in_clear, everything_relayed)), "customer-events")
        workers = [s for s in self.cluster.services if s.name.startswith("worker")]
        absent(self.values, "\n".join(w.log() for w in workers), "a worker's log")

        # The other customer, every document not the erased customer's, the aggregates.
        assert self.read(self.kept) == self.kept_before
        assert self.other["email"] in json.dumps(self.kept_before)
        changed = changed_documents(self.documents, documents(self.cluster))
        assert changed, "the erased customer's documents were refolded"
        for name, key, document in changed:
            assert any(s in key or s in json.dumps(document) for s in self.streams), (name, key)
        assert aggregates(self.client) == self.aggregates
        assert max(recorded_touchpoints(self.cluster.platform).values()) == 1

    def same_email_again(self) -> str:
        """A touchpoint under the erased e-mail, after the erasure: a new customer."""
        post(self.client, [envelope({"email": self.who["email"]}, "2026-02-01T10:00:00Z")])

        def found() -> list[str]:
            answer = self.client.get("/v1/customers", params={"email": self.who["email"]})
            return [c["customer_id"] for c in answer.json()["customers"]]

        wait_for(found, PROJECTED_S, "the new customer", self.cluster.logs_tail)
        (new,) = found()
        assert new != self.customer and new not in self.streams
        wait_for(
            lambda: (
                (self.cluster.platform.store.get("customer", new) or {}).get("touchpoints_total")
                == 1
            ),
            PROJECTED_S,
            "the new customer's document",
            self.cluster.logs_tail,
        )
        assert self.who["email"] in json.dumps(self.read(new))
        assert self.read(self.customer)["touchpoints_total"] == 4  # nothing joined the erased
        return new


# -- the tests ----------------------------------------------------------------------------


def test_an_erasure_in_cluster_mode_leaves_no_personal_value_in_tables_topics_or_answers(
    cluster: Cluster, api: Served
) -> None:
    worker = cluster.worker()
    with api.client(timeout=30) as client:
        case = Erasing(cluster, client)
        erased_at = time.monotonic()
        case.erase()
        wait_for(case.forgotten, ERASED_S, "the erasure, projected", cluster.logs_tail)
        print(f"erasure projected by the worker in {time.monotonic() - erased_at:.2f} s")
        case.assert_forgotten()
        # Only now is the e-mail on the touchpoints topic again: sent anew, by the source.
        case.same_email_again()
        again = client.delete(f"/v1/customers/{case.customer}")
        assert again.status_code == 202 and again.json()["already_erased"] is True
    assert problems([worker]) == []


def test_a_worker_killed_right_after_the_erasure_and_restarted_ends_the_same(
    cluster: Cluster, api: Served
) -> None:
    first = cluster.worker()
    metrics_port = free_port()
    with api.client(timeout=30) as client:
        case = Erasing(cluster, client)
        case.erase()
        first.kill()  # kill -9: no offset commit, no goodbye to the group
        before_kill = "erasure cus_" in first.log()
        restarted = cluster.worker("--metrics-port", str(metrics_port))
        cluster.wait_until_balanced([restarted], timeout=RESTART_S)
        wait_for(case.forgotten, RESTART_S, "the erasure, after the restart", cluster.logs_tail)
        # The erasure's own message, projected (by the one killed or the one restarted).
        wait_for(
            lambda: "erasure cus_" in first.log() + restarted.log(),
            RESTART_S,
            "the erasure's refold",
            cluster.logs_tail,
        )
        print(
            "erasure projected "
            + ("before the kill" if before_kill else "after the restart")
            + f"; the restarted worker projected {restarted.log().count(' projected ')} batches"
        )
        case.assert_forgotten()
        redelivered = restarted.recorded()

        # What a redelivery is, made certain: the erased customer's touchpoints once more,
        # as sent (their e-mail, phone and note in clear). Duplicates by event id: no new
        # customer, nothing personal back in any table.
        judged = sum(worker_outcomes(metrics_port).values())
        post(client, case.history)
        wait_for(
            lambda: sum(worker_outcomes(metrics_port).values()) >= judged + len(case.history),
            PROJECTED_S,
            "the re-sent touchpoints judged",
            cluster.logs_tail,
        )
        assert worker_outcomes(metrics_port).get("recorded", 0) == 0
        time.sleep(1.0)  # anything they set off, relayed and projected
        absent(case.values, every_row(cluster.database_url), "a table, after the re-send")
        assert (
            client.get("/v1/customers", params={"email": case.who["email"]}).json()["customers"]
            == []
        )
        assert case.read(case.customer)["touchpoints_total"] == 4
        print(
            f"the restarted worker had {redelivered} touchpoints redelivered (recorded before "
            f"the kill, their offsets not committed); outcomes {worker_outcomes(metrics_port)}"
        )

        case.same_email_again()
        assert case.read(case.kept)["touchpoints_total"] == 4
    assert restarted.alive()
    assert problems([restarted]) == []
