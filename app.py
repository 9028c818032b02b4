"""The HTTP API: thin routes over the pipeline. Run ``python app.py`` (or ``bash scripts/serve.sh``)
and open http://localhost:3000/docs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import uvicorn
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from errors import (
    FaceServiceError,
    ImageTooLargeError,
    ModelUnavailableError,
    UnsupportedMediaTypeError,
)
from pipeline import FacePipeline, cosine_similarity
from schemas import (
    EmbeddingPublic,
    ErrorPublic,
    FacePublic,
    HealthPublic,
    LivenessPublic,
    SimilarityPublic,
)
from settings import Settings, get_settings
from triton_service import TritonService

logger = logging.getLogger("face_service")

ACCEPTED_IMAGE_TYPES = ("image/", "application/octet-stream")
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
    try:
        yield
    finally:
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


def get_pipeline(request: Request) -> FacePipeline:
    return request.app.state.pipeline


def require_multipart(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise UnsupportedMediaTypeError(
            "expected multipart/form-data with image file(s), "
            f"got {content_type or 'no content type'!r}"
        )


PipelineDep = Annotated[FacePipeline, Depends(get_pipeline)]


async def read_image(upload: UploadFile, field: str, settings: Settings) -> bytes:
    content_type = upload.content_type or "application/octet-stream"
    if not content_type.startswith(ACCEPTED_IMAGE_TYPES):
        raise UnsupportedMediaTypeError(
            f"{field!r} has content type {content_type!r}; send an image"
        )
    if upload.size is not None and upload.size > settings.max_image_bytes:
        raise ImageTooLargeError(
            f"{field!r} has {upload.size} bytes; the limit is {settings.max_image_bytes}"
        )
    return await upload.read()


async def face_service_error(request: Request, error: FaceServiceError) -> JSONResponse:
    headers = {}
    if isinstance(error, ModelUnavailableError):
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
    # Two images per request at most, plus multipart framing.
    app.add_middleware(RequestSizeLimit, max_bytes=2 * settings.max_image_bytes + 64 * 1024)

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
    ) -> EmbeddingPublic:
        data = await read_image(image, "image", settings)
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
