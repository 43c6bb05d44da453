"""``POST /v1/touchpoints``: record one touchpoint or a batch.

Ingest policy: a request is one touchpoint (a JSON object) or a batch (a JSON array of at
most ``PEAKEND_INGEST_MAX_BATCH``). A batch is atomic: if any item is invalid, nothing is
recorded and the 422 lists every refused field of every bad item, so the client fixes and
re-sends the batch as it was (re-sending accepted items is harmless: ingest is idempotent
by ``event_id``). 202 is answered only once the touchpoints are durable in the event store.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from api.auth import Ingester, take_ingest
from api.deps import PlatformDep
from api.schemas import IngestAccepted, IngestRefused, ItemError, RecordedOut
from domain.idempotency import Outcome, conflict_error
from domain.touchpoints import (
    InvalidTouchpoint,
    MalformedJson,
    TouchpointIn,
    loads_json,
    parse_touchpoint,
    printable,
)
from infra.bootstrap import Platform

router = APIRouter(prefix="/v1", tags=["touchpoints"])
log = logging.getLogger(__name__)


class Refused(Exception):
    """A request refused before anything was recorded."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: list[ItemError],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.errors = status, detail, errors
        self.headers = headers or {}


def _body_error(detail: str) -> list[ItemError]:
    return [ItemError(index=None, field="body", message=detail)]


async def _read_body(request: Request, limit: int) -> bytes:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        given = printable(media_type, 60) or "none"
        detail = f"the body must be sent as Content-Type: application/json (got {given})"
        raise Refused(415, detail, [ItemError(index=None, field="content-type", message=detail)])
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        detail = f"the body is {declared} bytes; at most {limit} are accepted"
        raise Refused(413, detail, _body_error(detail))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            detail = f"the body exceeds {limit} bytes"
            raise Refused(413, detail, _body_error(detail))
    return bytes(body)


def _parse_batch(raw: Any, platform: Platform) -> list[TouchpointIn]:
    settings = platform.settings
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise Refused(422, "an empty batch", _body_error("a batch holds at least one touchpoint"))
    if len(items) > settings.ingest_max_batch:
        detail = f"a batch holds at most {settings.ingest_max_batch} touchpoints, got {len(items)}"
        raise Refused(413, detail, _body_error(detail))
    now = datetime.now(UTC)
    touchpoints: list[TouchpointIn] = []
    errors: list[ItemError] = []
    for index, item in enumerate(items):
        try:
            touchpoints.append(
                parse_touchpoint(
                    item,
                    now=now,
                    max_future_skew=settings.max_future_skew,
                    earliest=settings.earliest_occurred_at,
                    phone_region=settings.phone_default_region,
                    identifier_kinds=settings.identifier_kinds,
                )
            )
        except InvalidTouchpoint as refusal:
            errors.extend(
                ItemError(
                    index=index,
                    event_id=refusal.event_id,
                    field=e.field,
                    message=e.message,
                )
                for e in refusal.errors
            )
    if errors:
        bad = len({e.index for e in errors})
        raise Refused(
            422, f"{bad} of {len(items)} touchpoints are invalid; nothing was recorded", errors
        )
    return touchpoints


@router.post(
    "/touchpoints",
    status_code=202,
    response_model=IngestAccepted,
    responses={
        400: {
            "model": IngestRefused,
            "description": "the body is not strict JSON (NaN, duplicate keys, too deep...)",
        },
        413: {"model": IngestRefused, "description": "body or batch too large"},
        415: {"model": IngestRefused, "description": "Content-Type is not application/json"},
        503: {
            "model": IngestRefused,
            "description": "not durable (event store or Kafka unavailable): nothing to fix, retry",
        },
        409: {
            "model": IngestRefused,
            "description": "an event_id already recorded with other content (the fields "
            "that differ are named); nothing was recorded",
        },
        422: {"model": IngestRefused, "description": "invalid touchpoints, field by field"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/TouchpointIn"},
                            {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/TouchpointIn"},
                                "minItems": 1,
                            },
                        ]
                    }
                }
            },
        }
    },
    summary="Record one touchpoint or a batch",
)
async def ingest(caller: Ingester, request: Request, platform: PlatformDep) -> IngestAccepted:
    body = await _read_body(request, platform.settings.ingest_max_body_bytes)
    try:
        raw = loads_json(body)
    except MalformedJson as error:
        detail = f"malformed JSON: {error}"
        raise Refused(400, detail, _body_error(detail)) from None
    touchpoints = _parse_batch(raw, platform)
    take_ingest(request, caller, len(touchpoints))
    settings = platform.settings
    try:
        outcomes = await asyncio.wait_for(
            # Shielded: a timeout answers 503 but must not cancel the submission, which
            # the recorder may still make durable (a retry is then a duplicate).
            asyncio.shield(asyncio.wrap_future(platform.driver.submit(touchpoints))),
            timeout=settings.database_timeout_seconds,
        )
    except Exception as error:  # not known to be durable: the client retries (idempotent)
        log.warning(
            "ingest of %d touchpoints not durable: %s",
            len(touchpoints),
            type(error).__name__,
            extra={"correlation_id": request.scope.get("state", {}).get("correlation_id")},
        )
        detail = "not recorded: the event store is unavailable or busy; retry later"
        raise Refused(
            503,
            detail,
            _body_error(detail),
            headers={"Retry-After": str(settings.retry_after_seconds)},
        ) from error
    conflicts = [
        ItemError(index=index, event_id=o.event_id, **conflict_error(o))
        for index, o in enumerate(outcomes)
        if o.outcome is Outcome.CONFLICT
    ]
    if conflicts:
        raise Refused(
            409,
            f"{len(conflicts)} of {len(outcomes)} touchpoints reuse an event_id recorded "
            "with other content; nothing was recorded",
            conflicts,
        )
    return IngestAccepted(
        accepted=len(outcomes),
        duplicates=sum(o.duplicate is True for o in outcomes),
        recorded=[
            RecordedOut(
                event_id=o.event_id,
                customer_id=o.customer_id,
                outcome=o.outcome.value,
                duplicate=o.duplicate,
            )
            for o in outcomes
        ],
    )
