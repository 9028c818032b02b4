"""Bodies of the key management and audit log routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from face_service.auth.keys import NAME_PATTERN
from face_service.gallery import ApiKey, AuditEntry


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=NAME_PATTERN,
        description="who uses the key: logs and the audit log show this name",
        examples=["reception-desk"],
    )
    scopes: list[Literal["read", "write", "admin", "metrics"]] = Field(
        min_length=1,
        max_length=4,
        description="admin implies write implies read; metrics (GET /metrics only): admin "
        "implies it",
    )


class KeyPublic(BaseModel):
    key_id: str
    name: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_key(cls, key: ApiKey) -> KeyPublic:
        return cls(
            key_id=key.key_id,
            name=key.name,
            scopes=list(key.scopes),
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class KeyCreatedPublic(KeyPublic):
    key: str = Field(description="the key itself: shown only in this answer, never again")


class KeyListPublic(BaseModel):
    items: list[KeyPublic]


class AuditEntryPublic(BaseModel):
    seq: int
    at: datetime
    principal: str | None = Field(description="the key's name; null while auth is off")
    key_id: str | None
    action: str
    status: int = Field(description="the HTTP status of the answer (0: a command-line change)")
    client: str | None = Field(description="the client's address as the API saw it")
    method: str
    path: str
    targets: dict[str, Any] = Field(description="the ids (and counts) the request touched")

    @classmethod
    def from_entry(cls, entry: AuditEntry) -> AuditEntryPublic:
        return cls(
            seq=entry.seq or 0,
            at=entry.at,
            principal=entry.principal,
            key_id=entry.key_id,
            action=entry.action,
            status=entry.status,
            client=entry.client,
            method=entry.method,
            path=entry.path,
            targets=entry.targets,
        )


class AuditPagePublic(BaseModel):
    items: list[AuditEntryPublic]
    total: int
    offset: int
    limit: int
