"""FastAPI dependencies: the objects the app's lifespan creates, for the routes to declare."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from face_service.api.admission import AdmissionLimiter
from face_service.enrollment import Enrollment
from face_service.gallery import Gallery
from face_service.identification import Identification
from face_service.settings import Settings
from pipeline import FacePipeline
from triton_service import TritonService


# async def throughout: FastAPI runs a plain def dependency in a worker thread, a hop per
# dependency and request (four for /embedding) for what is a read of the app's state.
async def get_pipeline(request: Request) -> FacePipeline:
    return request.app.state.pipeline


async def get_enrollment(request: Request) -> Enrollment:
    return request.app.state.enrollment


async def get_admission(request: Request) -> AdmissionLimiter:
    return request.app.state.admission


async def admitted(request: Request) -> AsyncIterator[None]:
    """For routes without inference (gallery reads and writes): the whole request holds an
    admission slot, so that a burst of them is bounded like any other."""
    admission: AdmissionLimiter = request.app.state.admission
    async with admission.slot():
        yield


async def get_identification(request: Request) -> Identification:
    return request.app.state.identification


async def get_gallery(request: Request) -> Gallery:
    return request.app.state.gallery


async def get_triton(request: Request) -> TritonService:
    return request.app.state.triton


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


PipelineDep = Annotated[FacePipeline, Depends(get_pipeline)]
EnrollmentDep = Annotated[Enrollment, Depends(get_enrollment)]
AdmissionDep = Annotated[AdmissionLimiter, Depends(get_admission)]
IdentificationDep = Annotated[Identification, Depends(get_identification)]
GalleryDep = Annotated[Gallery, Depends(get_gallery)]
TritonDep = Annotated[TritonService, Depends(get_triton)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
# Route dependencies of gallery-only routes.
ADMITTED = [Depends(admitted)]
