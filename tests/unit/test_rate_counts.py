"""The in-process rate-limit counts: the ``limits`` library's sliding window, without a
thread started per hit, and with expired counters still swept."""

from __future__ import annotations

import threading
import time

from limits import parse
from limits.strategies import SlidingWindowCounterRateLimiter

from api.auth import InProcessCounts


def test_hits_are_counted_against_the_window_and_start_no_thread() -> None:
    counts = InProcessCounts()
    limiter = SlidingWindowCounterRateLimiter(counts)
    limit = parse("100/minute")
    before = threading.active_count()
    allowed = [limiter.hit(limit, "key-1", cost=10) for _ in range(12)]
    assert allowed == [True] * 10 + [False] * 2
    assert threading.active_count() <= before  # the library started one per 10 ms
    assert limiter.hit(limit, "key-2", cost=10)  # per key


def test_expired_counters_are_swept_on_a_later_hit() -> None:
    counts = InProcessCounts()
    limiter = SlidingWindowCounterRateLimiter(counts)
    assert limiter.hit(parse("5/second"), "gone", cost=1)
    counts.SWEEP_SECONDS = 0.0
    time.sleep(2.1)  # the counter's expiry: twice the window
    assert limiter.hit(parse("5/second"), "other", cost=1)
    assert not [key for key in counts.storage if "/gone/" in key]
