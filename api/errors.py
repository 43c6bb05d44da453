"""Every request gets an answer: a correlation id on each, 503 with Retry-After when the
database is unavailable or the server is at capacity, and for anything unexpected a
500 that says nothing internal (no SQL, constraint names, hosts or stack traces) but
returns the correlation id under which the error was logged."""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.database import unavailable

log = logging.getLogger("peakend.api")

CORRELATION_HEADER = "x-correlation-id"
_WELL_FORMED = re.compile(r"^[A-Za-z0-9._\-]{8,64}$")


class Unavailable(Exception):
    """Nothing is wrong with the request; the platform cannot serve it now: retry."""


def correlation_id(scope: Scope) -> str:
    """The caller's correlation id when it sends a well-formed one, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == CORRELATION_HEADER.encode():
            candidate: str = value.decode("latin-1")
            if _WELL_FORMED.match(candidate):
                return candidate
    return uuid.uuid4().hex


class ErrorBoundary:
    """ASGI middleware around the app: tags every response with its correlation id and
    turns an exception that escaped the routes into a clean 503 or 500."""

    def __init__(self, app: ASGIApp, *, retry_after: int) -> None:
        self.app = app
        self.retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = correlation_id(scope)
        scope.setdefault("state", {})["correlation_id"] = cid
        started = False

        async def tagged(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [
                    *message.get("headers", []),
                    (CORRELATION_HEADER.encode(), cid.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        except Exception as error:
            if started:  # too late for another answer: the client sees a cut response
                log.exception("request failed mid-response", extra={"correlation_id": cid})
                raise
            if isinstance(error, Unavailable) or unavailable(error):
                log.warning(
                    "%s %s: unavailable (%s)",
                    scope.get("method"),
                    scope.get("path"),
                    type(error).__name__,
                    extra={"correlation_id": cid},
                )
                status = 503
                body: dict[str, Any] = {
                    "detail": "the database is unavailable or at capacity; retry later",
                    "correlation_id": cid,
                }
                headers = [(b"retry-after", str(self.retry_after).encode())]
            else:
                log.exception(
                    "%s %s failed",
                    scope.get("method"),
                    scope.get("path"),
                    extra={"correlation_id": cid},
                )
                status = 500
                body = {
                    "detail": "internal error: it was logged under this correlation id",
                    "correlation_id": cid,
                }
                headers = []
            await tagged(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json"), *headers],
                }
            )
            await tagged({"type": "http.response.body", "body": json.dumps(body).encode()})


class EscapedJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: an answer that echoes what the client
    sent (a validation error, a detail naming an id) is encodable even when that held a
    lone surrogate, which UTF-8 cannot encode (the default answer was a 500)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=True, allow_nan=False, separators=(",", ":")
        ).encode()


ECHO_LIMIT = 200  # characters of a refused text, items of a refused list, echoed back


def _echo(value: Any) -> Any:
    """A refused input as the answer repeats it: enough to recognise, never the whole of a
    10 MB string or a 10,000-item list (a hostile client would have it sent back)."""
    if isinstance(value, str) and len(value) > ECHO_LIMIT:
        return value[:ECHO_LIMIT] + f"… ({len(value)} characters)"
    if isinstance(value, list | tuple) and len(value) > ECHO_LIMIT:
        return [*value[:ECHO_LIMIT], f"… ({len(value)} items)"]
    if isinstance(value, dict) and len(value) > ECHO_LIMIT:
        return {k: value[k] for k in list(value)[:ECHO_LIMIT]}
    return value


def install_echo_safe_errors(app: FastAPI) -> None:
    """FastAPI's own 422 and HTTPException answers, in the same shape, rendered escaped."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        errors = [{**e, "input": _echo(e["input"])} if "input" in e else e for e in error.errors()]
        return EscapedJSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def refused(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return EscapedJSONResponse(
            {"detail": error.detail}, status_code=error.status_code, headers=error.headers
        )
