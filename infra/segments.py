"""Segments, the application side: definitions are events (``domain.segments.Segment``)
recorded in the event store; membership is derived by the projectors
(``projections.maintained``), customer by customer, and every entry and exit is a
change in the feed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain.segments import Segment, SegmentRemoved
from infra.bootstrap import Platform
from streams.recorder import SegmentConflict

ATTEMPTS = 5


@dataclass(frozen=True)
class Defined:
    """A definition recorded: whether the segment is new (or defined again after it was
    deleted) and the version of its stream."""

    name: str
    created: bool
    version: int


def define(platform: Platform, name: str, rule: dict[str, Any], description: str | None) -> Defined:
    """Define the segment, or redefine it (``domain.segments.InvalidRule`` when the rule
    cannot be evaluated: nothing is recorded)."""
    for _ in range(ATTEMPTS):
        held = platform.records.segment(name)
        if held is None:
            segment, created = Segment.define(name, rule, description), True
        else:
            created = held.deleted
            held.redefine(rule, description)
            segment = held
        try:
            platform.records.save_segment(segment)
        except SegmentConflict:
            continue  # defined by another request meanwhile: read it again
        return Defined(name, created, segment.version)
    raise SegmentConflict(name)


def delete(platform: Platform, name: str) -> bool:
    """Delete the segment (its members leave it); False when there is none."""
    for _ in range(ATTEMPTS):
        held = platform.records.segment(name)
        if held is None:
            return False
        try:
            held.delete()
        except SegmentRemoved:
            return False
        try:
            platform.records.save_segment(held)
        except SegmentConflict:
            continue
        return True
    raise SegmentConflict(name)
