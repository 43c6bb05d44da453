"""``/v1/webhooks``: endpoints that alert transitions are delivered to, signed as the
Standard Webhooks specification says (``infra.webhooks``), and their delivery log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.auth import READ, Operator
from api.deps import PlatformDep, storable_text
from api.schemas import (
    NOT_FOUND,
    DeliveriesOut,
    ErrorOut,
    WebhookCreatedOut,
    WebhookIn,
    WebhookSecretOut,
    WebhooksOut,
)
from infra import webhooks as service

router = APIRouter(prefix="/v1/webhooks", tags=["alerts"])
EndpointId = Annotated[str, storable_text("endpoint_id")]


@router.post(
    "", status_code=201, response_model=WebhookCreatedOut, responses={422: {"model": ErrorOut}}
)
def create_webhook(platform: PlatformDep, key: Operator, endpoint: WebhookIn) -> WebhookCreatedOut:
    """Subscribe an endpoint to alert transitions (scope ``operate``), of these rules and
    severities (none given: all). The secret is shown this once: verify each delivery
    with it (``webhook-signature``)."""
    try:
        created = service.create_endpoint(
            platform,
            str(endpoint.url),
            [str(r) for r in endpoint.rules],
            [str(s) for s in endpoint.severities],
            key.name,
        )
    except ValueError as why:  # the URL reaches no public address
        raise HTTPException(
            422, [{"loc": ["body", "url"], "msg": str(why), "type": "value_error"}]
        ) from None
    return WebhookCreatedOut(id=created.id, secret=created.secret)


@router.get("", response_model=WebhooksOut, dependencies=[READ])
def get_webhooks(platform: PlatformDep) -> WebhooksOut:
    return WebhooksOut.model_validate({"webhooks": service.endpoints(platform)})


@router.post(
    "/{endpoint_id}/rotate",
    response_model=WebhookSecretOut,
    responses={**NOT_FOUND, 422: {"model": ErrorOut}},
)
def rotate_webhook_secret(
    platform: PlatformDep, _: Operator, endpoint_id: EndpointId
) -> WebhookSecretOut:
    """A new secret (scope ``operate``): deliveries carry a signature by it and by the
    previous one until the next rotation, so a receiver can switch without a gap."""
    secret = service.rotate_secret(platform, endpoint_id)
    if secret is None:
        raise HTTPException(404, f"no webhook {endpoint_id!r}")
    return WebhookSecretOut(id=endpoint_id, secret=secret)


@router.delete("/{endpoint_id}", status_code=204, responses={**NOT_FOUND, 422: {"model": ErrorOut}})
def delete_webhook(platform: PlatformDep, _: Operator, endpoint_id: EndpointId) -> None:
    """Unsubscribe (scope ``operate``): no more deliveries, its log goes too."""
    if not service.delete_endpoint(platform, endpoint_id):
        raise HTTPException(404, f"no webhook {endpoint_id!r}")


@router.get(
    "/{endpoint_id}/deliveries",
    response_model=DeliveriesOut,
    responses={**NOT_FOUND, 422: {"model": ErrorOut}},
    dependencies=[READ],
)
def get_deliveries(
    platform: PlatformDep,
    endpoint_id: EndpointId,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> DeliveriesOut:
    """The endpoint's deliveries, newest first, with every attempt (when, the status
    the receiver answered or the error, how long it took)."""
    found = service.deliveries(platform, endpoint_id, limit)
    if found is None:
        raise HTTPException(404, f"no webhook {endpoint_id!r}")
    return DeliveriesOut.model_validate({"deliveries": found})
