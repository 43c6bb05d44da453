"""``/v1/customers/{id}``: a customer across every channel, its timeline and its
journeys; read from the maintained documents (``infra.customers``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from api.auth import READ
from api.deps import AsOf, PlatformDep
from api.identity import MOVED, AnsweringCustomer
from api.schemas import NOT_FOUND, CustomerOut, JourneyOut, TimelineOut
from infra import customers as views

router = APIRouter(prefix="/v1", tags=["customers"])
MAX_OFFSET = 1_000_000_000  # PostgreSQL takes a bigint: far past any timeline, never past it


@router.get(
    "/customers/{customer_id}",
    response_model=CustomerOut,
    responses={**NOT_FOUND, **MOVED},
    dependencies=[READ],
)
def get_customer(
    customer_id: AnsweringCustomer, platform: PlatformDep, as_of: AsOf = None
) -> dict[str, Any]:
    """A customer across every channel: a customer id, or the source's own customer id
    (``customer.id`` in touchpoints) of the customer holding it."""
    view = views.customer_view(platform, customer_id, as_of)
    if view is None:
        raise HTTPException(404, f"no customer {customer_id!r}")
    return view


@router.get(
    "/customers/{customer_id}/timeline",
    response_model=TimelineOut,
    responses={**NOT_FOUND, **MOVED},
    dependencies=[READ],
)
def get_timeline(
    customer_id: AnsweringCustomer,
    platform: PlatformDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
) -> dict[str, Any]:
    """Every touchpoint of the customer, read from the event store (the system of record),
    in event-time order (``desc``: newest first), paged in the database."""
    total, page = platform.records.timeline(
        customer_id, limit=limit, offset=offset, newest_first=order == "desc"
    )
    if total == 0:
        raise HTTPException(404, f"no customer {customer_id!r}")
    return {
        "customer_id": customer_id,
        "total": total,
        "offset": offset,
        "limit": limit,
        "next_offset": offset + limit if offset + limit < total else None,
        "items": [views.timeline_item(e) for e in page],
    }


@router.get(
    "/customers/{customer_id}/journeys",
    response_model=list[JourneyOut],
    responses={**NOT_FOUND, **MOVED},
    dependencies=[READ],
)
def get_customer_journeys(
    customer_id: AnsweringCustomer, platform: PlatformDep, as_of: AsOf = None
) -> list[dict[str, Any]]:
    now = as_of or datetime.now(UTC)
    found = platform.store.find("journey", "customer_id", customer_id)
    if not found and platform.store.get("customer", customer_id) is None:
        raise HTTPException(404, f"no customer {customer_id!r}")
    states = sorted(found, key=lambda s: s["started_at"], reverse=True)
    return [views.journey_view(platform, state, now) for state in states]
