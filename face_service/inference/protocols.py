"""What the pipeline needs from its two models, as Protocols: the Triton-backed
:class:`~face_service.inference.detector.FaceDetector` and
:class:`~face_service.inference.recognizer.FaceRecognizer` are one implementation, and the fast
test tier stubs them without a server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from face_service.faces import Face


class Detector(Protocol):
    async def load(self) -> None: ...

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
        """Faces per image, best score first, in each image's own pixel coordinates."""
        ...


class Recognizer(Protocol):
    # The width of its embeddings, once known (None before the model is loaded).
    dimension: int | None
    # The model pack's verification threshold.
    similarity_threshold: float

    async def load(self) -> None: ...

    async def predict(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """L2-normalised embeddings (N, D) of aligned 112x112 BGR crops, and their norms."""
        ...
