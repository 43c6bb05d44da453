"""``/v1/changes``: the change feed. Every change of a derived fact (a tier, a lifecycle
stage, an NPS category, a loyalty quadrant, P(alive) crossing its threshold, a complaint
opened or closed, a journey closed, a merge, split or erasure), oldest first, with the
values before and after, its cause and a position to resume from."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import READ
from api.deps import NO_NUL, PlatformDep, storable_text
from api.schemas import ChangesOut, ErrorOut
from projections import maintained
from projections.measures import ChangeKind

router = APIRouter(prefix="/v1/changes", tags=["changes"])

MAX_POSITION = 2**63 - 1


@router.get(
    "", response_model=ChangesOut, responses={422: {"model": ErrorOut}}, dependencies=[READ]
)
def get_changes(
    platform: PlatformDep,
    after: Annotated[int, Query(ge=0, le=MAX_POSITION, description="the last position seen")] = 0,
    kind: Annotated[
        list[ChangeKind] | None, Query(description="only these kinds (repeat for several)")
    ] = None,
    customer: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="only this customer's",
            json_schema_extra={"pattern": NO_NUL},
        ),
        storable_text("customer"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ChangesOut:
    """A page of the change feed after ``after``; follow it by passing ``next_after``
    back. Positions only grow, and a change is visible once its transaction committed
    (positions are taken in commit order)."""
    found = maintained.change_page(
        platform.store,
        after=after,
        limit=limit,
        kinds=[str(k) for k in kind or ()],
        customer_id=customer,
    )
    return ChangesOut.model_validate(
        {"changes": found, "next_after": found[-1]["position"] if found else after}
    )
