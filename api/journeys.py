"""``/v1/journeys/{id}``: one journey, its emotion curve and how it will be remembered."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException

from api.auth import READ
from api.deps import AsOf, PlatformDep
from api.schemas import NOT_FOUND, JourneyOut
from infra import customers as views

router = APIRouter(prefix="/v1", tags=["journeys"])


@router.get(
    "/journeys/{journey_id}", response_model=JourneyOut, responses=NOT_FOUND, dependencies=[READ]
)
def get_journey(journey_id: str, platform: PlatformDep, as_of: AsOf = None) -> dict[str, Any]:
    state = platform.store.get("journey", journey_id)
    if state is None:
        raise HTTPException(404, f"no journey {journey_id!r}")
    return views.journey_answer(platform, state, as_of or datetime.now(UTC))
