"""The FastAPI application. Routes parse, call one platform function, and map the result.

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
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse

from api import admin, changes, health, privacy, views
from api.analytics import router as analytics_router
from api.auth import AUTH_ANSWERS, PUBLIC, READ, Ingester, take_ingest
from api.auth import install as install_auth
from api.browsers import install as install_browsers
from api.deps import AsOf, PlatformDep
from api.errors import ErrorBoundary, install_echo_safe_errors
from api.identity import MOVED, AnsweringCustomer, Moved, moved_response
from api.identity import router as identity_router
from api.metrics import install as install_metrics
from api.schemas import (
    BoundaryErrorOut,
    CustomerOut,
    HealthOut,
    IngestAccepted,
    IngestRefused,
    ItemError,
    JourneyOut,
    NotFoundOut,
    RecordedOut,
    TimelineOut,
)
from api.segments import router as segments_router
from domain.idempotency import Outcome, conflict_error
from domain.touchpoints import (
    InvalidTouchpoint,
    MalformedJson,
    TouchpointIn,
    loads_json,
    parse_touchpoint,
    printable,
    touchpoint_schemas,
)
from infra.bootstrap import Platform


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


router = APIRouter(prefix="/v1")
log = logging.getLogger(__name__)
HEALTH_BUDGET_S = 0.8
MAX_OFFSET = 1_000_000_000  # PostgreSQL takes a bigint: far past any timeline, never past it
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": NotFoundOut, "description": "no such customer or journey"}
}
BOUNDARY_ANSWERS: dict[int | str, dict[str, Any]] = {
    500: {"model": BoundaryErrorOut, "description": "unexpected: quote the correlation id"},
    503: {
        "model": BoundaryErrorOut,
        "description": "the database is unavailable or at capacity: retry after Retry-After",
    },
}

_REF_TEMPLATE = "#/components/schemas/{model}"


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


@router.get(
    "/journeys/{journey_id}", response_model=JourneyOut, responses=NOT_FOUND, dependencies=[READ]
)
def get_journey(journey_id: str, platform: PlatformDep, as_of: AsOf = None) -> dict[str, Any]:
    state = platform.store.get("journey", journey_id)
    if state is None:
        raise HTTPException(404, f"no journey {journey_id!r}")
    return views.journey_answer(platform, state, as_of or datetime.now(UTC))


@router.get(
    "/healthz",
    response_model=HealthOut,
    responses={503: {"model": HealthOut}},
    dependencies=[PUBLIC],
)
async def healthz(platform: PlatformDep) -> Any:
    """The platform's health within a second: 503 naming the failing dependency (never
    its host, port or database name) when the database does not answer in time or
    projecting is stuck; quarantined documents are reported, and do not fail it."""
    report = await health.check(platform, timeout=HEALTH_BUDGET_S)
    return JSONResponse(report, status_code=200 if report["status"] != "unavailable" else 503)


def create_app(platform: Platform) -> FastAPI:
    """The API of a platform; refused (``AccessNotConfigured``) outside development
    when no API key is active, or when the development key is."""
    platform.keys.check_usable(platform.settings.environment)

    app = FastAPI(
        title="Peakend",
        version="1",
        description="Event-sourced customer-experience platform: record touchpoints, read "
        "live projections of customers and journeys.",
        docs_url=None,  # served by api.browsers, from vendored assets
        redoc_url=None,
    )
    app.state.platform = platform
    app.add_middleware(ErrorBoundary, retry_after=platform.settings.retry_after_seconds)
    # Runs before authentication (added after it), inside the ingest counters.
    install_browsers(app, platform.settings, docs_dependencies=[PUBLIC])
    # What any route may answer besides its own: the error boundary's answers.
    routers = (
        router,
        identity_router,
        analytics_router,
        segments_router,
        changes.router,
        privacy.router,
    )
    for routes in (*routers, admin.router):
        app.include_router(routes, responses={**AUTH_ANSWERS, **BOUNDARY_ANSWERS})
    install_metrics(app, platform.metrics)
    install_auth(app, platform.settings)

    install_echo_safe_errors(app)

    @app.exception_handler(Moved)
    async def moved(_: Request, error: Moved) -> JSONResponse:
        return moved_response(error)

    @app.exception_handler(Refused)
    async def refused(_: Request, error: Refused) -> JSONResponse:
        body = IngestRefused(detail=error.detail, errors=error.errors)
        return JSONResponse(body.model_dump(), status_code=error.status, headers=error.headers)

    @app.get("/", include_in_schema=False, dependencies=[PUBLIC])
    def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    # The body is parsed by hand (to report per-item errors and enforce limits), so the
    # envelope's schema is added to the document for the request body to refer to.
    openapi = app.openapi

    def with_envelope() -> dict[str, Any]:
        schema = openapi()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(
            touchpoint_schemas(_REF_TEMPLATE, identifier_kinds=platform.settings.identifier_kinds)
        )
        body = schema["paths"]["/v1/touchpoints"]["post"]["requestBody"]["content"]
        body["application/json"]["schema"]["oneOf"][1]["maxItems"] = (
            platform.settings.ingest_max_batch
        )
        return schema

    app.openapi = with_envelope  # type: ignore[method-assign]
    return app
