"""``/v1/segments``: rule-based segments, evaluated against every customer's profile and
measures; each evaluation records who entered and who left (``/changes``), so that
actions can follow later. Segments are evaluated when asked and every
``PEAKEND_SEGMENT_EVALUATE_SECONDS`` by a background evaluator.

A rule is checked (``domain.segments.check_rule``) and tried on every customer before it
is stored, so a stored rule evaluates; one that fails anyway (stored by an older
version, or a defect) is marked with its error and skipped, and the others go on.
Errors, 404 and 422, all have FastAPI's validation shape (``SegmentErrorOut``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, field_validator

from api.analytics import POPULATION
from api.auth import OPERATE, READ
from api.deps import PlatformDep
from api.schemas import (
    SegmentChangesOut,
    SegmentDefinedOut,
    SegmentErrorOut,
    SegmentEvaluationOut,
    SegmentMembersOut,
    SegmentOut,
    SegmentsEvaluatedOut,
)
from domain import segments, value
from domain.metrics import nps_category
from infra.bootstrap import Platform
from projections import analytics, customer, loyalty, segment_store
from projections.base import utc_iso

log = logging.getLogger(__name__)


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
        # Every order counts, whatever its currency (as on the customer's page).
        orders = analytics.order_history(
            state["orders"], until=until, rates=population["rates"], zone=s.reporting_zone
        )
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
            "total_spend": float(
                customer.total_spend(state, population["rates"], s.reporting_zone)
            ),
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


def _loc(path: str) -> list[str | int]:
    """``rule.all.0.op`` as a validation location: ``["body", "rule", "all", 0, "op"]``."""
    return ["body", *(int(p) if p.isdigit() else p for p in path.split("."))]


def _refused(path: str, message: str, kind: str) -> RequestValidationError:
    return RequestValidationError([{"loc": _loc(path), "msg": message, "type": kind}])


def _not_found(name: str) -> HTTPException:
    detail = [{"loc": ["path", "name"], "msg": f"no segment {name!r}", "type": "not_found"}]
    return HTTPException(404, detail)


def _printable(error: BaseException) -> str:
    """An error as text PostgreSQL can store and a log line can show."""
    text = f"{type(error).__name__}: {error}"[:500]
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _members(rule: dict[str, Any], documents: dict[str, dict[str, Any]]) -> set[str]:
    # Stored rules are checked again: one stored before the checks of today must fail
    # here, visibly, rather than raise inside matches.
    segments.check_rule(rule)
    return {c for c, doc in documents.items() if segments.matches(rule, doc)}


def evaluate(
    platform: Platform, only: str | None = None, *, at: datetime | None = None
) -> dict[str, dict[str, Any]]:
    """Evaluate every segment (or one) as of ``at`` (default now); record entries and
    exits. A segment whose evaluation fails is marked with the error and keeps its
    members; the others go on."""
    now = at or datetime.now(UTC)
    defined = [
        d for d in segment_store.definitions(platform.store) if only is None or d["name"] == only
    ]
    if not defined:
        return {}
    documents = segment_documents(platform, now)
    outcome: dict[str, dict[str, Any]] = {}
    for definition in defined:
        name = definition["name"]
        try:
            members = _members(definition["rule"], documents)
        except Exception as error:  # one segment's failure must not stop the others
            why = _printable(error)
            log.exception("segment %r not evaluated (the others are): %s", name, why)
            segment_store.mark_failed(platform.store, name, why, now)
            outcome[name] = {"members": None, "entered": 0, "left": 0, "error": why}
            continue
        try:
            entered, left = segment_store.record_membership(platform.store, name, members, now)
        except KeyError:  # deleted while it was being evaluated
            continue
        outcome[name] = {"members": len(members), "entered": len(entered), "left": len(left)}
    return outcome


@router.post("", status_code=201, dependencies=[OPERATE])
def define_segment(platform: PlatformDep, segment: SegmentIn) -> SegmentDefinedOut:
    """Define (or redefine) a segment and evaluate it at once. A refused rule is not
    stored: it is checked, then tried on every customer, before anything is written."""
    try:
        segments.check_rule(segment.rule)
    except segments.InvalidRule as error:
        raise _refused(error.path, error.message, "invalid_rule") from None
    now = datetime.now(UTC)
    try:
        members = _members(segment.rule, segment_documents(platform, now))
    except Exception as error:  # a defect: refuse the rule rather than store a failing one
        log.exception("segment %r refused: its rule fails on a customer", segment.name)
        why = f"cannot be evaluated: {_printable(error)}"
        raise _refused("rule", why, "invalid_rule") from None
    created = segment_store.define(platform.store, segment.name, segment.rule, segment.description)
    entered, left = segment_store.record_membership(platform.store, segment.name, members, now)
    return SegmentDefinedOut(
        name=segment.name,
        created=created,
        members=len(members),
        entered=len(entered),
        left=len(left),
    )


@router.get("", dependencies=[READ])
def list_segments(platform: PlatformDep) -> list[SegmentOut]:
    return [SegmentOut(**d) for d in segment_store.definitions(platform.store)]


@router.post("/evaluate", dependencies=[OPERATE])
def evaluate_segments(platform: PlatformDep) -> SegmentsEvaluatedOut:
    """Evaluate every segment now; a failing one is reported with its error."""
    at = datetime.now(UTC)
    outcome = evaluate(platform)
    return SegmentsEvaluatedOut(
        evaluated_at=at,
        segments={name: SegmentEvaluationOut(**o) for name, o in outcome.items()},
    )


def _known(platform: Platform, name: str) -> None:
    if name not in {d["name"] for d in segment_store.definitions(platform.store)}:
        raise _not_found(name)


@router.delete(
    "/{name}",
    status_code=204,
    response_class=Response,
    responses=_NOT_FOUND,
    dependencies=[OPERATE],
)
def delete_segment(platform: PlatformDep, name: str) -> Response:
    """Delete the segment, its members and its history of entries and exits."""
    if not segment_store.delete(platform.store, name):
        raise _not_found(name)
    return Response(status_code=204)


@router.get("/{name}/members", responses=_NOT_FOUND, dependencies=[READ])
def segment_members(
    platform: PlatformDep, name: str, evaluate_now: Annotated[bool, Query(alias="evaluate")] = True
) -> SegmentMembersOut:
    """The segment's members (evaluated first, unless ``evaluate=false``)."""
    _known(platform, name)
    if evaluate_now:
        evaluate(platform, name)
    found = segment_store.members(platform.store, name)
    return SegmentMembersOut.model_validate(
        {"segment": name, "count": len(found), "members": found}
    )


@router.get("/{name}/changes", responses=_NOT_FOUND, dependencies=[READ])
def segment_changes(
    platform: PlatformDep, name: str, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
) -> SegmentChangesOut:
    """Who entered and who left, newest first: the hook for actions."""
    _known(platform, name)
    found = segment_store.changes(platform.store, name, limit)
    return SegmentChangesOut.model_validate({"segment": name, "changes": found})
