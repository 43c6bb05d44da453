"""Alerts, the application side: alerts are derived by the projectors
(``projections.alerts`` on each customer's measures and facts, ``projections.
maintained``); an operator's acknowledgement or resolution is recorded as an event
(``domain.alerting``) and reaches the alert through the projectors too."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from domain.alerting import Action, Silence
from infra.bootstrap import Platform
from projections import maintained
from projections.alerts import Status

alert_page = maintained.alert_page
alert_of = maintained.alert_of


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
