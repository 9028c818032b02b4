"""Bodies of /extract and /draw: their options extend the pipeline's AnalysisOptions."""

from __future__ import annotations

from dataclasses import asdict

from pydantic import BaseModel, ConfigDict, Field

from face_service.analysis import AnalysisOptions, AnalyzedImage, Timings
from face_service.api.schemas.faces import FacePublic, embedding_values
from face_service.faces import Face, face_size


class ExtractStoreOptions(BaseModel):
    store: bool = Field(False, description="save a detection record of each image (GET /records)")
    filename: str | None = Field(None, max_length=1000, description="the record's file name")


class DrawOptionsCreate(AnalysisOptions):
    draw_landmarks: bool = True
    draw_scores: bool = True


class Base64Images(BaseModel):
    data: list[str] = Field(description="images as base64 strings (data: URLs accepted)")


class ExtractCreate(AnalysisOptions, ExtractStoreOptions):
    """Options of /extract: the detection options and whether to store records."""


class ExtractJSONCreate(ExtractCreate):
    model_config = ConfigDict(extra="forbid")

    images: Base64Images


class ExtractedFacePublic(BaseModel):
    bbox: list[float]
    det_score: float
    landmarks: list[list[float]] | None = None
    embedding: list[float] | None = None
    embedding_norm: float | None = Field(None, description="norm before L2 normalisation")
    face_size: float = Field(description="shorter side of the box, pixels")
    crop: str | None = Field(None, description="aligned 112x112 face, base64 JPEG")

    @classmethod
    def from_face(cls, face: Face, *, landmarks: bool, crop: str | None) -> ExtractedFacePublic:
        public = FacePublic.from_face(face)
        return cls(
            bbox=public.bbox,
            det_score=public.det_score,
            landmarks=public.landmarks if landmarks else None,
            embedding=None if face.embedding is None else embedding_values(face.embedding),
            embedding_norm=None if face.embedding_norm is None else round(face.embedding_norm, 4),
            face_size=round(face_size(face), 2),
            crop=crop,
        )


class ExtractedImagePublic(BaseModel):
    status: str = Field(description="'ok' or 'error'")
    error: str | None = None
    width: int | None = None
    height: int | None = None
    rotation: int = Field(
        0, description="clockwise degrees that made the faces upright (auto_rotate)"
    )
    faces: list[ExtractedFacePublic] = Field(default_factory=list)
    took_ms: float
    record_id: str | None = Field(None, description="with store=true: the saved record")

    @classmethod
    def from_image(
        cls, image: AnalyzedImage, *, landmarks: bool, crops: list[str] | None
    ) -> ExtractedImagePublic:
        """``crops``: the faces' crops, encoded already, if they were asked for."""
        if image.error is not None:
            return cls(status="error", error=str(image.error), took_ms=round(image.took_ms, 2))
        face_crops = crops or [None] * len(image.faces)
        return cls(
            status="ok",
            width=image.width,
            height=image.height,
            rotation=image.rotation,
            faces=[
                ExtractedFacePublic.from_face(face, landmarks=landmarks, crop=crop)
                for face, crop in zip(image.faces, face_crops, strict=True)
            ],
            took_ms=round(image.took_ms, 2),
        )


class TimingsPublic(BaseModel):
    decode: float
    detect: float
    embed: float
    total: float

    @classmethod
    def from_timings(cls, timings: Timings) -> TimingsPublic:
        return cls(**{stage: round(ms, 2) for stage, ms in asdict(timings).items()})


class ExtractPublic(BaseModel):
    images: list[ExtractedImagePublic]
    took_ms: TimingsPublic
