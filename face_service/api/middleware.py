"""ASGI middleware of the service."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send


class RequestSizeLimit:
    """Refuses bodies larger than the configured limit before they are read."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                message = (
                    f"request body of {int(length)} bytes exceeds the limit of {self.max_bytes}"
                )
                response = JSONResponse({"detail": message}, status_code=413)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
