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

# The python backend's generic model.py (imports triton_python_backend_utils: never imported here)
# and the runtimes it chooses from, copied beside it.
PYTHON_MODEL_SOURCE = Path(str(resources.files("face_service.inference") / "python_model.py"))
PYTHON_RUNTIMES_SOURCE = Path(str(resources.files("face_service.inference") / "python_runtimes.py"))
# Beside either model.py (CPU and GPU): the stub's exit when tritonserver is gone.
PYTHON_STUB_SOURCE = Path(str(resources.files("face_service.inference") / "python_stub.py"))
# Triton backends the configs can name, and the runtime each runs (python: the runtime parameter).
NATIVE_BACKENDS = ("onnxruntime", "openvino")
BACKENDS = (*NATIVE_BACKENDS, "python")

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

    backend: str  # "onnxruntime", "openvino" (Triton's native backends) or "python"
    max_batch_size: int
    instances: int
    intra_op_threads: int
    inter_op_threads: int
    max_queue_delay_us: int
    runtime: str = "onnxruntime"  # what runs the ONNX file: "onnxruntime" or "openvino"
    precision: str = "fp32"  # "fp32" or "bf16" (openvino only), already resolved from "auto"
    # Input shapes (batch included) that OpenVINO compiles for their fixed shape at load.
    static_shapes: tuple[tuple[int, ...], ...] = ()
    cache_directory: Path | None = None  # OpenVINO's model cache
    gpu: GpuOptions | None = None  # None: CPU instances (FACE_DEVICE=cpu)


def build_model_config(name: str, spec: OnnxModelSpec, options: ServingOptions) -> mc.ModelConfig:
    """A Triton ``ModelConfig`` for one ONNX model, built as data."""
    if options.backend not in BACKENDS:
        raise ModelConfigError(
            f"backend must be one of {', '.join(BACKENDS)}, not {options.backend!r}"
        )
    if options.backend in NATIVE_BACKENDS and options.runtime != options.backend:
        raise ModelConfigError(
            f"Triton's {options.backend} backend cannot run the {options.runtime} runtime"
        )
    if options.precision == "bf16" and options.runtime != "openvino":
        raise ModelConfigError(f"precision bf16 needs the openvino runtime, not {options.runtime}")
    batched = spec.batchable and options.max_batch_size > 0
    config = mc.ModelConfig(
        name=name,
        backend=options.backend,
        max_batch_size=options.max_batch_size if batched else 0,
    )
    if options.backend in NATIVE_BACKENDS:
        config.default_model_filename = MODEL_FILENAME
    else:
        # The python backend insists on model.py; the generic model.py reads these parameters.
        config.parameters["onnx_model_filename"].string_value = MODEL_FILENAME
        config.parameters["runtime"].string_value = options.runtime
        config.parameters["precision"].string_value = options.precision
        if options.runtime == "openvino":
            shapes = ";".join("x".join(map(str, shape)) for shape in options.static_shapes)
            config.parameters["static_shapes"].string_value = shapes
            if options.cache_directory is not None:
                cache = str(options.cache_directory)
                config.parameters["cache_directory"].string_value = cache
    if options.backend == "openvino":
        # Triton's OpenVINO backend's own parameter names (its README).
        config.parameters["PERFORMANCE_HINT"].string_value = "LATENCY"
        config.parameters["NUM_STREAMS"].string_value = "1"
        if options.intra_op_threads:
            config.parameters["INFERENCE_NUM_THREADS"].string_value = str(options.intra_op_threads)
        if options.precision == "bf16":
            config.parameters["HINT_BF16"].string_value = "YES"
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


def detect_backend(backend_directory: Path | None, runtime: str = "onnxruntime") -> str:
    """Triton's native backend for ``runtime`` where the server has it, else its native
    onnxruntime backend (an installed Triton's python backend may run another Python, without
    the runtime), else the python backend running ``runtime``."""
    if backend_directory is not None:
        for candidate in (runtime, "onnxruntime"):
            if (backend_directory / candidate).is_dir():
                return candidate
    return "python"


def model_serving_options(settings: Settings, backend: str) -> dict[str, ServingOptions]:
    runtime = backend if backend in NATIVE_BACKENDS else settings.cpu_runtime
    common = {
        "backend": backend,
        "instances": settings.triton_instances,
        "intra_op_threads": settings.intra_op_threads(),
        "inter_op_threads": settings.triton_inter_op_threads,
        "max_queue_delay_us": settings.triton_max_queue_delay_us,
        "runtime": runtime,
        "cache_directory": settings.data_dir / "openvino_cache",
        "gpu": gpu_options(settings),
    }
    # Batch 1 of every canvas the detector gets by default; the recognizer's one-face batch
    # (larger batches gain nothing from a fixed shape: 86.7 vs 86.8 ms at 16, bf16).
    canvases = settings.detector_canvas_sides()
    return {
        DETECTOR_MODEL: ServingOptions(
            max_batch_size=settings.detector_max_batch_size,
            static_shapes=tuple((1, 3, side, side) for side in canvases),
            precision=resolve_precision(runtime, settings.precision, DETECTOR_MODEL),
            **common,
        ),
        RECOGNIZER_MODEL: ServingOptions(
            max_batch_size=settings.recognizer_max_batch_size,
            static_shapes=((1, 3, 112, 112),),
            precision=resolve_precision(runtime, settings.precision, RECOGNIZER_MODEL),
            **common,
        ),
    }


def cpu_has_bf16() -> bool:
    """Whether OpenVINO finds native bf16 arithmetic (AVX-512 bf16, AMX) on this CPU."""
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


# The models that "auto" runs in bf16 (where the CPU has it natively). Only the recognizer: its
# bf16 embeddings of the 79 faces of InsightFace's sample photos and the group photos are at
# cosine >= 0.99968 to its fp32 ones, while a bf16 detector moves the landmarks of small faces
# enough for their fp32 embeddings to drift to cosine 0.983-0.994 (the parity bound is 0.995).
BF16_WHEN_AUTO = frozenset({RECOGNIZER_MODEL})


def resolve_precision(runtime: str, precision: str, model: str) -> str:
    """``auto``: bf16 for the models of :data:`BF16_WHEN_AUTO` where OpenVINO runs on a CPU with
    native bf16, else fp32 (onnxruntime's CPU provider has fp32 only)."""
    if precision != "auto":
        return precision
    native = runtime == "openvino" and model in BF16_WHEN_AUTO and cpu_has_bf16()
    return "bf16" if native else "fp32"


def serving_summary(config: mc.ModelConfig) -> dict[str, str]:
    """The backend, runtime and precision a generated config serves its model with."""
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    if config.backend == "python":
        runtime = parameters.get("runtime", "onnxruntime")
        precision = parameters.get("precision", "fp32")
        if runtime == "torch":  # FACE_DEVICE=gpu (gpu_config.apply_gpu)
            precision = parameters.get("torch_precision", precision)
    else:
        runtime = config.backend
        precision = "bf16" if parameters.get("HINT_BF16") == "YES" else "fp32"
    return {"backend": config.backend, "runtime": runtime, "precision": precision}


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
        python_files = {
            onnx_path.with_name("model.py"): (
                PYTHON_MODEL_SOURCE if serving.gpu is None else TORCH_MODEL_SOURCE
            ),
            onnx_path.with_name(PYTHON_RUNTIMES_SOURCE.name): PYTHON_RUNTIMES_SOURCE,
            onnx_path.with_name(PYTHON_STUB_SOURCE.name): PYTHON_STUB_SOURCE,
        }
        for target, source in python_files.items():
            needed = serving.backend == "python" and (
                serving.gpu is None or source is not PYTHON_RUNTIMES_SOURCE
            )
            if needed:
                shutil.copyfile(source, target)
            else:
                target.unlink(missing_ok=True)
        configs[name] = config
    return configs


def read_serving_summaries(repository: Path) -> dict[str, dict[str, str]]:
    """:func:`serving_summary` of each model whose config is in ``repository`` and readable."""
    summaries = {}
    for name in (DETECTOR_MODEL, RECOGNIZER_MODEL):
        try:
            config = parse_config((repository / name / "config.pbtxt").read_text())
        except (OSError, text_format.ParseError):
            continue
        summaries[name] = serving_summary(config)
    return summaries


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
        choices=("auto", *BACKENDS),
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
        backend = detect_backend(arguments.backend_directory, settings.cpu_runtime)
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
