"""/health (readiness: Triton and both models) and /health/live (the process runs)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from face_service.api.deps import TritonDep
from face_service.api.json_limits import BoundedJSONRoute
from face_service.api.schemas.health import HealthPublic, LivenessPublic
from face_service.errors import ModelUnavailableError

router = APIRouter(route_class=BoundedJSONRoute, tags=["health"])


@router.get(
    "/health",
    response_model=HealthPublic,
    responses={503: {"model": HealthPublic, "description": "Triton or a model is not ready"}},
    summary="Readiness: 200 only when Triton and both models are ready",
)
async def health(triton: TritonDep) -> JSONResponse:
    report = await triton.health()
    body = HealthPublic(
        status="ok" if report.ready else "unavailable",
        triton=report.triton,
        models=report.models,
        reason=report.reason,
        serving=report.serving,
    )
    headers = {} if report.ready else {"Retry-After": str(ModelUnavailableError.retry_after_s)}
    return JSONResponse(
        body.model_dump(), status_code=200 if report.ready else 503, headers=headers
    )


@router.get(
    "/health/live", response_model=LivenessPublic, summary="Liveness: the process is running"
)
async def live() -> LivenessPublic:
    return LivenessPublic()
