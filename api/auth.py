"""Who may call what: every route declares the scope it needs (or that it is public),
and a request carries an API key as ``Authorization: Bearer pk_live_…``.

- no key, or a key that is not active: 401 with ``WWW-Authenticate: Bearer``;
- a key without the route's scope: 403 naming the missing scope;
- over the key's rate limit: 429 with ``Retry-After``. Ingest is counted in touchpoints
  (``PEAKEND_INGEST_RATE_LIMIT``), every other route in requests
  (``PEAKEND_READ_RATE_LIMIT``), per key.

The auth-matrix test walks the app's routes: a route that declares neither a scope nor
``public`` fails the suite.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter
from pydantic import BaseModel

from api.deps import PlatformDep
from infra.keys import SCOPE_MEANING, ApiKey, Scope
from infra.settings import Settings

log = logging.getLogger(__name__)

REALM = "peakend"
bearer = HTTPBearer(
    auto_error=False,
    description="an API key: pk_live_… (peakend keys create --name … --scope …)",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


class AuthErrorOut(BaseModel):
    detail: str
    missing_scope: Scope | None = None


class AccessRefused(Exception):
    """A request refused before the route ran: 401, 403 or 429."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        missing_scope: Scope | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.headers = status, headers or {}
        self.body = AuthErrorOut(detail=detail, missing_scope=missing_scope)


def install(app: FastAPI, settings: Settings) -> None:
    app.state.rate_limits = RateLimits(settings)

    @app.exception_handler(AccessRefused)
    async def refused(_: Request, error: AccessRefused) -> JSONResponse:
        return JSONResponse(error.body.model_dump(), error.status, headers=error.headers)


AUTH_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: {"model": AuthErrorOut, "description": "more than one Authorization header"},
    401: {"model": AuthErrorOut, "description": "no API key, or one that is not active"},
    403: {"model": AuthErrorOut, "description": "the key lacks the route's scope"},
    429: {"model": AuthErrorOut, "description": "over the key's rate limit: retry after"},
}


class InProcessCounts(MemoryStorage):
    """``limits``' ``memory://`` storage with its sweep of expired counters done inline,
    at most once a second. The library starts a timer thread for that sweep on almost
    every hit (one per 10 ms), which on the event loop costs more than the count itself;
    a counter past its expiry reads as zero either way."""

    SWEEP_SECONDS = 1.0

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        self._swept = time.monotonic()
        super().__init__(uri, **options)

    def _MemoryStorage__schedule_expiry(self) -> None:  # noqa: N802 (the library's private one)
        now = time.monotonic()
        if now - self._swept >= self.SWEEP_SECONDS:
            self._swept = now
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


class RateLimits:
    """Limits per key (the ``limits`` library): one storage per API process
    (``memory://``) unless the setting names a shared one (Redis). Sliding-window
    counters: a hit costs the same whatever the limit (a moving window would keep an
    entry per touchpoint counted), and the window slides, so no burst at its edge."""

    def __init__(self, settings: Settings) -> None:
        # memory:// is counted in this process: no I/O, fine on the event loop.
        self.in_process = settings.rate_limit_storage.startswith("memory://")
        self.limiter = SlidingWindowCounterRateLimiter(
            InProcessCounts()
            if self.in_process
            else storage_from_string(settings.rate_limit_storage)
        )
        self.ingest = parse_many(settings.ingest_rate_limit)
        self.reads = parse_many(settings.read_rate_limit)

    def take(self, items: list[RateLimitItem], key: ApiKey, cost: int, what: str) -> None:
        """Count ``cost`` against every limit, or refuse with 429 and the wait."""
        for item in items:
            if cost > item.amount:
                raise _limited(
                    f"{cost} {what} exceed the key's limit of {item} at once: send fewer",
                    item.get_expiry(),
                )
            try:
                allowed = self.limiter.hit(item, key.id, cost=cost)
            except Exception:  # a shared storage away: serve rather than refuse everyone
                log.warning("rate limit storage unavailable: %s not counted", what)
                return
            if not allowed:
                reset, _ = self.limiter.get_window_stats(item, key.id)
                raise _limited(
                    f"over the key's limit of {item} {what}", max(1, reset - time.time())
                )


def _limited(detail: str, retry_after: float) -> AccessRefused:
    return AccessRefused(429, detail, headers={"Retry-After": str(math.ceil(retry_after))})


def _unauthorized(detail: str, error: str | None) -> AccessRefused:
    challenge = f'Bearer realm="{REALM}"' + (f', error="{error}"' if error else "")
    return AccessRefused(401, detail, headers={"WWW-Authenticate": challenge})


@functools.cache  # one dependency per scope: FastAPI then runs it once per request
def require(scope: Scope) -> Any:
    """The dependency of a route that needs ``scope``: the caller's key."""

    async def caller(request: Request, credentials: Credentials, platform: PlatformDep) -> ApiKey:
        sent = request.headers.getlist("authorization")
        if len(sent) > 1:  # a proxy reading the other one would disagree on who calls
            raise AccessRefused(
                400,
                "send one Authorization header, not several",
                headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_request"'},
            )
        if credentials is None:
            if sent:
                raise _unauthorized(
                    "the Authorization header must be: Bearer <key>", "invalid_request"
                )
            raise _unauthorized("an API key is required: Authorization: Bearer <key>", None)
        secret, keys = credentials.credentials, platform.keys
        key = (
            await run_in_threadpool(keys.authenticate, secret)
            if keys.reads_store(secret)
            else keys.authenticate(secret)
        )
        if key is None:
            raise _unauthorized("the API key is not valid (unknown or revoked)", "invalid_token")
        if not key.allows(scope):
            raise AccessRefused(
                403,
                f"the key {key.name!r} lacks the scope {scope!r} ({SCOPE_MEANING[scope]})",
                missing_scope=scope,
            )
        if scope != "ingest":  # ingest counts touchpoints once it has parsed them
            limits: RateLimits = request.app.state.rate_limits
            if limits.in_process:
                limits.take(limits.reads, key, 1, "requests")
            else:
                await run_in_threadpool(limits.take, limits.reads, key, 1, "requests")
        return key

    caller.scope = scope  # type: ignore[attr-defined]  # read by the auth-matrix test
    return caller


def public() -> None:
    """The dependency of a route anyone may call (health, the docs)."""


public.scope = None  # type: ignore[attr-defined]  # read by the auth-matrix test


def take_ingest(request: Request, key: ApiKey, touchpoints: int) -> None:
    limits: RateLimits = request.app.state.rate_limits
    limits.take(limits.ingest, key, touchpoints, "touchpoints")


Ingester = Annotated[ApiKey, Depends(require("ingest"))]
Admin = Annotated[ApiKey, Depends(require("admin"))]
READ = Depends(require("read"))
OPERATE = Depends(require("operate"))
Operator = Annotated[ApiKey, Depends(require("operate"))]
PUBLIC = Depends(public)
