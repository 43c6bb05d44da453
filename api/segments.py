"""``/v1/segments``: rule-based segments over every customer's profile and measures.

A definition is an event (``domain.segments.Segment``); membership is maintained by the
projectors as customers change (``projections.maintained``), and a new or changed
definition reaches every customer within the scheduler's next ticks (``pending`` says
how many are left). Entries and exits are changes in the feed (``/v1/changes``,
``segment_entered`` / ``segment_left``) and ``/{name}/changes`` pages them. A rule is
checked before it is recorded (``domain.segments.check_rule``): a recorded rule
evaluates on any customer. Errors, 404 and 422, all have FastAPI's validation shape
(``SegmentErrorOut``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, field_validator

from api.auth import OPERATE, READ
from api.deps import PlatformDep
from api.schemas import (
    SegmentChangesOut,
    SegmentDefinedOut,
    SegmentErrorOut,
    SegmentMembersOut,
    SegmentOut,
)
from domain import segments
from infra import segments as segment_service
from projections import maintained

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": SegmentErrorOut, "description": "no segment of that name"}
}
router = APIRouter(
    prefix="/v1/segments",
    tags=["segments"],
    responses={422: {"model": SegmentErrorOut, "description": "refused, naming where and why"}},
)


class SegmentIn(BaseModel):
    name: str = Field(pattern=segments.NAME.pattern, description="lower-case, a-z 0-9 _ -")
    rule: dict[str, Any] = Field(
        description="see domain/segments.py: conditions on fields "
        "of the segment document, with all/any/not"
    )
    description: str | None = Field(default=None, max_length=1000)

    @field_validator("description")
    @classmethod
    def _storable(cls, text: str | None) -> str | None:
        # PostgreSQL text holds neither NUL nor a lone surrogate: refuse, not a 500.
        if text is not None:
            if "\x00" in text:
                raise ValueError("a NUL character cannot be stored")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("not valid Unicode text (a lone surrogate)") from None
        return text


def _loc(path: str) -> list[str | int]:
    """``rule.all.0.op`` as a validation location: ``["body", "rule", "all", 0, "op"]``."""
    return ["body", *(int(p) if p.isdigit() else p for p in path.split("."))]


def _refused(path: str, message: str, kind: str) -> RequestValidationError:
    return RequestValidationError([{"loc": _loc(path), "msg": message, "type": kind}])


def _not_found(name: str) -> HTTPException:
    detail = [{"loc": ["path", "name"], "msg": f"no segment {name!r}", "type": "not_found"}]
    return HTTPException(404, detail)


@router.post("", status_code=201, dependencies=[OPERATE])
def define_segment(platform: PlatformDep, segment: SegmentIn) -> SegmentDefinedOut:
    """Define (or redefine) a segment. A refused rule is not recorded; a recorded one
    is evaluated on every customer by the projectors (``GET /v1/segments``: ``pending``)."""
    try:
        defined = segment_service.define(platform, segment.name, segment.rule, segment.description)
    except segments.InvalidRule as error:
        raise _refused(error.path, error.message, "invalid_rule") from None
    return SegmentDefinedOut(name=defined.name, created=defined.created, version=defined.version)


@router.get("", dependencies=[READ])
def list_segments(platform: PlatformDep) -> list[SegmentOut]:
    return [SegmentOut(**d) for d in maintained.segment_definitions(platform.store)]


def _known(platform: PlatformDep, name: str) -> None:
    if name not in {d["name"] for d in maintained.segment_definitions(platform.store)}:
        raise _not_found(name)


@router.delete(
    "/{name}",
    status_code=204,
    response_class=Response,
    responses=_NOT_FOUND,
    dependencies=[OPERATE],
)
def delete_segment(platform: PlatformDep, name: str) -> Response:
    """Delete the segment: its members leave it (each a ``segment_left`` change)."""
    if not segment_service.delete(platform, name):
        raise _not_found(name)
    return Response(status_code=204)


@router.get("/{name}/members", responses=_NOT_FOUND, dependencies=[READ])
def segment_members(
    platform: PlatformDep, name: str, limit: Annotated[int, Query(ge=1, le=100_000)] = 1000
) -> SegmentMembersOut:
    """The segment's members as maintained, each with when it entered."""
    _known(platform, name)
    found = maintained.segment_members(platform.store, name, limit)
    return SegmentMembersOut.model_validate(
        {"segment": name, "count": len(found), "members": found}
    )


@router.get("/{name}/changes", responses=_NOT_FOUND, dependencies=[READ])
def segment_changes(
    platform: PlatformDep, name: str, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
) -> SegmentChangesOut:
    """Who entered and who left since the segment was (last) created, newest first: the
    hook for actions."""
    _known(platform, name)
    found = maintained.segment_history(platform.store, name, limit)
    return SegmentChangesOut.model_validate({"segment": name, "changes": found})
