"""The scheduled jobs: the work time passing causes, run by the one active scheduler
(``infra.scheduler``), never by an API process."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from api.analytics import money
from api.segments import evaluate
from infra.bootstrap import Platform
from infra.clock import Clock, SystemClock
from infra.scheduler import Job, Scheduler
from projections import analytics

log = logging.getLogger(__name__)


def refit_clv(platform: Platform, as_of: datetime | None = None) -> None:
    """A new lifetime-value model version on all purchases up to now. A fit that cannot
    be made (too few repeat buyers, no convergence) is logged at WARNING and recorded
    as the last fit's outcome (``analytics.last_fit_outcome``); the next period retries.
    ``as_of`` (default now) is the clock's."""
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


def scheduled(platform: Platform) -> list[Job]:
    s = platform.settings
    found = []
    if s.segment_evaluate_seconds > 0:
        found.append(
            Job(
                "segments",
                timedelta(seconds=s.segment_evaluate_seconds),
                lambda now: evaluate(platform, at=now),
            )
        )
    if s.clv_refit_hours > 0:
        found.append(
            Job(
                "clv-refit",
                timedelta(hours=s.clv_refit_hours),
                lambda now: refit_clv(platform, now),
            )
        )
    return found


def scheduler(platform: Platform, clock: Clock | None = None) -> Scheduler:
    """The platform's scheduler (not started): it runs when it leads."""
    return Scheduler(
        platform.database_url,
        scheduled(platform),
        clock=clock or SystemClock(),
        poll=platform.settings.scheduler_poll_seconds,
    )
