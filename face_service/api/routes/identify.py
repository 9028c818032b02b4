"""1:N identification and 1:1 verification against the gallery: /identify and /verify for an
image, and their /embedding variants for an embedding computed before."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile

from face_service.api.auth import AUTH_ERRORS, require_scope
from face_service.api.deps import ADMITTED, AdmissionDep, IdentificationDep, SettingsDep
from face_service.api.json_limits import BoundedJSONRoute
from face_service.api.openapi import error_responses
from face_service.api.schemas.faces import AutoRotateForm, FacePublic
from face_service.api.schemas.identify import (
    EmbeddingQuery,
    EmbeddingVerify,
    IdentifiedFacePublic,
    IdentifyPublic,
    MatchPublic,
    VerifyPublic,
)
from face_service.api.schemas.identities import IDENTITY_ID_PATTERN
from face_service.api.uploads import read_image, require_multipart
from face_service.identification import IdentifiedFace, unit_vector

router = APIRouter(
    route_class=BoundedJSONRoute,
    tags=["identify"],
    responses={**AUTH_ERRORS, **error_responses(400, 404, 413, 415, 422, 503)},
    dependencies=[require_scope("read")],
)


def identified_public(result: IdentifiedFace) -> IdentifiedFacePublic:
    public = FacePublic.from_face(result.face) if result.face is not None else None
    return IdentifiedFacePublic(
        bbox=public.bbox if public else None,
        det_score=public.det_score if public else None,
        rotation=public.rotation if public else None,
        match=MatchPublic.from_match(result.match) if result.match else None,
        candidates=[MatchPublic.from_match(m) for m in result.candidates],
    )


@router.post(
    "/identify",
    response_model=IdentifyPublic,
    summary="1:N: who is each face of the image?",
    dependencies=[Depends(require_multipart)],
)
async def identify(
    image: Annotated[UploadFile, File(description="an image with one or more faces")],
    identification: IdentificationDep,
    admission: AdmissionDep,
    settings: SettingsDep,
    top_k: Annotated[int, Form(ge=1, le=100)] = 5,
    threshold: Annotated[float | None, Form(ge=-1, le=1)] = None,
    auto_rotate: AutoRotateForm = None,
) -> IdentifyPublic:
    data = await read_image(image, "image", settings)
    async with admission.slot():
        results = await identification.identify(
            data, top_k=top_k, threshold=threshold, auto_rotate=auto_rotate
        )
    return IdentifyPublic(
        faces=[identified_public(r) for r in results], threshold=identification.threshold(threshold)
    )


@router.post(
    "/identify/embedding",
    response_model=IdentifyPublic,
    summary="1:N for an embedding",
    dependencies=ADMITTED,
)
async def identify_embedding(
    query: EmbeddingQuery, identification: IdentificationDep
) -> IdentifyPublic:
    result = await identification.identify_embedding(
        unit_vector(query.embedding, identification.gallery.dimension),
        top_k=query.top_k,
        threshold=query.threshold,
    )
    return IdentifyPublic(
        faces=[identified_public(result)], threshold=identification.threshold(query.threshold)
    )


@router.post(
    "/verify",
    response_model=VerifyPublic,
    summary="1:1: is the image's face this person?",
    dependencies=[Depends(require_multipart)],
)
async def verify(
    image: Annotated[UploadFile, File(description="an image of the person")],
    identity_id: Annotated[str, Form(pattern=IDENTITY_ID_PATTERN)],
    identification: IdentificationDep,
    admission: AdmissionDep,
    settings: SettingsDep,
    threshold: Annotated[float | None, Form(ge=-1, le=1)] = None,
    auto_rotate: AutoRotateForm = None,
) -> VerifyPublic:
    data = await read_image(image, "image", settings)
    async with admission.slot():
        face, similarity = await identification.verify(
            data, identity_id=identity_id, auto_rotate=auto_rotate
        )
    limit = identification.threshold(threshold)
    return VerifyPublic(
        identity_id=identity_id,
        similarity=round(similarity, 6),
        verified=similarity >= limit,
        threshold=limit,
        face=FacePublic.from_face(face),
    )


@router.post(
    "/verify/embedding",
    response_model=VerifyPublic,
    summary="1:1 for an embedding",
    dependencies=ADMITTED,
)
async def verify_embedding(
    body: EmbeddingVerify, identification: IdentificationDep
) -> VerifyPublic:
    similarity = await identification.verify_embedding(
        unit_vector(body.embedding, identification.gallery.dimension), identity_id=body.identity_id
    )
    limit = identification.threshold(body.threshold)
    return VerifyPublic(
        identity_id=body.identity_id,
        similarity=round(similarity, 6),
        verified=similarity >= limit,
        threshold=limit,
    )
