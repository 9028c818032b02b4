"""Bodies of /identify and /verify and their /embedding variants."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from face_service.api.schemas.faces import FacePublic
from face_service.api.schemas.identities import IDENTITY_ID_PATTERN
from face_service.gallery import Match

# The schema bounds a query's size; its exact width is the recognizer's, checked when it is used
# (unit_vector), since a model pack decides it.
MAX_EMBEDDING_VALUES = 4096
EMBEDDING_DESCRIPTION = "as many values as /embedding returns (512 for InsightFace's packs)"


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
    rotation: int | None = Field(None, description="as the face's rotation in /embedding")
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

    embedding: list[float] = Field(
        min_length=1, max_length=MAX_EMBEDDING_VALUES, description=EMBEDDING_DESCRIPTION
    )
    top_k: int = Field(5, ge=1, le=100)
    threshold: float | None = Field(None, ge=-1, le=1)


class EmbeddingVerify(BaseModel):
    model_config = ConfigDict(extra="forbid")

    embedding: list[float] = Field(
        min_length=1, max_length=MAX_EMBEDDING_VALUES, description=EMBEDDING_DESCRIPTION
    )
    identity_id: str = Field(pattern=IDENTITY_ID_PATTERN)
    threshold: float | None = Field(None, ge=-1, le=1)
