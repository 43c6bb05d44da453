"""What a projection is: a key function and a pure reducer over domain events.

State is a JSON document (it is stored as ``jsonb``); a reducer never mutates the state
it is given, it returns the next one. Rules that depend on settings, on the population
or on time (a tier, a loyalty quadrant, whether a journey is closed) are not folded into
documents: the maintained measures derive them from the documents
(``projections.measures``), each with the version of the rules that produced it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from domain.customer import Customer

State = dict[str, Any]
RecordedTouchpoint = Customer.TouchpointRecorded


@dataclass(frozen=True)
class Projection:
    """A read model: ``key(event)`` names the document an event updates (None: not this
    projection's business) and ``reduce(state, event)`` computes its next state; ``state``
    is None for a document's first event. ``indexed`` fields get a database index."""

    name: str
    key: Callable[[RecordedTouchpoint], str | None]
    reduce: Callable[[State | None, RecordedTouchpoint], State]
    indexed: tuple[str, ...] = ()  # top-level state fields that queries look documents up by


def utc_iso(moment: datetime) -> str:
    """A fixed-width UTC timestamp, so that event-time order is string order."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def insert_by_time(items: list[dict[str, Any]], item: dict[str, Any]) -> list[dict[str, Any]]:
    """A new list with ``item`` placed by (occurred_at, event_id): late events land where
    they happened, and equal times order the same way live and on replay."""

    def order(entry: dict[str, Any]) -> tuple[str, str]:
        return entry["occurred_at"], entry["event_id"]

    position = len(items)
    while position and order(items[position - 1]) > order(item):
        position -= 1
    return [*items[:position], item, *items[position:]]
