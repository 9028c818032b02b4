"""ASGI middleware that counts every HTTP request in face_service.metrics: by route TEMPLATE
(``/identities/{identity_id}``, never the raw path: labels stay bounded; a path that matches no
route is ``<unmatched>``), method and status, its duration, and the requests in flight."""

from __future__ import annotations

import time

from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from face_service import metrics


def route_label(scope: Scope) -> str:
    """The template of the route that answered (set in the scope by routing)."""
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    if isinstance(template, str):
        return template
    endpoint = scope.get("endpoint")
    app = scope.get("app")
    if endpoint is not None and app is not None:
        for candidate in getattr(app, "routes", ()):
            if isinstance(candidate, Mount) and candidate.app is endpoint:
                return f"{candidate.path}/{{path}}"
    return metrics.UNMATCHED_ROUTE


class RequestMetrics:
    """Outermost middleware: sees every answer, 413s and unhandled errors (500) included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics.REQUESTS_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, recording_send)
        finally:
            metrics.REQUESTS_IN_FLIGHT.dec()
            route = route_label(scope)
            method = metrics.method_label(scope["method"])
            metrics.REQUESTS.labels(route, method, str(status)).inc()
            metrics.REQUEST_DURATION.labels(route, method).observe(time.perf_counter() - started)
