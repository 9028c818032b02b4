"""The SCRFD face detector on Triton: letterboxed images in, faces (box, score, five landmarks) in
each image's own pixels out, through :mod:`face_service.inference.scrfd`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from face_service.errors import ModelConfigError
from face_service.faces import Face
from face_service.imaging import Letterbox, fits_as_is, fitted_letterbox, letterbox
from face_service.inference.models import TritonModel, model_input
from face_service.inference.names import DETECTOR_MODEL
from face_service.inference.scrfd import ScrfdLayoutError, decode_scrfd, group_outputs, nms

# Canvas pixels of a chunk whose pixel layout and post-processing run on the event loop, not in
# a worker thread (see FaceDetector.predict): a 320x320 canvas or less.
INLINE_PIXELS = 320 * 320

T = TypeVar("T")


async def _run(inline: bool, work: Callable[[], T]) -> T:
    return work() if inline else await asyncio.to_thread(work)


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
        # Trimmed canvases (imaging.fitted_letterbox) for CPU instances only: a GPU builds its
        # kernels per input shape (a new shape stalled executions for seconds), so it gets
        # the square canvases it was warmed up at.
        self.trim_canvas = all(
            group.kind != mc.ModelInstanceGroup.KIND_GPU for group in config.instance_group
        )

    async def predict(
        self,
        images: Sequence[np.ndarray],
        *,
        input_size: int,
        threshold: float,
        nms_threshold: float,
        canvas: str = "fixed",
        min_input_size: int = 64,
    ) -> list[list[Face]]:
        """Faces per image, best score first, in each image's own pixel coordinates. With
        ``canvas`` "fit" each image gets its own canvas (:func:`fitted_letterbox`); images of
        one canvas shape go to the model together."""
        await self.ensure_loaded()

        def letterboxes() -> list[Letterbox]:
            if canvas == "fit":
                return [
                    fitted_letterbox(image, input_size, min_input_size, trim=self.trim_canvas)
                    for image in images
                ]
            return [letterbox(image, input_size) for image in images]

        # One worker-thread hop per step and chunk, not per image, and none for a chunk of at
        # most INLINE_PIXELS: a hop costs 0.05 ms on an idle event loop (more when the cores are
        # busy), as much as the small work it carries for a 250x250 photo (letterbox 0.01 ms,
        # model_input 0.1 ms, anchors and NMS 0.1 ms).
        single = images[0].shape[:2] if len(images) == 1 else None
        if canvas == "fit" and single and fits_as_is(*single, input_size, min_input_size):
            boxes = letterboxes()  # a copy onto the canvas, no resize: 0.01-0.1 ms
        else:
            boxes = await asyncio.to_thread(letterboxes)
        by_shape: dict[tuple[int, int], list[int]] = {}
        for index, box in enumerate(boxes):
            by_shape.setdefault(box.canvas.shape[:2], []).append(index)
        results: list[list[Face]] = [[] for _ in images]
        for shape, indices in by_shape.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                inline = len(chunk) * shape[0] * shape[1] <= INLINE_PIXELS
                blob = await _run(
                    inline, lambda chunk=chunk: model_input([boxes[i].canvas for i in chunk])
                )
                outputs = await self._infer(blob)
                found = await _run(
                    inline,
                    lambda chunk=chunk, outputs=outputs, shape=shape: [
                        self._faces(
                            outputs[position], boxes[index].scale, shape, threshold, nms_threshold
                        )
                        for position, index in enumerate(chunk)
                    ],
                )
                for index, faces in zip(chunk, found, strict=True):
                    results[index] = faces
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
        image_outputs: dict[str, np.ndarray],
        scale: float,
        canvas_shape: tuple[int, int],
        threshold: float,
        nms_threshold: float,
    ) -> list[Face]:
        boxes, scores, points = decode_scrfd(
            [image_outputs[n] for n in self.outputs.scores],
            [image_outputs[n] for n in self.outputs.boxes],
            [image_outputs[n] for n in self.outputs.points],
            input_height=canvas_shape[0],
            input_width=canvas_shape[1],
            threshold=threshold,
        )
        boxes, points = boxes / scale, points / scale
        keep = nms(boxes, scores, nms_threshold)
        return [
            Face(bbox=boxes[i].astype(np.float32), det_score=float(scores[i]), landmarks=points[i])
            for i in keep
        ]
