"""The SCRFD face detector on Triton: letterboxed images in, faces (box, score, five landmarks) in
each image's own pixels out, through :mod:`face_service.inference.scrfd`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from face_service.errors import ModelConfigError
from face_service.faces import Face
from face_service.imaging import letterbox
from face_service.inference.models import TritonModel, model_input
from face_service.inference.names import DETECTOR_MODEL
from face_service.inference.scrfd import ScrfdLayoutError, decode_scrfd, group_outputs, nms


class FaceDetector(TritonModel):
    model_name = DETECTOR_MODEL

    def configure(self, config: mc.ModelConfig) -> None:
        if len(config.input) != 1:
            raise ModelConfigError(
                f"{self.model_name}: expected 1 input, found {len(config.input)}"
            )
        self.input_name = self.require_pixels(config.input[0])
        try:
            self.outputs = group_outputs(
                (output.name, output.dims[-1] if output.dims else None) for output in config.output
            )
        except ScrfdLayoutError as error:
            raise ModelConfigError(f"{self.model_name}: {error}") from error
        self.batch_size = max(1, config.max_batch_size)
        self.batched = config.max_batch_size > 0

    async def predict(
        self,
        images: Sequence[np.ndarray],
        *,
        input_size: int,
        threshold: float,
        nms_threshold: float,
    ) -> list[list[Face]]:
        """Faces per image, best score first, in each image's own pixel coordinates."""
        await self.ensure_loaded()
        boxes = await asyncio.to_thread(lambda: [letterbox(image, input_size) for image in images])
        results: list[list[Face]] = []
        for start in range(0, len(boxes), self.batch_size):
            chunk = boxes[start : start + self.batch_size]
            blob = await asyncio.to_thread(model_input, [box.canvas for box in chunk])
            outputs = await self._infer(blob)
            for index, box in enumerate(chunk):
                results.append(
                    await asyncio.to_thread(
                        self._faces, outputs, index, box.scale, input_size, threshold, nms_threshold
                    )
                )
        return results

    async def _infer(self, blob: np.ndarray) -> list[dict[str, np.ndarray]]:
        names = self.outputs.names
        if self.batched:
            outputs = await self.client.infer(self.model_name, {self.input_name: blob}, names)
            return [{name: outputs[name][i] for name in names} for i in range(len(blob))]
        # Unbatched layout: one image per call, outputs [A, k].
        return [
            await self.client.infer(self.model_name, {self.input_name: blob[i : i + 1]}, names)
            for i in range(len(blob))
        ]

    def _faces(
        self,
        outputs: list[dict[str, np.ndarray]],
        index: int,
        scale: float,
        input_size: int,
        threshold: float,
        nms_threshold: float,
    ) -> list[Face]:
        image_outputs = outputs[index]
        boxes, scores, points = decode_scrfd(
            [image_outputs[n] for n in self.outputs.scores],
            [image_outputs[n] for n in self.outputs.boxes],
            [image_outputs[n] for n in self.outputs.points],
            input_height=input_size,
            input_width=input_size,
            threshold=threshold,
        )
        boxes, points = boxes / scale, points / scale
        keep = nms(boxes, scores, nms_threshold)
        return [
            Face(bbox=boxes[i].astype(np.float32), det_score=float(scores[i]), landmarks=points[i])
            for i in keep
        ]
