"""The face pipeline: decode, SCRFD detection over Triton, anchor decoding, NMS, landmarks mapped
back to the image, 5-point alignment and one batched ArcFace call over Triton.

The models on Triton are :class:`~face_service.inference.detector.FaceDetector` (with the SCRFD
maths of :mod:`face_service.inference.scrfd`) and
:class:`~face_service.inference.recognizer.FaceRecognizer`. CPU work (decoding, resizing, anchor
decoding, warping) runs in worker threads so the event loop stays free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from face_service.errors import NoFaceError
from face_service.faces import Face
from face_service.imaging import align_face, decode_image, pad_to_square
from face_service.inference.client import TritonClient
from face_service.inference.detector import FaceDetector
from face_service.inference.recognizer import FaceRecognizer
from face_service.settings import Settings

# Canvas factor for the retry when nothing was found: SCRFD misses faces that fill the frame.
PADDED_RETRY_FACTOR = 2.0
# How strongly the most prominent face is pulled towards the image centre (see most_prominent).
CENTRE_WEIGHT = 2.0


@dataclass(frozen=True)
class DetectionOptions:
    input_size: int  # detector canvas side
    threshold: float  # minimum detection score
    nms_threshold: float  # IoU above which the weaker of two boxes is dropped


@dataclass
class ImageFaces:
    width: int
    height: int
    faces: list[Face] = field(default_factory=list)


# ---------------------------------------------------------------- pure functions (unit tested)


def prominence(face: Face, width: int, height: int) -> float:
    """How much a face is the subject of its photo: area - 2 * (distance of the box centre
    from the image centre)^2, InsightFace's own ranking; both terms grow with the image's
    scale, so rankings do not depend on it."""
    x1, y1, x2, y2 = face.bbox
    offset = ((x1 + x2) / 2 - width / 2) ** 2 + ((y1 + y2) / 2 - height / 2) ** 2
    return face.area - CENTRE_WEIGHT * offset


def most_prominent(faces: Sequence[Face], width: int, height: int) -> Face:
    """The face a person photographing it meant: the largest, pulled towards the centre.
    Plain "largest" picked a bystander at the edge in 2 of 600 LFW pairs (bench/accuracy.py)."""
    if not faces:
        raise ValueError("no faces to choose from")
    return max(faces, key=lambda face: prominence(face, width, height))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


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
