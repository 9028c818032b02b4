"""Routes of the identity gallery: enroll, manage, identify, verify, and detection records."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile

from face_service.api.deps import AdmissionDep, GalleryDep, IdentificationDep, SettingsDep
from face_service.api.gallery_schemas import (
    IDENTITY_ID_PATTERN,
    DeletedPublic,
    EmbeddingQuery,
    EmbeddingVerify,
    EnrollmentPublic,
    IdentifiedFacePublic,
    IdentifyPublic,
    IdentityCreateForm,
    IdentityPagePublic,
    IdentityPublic,
    IdentityUpdate,
    ImageReport,
    MatchPublic,
    MergeCreate,
    RecordPagePublic,
    RecordPublic,
    VerifyPublic,
)
from face_service.api.schemas import ErrorPublic, FacePublic
from face_service.api.uploads import (
    multipart_openapi,
    read_image,
    read_multipart,
    require_multipart,
    validation_error,
)
from face_service.errors import ConfirmationRequiredError, FaceServiceError
from face_service.gallery import UNSET, Identity
from face_service.identification import EnrollmentImage, IdentifiedFace, unit_vector
from face_service.settings import Settings

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorPublic, "description": description}
    for code, description in {
        400: "an image that cannot be read",
        404: "no such identity, template or record",
        409: "the identity id exists already",
        413: "too large",
        415: "not multipart/form-data, or a part that is not an image",
        422: "no usable face, or an invalid field",
        503: "Triton, a model or the gallery database is unavailable",
    }.items()
}


def report_public(report: EnrollmentImage) -> ImageReport:
    return ImageReport(
        index=report.index,
        filename=report.filename,
        status="skipped" if report.template_id is None else "enrolled",
        reason=report.reason,
        template_id=report.template_id,
        face=FacePublic.from_face(report.face) if report.face is not None else None,
    )


def identified_public(result: IdentifiedFace) -> IdentifiedFacePublic:
    public = FacePublic.from_face(result.face) if result.face is not None else None
    return IdentifiedFacePublic(
        bbox=public.bbox if public else None,
        det_score=public.det_score if public else None,
        match=MatchPublic.from_match(result.match) if result.match else None,
        candidates=[MatchPublic.from_match(m) for m in result.candidates],
    )


def enrollment_public(identity: Identity, reports: list[EnrollmentImage]) -> EnrollmentPublic:
    return EnrollmentPublic(
        identity=IdentityPublic.from_identity(identity), images=[report_public(r) for r in reports]
    )


async def read_enrollment(
    request: Request, settings: Settings
) -> tuple[list[bytes | FaceServiceError], list[str | None], IdentityCreateForm]:
    require_multipart(request)
    images, fields, filenames = await read_multipart(
        request, IdentityCreateForm, settings, files_field="images"
    )
    return images, filenames, fields


router = APIRouter(tags=["gallery"], responses=ERRORS)


@router.post(
    "/identities",
    status_code=201,
    response_model=EnrollmentPublic,
    summary="Enroll a person: one template per image (its most prominent face)",
    openapi_extra=multipart_openapi(IdentityCreateForm, "images", "1..N images of the person"),
)
async def enroll(
    request: Request,
    identification: IdentificationDep,
    admission: AdmissionDep,
    settings: SettingsDep,
) -> EnrollmentPublic:
    images, filenames, fields = await read_enrollment(request, settings)
    async with admission.slot():
        identity, reports = await identification.enroll(
            identity_id=fields.identity_id,
            name=fields.name,
            metadata=fields.metadata,
            images=images,
            filenames=filenames,
        )
    return enrollment_public(identity, reports)


@router.post(
    "/identities/{identity_id}/images",
    response_model=EnrollmentPublic,
    summary="Add templates to a person",
    openapi_extra=multipart_openapi(IdentityCreateForm, "images", "1..N more images"),
)
async def add_images(
    identity_id: str,
    request: Request,
    identification: IdentificationDep,
    admission: AdmissionDep,
    settings: SettingsDep,
) -> EnrollmentPublic:
    images, filenames, fields = await read_enrollment(request, settings)
    if fields.model_fields_set:
        raise validation_error(sorted(fields.model_fields_set)[0], "only images are accepted here")
    async with admission.slot():
        identity, reports = await identification.add_images(
            identity_id=identity_id, images=images, filenames=filenames
        )
    return enrollment_public(identity, reports)


@router.delete(
    "/identities/{identity_id}/templates/{template_id}",
    response_model=IdentityPublic,
    summary="Remove one template of a person",
)
async def delete_template(
    identity_id: str, template_id: str, gallery: GalleryDep
) -> IdentityPublic:
    identity = await asyncio.to_thread(
        gallery.delete_template, identity_id=identity_id, template_id=template_id
    )
    return IdentityPublic.from_identity(identity)


@router.patch(
    "/identities/{identity_id}", response_model=IdentityPublic, summary="Change name or metadata"
)
async def update_identity(
    identity_id: str, update: IdentityUpdate, gallery: GalleryDep
) -> IdentityPublic:
    changes = update.model_dump(exclude_unset=True)
    if "metadata" in changes and changes["metadata"] is None:
        raise validation_error("metadata", "metadata must be a JSON object")
    identity = await asyncio.to_thread(
        gallery.update_identity,
        identity_id=identity_id,
        name=changes.get("name", UNSET),
        metadata=changes.get("metadata", UNSET),
    )
    return IdentityPublic.from_identity(identity)


@router.get(
    "/identities", response_model=IdentityPagePublic, summary="List people, a page at a time"
)
async def list_identities(
    gallery: GalleryDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    name: Annotated[str | None, Query(max_length=200, description="substring, any case")] = None,
) -> IdentityPagePublic:
    items, total = await asyncio.to_thread(
        gallery.list_identities, offset=offset, limit=limit, name_contains=name
    )
    return IdentityPagePublic(
        items=[IdentityPublic.from_identity(i) for i in items],
        total=total,
        offset=offset,
        limit=limit,
    )


@router.get("/identities/{identity_id}", response_model=IdentityPublic, summary="One person")
async def get_identity(identity_id: str, gallery: GalleryDep) -> IdentityPublic:
    identity = await asyncio.to_thread(gallery.get_identity, identity_id=identity_id)
    return IdentityPublic.from_identity(identity)


@router.delete("/identities/{identity_id}", status_code=204, summary="Delete a person")
async def delete_identity(identity_id: str, gallery: GalleryDep) -> Response:
    await asyncio.to_thread(gallery.delete_identity, identity_id=identity_id)
    return Response(status_code=204)


@router.delete("/identities", response_model=DeletedPublic, summary="Delete every person")
async def delete_all(
    gallery: GalleryDep,
    confirm: Annotated[bool, Query(description="must be true: this empties the gallery")] = False,
) -> DeletedPublic:
    if not confirm:
        raise ConfirmationRequiredError("deleting every identity needs ?confirm=true")
    return DeletedPublic(deleted=await asyncio.to_thread(gallery.delete_all))


@router.post(
    "/identities/{identity_id}/merge",
    response_model=IdentityPublic,
    summary="Move another person's templates to this one and delete the other",
)
async def merge(identity_id: str, body: MergeCreate, gallery: GalleryDep) -> IdentityPublic:
    if body.source_id == identity_id:
        raise validation_error("source_id", "cannot merge an identity into itself")
    identity = await asyncio.to_thread(
        gallery.merge, target_id=identity_id, source_id=body.source_id
    )
    return IdentityPublic.from_identity(identity)


@router.post(
    "/identify", response_model=IdentifyPublic, summary="1:N: who is each face of the image?"
)
async def identify(
    image: Annotated[UploadFile, File(description="an image with one or more faces")],
    request: Request,
    identification: IdentificationDep,
    admission: AdmissionDep,
    settings: SettingsDep,
    top_k: Annotated[int, Form(ge=1, le=100)] = 5,
    threshold: Annotated[float | None, Form(ge=-1, le=1)] = None,
) -> IdentifyPublic:
    require_multipart(request)
    data = await read_image(image, "image", settings)
    async with admission.slot():
        results = await identification.identify(data, top_k=top_k, threshold=threshold)
    return IdentifyPublic(
        faces=[identified_public(r) for r in results], threshold=identification.threshold(threshold)
    )


@router.post(
    "/identify/embedding", response_model=IdentifyPublic, summary="1:N for a 512-d embedding"
)
async def identify_embedding(
    query: EmbeddingQuery, identification: IdentificationDep
) -> IdentifyPublic:
    result = await identification.identify_embedding(
        unit_vector(query.embedding), top_k=query.top_k, threshold=query.threshold
    )
    return IdentifyPublic(
        faces=[identified_public(result)], threshold=identification.threshold(query.threshold)
    )


@router.post(
    "/verify", response_model=VerifyPublic, summary="1:1: is the image's face this person?"
)
async def verify(
    image: Annotated[UploadFile, File(description="an image of the person")],
    identity_id: Annotated[str, Form(pattern=IDENTITY_ID_PATTERN)],
    request: Request,
    identification: IdentificationDep,
    admission: AdmissionDep,
    settings: SettingsDep,
    threshold: Annotated[float | None, Form(ge=-1, le=1)] = None,
) -> VerifyPublic:
    require_multipart(request)
    data = await read_image(image, "image", settings)
    async with admission.slot():
        face, similarity = await identification.verify(data, identity_id=identity_id)
    limit = identification.threshold(threshold)
    return VerifyPublic(
        identity_id=identity_id,
        similarity=round(similarity, 6),
        verified=similarity >= limit,
        threshold=limit,
        face=FacePublic.from_face(face),
    )


@router.post("/verify/embedding", response_model=VerifyPublic, summary="1:1 for a 512-d embedding")
async def verify_embedding(
    body: EmbeddingVerify, identification: IdentificationDep
) -> VerifyPublic:
    similarity = await identification.verify_embedding(
        unit_vector(body.embedding), identity_id=body.identity_id
    )
    limit = identification.threshold(body.threshold)
    return VerifyPublic(
        identity_id=body.identity_id,
        similarity=round(similarity, 6),
        verified=similarity >= limit,
        threshold=limit,
    )


@router.get("/records", response_model=RecordPagePublic, summary="Detection records by file name")
async def find_records(
    gallery: GalleryDep,
    filename: Annotated[str | None, Query(max_length=1000, description="substring")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RecordPagePublic:
    items, total = await asyncio.to_thread(
        gallery.find_records, filename_contains=filename, offset=offset, limit=limit
    )
    return RecordPagePublic(
        items=[RecordPublic.from_record(r) for r in items], total=total, offset=offset, limit=limit
    )


@router.get("/records/{record_id}", response_model=RecordPublic, summary="One detection record")
async def get_record(record_id: str, gallery: GalleryDep) -> RecordPublic:
    return RecordPublic.from_record(
        await asyncio.to_thread(gallery.get_record, record_id=record_id)
    )


@router.delete("/records/{record_id}", status_code=204, summary="Delete a detection record")
async def delete_record(record_id: str, gallery: GalleryDep) -> Response:
    await asyncio.to_thread(gallery.delete_record, record_id=record_id)
    return Response(status_code=204)
