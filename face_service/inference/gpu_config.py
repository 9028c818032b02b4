"""What ``FACE_DEVICE=gpu`` changes in a generated Triton model configuration.

Every instance group becomes ``KIND_GPU`` (``count`` instances on each GPU Triton sees). The
native onnxruntime backend (the official Triton GPU image) then runs the ONNX file with its CUDA
execution provider, its default for GPU instances. The python backend (the ``tritonserver`` of the
nvidia-pytriton wheel, which has no onnxruntime backend) gets :data:`TORCH_MODEL_SOURCE` as its
``model.py``: the ONNX file converted to torch (onnx2torch) on CUDA, in ``gpu_precision``, checked
at load against the fp32 onnxruntime CPU path. Its parameters:

- ``torch_precision``: ``fp16`` (autocast) or ``fp32``;
- ``min_cosine``: the least cosine between the GPU and the CPU outputs on a fixed probe batch;
- ``warm_sides``: for a model whose input height and width are free (the detector), the square
  sides it is warmed up at (the canvas sides the service sends: ``detector_canvas_sides``);
- ``python_paths``: the import path of the process that wrote the config, which the stub appends
  to its own: the stub's embedded interpreter does not inherit ``PYTHONPATH`` or a virtual
  environment's site-packages (seen on the GPU machine), so torch and onnx2torch must be named.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from face_service.settings import Settings

# The python backend's model.py for GPU instances (imports torch and triton_python_backend_utils:
# never imported here).
TORCH_MODEL_SOURCE = Path(str(resources.files("face_service.inference") / "python_model_torch.py"))


@dataclass(frozen=True)
class GpuOptions:
    precision: str  # "fp16" or "fp32"
    min_cosine: float
    python_paths: tuple[str, ...]
    # The detector's canvas sides (Settings.detector_canvas_sides): warmed up at load.
    warm_sides: tuple[int, ...] = ()


def python_search_paths() -> tuple[str, ...]:
    """The folders this interpreter imports from (its site-packages and PYTHONPATH included)."""
    return tuple(dict.fromkeys(p for p in sys.path if p and Path(p).is_dir()))


def gpu_options(settings: Settings) -> GpuOptions | None:
    """The GPU part of the serving options, or None when the models run on the CPU."""
    if settings.device != "gpu":
        return None
    return GpuOptions(
        precision=settings.gpu_precision,
        min_cosine=settings.gpu_min_cosine,
        python_paths=python_search_paths(),
        warm_sides=tuple(settings.detector_canvas_sides()),
    )


def apply_gpu(config: mc.ModelConfig, gpu: GpuOptions) -> None:
    """Turns a CPU model configuration built for ``config.backend`` into its GPU form."""
    for group in config.instance_group:
        group.kind = mc.ModelInstanceGroup.KIND_GPU
    if config.backend == "python":
        config.parameters["runtime"].string_value = "torch"
        config.parameters["torch_precision"].string_value = gpu.precision
        config.parameters["min_cosine"].string_value = repr(gpu.min_cosine)
        config.parameters["python_paths"].string_value = os.pathsep.join(gpu.python_paths)
        free_size = any(d < 0 for d in config.input[0].dims[-2:]) if config.input else False
        if free_size and gpu.warm_sides:
            sides = ";".join(str(side) for side in gpu.warm_sides)
            config.parameters["warm_sides"].string_value = sides
