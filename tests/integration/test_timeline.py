"""The timeline is paged in the database (the touchpoint index), in event-time order:
pages put together are the customer's whole history, in order, whatever the arrival
order, the ties in time and the page size."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.touchpoints import parse_touchpoint
from infra.bootstrap import Platform
from tests.builders import T0, envelope, new_id
from tests.conftest import customer_of


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    minutes=st.lists(st.integers(0, 5), min_size=1, max_size=30),
    page=st.integers(1, 7),
    newest_first=st.booleans(),
)
def test_pages_put_together_are_the_history_in_event_time_order(
    platform: Platform, minutes: list[int], page: int, newest_first: bool
) -> None:
    customer = new_id("C")
    # Ties in time on purpose, and event ids whose order differs between collations.
    sent = [
        envelope(customer, T0 + timedelta(minutes=m), event_id=f"{new_id(p)}")
        for m, p in zip(minutes, ["a", "B", "_z", "-y", "Z", "ä"] * 5, strict=False)
    ]
    platform.records.record([parse_touchpoint(e) for e in sent])
    resolved = customer_of(platform, customer)
    expected = [e.event_id for e in platform.records.touchpoints_of(resolved)]
    if newest_first:
        expected.reverse()

    pages, offset = [], 0
    while True:
        total, items = platform.records.timeline(
            resolved, limit=page, offset=offset, newest_first=newest_first
        )
        if not items:
            break
        pages += [e.event_id for e in items]
        offset += page

    assert total == len(sent)
    assert pages == expected
