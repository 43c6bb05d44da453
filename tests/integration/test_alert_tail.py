"""The alert streams' shared reader (``infra.alerts.AlertTail``) on real PostgreSQL:
every stream gets every transition after its position once and in order, whether it
was kept in memory or read from the feed, and one reader serves them all."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.touchpoints import parse_touchpoint
from infra import alerts as service
from infra.alerts import AlertTail
from infra.bootstrap import Platform
from tests.builders import survey_answer
from tests.integration.test_projections import record


def detractors(platform: Platform, first: int, n: int) -> None:
    at = datetime.now(UTC) - timedelta(minutes=5)
    record(
        platform,
        [parse_touchpoint(survey_answer(f"T{i}", "nps", 1, at)) for i in range(first, first + n)],
    )


async def read_until(tail: AlertTail, after: int, count: int) -> list[int]:
    """Positions a stream from ``after`` is given, until it has ``count``."""
    seen: list[int] = []
    for _ in range(200):
        for change in await tail.transitions(after, wait=0.5):
            after = change["position"]
            seen.append(after)
        if len(seen) >= count:
            return seen
    return seen


def test_streams_from_any_position_get_every_transition_once_in_order(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    detractors(platform, 0, 6)  # before any stream: only a resuming one reads these
    everything = [c["position"] for c in service.alert_stream_page(platform, 0, 1000)]
    assert len(everything) == 6
    reads: list[int] = []
    real = service.alert_stream_page

    def counted(p: Platform, after: int, limit: int) -> list[dict[str, Any]]:
        reads.append(after)
        return real(p, after, limit)

    monkeypatch.setattr(service, "alert_stream_page", counted)
    tail = AlertTail(platform, poll_seconds=0.05, keep=4)  # keeps fewer than will come

    async def scenario() -> tuple[list[list[int]], list[int]]:
        async with tail.open(), tail.open(), tail.open():
            await asyncio.sleep(0.3)  # the reader is at the head
            head = everything[-1]
            waiting = [asyncio.create_task(read_until(tail, head, 1)) for _ in range(3)]
            quiet = len(reads)
            await asyncio.sleep(0.5)
            polls = len(reads) - quiet  # one reader polling, whatever the streams waiting
            for task in waiting:
                task.cancel()
            streams = [
                asyncio.create_task(read_until(tail, start, 15 - i))
                for i, start in enumerate(everything[:3])
            ]
            late = asyncio.create_task(read_until(tail, 0, 16))
            await asyncio.to_thread(detractors, platform, 6, 10)
            return [await s for s in (*streams, late)], [polls]

    got, (polls,) = asyncio.run(scenario())
    now = [c["position"] for c in real(platform, 0, 1000)]
    assert len(now) == 16
    for i, seen in enumerate(got[:3]):
        assert seen == now[i + 1 :]  # after its own position: all, once, in order
    assert got[3] == now  # from the start: the feed first, then what is kept
    assert polls <= 0.5 / 0.05 + 2  # one reader's polls, not one per stream


def test_a_stream_that_stops_reading_holds_up_no_one_and_catches_up_after(
    make_platform: Callable[..., Platform],
) -> None:
    platform = make_platform()
    tail = AlertTail(platform, poll_seconds=0.05, keep=3)

    async def scenario() -> tuple[list[int], list[int]]:
        async with tail.open(), tail.open():
            await asyncio.sleep(0.3)
            start = service.stream_head(platform)
            brisk = asyncio.create_task(read_until(tail, start, 8))
            await asyncio.to_thread(detractors, platform, 100, 8)
            fast = await brisk  # the other stream has not read meanwhile
            slow = await read_until(tail, start, 8)  # now it does: from the feed
            return fast, slow

    fast, slow = asyncio.run(scenario())
    assert len(fast) == 8 and fast == slow == sorted(set(fast))
