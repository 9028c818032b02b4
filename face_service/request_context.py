"""What the service knows about the request being handled, wherever the code runs: its id (for
every log line written meanwhile) and how many faces it found (for its access-log line). Held in
context variables set by the API's outermost middleware, so the pipeline reports faces without
knowing about HTTP, and code outside any request sees no id."""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass


@dataclass
class RequestContext:
    """One request's context. Mutable on purpose: worker threads (``asyncio.to_thread``) and
    tasks run in copies of the context, which share this object but not reassignments."""

    request_id: str
    faces: int = 0


_current: ContextVar[RequestContext | None] = ContextVar("face_request_context", default=None)


def begin_request(request_id: str) -> tuple[RequestContext, Token[RequestContext | None]]:
    """Makes the request ``request_id`` the current one; :func:`end_request` with the token
    ends it."""
    context = RequestContext(request_id)
    return context, _current.set(context)


def end_request(token: Token[RequestContext | None]) -> None:
    _current.reset(token)


def current_request_id() -> str | None:
    """The id of the request being handled, None outside one."""
    context = _current.get()
    return context.request_id if context is not None else None


def count_faces(faces: int) -> None:
    """Adds ``faces`` to the request's count (nothing outside a request)."""
    context = _current.get()
    if context is not None:
        context.faces += faces
