"""1:N identification and 1:1 verification against the gallery, and enrollment: which face of
each image becomes a template, and why an image is skipped."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from face_service.errors import (
    EmbeddingError,
    FaceServiceError,
    InvalidImageError,
    NoUsableFaceError,
)
from face_service.gallery import Gallery, Identity, Match
from pipeline import Face, FacePipeline, prominence

# An enrollment image is ambiguous - whose template would it be? - when a runner-up face is
# nearly as large as the chosen one and not clearly farther from the centre (distances as a
# fraction of the image diagonal).
AMBIGUOUS_AREA_RATIO = 0.8
CLEARLY_OFF_CENTRE = 0.1


@dataclass
class EnrollmentImage:
    index: int
    filename: str | None
    face: Face | None = None
    reason: str | None = None  # why the image was skipped
    template_id: str | None = None


@dataclass(frozen=True)
class IdentifiedFace:
    face: Face | None
    match: Match | None
    candidates: list[Match]


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


class Identification:
    def __init__(self, pipeline: FacePipeline, gallery: Gallery) -> None:
        self.pipeline = pipeline
        self.gallery = gallery

    def threshold(self, requested: float | None) -> float:
        return self.pipeline.similarity_threshold if requested is None else requested

    async def enrollment_faces(
        self, images: Sequence[bytes | FaceServiceError], filenames: Sequence[str | None]
    ) -> list[EnrollmentImage]:
        """One embedded face per usable image; the others with the reason they were skipped."""
        reports = [EnrollmentImage(i, name) for i, name in enumerate(filenames)]
        decoded: list[tuple[int, np.ndarray]] = []
        for report, data in zip(reports, images, strict=True):
            try:
                if isinstance(data, FaceServiceError):
                    raise data
                decoded.append(
                    (report.index, await self.pipeline.decode(data, f"images[{report.index}]"))
                )
            except FaceServiceError as error:
                report.reason = str(error)
        found = await self.pipeline.detect([image for _, image in decoded]) if decoded else []
        chosen: list[tuple[np.ndarray, Face]] = []
        for (index, image), faces in zip(decoded, found, strict=True):
            try:
                face = choose_enrollment_face(faces, image.shape[1], image.shape[0])
            except InvalidImageError as error:
                reports[index].reason = str(error)
                continue
            reports[index].face = face
            chosen.append((image, face))
        await self.pipeline.embed(chosen)
        return reports

    async def enroll(
        self,
        *,
        identity_id: str | None,
        name: str | None,
        metadata: dict[str, Any],
        images: Sequence[bytes | FaceServiceError],
        filenames: Sequence[str | None],
    ) -> tuple[Identity, list[EnrollmentImage]]:
        reports = await self.enrollment_faces(images, filenames)
        usable = self._usable(reports)
        identity = await asyncio.to_thread(
            self.gallery.create_identity,
            identity_id=identity_id,
            name=name,
            metadata=metadata,
            embeddings=np.stack([r.face.embedding for r in usable]),
            sources=[r.filename for r in usable],
        )
        self._assign_templates(usable, identity, already=set())
        return identity, reports

    async def add_images(
        self,
        *,
        identity_id: str,
        images: Sequence[bytes | FaceServiceError],
        filenames: Sequence[str | None],
    ) -> tuple[Identity, list[EnrollmentImage]]:
        before = await asyncio.to_thread(self.gallery.get_identity, identity_id=identity_id)
        reports = await self.enrollment_faces(images, filenames)
        usable = self._usable(reports)
        identity = await asyncio.to_thread(
            self.gallery.add_templates,
            identity_id=identity_id,
            embeddings=np.stack([r.face.embedding for r in usable]),
            sources=[r.filename for r in usable],
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

    async def identify(
        self, data: bytes, *, top_k: int, threshold: float | None
    ) -> list[IdentifiedFace]:
        """Every face of the image with its best match (or None: unknown) and candidates."""
        analysis = await self.pipeline.analyze(data, "image")
        limit = self.threshold(threshold)
        results = []
        for face in analysis.faces:
            candidates = await asyncio.to_thread(self.gallery.search, face.embedding, top_k=top_k)
            results.append(IdentifiedFace(face, best_match(candidates, limit), candidates))
        return results

    async def identify_embedding(
        self, embedding: np.ndarray, *, top_k: int, threshold: float | None
    ) -> IdentifiedFace:
        candidates = await asyncio.to_thread(self.gallery.search, embedding, top_k=top_k)
        return IdentifiedFace(None, best_match(candidates, self.threshold(threshold)), candidates)

    async def verify(self, data: bytes, *, identity_id: str) -> tuple[Face, float]:
        await asyncio.to_thread(self.gallery.get_identity, identity_id=identity_id)
        [(face, _)] = await self.pipeline.prominent_faces([(data, "image")])
        return face, await self.verify_embedding(face.embedding, identity_id=identity_id)

    async def verify_embedding(self, embedding: np.ndarray, *, identity_id: str) -> float:
        return await asyncio.to_thread(self.gallery.similarity, embedding, identity_id=identity_id)


def best_match(candidates: list[Match], threshold: float) -> Match | None:
    return candidates[0] if candidates and candidates[0].similarity >= threshold else None


def unit_vector(values: Sequence[float]) -> np.ndarray:
    """A query embedding as a float32 unit vector; 422 for a zero or non-finite vector."""
    vector = np.asarray(values, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0:
        raise EmbeddingError("the embedding must be a finite, non-zero vector")
    return vector / norm
