"""Response bodies of the HTTP API."""

from __future__ import annotations

import base64
from dataclasses import asdict

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from face_service.analysis import AnalysisOptions, AnalyzedImage, Timings
from face_service.faces import Face, face_size
from face_service.imaging import encode_jpeg


class FacePublic(BaseModel):
    bbox: list[float] = Field(description="[x1, y1, x2, y2] in pixels of the (EXIF-rotated) image")
    det_score: float = Field(description="detector confidence in [0, 1]")
    landmarks: list[list[float]] = Field(
        description="5 points [x, y]: left eye, right eye, nose tip, left and right mouth corner"
    )

    @classmethod
    def from_face(cls, face: Face) -> FacePublic:
        return cls(
            bbox=[round(float(v), 2) for v in face.bbox],
            det_score=round(face.det_score, 5),
            landmarks=[[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks],
        )


_FACE_EXAMPLE = {
    "bbox": [71.5, 73.3, 177.0, 212.0],
    "det_score": 0.8731,
    "landmarks": [[99.6, 129.7], [148.2, 128.8], [124.9, 158.6], [104.3, 183.5], [145.1, 182.9]],
}


class EmbeddingPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"embedding": [0.0249, -0.0457, "..."], "face": _FACE_EXAMPLE, "faces_detected": 1}
            ]
        }
    )

    embedding: list[float] = Field(
        description="L2-normalised ArcFace embedding of the most prominent face"
    )
    face: FacePublic
    faces_detected: int = Field(description="how many faces the image has")


class SimilarityPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "similarity": 0.71,
                    "same_person": True,
                    "threshold": 0.3,
                    "face_a": _FACE_EXAMPLE,
                    "face_b": _FACE_EXAMPLE,
                }
            ]
        }
    )

    similarity: float = Field(
        ge=-1, le=1, description="cosine similarity of the two faces' embeddings"
    )
    same_person: bool = Field(description="similarity >= threshold")
    threshold: float
    face_a: FacePublic
    face_b: FacePublic


class HealthPublic(BaseModel):
    status: str = Field(description="'ok' or 'unavailable'")
    triton: bool = Field(description="whether Triton answers as ready")
    models: dict[str, bool] = Field(description="readiness of each model")
    reason: str | None = Field(None, description="why the service is unavailable")


class LivenessPublic(BaseModel):
    status: str = "alive"


class ErrorPublic(BaseModel):
    detail: str


# ---------------------------------------------------------------- /extract and /draw


# Crops are meant to be embedded again (embed_only): at quality 95 that gave cosine 0.998 to the
# original embedding, at 100 (no chroma subsampling either) >= 0.999.
CROP_JPEG_QUALITY = 100


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
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"images": {"data": ["/9j/4AAQSkZJRg..."]}, "limit_faces": 5}]
        },
    )

    images: Base64Images


class ExtractedFacePublic(BaseModel):
    bbox: list[float]
    det_score: float
    landmarks: list[list[float]] | None = None
    embedding: list[float] | None = None
    embedding_norm: float | None = Field(None, description="norm before L2 normalisation")
    face_size: float = Field(description="shorter side of the box, pixels")
    crop: str | None = Field(None, description="aligned 112x112 face, base64 JPEG")


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


class TimingsPublic(BaseModel):
    decode: float
    detect: float
    embed: float
    total: float


class ExtractPublic(BaseModel):
    images: list[ExtractedImagePublic]
    took_ms: TimingsPublic

    @classmethod
    def from_results(
        cls, results: list[AnalyzedImage], timings: Timings, options: AnalysisOptions
    ) -> ExtractPublic:
        return cls(
            images=[_image_public(result, options) for result in results],
            took_ms=TimingsPublic(**{k: round(v, 2) for k, v in asdict(timings).items()}),
        )


def _image_public(result: AnalyzedImage, options: AnalysisOptions) -> ExtractedImagePublic:
    if result.error is not None:
        return ExtractedImagePublic(
            status="error", error=str(result.error), took_ms=round(result.took_ms, 2)
        )
    crops = result.crops or [None] * len(result.faces)
    return ExtractedImagePublic(
        status="ok",
        width=result.width,
        height=result.height,
        rotation=result.rotation,
        faces=[
            _face_public(face, crop, options)
            for face, crop in zip(result.faces, crops, strict=True)
        ],
        took_ms=round(result.took_ms, 2),
    )


def _face_public(
    face: Face, crop: np.ndarray | None, options: AnalysisOptions
) -> ExtractedFacePublic:
    public = FacePublic.from_face(face)
    return ExtractedFacePublic(
        bbox=public.bbox,
        det_score=public.det_score,
        landmarks=public.landmarks if options.return_landmarks else None,
        embedding=[float(v) for v in face.embedding] if face.embedding is not None else None,
        embedding_norm=round(face.embedding_norm, 4) if face.embedding_norm is not None else None,
        face_size=round(face_size(face), 2),
        crop=base64.b64encode(encode_jpeg(crop, quality=CROP_JPEG_QUALITY)).decode("ascii")
        if crop is not None
        else None,
    )
