"""/extract (every face of one or more images, optionally stored as detection records) and
/draw (one image with its faces drawn)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from face_service.analysis import AnalyzedImage, ImageInput
from face_service.api.auth import AUTH_ERRORS, AuditEvent, check_scope, require_scope
from face_service.api.deps import AdmissionDep, GalleryDep, PipelineDep, SettingsDep
from face_service.api.json_limits import BoundedJSONRoute
from face_service.api.openapi import UPLOAD_ERRORS, multipart_openapi
from face_service.api.schemas.extract import (
    DrawOptionsCreate,
    ExtractCreate,
    ExtractedImagePublic,
    ExtractJSONCreate,
    ExtractPublic,
    TimingsPublic,
)
from face_service.api.schemas.faces import embedding_values
from face_service.api.uploads import (
    read_extract_json,
    read_multipart,
    require_multipart,
    require_multipart_or_json,
    validation_error,
)
from face_service.drawing import draw_faces
from face_service.errors import InvalidImageError
from face_service.gallery import Gallery, RecordFace
from face_service.imaging import encode_jpeg

# Crops are meant to be embedded again (embed_only): at quality 95 that gave cosine 0.998 to the
# original embedding, at 100 (no chroma subsampling either) >= 0.999.
CROP_JPEG_QUALITY = 100

router = APIRouter(
    route_class=BoundedJSONRoute,
    tags=["extract"],
    responses={**AUTH_ERRORS, **UPLOAD_ERRORS},
    dependencies=[require_scope("read")],
)

# Options /draw accepts but that change nothing in its picture: not documented there.
DRAW_IGNORES = frozenset(
    {"return_embedding", "return_landmarks", "return_face_crops", "embed_only"}
)


def extract_openapi() -> dict:
    """/extract reads multipart forms and JSON bodies itself: both documented."""
    extra = multipart_openapi(ExtractCreate, "images", "images, repeated", name="ExtractForm")
    content = extra["requestBody"]["content"]
    content["application/json"] = {"schema": ExtractJSONCreate.model_json_schema()}
    return extra


@router.post(
    "/extract",
    response_model=ExtractPublic,
    summary="Every face of one or more images: boxes, scores, landmarks, embeddings, crops",
    description=(
        "Send the images either as multipart files (`images`, repeated, with the options as "
        'form fields) or as JSON (`{"images": {"data": ["<base64>", ...]}, ...options}`). '
        "An image that cannot be read is reported in its own entry; the others still succeed. "
        "Detector options left out take the service's settings. `store=true` saves a "
        "detection record per image and needs the `write` scope."
    ),
    openapi_extra=extract_openapi(),
    dependencies=[Depends(require_multipart_or_json)],
)
async def extract(
    request: Request,
    pipeline: PipelineDep,
    admission: AdmissionDep,
    gallery: GalleryDep,
    settings: SettingsDep,
) -> ExtractPublic:
    images: list[ImageInput]
    options: ExtractCreate
    filenames: list[str | None] = []
    if request.headers.get("content-type", "").startswith("application/json"):
        images, options = await read_extract_json(request, settings)
    else:
        images, options, filenames = await read_multipart(
            request, ExtractCreate, settings, files_field="images"
        )
    if options.store:  # a write: it needs the scope, and the audit log records it
        request.state.audit = AuditEvent("record.create")
        check_scope(request, "write")
    async with admission.slot():
        results, timings = await pipeline.analyze(images, options)
    crops = await asyncio.to_thread(encode_crops, results) if options.return_face_crops else None
    public = ExtractPublic(
        images=[
            ExtractedImagePublic.from_image(
                result, landmarks=options.return_landmarks, crops=crops[index] if crops else None
            )
            for index, result in enumerate(results)
        ],
        took_ms=TimingsPublic.from_timings(timings),
    )
    if options.store:
        names = filenames or [None] * len(results)
        record_ids = await store_records(gallery, results, options.filename, names)
        for entry, record_id in zip(public.images, record_ids, strict=True):
            entry.record_id = record_id
        request.state.audit.targets["record_ids"] = [r for r in record_ids if r is not None]
    return public


@router.post(
    "/draw",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "the image with the faces drawn"}
    },
    summary="The image as JPEG with every face's box, score and landmarks drawn",
    openapi_extra=multipart_openapi(
        DrawOptionsCreate,
        "image",
        "one image",
        single=True,
        name="DrawForm",
        exclude=DRAW_IGNORES,
    ),
    dependencies=[Depends(require_multipart)],
)
async def draw(
    request: Request, pipeline: PipelineDep, admission: AdmissionDep, settings: SettingsDep
) -> Response:
    images, options, _ = await read_multipart(
        request, DrawOptionsCreate, settings, files_field="image"
    )
    if len(images) != 1:
        raise validation_error("image", f"send exactly one image, not {len(images)}")
    # A picture of the boxes needs neither embeddings nor crops.
    detect_only = options.model_copy(update={"return_embedding": False, "return_face_crops": False})
    async with admission.slot():
        [result], _ = await pipeline.analyze(images, detect_only)
    if result.error is not None or result.image is None:
        raise result.error or InvalidImageError("'image' could not be read")
    image = result.image
    drawn = await asyncio.to_thread(
        lambda: encode_jpeg(
            draw_faces(
                image,
                result.faces_in_decoded_pixels(),
                landmarks=options.draw_landmarks,
                scores=options.draw_scores,
            )
        )
    )
    return Response(
        drawn, media_type="image/jpeg", headers={"X-Faces-Detected": str(len(result.faces))}
    )


def encode_crops(results: Sequence[AnalyzedImage]) -> list[list[str]]:
    """Each image's face crops as base64 JPEG, for the response."""
    return [
        [
            base64.b64encode(encode_jpeg(crop, quality=CROP_JPEG_QUALITY)).decode("ascii")
            for crop in result.crops
        ]
        for result in results
    ]


async def store_records(
    gallery: Gallery,
    results: Sequence[AnalyzedImage],
    filename: str | None,
    upload_names: Sequence[str | None],
) -> list[str | None]:
    """Saves a detection record per readable image; returns the record ids (None for images
    that could not be read). ``filename`` names a single image; with several, each record takes
    its upload's name, else ``filename[index]``."""
    record_ids: list[str | None] = []
    for index, (result, upload_name) in enumerate(zip(results, upload_names, strict=True)):
        if result.image is None:
            record_ids.append(None)
            continue
        if len(results) == 1 and filename:
            name = filename
        else:
            name = upload_name or f"{filename or 'image'}[{index}]"
        faces = [
            RecordFace(
                bbox=[round(float(v), 2) for v in face.bbox],
                det_score=round(face.det_score, 5),
                landmarks=[[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks],
                embedding=None if face.embedding is None else embedding_values(face.embedding),
            )
            for face in result.faces
        ]
        record = await asyncio.to_thread(
            gallery.save_record,
            filename=name,
            width=result.width,
            height=result.height,
            channels=result.channels,
            faces=faces,
        )
        record_ids.append(record.record_id)
    return record_ids
