"""What operators do to alerts, as events: an alert is derived state (``projections.
alerts``), but an acknowledgement or a resolution by hand is a fact of its own, recorded
in the log so that a replay gives the same alerts, acted on as they were."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

from eventsourcing.domain import Aggregate

Action = Literal["acknowledge", "resolve"]
ACTIONS: tuple[Action, ...] = ("acknowledge", "resolve")


class OperatorAction(Aggregate):
    """One operator's action on one alert (``by``: the API key's name)."""

    class Taken(Aggregate.Created):
        """``by`` took ``action`` on the alert ``alert_id`` of customer ``customer_id``
        at ``at``, saying ``note``."""

        class_version = 1

        alert_id: str
        customer_id: str
        action: str
        by: str
        at: datetime
        note: str | None

    def __init__(
        self,
        alert_id: str,
        customer_id: str,
        action: str,
        by: str,
        at: datetime,
        note: str | None,
    ) -> None:
        if action not in ACTIONS:
            raise ValueError(f"action: one of {', '.join(ACTIONS)}, got {action!r}")
        if at.tzinfo is None:
            raise ValueError("at: an action's time must be timezone-aware")
        self.alert_id, self.customer_id, self.action = alert_id, customer_id, action
        self.by, self.at, self.note = by, at, note

    @classmethod
    def take(
        cls,
        alert_id: str,
        customer_id: str,
        action: Action,
        by: str,
        at: datetime,
        note: str | None = None,
    ) -> OperatorAction:
        return cls._create(
            cls.Taken,
            id=uuid.uuid4(),
            alert_id=alert_id,
            customer_id=customer_id,
            action=action,
            by=by,
            at=at,
            note=note,
        )


MATCHED = ("rule", "tier", "channel", "customer")


class Silence(Aggregate):
    """A silence: the transitions of alerts that match it (every field given equal:
    ``rule``, ``tier``, ``channel``, ``customer``) while it is active (opened, updated,
    acknowledged, resolved) are recorded and marked, and not delivered. Active from
    when it was created until ``ends_at``, or until it is expired by hand."""

    class Created(Aggregate.Created):
        class_version = 1

        matcher: dict[str, str]
        starts_at: datetime
        ends_at: datetime
        by: str
        comment: str | None

    class Expired(Aggregate.Event):
        """Expired by hand at ``at``, before its end."""

        class_version = 1

        at: datetime
        by: str

        def apply(self, aggregate: Silence) -> None:
            aggregate.expired_at = self.at

    def __init__(
        self,
        matcher: dict[str, str],
        starts_at: datetime,
        ends_at: datetime,
        by: str,
        comment: str | None,
    ) -> None:
        unknown = sorted(set(matcher) - set(MATCHED))
        if unknown:
            raise ValueError(f"matcher: unknown field {unknown[0]!r} (known: {', '.join(MATCHED)})")
        if not matcher:
            raise ValueError(f"matcher: at least one of {', '.join(MATCHED)}")
        if starts_at.tzinfo is None or ends_at.tzinfo is None:
            raise ValueError("ends_at: give an offset")
        if ends_at <= starts_at:
            raise ValueError("ends_at: after the silence starts (now)")
        self.matcher, self.starts_at, self.ends_at = dict(matcher), starts_at, ends_at
        self.by, self.comment = by, comment
        self.expired_at: datetime | None = None

    @classmethod
    def create(
        cls,
        matcher: dict[str, str],
        starts_at: datetime,
        ends_at: datetime,
        by: str,
        comment: str | None = None,
    ) -> Silence:
        return cls._create(
            cls.Created,
            id=uuid.uuid4(),
            matcher=dict(matcher),
            starts_at=starts_at,
            ends_at=ends_at,
            by=by,
            comment=comment,
        )

    def expire(self, at: datetime, by: str) -> bool:
        """Expire it now (False: it had ended, or was expired, already)."""
        if self.expired_at is not None or at >= self.ends_at:
            return False
        self.trigger_event(self.Expired, at=at, by=by)
        return True


def silence_active(silence: Mapping[str, Any], at: datetime) -> bool:
    """Whether a silence (as projected: starts_at, ends_at, expired_at) holds at ``at``."""
    ends = silence["ends_at"]
    if silence.get("expired_at") is not None:
        ends = min(ends, silence["expired_at"])
    return bool(silence["starts_at"] <= at < ends)


def silences_alert(silence: Mapping[str, Any], alert: Mapping[str, Any]) -> bool:
    """Whether an alert matches a silence's matcher: every field it gives, equal."""
    held = {
        "rule": alert.get("rule"),
        "tier": alert.get("tier"),
        "channel": alert.get("channel"),
        "customer": alert.get("customer_id"),
    }
    return all(held.get(field) == value for field, value in silence["matcher"].items())


def silenced_by(
    silences: Iterable[Mapping[str, Any]], alert: Mapping[str, Any], at: datetime
) -> str | None:
    """The id of the first silence active at ``at`` that matches ``alert`` (None: none,
    the alert's transition at ``at`` is delivered)."""
    return next(
        (str(s["id"]) for s in silences if silence_active(s, at) and silences_alert(s, alert)),
        None,
    )
