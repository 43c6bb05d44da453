"""One bad event never stops the others (guarantee 7): a reducer that raises quarantines
that one document, durably and visibly, and every other document goes on; a retry or a
replay re-applies the held events once the reducer is fixed."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from psycopg.sql import SQL

from domain.touchpoints import parse_touchpoint
from infra.bootstrap import Platform, bootstrap
from infra.settings import Settings
from projections import journeys
from projections.base import Projection, RecordedTouchpoint, State
from projections.registry import PROJECTIONS
from streams.projector import follow, replay, retry_quarantined
from tests.builders import envelope, new_id
from tests.conftest import Served, customer_of

POISON: set[str] = set()  # event ids the fragile reducer fails on, until it is "fixed"


def _count(state: State | None, event: RecordedTouchpoint) -> State:
    if event.event_id in POISON:
        raise ValueError(f"cannot count {event.event_id}")
    seen = (state or {}).get("event_ids", [])
    return {"customer_id": event.customer_id, "event_ids": sorted([*seen, event.event_id])}


FRAGILE = Projection(name="fragile", key=lambda e: e.customer_id, reduce=_count)


def _fragile_journey(state: State | None, event: RecordedTouchpoint) -> State:
    if event.event_id in POISON:
        raise ValueError(f"cannot place {event.event_id}")
    return journeys.PROJECTION.reduce(state, event)


# The registry's journey projection, failing on the chosen events.
FRAGILE_JOURNEYS = dataclasses.replace(journeys.PROJECTION, reduce=_fragile_journey)


@pytest.fixture
def fragile_platform(fresh_database: Callable[[], str]) -> Iterator[Platform]:
    """A platform whose projections include one that fails on chosen events; nothing
    runs in the background: the test drives the follower."""
    platform = bootstrap(
        Settings(database_url=fresh_database()),
        start=False,
        projections=(
            *(p for p in PROJECTIONS if p.name != journeys.PROJECTION.name),
            FRAGILE_JOURNEYS,
            FRAGILE,
        ),
    )
    POISON.clear()
    yield platform
    POISON.clear()
    platform.close()


def test_a_failing_reducer_quarantines_one_document_and_the_others_go_on(
    fragile_platform: Platform,
) -> None:
    platform = fragile_platform
    healthy, victim = new_id("C"), new_id("C")
    bad = envelope(victim)
    later = envelope(victim, "2024-05-01T09:00:00Z")
    POISON.add(bad["event_id"])
    touchpoints = [envelope(healthy), bad, later, envelope(healthy, "2024-05-02T08:00:00Z")]
    platform.records.record([parse_touchpoint(t) for t in touchpoints])
    # From here on, the customers' ids (opaque): the documents are keyed by them.
    healthy, victim = customer_of(platform, healthy), customer_of(platform, victim)

    while follow(platform.records, platform.store, batch_size=2).read:
        pass

    store = platform.store
    fragile, customer = store.get("fragile", healthy), store.get("customer", victim)
    assert fragile is not None and customer is not None
    assert len(fragile["event_ids"]) == 2
    assert customer["touchpoints_total"] == 2
    assert store.get("fragile", victim) is None  # its first event failed
    quarantine = store.quarantine_of("fragile", victim)
    assert quarantine is not None
    assert quarantine.event_id == bad["event_id"]
    assert "ValueError: cannot count" in quarantine.error
    assert quarantine.events == 2  # the failed one, and the one held behind it
    assert store.quarantined_count() == 1

    # Still broken: the retry leaves it quarantined, unchanged, and says why.
    result = retry_quarantined(platform.records, store)
    assert result.released == 0
    assert result.failing[0][:2] == ("fragile", victim)

    POISON.clear()  # the reducer is fixed
    result = retry_quarantined(platform.records, store)
    assert (result.released, result.failing) == (1, [])
    assert store.quarantine_of("fragile", victim) is None
    assert store.get("fragile", victim) == {
        "customer_id": victim,
        "event_ids": sorted([bad["event_id"], later["event_id"]]),
    }
    # The follower does not apply them a second time.
    assert follow(platform.records, store, batch_size=100).applied == 0
    released = store.get("fragile", victim)
    assert released is not None
    assert released["event_ids"] == sorted([bad["event_id"], later["event_id"]])


def test_a_replay_with_a_broken_reducer_completes_and_after_the_fix_clears_it(
    fragile_platform: Platform,
) -> None:
    platform = fragile_platform
    victim = new_id("C")
    bad = envelope(victim)
    POISON.add(bad["event_id"])
    platform.records.record([parse_touchpoint(bad), parse_touchpoint(envelope(new_id("C")))])
    victim = customer_of(platform, victim)  # the customer's id, as documents are keyed

    replay(platform.records, platform.store, batch_size=100)
    assert platform.store.quarantine_of("fragile", victim) is not None

    POISON.clear()
    replay(platform.records, platform.store, batch_size=100)
    assert platform.store.quarantine_of("fragile", victim) is None
    assert platform.store.get("fragile", victim) == {
        "customer_id": victim,
        "event_ids": [bad["event_id"]],
    }
    assert platform.store.quarantined_count() == 0


def test_a_quarantined_document_shows_in_its_answer_and_in_health(
    fragile_platform: Platform, serve: Callable[[Platform], Served]
) -> None:
    platform = fragile_platform
    victim = new_id("C")
    bad = envelope(victim)
    POISON.add(bad["event_id"])
    platform.records.record([parse_touchpoint(bad)])
    follow(platform.records, platform.store, batch_size=100)
    served = serve(platform)
    url = served.url

    customer = httpx.get(f"{url}/v1/customers/{victim}", headers=served.headers, timeout=10)
    health = httpx.get(f"{url}/v1/healthz", headers=served.headers, timeout=10)

    assert customer.status_code == 200
    (quarantined,) = customer.json()["quarantined"]
    assert quarantined["projection"] == "fragile"
    assert quarantined["event_id"] == bad["event_id"]
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["quarantined_documents"] == 1


def test_an_event_older_code_let_in_quarantines_its_documents_and_the_rest_goes_on(
    fragile_platform: Platform,
) -> None:
    """A store written before the envelope refused it holds a touchpoint at 0001-01-01
    00:30+01:00, whose UTC instant is before year 1: today's envelope refuses it, but
    it is in the event store, and projecting, the index and replay must get past it."""
    platform = fragile_platform
    victim, healthy = new_id("C"), new_id("C")
    ancient = parse_touchpoint(envelope(victim)).model_copy(
        update={"occurred_at": datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))}
    )
    platform.records.record([ancient, parse_touchpoint(envelope(healthy))])
    # The customers' ids (opaque), as documents and quarantines are keyed.
    victim, healthy = customer_of(platform, victim), customer_of(platform, healthy)

    while follow(platform.records, platform.store, batch_size=100).read:
        pass
    replay(platform.records, platform.store, batch_size=100)

    assert platform.store.get("customer", healthy) is not None
    assert {q.projection for q in platform.store.quarantines(victim)} >= {"customer"}
    index = platform.records._columnar().index
    with platform.records._columnar().datastore.get_connection() as conn, conn.cursor() as cur:
        cur.execute(SQL("DELETE FROM {}").format(index))
    assert platform.records.index_touchpoints() == 2  # the index rebuilds past it too


def test_a_quarantined_journey_shows_in_its_answer(
    fragile_platform: Platform, serve: Callable[[Platform], Served]
) -> None:
    platform = fragile_platform
    customer, journey = new_id("C"), new_id("J")
    step = {"id": journey, "type": "car_service", "step": "arrival"}
    first = envelope(customer, journey=step, emotion=1)
    bad = envelope(customer, "2024-05-01T08:10:00Z", journey={**step, "step": "waiting"})
    POISON.add(bad["event_id"])
    platform.records.record([parse_touchpoint(first), parse_touchpoint(bad)])
    follow(platform.records, platform.store, batch_size=100)

    answer = serve(platform).client(timeout=10).get(f"/v1/journeys/{journey}")

    assert answer.status_code == 200, answer.text
    assert [t["event_id"] for t in answer.json()["touchpoints"]] == [first["event_id"]]
    (quarantined,) = answer.json()["quarantined"]
    assert (quarantined["projection"], quarantined["event_id"]) == ("journey", bad["event_id"])
