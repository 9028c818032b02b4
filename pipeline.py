"""The face pipeline: decode, SCRFD detection over Triton, anchor decoding, NMS, landmarks mapped
back to the image, 5-point alignment and one batched ArcFace call over Triton.

Models follow one template (:class:`TritonModel`): ``load`` reads the model's configuration from
Triton (so an external Triton works the same as the local one) and ``predict`` runs it. CPU work
(decoding, resizing, anchor decoding, warping) runs in worker threads so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict

import cv2
import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from face_service.analysis import (
    AnalysisOptions,
    AnalyzedImage,
    ImageInput,
    Timings,
    raise_first_error,
    settings_context,
)
from face_service.errors import FaceServiceError, InvalidImageError, ModelConfigError, NoFaceError
from face_service.faces import (
    DetectionOptions,
    Face,
    most_prominent,
    orientation_score,
    select_faces,
    whole_crop_face,
)
from face_service.imaging import (
    ARCFACE_SIZE,
    align_face,
    decode_image,
    image_channels,
    letterbox,
    pad_to_square,
    rotate_clockwise,
    unrotate_box,
    unrotate_points,
)
from face_service.settings import Settings
from triton_service import DETECTOR_MODEL, METADATA_PREFIX, RECOGNIZER_MODEL, TritonClient

SCRFD_STRIDES = (8, 16, 32)
# Canvas factor for the retry when nothing was found: SCRFD misses faces that fill the frame.
PADDED_RETRY_FACTOR = 2.0


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

# Clockwise turns tried by the orientation search (auto_rotate).
ROTATIONS = (90, 180, 270)
# Picks, from an image's detected faces, those the caller wants; a FaceServiceError it raises
# becomes that image's error.
Chooser = Callable[[AnalyzedImage], list[Face]]


class FacePipeline:
    """The one coordinator every route uses: decode, detect, choose, align, embed.

    Each stage takes the whole batch: the inputs are decoded side by side in worker threads, go
    through the detector together, and all their chosen faces through the recognizer together,
    in batches of at most its ``max_batch_size``. An input that cannot be read, or has no face
    to choose, keeps its error in its own :class:`AnalyzedImage`; the caller decides whether
    that fails the request (/embedding) or is reported beside the others (/extract, enrollment).
    """

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

    def options(self, **values: object) -> AnalysisOptions:
        """Analysis options: ``values`` as given, the detector's others from the settings."""
        return AnalysisOptions.model_validate(values, context=settings_context(self.settings))

    async def analyze(
        self,
        inputs: Sequence[ImageInput],
        options: AnalysisOptions | None = None,
        *,
        names: Sequence[str] | None = None,
        choose: Chooser | None = None,
    ) -> tuple[list[AnalyzedImage], Timings]:
        """Every input through the whole pipeline. ``names`` name the inputs in messages
        (``images[i]`` by default); ``choose`` picks the faces to keep and embed (by default
        those the options' ``min_face_size`` and ``limit_faces`` allow)."""
        options = options or self.options()
        started = time.perf_counter()
        timings = Timings()
        images = await self.decode(inputs, names)
        timings.decode = _ms_since(started)
        if options.embed_only:
            self.accept_crops(images)
        else:
            mark = time.perf_counter()
            await self.detect(images, options.detection(), auto_rotate=options.auto_rotate)
            self.choose(images, choose or _selection(options))
            timings.detect = _ms_since(mark)
        mark = time.perf_counter()
        await self.embed(
            images,
            embeddings=options.return_embedding,
            keep_crops=options.return_face_crops,
            aligned=options.embed_only,
        )
        timings.embed = _ms_since(mark)
        timings.total = _ms_since(started)
        for image in images:
            image.took_ms += timings.detect + timings.embed
        return images, timings

    async def prominent_faces(self, images: Sequence[tuple[bytes, str]]) -> list[tuple[Face, int]]:
        """For each (bytes, field name): the most prominent face, embedded, and how many faces the
        image has; the first image that fails fails the call. The chosen faces of all images
        share one recognizer call."""
        analyzed, _ = await self.analyze(
            [data for data, _ in images], names=[name for _, name in images], choose=_prominent
        )
        raise_first_error(analyzed)
        return [(image.faces[0], image.faces_detected) for image in analyzed]

    # ------------------------------------------------------------ the stages

    async def decode(
        self, inputs: Sequence[ImageInput], names: Sequence[str] | None = None
    ) -> list[AnalyzedImage]:
        """Each input decoded in a worker thread, all side by side; one that cannot be read keeps
        its error in its own entry."""
        names = names or [f"images[{index}]" for index in range(len(inputs))]
        images = [AnalyzedImage(name) for name in names]
        await asyncio.gather(
            *(
                asyncio.to_thread(self._decode, image, data)
                for image, data in zip(images, inputs, strict=True)
            )
        )
        return images

    def _decode(self, image: AnalyzedImage, data: ImageInput) -> None:
        started = time.perf_counter()
        try:
            if isinstance(data, FaceServiceError):
                raise data
            decoded = decode_image(
                data, field=image.name, max_pixels=self.settings.max_image_pixels
            )
        except FaceServiceError as error:
            image.error = error
            return
        finally:
            image.took_ms = _ms_since(started)
        image.height, image.width = decoded.shape[:2]
        image.channels = image_channels(data)
        image.image = decoded

    async def detect(
        self,
        images: Sequence[AnalyzedImage],
        options: DetectionOptions | None = None,
        *,
        auto_rotate: bool = False,
    ) -> None:
        """Sets the faces of every usable image, best score first, in the image's own pixels;
        with ``auto_rotate`` from the orientation in which they look most upright."""
        usable = [image for image in images if image.usable]
        if not usable:
            return
        options = options or self.options().detection()
        found = await self._detect([image.image for image in usable], options)
        for image, faces in zip(usable, found, strict=True):
            image.faces = faces
        if auto_rotate:
            await self._search_orientations(usable, options)

    async def _detect(
        self, images: Sequence[np.ndarray], options: DetectionOptions
    ) -> list[list[Face]]:
        """Faces of each image, the images batched through the detector. Images without a face
        are retried, together, on padded canvases."""
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

    async def _search_orientations(
        self, images: Sequence[AnalyzedImage], options: DetectionOptions
    ) -> None:
        """Detects on every image turned by 90, 180 and 270 degrees too, and keeps, per image,
        the orientation whose faces have the highest summed detection score: SCRFD still finds
        some faces in a sideways photo, but fewer and less surely than upright."""
        best = [orientation_score(image.faces) for image in images]
        for degrees in ROTATIONS:
            rotated = await asyncio.to_thread(
                lambda d=degrees: [rotate_clockwise(image.image, d) for image in images]
            )
            found = await self._detect(rotated, options)
            for index, (image, faces) in enumerate(zip(images, found, strict=True)):
                if orientation_score(faces) <= best[index]:
                    continue
                for face in faces:
                    face.bbox = unrotate_box(face.bbox, degrees, image.width, image.height)
                    face.landmarks = unrotate_points(
                        face.landmarks, degrees, image.width, image.height
                    )
                image.faces, image.rotation = faces, degrees
                best[index] = orientation_score(faces)

    @staticmethod
    def choose(images: Sequence[AnalyzedImage], chooser: Chooser) -> None:
        """Keeps, of each usable image's detected faces, those ``chooser`` picks."""
        for image in images:
            if not image.usable:
                continue
            image.faces_detected = len(image.faces)
            try:
                image.faces = chooser(image)
            except FaceServiceError as error:
                image.faces, image.error = [], error

    @staticmethod
    def accept_crops(images: Sequence[AnalyzedImage]) -> None:
        """For inputs that are aligned face crops already (embed_only): no detection, the one
        face of each is the whole crop; an input of another size is that input's error."""
        for image in images:
            if not image.usable:
                continue
            if (image.width, image.height) != (ARCFACE_SIZE, ARCFACE_SIZE):
                image.error = InvalidImageError(
                    f"'{image.name}' is {image.width}x{image.height}; embed_only expects aligned "
                    f"{ARCFACE_SIZE}x{ARCFACE_SIZE} face crops"
                )
                continue
            image.faces, image.faces_detected = [whole_crop_face()], 1

    async def embed(
        self,
        images: Sequence[AnalyzedImage],
        *,
        embeddings: bool = True,
        keep_crops: bool = False,
        aligned: bool = False,
    ) -> None:
        """Aligns every face of every usable image to ArcFace's template (``aligned``: each
        image is its face's crop already) and embeds all the crops through the recognizer in
        one batched path; with ``keep_crops`` each image keeps its faces' crops."""
        pairs = [(image, face) for image in images if image.usable for face in image.faces]
        if not pairs or not (embeddings or keep_crops):
            return
        if aligned:
            crops = [image.image for image, _ in pairs]
        else:
            crops = await asyncio.to_thread(
                lambda: [align_face(image.image, face.landmarks) for image, face in pairs]
            )
        if embeddings:
            vectors, norms = await self.recognizer.predict(crops)
            for (_, face), vector, norm in zip(pairs, vectors, norms, strict=True):
                face.embedding = vector
                face.embedding_norm = float(norm)
        if keep_crops:
            for (image, _), crop in zip(pairs, crops, strict=True):
                image.crops.append(crop)


def _selection(options: AnalysisOptions) -> Chooser:
    """The faces that the options' size floor and count limit allow."""
    return lambda image: select_faces(
        image.faces, min_face_size=options.min_face_size, limit=options.limit_faces
    )


def _prominent(image: AnalyzedImage) -> list[Face]:
    if not image.faces:
        raise NoFaceError(image.name)
    return [most_prominent(image.faces, image.width, image.height)]


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
