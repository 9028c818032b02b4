"""The ArcFace face recognizer on Triton: aligned 112x112 crops in, L2-normalised embeddings of
the model's own width (:attr:`FaceRecognizer.dimension`) out."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from face_service import metrics
from face_service.errors import ModelConfigError
from face_service.imaging import ARCFACE_SIZE
from face_service.inference.models import TritonModel, model_input, parameter
from face_service.inference.names import RECOGNIZER_MODEL

# Crops laid out for the model on the event loop rather than in a worker thread: 0.03 ms a crop
# (2 cores), while a hop to a worker thread costs 0.05 ms on an idle loop and more on a busy one.
INLINE_CROPS = 2


class FaceRecognizer(TritonModel):
    model_name = RECOGNIZER_MODEL
    # The embedding width: the config's output width, or, where that is dynamic (-1), the width of
    # a first embedding computed by load(). None until loaded.
    dimension: int | None = None

    def configure(self, config: mc.ModelConfig) -> None:
        if len(config.input) != 1 or len(config.output) != 1:
            raise ModelConfigError(
                f"{self.model_name}: expected 1 input and 1 output, "
                f"found {len(config.input)} and {len(config.output)}"
            )
        dims = list(config.input[0].dims)
        if dims[-3:] != [3, ARCFACE_SIZE, ARCFACE_SIZE]:
            raise ModelConfigError(f"{self.model_name}: input dims {dims} are not [3, 112, 112]")
        if config.max_batch_size < 1:
            raise ModelConfigError(f"{self.model_name}: max_batch_size must be > 0 for batching")
        self.input_name = self.require_pixels(config.input[0])
        self.output_name = config.output[0].name
        self.batch_size = config.max_batch_size
        self.similarity_threshold = float(parameter(config, "similarity_threshold", "0.3"))
        output_dims = list(config.output[0].dims)
        self.dimension = output_dims[-1] if output_dims and output_dims[-1] > 0 else None

    async def load(self) -> None:
        await super().load()
        if self.dimension is None:
            # The config does not say: the model tells with its first answer.
            blank = np.zeros((ARCFACE_SIZE, ARCFACE_SIZE, 3), np.uint8)
            embeddings, _ = await self.predict([blank])
            self.dimension = embeddings.shape[1]

    async def predict(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """L2-normalised embeddings (N, D) of aligned 112x112 BGR crops, in batches of at most
        the model's ``max_batch_size``, and the norms (N,) they had before (a quality hint:
        blurred or tiny faces get small norms)."""
        await self.ensure_loaded()
        embeddings = []
        for start in range(0, len(crops), self.batch_size):
            chunk = list(crops[start : start + self.batch_size])
            metrics.RECOGNIZER_BATCH_SIZE.observe(len(chunk))
            if len(chunk) <= INLINE_CROPS:
                blob = model_input(chunk)
            else:
                blob = await asyncio.to_thread(model_input, chunk)
            outputs = await self.client.infer(
                self.model_name, {self.input_name: blob}, [self.output_name]
            )
            embeddings.append(outputs[self.output_name].reshape(len(chunk), -1))
        stacked = np.concatenate(embeddings).astype(np.float32)
        if self.dimension is not None and stacked.shape[1] != self.dimension:
            raise ModelConfigError(
                f"{self.model_name}: embeddings of width {stacked.shape[1]}, "
                f"while its config says {self.dimension}"
            )
        norms = np.linalg.norm(stacked, axis=1)
        return stacked / norms[:, None], norms
