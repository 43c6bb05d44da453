"""What makes two touchpoints with one ``event_id`` the same touchpoint.

``event_id`` is the source's idempotency key, unique across the whole store (DESIGN.md,
guarantee 8). A touchpoint re-sent with the same content is a duplicate and changes
nothing; one re-sent with other content is a conflict: it is refused, naming the fields
that differ, and changes nothing either. "Same content" is judged on the envelope as
validated (amounts with two decimals, identifiers normalised), with ``occurred_at`` as
an instant: "10:30+01:00" and "09:30Z" are the same moment.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

Content = dict[str, Any]


class _Touchpoint(Protocol):
    @property
    def event_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def channel(self) -> str: ...
    @property
    def emotion(self) -> int | None: ...
    @property
    def payload(self) -> dict[str, Any]: ...
    @property
    def additional(self) -> dict[str, Any]: ...


def content(
    touchpoint: _Touchpoint,
    *,
    identifiers: Mapping[str, str],
    journey: Mapping[str, str] | None,
) -> Content:
    """The content of a touchpoint, as compared between two sendings of one event id:
    of a wire envelope's, a ``Touchpoint``'s or a recorded event's fields alike.

    The envelope's schema version is not part of it: the touchpoint index holds the
    fingerprints of touchpoints recorded before events carried it, and they must stay
    comparable with every re-send."""
    return {
        "event_id": touchpoint.event_id,
        "type": touchpoint.type,
        "occurred_at": _instant(touchpoint.occurred_at),
        "channel": touchpoint.channel,
        "customer": dict(identifiers),
        "journey": dict(journey) if journey is not None else None,
        "emotion": touchpoint.emotion,
        "payload": touchpoint.payload,
        "additional": touchpoint.additional,
    }


def _instant(moment: datetime) -> str:
    """The instant in UTC; as given when UTC cannot hold it (year 1 with an offset east
    of Greenwich: envelopes refuse it now, but older stores may hold one)."""
    try:
        return moment.astimezone(UTC).isoformat()
    except OverflowError:
        return moment.isoformat()


def fingerprint(of: Content) -> bytes:
    """SHA-256 of the canonical JSON of a touchpoint's content (sorted keys, no spaces)."""
    canonical = json.dumps(of, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).digest()


def differing_fields(recorded: Any, resent: Any, path: str = "") -> list[str]:
    """The dotted paths where two contents differ (``payload.amount``, ``customer.email``),
    down to the first level where one side lacks the other's key or the types differ."""
    if isinstance(recorded, dict) and isinstance(resent, dict):
        found: list[str] = []
        for key in sorted(recorded.keys() | resent.keys(), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in recorded or key not in resent:
                found.append(where)
            else:
                found += differing_fields(recorded[key], resent[key], where)
        return found
    if isinstance(recorded, list) and isinstance(resent, list) and len(recorded) == len(resent):
        return [
            field
            for i, (a, b) in enumerate(zip(recorded, resent, strict=True))
            for field in differing_fields(a, b, f"{path}.{i}")
        ]
    return [] if recorded == resent else [path or "body"]


class Outcome(StrEnum):
    """What became of one touchpoint handed to the recorder (or to Kafka)."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"  # the same content was recorded before: nothing changed
    CONFLICT = "conflict"  # its event_id was recorded with other content: refused
    WITHHELD = "withheld"  # valid, but its request held a conflict: nothing of it recorded
    ACCEPTED = "accepted"  # cluster mode: durable in Kafka, a worker records it next


@dataclass(frozen=True)
class Recorded:
    """The outcome for one touchpoint: the customer it belongs to and what became of it;
    for a conflict, the fields whose content differs from the recorded touchpoint."""

    event_id: str
    customer_id: str | None  # None: not resolved yet (cluster mode at 202 time)
    outcome: Outcome
    differing: tuple[str, ...] = ()

    @property
    def duplicate(self) -> bool | None:
        """True or False once recorded; None when not known (cluster mode at 202)."""
        return {Outcome.RECORDED: False, Outcome.DUPLICATE: True}.get(self.outcome)


def conflict_error(conflict: Recorded) -> dict[str, str]:
    """The field error of a conflict, as the API, the dead-letter topic and the import's
    reject file report it."""
    fields = ", ".join(conflict.differing) or "its content"
    return {
        "field": "event_id",
        "message": f"already recorded with other content ({fields} differ); an event id "
        "names one touchpoint: send a changed touchpoint under a new event_id",
    }
