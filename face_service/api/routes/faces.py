"""/embedding (the most prominent face of an image) and /face-similarity (1:1 of two images)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile

from face_service.api.auth import AUTH_ERRORS, require_scope
from face_service.api.deps import AdmissionDep, PipelineDep, SettingsDep
from face_service.api.json_limits import BoundedJSONRoute
from face_service.api.openapi import UPLOAD_ERRORS
from face_service.api.schemas.faces import (
    AutoRotateForm,
    EmbeddingPublic,
    FacePublic,
    MinQualityForm,
    SimilarityPublic,
    embedding_values,
)
from face_service.api.uploads import read_image, require_multipart
from face_service.faces import cosine_similarity

# The key is checked first (401/403 before anything is read); require_multipart runs before
# FastAPI validates the File/Form fields: another body is a 415.
router = APIRouter(
    route_class=BoundedJSONRoute,
    tags=["faces"],
    responses={**AUTH_ERRORS, **UPLOAD_ERRORS},
    dependencies=[require_scope("read"), Depends(require_multipart)],
)


@router.post(
    "/embedding",
    response_model=EmbeddingPublic,
    summary="Embedding of the most prominent face in an image",
)
async def embedding(
    image: Annotated[
        UploadFile, File(description="JPEG, PNG, WebP, BMP, ... with one or more faces")
    ],
    pipeline: PipelineDep,
    admission: AdmissionDep,
    settings: SettingsDep,
    auto_rotate: AutoRotateForm = None,
    min_quality: MinQualityForm = None,
) -> EmbeddingPublic:
    data = await read_image(image, "image", settings)
    async with admission.slot():
        [(face, count)] = await pipeline.prominent_faces(
            [(data, "image")], auto_rotate=auto_rotate, min_quality=min_quality
        )
    return EmbeddingPublic(
        embedding=embedding_values(face.embedding),
        face=FacePublic.from_face(face),
        faces_detected=count,
    )


@router.post(
    "/face-similarity",
    response_model=SimilarityPublic,
    summary="1:1 verification: are the most prominent faces of two images the same person?",
)
async def face_similarity(
    image_a: Annotated[UploadFile, File(description="first image")],
    image_b: Annotated[UploadFile, File(description="second image")],
    pipeline: PipelineDep,
    admission: AdmissionDep,
    settings: SettingsDep,
    threshold: Annotated[
        float | None,
        Form(
            ge=-1,
            le=1,
            description="decision threshold; default: the pack's, or FACE_SIMILARITY_THRESHOLD",
        ),
    ] = None,
    auto_rotate: AutoRotateForm = None,
    min_quality: MinQualityForm = None,
) -> SimilarityPublic:
    data_a = await read_image(image_a, "image_a", settings)
    data_b = await read_image(image_b, "image_b", settings)
    async with admission.slot():
        (face_a, _), (face_b, _) = await pipeline.prominent_faces(
            [(data_a, "image_a"), (data_b, "image_b")],
            auto_rotate=auto_rotate,
            min_quality=min_quality,
        )
    similarity = cosine_similarity(face_a.embedding, face_b.embedding)
    decision_threshold = pipeline.similarity_threshold if threshold is None else threshold
    return SimilarityPublic(
        similarity=round(max(-1.0, min(1.0, similarity)), 6),
        same_person=similarity >= decision_threshold,
        threshold=decision_threshold,
        face_a=FacePublic.from_face(face_a),
        face_b=FacePublic.from_face(face_b),
    )
