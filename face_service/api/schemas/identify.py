"""Bodies of /identify and /verify and their /embedding variants."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from face_service.api.schemas.faces import FacePublic
from face_service.api.schemas.identities import IDENTITY_ID_PATTERN
from face_service.gallery.base import Match

EMBEDDING_DIMENSION = 512


class MatchPublic(BaseModel):
    identity_id: str
    name: str | None
    similarity: float

    @classmethod
    def from_match(cls, match: Match) -> MatchPublic:
        return cls(
            identity_id=match.identity_id, name=match.name, similarity=round(match.similarity, 6)
        )


class IdentifiedFacePublic(BaseModel):
    bbox: list[float] | None = None
    det_score: float | None = None
    match: MatchPublic | None = Field(description="the best candidate at or above the threshold")
    candidates: list[MatchPublic]


class IdentifyPublic(BaseModel):
    faces: list[IdentifiedFacePublic]
    threshold: float


class VerifyPublic(BaseModel):
    identity_id: str
    similarity: float
    verified: bool
    threshold: float
    face: FacePublic | None = None


class EmbeddingQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    embedding: list[float] = Field(min_length=EMBEDDING_DIMENSION, max_length=EMBEDDING_DIMENSION)
    top_k: int = Field(5, ge=1, le=100)
    threshold: float | None = Field(None, ge=-1, le=1)


class EmbeddingVerify(BaseModel):
    model_config = ConfigDict(extra="forbid")

    embedding: list[float] = Field(min_length=EMBEDDING_DIMENSION, max_length=EMBEDDING_DIMENSION)
    identity_id: str = Field(pattern=IDENTITY_ID_PATTERN)
    threshold: float | None = Field(None, ge=-1, le=1)
