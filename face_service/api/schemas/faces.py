"""Bodies of /embedding and /face-similarity, and a face as every route reports it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from face_service.faces import Face


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
