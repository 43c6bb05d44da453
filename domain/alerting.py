"""What operators do to alerts, as events: an alert is derived state (``projections.
alerts``), but an acknowledgement or a resolution by hand is a fact of its own, recorded
in the log so that a replay gives the same alerts, acted on as they were."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

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
