"""FastAPI dependencies and query types shared by the routers.

``AsOf`` and ``Since`` are the one definition of an instant given in a query: ISO 8601
with an offset, inside a plausible range, so that no computation downstream (a window
before it, a calendar period after it) leaves the range of ``datetime``. ``Text`` is a
free-text query parameter that PostgreSQL can store and compare (no NUL, valid UTF-8).
A refusal is a 422 in FastAPI's validation shape (``{"detail": [{"loc", "msg",
"type"}]}``), naming the parameter and the reason.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request
from pydantic import AfterValidator

from infra.bootstrap import Platform

# The instants a measure can be asked about: history since 1900, and up to year 3000
# (windows of years before, and calendar periods after, stay inside datetime's range).
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)


# The same bounds as a pattern, so the published schema says what is enforced: an offset
# is required, and the local date lies in years 1901-2998 (any offset then keeps the
# instant inside [EARLIEST, LATEST)).
INSTANT_PATTERN = (
    r"^(190[1-9]|19[1-9][0-9]|2[0-8][0-9]{2}|29[0-8][0-9]|299[0-8])"
    r"-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)


NO_NUL = r"^[^\u0000]*$"  # what storable_text refuses that a schema can say


async def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


def plausible_instant(name: str) -> Any:
    """A validator of an instant named ``name``: timezone-aware and within
    [EARLIEST, LATEST), given back in UTC."""

    def check(moment: datetime | None) -> datetime | None:
        if moment is None:
            return None
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"{name}: give an offset, e.g. 2026-01-01T00:00:00Z")
        try:
            inside = EARLIEST <= moment < LATEST
        except OverflowError:  # e.g. 0001-01-01T00:30:00+01:00, before year 1 in UTC
            inside = False
        if not inside:
            raise ValueError(
                f"{name}: {moment.isoformat()} is outside {EARLIEST:%Y-%m-%d} .. {LATEST:%Y-%m-%d}"
            )
        # In UTC from here on: PostgreSQL refuses offsets beyond +-15:59 that ISO 8601
        # (and Python) allow, such as +17:09.
        return moment.astimezone(UTC)

    return AfterValidator(check)


def storable_text(name: str) -> Any:
    """A validator of free text named ``name``: no NUL character, no lone surrogate
    (neither can be stored in, or compared with, PostgreSQL text)."""

    def check(text: str | None) -> str | None:
        if text is None:
            return None
        if "\x00" in text:
            raise ValueError(f"{name}: must not contain the NUL character")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{name}: must be valid Unicode text (a lone surrogate)") from None
        return text

    return AfterValidator(check)


AsOf = Annotated[
    datetime | None,
    Query(
        description="the instant measured, ISO 8601 with an offset, from 1900-01-01 to "
        "3000-01-01 (default: now)",
        json_schema_extra={"pattern": INSTANT_PATTERN},
    ),
    plausible_instant("as_of"),
]
Since = Annotated[
    datetime | None,
    Query(
        description="only what happened after this instant (ISO 8601 with an offset)",
        json_schema_extra={"pattern": INSTANT_PATTERN},
    ),
    plausible_instant("since"),
]


Channel = Annotated[
    str | None,
    Query(description="only this channel (e.g. web)", json_schema_extra={"pattern": NO_NUL}),
    storable_text("channel"),
]
JourneyType = Annotated[
    str | None,
    Query(
        description="only journeys of this type (e.g. car_service)",
        json_schema_extra={"pattern": NO_NUL},
    ),
    storable_text("journey_type"),
]


def refused(status: int, field: tuple[str, ...], message: str, kind: str) -> HTTPException:
    """An error in the same shape as FastAPI's own validation errors, so every error
    answer of an endpoint has one type: ``{"detail": [{"loc", "msg", "type"}]}``."""
    return HTTPException(status, [{"loc": list(field), "msg": message, "type": kind}])
