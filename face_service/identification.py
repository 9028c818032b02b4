"""1:N identification (who is each face?) and 1:1 verification (is this face that person?)
against the gallery, for images and for embeddings."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from face_service.analysis import raise_first_error
from face_service.errors import EmbeddingError
from face_service.faces import Face
from face_service.gallery import Gallery, Match
from pipeline import FacePipeline


@dataclass(frozen=True)
class IdentifiedFace:
    face: Face | None
    match: Match | None
    candidates: list[Match]


class Identification:
    def __init__(self, pipeline: FacePipeline, gallery: Gallery) -> None:
        self.pipeline = pipeline
        self.gallery = gallery

    def threshold(self, requested: float | None) -> float:
        return self.pipeline.similarity_threshold if requested is None else requested

    async def identify(
        self, data: bytes, *, top_k: int, threshold: float | None, auto_rotate: bool | None = None
    ) -> list[IdentifiedFace]:
        """Every face of the image with its best match (or None: unknown) and candidates;
        ``auto_rotate``: None takes the setting."""
        options = self.pipeline.rotation_options(auto_rotate)
        analyzed, _ = await self.pipeline.analyze([data], options, names=["image"])
        raise_first_error(analyzed)
        limit = self.threshold(threshold)
        results = []
        for face in analyzed[0].faces:
            candidates = await asyncio.to_thread(self.gallery.search, face.embedding, top_k=top_k)
            results.append(IdentifiedFace(face, best_match(candidates, limit), candidates))
        return results

    async def identify_embedding(
        self, embedding: np.ndarray, *, top_k: int, threshold: float | None
    ) -> IdentifiedFace:
        candidates = await asyncio.to_thread(self.gallery.search, embedding, top_k=top_k)
        return IdentifiedFace(None, best_match(candidates, self.threshold(threshold)), candidates)

    async def verify(
        self, data: bytes, *, identity_id: str, auto_rotate: bool | None = None
    ) -> tuple[Face, float]:
        await asyncio.to_thread(self.gallery.get_identity, identity_id=identity_id)
        [(face, _)] = await self.pipeline.prominent_faces(
            [(data, "image")], auto_rotate=auto_rotate
        )
        return face, await self.verify_embedding(face.embedding, identity_id=identity_id)

    async def verify_embedding(self, embedding: np.ndarray, *, identity_id: str) -> float:
        return await asyncio.to_thread(self.gallery.similarity, embedding, identity_id=identity_id)


def best_match(candidates: list[Match], threshold: float) -> Match | None:
    return candidates[0] if candidates and candidates[0].similarity >= threshold else None


def unit_vector(values: Sequence[float], dimension: int) -> np.ndarray:
    """A query embedding as a float32 unit vector; 422 for one of another width than the
    recognizer's, or a zero or non-finite vector."""
    if len(values) != dimension:
        raise EmbeddingError(
            f"the embedding has {len(values)} values; this service's embeddings have {dimension}"
        )
    vector = np.asarray(values, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0:
        raise EmbeddingError("the embedding must be a finite, non-zero vector")
    return vector / norm
