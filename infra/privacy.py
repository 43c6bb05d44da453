"""Erasure (the right to be forgotten) and what an export gathers besides the views.

Erasure is crypto-shredding: an ``Erased`` event is recorded on the customer, and in the
same event-store transaction the encryption keys of every stream the customer answers
for are destroyed and the identity index forgets their identifiers (both follow from the
event, so a rebuild of the index from the log does the same). From then on those
streams' personal fields cannot be read by anyone: projectors meeting the event refold
the customer's documents from the event store, which now gives them without personal
data, and a replay never sees it. Import reject files are raw input, outside the event
store: the lines naming the customer are removed first, while their identifiers can
still be read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from infra import rejects
from infra.bootstrap import Platform


@dataclass(frozen=True)
class Erasure:
    customer_id: str
    streams: list[str]
    erased_at: datetime
    already_erased: bool
    reject_lines_removed: int


def erase(platform: Platform, customer_id: str, *, at: datetime | None = None) -> Erasure:
    """Erase a customer (a survivor: the API redirects a merged id to it) and every
    customer merged into it."""
    at = at or datetime.now(UTC)
    records = platform.records
    streams = records.identity.members(customer_id)
    erased_at = records.erased_at(customer_id)
    if erased_at is not None:
        return Erasure(customer_id, streams, erased_at, True, 0)
    values = {
        value for t in records.touchpoints_of(customer_id) for value in t.identifiers.values()
    }
    removed = rejects.forget_values(
        platform.store, values, phone_region=platform.settings.phone_default_region
    )
    streams, erased = records.erase(customer_id, at=at)
    if not erased:  # a concurrent erasure got there first
        return Erasure(customer_id, streams, records.erased_at(customer_id) or at, True, removed)
    return Erasure(customer_id, streams, at, False, removed)
