"""``/v1/alerts``: what the alert rules raised (``projections.alerts``), operators'
acknowledgements and resolutions, and a Server-Sent Events stream of every transition.

The stream's event ids are change-feed positions: a client that reconnects with
``Last-Event-ID`` (or ``?after=``) resumes after the last transition it saw, with
nothing lost and nothing twice. One reader per process follows the feed for every
stream (``infra.alerts.AlertTail``); a stream behind it reads the feed on its own, so a
slow client only slows itself. A comment line every ``PEAKEND_SSE_HEARTBEAT_SECONDS``
keeps proxies from closing a quiet one.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from api.auth import READ, Operator
from api.deps import NO_NUL, PlatformDep, Since, storable_text
from api.schemas import (
    NOT_FOUND,
    ActedOut,
    ActionIn,
    AlertOut,
    AlertRuleName,
    AlertSeverity,
    AlertsOut,
    AlertStatus,
    BacktestIn,
    BacktestOut,
    ErrorOut,
)
from infra import alerts as service
from infra.alerts import AlertTail
from projections.alerts import Rule, delivered

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])

MAX_POSITION = 2**63 - 1
Position = Annotated[int, Query(ge=0, le=MAX_POSITION)]


@router.get("", response_model=AlertsOut, responses={422: {"model": ErrorOut}}, dependencies=[READ])
def get_alerts(
    platform: PlatformDep,
    status: Annotated[list[AlertStatus] | None, Query(description="repeat for several")] = None,
    rule: Annotated[list[AlertRuleName] | None, Query(description="repeat for several")] = None,
    severity: Annotated[list[AlertSeverity] | None, Query(description="repeat for several")] = None,
    tier: Annotated[
        list[str] | None, Query(max_length=20, description="the customer's value tier")
    ] = None,
    customer: Annotated[
        str | None,
        Query(min_length=1, max_length=200, json_schema_extra={"pattern": NO_NUL}),
        storable_text("customer"),
    ] = None,
    subject: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="what it is about: a customer, complaint, journey or channel id",
            json_schema_extra={"pattern": NO_NUL},
        ),
        storable_text("subject"),
    ] = None,
    since: Since = None,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_POSITION, description="next_before of the last page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AlertsOut:
    """Alerts, the most recently changed first, filtered; page with ``before``."""
    found = service.alert_page(
        platform,
        before=before,
        limit=limit,
        status=[str(s) for s in status or ()],
        rule=[str(r) for r in rule or ()],
        severity=[str(s) for s in severity or ()],
        tier=tier or (),
        customer_id=customer,
        subject=subject,
        since=since,
    )
    return AlertsOut.model_validate(
        {
            "alerts": found,
            "next_before": found[-1]["position"] if len(found) == limit else None,
        }
    )


async def _stream(
    request: Request, tail: AlertTail, after: int, every: bool
) -> AsyncIterator[bytes]:
    heartbeat = request.app.state.platform.settings.sse_heartbeat_seconds
    last_sent = time.monotonic()
    yield b"retry: 2000\n\n"
    async with tail.open():
        while not await request.is_disconnected():
            wait = max(0.0, last_sent + heartbeat - time.monotonic())
            for change in await tail.transitions(after, wait=min(wait, 1.0)):
                after = change["position"]
                if not every and not delivered(change):
                    continue
                body = json.dumps(change, default=str, separators=(",", ":"))
                yield f"id: {after}\nevent: {change['kind']}\ndata: {body}\n\n".encode()
                last_sent = time.monotonic()
            if time.monotonic() - last_sent >= heartbeat:
                yield b": heartbeat\n\n"
                last_sent = time.monotonic()


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 422: {"model": ErrorOut}},
    dependencies=[READ],
)
async def stream_alerts(
    request: Request,
    platform: PlatformDep,
    after: Position | None = None,
    last_event_id: Annotated[
        str | None, Header(max_length=20, pattern=r"^[0-9]+$", description="resume after it")
    ] = None,
    include_silenced: Annotated[
        bool, Query(description="also alerts silenced or held back for consent")
    ] = False,
) -> StreamingResponse:
    """Every alert transition (``alert_opened``, ``alert_updated``,
    ``alert_acknowledged``, ``alert_resolved``) as Server-Sent Events, from after
    ``Last-Event-ID`` (or ``after``; neither: from now on)."""
    if last_event_id is not None:
        start = int(last_event_id)
    elif after is not None:
        start = after
    else:
        start = await run_in_threadpool(service.stream_head, platform)
    return StreamingResponse(
        _stream(request, request.app.state.alert_tail, start, include_silenced),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/{alert_id}",
    response_model=AlertOut,
    responses={**NOT_FOUND, 422: {"model": ErrorOut}},
    dependencies=[READ],
)
def get_alert(
    platform: PlatformDep,
    alert_id: Annotated[str, storable_text("alert_id")],
) -> AlertOut:
    found = service.alert_of(platform, alert_id)
    if found is None:
        raise HTTPException(404, f"no alert {alert_id!r}")
    return AlertOut.model_validate(found)


def _act(platform: Any, alert_id: str, action: Any, by: str, note: str | None) -> ActedOut:
    try:
        acted = service.act(platform, alert_id, action, by, note)
    except service.AlertNotFound:
        raise HTTPException(404, f"no alert {alert_id!r}") from None
    except service.AlertClosed:
        raise HTTPException(409, f"alert {alert_id!r} is resolved already") from None
    return ActedOut(alert_id=acted.alert_id, action=acted.action, action_id=acted.action_id)


ACT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **NOT_FOUND,
    409: {"model": ErrorOut, "description": "the alert is resolved already"},
    422: {"model": ErrorOut},
}


@router.post(
    "/{alert_id}/acknowledge", status_code=202, response_model=ActedOut, responses=ACT_RESPONSES
)
def acknowledge_alert(
    platform: PlatformDep,
    key: Operator,
    alert_id: Annotated[str, storable_text("alert_id")],
    body: Annotated[ActionIn | None, Body()] = None,
) -> ActedOut:
    """Acknowledge the alert (scope ``operate``): recorded, and applied by the
    projectors in log order; the alert then names the key that acknowledged it."""
    return _act(platform, alert_id, "acknowledge", key.name, body.note if body else None)


@router.post(
    "/{alert_id}/resolve", status_code=202, response_model=ActedOut, responses=ACT_RESPONSES
)
def resolve_alert(
    platform: PlatformDep,
    key: Operator,
    alert_id: Annotated[str, storable_text("alert_id")],
    body: Annotated[ActionIn | None, Body()] = None,
) -> ActedOut:
    """Resolve the alert by hand (scope ``operate``). While its condition still holds,
    no new alert of its rule and subject opens; once it clears, one may."""
    return _act(platform, alert_id, "resolve", key.name, body.note if body else None)


@router.post(
    "/rules/{rule}/backtest",
    response_model=BacktestOut,
    response_model_by_alias=True,
    responses={422: {"model": ErrorOut}},
)
def backtest_rule(
    platform: PlatformDep, _: Operator, rule: AlertRuleName, candidate: BacktestIn
) -> dict[str, Any]:
    """What the rule, with these settings, would have raised over [from, to) of the
    recorded history, when, for whom and how many a day (scope ``operate``): the history
    replayed as the projectors derive it, nothing written or delivered. A pass over the
    event store: seconds for a large history. Refused (422): ``to`` not after ``from``
    or more than 366 days after it, a setting the rule does not have, or capacity with
    no channel to watch."""
    try:
        return service.backtest(
            platform, Rule(rule), candidate.settings, candidate.from_, candidate.to
        )
    except ValueError as why:
        said = str(why)
        where = (
            ["body", "to"]
            if said.startswith("to:")
            else ["path", "rule"]
            if said.startswith("rule:")
            else ["body", "settings"]
        )
        raise HTTPException(422, [{"loc": where, "msg": said, "type": "value_error"}]) from None
