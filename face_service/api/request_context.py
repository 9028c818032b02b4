"""The outermost ASGI middleware: gives each HTTP request its id, returns it as ``X-Request-ID``
on every answer (errors and the middlewares' own answers included), holds the request's context
(:mod:`face_service.request_context`) while it is handled so that every log line carries the id,
and writes the access-log line: method, route template, status, duration, faces, the key's name
and the client's address. Never a header value other than the id, a body, or a raw path."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from face_service.request_context import RequestContext, begin_request, end_request

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is kept when it is this plain (what tracing headers and uuids are made of);
# anything else is replaced rather than written into logs an attacker could then forge.
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# The route of a request that matched none (404, 405 from the router): not its raw path,
# which is the client's text and would make every probe of the service a new route.
UNMATCHED_ROUTE = "(unmatched)"

access_logger = logging.getLogger("face_service.access")


def accepted_request_id(value: str | None) -> str:
    """``value`` when it is a sane id, else a new one (32 hex digits)."""
    if value is not None and VALID_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The path template of the route that handled the request (``/identities/{identity_id}``)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accepted_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        scope.setdefault("state", {})["request_id"] = request_id
        context, token = begin_request(request_id)
        started = time.perf_counter()
        status = 500  # unless an answer starts

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log_access(scope, status, (time.perf_counter() - started) * 1000.0, context)
        # Only on success: after an unhandled exception the context stays set in this request's
        # task, so that the server's report of the crash (written after this returns) carries
        # the id too. Each request runs in its own task, whose context no other request shares.
        end_request(token)


def log_access(scope: Scope, status: int, duration_ms: float, context: RequestContext) -> None:
    state: dict[str, Any] = scope.get("state", {})
    client = scope.get("client")
    fields = {
        "method": scope["method"],
        "route": route_template(scope),
        "status": status,
        "duration_ms": round(duration_ms, 1),
        "faces": context.faces,
        # The authenticated key's name (auth.py), never the key; None while auth is off.
        "key_name": state.get("principal"),
        "client": client[0] if client else None,
    }
    shown = {name: "-" if value is None else value for name, value in fields.items()}
    access_logger.info(
        "%(method)s %(route)s %(status)s %(duration_ms).1f ms faces=%(faces)s key=%(key_name)s "
        "client=%(client)s",
        shown,
        extra=fields,
    )
