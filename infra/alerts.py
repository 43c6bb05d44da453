"""Alerts, the application side: alerts are derived by the projectors
(``projections.alerts`` on each customer's measures and facts, ``projections.
maintained``); an operator's acknowledgement or resolution is recorded as an event
(``domain.alerting``) and reaches the alert through the projectors too."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from domain.alerting import Action, Silence, silenced_by
from infra.bootstrap import Platform, measure_rules
from projections import maintained
from projections.alerts import AT_RISK, Rule, Status, Transition, with_rules
from projections.backtest import report, simulate, simulate_channel
from projections.measures import Inputs

log = logging.getLogger(__name__)

STREAM_PAGE = 200  # transitions read (and sent) at a time


def _shown(alerts: list[dict[str, Any]], store: Any) -> list[dict[str, Any]]:
    """Alerts as they stand now: one not resolved is marked by the silence that holds
    it now (``silenced_by``: its next transition would not be delivered); a resolved
    one keeps the mark its last transition was recorded with."""
    if not any(a["status"] != Status.RESOLVED for a in alerts):
        return alerts
    now = datetime.now(UTC)
    active = maintained.silence_list(store, active_at=now)
    return [
        a if a["status"] == Status.RESOLVED else {**a, "silenced_by": silenced_by(active, a, now)}
        for a in alerts
    ]


def alert_page(platform: Platform, **filters: Any) -> list[dict[str, Any]]:
    """A page of alerts (``maintained.alert_page``'s filters), as they stand now."""
    return _shown(maintained.alert_page(platform.store, **filters), platform.store)


def alert_of(platform: Platform, alert_id: str) -> dict[str, Any] | None:
    found = maintained.alert_of(platform.store, alert_id)
    return _shown([found], platform.store)[0] if found is not None else None


class AlertNotFound(LookupError):
    pass


class AlertClosed(Exception):
    """The alert is resolved already: there is nothing to act on."""


@dataclass(frozen=True)
class Acted:
    alert_id: str
    action: Action
    action_id: str


def act(platform: Platform, alert_id: str, action: Action, by: str, note: str | None) -> Acted:
    """Record ``by``'s ``action`` on the alert; the projectors apply it in log order (an
    alert its condition resolved in the meantime stays as it is)."""
    alert = maintained.alert_of(platform.store, alert_id)
    if alert is None:
        raise AlertNotFound(alert_id)
    if alert["status"] == Status.RESOLVED:
        raise AlertClosed(alert_id)
    action_id = platform.records.act_on_alert(alert_id, alert["customer_id"], action, by, note)
    return Acted(alert_id, action, action_id)


def alert_stream_page(platform: Platform, after: int, limit: int) -> list[dict[str, Any]]:
    """The alert transitions after position ``after``, oldest first (the change feed's
    alert kinds)."""
    return maintained.change_page(
        platform.store, after=after, limit=limit, kinds=sorted(maintained.ALERT_KINDS)
    )


def stream_head(platform: Platform) -> int:
    """The position a new stream starts after: the latest in the feed now."""
    return maintained.latest_position(platform.store)


class SilenceNotFound(LookupError):
    pass


def create_silence(
    platform: Platform, matcher: dict[str, str], ends_at: datetime, by: str, comment: str | None
) -> str:
    """Record a silence active from now until ``ends_at`` (``ValueError`` naming the
    field when it cannot be); returns its id."""
    silence = Silence.create(matcher, datetime.now(UTC), ends_at, by, comment)
    platform.records.save(silence)
    return silence.id.hex


def expire_silence(platform: Platform, silence_id: str, by: str) -> bool:
    """Expire the silence now (False: it had ended or was expired already)."""
    try:
        stream = UUID(hex=silence_id)
    except ValueError:
        raise SilenceNotFound(silence_id) from None
    silence = platform.records.silence(stream)
    if silence is None:
        raise SilenceNotFound(silence_id)
    if not silence.expire(datetime.now(UTC), by):
        return False
    platform.records.save(silence)
    return True


def silences(platform: Platform, *, active: bool) -> list[dict[str, Any]]:
    return maintained.silence_list(platform.store, active_at=datetime.now(UTC) if active else None)


MAX_BACKTEST = timedelta(days=366)
SHOWN = 1000  # alerts listed in a back-test's answer (all are counted)


def backtest(
    platform: Platform,
    rule: Rule,
    overrides: Mapping[str, Any],
    start: datetime,
    end: datetime,
) -> dict[str, Any]:
    """What ``rule``, with ``overrides`` of its settings, would have raised in
    [start, end) over the recorded history: every customer's touchpoints replayed as the
    projectors derive them (``projections.backtest``), the other rules off. A pass over
    the event store: slower than a read, by design; nothing is written or delivered.
    ``ValueError`` names a wrong setting."""
    if not start < end:
        raise ValueError("to: after from")
    if end - start > MAX_BACKTEST:
        raise ValueError(f"to: at most {MAX_BACKTEST.days} days after from")
    base = platform.store.measure_rules or measure_rules(platform.settings)
    off = {r.value: {"enabled": False} for r in Rule if r != rule}
    candidate = with_rules(base.alerts, {**off, rule.value: {**overrides, "enabled": True}})
    rules = replace(base, alerts=candidate)
    versions = maintained.input_versions_all(platform.store)

    def inputs(at: datetime) -> Inputs:
        effective = [
            v for v in versions if v.computed_at and datetime.fromisoformat(v.computed_at) <= at
        ]
        return effective[-1] if effective else Inputs()

    # History ends where the projections' clock stands (now, or later where a test
    # drove it on): a back-test does not run time further than the live rules saw it.
    ticked = maintained.clock(platform.store).at
    until = min(end, max(datetime.now(UTC), ticked) if ticked else datetime.now(UTC))
    moves: list[tuple[datetime, Transition]] = []
    customers = maintained.customer_ids(platform.store)
    if rule == Rule.CAPACITY:
        channels = sorted(candidate.capacity.channels)
        if not channels:
            raise ValueError("channels: name the channels to watch, with their capacity")
        recorded = sorted(
            (e for c in customers for e in platform.records.touchpoints_of(c)),
            key=lambda e: e.timestamp,
        )
        for channel in channels:
            moves += simulate_channel(channel, recorded, rules, until)
        subjects = len(channels)
    else:
        for customer_id in customers:
            events = sorted(platform.records.touchpoints_of(customer_id), key=lambda e: e.timestamp)
            moves += simulate(customer_id, events, rules, inputs, until)
        subjects = len(customers)
    found = report(rule, moves, start, end, subjects, SHOWN)
    return {**found, "settings": _settings_json(candidate.of(rule))}


def _settings_json(settings: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in asdict(settings).items():
        if isinstance(value, timedelta):
            out[f"{name}_seconds"] = value.total_seconds()
        elif isinstance(value, frozenset | tuple):
            out[name] = sorted(str(v) for v in value)
        elif isinstance(value, Mapping):
            out[name] = json.loads(json.dumps(value, default=_plain))
        else:
            out[name] = value
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)


def revenue_at_risk(platform: Platform) -> dict[str, Any]:
    """The maintained revenue at risk, overall and per rule (``alerts.revenue_at_risk``
    per customer, totals kept by the projectors)."""
    held = maintained.revenue_at_risk(platform.store)
    zero = {"amount": Decimal(0), "customers": 0}
    return {
        "currency": platform.settings.currency,
        "overall": held.get("overall", zero),
        "by_rule": {rule: held.get(rule, zero) for rule in AT_RISK},
        "leave_share_without_model": platform.store.measure_rules.alerts.leave_share_without_model
        if platform.store.measure_rules
        else None,
    }


class AlertTail:
    """One reader of the change feed's alert transitions for every stream this process
    serves: it polls the feed every ``poll_seconds`` while a stream is open, keeps the
    latest ``keep`` transitions in memory, and wakes the streams waiting on it. A stream
    behind what it keeps (a client resuming from long ago, or one slower than the feed)
    reads the feed on its own until it catches up: a slow client never holds up the
    reader, nor another stream. Positions are the feed's (taken in commit order, under
    the feed's lock), so a stream sees every transition once, in order, however it got
    it."""

    def __init__(self, platform: Platform, *, poll_seconds: float, keep: int = 10_000) -> None:
        self.platform, self.poll_seconds = platform, poll_seconds
        self._kept: deque[dict[str, Any]] = deque(maxlen=keep)
        self._since: int | None = None  # every transition after it is in _kept
        self._arrived = asyncio.Event()  # set, and replaced, when a page arrives
        self._streams = 0
        self._reader: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[AlertTail]:
        """A stream, while it is open: the reader runs while any stream is."""
        self._streams += 1
        self._ensure_reader()
        try:
            yield self
        finally:
            self._streams -= 1

    async def transitions(self, after: int, *, wait: float) -> list[dict[str, Any]]:
        """Up to a page of the transitions after position ``after``, oldest first: those
        there now, else those that arrive within ``wait`` seconds ([]: none did)."""
        self._ensure_reader()
        since = self._since
        if since is None or after < since:
            page = await asyncio.to_thread(alert_stream_page, self.platform, after, STREAM_PAGE)
            if page:
                return page
            if since is None:  # the reader is starting: nothing kept yet
                await asyncio.sleep(min(wait, self.poll_seconds))
                return []
            after = since  # none up to what is kept: read on from it
        found = self._kept_after(after)
        if found:
            return found
        arrived = self._arrived
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), wait)
        return self._kept_after(after) or []

    def _kept_after(self, after: int) -> list[dict[str, Any]] | None:
        """What is kept after ``after`` (None: not all of it is kept any more)."""
        if self._since is None or after < self._since:
            return None
        first = bisect.bisect_right(self._kept, after, key=lambda change: change["position"])
        return list(itertools.islice(self._kept, first, first + STREAM_PAGE))

    def _ensure_reader(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # served by another loop now (a test's new client)
            self._loop, self._reader = loop, None
            self._kept.clear()
            self._since, self._arrived = None, asyncio.Event()
        if self._streams > 0 and (self._reader is None or self._reader.done()):
            self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            head = await asyncio.to_thread(stream_head, self.platform)
            self._kept.clear()
            self._since = head
            while self._streams > 0:
                page = await asyncio.to_thread(alert_stream_page, self.platform, head, STREAM_PAGE)
                for change in page:
                    if len(self._kept) == self._kept.maxlen:
                        self._since = self._kept[0]["position"]  # evicted
                    self._kept.append(change)
                if page:
                    head = page[-1]["position"]
                    arrived, self._arrived = self._arrived, asyncio.Event()
                    arrived.set()
                if len(page) < STREAM_PAGE:
                    await asyncio.sleep(self.poll_seconds)
        except Exception as error:  # the streams read the feed on their own meanwhile
            log.warning("the alert stream's reader stopped: %s", type(error).__name__)
        finally:
            self._since = None  # a new reader starts afresh from the head
            self._arrived.set()
