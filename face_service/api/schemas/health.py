"""Bodies of /health and /health/live."""

from __future__ import annotations

from pydantic import BaseModel, Field


class HealthPublic(BaseModel):
    status: str = Field(description="'ok' or 'unavailable'")
    triton: bool = Field(description="whether Triton answers as ready")
    models: dict[str, bool] = Field(description="readiness of each model")
    reason: str | None = Field(None, description="why the service is unavailable")


class LivenessPublic(BaseModel):
    status: str = "alive"
