"""The HTTP service: the app (one router per resource, middleware, error handlers), the lifespan
that starts Triton, the pipeline and the gallery, and ``main``. Run ``python app.py`` (or
``bash scripts/serve.sh``) and open http://localhost:3000/docs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import uvicorn
from fastapi import Depends, FastAPI

from face_service.api.admission import AdmissionLimiter
from face_service.api.audit import AuditTrail
from face_service.api.cors import add_cors
from face_service.api.docs import add_docs_and_page
from face_service.api.errors import add_error_handlers
from face_service.api.json_limits import reject_unstorable_url_text
from face_service.api.middleware import MemoryTrim, RequestSizeLimit
from face_service.api.openapi import build_openapi
from face_service.api.rate_limit import RateLimiter, enforce_rate_limit
from face_service.api.request_context import RequestContextMiddleware
from face_service.api.request_metrics import RequestMetrics
from face_service.api.routes import (
    access,
    extract,
    faces,
    health,
    identify,
    identities,
    metrics,
    records,
)
from face_service.auth import Authenticator, auth_required, log_auth_state, server_secret
from face_service.enrollment import Enrollment
from face_service.errors import ModelUnavailableError
from face_service.gallery import AccessStore, Gallery, open_access_store, open_gallery
from face_service.identification import Identification
from face_service.inference.model_config import embedding_dimension
from face_service.logs import configure_logging
from face_service.scrape_metrics import GalleryCounter
from face_service.settings import Settings, get_settings
from pipeline import FacePipeline
from triton_service import TritonService

logger = logging.getLogger("face_service")

ROUTERS = (
    faces.router,
    extract.router,
    identities.router,
    identify.router,
    records.router,
    access.router,
    health.router,
    metrics.router,
)


@dataclass(frozen=True)
class Services:
    """What the routes stand on, made once per process by a :data:`ServicesFactory`."""

    triton: TritonService  # readiness for /health
    pipeline: FacePipeline
    gallery: Gallery


# The service's own factory starts Triton; the fast test tier passes one with stub models.
ServicesFactory = Callable[[Settings], AbstractAsyncContextManager[Services]]


@asynccontextmanager
async def start_services(settings: Settings) -> AsyncIterator[Services]:
    """Triton (local or external), the pipeline on it, and the gallery sized to its recognizer."""
    triton = TritonService(settings)
    await triton.start()
    try:
        pipeline = FacePipeline.on_triton(triton.client, settings)
        try:
            await pipeline.load()
        except ModelUnavailableError as error:
            # An external Triton may come up later; models load on first use until then.
            logger.warning("models not loaded yet: %s", error)
        dimension = pipeline.recognizer.dimension or await asyncio.to_thread(
            embedding_dimension, settings.model_repository
        )
        gallery = await asyncio.to_thread(open_gallery, settings, dimension=dimension)
        try:
            yield Services(triton=triton, pipeline=pipeline, gallery=gallery)
        finally:
            await asyncio.to_thread(gallery.close)
    finally:
        await triton.stop()


def open_access(settings: Settings) -> tuple[AccessStore, Authenticator]:
    """The key store and audit log in the gallery's database, and who checks keys: the
    operator's FACE_ADMIN_KEY stored, the start logged (a warning when auth is disabled)."""
    secret = server_secret(settings)
    store = open_access_store(settings)
    try:
        authenticator = Authenticator(store, secret, required=auth_required(settings))
        if settings.admin_key is not None:
            authenticator.bootstrap_admin(settings.admin_key.get_secret_value())
        log_auth_state(settings, authenticator)
    except BaseException:
        store.close()
        raise
    return store, authenticator


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    async with app.state.start_services(settings) as services:
        store, authenticator = await asyncio.to_thread(open_access, settings)
        app.state.access = store
        app.state.authenticator = authenticator
        app.state.triton = services.triton
        app.state.pipeline = services.pipeline
        app.state.gallery = services.gallery
        app.state.gallery_counter = GalleryCounter(services.gallery)
        app.state.enrollment = Enrollment(
            services.pipeline,
            services.gallery,
            store_face_crops=settings.gallery_store_face_crops,
        )
        app.state.identification = Identification(services.pipeline, services.gallery)
        app.state.admission = AdmissionLimiter(
            concurrency=settings.max_concurrent_requests, queue=settings.max_queued_requests
        )
        try:
            yield
        finally:
            await asyncio.to_thread(store.close)


def create_app(
    settings: Settings | None = None, *, services: ServicesFactory = start_services
) -> FastAPI:
    app = FastAPI(
        title="Face recognition service",
        description=(
            "Face detection (SCRFD), embeddings (ArcFace), 1:1 verification and 1:N "
            "identification against a gallery, with every model served by NVIDIA Triton "
            "Inference Server. InsightFace's models are for non-commercial research use."
        ),
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(enforce_rate_limit), Depends(reject_unstorable_url_text)],
    )
    app.state.settings = settings or get_settings()
    app.state.rate_limiter = RateLimiter(app.state.settings.rate_limit)
    app.state.start_services = services
    app.state.authenticator = None  # set at start (lifespan)
    add_error_handlers(app)
    app.add_middleware(AuditTrail)
    app.add_middleware(MemoryTrim)
    app.add_middleware(RequestSizeLimit, max_bytes=app.state.settings.max_request_bytes)
    app.add_middleware(RequestMetrics)  # outside the others: it counts every answer, 413s included
    add_cors(app, app.state.settings)
    # Added last, so outermost: its id and access line cover every answer of the others.
    app.add_middleware(RequestContextMiddleware)
    for router in ROUTERS:
        app.include_router(router)
    add_docs_and_page(app)

    def openapi() -> dict:
        if app.openapi_schema is None:
            max_images = app.state.settings.max_images_per_request
            app.openapi_schema = build_openapi(app, max_images=max_images)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # configure_logging's handler, not uvicorn's own
        access_log=False,  # the access line is RequestContextMiddleware's
    )


if __name__ == "__main__":
    main()
