"""The API's answers as typed objects. They mirror face_service/api/schemas without importing
the service, so the client installs and runs on its own; unknown fields are kept (``extra``)
so a newer service does not break an older client."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Face(Model):
    bbox: list[float]
    det_score: float
    landmarks: list[list[float]] = Field(default_factory=list)


class Embedding(Model):
    embedding: list[float]
    face: Face
    faces_detected: int


class Similarity(Model):
    similarity: float
    same_person: bool
    threshold: float
    face_a: Face
    face_b: Face


class ExtractedFace(Model):
    bbox: list[float]
    det_score: float
    landmarks: list[list[float]] | None = None
    embedding: list[float] | None = None
    embedding_norm: float | None = None
    face_size: float | None = None
    crop: str | None = None


class ExtractedImage(Model):
    status: str
    error: str | None = None
    width: int | None = None
    height: int | None = None
    rotation: int = 0
    faces: list[ExtractedFace] = Field(default_factory=list)
    took_ms: float | None = None
    record_id: str | None = None


class Timings(Model):
    decode: float
    detect: float
    embed: float
    total: float


class Extraction(Model):
    images: list[ExtractedImage]
    took_ms: Timings


class Drawing(Model):
    """/draw's answer: the JPEG and how many faces are drawn on it."""

    jpeg: bytes
    faces_detected: int


class Template(Model):
    template_id: str
    source: str | None = None
    created_at: datetime


class Identity(Model):
    identity_id: str
    name: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    templates: list[Template] = Field(default_factory=list)


class ImageReport(Model):
    index: int
    filename: str | None = None
    status: str  # 'enrolled' or 'skipped'
    reason: str | None = None
    template_id: str | None = None
    face: Face | None = None


class Enrollment(Model):
    identity: Identity
    images: list[ImageReport]


class Page(Model):
    total: int
    offset: int
    limit: int


class IdentityPage(Page):
    items: list[Identity]


class Deleted(Model):
    deleted: int


class Match(Model):
    identity_id: str
    name: str | None = None
    similarity: float


class IdentifiedFace(Model):
    bbox: list[float] | None = None
    det_score: float | None = None
    match: Match | None = None
    candidates: list[Match] = Field(default_factory=list)


class Identification(Model):
    faces: list[IdentifiedFace]
    threshold: float


class Verification(Model):
    identity_id: str
    similarity: float
    verified: bool
    threshold: float
    face: Face | None = None


class RecordFace(Model):
    bbox: list[float]
    det_score: float
    landmarks: list[list[float]] = Field(default_factory=list)
    embedding: list[float] | None = None


class Record(Model):
    record_id: str
    filename: str
    width: int
    height: int
    channels: int
    faces: list[RecordFace]
    created_at: datetime


class RecordPage(Page):
    items: list[Record]


class Health(Model):
    status: str
    triton: bool | None = None
    models: dict[str, bool] = Field(default_factory=dict)
    reason: str | None = None

    @property
    def ready(self) -> bool:
        return self.status == "ok"


class Liveness(Model):
    status: str


# -- API keys and the audit log (issue 10's routes, admin scope)


class ApiKey(Model):
    """A key as listed: never its secret."""

    key_id: str
    name: str
    scopes: list[str] = Field(default_factory=list)
    created_at: datetime | None = None
    revoked_at: datetime | None = None


class CreatedKey(ApiKey):
    """POST /keys: the secret is in ``key``, shown this once."""

    key: str


class AuditEntry(Model):
    """One write: who (the key's name), what, which ids, when, from where. Never images."""

    seq: int | None = None
    at: datetime
    principal: str | None = None
    key_id: str | None = None
    action: str
    status: int | None = None
    client: str | None = None
    method: str | None = None
    path: str | None = None
    targets: dict[str, Any] = Field(default_factory=dict)


class AuditPage(Page):
    items: list[AuditEntry]
