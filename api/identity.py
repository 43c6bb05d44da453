"""Identity over HTTP: which customer answers for an id, finding customers by identifier,
the refused merges, and undoing a wrong merge.

A customer merged into another answers ``307 Temporary Redirect`` to the same request
for the survivor (``Location``, and a ``MovedOut`` body): temporary, because a split
can give it back its own answers. A source customer id (kind ``id``) in the path answers
for the customer that holds it, without a redirect.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from api.auth import READ, Admin
from api.deps import PlatformDep
from api.schemas import ConflictsOut, CustomerSearchOut, MovedOut, NotFoundOut, SplitIn, SplitOut
from domain.customer import IdentityError
from domain.touchpoints import IDENTIFIER_KINDS, InvalidTouchpoint, parse_identifiers
from infra import audit

router = APIRouter(prefix="/v1")

MOVED: dict[int | str, dict[str, Any]] = {
    307: {
        "model": MovedOut,
        "description": "merged into another customer: the same request for the survivor is "
        "in Location (temporary: a split undoes it)",
    }
}


class Moved(Exception):
    def __init__(self, body: MovedOut) -> None:
        super().__init__(body.detail)
        self.body = body


def answering_customer(customer_id: str, request: Request, platform: PlatformDep) -> str:
    """The customer that answers for the path's ``customer_id``: itself, the customer
    holding it as a source id, or (merged into another) a redirect to the survivor."""
    if "\x00" in customer_id:  # PostgreSQL text holds no NUL: no customer id has one
        raise HTTPException(404, f"no customer {customer_id!r}")
    located = platform.records.identity.locate(customer_id)
    if located is None:
        return customer_id  # unknown: the route answers 404
    if located.absorbed:
        path = request.url.path.replace(
            f"/customers/{customer_id}",  # request.url.path is percent-decoded
            f"/customers/{quote(located.survivor, safe='')}",
            1,
        )
        query = f"?{request.url.query}" if request.url.query else ""
        raise Moved(
            MovedOut(
                detail=f"customer {customer_id} was merged into {located.survivor}",
                customer_id=customer_id,
                merged_into=located.survivor,
                location=path + query,
            )
        )
    return located.survivor


AnsweringCustomer = Annotated[str, Depends(answering_customer)]


def moved_response(moved: Moved) -> JSONResponse:
    return JSONResponse(
        moved.body.model_dump(), status_code=307, headers={"Location": moved.body.location}
    )


@router.get(
    "/customers",
    response_model=CustomerSearchOut,
    responses={422: {"description": "no identifier given, or one that cannot be read"}},
    dependencies=[READ],
)
def find_customers(
    request: Request,
    platform: PlatformDep,
    id: Annotated[str | None, Query(max_length=200)] = None,  # the kind's name
    email: Annotated[str | None, Query(max_length=320)] = None,
    phone: Annotated[str | None, Query(max_length=64)] = None,
    loyalty_card: Annotated[str | None, Query(max_length=200)] = None,
    device_id: Annotated[str | None, Query(max_length=200)] = None,
    crm_id: Annotated[str | None, Query(max_length=200)] = None,
    account_id: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """The customers holding these identifiers (any kind, declared kinds included, as
    query parameters), normalised as ingest normalises them: ``?email=Ann@Shop.DE`` finds
    the customer ingest linked ``ann@shop.de`` to. Name at least one; one that cannot be
    read as ingest reads it (an e-mail or phone it would refuse, a NUL character) is refused
    too: 422 either way."""
    declared = platform.settings.identifier_kinds
    given = {k: v for k, v in request.query_params.items() if k in (*IDENTIFIER_KINDS, *declared)}
    if not given:
        raise HTTPException(
            422, f"name at least one identifier: {', '.join((*IDENTIFIER_KINDS, *declared))}"
        )
    try:
        wanted = parse_identifiers(
            given, phone_region=platform.settings.phone_default_region, identifier_kinds=declared
        )
    except InvalidTouchpoint as error:
        raise HTTPException(
            422,
            [
                {"loc": ["query", e.field], "msg": e.message, "type": "value_error"}
                for e in error.errors
            ],
        ) from None
    found = platform.records.identity.find(list(wanted.items()))
    return {
        "customers": [{"customer_id": c, "kind": k, "value": v} for k, v, c in found],
    }


@router.get("/identity/conflicts", response_model=ConflictsOut, dependencies=[READ])
def identity_conflicts(
    platform: PlatformDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> dict[str, Any]:
    """Merges and links the guard rails refused, newest first: the rule, the reason, the
    identifiers and the customers involved. Each touchpoint was recorded all the same,
    on ``recorded_on``. The identity index keeps no value in clear: the reason and the
    identifiers are read from the refusal's event (``identifiers`` empty, the reason
    saying so, once the customer it was recorded on is erased)."""
    total, items = platform.records.identity.conflicts(limit=limit, offset=offset)
    return {"total": total, "offset": offset, "limit": limit, "items": items}


@router.post(
    "/customers/{customer_id}/split",
    status_code=202,
    response_model=SplitOut,
    responses={
        404: {"model": NotFoundOut, "description": "no such customer"},
        409: {"model": NotFoundOut, "description": "the customer named was not merged into this"},
        **MOVED,
    },
)
def split_customer(
    caller: Admin, customer_id: AnsweringCustomer, body: SplitIn, platform: PlatformDep
) -> Any:
    """Undo a wrong merge: ``absorbed`` (merged into this customer) answers for itself
    again, with every touchpoint its own identifiers brought, and this customer's
    projections become what they would be had the merge never happened. The two are not
    merged again automatically (a later touchpoint naming both is a ``kept_apart``
    conflict). 202: recorded; the projections follow within moments."""
    if platform.records.identity.locate(customer_id) is None:
        raise HTTPException(404, f"no customer {customer_id!r}")
    try:
        platform.records.split(customer_id, body.absorbed, reason=body.reason)
    except IdentityError as error:
        raise HTTPException(409, str(error)) from None
    audit.record(platform.store, caller.name, "split", customer_id, released=body.absorbed)
    return {"survivor": customer_id, "released": body.absorbed}
