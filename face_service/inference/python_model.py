"""Triton python-backend model that runs the ONNX file beside it with the runtime its
configuration names (``runtime`` parameter: openvino or onnxruntime, from python_runtimes.py).

face_service.inference.model_config copies this file as ``<model>/<version>/model.py``, with
python_runtimes.py beside it, when the server has no native backend for the runtime (the
``tritonserver`` of the nvidia-pytriton wheel). It reads everything from the model configuration
Triton hands it, so one file serves every model. Requests that arrive together (dynamic batching)
with equal non-batch shapes run as one call.

Each model runs in its own stub process, a child of tritonserver. A stub whose tritonserver is
gone (killed with its API) ends itself: :func:`exit_with_parent` watches for it from a thread, so
that no stub holds its memory and shared-memory region once nobody can call it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def exit_with_parent(interval_s: float = 0.5) -> None:
    """Ends this process soon after its parent (tritonserver) is gone. A thread that polls the
    parent rather than PR_SET_PDEATHSIG: that signal fires when the *thread* that forked the stub
    ends, which in tritonserver may be a short-lived loader thread."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-tritonserver", daemon=True).start()


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        exit_with_parent()
        # Beside this file in the model's folder (the python backend puts it on sys.path),
        # imported here so that the module imports without it (tests of exit_with_parent).
        from python_runtimes import RUNTIMES

        config = json.loads(args["model_config"])
        parameters = {
            key: value["string_value"] for key, value in config.get("parameters", {}).items()
        }
        version_dir = Path(args["model_repository"]) / args["model_version"]
        model_file = version_dir / parameters.get("onnx_model_filename", "model.onnx")
        output_names = [tensor["name"] for tensor in config["output"]]
        runtime = parameters.get("runtime", "onnxruntime")
        self.runtime = RUNTIMES[runtime](model_file, parameters, output_names)
        pb_utils.Logger.log_info(
            f"{config['name']}: {runtime}, {parameters.get('precision', 'fp32')}"
        )
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]
        self.batched = int(config.get("max_batch_size", 0)) > 0

    def execute(self, requests: list[Any]) -> list[Any]:
        inputs = [
            [
                pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                for name in self.input_names
            ]
            for request in requests
        ]
        outputs: list[list[np.ndarray] | None] = [None] * len(requests)
        for group in self._groups_of_equal_shape(inputs):
            feed = {
                name: np.concatenate([inputs[i][k] for i in group])
                if len(group) > 1
                else inputs[group[0]][k]
                for k, name in enumerate(self.input_names)
            }
            results = self.runtime.run(feed)
            start = 0
            for i in group:
                count = inputs[i][0].shape[0] if self.batched else 1
                outputs[i] = [r[start : start + count] if self.batched else r for r in results]
                start += count
        return [
            pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor(name, np.ascontiguousarray(array))
                    for name, array in zip(self.output_names, result, strict=True)
                ]
            )
            for result in outputs
        ]

    def _groups_of_equal_shape(self, inputs: list[list[np.ndarray]]) -> list[list[int]]:
        if not self.batched:
            return [[i] for i in range(len(inputs))]
        groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
        for i, tensors in enumerate(inputs):
            groups.setdefault(tuple(t.shape[1:] for t in tensors), []).append(i)
        return list(groups.values())
