"""Stand-ins for the two models, for the fast tier: the real pipeline, routes and gallery run
on them without Triton. An image's top-left pixel value is how many faces it "has"."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import cv2
import numpy as np
from fastapi.testclient import TestClient

from app import Services, create_app
from face_service.errors import ModelUnavailableError
from face_service.faces import Face
from face_service.gallery import open_gallery
from face_service.imaging import ARCFACE_TEMPLATE
from face_service.inference.names import MODEL_NAMES
from face_service.settings import Settings
from pipeline import FacePipeline
from triton_service import HealthReport

EMBEDDING_WIDTH = 8


class FakeDetector:
    """Finds ``image[0, 0, 0]`` faces in each image (a pixel value as the face count), each a
    box around ArcFace's template points, and records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict]] = []

    async def load(self) -> None:
        pass

    async def predict(self, images: Sequence[np.ndarray], **options: object) -> list[list[Face]]:
        self.calls.append((len(images), options))
        return [
            [
                Face(
                    bbox=np.array([10 * i, 0, 10 * i + 100, 100], np.float32),
                    det_score=0.9 - 0.1 * i,
                    landmarks=ARCFACE_TEMPLATE + 10 * i,
                )
                for i in range(int(image[0, 0, 0]))
            ]
            for image in images
        ]


class FakeRecognizer:
    """The i-th crop of a batch embeds as the i-th basis vector; every norm is 20."""

    dimension = EMBEDDING_WIDTH
    similarity_threshold = 0.28

    def __init__(self) -> None:
        self.batches: list[int] = []

    async def load(self) -> None:
        pass

    async def predict(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        self.batches.append(len(crops))
        vectors = np.eye(len(crops), EMBEDDING_WIDTH, dtype=np.float32)
        return vectors, np.full(len(crops), 20.0, np.float32)


# What Triton's /v2/models/stats answers, trimmed to the fields /metrics reads (its shape as
# tritonserver 2.51 gives it): one model, 3 requests in 2 executions, 1.5 s queued.
STUB_TRITON_STATISTICS = [
    {
        "name": MODEL_NAMES[0],
        "version": "1",
        "inference_count": 3,
        "execution_count": 2,
        "inference_stats": {
            "success": {"count": 3, "ns": 4_000_000_000},
            "fail": {"count": 1, "ns": 1_000_000},
            "queue": {"count": 3, "ns": 1_500_000_000},
            "compute_input": {"count": 3, "ns": 250_000_000},
            "compute_infer": {"count": 3, "ns": 2_000_000_000},
            "compute_output": {"count": 3, "ns": 125_000_000},
        },
    }
]


class StubTriton:
    """Answers /health as a Triton with both models ready (or not), and /metrics' statistics
    (none while not ready: Triton is down)."""

    restarts = 0

    def __init__(self, ready: bool = True) -> None:
        self.ready = ready

    async def statistics(self) -> list[dict]:
        if not self.ready:
            raise ModelUnavailableError("Triton at 127.0.0.1:1 is not available")
        return STUB_TRITON_STATISTICS

    async def health(self) -> HealthReport:
        return HealthReport(
            ready=self.ready,
            triton=self.ready,
            models=dict.fromkeys(MODEL_NAMES, self.ready),
            reason=None if self.ready else "Triton at 127.0.0.1:1 is not ready",
            serving={
                name: {"backend": "python", "runtime": "openvino", "precision": "bf16"}
                for name in MODEL_NAMES
            },
        )


def png(faces: int, width: int = 160, height: int = 120) -> bytes:
    """A grey PNG the fake detector finds ``faces`` faces in, turned or not (the count is in
    every corner, so the orientation search finds no more in it)."""
    image = np.full((height, width, 3), 128, np.uint8)
    image[0, 0] = image[0, -1] = image[-1, 0] = image[-1, -1] = faces
    return cv2.imencode(".png", image)[1].tobytes()


def fake_pipeline(settings: Settings | None = None) -> FacePipeline:
    return FacePipeline(FakeDetector(), FakeRecognizer(), settings or Settings())


@asynccontextmanager
async def fake_services(settings: Settings) -> AsyncIterator[Services]:
    """The app's services with the fake models and a real SQLite gallery in ``data_dir``."""
    gallery = open_gallery(settings, dimension=EMBEDDING_WIDTH)
    try:
        yield Services(
            triton=StubTriton(),  # type: ignore[arg-type]
            pipeline=fake_pipeline(settings),
            gallery=gallery,
        )
    finally:
        gallery.close()


def app_client(data_dir: Path, **settings: object) -> TestClient:
    """The real app on the fake models, its gallery in ``data_dir``; answers as a client sees
    them (a server error is a 500, not an exception in the test)."""
    app = create_app(
        Settings(data_dir=data_dir, **settings),  # type: ignore[arg-type]
        services=fake_services,
    )
    return TestClient(app, raise_server_exceptions=False)
