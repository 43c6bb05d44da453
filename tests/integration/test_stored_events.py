"""Events stored under an older schema, read by today's code: the rows of
``tests/fixtures/stored_events_v1.json`` (written by the code before event versions)
are put into a fresh event store byte for byte, then read, projected, replayed and
indexed, and compared with a platform that recorded the same envelopes today."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote
from uuid import UUID

import psycopg2
import pytest
from eventsourcing.persistence import StoredEvent
from psycopg2 import sql

from domain.customer import Customer, customer_aggregate_id
from domain.idempotency import Outcome
from domain.touchpoints import parse_touchpoint
from infra.bootstrap import Platform, bootstrap
from infra.settings import Settings
from projections.store import ReadModelStore
from streams.projector import follow
from streams.recorder import ColumnarRecorder
from tests.builders import envelope
from tests.conftest import Served, embedded
from tests.fixtures import stored
from tests.identities import Identifier, by_identifier, customer_by

FIXTURE = stored.load()
# An identifier of each of the fixture's customers, in FIXTURE.customer_ids order: today's
# customer ids are random, so a customer of the oracle is found by what identifies it.
NAMING: list[Identifier] = [("id", "FX-ANN"), ("email", "bob@example.com")]


def insert_as_stored(url: str, platform: Platform, rows: list[StoredEvent] = FIXTURE.rows) -> None:
    """The fixture's rows (or ``rows``) into the platform's event store table, exactly
    as stored, in notification order (so they get the notification ids they had)."""
    recorder = platform.records.recorder
    if not isinstance(recorder, ColumnarRecorder):
        raise TypeError("the event store is PostgreSQL's")
    assert recorder.events_table_name == FIXTURE.events_table
    table = sql.Identifier(recorder.datastore.schema, recorder.events_table_name)
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            for row in rows:
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {} (originator_id, originator_version, topic, state)"
                        " VALUES (%s, %s, %s, %s)"
                    ).format(table),
                    (str(row.originator_id), row.originator_version, row.topic, row.state),
                )
            cur.execute(sql.SQL("SELECT max(notification_id) FROM {}").format(table))
            assert cur.fetchone() == (len(rows),)
    finally:
        conn.close()


@pytest.fixture
def legacy(fresh_database: Callable[[], str]) -> Iterator[Platform]:
    """A platform whose event store holds only the fixture's rows (nothing projected,
    no touchpoint indexed yet); no driver runs, the tests drive it. The identity index is
    built from the rows, as bootstrap builds it on a store from before the index."""
    url = fresh_database()
    platform = bootstrap(Settings(database_url=url), mode="none")
    try:
        insert_as_stored(url, platform)
        assert platform.records.index_identities() == len(FIXTURE.rows)
        yield platform
    finally:
        platform.close()


@pytest.fixture
def oracle(platform: Platform) -> Platform:
    """Today's code recording the envelopes that produced the fixture, in one batch as
    the fixture's script did."""
    platform.records.record([parse_touchpoint(raw) for raw in FIXTURE.envelopes])
    assert embedded(platform).wait_until_projected()
    return platform


def fields(event: Any) -> dict[str, Any]:
    """An event's recorded fields, less when it was recorded (the fixture's moment)."""
    return {k: v for k, v in vars(event).items() if k != "timestamp"}


def touchpoint_fields(platform: Platform, event: Customer.TouchpointRecorded) -> Any:
    """A touchpoint's recorded fields, its customer named by an identifier (``NAMING``),
    less its place in the stream: on the stream of its customer (asserted), at a version
    that differs today (today's streams hold the identity events too)."""
    assert event.originator_id == customer_aggregate_id(event.customer_id)
    recorded = {
        k: v for k, v in fields(event).items() if k not in ("originator_id", "originator_version")
    }
    return by_identifier(platform, recorded, NAMING)


def snapshot(store: ReadModelStore) -> dict[str, dict[str, Any]]:
    return {p.name: store.dump(p.name) for p in store.projections}


def named_snapshot(platform: Platform) -> Any:
    """Every read model, each customer named by an identifier (``NAMING``)."""
    return by_identifier(platform, snapshot(platform.store), NAMING)


def follow_to_the_end(platform: Platform) -> None:
    while follow(platform.records, platform.store, batch_size=3).read:
        pass


def test_the_fixture_holds_v1_events_of_two_customers() -> None:
    assert FIXTURE.customer_ids == ["FX-ANN", FIXTURE.customer_ids[1]]
    assert all(b'"class_version"' not in row.state for row in FIXTURE.rows)


def test_customers_stored_before_event_versions_reconstruct(
    legacy: Platform, oracle: Platform
) -> None:
    for customer_id, (kind, value) in zip(FIXTURE.customer_ids, NAMING, strict=True):
        customer: Any = legacy.records.repository.get(customer_aggregate_id(customer_id))

        assert isinstance(customer, Customer)
        assert customer.customer_id == customer_id
        assert customer.identified is False  # Registered v1, upcast
        # An old customer keeps its id: the identity index links its identifiers to it.
        assert customer_by(legacy, kind, value) == customer_id
        old = legacy.records.touchpoints_of(customer_id)
        assert customer.touchpoint_ids == {e.event_id for e in old}
        assert customer.version == 1 + len(old)
        assert {e.envelope_schema for e in old} == {1}
        # Upcast v1 == recorded as v2 today, field by field.
        today = oracle.records.touchpoints_of(customer_by(oracle, kind, value))
        assert [touchpoint_fields(legacy, e) for e in old] == [
            touchpoint_fields(oracle, e) for e in today
        ]


def test_old_events_project_to_the_documents_that_recording_today_builds(
    legacy: Platform, oracle: Platform
) -> None:
    follow_to_the_end(legacy)

    assert named_snapshot(legacy) == named_snapshot(oracle)
    assert legacy.store.quarantined_count() == 0
    customer = legacy.store.get("customer", "FX-ANN")
    assert customer is not None and customer["touchpoints_total"] == 4


def test_peakend_replay_rebuilds_the_documents_from_old_events(
    legacy: Platform, oracle: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infra.cli import main

    monkeypatch.setenv("PEAKEND_DATABASE_URL", legacy.database_url)

    assert main(["replay", "--quiet"]) == 0

    assert named_snapshot(legacy) == named_snapshot(oracle)


def test_the_index_backfill_indexes_old_events_as_recording_today_does(
    legacy: Platform, oracle: Platform
) -> None:
    assert legacy.records.index_touchpoints() == len(FIXTURE.envelopes)

    assert indexed(legacy) == indexed(oracle)
    total, page = legacy.records.timeline("FX-ANN", limit=10, offset=0, newest_first=False)
    assert (total, [e.event_id for e in page]) == (
        4,
        ["fx-visit-1", "fx-purchase-1", "fx-complaint-1", "fx-survey-1"],
    )


def test_an_old_touchpoint_re_sent_is_a_duplicate_and_changed_a_conflict(
    legacy: Platform,
) -> None:
    legacy.records.index_touchpoints()
    purchase = next(raw for raw in FIXTURE.envelopes if raw["event_id"] == "fx-purchase-1")
    changed = {**purchase, "payload": {**purchase["payload"], "amount": "59.81"}}

    same, other = legacy.records.record([parse_touchpoint(purchase), parse_touchpoint(changed)])

    assert same.outcome is Outcome.DUPLICATE
    assert (other.outcome, other.differing) == (Outcome.CONFLICT, ("payload.amount",))


def test_an_old_stream_goes_on_with_new_events(legacy: Platform) -> None:
    legacy.records.index_touchpoints()
    new = parse_touchpoint(envelope("FX-ANN", "2024-06-01T10:00:00Z", event_id="fx-new-1"))

    (outcome,) = legacy.records.record([new])

    assert outcome.outcome is Outcome.RECORDED
    assert outcome.customer_id == "FX-ANN"  # found by its source id through the index
    # At a version, the repository reads the stream from the store, not its cache.
    customer: Any = legacy.records.repository.get(customer_aggregate_id("FX-ANN"), version=6)
    assert isinstance(customer, Customer) and customer.version == 6
    *old, latest = legacy.records.touchpoints_of("FX-ANN")
    assert latest.event_id == "fx-new-1" and latest.originator_version == 6
    assert len(old) == 4


def indexed(platform: Platform) -> Any:
    """The touchpoint index's rows, each customer named by an identifier (``NAMING``),
    less the touchpoint's place in the store, which is checked instead: the stream of its
    customer, and the version that holds that touchpoint (today's streams hold the
    identity events too, so the versions differ)."""
    rows = index_rows(platform)
    for event_id, _, customer_id, originator_id, _, _ in rows:
        assert UUID(str(originator_id)) == customer_aggregate_id(customer_id), event_id
    places = [(UUID(str(r[3])), int(r[4])) for r in rows]
    assert [e.event_id for e in platform.records.touchpoints_at(places)] == [r[0] for r in rows]
    return by_identifier(platform, [(r[0], r[1], r[2], r[5]) for r in rows], NAMING)


def index_rows(platform: Platform) -> list[tuple[Any, ...]]:
    recorder = platform.records.recorder
    if not isinstance(recorder, ColumnarRecorder):
        raise TypeError("the event store is PostgreSQL's")
    conn = psycopg2.connect(platform.database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT event_id, fingerprint, customer_id, originator_id,"
                    " originator_version, occurred_at FROM {} ORDER BY event_id"
                ).format(sql.Identifier(recorder.datastore.schema, recorder.index_table))
            )
            return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in cur]
    finally:
        conn.close()


def renamed_rows(old: str, new: str) -> list[StoredEvent]:
    """The fixture's rows with customer ``old`` (its id, and the source id it was
    recorded for) stored as ``new``, as the code before the identity index stored any."""
    stream = customer_aggregate_id(old)
    return [
        StoredEvent(
            customer_aggregate_id(new),
            row.originator_version,
            row.topic,
            row.state.replace(json.dumps(old).encode(), json.dumps(new).encode()),
        )
        if row.originator_id == stream
        else row
        for row in FIXTURE.rows
    ]


def test_an_old_customer_merged_into_an_earlier_one_redirects_to_it(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    """Old customer ids are whatever the source sent, characters that percent-encode
    included: merged into a customer first seen earlier, such a customer's answers
    redirect to the survivor (they redirected to themselves, for ever)."""
    old = "FX ANN é"
    platform = make_platform()
    insert_as_stored(platform.database_url, platform, renamed_rows("FX-ANN", old))
    platform.records.index_touchpoints()  # as bootstrap does on a store from before
    platform.records.index_identities()
    phone = "+4915112345678"
    (earlier,) = platform.records.record(
        [parse_touchpoint(envelope({"phone": phone}, "2020-01-01T08:00:00Z"))]
    )
    both = {"email": "ann.lee@example.com", "phone": phone}  # FX-ANN's e-mail, in the rows
    (merging,) = platform.records.record([parse_touchpoint(envelope(both))])
    assert merging.customer_id == earlier.customer_id != old
    assert embedded(platform).wait_until_projected()

    with serve(platform).client() as client:
        moved = client.get(f"/v1/customers/{quote(old, safe='')}/timeline", params={"limit": 2})
        assert moved.status_code == 307, moved.text
        survivor = f"/v1/customers/{earlier.customer_id}/timeline?limit=2"
        assert moved.headers["location"] == moved.json()["location"] == survivor
        answer = client.get(moved.headers["location"])
        assert answer.status_code == 200, answer.text
        assert answer.json()["total"] == 4 + 2  # the old customer's four, and the two new
