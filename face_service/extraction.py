"""Batch face extraction: many images per request, every face with its box, score, landmarks,
embedding and aligned crop, and pictures of what was found.

All images of a request go through the detector together (batched where their canvases match,
which they do: every image is letterboxed to the same ``max_size``), and all their faces go
through the recognizer together, in batches no larger than its ``max_batch_size``. One bad image
is reported in its own entry; the others still succeed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from face_service.errors import FaceServiceError, InvalidImageError
from face_service.gallery import Gallery, RecordFace
from face_service.imaging import (
    ARCFACE_SIZE,
    ARCFACE_TEMPLATE,
    align_face,
    decode_image,
    image_channels,
    rotate_clockwise,
    unrotate_box,
    unrotate_points,
)
from pipeline import DetectionOptions, Face, FacePipeline

ROTATIONS = (90, 180, 270)


@dataclass(frozen=True)
class ExtractOptions:
    max_size: int = 640
    det_threshold: float = 0.5
    nms_threshold: float = 0.4
    limit_faces: int = 0  # 0: all, else the N largest
    min_face_size: int = 0  # pixels, on the shorter side of the box
    return_embedding: bool = True
    return_landmarks: bool = True
    return_face_crops: bool = False
    embed_only: bool = False  # inputs are aligned 112x112 crops: no detection
    auto_rotate: bool = False  # also detect on the image turned 90, 180 and 270 degrees

    def detection(self) -> DetectionOptions:
        return DetectionOptions(
            input_size=self.max_size, threshold=self.det_threshold, nms_threshold=self.nms_threshold
        )


@dataclass
class ExtractedImage:
    width: int = 0
    height: int = 0
    channels: int = 0  # of the file as sent: 1 grayscale, 3 colour, 4 with alpha
    faces: list[Face] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    rotation: int = 0  # clockwise degrees that made the faces upright
    error: FaceServiceError | None = None
    image: np.ndarray | None = None  # decoded, EXIF orientation applied
    took_ms: float = 0.0


@dataclass
class Timings:
    decode: float = 0.0
    detect: float = 0.0
    embed: float = 0.0
    total: float = 0.0


def face_size(face: Face) -> float:
    x1, y1, x2, y2 = face.bbox
    return float(min(x2 - x1, y2 - y1))


def select_faces(faces: Sequence[Face], *, min_face_size: int, limit: int) -> list[Face]:
    """Faces at least ``min_face_size`` pixels on their shorter side; with ``limit``, only the
    ``limit`` largest of them. Detection order (best score first) is kept."""
    kept = [face for face in faces if face_size(face) >= min_face_size]
    if limit and len(kept) > limit:
        largest = set(sorted(range(len(kept)), key=lambda i: kept[i].area, reverse=True)[:limit])
        kept = [face for i, face in enumerate(kept) if i in largest]
    return kept


def orientation_score(faces: Sequence[Face]) -> float:
    return sum(face.det_score for face in faces)


def whole_crop_face() -> Face:
    """The face of an aligned crop (embed_only): the whole crop, landmarks on the template."""
    return Face(
        bbox=np.array([0, 0, ARCFACE_SIZE, ARCFACE_SIZE], dtype=np.float32),
        det_score=1.0,
        landmarks=ARCFACE_TEMPLATE.copy(),
    )


class Extractor:
    def __init__(self, pipeline: FacePipeline) -> None:
        self.pipeline = pipeline

    async def extract(
        self, images: Sequence[bytes | FaceServiceError], options: ExtractOptions
    ) -> tuple[list[ExtractedImage], Timings]:
        """Faces of every image. ``images`` may hold, instead of an image, the error that kept it
        from being read: it is reported in that image's entry."""
        started = time.perf_counter()
        timings = Timings()
        results = [ExtractedImage() for _ in images]
        decoded = await self._decode_all(images, results)
        timings.decode = _ms_since(started)

        ok = [i for i, image in enumerate(decoded) if image is not None]
        if options.embed_only:
            self._accept_crops(ok, decoded, results)
        else:
            mark = time.perf_counter()
            await self._detect(ok, decoded, results, options)
            timings.detect = _ms_since(mark)
        mark = time.perf_counter()
        await self._embed(decoded, results, options)
        timings.embed = _ms_since(mark)
        timings.total = _ms_since(started)
        for result in results:
            result.took_ms += timings.detect + timings.embed
        return results, timings

    async def _decode_all(
        self, images: Sequence[bytes | FaceServiceError], results: list[ExtractedImage]
    ) -> list[np.ndarray | None]:
        max_pixels = self.pipeline.settings.max_image_pixels

        def decode(index: int) -> np.ndarray | None:
            started = time.perf_counter()
            data = images[index]
            try:
                if isinstance(data, FaceServiceError):
                    raise data
                image = decode_image(data, field=f"images[{index}]", max_pixels=max_pixels)
            except FaceServiceError as error:
                results[index].error = error
                return None
            finally:
                results[index].took_ms = _ms_since(started)
            results[index].height, results[index].width = image.shape[:2]
            results[index].channels = image_channels(data)
            results[index].image = image
            return image

        return list(
            await asyncio.gather(*(asyncio.to_thread(decode, i) for i in range(len(images))))
        )

    @staticmethod
    def _accept_crops(
        indices: list[int], decoded: list[np.ndarray | None], results: list[ExtractedImage]
    ) -> None:
        for i in indices:
            image = decoded[i]
            if image is None:
                continue
            if image.shape[:2] != (ARCFACE_SIZE, ARCFACE_SIZE):
                height, width = image.shape[:2]
                results[i].error = InvalidImageError(
                    f"'images[{i}]' is {width}x{height}; embed_only expects aligned "
                    f"{ARCFACE_SIZE}x{ARCFACE_SIZE} face crops"
                )
                decoded[i] = None
                continue
            results[i].faces = [whole_crop_face()]

    async def _detect(
        self,
        indices: list[int],
        decoded: list[np.ndarray | None],
        results: list[ExtractedImage],
        options: ExtractOptions,
    ) -> None:
        detection = options.detection()
        images = [decoded[i] for i in indices]
        found = await self.pipeline.detect(images, detection) if images else []
        for i, faces in zip(indices, found, strict=True):
            results[i].faces = faces
        if options.auto_rotate and indices:
            await self._detect_rotated(indices, decoded, results, detection)
        for i in indices:
            results[i].faces = select_faces(
                results[i].faces, min_face_size=options.min_face_size, limit=options.limit_faces
            )

    async def _detect_rotated(
        self,
        indices: list[int],
        decoded: list[np.ndarray | None],
        results: list[ExtractedImage],
        detection: DetectionOptions,
    ) -> None:
        """Detects on every image turned by 90, 180 and 270 degrees too, and keeps, per image,
        the orientation whose faces have the highest summed detection score: SCRFD still finds
        some faces in a sideways photo, but fewer and less surely than upright."""
        best = {i: orientation_score(results[i].faces) for i in indices}
        for degrees in ROTATIONS:
            originals = [decoded[i] for i in indices]
            rotated = await asyncio.to_thread(
                lambda d=degrees, images=originals: [rotate_clockwise(im, d) for im in images]
            )
            found = await self.pipeline.detect(rotated, detection)
            for i, faces in zip(indices, found, strict=True):
                if orientation_score(faces) <= best[i]:
                    continue
                width, height = results[i].width, results[i].height
                for face in faces:
                    face.bbox = unrotate_box(face.bbox, degrees, width, height)
                    face.landmarks = unrotate_points(face.landmarks, degrees, width, height)
                results[i].faces, results[i].rotation = faces, degrees
                best[i] = orientation_score(faces)

    async def _embed(
        self,
        decoded: list[np.ndarray | None],
        results: list[ExtractedImage],
        options: ExtractOptions,
    ) -> None:
        pairs = [
            (image, face)
            for image, result in zip(decoded, results, strict=True)
            if image is not None
            for face in result.faces
        ]
        if not pairs or not (options.return_embedding or options.return_face_crops):
            return
        if options.embed_only:
            crops = [image for image, _ in pairs]
        else:
            crops = await asyncio.to_thread(
                lambda: [align_face(image, face.landmarks) for image, face in pairs]
            )
        if options.return_embedding:
            embeddings, norms = await self.pipeline.recognizer.predict(crops)
            for (_, face), embedding, norm in zip(pairs, embeddings, norms, strict=True):
                face.embedding = embedding
                face.embedding_norm = float(norm)
        if options.return_face_crops:
            by_face = {id(face): crop for (_, face), crop in zip(pairs, crops, strict=True)}
            for result in results:
                result.crops = [by_face[id(face)] for face in result.faces]


async def store_records(
    gallery: Gallery,
    results: Sequence[ExtractedImage],
    filename: str | None,
    upload_names: Sequence[str | None],
) -> list[str | None]:
    """Saves a detection record per readable image; returns the record ids (None for images
    that could not be read). ``filename`` names a single image; with several, each record takes
    its upload's name, else ``filename[index]``."""
    record_ids: list[str | None] = []
    for index, (result, upload_name) in enumerate(zip(results, upload_names, strict=True)):
        if result.image is None:
            record_ids.append(None)
            continue
        if len(results) == 1 and filename:
            name = filename
        else:
            name = upload_name or f"{filename or 'image'}[{index}]"
        faces = [
            RecordFace(
                bbox=[round(float(v), 2) for v in face.bbox],
                det_score=round(face.det_score, 5),
                landmarks=[[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks],
                embedding=None if face.embedding is None else [float(v) for v in face.embedding],
            )
            for face in result.faces
        ]
        record = await asyncio.to_thread(
            gallery.save_record,
            filename=name,
            width=result.width,
            height=result.height,
            channels=result.channels,
            faces=faces,
        )
        record_ids.append(record.record_id)
    return record_ids


def draw_faces(
    image: np.ndarray, faces: Sequence[Face], *, landmarks: bool, scores: bool
) -> np.ndarray:
    """A copy of the image with each face's box, and optionally its landmarks and score."""
    canvas = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for face in faces:
        x1, y1, x2, y2 = (round(float(v)) for v in face.bbox)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 255, 0), thickness)
        if landmarks:
            colors = [(255, 0, 0), (0, 0, 255), (0, 255, 255), (255, 0, 255), (255, 255, 0)]
            for (x, y), color in zip(face.landmarks, colors, strict=True):
                cv2.circle(canvas, (round(float(x)), round(float(y))), thickness + 1, color, -1)
        if scores:
            cv2.putText(
                canvas,
                f"{face.det_score:.2f}",
                (x1, max(y1 - 4, 10)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4 * thickness,
                (0, 255, 0),
                thickness,
            )
    return canvas


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
