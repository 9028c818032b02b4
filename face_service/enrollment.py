"""Enrollment: which face of each image becomes a person's template, why an image is skipped,
and the gallery writes that create a person or add templates to one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from face_service.analysis import AnalyzedImage, ImageInput
from face_service.errors import InvalidImageError, NoUsableFaceError
from face_service.faces import Face, prominence
from face_service.gallery import Gallery, Identity
from face_service.imaging import encode_jpeg
from pipeline import FacePipeline

# An enrollment image is ambiguous - whose template would it be? - when a runner-up face is
# nearly as large as the chosen one and not clearly farther from the centre (distances as a
# fraction of the image diagonal).
AMBIGUOUS_AREA_RATIO = 0.8
CLEARLY_OFF_CENTRE = 0.1
# The stored face crop is a thumbnail: 112x112 at quality 85 is about 4 KB.
FACE_CROP_JPEG_QUALITY = 85


@dataclass
class EnrollmentImage:
    index: int
    filename: str | None
    face: Face | None = None
    reason: str | None = None  # why the image was skipped
    template_id: str | None = None
    face_crop: bytes | None = None  # the aligned face as JPEG, when crops are stored


def choose_enrollment_face(faces: Sequence[Face], width: int, height: int) -> Face:
    """The subject's face; raises InvalidImageError when there is none, or when another face
    could as well be the subject."""
    if not faces:
        raise InvalidImageError("no face found")
    ranked = sorted(faces, key=lambda f: prominence(f, width, height), reverse=True)
    chosen = ranked[0]
    diagonal = float(np.hypot(width, height))

    def off_centre(face: Face) -> float:
        x1, y1, x2, y2 = face.bbox
        return float(np.hypot((x1 + x2) / 2 - width / 2, (y1 + y2) / 2 - height / 2)) / diagonal

    for other in ranked[1:]:
        if (
            other.area >= AMBIGUOUS_AREA_RATIO * chosen.area
            and off_centre(other) - off_centre(chosen) < CLEARLY_OFF_CENTRE
        ):
            raise InvalidImageError(
                f"{len(ranked)} faces, none clearly the subject: send a photo of one person"
            )
    return chosen


def subject_face(image: AnalyzedImage) -> list[Face]:
    """The pipeline's chooser for enrollment: the image's one subject."""
    return [choose_enrollment_face(image.faces, image.width, image.height)]


class Enrollment:
    def __init__(
        self, pipeline: FacePipeline, gallery: Gallery, *, store_face_crops: bool = False
    ) -> None:
        self.pipeline = pipeline
        self.gallery = gallery
        self.store_face_crops = store_face_crops

    async def enrollment_faces(
        self,
        images: Sequence[ImageInput],
        filenames: Sequence[str | None],
        auto_rotate: bool | None = None,
    ) -> list[EnrollmentImage]:
        """One embedded face per usable image; the others with the reason they were skipped.
        ``auto_rotate``: None takes the setting."""
        options = self.pipeline.rotation_options(
            auto_rotate, return_face_crops=self.store_face_crops
        )
        analyzed, _ = await self.pipeline.analyze(images, options, choose=subject_face)
        crops = await asyncio.to_thread(
            lambda: [
                encode_jpeg(image.crops[0], quality=FACE_CROP_JPEG_QUALITY)
                if image.error is None and image.crops
                else None
                for image in analyzed
            ]
        )
        return [
            EnrollmentImage(
                index,
                filename,
                face=image.faces[0] if image.error is None else None,
                reason=None if image.error is None else str(image.error),
                face_crop=crop,
            )
            for index, (image, filename, crop) in enumerate(
                zip(analyzed, filenames, crops, strict=True)
            )
        ]

    async def enroll(
        self,
        *,
        identity_id: str | None,
        name: str | None,
        metadata: dict[str, Any],
        images: Sequence[ImageInput],
        filenames: Sequence[str | None],
        auto_rotate: bool | None = None,
    ) -> tuple[Identity, list[EnrollmentImage]]:
        reports = await self.enrollment_faces(images, filenames, auto_rotate)
        usable = self._usable(reports)
        identity = await asyncio.to_thread(
            self.gallery.create_identity,
            identity_id=identity_id,
            name=name,
            metadata=metadata,
            embeddings=np.stack([r.face.embedding for r in usable]),
            sources=[r.filename for r in usable],
            face_crops=[r.face_crop for r in usable],
        )
        self._assign_templates(usable, identity, already=set())
        return identity, reports

    async def add_images(
        self,
        *,
        identity_id: str,
        images: Sequence[ImageInput],
        filenames: Sequence[str | None],
        auto_rotate: bool | None = None,
    ) -> tuple[Identity, list[EnrollmentImage]]:
        before = await asyncio.to_thread(self.gallery.get_identity, identity_id=identity_id)
        reports = await self.enrollment_faces(images, filenames, auto_rotate)
        usable = self._usable(reports)
        identity = await asyncio.to_thread(
            self.gallery.add_templates,
            identity_id=identity_id,
            embeddings=np.stack([r.face.embedding for r in usable]),
            sources=[r.filename for r in usable],
            face_crops=[r.face_crop for r in usable],
        )
        self._assign_templates(usable, identity, already={t.template_id for t in before.templates})
        return identity, reports

    @staticmethod
    def _usable(reports: list[EnrollmentImage]) -> list[EnrollmentImage]:
        usable = [r for r in reports if r.face is not None]
        if not usable:
            reasons = "; ".join(f"images[{r.index}]: {r.reason}" for r in reports)
            raise NoUsableFaceError(f"no usable face in any image ({reasons})")
        return usable

    @staticmethod
    def _assign_templates(
        usable: list[EnrollmentImage], identity: Identity, already: set[str]
    ) -> None:
        # Templates are listed in creation order; the new ones are the last, in image order.
        new = [t.template_id for t in identity.templates if t.template_id not in already]
        for report, template_id in zip(usable, new[-len(usable) :], strict=True):
            report.template_id = template_id
