"""Key management (POST, GET /keys, DELETE /keys/{key_id}) and the audit log (GET /audit): admin
only. A new key is in the creation's answer and nowhere else."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request

from face_service.api.auth import AUTH_ERRORS, record_targets, require_scope
from face_service.api.json_limits import BoundedJSONRoute
from face_service.api.openapi import error_responses
from face_service.api.schemas.access import (
    AuditEntryPublic,
    AuditPagePublic,
    KeyCreate,
    KeyCreatedPublic,
    KeyListPublic,
    KeyPublic,
)
from face_service.auth import Authenticator
from face_service.gallery import AccessStore, AuditFilter

# Bounded like every page: an offset past what a 64-bit integer holds is refused (422).
MAX_OFFSET = 2**62

router = APIRouter(
    route_class=BoundedJSONRoute,
    tags=["access"],
    responses={**AUTH_ERRORS, **error_responses(400, 404, 409, 422, 503)},
)


def authenticator(request: Request) -> Authenticator:
    return request.app.state.authenticator


def access_store(request: Request) -> AccessStore:
    return request.app.state.access


def as_utc(moment: datetime | None) -> datetime | None:
    """A time without a zone is UTC, as the log's own times are."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


@router.post(
    "/keys",
    status_code=201,
    response_model=KeyCreatedPublic,
    summary="Create an API key (its text is in this answer only)",
    dependencies=[require_scope("admin", audit="key.create")],
)
async def create_key(body: KeyCreate, request: Request) -> KeyCreatedPublic:
    key, text = await asyncio.to_thread(authenticator(request).create_key, body.name, body.scopes)
    record_targets(request, key_id=key.key_id, name=key.name)
    return KeyCreatedPublic(**KeyPublic.from_key(key).model_dump(), key=text)


@router.get(
    "/keys",
    response_model=KeyListPublic,
    summary="The API keys, without their secrets",
    dependencies=[require_scope("admin")],
)
async def list_keys(
    request: Request, revoked: Annotated[bool, Query(description="include revoked keys")] = False
) -> KeyListPublic:
    keys = await asyncio.to_thread(access_store(request).list_keys, include_revoked=revoked)
    return KeyListPublic(items=[KeyPublic.from_key(key) for key in keys])


@router.delete(
    "/keys/{key_id}",
    response_model=KeyPublic,
    summary="Revoke an API key: it is refused from now on",
    dependencies=[require_scope("admin", audit="key.revoke")],
)
async def revoke_key(key_id: str, request: Request) -> KeyPublic:
    key = await asyncio.to_thread(authenticator(request).revoke_key, key_id)
    record_targets(request, name=key.name)
    return KeyPublic.from_key(key)


@router.get(
    "/audit",
    response_model=AuditPagePublic,
    summary="The audit log of writes, newest first",
    dependencies=[require_scope("admin")],
)
async def audit_log(
    request: Request,
    principal: Annotated[str | None, Query(max_length=64, description="a key's name")] = None,
    action: Annotated[str | None, Query(max_length=64, description="e.g. identity.delete")] = None,
    target: Annotated[
        str | None, Query(max_length=200, description="an id the write touched")
    ] = None,
    since: Annotated[
        datetime | None, Query(description="from this time (inclusive; ISO 8601, UTC if no zone)")
    ] = None,
    until: Annotated[datetime | None, Query(description="before this time")] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPagePublic:
    where = AuditFilter(principal, action, target, as_utc(since), as_utc(until))
    items, total = await asyncio.to_thread(
        access_store(request).audit_page, where, offset=offset, limit=limit
    )
    return AuditPagePublic(
        items=[AuditEntryPublic.from_entry(e) for e in items],
        total=total,
        offset=offset,
        limit=limit,
    )
