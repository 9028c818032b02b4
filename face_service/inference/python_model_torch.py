"""Triton python-backend model that runs the ONNX file beside it in torch on a GPU.

face_service.inference.model_config copies this file as ``<model>/<version>/model.py`` when
``FACE_DEVICE=gpu`` and the server has no native onnxruntime backend (the ``tritonserver`` of the
nvidia-pytriton wheel). The ONNX graph is converted with onnx2torch and run on the instance's GPU
in ``torch_precision`` (fp16 through autocast: the installed graphs cast their uint8 pixels to
fp32 themselves, so halving the weights alone would not type-check). Tensors enter and leave
through DLPack, never numpy: the stub's numpy conversions returned empty tensors with numpy 2
(../shared/NOTES.md), and outputs stay on the GPU until Triton copies them for the response.

At load the model runs a fixed probe batch both here and with onnxruntime's fp32 CPU path and
refuses to load when any sample's outputs have a cosine below ``min_cosine``: a precision or
conversion error stops the server at start instead of shifting every similarity.

Requests that arrive together (dynamic batching) with equal non-batch shapes run as one call.
The stub ends itself once tritonserver is gone (python_stub.py, copied beside this file).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any

import triton_python_backend_utils as pb_utils

PROBE_SEED = 20261202


def probe_batch(shape: list[int], batch: int) -> Any:
    """uint8 pixels that look more like a photo than white noise: smooth gradients and blobs
    plus mild noise, the same on every start."""
    import numpy as np

    rng = np.random.default_rng(PROBE_SEED)
    channels, height, width = shape
    coarse = rng.integers(0, 256, (batch, channels, 8, 8)).astype(np.float32)
    smooth = np.kron(coarse, np.ones((height // 8 + 1, width // 8 + 1), np.float32))
    smooth = smooth[:, :, :height, :width]
    noisy = smooth + rng.normal(0, 12, smooth.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        # Beside this file in the model's folder (the python backend puts it on sys.path).
        from python_stub import exit_with_parent, groups_of_equal_shape, model_configuration

        exit_with_parent()
        self.groups_of_equal_shape = groups_of_equal_shape
        config, parameters, self.model_file = model_configuration(args)
        self.parameters = parameters
        for path in parameters.get("python_paths", "").split(os.pathsep):
            if path and path not in sys.path:
                sys.path.append(path)
        import torch
        from onnx2torch import convert

        self.torch = torch
        # The only CPU work left here is moving tensors: torch's default of one thread per core
        # in every stub process, each spinning after its parallel regions, kept 11 of the GPU
        # machine's 16 cores busy at 29 images/s (bench/gpu.py, 2026-12-02) and starved the API.
        torch.set_num_threads(1)
        with contextlib.suppress(RuntimeError):  # already set in this process
            torch.set_num_interop_threads(1)
        if args.get("model_instance_kind") == "GPU":
            self.device = torch.device("cuda", int(args["model_instance_device_id"]))
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self.half = parameters.get("torch_precision", "fp16") == "fp16" and (
            self.device.type == "cuda"
        )
        self.model = convert(str(self.model_file)).eval().to(self.device)
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.min_cosine = float(parameters.get("min_cosine", "0.995"))
        self.probe_shape = [int(d) if int(d) > 0 else 640 for d in config["input"][0]["dims"]]
        self.max_batch_size = int(config.get("max_batch_size", 0))
        self.check_against_cpu(int(parameters.get("intra_op_thread_count", "0")))
        self.warm_up()

    def padded_size(self, batch: int) -> int:
        """The batch size a batch of ``batch`` runs at: the next power of two (at most
        ``max_batch_size``). cuDNN builds its plans per input shape, which took up to seconds
        per new batch size on the H200 (bench/gpu.py, 2026-12-02: executions of 2-26 images at
        1.3-21 s while the GPU sat at 1-2 %); a few padded sizes, built at load, bound that."""
        if not self.batched or batch < 1:
            return batch
        return min(1 << (batch - 1).bit_length(), max(self.max_batch_size, batch))

    def warm_up(self) -> None:
        """Runs every padded batch size once at every input shape the service sends (the
        ``warm_sides`` squares for a model of free height and width, else the probe shape), so
        that no request pays for building its plans."""
        if not self.batched:
            return
        sides = [int(side) for side in self.parameters.get("warm_sides", "").split(";") if side]
        shapes = [[*self.probe_shape[:-2], side, side] for side in sides] or [self.probe_shape]
        started = time.monotonic()
        for shape in shapes:
            size = 1
            while True:
                pixels = self.torch.zeros(
                    [size, *shape], dtype=self.torch.uint8, device=self.device
                )
                self.run([pixels])
                if size >= self.max_batch_size:
                    break
                size = self.padded_size(size + 1)
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)
        pb_utils.Logger.log_info(
            f"{self.model_file}: warmed {len(shapes)} shape(s) at every padded batch size "
            f"in {time.monotonic() - started:.1f} s"
        )

    def run(self, feed: list[Any]) -> list[Any]:
        """The model's outputs (fp32, on the device) for input tensors on the device."""
        with self.torch.inference_mode():
            if self.half:
                with self.torch.autocast("cuda", dtype=self.torch.float16):
                    outputs = self.model(*feed)
            else:
                outputs = self.model(*feed)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return [output.float().contiguous() for output in outputs]

    def check_against_cpu(self, threads: int) -> None:
        """Raises unless every probe sample's outputs agree with onnxruntime's fp32 CPU path."""
        import numpy as np
        import onnxruntime

        batch = 4 if self.batched else 1
        shape = self.probe_shape if self.batched else self.probe_shape[1:]
        pixels = probe_batch(shape, batch)
        if not self.batched:
            pixels = pixels[0]
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(
            str(self.model_file), options, providers=["CPUExecutionProvider"]
        )
        expected = session.run(self.output_names, {self.input_names[0]: pixels})
        actual = self.run([self.torch.from_numpy(pixels).to(self.device)])
        rows = batch if self.batched else 1
        flat_expected = np.concatenate([e.reshape(rows, -1) for e in expected], axis=1)
        flat_actual = np.concatenate([a.cpu().numpy().reshape(rows, -1) for a in actual], axis=1)
        cosines = (flat_expected * flat_actual).sum(1) / (
            np.linalg.norm(flat_expected, axis=1) * np.linalg.norm(flat_actual, axis=1)
        )
        worst = float(cosines.min())
        message = (
            f"{self.model_file}: {'fp16' if self.half else 'fp32'} torch on {self.device} vs "
            f"fp32 onnxruntime CPU, least cosine {worst:.6f} over {rows} probe samples"
        )
        if not worst >= self.min_cosine:
            raise pb_utils.TritonModelException(f"{message} < {self.min_cosine}")
        pb_utils.Logger.log_info(message)

    def execute(self, requests: list[Any]) -> list[Any]:
        from_dlpack = self.torch.utils.dlpack.from_dlpack
        inputs = [
            [
                from_dlpack(pb_utils.get_input_tensor_by_name(request, name).to_dlpack()).to(
                    self.device
                )
                for name in self.input_names
            ]
            for request in requests
        ]
        outputs: list[list[Any] | None] = [None] * len(requests)
        shapes = [[tensor.shape for tensor in tensors] for tensors in inputs]
        for group in self.groups_of_equal_shape(shapes, self.batched):
            feed = [
                self.torch.cat([inputs[i][k] for i in group])
                if len(group) > 1
                else inputs[group[0]][k]
                for k in range(len(self.input_names))
            ]
            rows = feed[0].shape[0] if self.batched else 0
            padding = self.padded_size(rows) - rows
            if padding:
                feed = [
                    self.torch.cat([tensor, tensor[:1].expand(padding, *tensor.shape[1:])])
                    for tensor in feed
                ]
            results = self.run(feed)
            start = 0
            for i in group:
                count = inputs[i][0].shape[0] if self.batched else 1
                outputs[i] = [
                    r[start : start + count].contiguous() if self.batched else r for r in results
                ]
                start += count
        to_dlpack = self.torch.utils.dlpack.to_dlpack
        return [
            pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor.from_dlpack(name, to_dlpack(tensor))
                    for name, tensor in zip(self.output_names, result, strict=True)
                ]
            )
            for result in outputs
        ]
