"""Administration over HTTP: API keys (the same as ``peakend keys``) and the audit log.

Every change is audited with the name of the key that made it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.auth import Admin
from api.deps import NO_NUL, PlatformDep, storable_text
from infra import audit
from infra.keys import NAME_PATTERN, SCOPES, ApiKey, KeyRefused, Scope, check_name

router = APIRouter(prefix="/v1")


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a key's secret is never chosen by a client

    name: Annotated[
        str,
        Field(
            pattern=NAME_PATTERN,
            description="unique; letters, digits, . _ -; not starting with key_",
        ),
        AfterValidator(check_name),
    ]
    scopes: list[Scope] = Field(min_length=1, max_length=len(SCOPES))


class KeyOut(BaseModel):
    id: str
    name: str
    scopes: list[Scope]
    hint: str = Field(description="the key's first characters: enough to tell keys apart")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreatedOut(KeyOut):
    key: str = Field(description="the secret: shown this once, stored only as a digest")


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="the API key's name, or cli:<user> for a command")
    action: str
    target: str | None
    detail: dict[str, object]


class AuditOut(BaseModel):
    items: list[AuditEntryOut]
    next_before: int | None = Field(description="pass as before= for the next (older) page")


class ProblemOut(BaseModel):
    detail: str


def _out(key: ApiKey) -> KeyOut:
    return KeyOut(
        id=key.id,
        name=key.name,
        scopes=sorted(key.scopes),
        hint=key.hint,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
    )


@router.post(
    "/keys",
    status_code=201,
    response_model=KeyCreatedOut,
    responses={409: {"model": ProblemOut, "description": "a key with this name exists"}},
)
def create_key(caller: Admin, body: KeyIn, platform: PlatformDep) -> KeyCreatedOut:
    """A new API key with these scopes; its secret is in the answer, and nowhere else."""
    try:
        key, secret = platform.keys.create(body.name, body.scopes)
    except KeyRefused as refusal:
        raise HTTPException(409, str(refusal)) from None
    audit.record(
        platform.store, caller.name, "key_created", key.id, name=key.name, scopes=body.scopes
    )
    return KeyCreatedOut(**_out(key).model_dump(), key=secret)


@router.get("/keys", response_model=list[KeyOut])
def list_keys(caller: Admin, platform: PlatformDep, include_revoked: bool = False) -> list[KeyOut]:
    """Every active key (and the revoked ones, if asked), oldest first; never a secret."""
    return [_out(k) for k in platform.keys.list(include_revoked=include_revoked)]


@router.delete(
    "/keys/{key}",
    response_model=KeyOut,
    responses={
        404: {"model": ProblemOut, "description": "no active key with this id or name"},
        409: {"model": ProblemOut, "description": "the last active admin key"},
    },
)
def revoke_key(
    caller: Admin,
    key: Annotated[str, storable_text("key")],
    platform: PlatformDep,
) -> KeyOut:
    """Revoke a key by id or name: refused within ``PEAKEND_KEY_CACHE_SECONDS`` by every
    API process."""
    try:
        revoked = platform.keys.revoke(key)
    except KeyRefused as refusal:
        raise HTTPException(409, str(refusal)) from None
    if revoked is None:
        raise HTTPException(404, f"no active key {key!r}")
    audit.record(platform.store, caller.name, "key_revoked", revoked.id, name=revoked.name)
    return _out(revoked)


@router.get("/audit", response_model=AuditOut)
def audit_log(
    caller: Admin,
    platform: PlatformDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    action: Annotated[
        str | None, Query(json_schema_extra={"pattern": NO_NUL}), storable_text("action")
    ] = None,
) -> AuditOut:
    """Admin actions, newest first: erase, split, key changes, replay, model fits."""
    items = audit.entries(platform.store, limit=limit, before=before, action=action)
    return AuditOut(
        items=[AuditEntryOut(**item) for item in items],
        next_before=items[-1]["id"] if len(items) == limit else None,
    )
