"""Triton Inference Server: the model repository, the server process and the client.

- :func:`build_model_config` turns an ONNX file into Triton's own ``ModelConfig`` protobuf, and
  :func:`write_model_configs` serialises one ``config.pbtxt`` per model with ``text_format``.
- :class:`TritonServer` runs a local ``tritonserver`` (the binary of the nvidia-pytriton wheel, or
  the official container's), waits for readiness, captures its log, restarts it when it dies and
  stops it with SIGINT, then kill.
- :class:`TritonClient` talks to any Triton (local or external) over HTTP with binary tensors,
  or, on the same host, with its inputs in system shared memory.
- :class:`TritonService` puts the three together for the app's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import itertools
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import onnx
from google.protobuf import json_format, text_format
from google.protobuf.message import DecodeError
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.http import InferInput, InferRequestedOutput, InferResult
from tritonclient.http.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException
from tritonclient.utils import shared_memory as shm
from tritonclient.utils.shared_memory import SharedMemoryException

from face_service.errors import (
    ModelConfigError,
    ModelRepositoryError,
    ModelUnavailableError,
    TritonServerError,
)
from face_service.settings import Settings

logger = logging.getLogger(__name__)

DETECTOR_MODEL = "face_detector"
RECOGNIZER_MODEL = "fr_model"
MODEL_NAMES = (DETECTOR_MODEL, RECOGNIZER_MODEL)
MODEL_FILENAME = "model.onnx"
MODEL_VERSION = "1"
# ONNX metadata keys written by extract_insightface_models.py; copied into config parameters so
# that the pipeline learns them from Triton, local or external.
METADATA_PREFIX = "face_service."
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
    }
    return {
        DETECTOR_MODEL: ServingOptions(max_batch_size=settings.detector_max_batch_size, **common),
        RECOGNIZER_MODEL: ServingOptions(
            max_batch_size=settings.recognizer_max_batch_size, **common
        ),
    }


def write_model_configs(
    repository: Path, options: Mapping[str, ServingOptions]
) -> dict[str, mc.ModelConfig]:
    """Writes ``config.pbtxt`` (and, for the python backend, ``model.py``) for every model."""
    configs = {}
    for name, serving in options.items():
        model_dir = repository / name
        onnx_path = model_dir / MODEL_VERSION / MODEL_FILENAME
        if not onnx_path.is_file():
            raise ModelRepositoryError(
                f"{onnx_path} is missing: run `python extract_insightface_models.py` first"
            )
        config = build_model_config(name, read_onnx_spec(onnx_path), serving)
        (model_dir / "config.pbtxt").write_text(serialize_config(config))
        python_model = onnx_path.with_name("model.py")
        if serving.backend == "python":
            shutil.copyfile(PYTHON_MODEL_SOURCE, python_model)
        else:
            python_model.unlink(missing_ok=True)
        configs[name] = config
    return configs


def pytriton_server_paths() -> tuple[Path, Path]:
    """The ``tritonserver`` binary and its shared libraries from the nvidia-pytriton wheel."""
    try:
        import pytriton
    except ImportError as error:
        raise TritonServerError(
            "no tritonserver found: install nvidia-pytriton or set FACE_TRITON_URL"
        ) from error
    package = Path(pytriton.__file__).parent
    return (
        package / "tritonserver" / "bin" / "tritonserver",
        package.parent / "nvidia_pytriton.libs",
    )


def python_library_dir() -> Path:
    """The folder of the running Python's shared libpython, which the python backend stub links
    against: without it on the library path the stub finds only a system Python's, if any."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise TritonServerError(
            f"{sys.executable} was built without a shared libpython, which Triton's python backend "
            "needs: use a Python built with --enable-shared (Debian/Ubuntu's, pyenv's, "
            "python.org's) or an external Triton with the onnxruntime backend (FACE_TRITON_URL)"
        )
    return Path(sysconfig.get_config_var("LIBDIR"))


def prepare_python_backend(backend_directory: Path) -> Path:
    """A backend folder of the service's own: pytriton's python backend plus the stub built for
    the running Python, linked rather than copied so that site-packages stays untouched."""
    binary, _ = pytriton_server_paths()
    tritonserver = binary.parent.parent
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = tritonserver / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonServerError(f"nvidia-pytriton has no python backend stub for Python {version}")
    python_dir = backend_directory / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    sources = [*(tritonserver / "backends" / "python").glob("*.*"), stub]
    for source in sources:
        link = python_dir / source.name
        if link.is_symlink() or link.exists():
            if link.resolve() == source.resolve():
                continue
            link.unlink()
        link.symlink_to(source)
    return backend_directory


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills Triton if the API process dies, even by
    SIGKILL, so that no orphan keeps the ports and the models' memory."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


class TritonServer:
    """A local ``tritonserver`` process, kept alive until :meth:`stop`."""

    def __init__(
        self,
        *,
        model_repository: Path,
        backend_directory: Path,
        binary: Path,
        library_paths: Sequence[Path] = (),
        bind_address: str,
        http_port: int,
        grpc_port: int,
        metrics_port: int,
        log_file: Path,
    ) -> None:
        self.model_repository = model_repository
        self.backend_directory = backend_directory
        self.binary = binary
        self.library_paths = tuple(library_paths)
        self.bind_address = bind_address
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"{self.bind_address}:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def arguments(self) -> list[str]:
        return [
            str(self.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.backend_directory}",
            f"--http-address={self.bind_address}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.bind_address}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.bind_address}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--log-verbose=0",
            # Our own client closes its connections first; others get a short grace period.
            "--exit-timeout-secs=10",
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.library_paths:
            env["LD_LIBRARY_PATH"] = ":".join(
                [*(str(p) for p in self.library_paths), *filter(None, [env.get("LD_LIBRARY_PATH")])]
            )
        # The python backend stub embeds an interpreter that finds its prefix through `python3`
        # on PATH: put this virtual environment first so that the models see its packages.
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        return env

    def start_process(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                self.arguments(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        logger.info("started tritonserver pid %d, log in %s", self._process.pid, self.log_file)

    def exited(self) -> bool:
        return self._process is None or self._process.poll() is not None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def start(self, client: TritonClient, timeout_s: float) -> None:
        self._stopping = False
        self.start_process()
        try:
            await self.wait_ready(client, timeout_s)
        except BaseException:
            await self.stop()
            raise
        self._watchdog = asyncio.create_task(self._watch(client, timeout_s))

    async def wait_ready(self, client: TritonClient, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if self.exited():
                raise TritonServerError(f"tritonserver exited while starting:\n{self.log_tail()}")
            if await client.server_ready():
                return
            await asyncio.sleep(0.25)
        raise TritonServerError(
            f"tritonserver was not ready after {timeout_s:.0f} s:\n{self.log_tail()}"
        )

    async def _watch(self, client: TritonClient, timeout_s: float) -> None:
        while not self._stopping:
            await asyncio.sleep(1.0)
            if self._stopping or not self.exited():
                continue
            code = self._process.returncode if self._process else None
            logger.error("tritonserver exited with %s; restarting\n%s", code, self.log_tail(10))
            self.restarts += 1
            try:
                self.start_process()
                await self.wait_ready(client, timeout_s)
                logger.info("tritonserver is ready again after restart %d", self.restarts)
            except TritonServerError:
                logger.exception("tritonserver restart failed; retrying")
                await asyncio.sleep(min(30.0, 2.0 * self.restarts))

    async def stop(self, timeout_s: float = 15.0) -> None:
        self._stopping = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.to_thread(process.wait, timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("tritonserver ignored SIGINT for %.0f s; killing it", timeout_s)
            process.kill()
            await asyncio.to_thread(process.wait)


@dataclass(eq=False)
class _ShmRegion:
    """One POSIX shared-memory object ``/dev/shm/<name>``, known to Triton by the same name."""

    name: str
    byte_size: int
    handle: shm.SharedMemoryRegion
    registered: bool = False


class TritonClient:
    """Async HTTP client. Every failure to reach Triton or a model is raised as
    :class:`ModelUnavailableError` so that the API answers 503.

    Outputs always come back as binary HTTP tensors. Inputs travel as binary HTTP
    (``transport="binary"``) or through POSIX system shared memory (``"shm"``): the client
    writes them into a region that Triton maps, and the request carries only its name. ``shm``
    needs Triton on the same host, sharing ``/dev/shm`` (same container, or ``--ipc=host``),
    running as a user that may open the API's regions (created with mode 0600).

    Each shm call checks a region out of a pool of at most ``shm_pool_size`` (waiting, within
    the request timeout, while all are in use), so that concurrent calls never share one.
    Regions are created lazily, replaced by a larger one when a call needs more bytes, and named
    ``face_<pid>_<random>_<n>`` so that several API processes on one Triton never collide.
    Triton forgets registrations when it restarts: a call that meets an unknown region registers
    it again and retries once. :meth:`close` unregisters and unlinks every region.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        transport: Literal["binary", "shm"] = "binary",
        shm_pool_size: int = 8,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.transport = transport
        self.shm_prefix = f"face_{os.getpid()}_{secrets.token_hex(4)}"
        self._client = InferenceServerClient(url, conn_timeout=timeout_s)
        self._shm_numbers = itertools.count()
        self._shm_slots = asyncio.Semaphore(shm_pool_size)
        self._shm_free: list[_ShmRegion] = []
        self._shm_regions: dict[str, _ShmRegion] = {}

    async def close(self) -> None:
        regions = list(self._shm_regions.values())
        self._shm_regions.clear()
        self._shm_free.clear()
        with contextlib.suppress(*_TRITON_ERRORS):
            async with asyncio.timeout(self.timeout_s):
                for region in regions:
                    if region.registered:
                        await self._client.unregister_system_shared_memory(region.name)
        for region in regions:
            _unlink(region.handle)
        await self._client.close()

    async def server_ready(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                return bool(await self._client.is_server_ready())
        except _TRITON_ERRORS:
            return False

    async def model_ready(self, model: str) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                return bool(await self._client.is_model_ready(model))
        except _TRITON_ERRORS:
            return False

    async def model_config(self, model: str) -> mc.ModelConfig:
        try:
            async with asyncio.timeout(self.timeout_s):
                config = await self._client.get_model_config(model)
        except _TRITON_ERRORS as error:
            raise ModelUnavailableError(f"model {model!r} is not available: {error}") from error
        return json_format.ParseDict(config, mc.ModelConfig(), ignore_unknown_fields=True)

    async def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        requested = [InferRequestedOutput(name, binary_data=True) for name in outputs]
        try:
            async with asyncio.timeout(self.timeout_s):
                if self.transport == "shm":
                    result = await self._infer_shm(model, inputs, requested)
                else:
                    result = await self._infer(model, _binary_inputs(inputs), requested)
        except TimeoutError as error:
            raise ModelUnavailableError(
                f"model {model!r} did not answer within {self.timeout_s:.0f} s"
            ) from error
        except (*_TRITON_ERRORS, SharedMemoryException) as error:
            raise ModelUnavailableError(f"model {model!r} is not available: {error}") from error
        return {name: result.as_numpy(name) for name in outputs}

    async def _infer(
        self, model: str, inputs: list[InferInput], requested: list[InferRequestedOutput]
    ) -> InferResult:
        # A fresh dict: the client writes this request's Inference-Header-Content-Length into it.
        headers = dict(_NO_COMPRESSION)
        return await self._client.infer(model, inputs, outputs=requested, headers=headers)

    async def _infer_shm(
        self, model: str, inputs: Mapping[str, np.ndarray], requested: list[InferRequestedOutput]
    ) -> InferResult:
        offsets, byte_size = _shm_layout(inputs.values())
        async with self._shm_region(byte_size) as region:
            infer_inputs = []
            for (name, array), offset in zip(inputs.items(), offsets, strict=True):
                shm.set_shared_memory_region(region.handle, [array], offset=offset)
                infer_input = InferInput(name, list(array.shape), _triton_dtype(array))
                infer_inputs.append(
                    infer_input.set_shared_memory(region.name, array.nbytes, offset)
                )
            if not region.registered:
                await self._register(region)
            try:
                return await self._infer(model, infer_inputs, requested)
            except InferenceServerException as error:
                if _UNKNOWN_REGION not in str(error.message()):
                    raise
                logger.warning(
                    "Triton forgot region %s (restarted?): registering it again", region.name
                )
                await self._register(region)
                return await self._infer(model, infer_inputs, requested)

    @contextlib.asynccontextmanager
    async def _shm_region(self, byte_size: int) -> AsyncIterator[_ShmRegion]:
        """A region of at least ``byte_size`` bytes, for this call alone."""
        async with self._shm_slots:
            fitting = [r for r in self._shm_free if r.byte_size >= byte_size]
            if fitting:
                region = min(fitting, key=lambda r: r.byte_size)
                self._shm_free.remove(region)
            else:
                if self._shm_free:  # replace the smallest: at most shm_pool_size regions in all
                    await self._destroy(min(self._shm_free, key=lambda r: r.byte_size))
                region = self._create(byte_size)
            try:
                yield region
            finally:
                if region.name in self._shm_regions:  # not destroyed by close() meanwhile
                    self._shm_free.append(region)

    def _create(self, byte_size: int) -> _ShmRegion:
        size = max(1, -(-byte_size // _SHM_GRANULE)) * _SHM_GRANULE
        name = f"{self.shm_prefix}_{next(self._shm_numbers)}"
        handle = shm.create_shared_memory_region(name, f"/{name}", size, create_only=True)
        try:
            _reserve(_SHM_DIRECTORY / name, size)
        except OSError as error:
            _unlink(handle)
            raise SharedMemoryException(
                f"no room for {size} bytes in {_SHM_DIRECTORY}: {error}"
            ) from error
        region = self._shm_regions[name] = _ShmRegion(name, size, handle)
        return region

    async def _register(self, region: _ShmRegion) -> None:
        # Unregistering first (a no-op for an unknown name) also covers a registration that
        # Triton completed after this client gave up waiting for it.
        region.registered = False
        await self._client.unregister_system_shared_memory(region.name)
        try:
            await self._client.register_system_shared_memory(
                region.name, f"/{region.name}", region.byte_size
            )
        except InferenceServerException as error:
            raise ModelUnavailableError(
                f"Triton at {self.url} cannot map shared memory region {region.name!r}: "
                f"{error}. transport shm needs Triton on this host, sharing /dev/shm; "
                "set FACE_TRITON_TRANSPORT=binary otherwise"
            ) from error
        region.registered = True

    async def _destroy(self, region: _ShmRegion) -> None:
        self._shm_free.remove(region)
        del self._shm_regions[region.name]
        try:
            if region.registered:
                with contextlib.suppress(*_TRITON_ERRORS):
                    await self._client.unregister_system_shared_memory(region.name)
        finally:
            _unlink(region.handle)


_TRITON_ERRORS = (aiohttp.ClientError, InferenceServerException, TimeoutError, OSError)
# Triton's answer (404) for a region it does not know, e.g. after a restart.
_UNKNOWN_REGION = "Unable to find shared memory region"
# Inputs of one call share a region, each at a multiple of 64 bytes; regions come in whole MiB
# so that a recognizer batch a few crops larger than the last one needs no new region.
_SHM_ALIGNMENT = 64
_SHM_GRANULE = 1 << 20
_SHM_DIRECTORY = Path("/dev/shm")  # where glibc's shm_open keeps POSIX shared memory


def _binary_inputs(inputs: Mapping[str, np.ndarray]) -> list[InferInput]:
    infer_inputs = []
    for name, array in inputs.items():
        infer_input = InferInput(name, list(array.shape), _triton_dtype(array))
        infer_input.set_data_from_numpy(array, binary_data=True)
        infer_inputs.append(infer_input)
    return infer_inputs


def _reserve(path: Path, byte_size: int) -> None:
    """Allocate the pages of a new region now: writing into a sparse one on a full /dev/shm
    (Docker's default is 64 MB) would kill this process with SIGBUS instead of raising."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, byte_size)
    finally:
        os.close(fd)


def _unlink(handle: shm.SharedMemoryRegion) -> None:
    with contextlib.suppress(FileNotFoundError):  # removed by someone else, e.g. systemd RemoveIPC
        shm.destroy_shared_memory_region(handle)


def _shm_layout(arrays: Iterable[np.ndarray]) -> tuple[list[int], int]:
    """Offsets of the arrays in one region, and the bytes they need in all."""
    offsets, end = [], 0
    for array in arrays:
        offsets.append(end)
        end += -(-array.nbytes // _SHM_ALIGNMENT) * _SHM_ALIGNMENT
    return offsets, end


# aiohttp asks for gzip by default; Triton then compresses ~1 MB of detector outputs per call and
# the client inflates them on the event loop: 3x slower than plain binary tensors on loopback.
_NO_COMPRESSION = {"Accept-Encoding": "identity"}


def _triton_dtype(array: np.ndarray) -> str:
    return {np.float32: "FP32", np.float16: "FP16", np.uint8: "UINT8", np.int64: "INT64"}[
        array.dtype.type
    ]


@dataclass(frozen=True)
class HealthReport:
    ready: bool
    triton: bool
    models: dict[str, bool]
    reason: str | None


class TritonService:
    """Owns the model repository's configs, the local server (unless external) and the client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: TritonServer | None = None
        url = settings.triton_url
        if url is None:
            url = f"{settings.triton_bind_address}:{settings.triton_http_port}"
        self.client = TritonClient(
            url, timeout_s=settings.triton_request_timeout_s, transport=self.transport(url)
        )

    def transport(self, url: str) -> Literal["binary", "shm"]:
        """Shared memory needs Triton on this host; over a network only the HTTP body works."""
        if self.settings.triton_transport != "auto":
            return self.settings.triton_transport
        host = urlsplit(f"//{url}").hostname or ""
        local = (
            self.settings.triton_url is None
            or host in ("localhost", "::1")
            or host.startswith("127.")
        )
        return "shm" if local else "binary"

    @property
    def external(self) -> bool:
        return self.settings.triton_url is not None

    def prepare_local_server(self) -> TritonServer:
        settings = self.settings
        binary, libraries = pytriton_server_paths()
        backend_directory = prepare_python_backend(settings.triton_log_file.parent / "backends")
        backend = settings.triton_backend
        if backend == "auto":
            backend = detect_backend(backend_directory)
        write_model_configs(settings.model_repository, model_serving_options(settings, backend))
        return TritonServer(
            model_repository=settings.model_repository,
            backend_directory=backend_directory,
            binary=binary,
            library_paths=[libraries, python_library_dir()],
            bind_address=settings.triton_bind_address,
            http_port=settings.triton_http_port,
            grpc_port=settings.triton_grpc_port,
            metrics_port=settings.triton_metrics_port,
            log_file=settings.triton_log_file,
        )

    async def start(self) -> None:
        if self.external:
            logger.info("using the external Triton at %s", self.client.url)
            return
        self.server = self.prepare_local_server()
        await self.server.start(self.client, self.settings.triton_startup_timeout_s)

    async def stop(self) -> None:
        # Close our keep-alive connections first: Triton waits for open connections on SIGINT.
        await self.client.close()
        if self.server is not None:
            await self.server.stop()

    async def health(self) -> HealthReport:
        triton = await self.client.server_ready()
        models = {name: triton and await self.client.model_ready(name) for name in MODEL_NAMES}
        reason = None
        if not triton:
            reason = f"Triton at {self.client.url} is not ready"
        elif not all(models.values()):
            missing = ", ".join(name for name, ready in models.items() if not ready)
            reason = f"model(s) not ready: {missing}"
        return HealthReport(ready=reason is None, triton=triton, models=models, reason=reason)
