"""``/v1/segments``: rule-based segments, evaluated against every customer's profile and
measures; each evaluation records who entered and who left (``/changes``), so that
actions can follow later. Segments are evaluated when asked and every
``PEAKEND_SEGMENT_EVALUATE_SECONDS`` by a background evaluator."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from api.analytics import POPULATION
from api.deps import PlatformDep
from domain import segments, value
from domain.metrics import nps_category
from infra.bootstrap import Platform
from projections import analytics, customer, loyalty, segment_store
from projections.base import utc_iso

log = logging.getLogger(__name__)


router = APIRouter(prefix="/v1/segments", tags=["segments"])


class SegmentIn(BaseModel):
    name: str = Field(pattern=segments.NAME.pattern, description="lower-case, a-z 0-9 _ -")
    rule: dict[str, Any] = Field(
        description="see domain/segments.py: conditions on fields "
        "of the segment document, with all/any/not"
    )
    description: str | None = None


def segment_documents(platform: Platform, as_of: datetime) -> dict[str, dict[str, Any]]:
    """Every customer known by ``as_of``, as the flat document segment rules read."""
    s = platform.settings
    population = POPULATION.of(platform, as_of)
    loyalty_docs = platform.store.dump("loyalty")
    until = utc_iso(as_of)
    documents = {}
    for customer_id, state in platform.store.dump("customer").items():
        if state["first_seen"] > until:
            continue
        orders = analytics.orders_until(state["orders"], until=until, currency=s.currency)
        answered = analytics.latest_answers(state, until=until)
        latest = {metric: answer["value"] for metric, answer in answered.items()}
        stage, _ = analytics.lifecycle(orders, answered, as_of=as_of)
        rfm = population["rfm"].get(customer_id)
        status = loyalty.loyalty_view(
            loyalty_docs.get(customer_id),
            as_of=as_of,
            nps_high=s.loyalty_nps_high,
            csat_high=s.loyalty_csat_high,
            repeat_purchases=s.loyalty_repeat_purchases,
            window=timedelta(days=s.loyalty_window_days),
        )
        documents[customer_id] = {
            "customer_id": customer_id,
            "first_seen": state["first_seen"],
            "last_seen": state["last_seen"],
            "touchpoints_total": state["touchpoints_total"],
            "counts_by_type": state["counts_by_type"],
            "counts_by_channel": state["counts_by_channel"],
            "total_spend": float(customer.total_spend(state, s.currency)),
            "orders": len(orders),
            "open_complaints": len(customer.open_complaints(state)),
            "value_tier": str(population["tiers"].get(customer_id, value.Tier.PROSPECT)),
            "value_in_window": float(population["values"].get(customer_id, Decimal(0))),
            "rfm_segment": str(rfm.segment) if rfm else None,
            "r": rfm.r if rfm else None,
            "f": rfm.f if rfm else None,
            "m": rfm.m if rfm else None,
            "lifecycle": str(stage),
            "loyalty_status": status["status"],
            "nps": latest.get("nps"),
            "nps_category": str(nps_category(latest["nps"])) if "nps" in latest else None,
            "csat": latest.get("csat"),
            "traits": customer.traits(state),
        }
    return documents


def evaluate(platform: Platform, only: str | None = None) -> dict[str, dict[str, int]]:
    """Evaluate every segment (or one) now; record entries and exits."""
    now = datetime.now(UTC)
    defined = [
        d for d in segment_store.definitions(platform.store) if only is None or d["name"] == only
    ]
    if not defined:
        return {}
    documents = segment_documents(platform, now)
    outcome = {}
    for definition in defined:
        members = {c for c, doc in documents.items() if segments.matches(definition["rule"], doc)}
        entered, left = segment_store.record_membership(
            platform.store, definition["name"], members, now
        )
        outcome[definition["name"]] = {
            "members": len(members),
            "entered": len(entered),
            "left": len(left),
        }
    return outcome


@router.post("", status_code=201)
def define_segment(platform: PlatformDep, segment: SegmentIn) -> dict[str, Any]:
    """Define (or redefine) a segment and evaluate it at once."""
    try:
        segments.check_rule(segment.rule)
    except segments.InvalidRule as error:
        raise HTTPException(422, {"field": error.path, "message": error.message}) from None
    created = segment_store.define(platform.store, segment.name, segment.rule, segment.description)
    return {
        "name": segment.name,
        "created": created,
        **evaluate(platform, segment.name)[segment.name],
    }


@router.get("")
def list_segments(platform: PlatformDep) -> list[dict[str, Any]]:
    return segment_store.definitions(platform.store)


@router.post("/evaluate")
def evaluate_segments(platform: PlatformDep) -> dict[str, Any]:
    """Evaluate every segment now."""
    return {"evaluated_at": utc_iso(datetime.now(UTC)), "segments": evaluate(platform)}


def _known(platform: Platform, name: str) -> None:
    if name not in {d["name"] for d in segment_store.definitions(platform.store)}:
        raise HTTPException(404, f"no segment {name!r}")


@router.get("/{name}/members")
def segment_members(
    platform: PlatformDep, name: str, evaluate_now: Annotated[bool, Query(alias="evaluate")] = True
) -> dict[str, Any]:
    """The segment's members (evaluated first, unless ``evaluate=false``)."""
    _known(platform, name)
    if evaluate_now:
        evaluate(platform, name)
    found = segment_store.members(platform.store, name)
    return {"segment": name, "count": len(found), "members": found}


@router.get("/{name}/changes")
def segment_changes(
    platform: PlatformDep, name: str, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
) -> dict[str, Any]:
    """Who entered and who left, newest first: the hook for actions."""
    _known(platform, name)
    return {"segment": name, "changes": segment_store.changes(platform.store, name, limit)}
