"""The identity routes: enroll a person, add or remove templates, rename, list, delete, merge."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from face_service.analysis import ImageInput
from face_service.api.auth import AUTH_ERRORS, record_targets, require_scope
from face_service.api.deps import ADMITTED, AdmissionDep, EnrollmentDep, GalleryDep, SettingsDep
from face_service.api.json_limits import BoundedJSONRoute
from face_service.api.openapi import error_responses, multipart_openapi
from face_service.api.schemas import MAX_PAGE_OFFSET
from face_service.api.schemas.faces import FacePublic
from face_service.api.schemas.identities import (
    DeletedPublic,
    EnrollmentPublic,
    IdentityCreateForm,
    IdentityPagePublic,
    IdentityPublic,
    IdentityUpdate,
    ImageReport,
    MergeCreate,
)
from face_service.api.uploads import read_multipart, require_multipart, validation_error
from face_service.enrollment import EnrollmentImage
from face_service.errors import ConfirmationRequiredError, FaceCropNotFoundError
from face_service.gallery import UNSET, Identity
from face_service.settings import Settings

router = APIRouter(
    route_class=BoundedJSONRoute,
    tags=["identities"],
    responses={**AUTH_ERRORS, **error_responses(400, 404, 409, 413, 415, 422, 503)},
)

# The value DELETE /identities needs: a deliberate phrase, not any truthy string.
DELETE_ALL_CONFIRMATION = "delete-all-identities"


def report_public(report: EnrollmentImage) -> ImageReport:
    return ImageReport(
        index=report.index,
        filename=report.filename,
        status="skipped" if report.template_id is None else "enrolled",
        reason=report.reason,
        template_id=report.template_id,
        face=FacePublic.from_face(report.face) if report.face is not None else None,
    )


def enrollment_public(identity: Identity, reports: list[EnrollmentImage]) -> EnrollmentPublic:
    return EnrollmentPublic(
        identity=IdentityPublic.from_identity(identity), images=[report_public(r) for r in reports]
    )


async def read_enrollment(
    request: Request, settings: Settings
) -> tuple[list[ImageInput], list[str | None], IdentityCreateForm]:
    images, fields, filenames = await read_multipart(
        request, IdentityCreateForm, settings, files_field="images"
    )
    return images, filenames, fields


@router.post(
    "/identities",
    status_code=201,
    response_model=EnrollmentPublic,
    summary="Enroll a person: one template per image (its most prominent face)",
    openapi_extra=multipart_openapi(
        IdentityCreateForm, "images", "1..N images of the person", name="EnrollForm"
    ),
    dependencies=[require_scope("write", audit="identity.create"), Depends(require_multipart)],
)
async def enroll(
    request: Request,
    enrollment: EnrollmentDep,
    admission: AdmissionDep,
    settings: SettingsDep,
) -> EnrollmentPublic:
    images, filenames, fields = await read_enrollment(request, settings)
    async with admission.slot():
        identity, reports = await enrollment.enroll(
            identity_id=fields.identity_id,
            name=fields.name,
            metadata=fields.metadata,
            images=images,
            filenames=filenames,
            auto_rotate=fields.auto_rotate,
        )
    record_targets(request, identity_id=identity.identity_id, template_ids=template_ids(reports))
    return enrollment_public(identity, reports)


def template_ids(reports: list[EnrollmentImage]) -> list[str]:
    return [r.template_id for r in reports if r.template_id is not None]


@router.post(
    "/identities/{identity_id}/images",
    response_model=EnrollmentPublic,
    summary="Add templates to a person",
    openapi_extra=multipart_openapi(
        IdentityCreateForm,
        "images",
        "1..N more images",
        name="AddImagesForm",
        exclude=frozenset({"identity_id", "name", "metadata"}),
    ),
    dependencies=[require_scope("write", audit="identity.add_images"), Depends(require_multipart)],
)
async def add_images(
    identity_id: str,
    request: Request,
    enrollment: EnrollmentDep,
    admission: AdmissionDep,
    settings: SettingsDep,
) -> EnrollmentPublic:
    images, filenames, fields = await read_enrollment(request, settings)
    if other := fields.model_fields_set - {"auto_rotate"}:
        raise validation_error(sorted(other)[0], "only images and auto_rotate are accepted here")
    async with admission.slot():
        identity, reports = await enrollment.add_images(
            identity_id=identity_id,
            images=images,
            filenames=filenames,
            auto_rotate=fields.auto_rotate,
        )
    record_targets(request, template_ids=template_ids(reports))
    return enrollment_public(identity, reports)


@router.delete(
    "/identities/{identity_id}/templates/{template_id}",
    response_model=IdentityPublic,
    summary="Remove one template of a person",
    dependencies=[require_scope("write", audit="template.delete"), *ADMITTED],
)
async def delete_template(
    identity_id: str, template_id: str, gallery: GalleryDep
) -> IdentityPublic:
    identity = await asyncio.to_thread(
        gallery.delete_template, identity_id=identity_id, template_id=template_id
    )
    return IdentityPublic.from_identity(identity)


@router.get(
    "/identities/{identity_id}/templates/{template_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "the aligned face, 112x112"}},
    summary="The face crop a template was made from (when FACE_GALLERY_STORE_FACE_CROPS was on)",
    dependencies=[require_scope("read")],
)
async def template_image(identity_id: str, template_id: str, gallery: GalleryDep) -> Response:
    image = await asyncio.to_thread(
        gallery.face_crop, identity_id=identity_id, template_id=template_id
    )
    if image is None:
        raise FaceCropNotFoundError(f"template {template_id!r} has no stored face crop")
    # Ids are never reused: a template's crop never changes.
    return Response(
        image, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"}
    )


@router.patch(
    "/identities/{identity_id}",
    response_model=IdentityPublic,
    summary="Change name or metadata",
    dependencies=[require_scope("write", audit="identity.update"), *ADMITTED],
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
    "/identities",
    response_model=IdentityPagePublic,
    summary="List people, a page at a time",
    dependencies=[require_scope("read"), *ADMITTED],
)
async def list_identities(
    gallery: GalleryDep,
    offset: Annotated[int, Query(ge=0, le=MAX_PAGE_OFFSET)] = 0,
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


@router.get(
    "/identities/{identity_id}",
    response_model=IdentityPublic,
    summary="One person",
    dependencies=[require_scope("read"), *ADMITTED],
)
async def get_identity(identity_id: str, gallery: GalleryDep) -> IdentityPublic:
    identity = await asyncio.to_thread(gallery.get_identity, identity_id=identity_id)
    return IdentityPublic.from_identity(identity)


@router.delete(
    "/identities/{identity_id}",
    status_code=204,
    summary="Delete a person",
    dependencies=[require_scope("write", audit="identity.delete"), *ADMITTED],
)
async def delete_identity(identity_id: str, gallery: GalleryDep) -> Response:
    await asyncio.to_thread(gallery.delete_identity, identity_id=identity_id)
    return Response(status_code=204)


@router.delete(
    "/identities",
    response_model=DeletedPublic,
    summary="Delete every person (admin, with an explicit confirmation)",
    dependencies=[require_scope("admin", audit="identity.delete_all"), *ADMITTED],
)
async def delete_all(
    request: Request,
    gallery: GalleryDep,
    confirm: Annotated[
        str | None,
        Query(
            max_length=100,
            description=f"must be `{DELETE_ALL_CONFIRMATION}`: this empties the gallery",
        ),
    ] = None,
) -> DeletedPublic:
    if confirm != DELETE_ALL_CONFIRMATION:
        raise ConfirmationRequiredError(
            f"deleting every identity needs ?confirm={DELETE_ALL_CONFIRMATION}"
        )
    deleted = await asyncio.to_thread(gallery.delete_all)
    record_targets(request, deleted=deleted)
    return DeletedPublic(deleted=deleted)


@router.post(
    "/identities/{identity_id}/merge",
    response_model=IdentityPublic,
    summary="Move another person's templates to this one and delete the other",
    dependencies=[require_scope("write", audit="identity.merge"), *ADMITTED],
)
async def merge(
    identity_id: str, body: MergeCreate, request: Request, gallery: GalleryDep
) -> IdentityPublic:
    record_targets(request, source_id=body.source_id)
    if body.source_id == identity_id:
        raise validation_error("source_id", "cannot merge an identity into itself")
    identity = await asyncio.to_thread(
        gallery.merge, target_id=identity_id, source_id=body.source_id
    )
    return IdentityPublic.from_identity(identity)
