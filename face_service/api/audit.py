"""The audit log's recorder: ASGI middleware that writes one entry per write request whose route
declared an action (``require_scope(..., audit=...)``): who (the key's name and id), what, which
ids (the path's and those the route adds), from where (the client address), when, and the
status. The entry is committed before the response starts, so a client that saw the answer can
find it; a 401 (no key: no one to name) is logged as a warning instead, not stored."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from face_service.gallery import AccessStore, AuditEntry

logger = logging.getLogger("face_service.audit")

# Path parameters that name what a write touched.
PATH_IDS = ("identity_id", "template_id", "record_id", "key_id")


class AuditTrail:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        recorded = False

        async def send_recorded(message: Message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start" and not recorded:
                recorded = True
                await self.record(scope, state, message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recorded)
        except Exception:
            if not recorded:
                recorded = True
                await self.record(scope, state, 500)
            raise

    async def record(self, scope: Scope, state: dict[str, Any], status: int) -> None:
        event = state.get("audit")
        if event is None:
            return
        client = scope.get("client")
        address = client[0] if client else None
        principal = state.get("principal_object")
        if status == 401:
            logger.warning(
                "refused without a valid key: %s %s from %s",
                scope["method"],
                scope["path"],
                address,
            )
            return
        path_ids = scope.get("path_params", {})
        targets = {name: path_ids[name] for name in PATH_IDS if name in path_ids}
        targets.update(event.targets)
        entry = AuditEntry(
            action=event.action,
            status=status,
            principal=principal.name if principal else None,
            key_id=principal.key_id if principal else None,
            client=address,
            method=scope["method"],
            path=scope["path"],
            targets=targets,
        )
        store: AccessStore | None = getattr(scope["app"].state, "access", None)
        try:
            if store is None:
                raise RuntimeError("the audit store is not open")
            await asyncio.to_thread(store.append_audit, entry)
        except Exception:
            # The write itself is done (or failed) already: the answer goes out, the loss is
            # loud.
            logger.exception("audit entry NOT stored: %s", entry)
