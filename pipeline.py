"""The face pipeline, the one coordinator every route uses: decode, detect (SCRFD on Triton, with
a padded retry, and an orientation search for photos that look turned), choose, align, and embed
(one batched ArcFace call on Triton).

The models are :class:`~face_service.inference.detector.FaceDetector` (with the SCRFD maths of
:mod:`face_service.inference.scrfd`) and :class:`~face_service.inference.recognizer.FaceRecognizer`.
CPU work (decoding, resizing, anchor decoding, warping) runs in worker threads so the event loop
stays free.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

import numpy as np

from face_service import metrics
from face_service.analysis import (
    AnalysisOptions,
    AnalyzedImage,
    ImageInput,
    Timings,
    raise_first_error,
    settings_context,
)
from face_service.errors import (
    FaceServiceError,
    InvalidImageError,
    LowQualityFaceError,
    NoFaceError,
    TooManyFacesError,
)
from face_service.faces import (
    DetectionOptions,
    Face,
    lead_face,
    looks_turned,
    most_prominent,
    most_upright,
    select_faces,
    whole_crop_face,
)
from face_service.imaging import (
    ARCFACE_SIZE,
    align_face,
    decode_scaled,
    image_channels,
    pad_to_bounded_square,
    rotate_clockwise,
    shrink_to_side,
    unrotate_box,
    unrotate_points,
)
from face_service.inference.client import TritonClient
from face_service.inference.detector import FaceDetector
from face_service.inference.protocols import Detector, Recognizer
from face_service.inference.recognizer import FaceRecognizer
from face_service.request_context import count_faces
from face_service.settings import Settings

# Canvas factor for the retry when nothing was found: SCRFD misses faces that fill the frame.
PADDED_RETRY_FACTOR = 2.0
# The padded canvas's largest side: the detector shrinks it to its input size (<= 2048) anyway,
# and this bounds the canvas at 48 MiB whatever the image's shape.
PADDED_RETRY_MAX_SIDE = 4096


# Clockwise turns tried by the orientation search (auto_rotate) on photos that look turned.
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

    def __init__(self, detector: Detector, recognizer: Recognizer, settings: Settings) -> None:
        self.settings = settings
        self.detector = detector
        self.recognizer = recognizer

    @classmethod
    def on_triton(cls, client: TritonClient, settings: Settings) -> FacePipeline:
        """The service's pipeline: both models served by the Triton that ``client`` reaches."""
        return cls(FaceDetector(client), FaceRecognizer(client), settings)

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

    def rotation_options(self, auto_rotate: bool | None, **values: object) -> AnalysisOptions:
        """Options with ``values``, and ``auto_rotate`` unless it is None (then the setting's)."""
        if auto_rotate is not None:
            values["auto_rotate"] = auto_rotate
        return self.options(**values)

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
            chooser = choose or _selection(options)
            embedded_ms = await self.detect(
                images,
                options.detection(),
                auto_rotate=options.auto_rotate,
                embed_chosen=chooser if options.return_embedding else None,
            )
            self.choose(images, chooser)
            timings.detect = _ms_since(mark) - embedded_ms
            timings.embed = embedded_ms
        mark = time.perf_counter()
        await self.embed(
            images,
            embeddings=options.return_embedding,
            keep_crops=options.return_face_crops,
            aligned=options.embed_only,
        )
        timings.embed += _ms_since(mark)
        if options.min_quality and options.return_embedding:
            drop_poor_faces(images, options.min_quality)
        if not options.return_embedding:  # the orientation check embeds lead faces regardless
            for face in (face for image in images for face in image.faces):
                face.embedding, face.embedding_norm = None, None
        to_file_pixels(images)
        count_faces(sum(len(image.faces) for image in images if image.usable))
        timings.total = _ms_since(started)
        for image in images:
            image.took_ms += timings.detect + timings.embed
        return images, timings

    async def prominent_faces(
        self,
        images: Sequence[tuple[bytes, str]],
        *,
        auto_rotate: bool | None = None,
        min_quality: float | None = None,
    ) -> list[tuple[Face, int]]:
        """For each (bytes, field name): the most prominent face, embedded, and how many faces the
        image has; the first image that fails fails the call. The chosen faces of all images
        share one recognizer call. ``auto_rotate``, ``min_quality``: None takes the setting."""
        quality = {} if min_quality is None else {"min_quality": min_quality}
        analyzed, _ = await self.analyze(
            [data for data, _ in images],
            self.rotation_options(auto_rotate, **quality),
            names=[name for _, name in images],
            choose=_prominent,
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
            decoded = decode_scaled(
                data,
                field=image.name,
                max_pixels=self.settings.max_image_pixels,
                max_side=self.settings.decode_max_side,
                max_bytes=self.settings.max_decode_bytes,
            )
        except FaceServiceError as error:
            image.error = error
            return
        finally:
            image.took_ms = _ms_since(started)
        # Until to_file_pixels, the size of the decoded image, in which faces are found.
        image.height, image.width = decoded.image.shape[:2]
        image.scale, image.file_size = decoded.scale, decoded.size
        image.channels = image_channels(data)
        image.image = decoded.image

    async def detect(
        self,
        images: Sequence[AnalyzedImage],
        options: DetectionOptions | None = None,
        *,
        auto_rotate: bool = False,
        embed_chosen: Chooser | None = None,
    ) -> float:
        """Sets the faces of every usable image, best score first, in the image's own pixels;
        with ``auto_rotate``, those of an image that looks turned from the orientation in which
        they look most upright. The orientation check embeds each image's lead face; with
        ``embed_chosen`` the faces that chooser will keep go into the same recognizer call, so
        that an upright photo (nearly every one) needs no second call. Returns the milliseconds
        that call took (the callers report them as embedding time)."""
        usable = [image for image in images if image.usable]
        if not usable:
            return 0.0
        options = options or self.options().detection()
        found = await self._detect([image.image for image in usable], options)
        for image, faces in zip(usable, found, strict=True):
            image.faces = faces
        if not auto_rotate:
            return 0.0
        started = time.perf_counter()
        await self._embed_leads(self._leads_and_chosen(usable, embed_chosen))
        embedded_ms = _ms_since(started)
        turned = [image for image in usable if looks_turned(image.faces)]
        if turned:
            await self._search_orientations(turned, options)
        return embedded_ms

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
            lambda: [
                pad_to_bounded_square(images[i], PADDED_RETRY_FACTOR, PADDED_RETRY_MAX_SIDE)
                for i in missing
            ]
        )
        canvases = [canvas for canvas, _, _ in padded]
        offsets = [(offset, scale) for _, offset, scale in padded]
        retried = await self.detector.predict(canvases, **asdict(options))
        del padded, canvases
        for i, ((x0, y0), scale), faces in zip(missing, offsets, retried, strict=True):
            offset = np.array([x0, y0], dtype=np.float32)
            for face in faces:
                face.bbox = (face.bbox - np.tile(offset, 2)) / scale
                face.landmarks = (face.landmarks - offset) / scale
            found[i] = faces
        return found

    def _leads_and_chosen(
        self, images: Sequence[AnalyzedImage], chooser: Chooser | None
    ) -> list[tuple[np.ndarray, Face]]:
        """(image, face) for each image's lead face and, with ``chooser``, the faces it keeps;
        only the leads when the chosen faces are more than one request may embed (embed()
        refuses those requests)."""
        leads: list[tuple[np.ndarray, Face]] = []
        chosen: list[tuple[np.ndarray, Face]] = []
        for image in images:
            lead = lead_face(image.faces)
            if lead is not None:
                leads.append((image.image, lead))
            try:
                kept = chooser(image) if chooser else []
            except FaceServiceError:  # choose() records it; the lead still says the orientation
                kept = []
            chosen += [(image.image, face) for face in kept if face is not lead]
        pairs = leads + chosen
        return leads if len(pairs) > self.settings.max_faces_per_request else pairs

    async def _embed_leads(self, leads: Sequence[tuple[np.ndarray, Face]]) -> None:
        """Embeds each (image, face) in one recognizer call: a lead's norm says whether the image
        is upright. embed() does not embed these faces again."""
        if not leads:
            return
        crops = await asyncio.to_thread(
            lambda: [align_face(image, face.landmarks) for image, face in leads]
        )
        vectors, norms = await self.recognizer.predict(crops)
        for (_, face), vector, norm in zip(leads, vectors, norms, strict=True):
            face.embedding, face.embedding_norm = vector, float(norm)

    async def _search_orientations(
        self, images: Sequence[AnalyzedImage], options: DetectionOptions
    ) -> None:
        """Detects on every image turned by 90, 180 and 270 degrees too, and keeps, per image,
        the orientation whose lead face (faces.lead_face) embeds with the largest norm, the
        orientation as sent by AS_SENT_NORM_MARGIN ahead: ArcFace embeds a face the wrong way
        up, or seen in a turned photo, with a smaller norm. Where no orientation has a lead face,
        the one whose faces have the highest summed score. Each kept face says its turn."""
        shrunk = await asyncio.to_thread(
            lambda: [shrink_to_side(image.image, options.input_size) for image in images]
        )
        turns: dict[int, list[list[Face]]] = {}
        leads: list[tuple[np.ndarray, Face]] = []
        for degrees in ROTATIONS:
            rotated = await asyncio.to_thread(
                lambda d=degrees: [rotate_clockwise(small, d) for small, _ in shrunk]
            )
            turns[degrees] = await self._detect(rotated, options)
            for canvas, faces in zip(rotated, turns[degrees], strict=True):
                if lead := lead_face(faces):
                    leads.append((canvas, lead))
        await self._embed_leads(leads)
        for index, image in enumerate(images):
            degrees = most_upright(
                {0: image.faces, **{d: found[index] for d, found in turns.items()}}
            )
            if degrees == 0:
                continue
            small, scale = shrunk[index]
            height, width = small.shape[:2]
            faces = turns[degrees][index]
            for face in faces:
                face.rotation = degrees
                face.bbox = unrotate_box(face.bbox, degrees, width, height) / scale
                face.landmarks = unrotate_points(face.landmarks, degrees, width, height) / scale
                face.embedding, face.embedding_norm = None, None  # embedded shrunk: again
            image.faces, image.rotation = faces, degrees

    @staticmethod
    def choose(images: Sequence[AnalyzedImage], chooser: Chooser) -> None:
        """Keeps, of each usable image's detected faces, those ``chooser`` picks."""
        for image in images:
            if not image.usable:
                continue
            image.faces_detected = len(image.faces)
            metrics.FACES_PER_IMAGE.observe(image.faces_detected)
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
        if len(pairs) > self.settings.max_faces_per_request:
            raise TooManyFacesError(
                f"{len(pairs)} faces to embed in this request; at most "
                f"{self.settings.max_faces_per_request} are (FACE_MAX_FACES_PER_REQUEST): raise "
                "det_threshold, set limit_faces, or send fewer images"
            )
        # Lead faces embedded by the orientation check (_embed_leads) keep their embedding, and
        # need no second alignment unless their crops are kept.
        needed = [
            (image, face)
            for image, face in pairs
            if keep_crops or (embeddings and face.embedding is None)
        ]
        if aligned:
            crops = [image.image for image, _ in needed]
        elif needed:
            crops = await asyncio.to_thread(
                lambda: [align_face(image.image, face.landmarks) for image, face in needed]
            )
        else:
            crops = []
        if embeddings:
            todo = [
                (face, crop)
                for (_, face), crop in zip(needed, crops, strict=True)
                if face.embedding is None
            ]
            if todo:
                vectors, norms = await self.recognizer.predict([crop for _, crop in todo])
                for (face, _), vector, norm in zip(todo, vectors, norms, strict=True):
                    face.embedding = vector
                    face.embedding_norm = float(norm)
        if keep_crops:  # needed is every pair then
            for (image, _), crop in zip(needed, crops, strict=True):
                image.crops.append(crop)


def _selection(options: AnalysisOptions) -> Chooser:
    """The faces that the options' size floor and count limit allow."""
    return lambda image: select_faces(
        image.faces, min_face_size=options.min_face_size * image.scale, limit=options.limit_faces
    )


def drop_poor_faces(images: Sequence[AnalyzedImage], min_quality: float) -> None:
    """Drops the faces whose embedding_norm is below ``min_quality`` (and their crops); an image
    left with none has, as its error, its best face's norm against ``min_quality``."""
    for image in images:
        if not image.usable or not image.faces:
            continue
        keep = [
            index
            for index, face in enumerate(image.faces)
            if face.embedding_norm is None or face.embedding_norm >= min_quality
        ]
        if not keep:
            best = max(face.embedding_norm or 0.0 for face in image.faces)
            image.faces, image.crops = [], []
            image.error = LowQualityFaceError(image.name, best, min_quality)
            continue
        if image.crops:
            image.crops = [image.crops[index] for index in keep]
        image.faces = [image.faces[index] for index in keep]


def to_file_pixels(images: Sequence[AnalyzedImage]) -> None:
    """Faces and sizes of images decoded at reduced scale, in the pixels of the file as sent."""
    for image in images:
        if image.scale == 1.0 or image.image is None:
            continue
        for face in image.faces:
            face.bbox = face.bbox / image.scale
            face.landmarks = face.landmarks / image.scale
        image.width, image.height = image.file_size


def _prominent(image: AnalyzedImage) -> list[Face]:
    if not image.faces:
        raise NoFaceError(image.name)
    return [most_prominent(image.faces, image.width, image.height)]


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
