"""What the model installer's tests share (test_installer_*.py): the wheel's two model file names
and SCRFD's output groups, readers of an installed repository (configs, manifest, model files,
hashes, logged errors), one run of extract_insightface_models.main on a repository, and synthetic
ONNX models (a SCRFD-shaped detector, a tiny recognizer) that onnx.checker accepts."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import model_config_pb2 as mc

import extract_insightface_models as extract
from face_service.inference.model_config import parse_config

DETECTOR_FILE = "scrfd_500m_bnkps.onnx"
RECOGNIZER_FILE = "w600k_mbf.onnx"
SCRFD_STRIDES = (8, 16, 32)
SCRFD_GROUPS = (("score", 1), ("bbox", 4), ("kps", 10))

Dims = Sequence[int | str]


def sha256_bytes(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_config(repository: Path, name: str) -> mc.ModelConfig:
    return parse_config((repository / name / "config.pbtxt").read_text())


def parameters(config: mc.ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def tensors(values: Sequence[mc.ModelInput] | Sequence[mc.ModelOutput]) -> dict[str, list[int]]:
    return {tensor.name: list(tensor.dims) for tensor in values}


def read_manifest(repository: Path) -> dict:
    return json.loads((repository / "manifest.json").read_text())


def model_path(repository: Path, name: str) -> Path:
    return repository / name / "1" / "model.onnx"


def error_messages(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR
    )


def install(repository: Path, *arguments: str, backend: str = "python") -> int:
    return extract.main([*arguments, "--repository", str(repository), "--backend", backend])


def save_model(
    path: Path, inputs: dict[str, Dims], outputs: dict[str, Dims], *, opset: int = 11
) -> Path:
    """A model whose every output is a Constant of zeros; string dims become dim_params in the
    declared shapes and size 2 in the constants (onnx.checker does not compare them)."""
    nodes = []
    for name, dims in outputs.items():
        shape = [d if isinstance(d, int) else 2 for d in dims]
        value = numpy_helper.from_array(np.zeros(shape, np.float32), name=f"{name}_value")
        nodes.append(helper.make_node("Constant", [], [name], value=value))
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(d)) for n, d in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(d)) for n, d in outputs.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def scrfd_outputs(strides: Sequence[int], *, batched: bool) -> dict[str, Dims]:
    prefix: list[int | str] = ["N", "A"] if batched else ["A"]
    return {
        f"{group}_{stride}": [*prefix, width] for group, width in SCRFD_GROUPS for stride in strides
    }


def synthetic_detector(path: Path, outputs: dict[str, Dims]) -> Path:
    return save_model(path, {"input.1": [1, 3, "h", "w"]}, outputs)


def link(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source)
    return target
