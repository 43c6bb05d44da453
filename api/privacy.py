"""A customer's rights over their data, over HTTP: access (everything stored about them,
as one document) and erasure (the right to be forgotten, by crypto-shredding).

Both need the ``admin`` scope and are audited: they are answers to a person's request,
made by whoever handles such requests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from api.auth import Admin
from api.deps import PlatformDep
from api.identity import MOVED, AnsweringCustomer
from api.schemas import CustomerOut, JourneyOut, MergeOut, NotFoundOut, TimelineItemOut
from infra import audit, privacy
from infra import customers as views
from projections import maintained

router = APIRouter(prefix="/v1")


class SegmentMembershipOut(BaseModel):
    segment: str
    since: datetime


class ExportOut(BaseModel):
    """Everything Peakend stores about one customer (and the customers merged into it)."""

    customer_id: str
    exported_at: datetime
    profile: CustomerOut = Field(description="the customer as GET /v1/customers/{id} answers")
    streams: list[str] = Field(description="the customer ids merged into this one, and itself")
    merges: list[MergeOut]
    touchpoints: list[TimelineItemOut] = Field(
        description="every touchpoint, decrypted, in event-time order"
    )
    journeys: list[JourneyOut]
    segments: list[SegmentMembershipOut]


class ErasedOut(BaseModel):
    customer_id: str
    streams: list[str] = Field(description="the customers erased: this one and those merged in")
    erased_at: datetime
    already_erased: bool = Field(description="true: it was erased before; nothing was done")
    reject_lines_removed: int = Field(description="import reject lines that named the customer")


@router.get(
    "/customers/{customer_id}/export",
    response_model=ExportOut,
    responses={404: {"model": NotFoundOut}, **MOVED},
)
def export_customer(caller: Admin, customer_id: AnsweringCustomer, platform: PlatformDep) -> Any:
    """Right of access: the profile, identifiers, every touchpoint (decrypted), consents,
    measures, journeys, segments and merges of the customer, as one JSON document."""
    now = datetime.now(UTC)
    profile = views.customer_view(platform, customer_id, None)
    if profile is None:
        raise HTTPException(404, f"no customer {customer_id!r}")
    touchpoints = platform.records.touchpoints_of(customer_id)
    journeys = platform.store.find("journey", "customer_id", customer_id)
    audit.record(platform.store, caller.name, "export", customer_id)
    return {
        "customer_id": customer_id,
        "exported_at": now,
        "profile": profile,
        "streams": platform.records.identity.members(customer_id),
        "merges": profile["merges"],
        "touchpoints": [views.timeline_item(t) for t in touchpoints],
        "journeys": [
            views.journey_view(platform, j, now)
            for j in sorted(journeys, key=lambda j: j["started_at"])
        ],
        "segments": maintained.segments_of(platform.store, customer_id),
    }


@router.delete(
    "/customers/{customer_id}",
    status_code=202,
    response_model=ErasedOut,
    responses={404: {"model": NotFoundOut}, **MOVED},
)
def erase_customer(caller: Admin, customer_id: AnsweringCustomer, platform: PlatformDep) -> Any:
    """Right to be forgotten: the customer's encryption keys (and those of every customer
    merged into it) are destroyed, the identity index forgets their identifiers, import
    reject files lose the lines naming them, and the read models are refolded without
    their personal data within seconds (202). Counts, revenue and scores stay. A new
    touchpoint with the same e-mail starts a new customer."""
    if platform.records.identity.locate(customer_id) is None:
        raise HTTPException(404, f"no customer {customer_id!r}")
    erasure = privacy.erase(platform, customer_id)
    audit.record(
        platform.store,
        caller.name,
        "erase",
        customer_id,
        streams=len(erasure.streams),
        already_erased=erasure.already_erased,
    )
    return erasure
