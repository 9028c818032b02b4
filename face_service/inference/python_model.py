"""Triton python-backend model that runs the ONNX file beside it with onnxruntime.

face_service.inference.model_config copies this file as ``<model>/<version>/model.py`` when the
server has no native onnxruntime backend (the ``tritonserver`` of the nvidia-pytriton wheel). It
reads everything from the model configuration Triton hands it, so one file serves every model.
Requests that arrive together (dynamic batching) with equal non-batch shapes run as one
onnxruntime call.

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
import onnxruntime
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
        config = json.loads(args["model_config"])
        parameters = {
            key: value["string_value"] for key, value in config.get("parameters", {}).items()
        }
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
        version_dir = Path(args["model_repository"]) / args["model_version"]
        model_file = version_dir / parameters.get("onnx_model_filename", "model.onnx")
        self.session = onnxruntime.InferenceSession(
            str(model_file), options, providers=["CPUExecutionProvider"]
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
            results = self.session.run(self.output_names, feed)
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
