"""Settings come from FACE_-prefixed environment variables and are validated."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from face_service.settings import Settings


def test_environment_variables_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACE_PORT", "8080")
    monkeypatch.setenv("FACE_TRITON_URL", "triton:8000")
    monkeypatch.setenv("FACE_SIMILARITY_THRESHOLD", "0.42")
    settings = Settings()
    assert settings.port == 8080
    assert settings.triton_url == "triton:8000"
    assert settings.similarity_threshold == 0.42


def test_defaults_serve_triton_on_loopback_only() -> None:
    settings = Settings()
    assert settings.triton_bind_address == "127.0.0.1"
    assert settings.triton_url is None
    assert settings.port == 3000
    assert settings.detector_input_size == 640


@pytest.mark.parametrize(
    ("variable", "value"),
    [("FACE_DETECTOR_INPUT_SIZE", "650"), ("FACE_DET_THRESHOLD", "1.5"), ("FACE_PORT", "0")],
)
def test_invalid_values_are_refused_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("FACE_").lower()):
        Settings()


def test_bf16_needs_the_openvino_runtime() -> None:
    with pytest.raises(ValidationError, match="precision bf16 needs cpu_runtime openvino"):
        Settings(cpu_runtime="onnxruntime", precision="bf16")
    assert Settings(cpu_runtime="openvino", precision="bf16").precision == "bf16"
    with pytest.raises(ValidationError, match="cpu_runtime"):
        Settings(cpu_runtime="tensorflow")


def test_detector_canvas_sides() -> None:
    assert Settings(detector_canvas="fixed").detector_canvas_sides() == [640]
    assert Settings().detector_canvas_sides() == list(range(160, 641, 32))
    fit = Settings(detector_canvas="fit", detector_min_input_size=512, detector_input_size=640)
    assert fit.detector_canvas_sides() == [512, 544, 576, 608, 640]
    with pytest.raises(ValidationError, match="must not exceed detector_input_size"):
        Settings(detector_min_input_size=672, detector_input_size=640)
    with pytest.raises(ValidationError, match="multiple of 32"):
        Settings(detector_min_input_size=100)
