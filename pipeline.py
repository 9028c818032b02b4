"""The face pipeline: decode, SCRFD detection over Triton, anchor decoding, NMS, landmarks mapped
back to the image, 5-point alignment and one batched ArcFace call over Triton.

Models follow one template (:class:`TritonModel`): ``load`` reads the model's configuration from
Triton (so an external Triton works the same as the local one) and ``predict`` runs it. CPU work
(decoding, resizing, anchor decoding, warping) runs in worker threads so the event loop stays free.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from face_service.errors import ModelConfigError, NoFaceError
from face_service.faces import DetectionOptions, Face, most_prominent
from face_service.imaging import ARCFACE_SIZE, align_face, decode_image, letterbox, pad_to_square
from face_service.settings import Settings
from triton_service import DETECTOR_MODEL, METADATA_PREFIX, RECOGNIZER_MODEL, TritonClient

SCRFD_STRIDES = (8, 16, 32)
# Canvas factor for the retry when nothing was found: SCRFD misses faces that fill the frame.
PADDED_RETRY_FACTOR = 2.0


@dataclass
class ImageFaces:
    width: int
    height: int
    faces: list[Face] = field(default_factory=list)


# ---------------------------------------------------------------- pure functions (unit tested)


def anchor_centers(height: int, width: int, stride: int, num_anchors: int) -> np.ndarray:
    """(x, y) of every anchor on a ``height`` x ``width`` feature map, row-major, each location
    repeated ``num_anchors`` times: the order in which SCRFD emits its predictions."""
    ys, xs = np.mgrid[:height, :width]
    centers = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centers, num_anchors, axis=0) if num_anchors > 1 else centers


def distance_to_box(centers: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Left/top/right/bottom distances from anchor centres to [x1, y1, x2, y2] boxes."""
    return np.concatenate([centers - distances[:, 0:2], centers + distances[:, 2:4]], axis=1)


def distance_to_points(centers: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """(dx, dy) offsets per keypoint to (N, K, 2) keypoints."""
    offsets = distances.reshape(len(distances), -1, 2)
    return centers[:, None, :] + offsets


def decode_scrfd(
    scores: Sequence[np.ndarray],
    boxes: Sequence[np.ndarray],
    keypoints: Sequence[np.ndarray],
    *,
    input_height: int,
    input_width: int,
    threshold: float,
    strides: Sequence[int] = SCRFD_STRIDES,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates above ``threshold`` from one image's SCRFD outputs, per stride ``[A, k]``:
    boxes (N, 4), scores (N,) and landmarks (N, 5, 2) in input-canvas pixels."""
    all_boxes, all_scores, all_points = [], [], []
    for stride, score, box, points in zip(strides, scores, boxes, keypoints, strict=True):
        height, width = input_height // stride, input_width // stride
        num_anchors = score.shape[0] // (height * width)
        if num_anchors < 1 or num_anchors * height * width != score.shape[0]:
            raise ModelConfigError(
                f"stride {stride}: {score.shape[0]} predictions do not fit a {height}x{width} map"
            )
        keep = np.where(score[:, 0] >= threshold)[0]
        if keep.size == 0:
            continue
        centers = anchor_centers(height, width, stride, num_anchors)[keep]
        all_scores.append(score[keep, 0])
        all_boxes.append(distance_to_box(centers, box[keep] * stride))
        all_points.append(distance_to_points(centers, points[keep] * stride))
    if not all_scores:
        return (
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0, 5, 2), np.float32),
        )
    return np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_points)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first.
    Areas count the +1 pixel as InsightFace does, so that results match it."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(best)
        width = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        height = np.maximum(
            0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1
        )
        overlap = width * height / (areas[best] + areas[rest] - width * height)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def model_input(images: Sequence[np.ndarray], pixels: bool, mean: float, std: float) -> np.ndarray:
    """A batch (N, 3, H, W) of same-sized BGR images in RGB order: uint8 pixels for models that
    normalise inside (extract_insightface_models.py makes them so), else (x - mean) / std."""
    if pixels:
        return np.ascontiguousarray(np.stack(images)[..., ::-1].transpose(0, 3, 1, 2))
    size = images[0].shape[1], images[0].shape[0]
    return cv2.dnn.blobFromImages(list(images), 1.0 / std, size, (mean,) * 3, swapRB=True)


# ---------------------------------------------------------------- models on Triton


def _parameter(config: mc.ModelConfig, key: str, default: str) -> str:
    if METADATA_PREFIX + key in config.parameters:
        return config.parameters[METADATA_PREFIX + key].string_value
    return default


class TritonModel(ABC):
    """One model served by Triton: ``load`` reads its configuration, ``predict`` runs it."""

    model_name: str

    def __init__(self, client: TritonClient) -> None:
        self.client = client
        self.config: mc.ModelConfig | None = None

    @property
    def loaded(self) -> bool:
        return self.config is not None

    async def load(self) -> None:
        config = await self.client.model_config(self.model_name)
        self.configure(config)
        self.config = config

    @abstractmethod
    def configure(self, config: mc.ModelConfig) -> None:
        """Reads what ``predict`` needs from the model's configuration; raises ModelConfigError."""

    async def ensure_loaded(self) -> None:
        if self.config is None:
            await self.load()


class FaceDetector(TritonModel):
    model_name = DETECTOR_MODEL

    def configure(self, config: mc.ModelConfig) -> None:
        if len(config.input) != 1:
            raise ModelConfigError(
                f"{self.model_name}: expected 1 input, found {len(config.input)}"
            )
        self.input_name = config.input[0].name
        groups: dict[int, list[str]] = {1: [], 4: [], 10: []}
        for output in config.output:
            last = output.dims[-1] if output.dims else 0
            if last not in groups:
                raise ModelConfigError(
                    f"{self.model_name}: output {output.name!r} has dims {list(output.dims)}; "
                    "expected SCRFD score [.,1], bbox [.,4] or kps [.,10]"
                )
            groups[last].append(output.name)
        if any(len(names) != len(SCRFD_STRIDES) for names in groups.values()):
            raise ModelConfigError(
                f"{self.model_name}: expected {len(SCRFD_STRIDES)} outputs each of score, bbox and "
                f"kps, found { ({k: len(v) for k, v in groups.items()}) }"
            )
        self.score_names, self.box_names, self.point_names = groups[1], groups[4], groups[10]
        self.batch_size = max(1, config.max_batch_size)
        self.batched = config.max_batch_size > 0
        self.pixels_input = config.input[0].data_type == mc.TYPE_UINT8
        self.input_mean = float(_parameter(config, "input_mean", "127.5"))
        self.input_std = float(_parameter(config, "input_std", "128.0"))

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
            blob = await asyncio.to_thread(self._blob, [box.canvas for box in chunk])
            outputs = await self._infer(blob)
            for index, box in enumerate(chunk):
                results.append(
                    await asyncio.to_thread(
                        self._faces, outputs, index, box.scale, input_size, threshold, nms_threshold
                    )
                )
        return results

    def _blob(self, canvases: list[np.ndarray]) -> np.ndarray:
        return model_input(canvases, self.pixels_input, self.input_mean, self.input_std)

    async def _infer(self, blob: np.ndarray) -> list[dict[str, np.ndarray]]:
        names = [*self.score_names, *self.box_names, *self.point_names]
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
            [image_outputs[n] for n in self.score_names],
            [image_outputs[n] for n in self.box_names],
            [image_outputs[n] for n in self.point_names],
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


class FaceRecognizer(TritonModel):
    model_name = RECOGNIZER_MODEL

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
        self.input_name = config.input[0].name
        self.output_name = config.output[0].name
        self.batch_size = config.max_batch_size
        self.pixels_input = config.input[0].data_type == mc.TYPE_UINT8
        self.input_mean = float(_parameter(config, "input_mean", "127.5"))
        self.input_std = float(_parameter(config, "input_std", "127.5"))
        self.similarity_threshold = float(_parameter(config, "similarity_threshold", "0.3"))

    async def predict(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """L2-normalised embeddings (N, D) of aligned 112x112 BGR crops, in batches of at most
        the model's ``max_batch_size``, and the norms (N,) they had before (a quality hint:
        blurred or tiny faces get small norms)."""
        await self.ensure_loaded()
        embeddings = []
        for start in range(0, len(crops), self.batch_size):
            chunk = list(crops[start : start + self.batch_size])
            blob = await asyncio.to_thread(
                model_input, chunk, self.pixels_input, self.input_mean, self.input_std
            )
            outputs = await self.client.infer(
                self.model_name, {self.input_name: blob}, [self.output_name]
            )
            embeddings.append(outputs[self.output_name].reshape(len(chunk), -1))
        stacked = np.concatenate(embeddings).astype(np.float32)
        norms = np.linalg.norm(stacked, axis=1)
        return stacked / norms[:, None], norms


# ---------------------------------------------------------------- the pipeline


class FacePipeline:
    def __init__(self, client: TritonClient, settings: Settings) -> None:
        self.settings = settings
        self.detector = FaceDetector(client)
        self.recognizer = FaceRecognizer(client)

    async def load(self) -> None:
        await self.detector.load()
        await self.recognizer.load()

    @property
    def similarity_threshold(self) -> float:
        if self.settings.similarity_threshold is not None:
            return self.settings.similarity_threshold
        return self.recognizer.similarity_threshold

    async def decode(self, data: bytes, field: str) -> np.ndarray:
        return await asyncio.to_thread(
            decode_image, data, field=field, max_pixels=self.settings.max_image_pixels
        )

    def detection_options(self) -> DetectionOptions:
        return DetectionOptions(
            input_size=self.settings.detector_input_size,
            threshold=self.settings.det_threshold,
            nms_threshold=self.settings.nms_threshold,
        )

    async def detect(
        self, images: Sequence[np.ndarray], options: DetectionOptions | None = None
    ) -> list[list[Face]]:
        """Every face of every image, best score first, with the images batched through the
        detector. Images without a face are retried, together, on padded canvases."""
        options = options or self.detection_options()
        found = await self.detector.predict(images, **asdict(options))
        missing = [i for i, faces in enumerate(found) if not faces]
        if not missing:
            return found
        padded = await asyncio.to_thread(
            lambda: [pad_to_square(images[i], PADDED_RETRY_FACTOR) for i in missing]
        )
        retried = await self.detector.predict([canvas for canvas, _ in padded], **asdict(options))
        for i, (_, (x0, y0)), faces in zip(missing, padded, retried, strict=True):
            offset = np.array([x0, y0], dtype=np.float32)
            for face in faces:
                face.bbox = face.bbox - np.tile(offset, 2)
                face.landmarks = face.landmarks - offset
            found[i] = faces
        return found

    async def embed(self, pairs: Sequence[tuple[np.ndarray, Face]]) -> None:
        """Sets the embedding of every (image, face) pair with one batched recognizer call."""
        if not pairs:
            return
        crops = await asyncio.to_thread(
            lambda: [align_face(image, face.landmarks) for image, face in pairs]
        )
        embeddings, norms = await self.recognizer.predict(crops)
        for (_, face), embedding, norm in zip(pairs, embeddings, norms, strict=True):
            face.embedding = embedding
            face.embedding_norm = float(norm)

    async def analyze(self, data: bytes, field: str) -> ImageFaces:
        """All faces of one image, each with its embedding."""
        image = await self.decode(data, field)
        [faces] = await self.detect([image])
        await self.embed([(image, face) for face in faces])
        return ImageFaces(width=image.shape[1], height=image.shape[0], faces=faces)

    async def prominent_faces(self, images: Sequence[tuple[bytes, str]]) -> list[tuple[Face, int]]:
        """For each (bytes, field name): the most prominent face, embedded, and how many faces the
        image has. The chosen faces of all images share one recognizer call."""
        decoded = await asyncio.gather(*(self.decode(data, name) for data, name in images))
        detected = await self.detect(decoded)
        chosen = []
        for image, faces, (_, name) in zip(decoded, detected, images, strict=True):
            if not faces:
                raise NoFaceError(name)
            chosen.append(most_prominent(faces, image.shape[1], image.shape[0]))
        await self.embed(list(zip(decoded, chosen, strict=True)))
        return [(face, len(faces)) for face, faces in zip(chosen, detected, strict=True)]
