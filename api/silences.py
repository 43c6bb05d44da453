"""``/v1/silences``: matchers (rule, tier, channel, customer) with an end; while a
silence holds, the transitions of the alerts it matches (those open already included)
are recorded, marked ``silenced_by``, and not delivered."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.auth import READ, Operator
from api.deps import PlatformDep, storable_text
from api.schemas import (
    NOT_FOUND,
    ErrorOut,
    SilenceCreatedOut,
    SilenceExpiredOut,
    SilenceIn,
    SilencesOut,
)
from infra import alerts as service

router = APIRouter(prefix="/v1/silences", tags=["alerts"])


@router.post(
    "", status_code=201, response_model=SilenceCreatedOut, responses={422: {"model": ErrorOut}}
)
def create_silence(platform: PlatformDep, key: Operator, silence: SilenceIn) -> SilenceCreatedOut:
    """Silence the alerts the matcher holds, from now until ``ends_at`` (scope
    ``operate``). Refused (422): a matcher naming no field, or an ``ends_at`` not after
    now."""
    matcher = silence.matcher.model_dump(exclude_none=True)
    try:
        created = service.create_silence(
            platform, matcher, silence.ends_at, key.name, silence.comment
        )
    except ValueError as why:
        field = str(why).split(":", 1)[0]
        raise HTTPException(
            422, [{"loc": ["body", field], "msg": str(why), "type": "value_error"}]
        ) from None
    return SilenceCreatedOut(id=created)


@router.get("", response_model=SilencesOut, dependencies=[READ])
def get_silences(
    platform: PlatformDep,
    active: Annotated[bool, Query(description="only those holding now")] = False,
) -> SilencesOut:
    return SilencesOut.model_validate({"silences": service.silences(platform, active=active)})


@router.post(
    "/{silence_id}/expire",
    status_code=202,
    response_model=SilenceExpiredOut,
    responses={**NOT_FOUND, 409: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
def expire_silence(
    platform: PlatformDep,
    key: Operator,
    silence_id: Annotated[str, storable_text("silence_id")],
) -> SilenceExpiredOut:
    """End the silence now (scope ``operate``); alerts opened from then on are
    delivered."""
    try:
        expired = service.expire_silence(platform, silence_id, key.name)
    except service.SilenceNotFound:
        raise HTTPException(404, f"no silence {silence_id!r}") from None
    if not expired:
        raise HTTPException(409, f"silence {silence_id!r} has ended already")
    return SilenceExpiredOut(id=silence_id, status="expired")
