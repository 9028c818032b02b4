"""Bodies of /health and /health/live."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ModelServingPublic(BaseModel):
    backend: str = Field(description="Triton backend: python, onnxruntime or openvino")
    runtime: str = Field(description="what runs the model: openvino or onnxruntime")
    precision: str = Field(description="arithmetic: fp32 or bf16")


class HealthPublic(BaseModel):
    status: str = Field(description="'ok' or 'unavailable'")
    triton: bool = Field(description="whether Triton answers as ready")
    models: dict[str, bool] = Field(description="readiness of each model")
    reason: str | None = Field(None, description="why the service is unavailable")
    serving: dict[str, ModelServingPublic] = Field(
        default_factory=dict, description="how each model is served"
    )


class LivenessPublic(BaseModel):
    status: str = "alive"
