"""The scheduled jobs: the work time passing causes, run by the one active scheduler
(``infra.scheduler``), never by an API process.

- ``clock``: every poll, re-derive the customers whose measures fall due by now (a
  journey closing by inactivity, a customer lapsing, a purchase leaving the window);
- ``population``: recompute the population inputs (tier thresholds, RFM boundaries,
  retention, the lifetime-value model in use); a new version is rolled out to every
  customer in bounded batches, each customer's changes recorded; then materialise the
  population views that "now" reads serve (``infra.population``);
- ``clv-refit``: a new lifetime-value model, then the population inputs that use it;
- ``webhooks``: every poll, alert transitions to the subscribed endpoints
  (``infra.webhooks``: sends run in their own threads, so the job never waits on one).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from infra import population
from infra.bootstrap import Platform, reporting_money, tier_cutoffs
from infra.clock import Clock, SystemClock
from infra.scheduler import Job, Scheduler
from infra.webhooks import Dispatcher
from projections import analytics, maintained

log = logging.getLogger(__name__)


def refit_clv(platform: Platform, as_of: datetime | None = None) -> None:
    """A new lifetime-value model version on all purchases up to now, then the
    population inputs that carry it to every customer. A fit that cannot be made (too
    few repeat buyers, no convergence) is logged at WARNING and recorded as the last
    fit's outcome (``analytics.last_fit_outcome``); the next period retries. ``as_of``
    (default now) is the clock's."""
    s = platform.settings
    now = as_of or datetime.now(UTC)
    try:
        analytics.fit_clv(platform.store, as_of=now, unit=s.clv_time_unit, money=reporting_money(s))
    except analytics.FitRefused as why:
        log.warning("lifetime-value refit failed: %s", why)
        return
    refresh_population(platform, now)


def drive_clock(platform: Platform, now: datetime, *, timeout: float = 600.0) -> int:
    """Tick until nothing is due by ``now`` and every customer has the latest inputs,
    waiting for each tick to be applied (the projectors apply it, in log order); returns
    how many ticks it took. Stops at ``timeout`` seconds (the next run goes on)."""
    if platform.store.measure_rules is None:
        return 0
    deadline = time.monotonic() + timeout
    ticks = 0
    while time.monotonic() < deadline and maintained.pending(platform.store, now):
        recorded = platform.records.tick_id(
            now, maintained.latest_version(platform.store), platform.settings.maintain_batch_size
        )
        ticks += 1
        while maintained.clock(platform.store).tick != recorded:
            if time.monotonic() >= deadline:
                log.warning("clock tick %s not applied within %.0f s", recorded, timeout)
                return ticks
            time.sleep(0.02)
    return ticks


@dataclass(frozen=True)
class Refreshed:
    """What a population refresh did: the new inputs version (None: unchanged) and how
    many ticks rolled it out."""

    version: int | None
    ticks: int


def refresh_population(platform: Platform, now: datetime) -> Refreshed:
    """Recompute the population inputs as of ``now``; when they changed, publish a new
    version, and tick until every customer has it (bounded batches, in log order)."""
    rules = platform.store.measure_rules
    if rules is None:
        return Refreshed(None, 0)
    s = platform.settings
    inputs = maintained.population_inputs(
        platform.store,
        as_of=now,
        rules=rules,
        cutoffs=tier_cutoffs(s),
        money=reporting_money(s),
    )
    published = maintained.publish_inputs(platform.store, inputs, now)
    ticks = drive_clock(platform, now)
    population.materialise(platform, now)
    if published is not None:
        log.info("population inputs v%d rolled out in %d ticks", published.version, ticks)
    return Refreshed(published.version if published else None, ticks)


def advance_clock(platform: Platform, now: datetime) -> int:
    """The clock job, every scheduler poll: a lifetime-value model newer than the one
    the population inputs carry (fitted on request) is rolled out; customers behind the
    latest inputs or segment definitions are brought up to them at once; customers due
    by ``now`` at most every ``PEAKEND_CLOCK_TICK_SECONDS``. Returns the ticks taken."""
    store = platform.store
    if store.measure_rules is None:
        return 0
    if maintained.model_is_newer(store):
        return refresh_population(platform, now).ticks
    found = maintained.pending(store, now)
    last = maintained.clock(store).at
    every = timedelta(seconds=platform.settings.clock_tick_seconds)
    if found.behind or (found.due and (last is None or now - last >= every)):
        return drive_clock(platform, now)
    return 0


def scheduled(platform: Platform) -> list[Job]:
    s = platform.settings
    found = [
        Job(
            "clock",
            timedelta(seconds=s.scheduler_poll_seconds),
            lambda now: advance_clock(platform, now),
        )
    ]
    sender = Dispatcher(platform)
    found.append(Job("webhooks", timedelta(seconds=s.scheduler_poll_seconds), sender.step))
    if s.population_refresh_seconds > 0:
        found.append(
            Job(
                "population",
                timedelta(seconds=s.population_refresh_seconds),
                lambda now: refresh_population(platform, now),
                at_start=True,
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
