"""FACE_DEVICE=gpu: the setting's validation, and the generated configs (parsed back through
Triton's protobuf) for the python backend (torch on CUDA) and the native onnxruntime backend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from tritonclient.grpc import model_config_pb2 as mc

from face_service.inference.gpu_config import (
    TORCH_MODEL_SOURCE,
    apply_gpu,
    gpu_options,
    python_search_paths,
)
from face_service.inference.model_config import (
    PYTHON_MODEL_SOURCE,
    PYTHON_STUB_SOURCE,
    model_serving_options,
    parse_config,
    write_model_configs,
)
from face_service.settings import Settings
from tests.unit.test_model_config import write_tiny_onnx

MODELS = ("face_detector", "face_recognizer")


def repository(tmp_path: Path) -> Path:
    for name in MODELS:
        (tmp_path / name / "1").mkdir(parents=True)
        write_tiny_onnx(tmp_path / name / "1" / "model.onnx")
    return tmp_path


def test_device_defaults_to_cpu_and_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().device == "cpu"
    assert model_serving_options(Settings(), "python")["face_recognizer"].gpu is None
    monkeypatch.setenv("FACE_DEVICE", "gpu")
    monkeypatch.setenv("FACE_GPU_PRECISION", "fp32")
    settings = Settings()
    assert (settings.device, settings.gpu_precision, settings.gpu_min_cosine) == (
        "gpu",
        "fp32",
        0.995,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FACE_DEVICE", "tpu"),
        ("FACE_DEVICE", "cuda"),
        ("FACE_GPU_PRECISION", "int8"),
        ("FACE_GPU_MIN_COSINE", "0"),
        ("FACE_GPU_MIN_COSINE", "1.5"),
    ],
)
def test_invalid_device_settings_are_refused_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("FACE_").lower()):
        Settings()


def test_python_backend_on_gpu_runs_torch_with_the_stubs_import_path(tmp_path: Path) -> None:
    settings = Settings(device="gpu", triton_instances=2, gpu_min_cosine=0.99)
    configs = write_model_configs(repository(tmp_path), model_serving_options(settings, "python"))
    for name in MODELS:
        config = parse_config((tmp_path / name / "config.pbtxt").read_text())
        assert config == configs[name]
        assert config.backend == "python"
        assert [(g.kind, g.count) for g in config.instance_group] == [
            (mc.ModelInstanceGroup.KIND_GPU, 2)
        ]
        parameters = {key: value.string_value for key, value in config.parameters.items()}
        assert parameters["runtime"] == "torch"
        assert parameters["torch_precision"] == "fp16"
        assert float(parameters["min_cosine"]) == 0.99
        paths = parameters["python_paths"].split(os.pathsep)
        assert paths == list(python_search_paths())
        assert all(Path(p).is_dir() for p in paths)
        model_py = (tmp_path / name / "1" / "model.py").read_text()
        assert model_py == TORCH_MODEL_SOURCE.read_text()
        # The stub's lifetime beside it (as on the CPU); the CPU runtimes are not needed.
        lifetime = (tmp_path / name / "1" / "python_stub.py").read_text()
        assert lifetime == PYTHON_STUB_SOURCE.read_text()
        assert not (tmp_path / name / "1" / "python_runtimes.py").exists()
    # Back on the CPU: the onnxruntime model.py and CPU instances again, no torch parameters.
    configs = write_model_configs(tmp_path, model_serving_options(Settings(), "python"))
    config = parse_config((tmp_path / "face_recognizer" / "config.pbtxt").read_text())
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert config.parameters["runtime"].string_value == Settings().cpu_runtime
    assert "torch_precision" not in config.parameters
    model_py = (tmp_path / "face_recognizer" / "1" / "model.py").read_text()
    assert model_py == PYTHON_MODEL_SOURCE.read_text()


def test_native_onnxruntime_backend_on_gpu_gets_gpu_instances_only(tmp_path: Path) -> None:
    settings = Settings(device="gpu")
    configs = write_model_configs(
        repository(tmp_path), model_serving_options(settings, "onnxruntime")
    )
    for name in MODELS:
        config = parse_config((tmp_path / name / "config.pbtxt").read_text())
        assert config == configs[name]
        assert config.backend == "onnxruntime"
        assert config.default_model_filename == "model.onnx"
        assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
        assert "runtime" not in config.parameters
        assert "python_paths" not in config.parameters
        assert not (tmp_path / name / "1" / "model.py").exists()


def test_torch_model_source_is_a_python_backend_model() -> None:
    source = TORCH_MODEL_SOURCE.read_text()
    assert source.startswith('"""Triton python-backend model')
    assert "class TritonPythonModel" in source
    assert "def execute(self, requests" in source


def test_a_model_of_free_height_and_width_is_warmed_at_every_canvas_side() -> None:
    fit = gpu_options(Settings(device="gpu", detector_canvas="fit"))
    assert fit is not None
    assert fit.warm_sides == tuple(range(160, 641, 32))
    fixed = gpu_options(Settings(device="gpu", detector_canvas="fixed", detector_input_size=320))
    assert fixed is not None
    assert fixed.warm_sides == (320,)
    detector = mc.ModelConfig(name="face_detector", backend="python")
    detector.input.add(name="pixels", data_type=mc.TYPE_UINT8, dims=[3, -1, -1])
    recognizer = mc.ModelConfig(name="face_recognizer", backend="python")
    recognizer.input.add(name="pixels", data_type=mc.TYPE_UINT8, dims=[3, 112, 112])
    for config in (detector, recognizer):
        apply_gpu(config, fit)
    assert detector.parameters["warm_sides"].string_value == ";".join(
        str(side) for side in range(160, 641, 32)
    )
    assert "warm_sides" not in recognizer.parameters  # its one shape is the probe's
