"""Authentication as FastAPI dependencies: :func:`require_scope` on every route that is not open
(health probes, docs), declaring both security schemes (``X-API-Key`` and ``Authorization:
Bearer``) so that the OpenAPI document has them and Swagger's Authorize button works. It sets
``request.state.principal`` (the key's name, None while authentication is off) and, on a write,
the audit event the audit middleware records (``audit.py``)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.params import Depends as DependsParam
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from face_service.api.openapi import error_responses
from face_service.auth import Authenticator, Principal, Scope
from face_service.errors import PermissionDeniedError

api_key_header = APIKeyHeader(
    name="X-API-Key",
    scheme_name="APIKey",
    description="An API key (`face-service-keys create`, or POST /keys)",
    auto_error=False,
)
bearer = HTTPBearer(
    scheme_name="Bearer", description="The same API key as a bearer token", auto_error=False
)

# Documented on every protected route.
AUTH_ERRORS = error_responses(401, 403)


class AuditEvent:
    """What a write route tells the audit log: the action, and the ids it touched (the
    middleware adds the path's ids, who, from where and the status)."""

    def __init__(self, action: str) -> None:
        self.action = action
        self.targets: dict[str, Any] = {}


def audit_event(request: Request) -> AuditEvent | None:
    return getattr(request.state, "audit", None)


def record_targets(request: Request, **targets: Any) -> None:
    """Adds ids (or counts) to this request's audit event, if it has one."""
    event = audit_event(request)
    if event is not None:
        event.targets.update({name: value for name, value in targets.items() if value is not None})


def authenticator_of(request: Request) -> Authenticator | None:
    """The app's authenticator, None while authentication is off."""
    authenticator: Authenticator | None = request.app.state.authenticator
    return authenticator if authenticator is not None and authenticator.required else None


async def authenticate(request: Request, text: str | None) -> Principal | None:
    """The request's principal (cached on the request), None while authentication is off."""
    if hasattr(request.state, "principal_object"):
        return request.state.principal_object
    authenticator = authenticator_of(request)
    principal = None
    if authenticator is not None:
        principal = await asyncio.to_thread(authenticator.authenticate, text)
    request.state.principal_object = principal
    request.state.principal = principal.name if principal else None
    return principal


def check_scope(request: Request, scope: Scope) -> None:
    """403 unless this request's key has ``scope`` (nothing to check while auth is off): for a
    route whose need depends on its body (``/extract`` with ``store=true`` writes)."""
    principal: Principal | None = getattr(request.state, "principal_object", None)
    if principal is not None and not principal.allows(scope):
        raise PermissionDeniedError(principal.name, scope)


def require_scope(scope: Scope, *, audit: str | None = None) -> DependsParam:
    """A dependency for ``dependencies=[...]`` of a route: 401 without a valid key, 403 without
    ``scope``. ``audit`` names the action of a write: the request is then recorded in the audit
    log whatever its outcome (except a 401: no key, no one to name)."""

    async def check(
        request: Request,
        api_key: Annotated[str | None, Security(api_key_header)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> None:
        if audit is not None:
            request.state.audit = AuditEvent(audit)
        text = api_key or (credentials.credentials if credentials else None)
        await authenticate(request, text)
        check_scope(request, scope)

    check.required_scope = scope  # type: ignore[attr-defined]
    return Depends(check)


def route_scope(dependant: Any) -> str | None:
    """The scope a route's dependencies require (None: an open route), for tests and docs."""
    for dependency in dependant.dependencies:
        found = getattr(dependency.call, "required_scope", None) or route_scope(dependency)
        if found:
            return found
    return None
