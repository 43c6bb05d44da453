"""``GET /metrics`` (Prometheus text format) and the count of ingest answers.

Ingest requests are counted by an ASGI middleware, by the status of the answer actually
sent, so every path out of the ingest route (a refusal, a 503, an unexpected error) is
counted the same way without a line in the route itself. Requests other than ingest that
fail on the database (an error raised through, or a 503: a dependency unavailable) count
as database errors of the ``reads`` component.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import READ
from api.deps import PlatformDep
from infra.metrics import Metrics

INGEST_PATH = "/v1/touchpoints"
# Answers about the platform itself, not reads of its data: a 503 from health means
# "degraded", which is not a failed read.
NOT_READS = frozenset({INGEST_PATH, "/healthz", "/v1/healthz", "/metrics"})

router = APIRouter()


@router.get("/metrics", include_in_schema=False, dependencies=[READ])
def metrics(platform: PlatformDep) -> Response:
    # A sync route: the scrape-time gauges query the database, so they run in the thread
    # pool, never on the event loop.
    return Response(generate_latest(platform.metrics.registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)


class CountRequests:
    """Counts ``POST /v1/touchpoints`` answers by outcome, and failed reads."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ingest = scope["path"] == INGEST_PATH and scope["method"] == "POST"
        read = scope["path"] not in NOT_READS
        status: list[int] = []

        async def sent(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sent)
        except Exception as error:
            # Raised through to Starlette's error middleware, which answers 500 (unless
            # an answer had started already).
            if ingest:
                self.metrics.count_ingest_request(status[0] if status else 500)
            elif read:
                self.metrics.database_error("reads", error)
            raise
        if ingest and status:
            self.metrics.count_ingest_request(status[0])
        elif read and status and status[0] == 503:
            self.metrics.database_errors.labels("reads").inc()


def install(app: FastAPI, metrics: Metrics) -> None:
    """Serve ``/metrics`` and count requests: the one line ``create_app`` needs."""
    app.include_router(router)
    app.add_middleware(CountRequests, metrics=metrics)
