"""The FastAPI application: one router per resource (touchpoints, customers, journeys,
analytics, segments, changes, identity, privacy, health, admin). Routes parse, call one
application function (``infra``), and map the result."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse

from api import (
    admin,
    alerts,
    analytics,
    changes,
    customers,
    health,
    identity,
    journeys,
    privacy,
    segments,
    silences,
    touchpoints,
    webhooks,
)
from api.auth import AUTH_ANSWERS, PUBLIC
from api.auth import install as install_auth
from api.browsers import install as install_browsers
from api.errors import ErrorBoundary, install_echo_safe_errors
from api.identity import Moved, moved_response
from api.metrics import install as install_metrics
from api.schemas import BoundaryErrorOut, IngestRefused
from api.touchpoints import Refused
from domain.touchpoints import touchpoint_schemas
from infra.alerts import AlertTail
from infra.bootstrap import Platform

BOUNDARY_ANSWERS: dict[int | str, dict[str, Any]] = {
    500: {"model": BoundaryErrorOut, "description": "unexpected: quote the correlation id"},
    503: {
        "model": BoundaryErrorOut,
        "description": "the database is unavailable or at capacity: retry after Retry-After",
    },
}

_REF_TEMPLATE = "#/components/schemas/{model}"


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
    app.state.alert_tail = AlertTail(platform, poll_seconds=platform.settings.sse_poll_seconds)
    app.add_middleware(ErrorBoundary, retry_after=platform.settings.retry_after_seconds)
    # Runs before authentication (added after it), inside the ingest counters.
    install_browsers(app, platform.settings, docs_dependencies=[PUBLIC])
    # What any route may answer besides its own: the error boundary's answers.
    routers = (
        touchpoints.router,
        customers.router,
        journeys.router,
        identity.router,
        analytics.router,
        segments.router,
        changes.router,
        alerts.router,
        silences.router,
        webhooks.router,
        privacy.router,
        health.router,
        admin.router,
    )
    for routes in routers:
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
