"""Identity resolution on real PostgreSQL (DOMAIN.md §1, *Identify*): a merged customer's
documents equal those of a customer known as one from the start, a split gives each side
back exactly its own, chains of merges end at one survivor, idempotency holds across a
merge, replay and the identity index are rebuilt from the event store alone, the guard
rails hold (blocked values, source ids, limits, kept apart), and two recorders deciding
at the same moment end with one customer per person."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import psycopg2
import psycopg2.extras
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from domain.customer import Customer, customer_aggregate_id
from domain.idempotency import Outcome, Recorded
from domain.identity import KEPT_APART, LIMIT, SOURCE_IDS_DIFFER
from domain.touchpoints import parse_touchpoint
from infra.bootstrap import Platform, bootstrap
from infra.settings import Settings
from projections.base import State
from streams.identity import TABLES
from streams.projector import replay
from streams.recorder import CustomerRecords
from tests.builders import T0, Envelope, complaint, envelope, purchase, survey_answer
from tests.conftest import customer_of, embedded

Documents = dict[str, dict[str, State]]  # projection -> key -> document

PROPERTY = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- helpers ------------------------------------------------------------------------------


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def submit(platform: Platform, raws: Sequence[Envelope]) -> list[Recorded]:
    """Record these envelopes as one request and wait for the projections."""
    outcome = platform.driver.submit([parse_touchpoint(raw) for raw in raws]).result(timeout=60)
    assert embedded(platform).wait_until_projected(timeout=60)
    return outcome


def owner(platform: Platform, raw: Envelope) -> str:
    """Record one touchpoint (as its own request); the customer that answers for it."""
    (outcome,) = submit(platform, [raw])
    assert outcome.outcome is Outcome.RECORDED and outcome.customer_id, outcome
    return outcome.customer_id


def documents(platform: Platform) -> Documents:
    return {p.name: platform.store.dump(p.name) for p in platform.store.projections}


def holder(platform: Platform, kind: str, value: str) -> str:
    """The customer (a survivor) the identity index links this identifier to."""
    found = platform.records.identity.find([(kind, value)])
    assert len(found) == 1, f"{kind} {value!r}: {found}"
    return found[0][2]


def documents_of(platform: Platform, customers: Sequence[str], tag: str) -> Documents:
    """The documents of these customers and of every stream they answer for, and those
    whose key names ``tag`` (an example's journeys and survey answers)."""
    streams = {s for c in customers for s in platform.records.identity.members(c)}
    return {
        name: {
            key: doc
            for key, doc in docs.items()
            if key in streams or tag in key or doc.get("customer_id") in streams
        }
        for name, docs in documents(platform).items()
    }


def anonymised(docs: Documents, names: Mapping[str, str]) -> Any:
    """``docs`` with each customer id replaced by its placeholder, in keys and values."""
    text = json.dumps(docs, sort_keys=True)
    for customer_id, placeholder in names.items():
        text = text.replace(customer_id, placeholder)
    return json.loads(text)


def new_phone() -> str:
    """A fresh German mobile number, in E.164 (as the index holds it)."""
    return f"+49151{uuid.uuid4().int % 10**8:08d}"


def new_tag() -> str:
    return uuid.uuid4().hex[:10]


ORDER_BY = {
    "identity_customer": "customer_id",
    "identity_identifier": "kind, digest",
    "identity_merge": "absorbed, event_id",
    "identity_apart": "a, b",
    "identity_conflict": "seq",
}


def index_snapshot(platform: Platform) -> dict[str, list[dict[str, Any]]]:
    """Every row of the identity index's five tables, in a fixed order."""
    assert set(ORDER_BY) == set(TABLES)
    snapshot: dict[str, list[dict[str, Any]]] = {}
    with (
        contextlib.closing(psycopg2.connect(platform.database_url)) as conn,
        conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur,
    ):
        for table in TABLES:
            cur.execute(f"SELECT * FROM {table} ORDER BY {ORDER_BY[table]}")
            snapshot[table] = [dict(row) for row in cur.fetchall()]
    return snapshot


def link_events(platform: Platform, customer: str) -> list[tuple[str, str]]:
    """Every identifier linked by an event on the streams ``customer`` answers for."""
    return [
        (kind, value)
        for stream in platform.records.identity.members(customer)
        for event in platform.records.events.get(customer_aggregate_id(stream))
        if isinstance(event, Customer.IdentifiersLinked)
        for kind, value in event.identifiers.items()
    ]


# -- random touchpoints of one person ---------------------------------------------------


@dataclass(frozen=True)
class Draft:
    """A touchpoint of the example's person, before its identifiers and ids are chosen."""

    number: int  # its event id, within the example
    kind: str
    minute: int
    channel: str
    side: str  # "x": sent under the e-mail address, "y": under the phone number
    journey: tuple[int, str] | None = None  # (which journey, step)
    emotion: int | None = None
    order: int = 0  # a purchase's order: two purchases of one order re-send it
    cents: int = 0
    metric: str = "nps"
    value: int = 0
    complaint: int = 0


KINDS = (
    "visit",
    "purchase",
    "survey",
    "complaint_filed",
    "complaint_acknowledged",
    "complaint_resolved",
)


@st.composite
def drafts(draw: st.DrawFn, *, min_size: int = 1, max_size: int = 12) -> list[Draft]:
    count = draw(st.integers(min_size, max_size))
    out = []
    for number in range(count):
        kind = draw(st.sampled_from(KINDS))
        draft = Draft(
            number=number,
            kind=kind,
            minute=draw(st.integers(0, 600)),
            channel=draw(st.sampled_from(["web", "store", "call_center"])),
            side=draw(st.sampled_from("xy")),
        )
        if draw(st.booleans()):
            step = draw(st.sampled_from(["arrival", "waiting", "farewell"]))
            journey = (draw(st.integers(0, 1)), step)
            draft = replace(draft, journey=journey, emotion=draw(st.integers(-3, 3)))
        if kind == "purchase":
            draft = replace(
                draft, order=draw(st.integers(0, 3)), cents=draw(st.integers(0, 99_999))
            )
        elif kind == "survey":
            metric = draw(st.sampled_from(["nps", "csat"]))
            value = draw(st.integers(1, 10 if metric == "nps" else 5))
            draft = replace(draft, metric=metric, value=value)
        elif kind.startswith("complaint"):
            draft = replace(draft, complaint=draw(st.integers(0, 1)))
        out.append(draft)
    return out


def materialised(draft: Draft, tag: str, identifiers: dict[str, str]) -> Envelope:
    """The envelope of ``draft`` in example ``tag``, naming its customer by ``identifiers``."""
    when = at(draft.minute)
    if draft.kind == "purchase":
        amount = f"{draft.cents // 100}.{draft.cents % 100:02d}"
        raw = purchase(identifiers, amount, when, order_id=f"{tag}-O{draft.order}")
    elif draft.kind == "survey":
        raw = survey_answer(identifiers, draft.metric, draft.value, when, question_id=draft.metric)
    elif draft.kind.startswith("complaint"):
        step = draft.kind.removeprefix("complaint_")
        raw = complaint(identifiers, step, when, complaint_id=f"K{draft.complaint}")
    else:
        raw = envelope(identifiers, when, type=draft.kind)
    raw.update(event_id=f"{tag}-e{draft.number}", channel=draft.channel)
    if draft.journey is not None:
        number, step = draft.journey
        raw["journey"] = {"id": f"{tag}-J{number}", "type": "visit_flow", "step": step}
        raw["emotion"] = draft.emotion
    return raw


@dataclass(frozen=True)
class Person:
    tag: str
    email: str
    phone: str

    @classmethod
    def new(cls) -> Person:
        tag = new_tag()
        return cls(tag, f"ann.{tag}@shop.de", new_phone())

    def x(self) -> dict[str, str]:
        return {"email": self.email}

    def y(self) -> dict[str, str]:
        return {"phone": self.phone}

    def both(self) -> dict[str, str]:
        return {"email": self.email, "phone": self.phone}

    def under(self, side: str) -> dict[str, str]:
        return {"x": self.x, "y": self.y, "both": self.both}[side]()


def send(platform: Platform, arrivals: Sequence[Envelope], cuts: Sequence[int]) -> None:
    """Send ``arrivals`` in order, as requests cut where ``cuts`` says (after arrival i:
    0 the same request, 1 a new request sent at once, so that the embedded recorder may
    take several in one transaction, 2 a new request once the previous ones are
    projected), and wait for the projections."""
    pending: list[Future[list[Recorded]]] = []
    request: list[Envelope] = []
    for i, raw in enumerate(arrivals):
        request.append(raw)
        cut = 2 if i == len(arrivals) - 1 else cuts[i] if i < len(cuts) else 0
        if cut == 0:
            continue
        pending.append(platform.driver.submit([parse_touchpoint(r) for r in request]))
        request = []
        if cut == 2:
            for future in pending:
                assert all(o.outcome is not Outcome.CONFLICT for o in future.result(timeout=60))
            pending = []
            assert embedded(platform).wait_until_projected(timeout=60)
    assert not pending and not request


@pytest.fixture
def pair(make_platform: Callable[..., Platform]) -> tuple[Platform, Platform]:
    """Two platforms, shared by the examples of one property test (each example uses
    identifiers and ids of its own)."""
    return make_platform(project_poll_ms=20), make_platform(project_poll_ms=20)


# -- 1. merged equals always-one ------------------------------------------------------


@settings(PROPERTY, max_examples=60)
@given(data=st.data(), touchpoints=drafts())
def test_a_merged_customer_has_the_documents_of_one_known_as_one_from_the_start(
    pair: tuple[Platform, Platform], data: st.DataObject, touchpoints: list[Draft]
) -> None:
    """P receives each touchpoint under the person's e-mail address or phone number, and
    one that carries both (the proof they are one person) anywhere in the arrival order;
    Q receives the very same touchpoints (same ids, same content), the one carrying both
    first, so that Q knows the person as one customer from the start and never merges.
    Every document of P's survivor equals Q's customer's (journeys and answers too), and
    no document is left under the customer merged away."""
    person = Person.new()
    (proof,) = data.draw(drafts(min_size=1, max_size=1))
    both = replace(proof, number=len(touchpoints), side="both")
    every = [*touchpoints, both]
    raws = [materialised(d, person.tag, person.under(d.side)) for d in every]
    resent = data.draw(st.lists(st.sampled_from(raws), max_size=3))  # redeliveries
    arrivals = data.draw(st.permutations([*raws, *resent]))
    cuts = data.draw(st.lists(st.integers(0, 2), min_size=len(arrivals), max_size=len(arrivals)))
    p, q = pair
    send(p, arrivals, cuts)
    send(q, [raws[-1], *raws[:-1], *resent], [])

    survivor = holder(p, "email", person.email)
    assert holder(p, "phone", person.phone) == survivor
    one = holder(q, "email", person.email)
    event("merged" if len(p.records.identity.members(survivor)) > 1 else "one from the start")
    merged = anonymised(documents_of(p, [survivor], person.tag), {survivor: "CUSTOMER"})
    always_one = anonymised(documents_of(q, [one], person.tag), {one: "CUSTOMER"})
    assert merged == always_one
    assert merged["customer"].keys() == {"CUSTOMER"}


# -- 2. a split is as if the merge never happened ------------------------------------


@PROPERTY
@given(data=st.data(), touchpoints=drafts(min_size=2, max_size=10))
def test_a_split_gives_each_customer_the_documents_it_had_without_the_merge(
    pair: tuple[Platform, Platform], data: st.DataObject, touchpoints: list[Draft]
) -> None:
    """P merges the person's e-mail customer and phone customer (a touchpoint carrying
    both arrives after each has one) and then splits them; Q receives the same touchpoints
    with the merging one under the survivor's identifier only, so never merges. Each of
    P's two customers then has exactly the documents of Q's customer of the same
    identifier; and replay gives P's live documents back."""
    p, q = pair
    person = Person.new()
    first_x, first_y, *rest = touchpoints
    touchpoints = [replace(first_x, side="x"), replace(first_y, side="y"), *rest]
    order = data.draw(st.permutations(touchpoints))
    seen_both = max(
        next(i for i, d in enumerate(order) if d.side == "x"),
        next(i for i, d in enumerate(order) if d.side == "y"),
    )
    where = data.draw(st.integers(seen_both + 1, len(order)))
    (proof,) = data.draw(drafts(min_size=1, max_size=1))
    merging = replace(proof, number=len(touchpoints), side="both")
    arrivals = [materialised(d, person.tag, person.under(d.side)) for d in order]
    arrivals.insert(where, materialised(merging, person.tag, person.both()))
    cuts = data.draw(st.lists(st.integers(0, 2), min_size=len(arrivals), max_size=len(arrivals)))
    send(p, arrivals, cuts)

    survivor = holder(p, "email", person.email)
    assert holder(p, "phone", person.phone) == survivor
    streams = p.records.identity.members(survivor)
    assert len(streams) == 2, "the e-mail and the phone customers merged"
    absorbed = streams[1]
    p.records.split(survivor, absorbed, reason="two people after all")
    assert embedded(p).wait_until_projected(timeout=60)

    x, y = holder(p, "email", person.email), holder(p, "phone", person.phone)
    assert {x, y} == {survivor, absorbed}
    kept = "x" if x == survivor else "y"
    oracle = [
        materialised(d, person.tag, person.under(d.side))
        for d in [*touchpoints, replace(merging, side=kept)]
    ]
    send(q, oracle, [])
    qx, qy = holder(q, "email", person.email), holder(q, "phone", person.phone)
    assert qx != qy
    split = anonymised(documents_of(p, [x, y], person.tag), {x: "X", y: "Y"})
    never_merged = anonymised(documents_of(q, [qx, qy], person.tag), {qx: "X", qy: "Y"})
    # The merging touchpoint named both (its content is a fact): the survivor's document
    # lists every identifier its touchpoints carried, the other side's among them.
    survivor_doc = never_merged["customer"]["X" if kept == "x" else "Y"]
    other = ("phone", person.phone) if kept == "x" else ("email", person.email)
    survivor_doc["identifiers"] = {
        **survivor_doc["identifiers"],
        other[0]: sorted({*survivor_doc["identifiers"].get(other[0], []), other[1]}),
    }
    assert split == never_merged

    live = documents(p)
    replay(p.records, p.store, batch_size=data.draw(st.integers(1, 50)))
    assert documents(p) == live


# -- 3. chains --------------------------------------------------------------------------


def test_a_chain_of_merges_ends_at_one_survivor_that_answers_for_every_identifier(
    platform: Platform,
) -> None:
    """A (e-mail), B (phone) and C (loyalty card), first seen in the order C, B, A. A+B:
    B absorbs A; then B+C: C absorbs B, and A through it. A late touchpoint for A's
    address, earlier than any other, lands on A's stream and counts for C."""
    tag = new_tag()
    a, b, c = {"email": f"a.{tag}@shop.de"}, {"phone": new_phone()}, {"loyalty_card": f"L-{tag}"}
    stream_a = owner(platform, envelope(a, at(10)))
    stream_b = owner(platform, envelope(b, at(5)))
    stream_c = owner(platform, envelope(c, at(0)))
    assert len({stream_a, stream_b, stream_c}) == 3

    submit(platform, [envelope(a | b, at(30))])
    assert holder(platform, "email", a["email"]) == stream_b
    submit(platform, [envelope(b | c, at(40))])
    late = submit(platform, [envelope(a, at(-60))])

    survivor = stream_c
    assert late[0].customer_id == survivor
    found = platform.records.identity.find([*a.items(), *b.items(), *c.items()])
    assert {customer for _, _, customer in found} == {survivor} and len(found) == 3
    assert platform.records.identity.parents(survivor) == {
        stream_a: stream_b,
        stream_b: stream_c,
        stream_c: None,
    }
    assert [
        (m["survivor"], m["absorbed"]) for m in platform.records.identity.merge_history(survivor)
    ] == [(stream_b, stream_a), (stream_c, stream_b)]
    for absorbed in (stream_a, stream_b):
        located = platform.records.identity.locate(absorbed)
        assert located is not None and located.absorbed and located.survivor == survivor
        assert all(absorbed not in docs for docs in documents(platform).values())
    located = platform.records.identity.locate(survivor)
    assert located is not None and not located.absorbed
    customer = platform.store.get("customer", survivor)
    assert customer is not None
    assert customer["touchpoints_total"] == 6
    assert customer["first_seen"] == "2024-05-01T07:00:00.000000+00:00"
    timeline = platform.records.touchpoints_of(survivor)
    assert len(timeline) == 6
    assert timeline[0].occurred_at == at(-60) and timeline[0].customer_id == stream_a


# -- 4. idempotency across a merge -------------------------------------------------------


@pytest.mark.parametrize("side", ["survivor", "absorbed"])
def test_an_event_recorded_before_a_merge_is_a_duplicate_after_it_and_a_conflict_if_changed(
    platform: Platform, side: str
) -> None:
    """The e-mail customer's first touchpoint, re-sent after its customer merged with the
    phone customer (as the survivor, or as the customer absorbed), is a duplicate of the
    survivor's, counted once; re-sent with another content, a conflict."""
    person = Person.new()
    first = envelope(person.x(), at(0 if side == "survivor" else 60))
    x_stream = owner(platform, first)
    submit(platform, [envelope(person.y(), at(30))])
    proof = envelope(person.both(), at(90))
    submit(platform, [proof])
    survivor = holder(platform, "email", person.email)
    assert len(platform.records.identity.members(survivor)) == 2
    assert (x_stream == survivor) is (side == "survivor")

    again = submit(platform, [first, proof])
    assert [(o.outcome, o.customer_id) for o in again] == [(Outcome.DUPLICATE, survivor)] * 2
    changed = submit(platform, [{**first, "channel": "web"}])
    assert [(o.outcome, o.differing) for o in changed] == [(Outcome.CONFLICT, ("channel",))]
    customer = platform.store.get("customer", survivor)
    assert customer is not None
    assert customer["touchpoints_total"] == 3
    assert customer["counts_by_channel"] == {"store": 3}
    assert len(platform.records.touchpoints_of(survivor)) == 3
    assert len(platform.records.identity.merge_history(survivor)) == 1


# -- a scenario with every identity decision -------------------------------------------


def every_decision(platform: Platform) -> None:
    """Merges (one with journeys and answers on both sides, a chain of two), a split
    followed by touchpoints on each side and one naming both (kept apart), two source ids
    sharing an address, a fifth phone number, blocked values, a redelivery."""
    one = Person.new()
    journey = {"id": f"{one.tag}-J", "type": "visit_flow"}
    submit(
        platform,
        [
            envelope(one.x(), at(0), journey={**journey, "step": "arrival"}, emotion=2),
            survey_answer(one.y(), "nps", 3, at(5)),
            purchase(one.y(), "12.50", at(6), order_id=f"{one.tag}-O1"),
        ],
    )
    submit(
        platform, [envelope(one.y(), at(10), journey={**journey, "step": "waiting"}, emotion=-3)]
    )
    submit(platform, [purchase(one.x(), "12.50", at(7), order_id=f"{one.tag}-O1")])  # re-sent
    submit(platform, [complaint(one.both(), "filed", at(20))])
    submit(
        platform, [envelope(one.x(), at(30), journey={**journey, "step": "farewell"}, emotion=1)]
    )

    tag = new_tag()
    a, b, c = {"email": f"a.{tag}@shop.de"}, {"phone": new_phone()}, {"loyalty_card": f"L-{tag}"}
    submit(platform, [envelope(a, at(10)), envelope(b, at(5)), envelope(c, at(0))])
    submit(platform, [envelope(a | b, at(30)), envelope(b | c, at(40))])

    two = Person.new()
    submit(platform, [survey_answer(two.x(), "csat", 5, at(0))])
    submit(platform, [survey_answer(two.y(), "csat", 1, at(1))])
    submit(
        platform,
        [envelope(two.both(), at(2), journey={"id": f"{two.tag}-J", "type": "t", "step": "in"})],
    )
    survivor = holder(platform, "email", two.email)
    platform.records.split(survivor, platform.records.identity.members(survivor)[1], reason="no")
    assert embedded(platform).wait_until_projected()
    submit(platform, [envelope(two.x(), at(3)), envelope(two.y(), at(4))])
    submit(platform, [envelope(two.both(), at(5))])  # kept apart

    shared = f"shared.{new_tag()}@shop.de"
    submit(platform, [envelope({"id": new_tag(), "email": shared}, at(0))])
    source = new_tag()
    submit(platform, [envelope({"id": source}, at(1))])
    submit(platform, [envelope({"id": source, "email": shared}, at(2))])  # source ids differ

    card = f"C-{new_tag()}"
    submit(
        platform, [envelope({"loyalty_card": card, "phone": new_phone()}, at(m)) for m in range(5)]
    )
    guest = envelope({"email": "test@example.com", "device_id": "guest"}, at(0))
    submit(platform, [guest, guest, envelope({"device_id": "unknown"}, at(1))])


def _read_side_survivors(platform: Platform) -> list[tuple[Any, ...]]:
    with (
        contextlib.closing(psycopg2.connect(platform.database_url)) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT customer_id, parent, survivor FROM rm_survivor ORDER BY customer_id")
        return list(cur.fetchall())


# -- 5. replay -----------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 4, 1000])
def test_replay_after_merges_and_a_split_gives_the_live_documents_back(
    platform: Platform, batch_size: int
) -> None:
    every_decision(platform)
    live, survivors = documents(platform), _read_side_survivors(platform)
    assert live["customer"] and live["journey"] and live["survey_answer"]
    replay(platform.records, platform.store, batch_size=batch_size)
    assert documents(platform) == live
    assert _read_side_survivors(platform) == survivors


# -- 6. the identity index is derived state ----------------------------------------------


def test_the_identity_index_rebuilt_from_the_event_store_is_the_index_written_live(
    platform: Platform,
) -> None:
    every_decision(platform)
    live = index_snapshot(platform)
    rules = {row["rule"] for row in live["identity_conflict"]}
    assert rules == {SOURCE_IDS_DIFFER, KEPT_APART, LIMIT}
    assert live["identity_apart"] and any(m["split_at"] for m in live["identity_merge"])
    assert platform.records.index_identities(rebuild=True) > 0
    assert index_snapshot(platform) == live


# -- 7. guard rails ------------------------------------------------------------------------


def test_touchpoints_naming_their_customer_by_blocked_values_only_are_separate_customers(
    platform: Platform,
) -> None:
    guest = {"email": "test@example.com", "device_id": "guest"}
    outcomes = submit(platform, [envelope(guest, at(0)), envelope(guest, at(1))])
    assert len({o.customer_id for o in outcomes}) == 2
    assert platform.records.identity.find(list(guest.items())) == []
    assert platform.records.identity.conflicts(limit=10, offset=0)[0] == 0


def test_a_device_id_blocked_in_the_settings_never_links_nor_merges(
    make_platform: Callable[..., Platform],
) -> None:
    platform = make_platform(identity_blocked=["device_id:KIOSK-1"])
    ann, bob = f"ann.{new_tag()}@shop.de", f"bob.{new_tag()}@shop.de"
    outcomes = submit(
        platform,
        [
            envelope({"email": ann, "device_id": "KIOSK-1"}, at(0)),
            envelope({"email": bob, "device_id": "kiosk-1"}, at(1)),
            envelope({"device_id": "KIOSK-1"}, at(2)),
        ],
    )
    assert len({o.customer_id for o in outcomes}) == 3
    assert [c for _, _, c in platform.records.identity.find([("email", ann), ("email", bob)])] == [
        outcomes[0].customer_id,
        outcomes[1].customer_id,
    ]
    assert platform.records.identity.find([("device_id", "KIOSK-1")]) == []
    assert platform.records.identity.conflicts(limit=10, offset=0)[0] == 0


def test_two_source_records_sharing_an_address_are_not_merged_and_the_conflict_is_listed(
    platform: Platform,
) -> None:
    shared = f"family.{new_tag()}@shop.de"
    first = owner(platform, envelope({"id": "S-1", "email": shared}, at(0)))
    second = owner(platform, envelope({"id": "S-2"}, at(1)))
    asking = envelope({"id": "S-2", "email": shared}, at(2))
    outcome = submit(platform, [asking])
    assert outcome[0].customer_id == second  # on the customer its strongest identifier names
    assert customer_of(platform, "S-1") == first and customer_of(platform, "S-2") == second
    assert holder(platform, "email", shared) == first
    total, items = platform.records.identity.conflicts(limit=10, offset=0)
    assert total == 1
    (item,) = items
    assert (item["rule"], item["event_id"], item["recorded_on"]) == (
        SOURCE_IDS_DIFFER,
        asking["event_id"],
        second,
    )
    assert set(item["customers"]) == {first, second}
    assert item["identifiers"] == {"id": "S-2", "email": shared}
    assert item["reason"].startswith("id: the customers are 2 records of the source system")
    assert "S-1" not in item["reason"]  # the reason names no identifier


def test_a_fourth_address_on_one_customer_is_not_linked_and_the_refusal_is_listed(
    platform: Platform,
) -> None:
    tag = new_tag()
    addresses = [f"n{i}.{tag}@shop.de" for i in range(4)]
    outcomes = submit(
        platform, [envelope({"id": tag, "email": a}, at(i)) for i, a in enumerate(addresses)]
    )
    customer = customer_of(platform, tag)
    assert {o.customer_id for o in outcomes} == {customer}
    assert [c for _, _, c in platform.records.identity.find([("email", a) for a in addresses])] == [
        customer
    ] * 3
    assert platform.records.identity.find([("email", addresses[3])]) == []
    state = platform.store.get("customer", customer)
    assert state is not None and state["touchpoints_total"] == 4
    total, items = platform.records.identity.conflicts(limit=10, offset=0)
    assert total == 1
    assert items[0]["rule"] == LIMIT and items[0]["identifiers"] == {"email": addresses[3]}
    assert items[0]["reason"].startswith("email:") and items[0]["customers"] == [customer]


def test_customers_split_apart_are_not_merged_again_by_a_touchpoint_naming_both(
    platform: Platform,
) -> None:
    person = Person.new()
    x = owner(platform, envelope(person.x(), at(0)))
    y = owner(platform, envelope(person.y(), at(1)))
    submit(platform, [envelope(person.both(), at(2))])
    platform.records.split(x, y, reason="two people")
    again = envelope(person.both(), at(3))
    assert owner(platform, again) == x
    assert holder(platform, "email", person.email) == x
    assert holder(platform, "phone", person.phone) == y
    total, items = platform.records.identity.conflicts(limit=10, offset=0)
    assert total == 1 and items[0]["rule"] == KEPT_APART
    assert (items[0]["event_id"], set(items[0]["customers"])) == (again["event_id"], {x, y})
    history = platform.records.identity.merge_history(x)
    assert len(history) == 1 and history[0]["split_at"] is not None


# -- 8. one device shared by 10,000 customers -------------------------------------------


def test_a_device_id_shared_by_ten_thousand_customers_merges_no_more_than_the_limit_allows(
    platform: Platform,
) -> None:
    """Each of 10,000 customers is known by an address of its own; then each comes back
    with its address and one device id (a shared tablet nobody declared). The device
    merges the first customer with the next two (3 addresses, the limit), and every other
    customer stays apart, each refusal listed with its reason."""
    count, batch = 10_000, 1000
    tag = new_tag()
    addresses = [f"c{i:05d}.{tag}@shop.de" for i in range(count)]
    device = f"TABLET-{tag}"
    started = time.perf_counter()
    for start in range(0, count, batch):
        platform.records.record(
            [
                parse_touchpoint(envelope({"email": addresses[i]}, T0 + timedelta(seconds=i)))
                for i in range(start, start + batch)
            ]
        )
    registered = time.perf_counter()
    for start in range(0, count, batch):
        platform.records.record(
            [
                parse_touchpoint(
                    envelope({"email": addresses[i], "device_id": device}, at(60 * 24))
                )
                for i in range(start, start + batch)
            ]
        )
    shared = time.perf_counter()
    assert embedded(platform).wait_until_projected(timeout=300)
    projected = time.perf_counter()
    print(
        f"\n10,000 customers: registered in {registered - started:.1f} s, the shared device"
        f" in {shared - registered:.1f} s, projected {projected - shared:.1f} s later"
    )

    found = platform.records.identity.find([("email", a) for a in addresses])
    holders = [customer for _, _, customer in found]
    assert len(holders) == count
    first = holders[0]
    assert holders[:3] == [first] * 3
    assert len(set(holders[3:])) == count - 3 and first not in holders[3:]
    assert holder(platform, "device_id", device) == first
    assert len(platform.records.identity.members(first)) == 3
    total, items = platform.records.identity.conflicts(limit=500, offset=0)
    assert total == count - 3
    assert {item["rule"] for item in items} == {LIMIT}
    assert all(
        item["reason"].startswith("email: merged, the customer would have 4") for item in items
    )
    assert all(first in item["customers"] for item in items)
    customers = platform.store.dump("customer")
    assert len(customers) == count - 2
    assert customers[first]["touchpoints_total"] == 6


# -- 9. two recorders at the same moment --------------------------------------------------

Step = tuple[str, str]  # what recorder 1 and recorder 2 send, each "x", "y" or "both"

VARIANTS: dict[str, list[Step]] = {
    "both vs e-mail": [("both", "x")],
    "e-mail vs both": [("x", "both")],
    "phone vs both": [("y", "both")],
    "e-mail vs phone, then both vs both": [("x", "y"), ("both", "both")],
    "e-mail vs phone, then both vs e-mail": [("x", "y"), ("both", "x")],
}


@pytest.fixture
def two_recorders(make_platform: Callable[..., Platform]) -> Iterator[tuple[Platform, Platform]]:
    """Two platforms on one database: two recorders, each with its own aggregate cache."""
    first = make_platform()
    second = bootstrap(Settings(database_url=first.database_url), mode="none")
    try:
        yield first, second
    finally:
        second.close()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_two_recorders_deciding_at_once_leave_one_customer_per_person(
    two_recorders: tuple[Platform, Platform], variant: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streams.recorder")
    first, second = two_recorders
    rounds = 25
    people = [Person.new() for _ in range(rounds)]
    steps = VARIANTS[variant]
    barrier = threading.Barrier(2, timeout=60)
    errors: list[BaseException] = []

    def run(records: CustomerRecords, which: int) -> None:
        try:
            for person in people:
                for step in steps:
                    touchpoint = parse_touchpoint(envelope(person.under(step[which]), at(which)))
                    barrier.wait()
                    (outcome,) = records.record([touchpoint])
                    assert outcome.outcome is Outcome.RECORDED, outcome
        except BaseException as error:
            import traceback

            traceback.print_exc()
            errors.append(error)
            barrier.abort()

    threads = [
        threading.Thread(target=run, args=(platform.records, n))
        for n, platform in enumerate((first, second))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert any("retry" in r.getMessage() for r in caplog.records), "the recorders never met"
    assert embedded(first).wait_until_projected(timeout=60)

    sent = 2 * len(steps)
    for person in people:
        survivor = holder(first, "email", person.email)
        assert holder(first, "phone", person.phone) == survivor
        assert sorted(link_events(first, survivor)) == sorted(person.both().items())
        assert len(first.records.touchpoints_of(survivor)) == sent
        customer = first.store.get("customer", survivor)
        assert customer is not None and customer["touchpoints_total"] == sent
        streams = first.records.identity.members(survivor)
        assert all(first.store.get("customer", s) is None for s in streams[1:])
    assert first.records.identity.conflicts(limit=10, offset=0)[0] == 0
    live = index_snapshot(first)
    first.records.index_identities(rebuild=True)
    assert index_snapshot(first) == live


def test_two_recorders_linking_at_once_to_one_customer_keep_it_within_the_limit(
    two_recorders: tuple[Platform, Platform],
) -> None:
    """A customer of two streams (an e-mail stream and a loyalty-card stream) holds two
    phone numbers, one short of the limit; recorder 1 brings a third by the address while
    recorder 2 brings a fourth by the card: one of them at most may be linked."""
    first, second = two_recorders
    barrier = threading.Barrier(2, timeout=60)
    over = []
    for _ in range(10):
        tag = new_tag()
        email, card = {"email": f"a.{tag}@shop.de"}, {"loyalty_card": f"L-{tag}"}
        owner(first, envelope(email | {"phone": new_phone()}, at(0)))
        owner(first, envelope(card | {"phone": new_phone()}, at(1)))
        survivor = owner(first, envelope(email | card, at(2)))
        assert len(first.records.identity.members(survivor)) == 2

        def bring(records: CustomerRecords, by: dict[str, str]) -> None:
            touchpoint = parse_touchpoint(envelope(by | {"phone": new_phone()}, at(3)))
            barrier.wait()
            records.record([touchpoint])

        threads = [
            threading.Thread(target=bring, args=(first.records, email)),
            threading.Thread(target=bring, args=(second.records, card)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        linked = first.records.identity.identifiers_of(survivor)
        over += [survivor] if sum(i["kind"] == "phone" for i in linked) > 3 else []
    assert over == []


# -- 10. look-ups ------------------------------------------------------------------------


def test_find_and_locate_name_the_customer_that_answers(platform: Platform) -> None:
    x = owner(platform, envelope({"id": "CRM-7", "email": "Ann@Shop.DE"}, at(0)))
    y = owner(platform, envelope({"phone": "+49 151 1234 5678"}, at(5)))
    identity = platform.records.identity
    assert identity.find([("email", "ann@shop.de")]) == [("email", "ann@shop.de", x)]
    assert identity.find([("email", "Ann@Shop.DE")]) == []  # find takes normalised values
    assert identity.find([("phone", "+4915112345678"), ("email", "nobody@shop.de")]) == [
        ("phone", "+4915112345678", y)
    ]
    by_source = identity.locate("CRM-7")
    assert by_source is not None
    assert (by_source.stream, by_source.survivor, by_source.by_source_id) == ("CRM-7", x, True)
    assert not by_source.absorbed
    assert identity.locate("CRM-8") is None

    submit(platform, [envelope({"email": "ann@shop.de", "phone": "+4915112345678"}, at(9))])
    assert identity.find([("phone", "+4915112345678"), ("email", "ann@shop.de")]) == [
        ("phone", "+4915112345678", x),
        ("email", "ann@shop.de", x),
    ]
    absorbed = identity.locate(y)
    assert absorbed is not None and absorbed.absorbed and absorbed.survivor == x
    holder_of_source = identity.locate("CRM-7")
    assert holder_of_source is not None and holder_of_source.survivor == x
