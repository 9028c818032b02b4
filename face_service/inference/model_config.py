"""Triton model configurations as data: an ONNX file's facts (:func:`read_onnx_spec`) plus how it
is served (:class:`ServingOptions`) give Triton's own ``ModelConfig`` protobuf
(:func:`build_model_config`), written as ``config.pbtxt`` (:func:`write_model_configs`) and read
back with :func:`parse_config`. :func:`embedding_dimension` reads the recognizer's embedding width
from its ONNX file, for what must be sized before Triton answers.

    python -m face_service.inference.model_config --backend onnxruntime

rewrites the configs of FACE_MODEL_REPOSITORY for the settings and this machine (Docker/start.sh
runs it before Triton starts); the ONNX files stay as they are."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import onnx
from google.protobuf import text_format
from google.protobuf.message import DecodeError
from tritonclient.grpc import model_config_pb2 as mc

from face_service.errors import ModelConfigError, ModelRepositoryError
from face_service.inference.gpu_config import (
    TORCH_MODEL_SOURCE,
    GpuOptions,
    apply_gpu,
    gpu_options,
)
from face_service.inference.names import (
    DETECTOR_MODEL,
    METADATA_PREFIX,
    MODEL_FILENAME,
    MODEL_VERSION,
    RECOGNIZER_MODEL,
)
from face_service.settings import Settings, get_settings

# The python backend's generic model.py (imports triton_python_backend_utils: never imported here).
PYTHON_MODEL_SOURCE = Path(str(resources.files("face_service.inference") / "python_model.py"))

_ONNX_TO_TRITON_DTYPE = {
    onnx.TensorProto.FLOAT: mc.TYPE_FP32,
    onnx.TensorProto.FLOAT16: mc.TYPE_FP16,
    onnx.TensorProto.DOUBLE: mc.TYPE_FP64,
    onnx.TensorProto.UINT8: mc.TYPE_UINT8,
    onnx.TensorProto.INT8: mc.TYPE_INT8,
    onnx.TensorProto.INT32: mc.TYPE_INT32,
    onnx.TensorProto.INT64: mc.TYPE_INT64,
    onnx.TensorProto.BOOL: mc.TYPE_BOOL,
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: int  # a model_config_pb2.DataType value
    dims: tuple[int, ...]  # -1 where dynamic


@dataclass(frozen=True)
class OnnxModelSpec:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: Mapping[str, str]

    @property
    def batchable(self) -> bool:
        """Whether the first dimension of every tensor is a free batch dimension."""
        declared = self.metadata.get(METADATA_PREFIX + "batched")
        if declared is not None:
            return declared == "true"
        return all(t.dims and t.dims[0] == -1 for t in (*self.inputs, *self.outputs))


def _tensor_spec(value: onnx.ValueInfoProto, path: Path) -> TensorSpec:
    tensor_type = value.type.tensor_type
    if tensor_type.elem_type not in _ONNX_TO_TRITON_DTYPE:
        raise ModelConfigError(
            f"{path}: tensor {value.name!r} has ONNX element type {tensor_type.elem_type}, "
            "which Triton configs here do not support"
        )
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
    return TensorSpec(value.name, _ONNX_TO_TRITON_DTYPE[tensor_type.elem_type], dims)


def read_onnx_spec(path: Path) -> OnnxModelSpec:
    """Inputs, outputs and metadata of an ONNX file, without loading its weights."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except OSError as error:
        raise ModelRepositoryError(f"{path}: cannot read ONNX model: {error}") from error
    except DecodeError as error:
        raise ModelRepositoryError(f"{path}: not a valid ONNX model: {error}") from error
    initializers = {init.name for init in model.graph.initializer}
    inputs = tuple(_tensor_spec(v, path) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_tensor_spec(v, path) for v in model.graph.output)
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    return OnnxModelSpec(inputs, outputs, metadata)


@dataclass(frozen=True)
class ServingOptions:
    """How one model is served: what the config gets beyond the ONNX file's own facts."""

    backend: str  # "onnxruntime" or "python"
    max_batch_size: int
    instances: int
    intra_op_threads: int
    inter_op_threads: int
    max_queue_delay_us: int
    gpu: GpuOptions | None = None  # None: CPU instances (FACE_DEVICE=cpu)


def build_model_config(name: str, spec: OnnxModelSpec, options: ServingOptions) -> mc.ModelConfig:
    """A Triton ``ModelConfig`` for one ONNX model, built as data."""
    if options.backend not in ("onnxruntime", "python"):
        raise ModelConfigError(
            f"backend must be 'onnxruntime' or 'python', not {options.backend!r}"
        )
    batched = spec.batchable and options.max_batch_size > 0
    config = mc.ModelConfig(
        name=name,
        backend=options.backend,
        max_batch_size=options.max_batch_size if batched else 0,
    )
    if options.backend == "onnxruntime":
        config.default_model_filename = MODEL_FILENAME
    else:
        # The python backend insists on model.py; the generic model.py reads this parameter.
        config.parameters["onnx_model_filename"].string_value = MODEL_FILENAME
    for tensors, field in ((spec.inputs, config.input), (spec.outputs, config.output)):
        for tensor in tensors:
            dims = tensor.dims[1:] if batched else tensor.dims
            field.add(name=tensor.name, data_type=tensor.data_type, dims=list(dims))
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=options.instances)
    if batched:
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    config.parameters["intra_op_thread_count"].string_value = str(options.intra_op_threads)
    config.parameters["inter_op_thread_count"].string_value = str(options.inter_op_threads)
    for key, value in spec.metadata.items():
        if key.startswith(METADATA_PREFIX):
            config.parameters[key].string_value = value
    if options.gpu is not None:
        apply_gpu(config, options.gpu)
    return config


def serialize_config(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def parse_config(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def detect_backend(backend_directory: Path | None) -> str:
    """The native onnxruntime backend where the server has it, else the python backend."""
    if backend_directory is not None and (backend_directory / "onnxruntime").is_dir():
        return "onnxruntime"
    return "python"


def model_serving_options(settings: Settings, backend: str) -> dict[str, ServingOptions]:
    common = {
        "backend": backend,
        "instances": settings.triton_instances,
        "intra_op_threads": settings.intra_op_threads(),
        "inter_op_threads": settings.triton_inter_op_threads,
        "max_queue_delay_us": settings.triton_max_queue_delay_us,
        "gpu": gpu_options(settings),
    }
    return {
        DETECTOR_MODEL: ServingOptions(max_batch_size=settings.detector_max_batch_size, **common),
        RECOGNIZER_MODEL: ServingOptions(
            max_batch_size=settings.recognizer_max_batch_size, **common
        ),
    }


def model_path(repository: Path, name: str) -> Path:
    """Where the ONNX file of model ``name`` lives in a model repository."""
    return repository / name / MODEL_VERSION / MODEL_FILENAME


def write_model_configs(
    repository: Path, options: Mapping[str, ServingOptions]
) -> dict[str, mc.ModelConfig]:
    """Writes ``config.pbtxt`` (and, for the python backend, ``model.py``) for every model."""
    configs = {}
    for name, serving in options.items():
        onnx_path = model_path(repository, name)
        if not onnx_path.is_file():
            raise ModelRepositoryError(
                f"{onnx_path} is missing: run `python extract_insightface_models.py` first"
            )
        config = build_model_config(name, read_onnx_spec(onnx_path), serving)
        (repository / name / "config.pbtxt").write_text(serialize_config(config))
        python_model = onnx_path.with_name("model.py")
        if serving.backend == "python":
            source = PYTHON_MODEL_SOURCE if serving.gpu is None else TORCH_MODEL_SOURCE
            shutil.copyfile(source, python_model)
        else:
            python_model.unlink(missing_ok=True)
        configs[name] = config
    return configs


def embedding_dimension(repository: Path) -> int:
    """The width of the recognizer's embeddings, from its ONNX file in ``repository``: the
    declared last output dimension, else what ONNX shape inference derives from the weights."""
    path = model_path(repository, RECOGNIZER_MODEL)
    if not path.is_file():
        raise ModelRepositoryError(
            f"{path} is missing: run `python extract_insightface_models.py` first"
        )
    spec = read_onnx_spec(path)
    if len(spec.outputs) != 1 or not spec.outputs[0].dims:
        raise ModelRepositoryError(f"{path}: expected one embedding output [N, D]")
    declared = spec.outputs[0].dims[-1]
    if declared > 0:
        return declared
    try:
        inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    except (OSError, DecodeError, onnx.shape_inference.InferenceError) as error:
        raise ModelRepositoryError(f"{path}: cannot infer the embedding width: {error}") from error
    dims = inferred.graph.output[0].type.tensor_type.shape.dim
    if not dims or not dims[-1].HasField("dim_value") or dims[-1].dim_value < 1:
        raise ModelRepositoryError(
            f"{path}: the embedding output declares no width and shape inference finds none"
        )
    return dims[-1].dim_value


def add_repository_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every command that writes configs: where, and for which backend."""
    parser.add_argument(
        "--repository", type=Path, default=None, help="default: FACE_MODEL_REPOSITORY"
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "onnxruntime", "python"),
        default=None,
        help="Triton backend for the generated configs (default: FACE_TRITON_BACKEND)",
    )
    parser.add_argument(
        "--backend-directory",
        type=Path,
        default=None,
        help="Triton's backend directory, for --backend auto (e.g. /opt/tritonserver/backends)",
    )


def write_configs_for(arguments: argparse.Namespace, settings: Settings) -> tuple[Path, str]:
    """Writes the configs that :func:`add_repository_arguments`' options ask for; returns the
    repository and the backend chosen."""
    backend = arguments.backend or settings.triton_backend
    if backend == "auto":
        backend = detect_backend(arguments.backend_directory)
    repository = arguments.repository or settings.model_repository
    write_model_configs(repository, model_serving_options(settings, backend))
    return repository, backend


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Rewrites the config.pbtxt files of a model repository for the settings."
    )
    add_repository_arguments(parser)
    arguments = parser.parse_args(argv)
    settings = get_settings()
    try:
        write_configs_for(arguments, settings)
    except (ModelRepositoryError, ModelConfigError, OSError) as error:
        sys.stderr.write(f"model_config: {error}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
