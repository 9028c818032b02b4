"""The HTTP API: thin routes over the pipeline. Run ``python app.py`` (or ``bash scripts/serve.sh``)
and open http://localhost:3000/docs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Annotated

import uvicorn
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from face_service.api.admission import AdmissionLimiter
from face_service.api.deps import AdmissionDep, ExtractorDep, GalleryDep, PipelineDep
from face_service.api.routes import gallery as gallery_routes
from face_service.api.schemas import (
    DrawOptionsCreate,
    EmbeddingPublic,
    ErrorPublic,
    ExtractCreate,
    ExtractJSONCreate,
    ExtractPublic,
    FacePublic,
    HealthPublic,
    LivenessPublic,
    SimilarityPublic,
)
from face_service.api.uploads import (
    multipart_openapi,
    read_extract_json,
    read_image,
    read_multipart,
    require_multipart,
    validation_error,
)
from face_service.errors import FaceServiceError, InvalidImageError, ModelUnavailableError
from face_service.extraction import ExtractOptions, Extractor, draw_faces, store_records
from face_service.gallery import open_gallery
from face_service.identification import Identification
from face_service.imaging import encode_jpeg
from face_service.settings import Settings, get_settings
from pipeline import FacePipeline, cosine_similarity
from triton_service import TritonService

logger = logging.getLogger("face_service")

ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorPublic, "description": "not an image, or a corrupt one"},
    413: {"model": ErrorPublic, "description": "image too large (bytes or pixels)"},
    415: {
        "model": ErrorPublic,
        "description": "not multipart/form-data, or a part that is not an image",
    },
    422: {"model": ErrorPublic, "description": "no face found, or an invalid parameter"},
    503: {
        "model": ErrorPublic,
        "description": "Triton or a model is unavailable; retry after Retry-After",
    },
}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    triton = TritonService(settings)
    await triton.start()
    pipeline = FacePipeline(triton.client, settings)
    try:
        await pipeline.load()
    except ModelUnavailableError as error:
        # An external Triton may come up later; models load on first use until then.
        logger.warning("models not loaded yet: %s", error)
    app.state.triton = triton
    app.state.pipeline = pipeline
    app.state.extractor = Extractor(pipeline)
    try:
        # TODO(lead): from the recognizer
        gallery = await asyncio.to_thread(open_gallery, settings, dimension=512)
    except BaseException:
        await triton.stop()
        raise
    app.state.identification = Identification(pipeline, gallery)
    app.state.admission = AdmissionLimiter(
        concurrency=settings.max_concurrent_requests, queue=settings.max_queued_requests
    )
    try:
        yield
    finally:
        await asyncio.to_thread(gallery.close)
        await triton.stop()


class RequestSizeLimit:
    """Refuses bodies larger than the configured limit before they are read."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                message = (
                    f"request body of {int(length)} bytes exceeds the limit of {self.max_bytes}"
                )
                response = JSONResponse({"detail": message}, status_code=413)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def extract_openapi() -> dict:
    """/extract reads multipart forms and JSON bodies itself: both documented."""
    extra = multipart_openapi(ExtractCreate, "images", "images, repeated")
    content = extra["requestBody"]["content"]
    content["application/json"] = {"schema": ExtractJSONCreate.model_json_schema()}
    return extra


async def face_service_error(request: Request, error: FaceServiceError) -> JSONResponse:
    headers = {}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(error.retry_after_s)
        logger.warning("%s %s: %s", request.method, request.url.path, error)
    elif error.status_code >= 500:
        logger.error("%s %s: %s", request.method, request.url.path, error)
    return JSONResponse({"detail": str(error)}, status_code=error.status_code, headers=headers)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="Face recognition service",
        description=(
            "Face detection (SCRFD), embeddings (ArcFace) and 1:1 verification, with every model "
            "served by NVIDIA Triton Inference Server. InsightFace's models are for non-commercial "
            "research use."
        ),
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_exception_handler(FaceServiceError, face_service_error)  # type: ignore[arg-type]
    app.add_middleware(RequestSizeLimit, max_bytes=settings.max_request_bytes)
    app.include_router(gallery_routes.router)

    @app.post(
        "/embedding",
        response_model=EmbeddingPublic,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(require_multipart)],
        summary="Embedding of the most prominent face in an image",
    )
    async def embedding(
        image: Annotated[
            UploadFile, File(description="JPEG, PNG, WebP, BMP, ... with one or more faces")
        ],
        pipeline: PipelineDep,
        admission: AdmissionDep,
    ) -> EmbeddingPublic:
        data = await read_image(image, "image", settings)
        async with admission.slot():
            [(face, count)] = await pipeline.prominent_faces([(data, "image")])
        return EmbeddingPublic(
            embedding=[float(v) for v in face.embedding],
            face=FacePublic.from_face(face),
            faces_detected=count,
        )

    @app.post(
        "/face-similarity",
        response_model=SimilarityPublic,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(require_multipart)],
        summary="1:1 verification: are the most prominent faces of two images the same person?",
    )
    async def face_similarity(
        image_a: Annotated[UploadFile, File(description="first image")],
        image_b: Annotated[UploadFile, File(description="second image")],
        pipeline: PipelineDep,
        admission: AdmissionDep,
        threshold: Annotated[
            float | None,
            Form(
                ge=-1,
                le=1,
                description="decision threshold; default: the pack's, or FACE_SIMILARITY_THRESHOLD",
            ),
        ] = None,
    ) -> SimilarityPublic:
        data_a = await read_image(image_a, "image_a", settings)
        data_b = await read_image(image_b, "image_b", settings)
        async with admission.slot():
            (face_a, _), (face_b, _) = await pipeline.prominent_faces(
                [(data_a, "image_a"), (data_b, "image_b")]
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

    @app.post(
        "/extract",
        response_model=ExtractPublic,
        responses=ERROR_RESPONSES,
        summary="Every face of one or more images: boxes, scores, landmarks, embeddings, crops",
        description=(
            "Send the images either as multipart files (`images`, repeated, with the options as "
            'form fields) or as JSON (`{"images": {"data": ["<base64>", ...]}, ...options}`). '
            "An image that cannot be read is reported in its own entry; the others still succeed."
        ),
        openapi_extra=extract_openapi(),
    )
    async def extract(
        request: Request, extractor: ExtractorDep, admission: AdmissionDep, gallery: GalleryDep
    ) -> ExtractPublic:
        content_type = request.headers.get("content-type", "")
        filenames: list[str | None] = []
        if content_type.startswith("application/json"):
            images, options = await read_extract_json(request, settings)
        else:
            require_multipart(request)
            images, options, filenames = await read_multipart(
                request, ExtractCreate, settings, files_field="images"
            )
        extract_options = ExtractOptions(
            **options.model_dump(exclude={"images", "store", "filename"})
        )
        async with admission.slot():
            results, timings = await extractor.extract(images, extract_options)
        public = ExtractPublic.from_results(results, timings, extract_options)
        if options.store:
            names = filenames or [None] * len(results)
            record_ids = await store_records(gallery, results, options.filename, names)
            for entry, record_id in zip(public.images, record_ids, strict=True):
                entry.record_id = record_id
        return public

    @app.post(
        "/draw",
        response_class=Response,
        responses={
            200: {"content": {"image/jpeg": {}}, "description": "the image with the faces drawn"},
            **ERROR_RESPONSES,
        },
        summary="The image as JPEG with every face's box, score and landmarks drawn",
        openapi_extra=multipart_openapi(DrawOptionsCreate, "image", "one image"),
    )
    async def draw(request: Request, extractor: ExtractorDep, admission: AdmissionDep) -> Response:
        require_multipart(request)
        images, options, _ = await read_multipart(
            request, DrawOptionsCreate, settings, files_field="image"
        )
        if len(images) != 1:
            raise validation_error("image", f"send exactly one image, not {len(images)}")
        extract_options = ExtractOptions(
            **options.model_dump(exclude={"draw_landmarks", "draw_scores"}),
        )
        async with admission.slot():
            [result], _ = await extractor.extract(
                images, replace(extract_options, return_embedding=False)
            )
        if result.error is not None or result.image is None:
            raise result.error or InvalidImageError("'image' could not be read")
        image = result.image
        drawn = await asyncio.to_thread(
            lambda: encode_jpeg(
                draw_faces(
                    image,
                    result.faces,
                    landmarks=options.draw_landmarks,
                    scores=options.draw_scores,
                )
            )
        )
        return Response(
            drawn, media_type="image/jpeg", headers={"X-Faces-Detected": str(len(result.faces))}
        )

    @app.get(
        "/health",
        response_model=HealthPublic,
        responses={503: {"model": HealthPublic, "description": "Triton or a model is not ready"}},
        summary="Readiness: 200 only when Triton and both models are ready",
    )
    async def health(request: Request) -> JSONResponse:
        report = await request.app.state.triton.health()
        body = HealthPublic(
            status="ok" if report.ready else "unavailable",
            triton=report.triton,
            models=report.models,
            reason=report.reason,
        )
        headers = {} if report.ready else {"Retry-After": str(ModelUnavailableError.retry_after_s)}
        return JSONResponse(
            body.model_dump(), status_code=200 if report.ready else 503, headers=headers
        )

    @app.get(
        "/health/live", response_model=LivenessPublic, summary="Liveness: the process is running"
    )
    async def live() -> LivenessPublic:
        return LivenessPublic()

    return app


def main() -> None:
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level
    )


if __name__ == "__main__":
    main()
