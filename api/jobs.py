"""Periodic work beside the API: population measures that need a global pass."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from api.analytics import money
from api.segments import evaluate
from infra.bootstrap import Platform
from projections import analytics

log = logging.getLogger(__name__)


class Periodic:
    """Run ``job`` every ``every`` seconds in a daemon thread; a failure is logged and
    retried at the next period."""

    def __init__(self, name: str, every: float, job: Callable[[], object]) -> None:
        self.name, self.every, self.job = name, every, job
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"peakend-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.job()
            except Exception:
                log.exception("%s failed; next try in %.0f s", self.name, self.every)


def refit_clv(platform: Platform, as_of: datetime | None = None) -> None:
    """A new lifetime-value model version on all purchases up to now. A fit that cannot
    be made (too few repeat buyers, no convergence) is logged at WARNING and recorded
    as the last fit's outcome (``analytics.last_fit_outcome``); the next period retries.
    ``as_of`` (default now) is the clock, injected by tests."""
    s = platform.settings
    try:
        analytics.fit_clv(
            platform.store,
            as_of=as_of or datetime.now(UTC),
            unit=s.clv_time_unit,
            money=money(s),
        )
    except analytics.FitRefused as why:
        log.warning("lifetime-value refit failed: %s", why)


def jobs(platform: Platform) -> list[Periodic]:
    s = platform.settings
    found = []
    if s.segment_evaluate_seconds > 0:
        found.append(Periodic("segments", s.segment_evaluate_seconds, lambda: evaluate(platform)))
    if s.clv_refit_hours > 0:
        found.append(Periodic("clv-refit", s.clv_refit_hours * 3600, lambda: refit_clv(platform)))
    return found
