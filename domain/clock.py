"""Time passing, as the projections see it.

What depends on time (a journey closing after an inactivity gap, a customer lapsing, a
purchase leaving the trailing window, new population inputs taking effect) changes at
the points of the event log where the scheduler recorded a ``Tick``: live processing and
a replay see time pass at the same places, so they derive the same changes.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from eventsourcing.domain import Aggregate


class Tick(Aggregate):
    """One reading of the scheduler's clock: up to ``limit`` customers whose measures
    fell due by ``at``, or that were derived with population inputs older than
    ``inputs_version``, are re-derived at the point of the log where it stands."""

    class Recorded(Aggregate.Created):
        """The clock read ``at``; population inputs up to ``inputs_version`` are in
        effect from here on."""

        class_version = 1

        at: datetime
        inputs_version: int
        limit: int

    def __init__(self, at: datetime, inputs_version: int, limit: int) -> None:
        if at.tzinfo is None:
            raise ValueError("at: a tick's time must be timezone-aware")
        if limit < 1:
            raise ValueError(f"limit: at least one customer a tick, got {limit}")
        self.at, self.inputs_version, self.limit = at, inputs_version, limit

    @classmethod
    def record(cls, at: datetime, inputs_version: int, limit: int) -> Tick:
        return cls._create(
            cls.Recorded, id=uuid.uuid4(), at=at, inputs_version=inputs_version, limit=limit
        )
