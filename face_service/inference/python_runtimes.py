"""The inference runtimes of the python-backend model (:mod:`face_service.inference.python_model`):
each runs one ONNX file on the CPU and is chosen by the model configuration's ``runtime``
parameter through :data:`RUNTIMES`.

face_service.inference.model_config copies this file beside ``model.py`` (the python backend puts
that folder on ``sys.path``), so it imports nothing of face_service. A runtime imports its library
only when chosen: a service on onnxruntime needs no OpenVINO and the other way round.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Protocol

import numpy as np

# Shape of one input tensor, as a key of the compiled models.
Shape = tuple[int, ...]
# The service's precision names -> OpenVINO's INFERENCE_PRECISION_HINT.
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}


class Runtime(Protocol):
    def run(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs, in the configuration's order, for one batch of inputs."""
        ...


class OnnxruntimeRuntime:
    """onnxruntime's CPU provider (fp32 only): the peer's own arithmetic."""

    def __init__(
        self, model_file: Path, parameters: Mapping[str, str], output_names: Sequence[str]
    ) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(parameters.get("intra_op_thread_count", "0"))
        options.inter_op_num_threads = int(parameters.get("inter_op_thread_count", "0"))
        # Only errors: w600k_mbf declares a [1, 512] output internally and runs batched anyway.
        options.log_severity_level = 3
        # Idle onnxruntime threads otherwise spin for a while after each run, taking the CPU
        # from the API process and the other model on small machines.
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", parameters.get("allow_spinning", "0")
        )
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(
            str(model_file), options, providers=["CPUExecutionProvider"]
        )
        self.output_names = list(output_names)

    def run(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, dict(feed))


def parse_shapes(text: str) -> list[Shape]:
    """``"1x3x256x256;1x3x288x288"`` -> [(1, 3, 256, 256), (1, 3, 288, 288)]."""
    return [tuple(int(d) for d in part.split("x")) for part in text.split(";") if part.strip()]


@contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """Hold the lock file of ``folder`` (blocking) for the block: one process at a time.

    OpenVINO writes a compiled model into its cache folder without guarding against another
    process writing the same blob: two instances of one model (``triton_instances`` 2), or two
    services on one data folder, starting together often fail to load with "filesystem
    error: cannot set permissions: No such file or directory [<cache>/<hash>.blob]" (measured:
    3 processes on one fresh folder, 5 of 14 rounds). Under the lock the first compiles and
    writes, the next import what it wrote. The kernel drops the lock with the process, so a
    killed start never leaves it held."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class OpenvinoRuntime:
    """OpenVINO on the CPU: bf16 arithmetic where the CPU has it (AVX-512 bf16, AMX), which
    onnxruntime's CPU provider does not use.

    One model compiled for dynamic shapes answers any input; the shapes the service uses most
    (``static_shapes``: the detector's square canvases, the recognizer's small batches) are
    compiled for their fixed shape at load and used instead, as they run faster (2 cores, bf16,
    medians: SCRFD 256x256 2.3 ms static vs 5.9 ms dynamic, MobileFaceNet batch 1 5.5 vs 8.6 ms;
    batch 16 86.7 vs 86.8). Compiling takes 150-300 ms a shape, so it happens at load, never in a
    request, and OpenVINO's model cache (``cache_directory``) makes it an import at the next
    start. A batch of two or more runs in slices, one per thread (:meth:`_run_sliced`)."""

    def __init__(
        self, model_file: Path, parameters: Mapping[str, str], output_names: Sequence[str]
    ) -> None:
        import openvino

        self.core = openvino.Core()
        cache = parameters.get("cache_directory", "")
        if cache:
            self.core.set_property({"CACHE_DIR": cache})
        with exclusive(Path(cache)) if cache else nullcontext():
            self._compile(model_file, parameters, output_names)

    def _compile(
        self, model_file: Path, parameters: Mapping[str, str], output_names: Sequence[str]
    ) -> None:
        precision = parameters.get("precision", "fp32")
        if precision not in PRECISION_HINTS:
            raise ValueError(f"precision must be fp32 or bf16, not {precision!r}")
        self.properties: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            # Explicit: on a CPU with bf16 OpenVINO otherwise picks bf16 by itself.
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
        }
        threads = int(parameters.get("intra_op_thread_count", "0"))
        if threads:
            self.properties["INFERENCE_NUM_THREADS"] = threads
        self.model_file = model_file
        self.output_names = list(output_names)
        dynamic = self.core.compile_model(str(model_file), "CPU", self.properties)
        self.input_name = dynamic.inputs[0].any_name
        self.dynamic = self._runner(dynamic)
        self.static: dict[Shape, Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]] = {}
        for shape in parse_shapes(parameters.get("static_shapes", "")):
            self.static[shape] = self._compile_static(shape)
        # A batch of two or more runs as one slice per thread, each slice on its own stream of
        # one thread, all at once, instead of every thread sharing each layer of the whole batch:
        # no thread waits for another between layers (2 cores, MobileFaceNet bf16, medians of
        # interleaved runs: CPU a face 8.2-9.1 ms vs 9.3-10.6 for batches 2-22, wall 4-10%
        # shorter).
        threads = threads or os.cpu_count() or 1
        self.slices: list[Any] = []
        if threads > 1:
            streamed = self.core.compile_model(
                str(model_file),
                "CPU",
                {
                    **self.properties,
                    "PERFORMANCE_HINT": "THROUGHPUT",
                    "NUM_STREAMS": threads,
                    "INFERENCE_NUM_THREADS": threads,
                },
            )
            self.slices = [streamed.create_infer_request() for _ in range(threads)]
            self.slice_outputs = [streamed.output(name) for name in self.output_names]

    def _compile_static(
        self, shape: Shape
    ) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
        model = self.core.read_model(str(self.model_file))
        model.reshape({self.input_name: list(shape)})
        runner = self._runner(self.core.compile_model(model, "CPU", self.properties))
        element = model.inputs[0].element_type.to_dtype()
        runner({self.input_name: np.zeros(shape, dtype=element)})  # first run allocates
        return runner

    def _runner(self, compiled: Any) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
        request = compiled.create_infer_request()
        outputs = [compiled.output(name) for name in self.output_names]

        def run(feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            results = request.infer(dict(feed), share_inputs=True)
            return [results[output] for output in outputs]

        return run

    def run(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        shape = tuple(feed[self.input_name].shape)
        if shape in self.static:
            return self.static[shape](feed)
        if self.slices and shape[0] > 1:
            return self._run_sliced(feed, shape[0])
        return self.dynamic(feed)

    def _run_sliced(self, feed: Mapping[str, np.ndarray], batch: int) -> list[np.ndarray]:
        bounds = np.linspace(0, batch, min(batch, len(self.slices)) + 1).astype(int)
        started = []
        for request, start, stop in zip(self.slices, bounds[:-1], bounds[1:], strict=False):
            request.start_async(
                {name: value[start:stop] for name, value in feed.items()}, share_inputs=True
            )
            started.append(request)
        for request in started:
            request.wait()
        return [
            np.concatenate([request.get_tensor(output).data for request in started])
            for output in self.slice_outputs
        ]


RUNTIMES: dict[str, Callable[[Path, Mapping[str, str], Sequence[str]], Runtime]] = {
    "onnxruntime": OnnxruntimeRuntime,
    "openvino": OpenvinoRuntime,
}
