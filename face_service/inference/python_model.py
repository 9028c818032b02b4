"""Triton python-backend model that runs the ONNX file beside it with the runtime its
configuration names (``runtime`` parameter: openvino or onnxruntime, from python_runtimes.py).

face_service.inference.model_config copies this file as ``<model>/<version>/model.py``, with
python_runtimes.py and python_stub.py beside it, when the server has no native backend for the
runtime (the ``tritonserver`` of the nvidia-pytriton wheel). It reads everything from the model
configuration Triton hands it, so one file serves every model. Requests that arrive together
(dynamic batching) with equal non-batch shapes run as one call.

Each model runs in its own stub process, a child of tritonserver, which ends itself once
tritonserver is gone (python_stub.exit_with_parent).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        # Beside this file in the model's folder (the python backend puts it on sys.path),
        # imported here so that the module imports without them (unit tests).
        from python_runtimes import RUNTIMES
        from python_stub import exit_with_parent, groups_of_equal_shape, model_configuration

        exit_with_parent()
        self.groups_of_equal_shape = groups_of_equal_shape
        config, parameters, model_file = model_configuration(args)
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
        shapes = [[tensor.shape for tensor in tensors] for tensors in inputs]
        for group in self.groups_of_equal_shape(shapes, self.batched):
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
