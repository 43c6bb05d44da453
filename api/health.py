"""The health report: is the database answering, is projecting keeping up, is anything
quarantined. Bounded in time: a database that does not answer is reported as such
within the budget, never waited for."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.auth import PUBLIC
from api.deps import PlatformDep
from api.schemas import HealthOut
from infra import scheduler
from infra.bootstrap import Platform
from infra.database import unavailable
from projections import analytics, maintained

# One probe at a time per platform: a probe stuck on a dead database is awaited again by
# the next check instead of starting another thread behind it.
_probes: dict[int, asyncio.Future[dict[str, Any]]] = {}


def _probe(platform: Platform) -> dict[str, Any]:
    lag = platform.driver.lag()
    quarantined = platform.store.quarantined_count()
    measures = (
        maintained.health(platform.store) if platform.store.measure_rules is not None else None
    )
    if platform.driver.projector_error is not None:
        status = "unavailable"
    elif quarantined or (measures and measures["failed_customers"]):
        status = "degraded"
    else:
        status = "ok"
    return {
        "status": status,
        "database": "ok",
        "projection_lag": lag,
        "projector_error": platform.driver.projector_error,
        "quarantined_documents": quarantined,
        "last_clv_fit": analytics.last_fit_outcome(platform.store),
        "scheduler": _lease(platform),
        "measures": measures,
    }


def _lease(platform: Platform) -> dict[str, Any] | None:
    with platform.store.connection() as conn, conn.cursor() as cur:
        return scheduler.lease(cur)


async def check(platform: Platform, *, timeout: float) -> dict[str, Any]:
    """The report, within ``timeout`` seconds. ``status``: ok; degraded (documents are
    quarantined, everything else goes on); unavailable (the database does not answer,
    or projecting fails)."""
    for finished in [k for k, p in _probes.items() if p.done()]:
        del _probes[finished]  # only a stuck probe is kept, to be awaited again
    key = id(platform)
    probe = _probes.get(key)
    if probe is None:
        probe = asyncio.ensure_future(asyncio.to_thread(_probe, platform))
        _probes[key] = probe
    try:
        return await asyncio.wait_for(asyncio.shield(probe), timeout)
    except TimeoutError:
        database = "no answer within the health check's budget"
    except Exception as error:
        database = "unavailable" if unavailable(error) else type(error).__name__
    return {
        "status": "unavailable",
        "database": database,
        "projection_lag": None,
        "projector_error": platform.driver.projector_error,
        "quarantined_documents": None,
        "last_clv_fit": None,
        "scheduler": None,
        "measures": None,
    }


router = APIRouter(prefix="/v1", tags=["health"])
HEALTH_BUDGET_S = 0.5  # of the second promised: the rest is HTTP, on a busy machine too


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
    report = await check(platform, timeout=HEALTH_BUDGET_S)
    return JSONResponse(report, status_code=200 if report["status"] != "unavailable" else 503)
