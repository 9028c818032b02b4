"""ASGI middleware of the service: the request-body limit, enforced on the stream, and memory
given back after requests that decoded large images."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from face_service import memory
from face_service.request_context import current_request_id


class RequestSizeLimit:
    """Refuses bodies larger than ``max_bytes`` with 413: at once when Content-Length says so,
    else (chunked, or a Content-Length that lies) as soon as the bytes received pass the limit,
    before the application has buffered more than the limit. The connection is closed after the
    413 so the client stops sending."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(scope, receive, send, f"a request body of {int(length)} bytes")
            return

        received = 0
        refused = started = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes and not started:
                    # Answer now, from here: the application may catch any exception raised
                    # while it reads (FastAPI turns body errors into 400), but it cannot read
                    # past a disconnect, and whatever it sends after this is dropped.
                    refused = True
                    await self._refuse(scope, receive, send, "the request body")
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if not refused:
                started = True
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, what: str) -> None:
        response = JSONResponse(
            {
                "detail": f"{what} exceeds the limit of {self.max_bytes} bytes",
                "request_id": current_request_id(),
            },
            status_code=413,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


class MemoryTrim:
    """After each HTTP request that decoded large images, ``malloc_trim`` (face_service.memory)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        decoded = memory.start_counting()
        try:
            await self.app(scope, receive, send)
        finally:
            await memory.trim_after(decoded)
