"""Bodies of /embedding and /face-similarity, and a face as every route reports it."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import Form
from pydantic import BaseModel, Field

from face_service.analysis import AUTO_ROTATE_DESCRIPTION, MIN_QUALITY_DESCRIPTION
from face_service.faces import Face

# Decimals of an embedding's values in JSON. Its float32 values resolve about 4e-9 at their usual
# size (1/sqrt(512) = 0.044); float64's 17 digits for them are noise that doubled the body (one
# 512-d embedding 9.4 -> 5.6 KB with 9) and the client's parsing time (22 embeddings: 3.6 ->
# 2.5 ms in json.loads). 9 decimals keep each value within 5e-10 of the float32 (89% of them
# exactly); cosine similarities move by less than 1e-8.
EMBEDDING_DECIMALS = 9


def embedding_values(embedding: np.ndarray) -> list[float]:
    """An embedding as the JSON number list every route returns."""
    return np.round(embedding.astype(np.float64), EMBEDDING_DECIMALS).tolist()


# The auto_rotate form field of the routes that take one photo or two (None: FACE_AUTO_ROTATE).
AutoRotateForm = Annotated[bool | None, Form(description=AUTO_ROTATE_DESCRIPTION)]
# The min_quality form field of the same routes (None: FACE_MIN_QUALITY).
MinQualityForm = Annotated[float | None, Form(ge=0, description=MIN_QUALITY_DESCRIPTION)]


class FacePublic(BaseModel):
    bbox: list[float] = Field(description="[x1, y1, x2, y2] in pixels of the (EXIF-rotated) image")
    det_score: float = Field(description="detector confidence in [0, 1]")
    landmarks: list[list[float]] = Field(
        description="5 points [x, y]: left eye, right eye, nose tip, left and right mouth corner"
    )
    embedding_norm: float | None = Field(
        None,
        description="length of the face's ArcFace embedding before L2 normalisation: a quality "
        "signal, low for blurred, tiny or damaged faces (see min_quality); null where the face "
        "was not embedded",
    )
    rotation: int = Field(
        0,
        description="clockwise degrees (0, 90, 180, 270) the service turned the photo to find "
        "this face upright (auto_rotate): a photo that arrived turned 90 degrees clockwise says "
        "270; bbox and landmarks are in the pixels of the photo as sent all the same",
    )

    @classmethod
    def from_face(cls, face: Face) -> FacePublic:
        return cls(
            bbox=[round(float(v), 2) for v in face.bbox],
            det_score=round(face.det_score, 5),
            landmarks=[[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks],
            embedding_norm=None if face.embedding_norm is None else round(face.embedding_norm, 4),
            rotation=face.rotation,
        )


# Response examples are real answers, captured into the OpenAPI document (api/openapi.py).


class EmbeddingPublic(BaseModel):
    embedding: list[float] = Field(
        description="L2-normalised ArcFace embedding of the most prominent face"
    )
    face: FacePublic
    faces_detected: int = Field(description="how many faces the image has")


class SimilarityPublic(BaseModel):
    similarity: float = Field(
        ge=-1, le=1, description="cosine similarity of the two faces' embeddings"
    )
    same_person: bool = Field(description="similarity >= threshold")
    threshold: float
    face_a: FacePublic
    face_b: FacePublic
